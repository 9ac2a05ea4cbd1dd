//! Forwarding one request to one endpoint over pooled keep-alive connections (HTTP/1.1, HTTP/1.1 over
//! TLS, HTTP/2 over TLS or cleartext), streaming bodies both ways, passing upgrades through.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme as UriScheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{Guarded, RequestBody};
use super::client::{
    ClientView, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PORT, X_FORWARDED_PROTO, first_value,
};
use super::connection::Connection;
use super::limit_rate::Paced;
use super::pool::{Http1Pool, POOL_IDLE_TIMEOUT};
use super::response::{Body, SERVER};
use super::tunnels::Tunnels;
use super::upstream_error::{UpstreamError, classify};
use crate::model::UpstreamPolicy;
use crate::model::annotations::BackendProtocol;
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
    fn new(
        protocol: BackendProtocol,
        connect_timeout: Duration,
        tls: &rustls::ClientConfig,
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
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_only();
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

/// The client side of the proxy.
pub struct Upstream {
    /// Plain HTTP/1.1 backends, the common case.
    http1: Arc<Http1Pool>,
    /// Everything else.
    pools: ArcSwap<HashMap<(BackendProtocol, Duration), Arc<Pool>>>,
    tls: rustls::ClientConfig,
    tunnels: Tunnels,
}

/// Everything about one forwarded request besides the request itself.
pub struct Forward<'a> {
    pub conn: &'a Connection,
    pub client: ClientView,
    pub endpoint: SocketAddr,
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
        })
    }

    /// The long-lived connections shutdown waits for.
    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    fn pool(&self, protocol: BackendProtocol, connect_timeout: Duration) -> Arc<Pool> {
        let key = (protocol, connect_timeout);
        if let Some(pool) = self.pools.load().get(&key) {
            return pool.clone();
        }
        let created = Arc::new(Pool::new(protocol, connect_timeout, &self.tls));
        self.pools.rcu(|pools| {
            let mut pools = HashMap::clone(pools);
            pools.entry(key).or_insert_with(|| created.clone());
            pools
        });
        self.pools.load().get(&key).cloned().unwrap_or(created)
    }

    pub async fn send(
        &self,
        f: Forward<'_>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, UpstreamError> {
        let mut req = req;
        let h1 = matches!(
            f.policy.protocol,
            BackendProtocol::Http | BackendProtocol::Https
        );
        let upgrade = (h1 && wants_upgrade(&req)).then(|| hyper::upgrade::on(&mut req));
        let read_timeout = f.policy.read_timeout;
        let upstream_req = upstream_request(&f, req, upgrade.is_some())?;

        // The read timeout covers connecting too, as it did with hyper-util's client.
        let exchange = async {
            if f.policy.protocol == BackendProtocol::Http {
                self.http1
                    .send(f.endpoint, f.policy.connect_timeout, upstream_req)
                    .await
            } else {
                let pool = self.pool(f.policy.protocol, f.policy.connect_timeout);
                pool.request(upstream_req)
                    .await
                    .map_err(|e| classify(&e, e.is_connect()))
            }
        };
        let mut resp = match tokio::time::timeout(read_timeout, exchange).await {
            Err(_) => return Err(UpstreamError::ResponseTimeout(read_timeout)),
            Ok(result) => result?,
        };

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
            return Ok(Response::from_parts(parts, Either::Right(Full::default())));
        }

        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.entry(header::SERVER).or_insert(SERVER);
        parts.version = Version::HTTP_11;
        Ok(Response::from_parts(
            parts,
            Either::Left(Paced::new(Guarded::new(body, read_timeout, None))),
        ))
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
        let body = Guarded::new(Either::Right(Empty::new()), policy.send_timeout, None);
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
                        .send(SocketAddr::new(ip, port), policy.connect_timeout, req)
                        .await
                }
                _ => {
                    let protocol = match https {
                        true => BackendProtocol::Https,
                        false => BackendProtocol::Http,
                    };
                    let pool = self.pool(protocol, policy.connect_timeout);
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

/// The request as the backend receives it: origin-form URI on the chosen endpoint, the client's `Host`
/// kept (unless `upstream-vhost`), hop-by-hop headers removed (unless upgrading), forwarding headers set.
fn upstream_request(
    f: &Forward<'_>,
    req: Request<Incoming>,
    upgrading: bool,
) -> Result<Request<RequestBody>, UpstreamError> {
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
    let (scheme, version) = match f.policy.protocol {
        BackendProtocol::Http => (UriScheme::HTTP, Version::HTTP_11),
        BackendProtocol::Https => (UriScheme::HTTPS, Version::HTTP_11),
        BackendProtocol::H2c => (UriScheme::HTTP, Version::HTTP_2),
        BackendProtocol::Grpcs => (UriScheme::HTTPS, Version::HTTP_2),
    };
    parts.uri = if f.policy.protocol == BackendProtocol::Http {
        // `http1::SendRequest` writes the URI as it is: the forms hyper-util's client would write.
        if parts.method == http::Method::CONNECT {
            Uri::from(endpoint_authority(f.endpoint)?)
        } else {
            Uri::from(path)
        }
    } else {
        Uri::builder()
            .scheme(scheme)
            .authority(endpoint_authority(f.endpoint)?)
            .path_and_query(path)
            .build()
            .map_err(|e| UpstreamError::BadRequest(e.to_string()))?
    };
    parts.version = version;

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
    if version == Version::HTTP_2 {
        // gRPC needs trailers; `te: trailers` is the one TE value HTTP/2 allows.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let host_value = HeaderValue::from_str(&host)
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
    let body = Guarded::new(
        Either::Left(body),
        f.body_idle_timeout.min(f.policy.send_timeout),
        f.policy.max_body_size,
    )
    .counting(f.request_tally.clone());
    Ok(Request::from_parts(parts, body))
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
