//! Forwarding one request to one endpoint over pooled keep-alive connections (HTTP/1.1, HTTP/1.1 over
//! TLS, HTTP/2 over TLS or cleartext), streaming bodies both ways, passing upgrades through.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme as UriScheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;

use super::body::{BodyError, Guarded, RequestBody, body_error};
use super::client::{
    ClientView, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PORT, X_FORWARDED_PROTO, first_value,
};
use super::connection::Connection;
use super::limit_rate::Paced;
use super::pool::{Http1Pool, POOL_IDLE_TIMEOUT};
use super::response::{Body, SERVER};
use super::retry::{self, Failure, Health};
use super::tunnels::Tunnels;
use super::upstream_error::{UpstreamError, classify};
use crate::metrics::UpstreamMetrics;
use crate::model::annotations::BackendProtocol;
use crate::model::annotations::proxy_ssl::{BackendTls, BackendTlsPolicy};
use crate::model::{NamespacedName, UpstreamPolicy};
use crate::vocab::request::{connection_tokens, request_host};

const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// One hyper-util client per protocol and connect timeout, for the backends [`Http1Pool`] does not
/// serve (TLS, HTTP/2).
enum Pool {
    Plain(Client<HttpConnector, RequestBody>),
    Tls(Client<HttpsConnector<HttpConnector>, RequestBody>),
}

impl Pool {
    /// `name`: verified (and sent as SNI if the configuration says so) instead of the endpoint's
    /// address.
    fn new(
        protocol: BackendProtocol,
        connect_timeout: Duration,
        tls: &rustls::ClientConfig,
        name: Option<ServerName<'static>>,
    ) -> Pool {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.enforce_http(false);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .set_host(false)
            .http2_only(matches!(
                protocol,
                BackendProtocol::H2c | BackendProtocol::Grpcs
            ));
        let mut https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_only();
        if let Some(name) = name {
            https = https.with_server_name_resolver(FixedServerNameResolver::new(name));
        }
        match protocol {
            BackendProtocol::Http | BackendProtocol::H2c => Pool::Plain(builder.build(tcp)),
            BackendProtocol::Https => {
                Pool::Tls(builder.build(https.enable_http1().wrap_connector(tcp)))
            }
            BackendProtocol::Grpcs => {
                Pool::Tls(builder.build(https.enable_http2().wrap_connector(tcp)))
            }
        }
    }

    async fn request(
        &self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        match self {
            Pool::Plain(c) => c.request(req).await,
            Pool::Tls(c) => c.request(req).await,
        }
    }
}

/// Protocol, connect timeout and the id of the `proxy-ssl-*` configuration, if any.
type PoolKey = (BackendProtocol, Duration, Option<u64>);

/// The client side of the proxy.
pub struct Upstream {
    /// Plain HTTP/1.1 backends, the common case.
    http1: Arc<Http1Pool>,
    /// Everything else.
    pools: ArcSwap<HashMap<PoolKey, Arc<Pool>>>,
    tls: rustls::ClientConfig,
    tunnels: Tunnels,
    /// Endpoints skipped for a while because their connections keep failing.
    health: Health,
}

/// Everything about one forwarded request besides the request itself.
pub struct Forward<'a> {
    pub conn: &'a Connection,
    pub client: ClientView,
    /// The endpoint chosen first.
    pub endpoint: SocketAddr,
    /// All endpoints of the backend, for retries.
    pub endpoints: &'a [SocketAddr],
    pub ingress: &'a NamespacedName,
    pub service: &'a NamespacedName,
    pub metrics: &'a UpstreamMetrics,
    pub policy: &'a UpstreamPolicy,
    /// Replaces the request's path (query kept) when `rewrite-target` applies.
    pub path: Option<String>,
    /// The longest a client may pause while sending the request body.
    pub body_idle_timeout: Duration,
    /// Counts the request body's bytes for metrics, when it has no `Content-Length`.
    pub request_tally: Option<Arc<AtomicU64>>,
}

impl Upstream {
    pub fn new(
        provider: Arc<rustls::crypto::CryptoProvider>,
        tunnels: Tunnels,
    ) -> anyhow::Result<Self> {
        // Like ingress-nginx (proxy_ssl_verify off), backends' certificates are not verified: they are
        // reached by IP inside the cluster and are usually self-signed.
        let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AcceptAnyCertificate(provider)))
            .with_no_client_auth();
        Ok(Upstream {
            http1: Http1Pool::new(),
            pools: ArcSwap::from_pointee(HashMap::new()),
            tls,
            tunnels,
            health: Health::default(),
        })
    }

    /// The long-lived connections shutdown waits for.
    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    fn pool(
        &self,
        protocol: BackendProtocol,
        connect_timeout: Duration,
        backend_tls: Option<&BackendTls>,
    ) -> Arc<Pool> {
        let key = (protocol, connect_timeout, backend_tls.map(|t| t.id));
        if let Some(pool) = self.pools.load().get(&key) {
            return pool.clone();
        }
        let created = Arc::new(match backend_tls {
            Some(t) => Pool::new(protocol, connect_timeout, &t.config, t.name.clone()),
            None => Pool::new(protocol, connect_timeout, &self.tls, None),
        });
        self.pools.rcu(|pools| {
            let mut pools = HashMap::clone(pools);
            pools.entry(key).or_insert_with(|| created.clone());
            pools
        });
        self.pools.load().get(&key).cloned().unwrap_or(created)
    }

    /// Sends the request to the chosen endpoint, or to the next one an endpoint being skipped
    /// (`retry::Health`), and on to others as `proxy-next-upstream` allows; returns the outcome and
    /// the endpoint that gave it.
    pub async fn send(
        &self,
        f: Forward<'_>,
        req: Request<Incoming>,
    ) -> (Result<Response<Body>, UpstreamError>, SocketAddr) {
        let mut req = req;
        if f.policy.backend_tls == Some(BackendTlsPolicy::Unavailable) {
            return (Err(UpstreamError::BackendTlsUnavailable), f.endpoint);
        }
        let h1 = matches!(
            f.policy.protocol,
            BackendProtocol::Http | BackendProtocol::Https
        );
        let upgrade = (h1 && wants_upgrade(&req)).then(|| hyper::upgrade::on(&mut req));
        let endpoint = self.health.avoid_failing(f.endpoint, f.endpoints);
        // Kept only when there could be a second attempt: another endpoint, or a new connection
        // after a reused one broke.
        let may_replay = !f.policy.next_upstream.is_off()
            && (f.endpoints.len() > 1 || f.policy.protocol == BackendProtocol::Http);
        let mut out = match Outgoing::new(&f, req, upgrade.is_some(), may_replay).await {
            Ok(out) => out,
            Err(e) => return (Err(e), endpoint),
        };
        let (result, endpoint) = self.attempts(&f, &mut out, endpoint).await;
        let read_timeout = f.policy.read_timeout;
        (
            result.map(|resp| self.respond(resp, upgrade, read_timeout)),
            endpoint,
        )
    }

    /// Attempts until one succeeds or `proxy-next-upstream` allows no more.
    async fn attempts(
        &self,
        f: &Forward<'_>,
        out: &mut Outgoing,
        mut endpoint: SocketAddr,
    ) -> (Result<Response<Incoming>, UpstreamError>, SocketAddr) {
        let policy = &f.policy.next_upstream;
        let started = tokio::time::Instant::now();
        let mut tried: Vec<SocketAddr> = Vec::new();
        let (mut attempts, mut fresh, mut stale_retried) = (0u32, false, false);
        loop {
            let req = match out.to(f.policy.protocol, endpoint) {
                Ok(Some(req)) => req,
                // Not reached: a failure is retried only when the body was kept.
                Ok(None) => {
                    let e = UpstreamError::Exchange("the request body was sent already".into());
                    return (Err(e), endpoint);
                }
                Err(e) => return (Err(e), endpoint),
            };
            attempts += 1;
            let result = self.attempt(f.policy, endpoint, req, fresh).await;
            let failure = match &result {
                Ok(resp) => {
                    self.health.answered(endpoint);
                    Failure::of_status(policy, resp.status())
                }
                Err(e) => {
                    if matches!(e, UpstreamError::Connect(_) | UpstreamError::ConnectTimeout)
                        && self.health.connection_failed(endpoint)
                    {
                        f.metrics.endpoint_skipped(f.service);
                    }
                    Failure::of_error(e)
                }
            };
            let Some(failure) = failure.filter(|_| out.replayable()) else {
                return (result, endpoint);
            };
            let elapsed = started.elapsed();
            if matches!(result, Err(UpstreamError::StaleConnection(_)))
                && !stale_retried
                && retry::may_retry(policy, &out.method, failure, 0, elapsed)
            {
                // The endpoint closed an idle connection as the request was written: once more on
                // a new connection, not counted as a try (as nginx does with cached connections).
                (stale_retried, fresh, attempts) = (true, true, attempts - 1);
                f.metrics.retry(f.ingress, "stale_connection");
                continue;
            }
            if !retry::may_retry(policy, &out.method, failure, attempts, elapsed) {
                return (result, endpoint);
            }
            tried.push(endpoint);
            let Some(next) =
                retry::next_endpoint(f.endpoints, &tried, |e| self.health.is_skipped(e))
            else {
                return (result, endpoint);
            };
            tracing::debug!(
                ingress = %f.ingress,
                %endpoint,
                next = %next,
                reason = failure.condition.name(),
                "retrying on another endpoint"
            );
            f.metrics.retry(f.ingress, failure.condition.name());
            (endpoint, fresh) = (next, false);
        }
    }

    /// One attempt on one endpoint, within the read timeout (which covers connecting too, as it did
    /// with hyper-util's client).
    async fn attempt(
        &self,
        policy: &UpstreamPolicy,
        endpoint: SocketAddr,
        req: Request<RequestBody>,
        fresh: bool,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let exchange = async {
            if policy.protocol == BackendProtocol::Http {
                self.http1
                    .send(endpoint, policy.connect_timeout, req, fresh)
                    .await
            } else {
                let backend_tls = match &policy.backend_tls {
                    Some(BackendTlsPolicy::Use(tls)) => Some(tls),
                    _ => None,
                };
                let pool = self.pool(policy.protocol, policy.connect_timeout, backend_tls);
                pool.request(req)
                    .await
                    .map_err(|e| classify(&e, e.is_connect()))
            }
        };
        match tokio::time::timeout(policy.read_timeout, exchange).await {
            Err(_) => Err(UpstreamError::ResponseTimeout(policy.read_timeout)),
            Ok(result) => result,
        }
    }

    /// The backend's response as the client gets it; a `101` hands both connections to a tunnel.
    fn respond(
        &self,
        mut resp: Response<Incoming>,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        read_timeout: Duration,
    ) -> Response<Body> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_side) = upgrade
        {
            let backend_side = hyper::upgrade::on(&mut resp);
            let tunnels = self.tunnels.clone();
            tokio::spawn(async move {
                match tokio::try_join!(client_side, backend_side) {
                    Ok((client, backend)) => tunnels.spawn(client, backend),
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, Either::Right(Full::default()));
        }

        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.entry(header::SERVER).or_insert(SERVER);
        parts.version = Version::HTTP_11;
        Response::from_parts(
            parts,
            Either::Left(Paced::new(Guarded::new(body, read_timeout, None))),
        )
    }
}

impl Upstream {
    /// Sends a request without a body to `req`'s absolute `http://` or `https://` URI (the external-auth
    /// subrequest) through the same pools and under the same timeouts as a backend request. A plain
    /// HTTP address goes through [`Http1Pool`]; a host name (resolved by the system resolver) or
    /// HTTPS through hyper-util's client. The caller sets `Host`.
    pub async fn send_bodyless(
        &self,
        req: Request<()>,
        policy: &UpstreamPolicy,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let (mut parts, ()) = req.into_parts();
        let body = Guarded::new(Either::Right(Full::default()), policy.send_timeout, None);
        let https = parts.uri.scheme() == Some(&UriScheme::HTTPS);
        let literal = parts
            .uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        let exchange = async {
            match literal {
                Some(ip) if !https => {
                    let port = parts.uri.port_u16().unwrap_or(80);
                    parts.uri = Uri::from(
                        parts
                            .uri
                            .path_and_query()
                            .cloned()
                            .unwrap_or_else(|| PathAndQuery::from_static("/")),
                    );
                    let req = Request::from_parts(parts, body);
                    self.http1
                        .send(
                            SocketAddr::new(ip, port),
                            policy.connect_timeout,
                            req,
                            false,
                        )
                        .await
                }
                _ => {
                    let protocol = match https {
                        true => BackendProtocol::Https,
                        false => BackendProtocol::Http,
                    };
                    let pool = self.pool(protocol, policy.connect_timeout, None);
                    pool.request(Request::from_parts(parts, body))
                        .await
                        .map_err(|e| classify(&e, e.is_connect()))
                }
            }
        };
        match tokio::time::timeout(policy.read_timeout, exchange).await {
            Err(_) => Err(UpstreamError::ResponseTimeout(policy.read_timeout)),
            Ok(result) => result,
        }
    }
}

/// HTTP/1.1 `Connection: upgrade` plus an `Upgrade` header.
fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), plus any the
/// `Connection` header lists.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names costs less than a lookup for each.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
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

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// An address as a header value. IPv4 is written by hand: this runs for every request, and
/// `to_string` through `fmt` costs several times more.
fn ip_header(ip: IpAddr) -> Result<HeaderValue, UpstreamError> {
    let value = match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let len = write_ipv4(&mut buf, v4);
            HeaderValue::from_bytes(&buf[..len])
        }
        IpAddr::V6(_) => HeaderValue::from_str(&ip.to_string()),
    };
    value.map_err(|e| UpstreamError::BadRequest(e.to_string()))
}

/// `ip:port` of an endpoint, the authority of the upstream request (written by hand, see
/// [`ip_header`]).
fn endpoint_authority(endpoint: SocketAddr) -> Result<Authority, UpstreamError> {
    let authority = match endpoint {
        SocketAddr::V4(v4) => {
            let mut buf = [0u8; 21];
            let mut len = write_ipv4(&mut buf, *v4.ip());
            buf[len] = b':';
            len += 1;
            len += write_decimal(&mut buf[len..], v4.port());
            Authority::try_from(&buf[..len])
        }
        SocketAddr::V6(_) => Authority::try_from(endpoint.to_string()),
    };
    authority.map_err(|e| UpstreamError::BadRequest(e.to_string()))
}

/// Writes `ip` in dotted-decimal form at the start of `out` (15 bytes at most); returns the length.
fn write_ipv4(out: &mut [u8], ip: Ipv4Addr) -> usize {
    let mut len = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        len += write_decimal(&mut out[len..], u16::from(octet));
    }
    len
}

/// Writes `n` in decimal at the start of `out` (5 bytes at most); returns the length.
fn write_decimal(out: &mut [u8], mut n: u16) -> usize {
    let mut digits = [0u8; 5];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - start;
    out[..len].copy_from_slice(&digits[start..]);
    len
}

/// The request as every endpoint receives it: the client's `Host` kept (unless `upstream-vhost`),
/// hop-by-hop headers removed (unless upgrading), forwarding headers set; and its body, streamed to
/// one attempt or kept for several.
struct Outgoing {
    method: Method,
    version: Version,
    headers: HeaderMap,
    path: PathAndQuery,
    body: Payload,
}

enum Payload {
    /// Sent once: taken by the first attempt.
    Streamed(Option<RequestBody>),
    /// Read before the first attempt, sent with each.
    Kept {
        bytes: Bytes,
        send_timeout: Duration,
    },
}

impl Outgoing {
    /// Rewrites the request's head once for all attempts; with `may_replay`, reads a body of at most
    /// [`retry::REPLAY_LIMIT`] bytes (and of a known length) so that it can be sent again.
    async fn new(
        f: &Forward<'_>,
        req: Request<Incoming>,
        upgrading: bool,
        may_replay: bool,
    ) -> Result<Outgoing, UpstreamError> {
        let host = request_host(&req).to_string();
        let (mut parts, body) = req.into_parts();
        let path = match (&f.path, parts.uri.query()) {
            (Some(p), Some(q)) if !p.contains('?') => PathAndQuery::try_from(format!("{p}?{q}")),
            (Some(p), _) => PathAndQuery::try_from(p.as_str()),
            (None, _) => Ok(parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))),
        }
        .map_err(|e| UpstreamError::BadRequest(format!("rewritten path: {e}")))?;
        let version = match f.policy.protocol {
            BackendProtocol::Http | BackendProtocol::Https => Version::HTTP_11,
            BackendProtocol::H2c | BackendProtocol::Grpcs => Version::HTTP_2,
        };
        forwarding_headers(f, &mut parts.headers, &host, upgrading, version)?;
        let guarded = Guarded::new(
            Either::Left(body),
            f.body_idle_timeout.min(f.policy.send_timeout),
            f.policy.max_body_size,
        )
        .counting(f.request_tally.clone());
        let hint = hyper::body::Body::size_hint(&guarded);
        let small = hint.exact().is_some_and(|len| len <= retry::REPLAY_LIMIT);
        let body = if may_replay && small {
            let bytes = guarded
                .collect()
                .await
                .map_err(|e| match body_error(&*e) {
                    Some(BodyError::TooLarge(limit)) => UpstreamError::BodyTooLarge(limit),
                    Some(BodyError::Idle(d)) => UpstreamError::ClientIdle(d),
                    None => UpstreamError::BadRequest(format!("reading the request body: {e}")),
                })?
                .to_bytes();
            Payload::Kept {
                bytes,
                send_timeout: f.policy.send_timeout,
            }
        } else {
            Payload::Streamed(Some(guarded))
        };
        Ok(Outgoing {
            method: parts.method,
            version,
            headers: parts.headers,
            path,
            body,
        })
    }

    /// Whether another attempt can send the request again.
    fn replayable(&self) -> bool {
        matches!(self.body, Payload::Kept { .. })
    }

    /// The request for an attempt on `endpoint`; `None` once a streamed body has been sent.
    fn to(
        &mut self,
        protocol: BackendProtocol,
        endpoint: SocketAddr,
    ) -> Result<Option<Request<RequestBody>>, UpstreamError> {
        let (body, streamed) = match &mut self.body {
            Payload::Streamed(body) => match body.take() {
                Some(body) => (body, true),
                None => return Ok(None),
            },
            Payload::Kept {
                bytes,
                send_timeout,
            } => (
                Guarded::new(Either::Right(Full::new(bytes.clone())), *send_timeout, None),
                false,
            ),
        };
        let uri = match protocol {
            // `http1::SendRequest` writes the URI as it is: the forms hyper-util's client would write.
            BackendProtocol::Http if self.method == Method::CONNECT => {
                Uri::from(endpoint_authority(endpoint)?)
            }
            BackendProtocol::Http => Uri::from(self.path.clone()),
            BackendProtocol::Https | BackendProtocol::H2c | BackendProtocol::Grpcs => {
                let scheme = match protocol {
                    BackendProtocol::H2c => UriScheme::HTTP,
                    _ => UriScheme::HTTPS,
                };
                Uri::builder()
                    .scheme(scheme)
                    .authority(endpoint_authority(endpoint)?)
                    .path_and_query(self.path.clone())
                    .build()
                    .map_err(|e| UpstreamError::BadRequest(e.to_string()))?
            }
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = self.version;
        // A streamed request has one attempt: its headers need no copy.
        *req.headers_mut() = match streamed {
            true => std::mem::take(&mut self.headers),
            false => self.headers.clone(),
        };
        Ok(Some(req))
    }
}

/// The headers of the request as the backend receives it.
fn forwarding_headers(
    f: &Forward<'_>,
    headers: &mut HeaderMap,
    host: &str,
    upgrading: bool,
    version: Version,
) -> Result<(), UpstreamError> {
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
    if version == Version::HTTP_2 {
        // gRPC needs trailers; `te: trailers` is the one TE value HTTP/2 allows.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let host_value = HeaderValue::from_str(host)
        .map_err(|_| UpstreamError::BadRequest("invalid host".into()))?;
    match &f.policy.host {
        Some(vhost) => {
            headers.insert(header::HOST, vhost.clone());
        }
        None if !host.is_empty() => {
            headers.entry(header::HOST).or_insert(host_value.clone());
        }
        None => {}
    }
    let client = f.client;
    let xff = match (
        client.trusted_peer,
        headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()),
    ) {
        (true, Some(chain)) => {
            HeaderValue::from_str(&format!("{chain}, {}", f.conn.peer.ip().to_canonical()))
                .map_err(|e| UpstreamError::BadRequest(e.to_string()))?
        }
        _ => ip_header(f.conn.peer.ip().to_canonical())?,
    };
    headers.insert(X_FORWARDED_FOR, xff);
    headers.insert(X_REAL_IP, ip_header(client.ip)?);
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(client.scheme.as_str()),
    );
    let trusted_port = client
        .trusted_peer
        .then(|| first_value(headers, &X_FORWARDED_PORT))
        .flatten();
    let port = match trusted_port.and_then(|p| HeaderValue::from_str(&p).ok()) {
        Some(p) => p,
        None => HeaderValue::from(f.conn.local.port()),
    };
    headers.insert(X_FORWARDED_PORT, port);
    let keep_forwarded_host = client.trusted_peer && headers.contains_key(&X_FORWARDED_HOST);
    if !keep_forwarded_host && !host.is_empty() {
        headers.insert(X_FORWARDED_HOST, host_value);
    }
    if let Some(prefix) = &f.policy.forwarded_prefix {
        headers.insert(X_FORWARDED_PREFIX, prefix.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.0.42.7",
            "255.255.255.255",
            "::1",
            "2001:db8::5",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_header(ip).unwrap(), ip.to_string().as_str());
        }
        for addr in [
            "127.0.0.1:9000",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:8080",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(endpoint_authority(addr).unwrap().as_str(), addr.to_string());
        }
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_others_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let untouched = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, untouched);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h, untouched);
    }
}
