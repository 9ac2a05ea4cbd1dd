//! The external-auth step (`auth-url`): before a request of a protected route goes on, the auth
//! service is asked about it with a subrequest that carries the client's headers but no body. Its
//! answer decides, as in ingress-nginx: 2xx lets the request go on with the `auth-response-headers`
//! copied in (and removed when the answer lacks them, so a client cannot forge them); 401 and 403 go
//! back to the client, a 401 becoming a redirect to `auth-signin` when one is set; any other status,
//! or no answer, is a 500. The subrequest uses the backends' pools and the route's timeouts.
//!
//! With `auth-cache-key`, answers are remembered per route, auth URL and key for the
//! `auth-cache-duration` of their status, in a bounded map. Answers that set cookies are never
//! remembered (as nginx's cache does not store them): a cookie is meant for one client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::client::{
    ClientView, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PORT, X_FORWARDED_PROTO,
};
use super::connection::Connection;
use super::forward::{Upstream, strip_hop_by_hop};
use super::response::{self, Body};
use crate::metrics::Metrics;
use crate::model::Route;
use crate::model::annotations::external_auth::{
    AuthService, ExternalAuth, RequestVars, escape_into,
};
use crate::vocab::hosts::normalize_host;
use crate::vocab::request::request_host;

const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_SCHEME: HeaderName = HeaderName::from_static("x-scheme");
const X_AUTH_REQUEST_REDIRECT: HeaderName = HeaderName::from_static("x-auth-request-redirect");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Answers remembered at most (over all routes).
const CACHE_CAPACITY: usize = 10_000;
/// The most of an auth answer's body read (and thrown away) so its connection can be reused.
const DRAIN_LIMIT: usize = 64 << 10;

/// Asks auth services about requests, remembering answers where the route allows it.
pub struct ExternalAuthCheck {
    cache: AnswerCache,
}

impl Default for ExternalAuthCheck {
    fn default() -> Self {
        ExternalAuthCheck {
            cache: AnswerCache::new(CACHE_CAPACITY),
        }
    }
}

/// What one check needs besides the request.
pub struct Ask<'a> {
    pub upstream: &'a Upstream,
    pub metrics: &'a Metrics,
    pub route: &'a Route,
    pub conn: &'a Connection,
    pub client: &'a ClientView,
}

/// What the auth service's answer means for a request.
pub enum Verdict {
    /// The request goes on; the grant completes its response.
    Pass(Grant),
    /// The client gets this answer instead.
    Refuse(Response<Body>),
}

/// The auth answer's cookies for the client's response, once it is known.
pub struct Grant {
    cookies: Vec<HeaderValue>,
    always: bool,
}

impl Grant {
    /// Adds the cookies on 2xx and 3xx responses, or on every response with `auth-always-set-cookie`.
    pub fn apply(self, resp: &mut Response<Body>) {
        let status = resp.status();
        if self.always || status.is_success() || status.is_redirection() {
            for cookie in self.cookies {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
            }
        }
    }
}

/// The parts of an auth answer that are used.
#[derive(Debug, Clone)]
struct Answer {
    status: StatusCode,
    /// `auth-response-headers`, `WWW-Authenticate` and `Set-Cookie`.
    headers: HeaderMap,
}

impl ExternalAuthCheck {
    /// `Pass` when the request may go on (its headers updated); otherwise the answer for the client.
    pub async fn check(
        &self,
        ask: Ask<'_>,
        auth: &ExternalAuth,
        req: &mut Request<Incoming>,
    ) -> Verdict {
        let service = match auth {
            ExternalAuth::Enforce(service) => service,
            ExternalAuth::Invalid => {
                return Verdict::Refuse(response::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authentication for this site is not configured correctly",
                ));
            }
        };
        let request_id = ensure_request_id(req.headers_mut());
        let host = normalize_host(request_host(req)).into_owned();
        let vars = RequestVars {
            scheme: ask.client.scheme.as_str(),
            host: &host,
            http_host: request_host(req),
            path: req.uri().path(),
            query: req.uri().query(),
            method: req.method().as_str(),
            remote_addr: ask.client.ip,
            server_port: ask.conn.local.port(),
            headers: req.headers(),
        };
        let Ok(url) = service.url.render(&vars) else {
            return Verdict::Refuse(response::error(
                StatusCode::BAD_REQUEST,
                "the Host header is not a host name",
            ));
        };
        let cache_key = service.cache.as_ref().and_then(|c| {
            let key = c.key.render(&vars).ok()?;
            Some(self.cache.key(ask.route, &url, &key))
        });
        let signin = match &service.signin {
            Some(t) => match t.render(&vars) {
                Ok(s) => Some(s),
                Err(_) => {
                    return Verdict::Refuse(response::error(
                        StatusCode::BAD_REQUEST,
                        "the Host header is not a host name",
                    ));
                }
            },
            None => None,
        };
        let redirect_header = service
            .request_redirect
            .as_ref()
            .and_then(|t| t.render(&vars).ok());

        let cached = cache_key.and_then(|k| self.cache.get(&k));
        let answer = match cached {
            Some(answer) => answer,
            None => {
                let sub = subrequest(&ask, service, req, &url, redirect_header, request_id);
                let answer = match sub {
                    Some(sub) => ask_service(&ask, service, sub).await,
                    None => None,
                };
                let Some(answer) = answer else {
                    return Verdict::Refuse(failed());
                };
                let answer = Arc::new(answer);
                if let (Some(k), Some(cache)) = (cache_key, &service.cache)
                    && let Some(ttl) = cache.ttl(answer.status.as_u16())
                    && !answer.headers.contains_key(header::SET_COOKIE)
                {
                    self.cache.insert(k, answer.clone(), ttl);
                }
                answer
            }
        };
        decide(service, &answer, req, ask.client.scheme.as_str(), signin)
    }
}

/// The request to the auth service, or `None` if the filled-in URL cannot be used.
fn subrequest(
    ask: &Ask<'_>,
    service: &AuthService,
    req: &Request<Incoming>,
    url: &str,
    redirect_header: Option<String>,
    request_id: HeaderValue,
) -> Option<Request<()>> {
    let uri: Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => {
            tracing::debug!(ingress = %ask.route.ingress, url, error = %e, "auth-url is not a URL for this request");
            return None;
        }
    };
    let authority = HeaderValue::from_str(uri.authority()?.as_str()).ok()?;
    let mut headers = req.headers().clone();
    strip_hop_by_hop(&mut headers);
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::EXPECT,
    ] {
        headers.remove(name);
    }
    // HTTP/2 clients may split cookies over several fields; HTTP/1.1 allows one.
    if headers.get_all(header::COOKIE).iter().nth(1).is_some() {
        let joined: Vec<&[u8]> = headers
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
            headers.insert(header::COOKIE, v);
        }
    }
    let scheme = ask.client.scheme.as_str();
    let http_host = request_host(req);
    let request_uri = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let value = |s: &str| HeaderValue::from_str(s).ok();
    let ip = ask.client.ip.to_string();
    let set: [(HeaderName, Option<HeaderValue>); 11] = [
        (header::HOST, Some(authority)),
        (
            X_ORIGINAL_URL,
            value(&format!("{scheme}://{http_host}{request_uri}")),
        ),
        (X_ORIGINAL_METHOD, value(req.method().as_str())),
        (
            X_AUTH_REQUEST_REDIRECT,
            value(redirect_header.as_deref().unwrap_or(request_uri)),
        ),
        (X_FORWARDED_FOR, value(&ip)),
        (X_REAL_IP, value(&ip)),
        (X_FORWARDED_PROTO, value(scheme)),
        (X_FORWARDED_HOST, value(http_host)),
        (
            X_FORWARDED_PORT,
            Some(HeaderValue::from(ask.conn.local.port())),
        ),
        (X_FORWARDED_URI, value(request_uri)),
        (X_REQUEST_ID, Some(request_id)),
    ];
    for (name, v) in set {
        match v {
            Some(v) => headers.insert(name, v),
            None => headers.remove(name),
        };
    }
    if service.method.is_some() {
        // ingress-nginx adds these only with auth-method.
        headers.insert(X_ORIGINAL_URI, value(request_uri)?);
        headers.insert(X_SCHEME, value(scheme)?);
    }
    let mut sub = Request::new(());
    *sub.method_mut() = service.method.clone().unwrap_or(http::Method::GET);
    *sub.uri_mut() = uri;
    *sub.headers_mut() = headers;
    Some(sub)
}

/// Sends the subrequest and reads the answer; `None` when there is none.
async fn ask_service(ask: &Ask<'_>, service: &AuthService, sub: Request<()>) -> Option<Answer> {
    let policy = &ask.route.policy.upstream;
    let sent = Instant::now();
    let resp = ask.upstream.send_bodyless(sub, policy).await;
    let took = sent.elapsed();
    let resp = match resp {
        Ok(resp) => resp,
        Err(e) => {
            ask.metrics.external_auth(&ask.route.ingress, "error", took);
            tracing::debug!(ingress = %ask.route.ingress, error = %e, "auth service did not answer");
            return None;
        }
    };
    let status = resp.status();
    let result = match status.as_u16() {
        200..=299 => "allowed",
        401 | 403 => "denied",
        _ => "error",
    };
    ask.metrics.external_auth(&ask.route.ingress, result, took);
    let (parts, body) = resp.into_parts();
    let mut headers = HeaderMap::new();
    let keep = service
        .response_headers
        .iter()
        .chain([&header::WWW_AUTHENTICATE, &header::SET_COOKIE]);
    for name in keep {
        for v in parts.headers.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    // Read the (small) body so the connection goes back to the pool.
    let read_timeout = policy.read_timeout;
    tokio::spawn(async move {
        let drain = async {
            let mut body = body;
            let mut read = 0;
            while read < DRAIN_LIMIT {
                match body.frame().await {
                    Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(read_timeout, drain).await;
    });
    Some(Answer { status, headers })
}

/// What the auth answer means for the request.
fn decide(
    service: &AuthService,
    answer: &Answer,
    req: &mut Request<Incoming>,
    scheme: &str,
    signin: Option<String>,
) -> Verdict {
    let grant = Grant {
        cookies: answer
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect(),
        always: service.always_set_cookie,
    };
    let mut resp = match answer.status.as_u16() {
        200..=299 => {
            let headers = req.headers_mut();
            for name in &service.response_headers {
                headers.remove(name);
                for v in answer.headers.get_all(name) {
                    headers.append(name.clone(), v.clone());
                }
            }
            return Verdict::Pass(grant);
        }
        401 => match signin {
            Some(signin) => response::redirect(
                StatusCode::FOUND,
                &signin_location(signin, &service.redirect_param, scheme, req),
            ),
            None => {
                let mut resp = response::error(StatusCode::UNAUTHORIZED, "authentication required");
                for v in answer.headers.get_all(header::WWW_AUTHENTICATE) {
                    resp.headers_mut()
                        .append(header::WWW_AUTHENTICATE, v.clone());
                }
                resp
            }
        },
        403 => response::error(StatusCode::FORBIDDEN, "access denied"),
        _ => failed(),
    };
    grant.apply(&mut resp);
    Verdict::Refuse(resp)
}

fn failed() -> Response<Body> {
    response::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the authentication service failed",
    )
}

/// The sign-in URL with the original URL in the redirect parameter, unless the URL already has it.
fn signin_location(
    mut signin: String,
    param: &str,
    scheme: &str,
    req: &Request<Incoming>,
) -> String {
    let has_param = signin
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p.split('=').next() == Some(param)));
    if has_param {
        return signin;
    }
    signin.push(if signin.contains('?') { '&' } else { '?' });
    signin.push_str(param);
    signin.push('=');
    let original = format!(
        "{scheme}://{}{}",
        request_host(req),
        req.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    escape_into(&original, &mut signin);
    signin
}

/// The client's `X-Request-ID`, or a new one (32 hex digits, as ingress-nginx makes) added to the
/// request, so the auth service and the backend see the same.
pub(super) fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        return id.clone();
    }
    let mut bytes = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    let mut hex = String::with_capacity(32);
    for b in bytes {
        hex.push_str(&format!("{b:02x}"));
    }
    let id = HeaderValue::from_str(&hex).unwrap_or(HeaderValue::from_static("0"));
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// Remembered answers, bounded: two generations, the older dropped whole when the newer is full,
/// so at most `capacity` answers are kept and recently stored ones survive.
struct AnswerCache {
    capacity: usize,
    generations: Mutex<(Entries, Entries)>,
}

type Entries = HashMap<[u8; 32], (Instant, Arc<Answer>)>;

impl AnswerCache {
    fn new(capacity: usize) -> Self {
        AnswerCache {
            capacity: capacity.max(2),
            generations: Mutex::new((HashMap::new(), HashMap::new())),
        }
    }

    /// A digest of what identifies an answer: the route's Ingress, the auth URL and the cache key as
    /// filled in. The key often holds credentials; only its digest is kept.
    fn key(&self, route: &Route, url: &str, key: &str) -> [u8; 32] {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [
            route.ingress.namespace.as_str(),
            route.ingress.name.as_str(),
            url,
            key,
        ] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    fn get(&self, key: &[u8; 32]) -> Option<Arc<Answer>> {
        let g = self.generations.lock().ok()?;
        let now = Instant::now();
        [&g.0, &g.1]
            .into_iter()
            .find_map(|m| m.get(key))
            .filter(|(expires, _)| *expires > now)
            .map(|(_, a)| a.clone())
    }

    fn insert(&self, key: [u8; 32], answer: Arc<Answer>, ttl: Duration) {
        let Ok(mut g) = self.generations.lock() else {
            return;
        };
        if g.0.len() >= self.capacity / 2 {
            g.1 = std::mem::take(&mut g.0);
        }
        g.0.insert(key, (Instant::now() + ttl, answer));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.generations.lock().map_or(0, |g| g.0.len() + g.1.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Arc<Answer> {
        Arc::new(Answer {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
        })
    }

    #[test]
    fn cache_is_bounded_and_answers_expire() {
        let cache = AnswerCache::new(100);
        for i in 0u32..10_000 {
            let mut k = [0; 32];
            k[..4].copy_from_slice(&i.to_be_bytes());
            cache.insert(k, answer(), Duration::from_secs(60));
            assert!(cache.len() <= 100);
        }
        let mut recent = [0; 32];
        recent[..4].copy_from_slice(&9_999u32.to_be_bytes());
        assert!(cache.get(&recent).is_some());
        assert!(cache.get(&[0; 32]).is_none(), "the oldest is gone");
        cache.insert([9; 32], answer(), Duration::ZERO);
        assert!(cache.get(&[9; 32]).is_none(), "expired");
    }

    #[test]
    fn request_ids_are_kept_or_made() {
        let mut h = HeaderMap::new();
        let made = ensure_request_id(&mut h);
        assert_eq!(made.len(), 32);
        assert_eq!(h[&X_REQUEST_ID], made);
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(ensure_request_id(&mut h), "abc");
    }
}
