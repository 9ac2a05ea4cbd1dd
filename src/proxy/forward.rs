//! Forwarding one request to one endpoint over pooled keep-alive HTTP/1.1 connections, streaming
//! bodies both ways, and passing WebSocket (and other) upgrades through.

use std::error::Error as _;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme as UriScheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::response::{Body, SERVER};
use super::{Connection, UpstreamTimeouts, request_host};

/// Why a request could not be forwarded, and so which status the client gets.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to the endpoint: {0}")]
    Connect(String),
    #[error("connecting to the endpoint timed out")]
    ConnectTimeout,
    #[error("the endpoint did not answer within {0:?}")]
    ResponseTimeout(std::time::Duration),
    #[error("the endpoint broke the exchange: {0}")]
    Exchange(String),
    #[error("the request cannot be forwarded: {0}")]
    BadRequest(String),
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Connect(_) | UpstreamError::Exchange(_) => StatusCode::BAD_GATEWAY,
            UpstreamError::ConnectTimeout | UpstreamError::ResponseTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            UpstreamError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// What the client is told: the kind of failure, never internal addresses.
    pub fn public_message(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "cannot connect to the backend",
            UpstreamError::ConnectTimeout => "timed out connecting to the backend",
            UpstreamError::ResponseTimeout(_) => "the backend did not answer in time",
            UpstreamError::Exchange(_) => "the backend closed the connection unexpectedly",
            UpstreamError::BadRequest(_) => "the request cannot be forwarded",
        }
    }
}

/// The client side: one pool of keep-alive connections per endpoint.
pub struct Upstream {
    client: Client<HttpConnector, Incoming>,
    timeouts: UpstreamTimeouts,
}

impl Upstream {
    pub fn new(timeouts: UpstreamTimeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeouts.connect));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .set_host(false)
            .build(connector);
        Upstream { client, timeouts }
    }

    pub async fn send(
        &self,
        conn: &Connection,
        endpoint: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, UpstreamError> {
        let mut req = req;
        let upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        let upstream_req = upstream_request(conn, endpoint, req, upgrade.is_some())?;

        let mut resp =
            match tokio::time::timeout(self.timeouts.response, self.client.request(upstream_req))
                .await
            {
                Err(_) => return Err(UpstreamError::ResponseTimeout(self.timeouts.response)),
                Ok(Err(e)) => return Err(classify(&e)),
                Ok(Ok(resp)) => resp,
            };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_side) = upgrade
        {
            let backend_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_side, backend_side) {
                    Ok((client, backend)) => {
                        let _ = tokio::io::copy_bidirectional(
                            &mut TokioIo::new(client),
                            &mut TokioIo::new(backend),
                        )
                        .await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, Either::Right(Full::default())));
        }

        let (mut parts, body) = resp.into_parts();
        if parts.status != StatusCode::SWITCHING_PROTOCOLS {
            strip_hop_by_hop(&mut parts.headers);
        }
        parts.headers.entry(header::SERVER).or_insert(SERVER);
        Ok(Response::from_parts(parts, Either::Left(body)))
    }
}

fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return UpstreamError::ConnectTimeout;
        }
        source = s.source();
    }
    let detail = match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    };
    if e.is_connect() {
        UpstreamError::Connect(detail)
    } else {
        UpstreamError::Exchange(detail)
    }
}

/// HTTP/1.1 `Connection: upgrade` plus an `Upgrade` header.
fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), plus any the
/// `Connection` header lists.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The request as the backend receives it: origin-form URI on the chosen endpoint, HTTP/1.1, the
/// client's `Host` kept, hop-by-hop headers removed (unless upgrading), forwarding headers set.
fn upstream_request(
    conn: &Connection,
    endpoint: SocketAddr,
    req: Request<Incoming>,
    upgrading: bool,
) -> Result<Request<Incoming>, UpstreamError> {
    let host = request_host(&req).to_string();
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let authority = Authority::try_from(endpoint.to_string())
        .map_err(|e| UpstreamError::BadRequest(e.to_string()))?;
    parts.uri = Uri::builder()
        .scheme(UriScheme::HTTP)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| UpstreamError::BadRequest(e.to_string()))?;
    parts.version = Version::HTTP_11;

    let headers = &mut parts.headers;
    let upgrade = if upgrading {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    let host_value = HeaderValue::from_str(&host)
        .map_err(|_| UpstreamError::BadRequest("invalid host".into()))?;
    if !headers.contains_key(header::HOST) && !host.is_empty() {
        headers.insert(header::HOST, host_value.clone());
    }
    let client_ip = HeaderValue::from_str(&conn.peer.ip().to_string())
        .map_err(|e| UpstreamError::BadRequest(e.to_string()))?;
    headers.insert(X_FORWARDED_FOR, client_ip.clone());
    headers.insert(X_REAL_IP, client_ip);
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(conn.scheme.as_str()),
    );
    if !host.is_empty() {
        headers.insert(X_FORWARDED_HOST, host_value);
    }
    headers.insert(X_FORWARDED_PORT, HeaderValue::from(conn.local.port()));
    Ok(Request::from_parts(parts, body))
}
