//! The data plane: accepting connections on :80 and :443, choosing a route for each request, answering
//! redirects and errors, and forwarding everything else to a backend endpoint.

mod access;
mod acme_challenge;
mod balance;
mod basic_auth;
mod body;
mod canary;
mod client;
mod client_cert;
mod connection;
mod cors;
mod error_pages;
mod external_auth;
mod forward;
mod framing;
mod gateway;
pub mod gateway_sockets;
mod limit_rate;
pub mod listener;
mod passthrough;
mod pool;
pub mod proxy_protocol;
mod ratelimit;
mod response;
mod retry;
pub mod termination;
mod timeouts;
mod tunnels;
mod upstream_error;

use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::acme::Challenges;
use crate::metrics::{Exchange, Measured, Metrics};
use crate::model::annotations::LimitRate;
use crate::model::{ConfigHandle, Policy, Route};
use crate::vocab::hosts::normalize_host;
use crate::vocab::request::{content_length, request_host};
pub use client::ClientView;
pub use connection::{Connection, Scheme};
use forward::Forward;
pub use forward::Upstream;
pub use response::Body;
pub use tunnels::Tunnels;

/// ACME HTTP-01 challenges must reach the solver over plain HTTP, so they are never redirected.
const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Routes each request using the configuration live at the moment it arrives.
pub struct Proxy {
    config: ConfigHandle,
    upstream: Arc<Upstream>,
    /// The HTTPS listener's port, for `use-port-in-redirects`.
    https_port: u16,
    metrics: Arc<Metrics>,
    basic_auth: basic_auth::BasicAuth,
    external_auth: external_auth::ExternalAuthCheck,
    rate_limiters: Arc<ratelimit::RateLimiters>,
    acme: Arc<Challenges>,
}

impl Proxy {
    pub fn new(
        config: ConfigHandle,
        upstream: Upstream,
        https_port: u16,
        metrics: Arc<Metrics>,
    ) -> Self {
        Proxy {
            config,
            upstream: Arc::new(upstream),
            https_port,
            rate_limiters: ratelimit::RateLimiters::start(metrics.rate_limit_entries()),
            metrics,
            basic_auth: basic_auth::BasicAuth::default(),
            external_auth: external_auth::ExternalAuthCheck::default(),
            acme: Arc::default(),
        }
    }

    /// Answers the orderer's pending HTTP-01 challenges on the plain-HTTP listener.
    pub fn with_acme_challenges(mut self, challenges: Arc<Challenges>) -> Self {
        self.acme = challenges;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Answers one request; its metrics and access-log line are recorded when the response body ends.
    pub async fn handle(
        &self,
        conn: &Connection,
        req: Request<Incoming>,
    ) -> Response<Measured<Body>> {
        let mut exchange = self.metrics.exchange(&req, conn.peer, conn.proxied_by);
        let resp = self.answer(conn, req, &mut exchange).await;
        exchange.respond(resp)
    }

    /// Answers one request. The order follows ingress-nginx, whose users depend on it: redirects
    /// (fixed, HTTPS, www, app-root) first, then the source-range check (deny, then allow), the
    /// rate limits, the client certificate, CORS preflights (before auth, as browsers send no
    /// credentials on them), the body-size check, basic auth, external auth (`auth-url`), and the
    /// backend, whose response body `limit-rate` paces (for a `custom-http-errors` status, the error
    /// backend's answer instead); HSTS is added to HTTPS responses for hosts that have a
    /// certificate, CORS headers to every answer of a route with CORS, the auth service's cookies to
    /// answers of a route with external auth.
    async fn answer(
        &self,
        conn: &Connection,
        mut req: Request<Incoming>,
        exchange: &mut Exchange<'_>,
    ) -> Response<Body> {
        let config = self.config.load_full();
        let client = ClientView::new(conn, req.headers(), &config.settings.trusted_proxies);
        exchange.client(client.ip);
        let host = request_host(&req);
        if req
            .extensions()
            .get::<framing::AmbiguousFraming>()
            .is_some()
        {
            // hyper framed it by Transfer-Encoding; a hop that reads Content-Length would not.
            let mut resp = discard_body(
                req,
                response::error(
                    StatusCode::BAD_REQUEST,
                    "the request has both Content-Length and Transfer-Encoding",
                ),
            );
            resp.headers_mut()
                .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
            return resp;
        }
        if has_dot_segment(req.uri().path()) {
            // `/public/../admin` would be routed by `/public` and read as `/admin` by the backend.
            return discard_body(
                req,
                response::error(StatusCode::BAD_REQUEST, "the path has . or .. segments"),
            );
        }
        if conn.scheme == Scheme::Http
            && let Some(resp) = acme_challenge::answer(&self.acme, req.uri().path())
        {
            self.metrics.acme().challenge_answered("http-01");
            return discard_body(req, resp);
        }
        if config.gateway.sockets.contains_key(&conn.local) {
            return self
                .answer_gateway(conn, client, req, config, exchange)
                .await;
        }
        let Some(route) = config.routes.lookup(host, req.uri().path()).cloned() else {
            exchange.unmatched(host);
            let pages = error_pages::for_unmatched(&config.routes, host);
            let original = pages.as_ref().map(|_| error_pages::Original::of(&mut req));
            drop(config);
            let resp = discard_body(
                req,
                response::error(StatusCode::NOT_FOUND, "no route for this host and path"),
            );
            return match (pages, original) {
                (Some(route), Some(original)) => {
                    let (up, live) = (&self.upstream, &self.config);
                    let answered = error_pages::Answered::Unmatched;
                    error_pages::replace(up, live, &route, answered, original, resp).await
                }
                _ => resp,
            };
        };
        exchange.matched(&route);
        let hsts = route
            .policy
            .hsts
            .as_ref()
            .filter(|_| conn.scheme == Scheme::Https && config.certs.find(host).is_some())
            .cloned();
        let cors = route.policy.cors.as_ref().map(|c| cors::evaluate(c, &req));
        let mut local =
            match self.answer_locally(conn, &client, &route, &mut req, cors.as_ref(), exchange) {
                None => match &route.policy.basic_auth {
                    Some(auth) => self.basic_auth.check(auth, req.headers()).await,
                    None => None,
                },
                local => local,
            };
        let mut grant = None;
        if let (None, Some(auth)) = (&local, &route.policy.external_auth) {
            let ask = external_auth::Ask {
                upstream: &self.upstream,
                metrics: &self.metrics,
                route: &route,
                conn,
                client: &client,
            };
            match self.external_auth.check(ask, auth, &mut req).await {
                external_auth::Verdict::Pass(g) => grant = Some(g),
                external_auth::Verdict::Refuse(refused) => local = Some(refused),
            }
        }
        let mut resp = match local {
            Some(resp) => {
                if resp.status().is_redirection() {
                    self.metrics.redirect(resp.status());
                }
                discard_body(req, resp)
            }
            None => {
                let body_idle_timeout = config.settings.limits.request_body_timeout.0;
                drop(config);
                let pages = route.policy.error_pages.as_ref();
                let original = pages.map(|_| error_pages::Original::of(&mut req));
                let resp = self
                    .forward(conn, client, &route, req, body_idle_timeout, exchange)
                    .await;
                match original {
                    Some(original) => {
                        let (up, live) = (&self.upstream, &self.config);
                        let answered = error_pages::Answered::ForRoute;
                        error_pages::replace(up, live, &route, answered, original, resp).await
                    }
                    None => resp,
                }
            }
        };
        if let Some(value) = hsts {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, value);
        }
        if let Some(cors) = cors {
            cors.apply(resp.headers_mut());
        }
        if let Some(grant) = grant {
            grant.apply(&mut resp);
        }
        resp
    }

    /// The responses Portcullis gives without asking a backend, if any applies.
    fn answer_locally(
        &self,
        conn: &Connection,
        client: &ClientView,
        route: &Route,
        req: &mut Request<Incoming>,
        cors: Option<&cors::CorsAnswer>,
        exchange: &mut Exchange<'_>,
    ) -> Option<Response<Body>> {
        let policy = &route.policy;
        let path = req.uri().path();
        if let Some(fixed) = &policy.fixed_redirect {
            return Some(response::redirect(fixed.code.status(), &fixed.url));
        }
        if client.scheme == Scheme::Http
            && route.https_redirect
            && !path.starts_with(ACME_CHALLENGE_PREFIX)
        {
            return Some(self.https_redirect(req, policy));
        }
        if let Some(target) = &route.redirect_host {
            let location = format!(
                "{}://{target}{}",
                client.scheme.as_str(),
                path_and_query(req)
            );
            return Some(response::redirect(
                StatusCode::PERMANENT_REDIRECT,
                &location,
            ));
        }
        if let Some(root) = &policy.app_root
            && path == "/"
        {
            let location = format!("{}://{}{root}", client.scheme.as_str(), request_host(req));
            return Some(response::redirect(StatusCode::FOUND, &location));
        }
        if let Some(refused) = access::check(client.ip, policy) {
            return Some(refused);
        }
        if let Some(limit) = &policy.rate_limit {
            match self.rate_limiters.check(client.ip, &route.ingress, limit) {
                ratelimit::Admission::Pass(Some(in_flight)) => exchange.hold_until_done(in_flight),
                ratelimit::Admission::Pass(None) => {}
                ratelimit::Admission::Refuse(refused) => return Some(refused),
            }
        }
        if let Some(refused) = client_cert::check(
            policy.client_cert.as_ref(),
            &conn.client_cert,
            conn.scheme == Scheme::Https,
            req.headers_mut(),
        ) {
            return Some(refused);
        }
        if policy.limit_rate == Some(LimitRate::Invalid) {
            return Some(response::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the Ingress's response rate limit is invalid",
            ));
        }
        if let Some(preflight) = cors.and_then(cors::CorsAnswer::preflight) {
            return Some(preflight);
        }
        if let Some(max) = policy.upstream.max_body_size
            && content_length(req).is_some_and(|len| len > max)
        {
            return Some(response::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            ));
        }
        None
    }

    /// The HTTPS redirect: same host (port dropped unless `use-port-in-redirects`) and URI, a trailing
    /// slash removed unless `preserve-trailing-slash`, as ingress-nginx does.
    fn https_redirect(&self, req: &Request<Incoming>, policy: &Policy) -> Response<Body> {
        let host = normalize_host(request_host(req));
        let mut uri = path_and_query(req);
        if !policy.preserve_trailing_slash && uri.len() > 1 && uri.ends_with('/') {
            uri = &uri[..uri.len() - 1];
        }
        let location = if policy.use_port_in_redirects && self.https_port != 443 {
            format!("https://{host}:{}{uri}", self.https_port)
        } else {
            format!("https://{host}{uri}")
        };
        response::redirect(policy.redirect_code.status(), &location)
    }

    async fn forward(
        &self,
        conn: &Connection,
        client: ClientView,
        route: &Arc<Route>,
        req: Request<Incoming>,
        body_idle_timeout: std::time::Duration,
        exchange: &mut Exchange<'_>,
    ) -> Response<Body> {
        let backend = match &route.fallback {
            Some(fallback) if route.backend.endpoints.is_empty() => {
                exchange.served_by_fallback(route);
                fallback
            }
            _ => &route.backend,
        };
        let (backend, balancing) = match &route.canary {
            Some(c) if canary::takes(c, backend, &route.policy.balancing, req.headers(), roll) => {
                exchange.served_by_canary(route, &c.backend);
                (&c.backend, &c.balancing)
            }
            _ => (backend, &route.policy.balancing),
        };
        let facts = balance::Facts {
            headers: req.headers(),
            uri: req.uri(),
            method: req.method(),
            client: &client,
            host: request_host(&req),
            local_port: conn.local.port(),
            cookie_path: &route.cookie_path,
        };
        let Some(mut choice) = balance::choose(backend, balancing, &facts) else {
            return response::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no ready endpoint for this service",
            );
        };
        let endpoint = choice.endpoint;
        let policy = &route.policy.upstream;
        let path = policy
            .rewrite_target
            .as_deref()
            .map(|target| rewrite(route, req.uri().path(), target));
        let forward = Forward {
            conn,
            client,
            endpoint,
            endpoints: &backend.endpoints,
            ingress: &route.ingress,
            service: &backend.service,
            metrics: self.metrics.upstream(),
            policy,
            path,
            body_idle_timeout,
            request_tally: exchange.request_tally(),
        };
        let sent = std::time::Instant::now();
        let (result, endpoint) = self.upstream.send(forward, req).await;
        exchange.upstream(endpoint);
        match result {
            Ok(mut resp) => {
                exchange.upstream_responded(sent.elapsed());
                if let Some(in_flight) = &mut choice.in_flight {
                    in_flight.answered();
                }
                let cookie = match &choice.moved {
                    Some(moved) if endpoint != choice.endpoint => moved.cookie_for(endpoint),
                    _ => choice.set_cookie,
                };
                if let Some(cookie) = cookie {
                    resp.headers_mut().append(header::SET_COOKIE, cookie);
                }
                limit_rate::pace(resp.body_mut(), route.policy.limit_rate.as_ref());
                resp
            }
            Err(e) => {
                tracing::debug!(
                    ingress = %route.ingress,
                    service = %backend.service,
                    %endpoint,
                    error = %e,
                    "upstream request failed"
                );
                response::error(e.status(), e.public_message())
            }
        }
    }
}

/// A uniformly random number from 1 to `total`, for canary weights.
fn roll(total: u32) -> u32 {
    fastrand::u32(1..=total.max(1))
}

/// The most of an unwanted request body read and thrown away after answering without it.
const DISCARD_LIMIT: u64 = 64 << 20;
/// How long the client gets to finish sending an unwanted body.
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers without the request body, but keeps reading it (and throws it away) in the background, as
/// nginx's lingering close does: closing a socket with unread data makes the kernel send a reset,
/// which can destroy the response before the client reads it (a 413 for an upload, say). The
/// connection is not kept alive afterwards.
fn discard_body(req: Request<Incoming>, mut resp: Response<Body>) -> Response<Body> {
    use http_body_util::BodyExt;
    if hyper::body::Body::is_end_stream(req.body()) {
        return resp;
    }
    if req.version() == http::Version::HTTP_11 {
        resp.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    let mut body = req.into_body();
    tokio::spawn(async move {
        let drain = async {
            let mut read = 0u64;
            while read < DISCARD_LIMIT {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len() as u64),
                    _ => return,
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
    });
    resp
}

/// `rewrite-target`: the target with `$1`, `$2`… replaced by the path regex's captures.
fn rewrite(route: &Route, path: &str, target: &str) -> String {
    let Some(captures) = route.path_regex.as_ref().and_then(|re| re.captures(path)) else {
        return target.to_string();
    };
    let mut out = String::with_capacity(target.len() + path.len());
    let mut rest = target;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let digits = rest[i + 1..].bytes().take_while(u8::is_ascii_digit).count();
        match rest[i + 1..i + 1 + digits].parse::<usize>() {
            Ok(n) => out.push_str(captures.get(n).map_or("", |m| m.as_str())),
            Err(_) => out.push('$'),
        }
        rest = &rest[i + 1 + digits..];
    }
    out.push_str(rest);
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// Whether a path has a `.` or `..` segment, also percent-encoded (`%2e`): clients resolve them
/// before sending (RFC 3986 §5.2.4), so only a request crafted to route one way and be read another
/// has them.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(is_dot_segment)
}

/// `.` or `..`, each dot literal or `%2e`; checked byte by byte because it runs for every request.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return false,
        };
        dots += 1;
    }
    dots == 1 || dots == 2
}

fn path_and_query<B>(req: &Request<B>) -> &str {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, NamespacedName};

    fn route_with_regex(pattern: &str) -> Route {
        Route {
            ingress: NamespacedName::new("ns", "i"),
            host: None,
            backend: Arc::new(Backend::new(
                NamespacedName::new("ns", "s"),
                "80".into(),
                vec![],
            )),
            fallback: None,
            https_redirect: false,
            redirect_host: None,
            path_regex: Some(regex::Regex::new(&format!("(?i)^{pattern}")).unwrap()),
            policy: Arc::new(Policy::new(&Default::default(), &Default::default())),
            cookie_path: "/".into(),
            canary: None,
        }
    }

    #[test]
    fn dot_segments_are_recognised() {
        for bad in [
            "/..",
            "/a/../b",
            "/./a",
            "/a/.",
            "/%2e%2E/x",
            "/a/%2e",
            "/.%2e/",
        ] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for fine in [
            "/",
            "/a.b",
            "/..a",
            "/a/...",
            "/%2e%2e%2e",
            "/.%2",
            "/%",
            "/%2f",
            "/.well-known/x",
        ] {
            assert!(!has_dot_segment(fine), "{fine}");
        }
    }

    #[test]
    fn rewrite_expands_captures() {
        let r = route_with_regex("/something(/|$)(.*)");
        assert_eq!(rewrite(&r, "/something/new/path", "/$2"), "/new/path");
        assert_eq!(rewrite(&r, "/something", "/$2"), "/");
        assert_eq!(rewrite(&r, "/something/x", "/api/$2/end"), "/api/x/end");
        assert_eq!(
            rewrite(&r, "/something/x", "/$9"),
            "/",
            "a missing group is empty"
        );
        assert_eq!(rewrite(&r, "/something/x", "/cost$"), "/cost$");
        assert_eq!(
            rewrite(&r, "/other", "/$2"),
            "/$2",
            "no match: the target as written"
        );
    }
}
