//! External authentication, the ingress-nginx `auth-url` family: which service to ask about each
//! request, how to ask, and what to do with its answer. The URLs and the cache key may use nginx
//! variables (`$host`, `$escaped_request_uri`, …); they are parsed here once into [`Template`]s and
//! only filled in per request. Anything invalid or unsupported fails closed: the Ingress's routes
//! answer 503 rather than serve without the protection.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::{AnnotationError, Reader, parse_bool};

/// The annotation names of this family (without prefix).
pub const NAMES: &[&str] = &[
    "auth-url",
    "auth-method",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-response-headers",
    "auth-request-redirect",
    "auth-always-set-cookie",
    "auth-cache-key",
    "auth-cache-duration",
    "auth-proxy-set-headers",
];

/// What the annotations ask for; also what a route enforces (nothing needs resolving).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalAuth {
    Enforce(Arc<AuthService>),
    /// The annotations are invalid or ask for something unsupported (already reported): every
    /// request is answered 503.
    Invalid,
}

/// The auth service and how its answers are used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthService {
    /// `auth-url`: an absolute `http://` or `https://` URL once filled in.
    pub url: Template,
    /// `auth-method`; `None` sends GET, as nginx subrequests do.
    pub method: Option<Method>,
    /// `auth-signin`: where a 401 redirects to.
    pub signin: Option<Template>,
    /// `auth-signin-redirect-param`: the query parameter carrying the original URL.
    pub redirect_param: String,
    /// `auth-response-headers`, lower case: copied from the auth answer into the request.
    pub response_headers: Vec<HeaderName>,
    /// `auth-request-redirect`: the `X-Auth-Request-Redirect` value (default: the request URI).
    pub request_redirect: Option<Template>,
    /// `auth-always-set-cookie`: pass the auth answer's `Set-Cookie` whatever the final status.
    pub always_set_cookie: bool,
    pub cache: Option<AuthCache>,
}

/// `auth-cache-key` and `auth-cache-duration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCache {
    pub key: Template,
    /// How long an answer with each status is remembered; a status not listed is not.
    pub durations: Vec<(CachedStatus, Duration)>,
}

/// The statuses one `auth-cache-duration` entry applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedStatus {
    Codes(Vec<u16>),
    Any,
}

impl AuthCache {
    /// How long an answer with `status` may be reused, if at all.
    pub fn ttl(&self, status: u16) -> Option<Duration> {
        self.durations.iter().find_map(|(s, d)| match s {
            CachedStatus::Any => Some(*d),
            CachedStatus::Codes(codes) => codes.contains(&status).then_some(*d),
        })
    }
}

/// ingress-nginx's default `auth-cache-duration`.
const DEFAULT_CACHE_DURATION: &str = "200 202 401 5m";

/// A string with nginx variables, split once so that filling it in is only concatenation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// The nginx variables ingress-nginx users put in these annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    /// `$scheme`, `$pass_access_scheme`: the scheme the client used.
    Scheme,
    /// `$host`, `$server_name`: the host name, without port.
    Host,
    /// `$http_host`, `$best_http_host`: the `Host` header as sent, with its port.
    HttpHost,
    /// `$request_uri`: path and query as received.
    RequestUri,
    /// `$escaped_request_uri`: the same, percent-encoded for use inside a query parameter.
    EscapedRequestUri,
    /// `$uri`, `$document_uri`: the path.
    Path,
    /// `$args`, `$query_string`.
    Args,
    /// `$is_args`: `?` when there is a query.
    IsArgs,
    /// `$request_method`.
    Method,
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// `$server_port`, `$pass_port`: the port the request came in on.
    ServerPort,
    /// `$remote_user`: the user of `Authorization: Basic`.
    RemoteUser,
    /// `$http_NAME`: a request header.
    Header(HeaderName),
    /// `$cookie_NAME`.
    Cookie(String),
    /// `$arg_NAME`: a query parameter.
    Arg(String),
}

/// The facts about one request a template can use.
pub struct RequestVars<'a> {
    pub scheme: &'a str,
    /// Lower case, without port.
    pub host: &'a str,
    /// As the client sent it.
    pub http_host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a str,
    pub remote_addr: std::net::IpAddr,
    pub server_port: u16,
    pub headers: &'a http::HeaderMap,
}

/// A request whose `Host` could change the meaning of a URL it is put into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Host header {0:?} cannot be used in a URL")]
pub struct UnsafeHost(pub String);

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("{s:?} has an unclosed ${{"))?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                after.split_at(end)
            };
            if name.is_empty() {
                // A `$` not followed by a name is text, as in `/cost$`.
                text.push('$');
            } else {
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Var(Var::parse(name)?));
            }
            rest = tail;
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    /// The template filled in for one request. Values from the request other than its URI are
    /// percent-encoded, so a header or cookie cannot add query parameters or change the URL's host.
    pub fn render(&self, v: &RequestVars<'_>) -> Result<String, UnsafeHost> {
        let mut out = String::with_capacity(128);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(var) => var.render(v, &mut out)?,
            }
        }
        Ok(out)
    }

    /// The literal text before the first variable.
    fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(t)) => t,
            _ => "",
        }
    }
}

impl Var {
    fn parse(name: &str) -> Result<Var, String> {
        Ok(match name {
            "scheme" | "pass_access_scheme" => Var::Scheme,
            "host" | "server_name" => Var::Host,
            "http_host" | "best_http_host" => Var::HttpHost,
            "request_uri" => Var::RequestUri,
            "escaped_request_uri" => Var::EscapedRequestUri,
            "uri" | "document_uri" => Var::Path,
            "args" | "query_string" => Var::Args,
            "is_args" => Var::IsArgs,
            "request_method" => Var::Method,
            "remote_addr" => Var::RemoteAddr,
            "server_port" | "pass_port" => Var::ServerPort,
            "remote_user" => Var::RemoteUser,
            _ => {
                let named = |prefix: &str| name.strip_prefix(prefix).filter(|n| !n.is_empty());
                if let Some(h) = named("http_") {
                    let header = HeaderName::from_bytes(h.replace('_', "-").as_bytes())
                        .map_err(|_| format!("${name} does not name a header"))?;
                    Var::Header(header)
                } else if let Some(c) = named("cookie_") {
                    Var::Cookie(c.to_string())
                } else if let Some(a) = named("arg_") {
                    Var::Arg(a.to_string())
                } else {
                    return Err(format!(
                        "${name} is not a variable Portcullis knows (see docs/annotations.md)"
                    ));
                }
            }
        })
    }

    fn render(&self, v: &RequestVars<'_>, out: &mut String) -> Result<(), UnsafeHost> {
        match self {
            Var::Scheme => out.push_str(v.scheme),
            Var::Host => push_host(v.host, out)?,
            Var::HttpHost => push_host(v.http_host, out)?,
            Var::RequestUri => {
                out.push_str(v.path);
                if let Some(q) = v.query {
                    out.push('?');
                    out.push_str(q);
                }
            }
            Var::EscapedRequestUri => {
                escape_into(v.path, out);
                if let Some(q) = v.query {
                    out.push_str("%3F");
                    escape_into(q, out);
                }
            }
            Var::Path => out.push_str(v.path),
            Var::Args => out.push_str(v.query.unwrap_or("")),
            Var::IsArgs => out.push_str(if v.query.is_some() { "?" } else { "" }),
            Var::Method => out.push_str(v.method),
            Var::RemoteAddr => out.push_str(&v.remote_addr.to_string()),
            Var::ServerPort => out.push_str(&v.server_port.to_string()),
            Var::RemoteUser => {
                let user = crate::vocab::request::basic_credentials(v.headers).map(|(u, _)| u);
                escape_into(&user.unwrap_or_default(), out);
            }
            Var::Header(name) => {
                let value = v.headers.get(name).map_or(&b""[..], |h| h.as_bytes());
                escape_bytes_into(value, out);
            }
            Var::Cookie(name) => {
                let value = v
                    .headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|h| h.to_str().ok())
                    .flat_map(|h| h.split(';'))
                    .find_map(|c| {
                        let (k, val) = c.trim().split_once('=')?;
                        (k == name).then_some(val)
                    });
                escape_into(value.unwrap_or(""), out);
            }
            Var::Arg(name) => {
                let value = v
                    .query
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .find_map(|p| {
                        let (k, val) = p.split_once('=').unwrap_or((p, ""));
                        (k == name).then_some(val)
                    });
                escape_into(value.unwrap_or(""), out);
            }
        }
        Ok(())
    }
}

/// A host (and port) as is, if it cannot change the meaning of the URL around it.
fn push_host(host: &str, out: &mut String) -> Result<(), UnsafeHost> {
    let safe = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !safe {
        return Err(UnsafeHost(host.to_string()));
    }
    out.push_str(host);
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters, as nginx's `set_escape_uri` does.
pub fn escape_into(s: &str, out: &mut String) {
    escape_bytes_into(s.as_bytes(), out);
}

fn escape_bytes_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// Values the variables take when a template is checked at build time.
fn sample_vars(headers: &http::HeaderMap) -> RequestVars<'_> {
    RequestVars {
        scheme: "https",
        host: "example.com",
        http_host: "example.com:8443",
        path: "/path",
        query: Some("a=b"),
        method: "GET",
        remote_addr: std::net::IpAddr::from([192, 0, 2, 1]),
        server_port: 443,
        headers,
    }
}

/// A template that must become an absolute http(s) URL: the scheme must be written out, and the
/// result with sample values must parse.
fn url_template(v: &str) -> Result<Template, String> {
    let t = Template::parse(v)?;
    let prefix = t.literal_prefix().to_ascii_lowercase();
    if !(prefix.starts_with("http://") || prefix.starts_with("https://")) {
        return Err(format!("{v:?} must be an absolute http:// or https:// URL"));
    }
    let headers = http::HeaderMap::new();
    let sample = t
        .render(&sample_vars(&headers))
        .map_err(|e| e.to_string())?;
    match sample.parse::<http::Uri>() {
        Ok(uri) if uri.authority().is_some_and(|a| !a.host().is_empty()) => Ok(t),
        _ => Err(format!("{v:?} is not a URL")),
    }
}

pub(super) fn parse(r: &mut Reader<'_>) -> Option<ExternalAuth> {
    let invalid = |r: &mut Reader<'_>, key: String, reason: &str| {
        r.errors.push(AnnotationError::Invalid {
            key,
            reason: format!("{reason}; the Ingress's routes answer 503"),
        });
        Some(ExternalAuth::Invalid)
    };
    let Some((url_key, url)) = r.get("auth-url") else {
        let (key, _) = NAMES.iter().find_map(|n| r.get(n))?;
        return invalid(r, key, "is set without auth-url");
    };
    if let Some((key, _)) = r.get("auth-proxy-set-headers") {
        r.errors.push(AnnotationError::Unsupported {
            key,
            hint: "headers from a ConfigMap are not implemented; the Ingress's routes answer 503 \
                   (have the auth service derive them, see docs/annotations.md)",
        });
        return Some(ExternalAuth::Invalid);
    }
    let url = match url_template(url) {
        Ok(t) => t,
        Err(reason) => return invalid(r, url_key, &reason),
    };
    let mut failed = None;
    let method = take(r, &mut failed, "auth-method", method);
    let signin = take(r, &mut failed, "auth-signin", url_template);
    let redirect = take(r, &mut failed, "auth-signin-redirect-param", redirect_param);
    let headers = take(r, &mut failed, "auth-response-headers", response_headers);
    let request_redirect = take(r, &mut failed, "auth-request-redirect", header_template);
    let always_set_cookie = take(r, &mut failed, "auth-always-set-cookie", parse_bool);
    let cache_key = take(r, &mut failed, "auth-cache-key", header_template);
    let durations = take(r, &mut failed, "auth-cache-duration", cache_durations);
    if cache_key.is_none()
        && durations.is_some()
        && let Some((key, _)) = r.get("auth-cache-duration")
    {
        failed.get_or_insert((key, "is set without auth-cache-key".into()));
    }
    if let Some((key, reason)) = failed {
        return invalid(r, key, &reason);
    }
    let cache = match (cache_key, durations) {
        (Some(key), Some(durations)) => Some(AuthCache { key, durations }),
        (Some(key), None) => Some(AuthCache {
            key,
            durations: cache_durations(DEFAULT_CACHE_DURATION).unwrap_or_default(),
        }),
        (None, _) => None,
    };
    let service = AuthService {
        url,
        method,
        signin,
        redirect_param: redirect.unwrap_or_else(|| "rd".into()),
        response_headers: headers.unwrap_or_default(),
        request_redirect,
        always_set_cookie: always_set_cookie.unwrap_or(false),
        cache,
    };
    Some(ExternalAuth::Enforce(Arc::new(service)))
}

/// The annotation's value parsed by `f`, if set; the first failure of the family is kept in `failed`.
fn take<T>(
    r: &Reader<'_>,
    failed: &mut Option<(String, String)>,
    name: &str,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    let (key, value) = r.get(name)?;
    match f(value) {
        Ok(v) => Some(v),
        Err(reason) => {
            failed.get_or_insert((key, reason));
            None
        }
    }
}

fn method(v: &str) -> Result<Method, String> {
    match v {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "TRACE" => {
            Method::from_bytes(v.as_bytes()).map_err(|e| e.to_string())
        }
        _ => Err(format!(
            "{v:?} is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"
        )),
    }
}

fn redirect_param(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    match ok {
        true => Ok(v.to_string()),
        false => Err(format!("{v:?} is not a query parameter name")),
    }
}

fn response_headers(v: &str) -> Result<Vec<HeaderName>, String> {
    let names: Result<Vec<HeaderName>, String> = v
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("{n:?} is not a header name"))
        })
        .collect();
    match names {
        Ok(n) if n.is_empty() => Err("lists no header".into()),
        other => other,
    }
}

/// A template whose result, with sample values, can be sent as a header value.
fn header_template(v: &str) -> Result<Template, String> {
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    let t = Template::parse(v)?;
    let headers = http::HeaderMap::new();
    let sample = t
        .render(&sample_vars(&headers))
        .map_err(|e| e.to_string())?;
    HeaderValue::from_str(&sample).map_err(|_| format!("{v:?} cannot be sent in a header"))?;
    Ok(t)
}

/// `auth-cache-duration`: comma-separated `[code…|any] time` entries, as nginx's `proxy_cache_valid`
/// (a time alone covers 200, 301 and 302).
fn cache_durations(v: &str) -> Result<Vec<(CachedStatus, Duration)>, String> {
    let mut out = Vec::new();
    for entry in v.split(',').map(str::trim) {
        let words: Vec<&str> = entry.split_whitespace().collect();
        let Some((time, codes)) = words.split_last() else {
            return Err(format!("{v:?} has an empty entry"));
        };
        let time = nginx_time(time)?;
        let status = match codes {
            [] => CachedStatus::Codes(vec![200, 301, 302]),
            ["any"] => CachedStatus::Any,
            codes => CachedStatus::Codes(
                codes
                    .iter()
                    .map(|c| match c.parse::<u16>() {
                        Ok(n) if (100..=599).contains(&n) => Ok(n),
                        _ => Err(format!("{c:?} is not a status code or \"any\"")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        out.push((status, time));
    }
    Ok(out)
}

/// nginx times: `30s`, `5m`, `1h`, `1d`; a bare number is seconds.
fn nginx_time(v: &str) -> Result<Duration, String> {
    let d = match v.strip_suffix('d') {
        Some(days) => days
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(86_400))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{v:?} is not a duration"))?,
        None => crate::vocab::parse_duration(v)?,
    };
    if d.is_zero() {
        return Err(format!("{v:?} must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests;
