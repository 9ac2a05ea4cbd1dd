//! Requests on a Gateway's socket: the listener by hostname, the HTTPRoute rule by the spec's
//! precedence, then the rule's filters: a redirect answers at once; otherwise the request headers and
//! URL are changed, a backend is picked by weight, and the response headers are changed on the way
//! back.

use std::sync::Arc;

use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;

use super::response::{self, Body};
use super::{ClientView, Connection, Proxy, discard_body};
use crate::metrics::Exchange;
use crate::model::Config;
use crate::model::NamespacedName;
use crate::model::gateway::filters::Origin;
use crate::model::gateway::routing::RequestParts;
use crate::model::gateway::serve::{BackendKey, Serving};
use crate::model::gateway::translate::Mirror;
use crate::vocab::hosts::normalize_host;
use crate::vocab::request::request_host;

impl Proxy {
    pub(super) async fn answer_gateway(
        &self,
        conn: &Connection,
        client: ClientView,
        mut req: Request<Incoming>,
        config: Arc<Config>,
        exchange: &mut Exchange<'_>,
    ) -> Response<Body> {
        let host = normalize_host(request_host(&req)).to_ascii_lowercase();
        let serving = &config.gateway;
        let action = serving.listener(&conn.local, &host).and_then(|listener| {
            let parts = RequestParts {
                path: req.uri().path(),
                query: req.uri().query(),
                method: req.method(),
                headers: req.headers(),
            };
            listener.rules.lookup(&host, &parts).cloned()
        });
        let Some(action) = action else {
            exchange.unmatched(&host);
            let resp = response::error(StatusCode::NOT_FOUND, "no route for this host and path");
            return discard_body(req, resp);
        };
        if let Some(redirect) = &action.redirect {
            let origin = Origin {
                scheme: conn.scheme.as_str(),
                host: &host,
                port: conn.local.port(),
                path: req.uri().path(),
                query: req.uri().query(),
                matched_prefix: &action.matched_prefix,
            };
            let location = redirect.location(&origin);
            self.metrics.redirect(redirect.status);
            return discard_body(req, response::redirect(redirect.status, &location));
        }
        let picked = action
            .pick(|total| fastrand::u32(1..=total))
            .filter(|b| b.resolved);
        let route = picked
            .and_then(|b| {
                serving.backends.get(&BackendKey {
                    route: action.route.clone(),
                    grpc: action.grpc,
                    service: b.service.clone(),
                    port: b.port,
                })
            })
            .cloned();
        let (Some(route), Some(picked)) = (route, picked) else {
            // The spec's answer for a share of requests whose backend does not resolve.
            let resp = response::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the route's backend is not valid",
            );
            return discard_body(req, resp);
        };
        for edits in [&action.request_headers, &picked.request_headers]
            .into_iter()
            .flatten()
        {
            edits.apply(req.headers_mut());
        }
        if let Some(rewrite) = &action.rewrite {
            if let Some(path) = &rewrite.path {
                let new_path = path.apply(req.uri().path(), &action.matched_prefix);
                if let Err(e) = set_path(&mut req, &new_path) {
                    tracing::debug!(route = %action.route, error = %e, "cannot rewrite the path");
                    let resp =
                        response::error(StatusCode::BAD_REQUEST, "the path cannot be rewritten");
                    return discard_body(req, resp);
                }
            }
            if let Some(hostname) = &rewrite.hostname
                && set_host(&mut req, hostname).is_err()
            {
                let resp = response::error(StatusCode::BAD_REQUEST, "the host cannot be rewritten");
                return discard_body(req, resp);
            }
        }
        for mirror in &action.mirrors {
            self.mirror(&req, serving, &action.route, action.grpc, mirror);
        }
        exchange.matched(&route);
        let body_idle_timeout = config.settings.limits.request_body_timeout.0;
        drop(config);
        let forwarded = self.forward(conn, client, &route, req, body_idle_timeout, exchange);
        let mut resp = match action.timeout {
            None => forwarded.await,
            Some(limit) => match tokio::time::timeout(limit, forwarded).await {
                Ok(resp) => resp,
                Err(_) => response::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the backend did not answer within the route's timeout",
                ),
            },
        };
        for edits in [&action.response_headers, &picked.response_headers]
            .into_iter()
            .flatten()
        {
            edits.apply(resp.headers_mut());
        }
        resp
    }
}

impl Proxy {
    /// `RequestMirror`: a copy of the request, as the filters left it, to one endpoint of the mirror
    /// backend; its answer is dropped. Only requests without a body are mirrored (the body streams
    /// once, to the backend that answers).
    fn mirror(
        &self,
        req: &Request<Incoming>,
        serving: &Serving,
        route: &NamespacedName,
        grpc: bool,
        mirror: &Mirror,
    ) {
        let chosen = fastrand::u32(0..1_000_000) < mirror.per_million;
        let mirror = &mirror.backend;
        if !chosen || !mirror.resolved || !hyper::body::Body::is_end_stream(req.body()) {
            return;
        }
        let key = BackendKey {
            route: route.clone(),
            grpc,
            service: mirror.service.clone(),
            port: mirror.port,
        };
        let Some(target) = serving.backends.get(&key) else {
            return;
        };
        let endpoints = &target.backend.endpoints;
        if endpoints.is_empty() {
            return;
        }
        let endpoint = endpoints[fastrand::usize(..endpoints.len())];
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = Uri::try_from(format!("http://{endpoint}{path}")) else {
            return;
        };
        let mut copy = Request::new(());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = uri;
        *copy.headers_mut() = req.headers().clone();
        if !copy.headers().contains_key(header::HOST)
            && let Some(host) = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            copy.headers_mut().insert(header::HOST, host);
        }
        let upstream = self.upstream.clone();
        let policy = target.policy.clone();
        let service = mirror.service.clone();
        tokio::spawn(async move {
            if let Err(e) = upstream.send_bodyless(copy, &policy.upstream).await {
                tracing::debug!(%service, error = %e, "the mirror did not answer");
            }
        });
    }
}

/// Replaces the path, keeping the query.
fn set_path<B>(req: &mut Request<B>, path: &str) -> Result<(), http::Error> {
    let mut with_query = path.to_string();
    if let Some(q) = req.uri().query() {
        with_query.push('?');
        with_query.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(with_query)?);
    *req.uri_mut() = Uri::from_parts(parts)?;
    Ok(())
}

/// Replaces the `Host` header, and the authority of an absolute (HTTP/2) URI.
fn set_host<B>(req: &mut Request<B>, host: &str) -> Result<(), http::Error> {
    let value = HeaderValue::from_str(host)?;
    if req.uri().authority().is_some() {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = Some(Authority::try_from(host)?);
        *req.uri_mut() = Uri::from_parts(parts)?;
    }
    req.headers_mut().insert(header::HOST, value);
    Ok(())
}
