//! The access log: with `--access-log`, one structured line per request on its own tracing target,
//! [`TARGET`], so it can be routed or filtered apart from the controller's own logs (e.g.
//! `RUST_LOG=info,portcullis::access=off`). It carries the same route labels as the request metrics plus
//! what metrics cannot: addresses, the exact host and path, byte counts and durations. The query string
//! is left out (it often carries tokens).

use std::net::{IpAddr, SocketAddr};

use http::{Method, Request, StatusCode, Version};

/// The tracing target of access-log lines.
pub const TARGET: &str = "portcullis::access";

/// What is known about a request when it arrives; collected only when the access log is on.
#[derive(Debug)]
pub struct RequestFacts {
    /// The TCP peer, or the client a trusted PROXY protocol header names.
    pub peer: SocketAddr,
    /// The TCP peer (the load balancer) when a trusted PROXY protocol header named the client.
    pub proxied_by: Option<SocketAddr>,
    /// The client: the peer, or the address a trusted proxy reports.
    pub client: IpAddr,
    pub method: Method,
    pub host: String,
    pub path: String,
    pub version: Version,
}

impl RequestFacts {
    pub fn new<B>(
        req: &Request<B>,
        peer: SocketAddr,
        proxied_by: Option<SocketAddr>,
    ) -> RequestFacts {
        RequestFacts {
            peer,
            proxied_by,
            client: peer.ip().to_canonical(),
            method: req.method().clone(),
            host: crate::vocab::request::request_host(req).to_string(),
            path: req.uri().path().to_string(),
            version: req.version(),
        }
    }
}

/// How a request ended.
pub struct Outcome<'a> {
    /// The metrics labels: namespace, ingress, service, host (`*`, `_other`, or empty as there).
    pub route: [&'a str; 4],
    pub status: StatusCode,
    pub upstream: Option<SocketAddr>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub seconds: f64,
    pub upstream_seconds: Option<f64>,
}

/// Writes one access-log line at INFO on [`TARGET`].
pub fn write(request: &RequestFacts, outcome: &Outcome<'_>) {
    let [namespace, ingress, service, route_host] = outcome.route;
    tracing::info!(
        target: TARGET,
        namespace,
        ingress,
        service,
        route_host,
        host = request.host.as_str(),
        method = request.method.as_str(),
        path = request.path.as_str(),
        protocol = ?request.version,
        status = outcome.status.as_u16(),
        client = %request.client,
        peer = %request.peer,
        proxied_by = request.proxied_by.map(tracing::field::display),
        upstream = outcome.upstream.map(tracing::field::display),
        request_bytes = outcome.request_bytes,
        response_bytes = outcome.response_bytes,
        duration_ms = outcome.seconds * 1000.0,
        upstream_ms = outcome.upstream_seconds.map(|s| s * 1000.0),
        "request"
    );
}
