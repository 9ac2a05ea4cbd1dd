//! The data plane: accepting connections on :80 and :443, choosing a route for each request, answering
//! redirects and errors, and forwarding everything else to a backend endpoint.

mod forward;
pub mod listener;
mod response;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::model::{ConfigHandle, Route};
pub use forward::Upstream;
pub use response::Body;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Facts about one client connection, shared by all its requests.
#[derive(Debug, Clone)]
pub struct Connection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub scheme: Scheme,
}

/// Limits for talking to backends.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    /// Establishing a TCP connection to an endpoint.
    pub connect: Duration,
    /// From sending the request until the response head arrives.
    pub response: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(60),
        }
    }
}

/// ACME HTTP-01 challenges must reach the solver over plain HTTP, so they are never redirected.
const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Routes each request using the configuration live at the moment it arrives.
pub struct Proxy {
    config: ConfigHandle,
    upstream: Upstream,
}

impl Proxy {
    pub fn new(config: ConfigHandle, timeouts: UpstreamTimeouts) -> Self {
        Proxy {
            config,
            upstream: Upstream::new(timeouts),
        }
    }

    pub async fn handle(&self, conn: &Connection, req: Request<Incoming>) -> Response<Body> {
        let route = {
            let config = self.config.load();
            config
                .routes
                .lookup(request_host(&req), req.uri().path())
                .cloned()
        };
        let Some(route) = route else {
            return response::error(StatusCode::NOT_FOUND, "no route for this host and path");
        };
        if conn.scheme == Scheme::Http
            && route.https_redirect
            && !req.uri().path().starts_with(ACME_CHALLENGE_PREFIX)
        {
            return https_redirect(&req);
        }
        self.forward(conn, &route, req).await
    }

    async fn forward(
        &self,
        conn: &Connection,
        route: &Arc<Route>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let Some(endpoint) = route.backend.pick() else {
            return response::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no ready endpoint for this service",
            );
        };
        match self.upstream.send(conn, endpoint, req).await {
            Ok(resp) => resp,
            Err(e) => {
                tracing::debug!(
                    ingress = %route.ingress,
                    service = %route.backend.service,
                    %endpoint,
                    error = %e,
                    "upstream request failed"
                );
                response::error(e.status(), e.public_message())
            }
        }
    }
}

/// The host a request is for: `:authority` (HTTP/2, absolute-form) or the `Host` header.
pub fn request_host<B>(req: &Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

/// `308` to the same host and URI on `https://`, the port dropped as ingress-nginx does.
fn https_redirect<B>(req: &Request<B>) -> Response<Body> {
    let host = crate::model::matching::normalize_host(request_host(req));
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    response::redirect(
        StatusCode::PERMANENT_REDIRECT,
        &format!("https://{host}{path_and_query}"),
    )
}
