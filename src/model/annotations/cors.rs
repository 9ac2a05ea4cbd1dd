//! CORS (`enable-cors` and the `cors-*` family), parsed once per build into the origins to admit and the
//! headers every CORS answer carries, so a request only compares its `Origin`.
//!
//! An invalid value turns CORS off for the Ingress (reported): browsers then refuse cross-origin reads,
//! which is visible and never grants more than was written, whereas falling back to the defaults
//! (origin `*`) could.

use http::{HeaderName, HeaderValue, header};

use super::{AnnotationError, Reader, parse_bool};

/// ingress-nginx's defaults.
const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const DEFAULT_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
const DEFAULT_MAX_AGE: u64 = 1_728_000;

/// The CORS policy of one Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    origins: Origins,
    /// `Access-Control-Allow-Credentials`, `-Methods`, `-Headers`, `-Expose-Headers`, `-Max-Age`,
    /// ready to copy onto an answer for an admitted origin.
    headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Origins {
    /// `*`: every origin, answered with `Access-Control-Allow-Origin: *`.
    Any,
    /// The listed origins, each admitted one echoed back.
    List(Vec<OriginPattern>),
}

/// `https://app.example.com[:port]`, or `https://*.example.com[:port]` for exactly one DNS label.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginPattern {
    /// Everything before the wildcard label (`https://`), or the whole origin when there is none.
    head: String,
    /// Everything after the wildcard label (`.example.com:8443`); `None` for an exact origin.
    tail: Option<String>,
}

impl Cors {
    /// Whether the answer depends on the request's `Origin`, so caches must key on it (`Vary: Origin`).
    pub fn varies_by_origin(&self) -> bool {
        matches!(self.origins, Origins::List(_))
    }

    /// The `Access-Control-Allow-Origin` value for a request with this `Origin` (if any), or `None` when
    /// the origin is not admitted and the answer gets no CORS headers.
    pub fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List(list) => {
                let origin = origin?;
                let bytes = origin.as_bytes();
                list.iter()
                    .any(|p| p.matches(bytes))
                    .then(|| origin.clone())
            }
        }
    }

    /// The headers besides `Access-Control-Allow-Origin` that go with an admitted origin.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }
}

impl OriginPattern {
    fn matches(&self, origin: &[u8]) -> bool {
        let head = self.head.as_bytes();
        let Some(tail) = &self.tail else {
            return origin.eq_ignore_ascii_case(head);
        };
        let tail = tail.as_bytes();
        if origin.len() <= head.len() + tail.len() {
            return false;
        }
        let (start, rest) = origin.split_at(head.len());
        let (label, end) = rest.split_at(rest.len() - tail.len());
        start.eq_ignore_ascii_case(head)
            && end.eq_ignore_ascii_case(tail)
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    }

    fn parse(text: &str) -> Result<OriginPattern, String> {
        let bad = |why: &str| {
            Err(format!(
                "{text:?} is not an origin like https://app.example.com ({why})"
            ))
        };
        let Some((scheme, authority)) = text.split_once("://") else {
            return bad("no scheme");
        };
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return bad("bad scheme");
        }
        if authority.contains('/') {
            return bad("an origin has no path, not even a trailing /");
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |n| n == 0)) {
            return bad("bad port");
        }
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, host),
        };
        let name_ok = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !name_ok {
            return bad("bad host name; only a leading *. may be a wildcard");
        }
        let lower = text.to_ascii_lowercase();
        Ok(match wildcard {
            true => OriginPattern {
                head: format!("{}://", scheme.to_ascii_lowercase()),
                tail: Some(lower[scheme.len() + "://*".len()..].to_string()),
            },
            false => OriginPattern {
                head: lower,
                tail: None,
            },
        })
    }
}

/// A comma list of tokens (methods or header names), written back as `A, B, C`.
fn token_list(text: &str, what: &str, valid: impl Fn(&str) -> bool) -> Result<HeaderValue, String> {
    let items: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Err(format!("lists no {what}"));
    }
    if let Some(bad) = items.iter().find(|s| !valid(s)) {
        return Err(format!("{bad:?} is not a {what}"));
    }
    HeaderValue::from_str(&items.join(", "))
        .map_err(|_| format!("{text:?} is not a list of {what}s"))
}

fn method(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphabetic())
}

fn header_name(s: &str) -> bool {
    s == "*" || HeaderName::from_bytes(s.as_bytes()).is_ok()
}

impl Reader<'_> {
    /// The CORS policy, when `enable-cors` is true and every `cors-*` value is valid.
    pub(super) fn cors(&mut self) -> Option<Cors> {
        if !self.bool("enable-cors").unwrap_or(false) {
            return None;
        }
        let before = self.errors.len();
        let origins = self.cors_value("cors-allow-origin", |v| {
            let entries: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            if entries.is_empty() {
                return Err("lists no origin".into());
            }
            // As ingress-nginx: `*` anywhere in the list admits every origin.
            if entries.contains(&"*") {
                return Ok(Origins::Any);
            }
            entries
                .into_iter()
                .map(OriginPattern::parse)
                .collect::<Result<_, _>>()
                .map(Origins::List)
        });
        let methods = self.cors_value("cors-allow-methods", |v| token_list(v, "method", method));
        let allow_headers = self.cors_value("cors-allow-headers", |v| {
            token_list(v, "header name", header_name)
        });
        let expose = self.cors_value("cors-expose-headers", |v| {
            token_list(v, "header name", header_name)
        });
        let max_age = self.cors_value("cors-max-age", |v| {
            v.parse::<u64>()
                .map_err(|_| format!("{v:?} is not a number of seconds"))
        });
        let credentials = self.cors_value("cors-allow-credentials", parse_bool);
        if self.errors.len() > before {
            return None;
        }
        let origins = origins.unwrap_or(Origins::Any);
        let credentials = match (&origins, credentials) {
            // Browsers refuse `Access-Control-Allow-Credentials: true` with `*`, which ingress-nginx
            // sent by default; admitting every origin with credentials would let any site read a
            // signed-in user's answers, so credentials need a list of origins.
            (Origins::Any, Some(true)) => {
                if let Some((key, _)) = self.get("cors-allow-credentials") {
                    self.errors.push(AnnotationError::Invalid {
                        key,
                        reason:
                            "is ignored with cors-allow-origin \"*\": browsers refuse credentials \
                                 for every origin; list the origins that may send them"
                                .into(),
                    });
                }
                false
            }
            (Origins::Any, _) => false,
            (Origins::List(_), c) => c.unwrap_or(true),
        };
        let mut headers = Vec::with_capacity(5);
        if credentials {
            headers.push((
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            ));
        }
        headers.push((
            header::ACCESS_CONTROL_ALLOW_METHODS,
            methods.unwrap_or(HeaderValue::from_static(DEFAULT_METHODS)),
        ));
        headers.push((
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            allow_headers.unwrap_or(HeaderValue::from_static(DEFAULT_HEADERS)),
        ));
        if let Some(expose) = expose {
            headers.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, expose));
        }
        headers.push((
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(max_age.unwrap_or(DEFAULT_MAX_AGE)),
        ));
        Some(Cors { origins, headers })
    }

    /// One `cors-*` value; an invalid one says that CORS is off for the Ingress.
    fn cors_value<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.parse(name, |v| {
            f(v).map_err(|reason| format!("{reason}; CORS is off for this Ingress"))
        })
    }
}

#[cfg(test)]
mod tests;
