//! Accept loops for the plain-HTTP and TLS listeners. Each connection is served by hyper with the limits
//! of the live settings, and tracked so shutdown can drain it. With `proxy-protocol` on, a connection's
//! PROXY header is read first, before TLS or HTTP. Settings and certificates change under a running
//! listener; the socket never closes. With SSL passthrough hosts live, the HTTPS listener keeps the
//! bytes of each ClientHello, so a passthrough host's connection can be spliced to its backend
//! (`passthrough`) while other hosts' handshakes go on.
//!
//! The HTTP version of a TLS connection is the one ALPN negotiated: `h2` is served as HTTP/2 only (an
//! invalid connection preface ends the connection, RFC 9113 §3.4), `http/1.1` or no ALPN as HTTP/1.1
//! only (with upgrades). Plain HTTP has no negotiation: the first bytes tell HTTP/1.1 from HTTP/2 with
//! prior knowledge (h2c), and both are served.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::connection::ClientCertificate;
use super::framing::{AmbiguousFraming, Framing, Heads};
use super::passthrough;
use super::proxy_protocol::{self, Prefixed, Reading};
use super::termination::ServerConfigs;
use super::timeouts::{Protocol, TimedIo, Timeouts, Tracker};
use super::{Connection, Proxy, Scheme};
use crate::metrics::OpenConnection;
use crate::model::ConfigHandle;
use crate::model::passthrough::{Passthrough, PassthroughTable};
use crate::settings::{Limits, ProxyProtocol, Settings};

/// hyper refuses read buffers smaller than this.
const MIN_BUF_SIZE: usize = 8192;

/// Binds a listening socket with `SO_REUSEADDR`, so a restarted controller can bind at once.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// One listener: where it is, whether it terminates TLS, and the proxy behind it.
pub struct Listener {
    pub listener: TcpListener,
    /// The TLS configurations, replaced when TLS settings change; `None` for plain HTTP.
    pub tls: Option<Arc<ArcSwap<ServerConfigs>>>,
    pub proxy: Arc<Proxy>,
    pub config: ConfigHandle,
}

impl Listener {
    /// Accepts until `stop` turns true, then returns; connections already accepted are tracked by
    /// `graceful` and keep running.
    pub async fn run(self, graceful: Arc<GracefulShutdown>, mut stop: watch::Receiver<bool>) {
        let local = match self.listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "listener has no local address");
                return;
            }
        };
        let scheme = if self.tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let connections = self.proxy.metrics().listener(scheme.as_str());
        let proxy_headers = Arc::new(proxy_protocol::Counters::new(
            self.proxy.metrics(),
            scheme.as_str(),
        ));
        let mut limits = self.config.load().settings.limits.clone();
        // When this many connections are open, stop accepting: new clients wait in the kernel's
        // backlog instead of costing memory here.
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let mut builder = Arc::new(Builders::new(&limits));
        loop {
            let permit = tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = async { let _ = stop.wait_for(|stopped| *stopped).await; } => return,
            };
            let (tcp, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, %local, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = async { let _ = stop.wait_for(|stopped| *stopped).await; } => return,
            };
            let _ = tcp.set_nodelay(true);
            let config = self.config.load();
            let settings = config.settings.clone();
            let passthrough = Some(&config.passthrough)
                .filter(|t| self.tls.is_some() && !t.is_empty())
                .cloned();
            drop(config);
            if settings.limits != limits {
                limits = settings.limits.clone();
                builder = Arc::new(Builders::new(&limits));
            }
            let accepted = Accepted {
                peer,
                local,
                scheme,
                reading: reading(&settings, peer, proxy_headers.clone()),
                tls: self.tls.as_ref().map(|t| t.load_full()),
                passthrough,
                connect_timeout: settings.upstream.connect_timeout.0,
                handshake_timeout: limits.handshake_timeout.0,
                timeouts: Timeouts {
                    header_read: limits.header_read_timeout.0,
                    idle: limits.idle_timeout.0,
                },
                max_head: builder.max_http1_head,
                max_headers: limits.max_headers,
                proxy: self.proxy.clone(),
                builder: builder.clone(),
                stop: stop.clone(),
                _watcher: graceful.watcher(),
                _permit: permit,
                _open: connections.accepted(),
            };
            tokio::spawn(accepted.serve(tcp));
        }
    }
}

/// How the PROXY header of a connection from `peer` is read under `settings`.
fn reading(
    settings: &Settings,
    peer: SocketAddr,
    counters: Arc<proxy_protocol::Counters>,
) -> Reading {
    let ip = peer.ip().to_canonical();
    let mode = settings.proxy_protocol;
    Reading {
        mode,
        peer_trusted: mode != ProxyProtocol::Off
            && settings.trusted_proxies.iter().any(|c| c.0.contains(&ip)),
        wait: settings
            .limits
            .header_read_timeout
            .0
            .min(proxy_protocol::MAX_WAIT),
        counters,
    }
}

/// The same limits for hyper's HTTP/1.1 settings, whichever builder carries them.
macro_rules! http1_limits {
    ($builder:expr, $limits:expr, $max_head:expr) => {
        $builder
            .timer(TokioTimer::new())
            // The header-read and idle timeouts are enforced by `TimedIo`: hyper's own header timer
            // starts when a keep-alive connection goes idle, which would cap the idle timeout at it.
            .header_read_timeout(None)
            .keep_alive(true)
            .max_headers($limits.max_headers)
            .max_buf_size($max_head)
    };
}

/// The same limits for hyper's HTTP/2 settings, whichever builder carries them.
macro_rules! http2_limits {
    ($builder:expr, $limits:expr, $header_bytes:expr) => {
        $builder
            .timer(TokioTimer::new())
            .max_concurrent_streams($limits.http2_max_concurrent_streams)
            .max_pending_accept_reset_streams($limits.http2_max_pending_reset_streams)
            .max_header_list_size(u32::try_from($header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Duration::from_secs(30))
    };
}

/// hyper's connection builders for the live limits: one per HTTP version for TLS connections, whose
/// version ALPN chose, and hyper-util's sniffing one for plain HTTP.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    sniffing: auto::Builder<TokioExecutor>,
    /// The largest HTTP/1.1 request head hyper reads.
    max_http1_head: usize,
}

impl Builders {
    fn new(limits: &Limits) -> Self {
        let header_bytes = usize::try_from(limits.max_header_bytes.0).unwrap_or(usize::MAX);
        let max_http1_head = header_bytes.max(MIN_BUF_SIZE);
        let mut http1 = http1::Builder::new();
        http1_limits!(http1, limits, max_http1_head);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2_limits!(http2, limits, header_bytes);
        let mut sniffing = auto::Builder::new(TokioExecutor::new());
        http1_limits!(sniffing.http1(), limits, max_http1_head);
        http2_limits!(sniffing.http2(), limits, header_bytes);
        Builders {
            http1,
            http2,
            sniffing,
            max_http1_head,
        }
    }
}

/// Serves a connection until it ends; once `stop` turns true, asks it to finish its requests and close
/// (`begin_drain`, hyper's graceful shutdown), and serves it until it has.
async fn until_drained<C: Future>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    begin_drain: impl FnOnce(Pin<&mut C>),
) -> C::Output {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        out = conn.as_mut() => return out,
        stopped = async { stop.wait_for(|stopped| *stopped).await.is_ok() } => {
            if !stopped {
                // The sender is gone without a stop: nothing will ask for a drain.
                return conn.await;
            }
        }
    }
    begin_drain(conn.as_mut());
    conn.await
}

/// One accepted connection and what serving it needs.
struct Accepted {
    peer: SocketAddr,
    local: SocketAddr,
    scheme: Scheme,
    reading: Reading,
    tls: Option<Arc<ServerConfigs>>,
    /// The live `ssl-passthrough` hosts, on the HTTPS listener when there are any.
    passthrough: Option<Arc<PassthroughTable>>,
    /// For passthrough connections to their backend.
    connect_timeout: Duration,
    handshake_timeout: Duration,
    timeouts: Timeouts,
    max_head: usize,
    max_headers: usize,
    proxy: Arc<Proxy>,
    builder: Arc<Builders>,
    /// Turns true when shutdown begins: the connection then drains.
    stop: watch::Receiver<bool>,
    /// Held for the connection's lifetime: shutdown waits until every watcher is gone.
    _watcher: Watcher,
    /// Held for the connection's lifetime: one of `max-connections`.
    _permit: OwnedSemaphorePermit,
    /// Held for the connection's lifetime: counts it in `portcullis_open_connections`.
    _open: OpenConnection,
}

impl Accepted {
    async fn serve(self, tcp: TcpStream) {
        let Accepted {
            peer,
            local,
            scheme,
            reading,
            tls,
            passthrough,
            connect_timeout,
            handshake_timeout,
            timeouts,
            max_head,
            max_headers,
            proxy,
            builder,
            stop,
            _watcher,
            _permit,
            _open,
        } = self;
        let metrics = proxy.metrics().clone();
        // Created first: the header-read clock of plain HTTP starts at accept, PROXY header included.
        let tracker = Tracker::new();
        let Some((tcp, origin)) = proxy_protocol::accept(tcp, peer, &reading).await else {
            return;
        };
        drop(reading);
        // TLS first: the connection's facts include the client certificate the handshake received.
        let (io, client_cert) = match tls {
            None => (Io::Plain(tcp), ClientCertificate::not_requested()),
            Some(configs) => {
                let started = Instant::now();
                let table = passthrough.as_deref();
                match tokio::time::timeout(handshake_timeout, handshake(&configs, table, tcp)).await
                {
                    Ok(Ok(Handshake::Terminated(stream, client_cert))) => {
                        let version = stream.get_ref().1.protocol_version();
                        metrics.tls_handshake_succeeded(version, started.elapsed());
                        if stream.get_ref().1.alpn_protocol()
                            == Some(crate::acme::challenges::ACME_TLS_ALPN)
                        {
                            // RFC 8737: a validation handshake carries no application data.
                            metrics.acme().challenge_answered("tls-alpn-01");
                            return;
                        }
                        (Io::Tls(stream), client_cert)
                    }
                    Ok(Ok(Handshake::Passthrough(to, tcp))) => {
                        let tunnels = proxy.upstream.tunnels();
                        passthrough::splice(
                            tcp,
                            origin.peer,
                            to,
                            connect_timeout,
                            tunnels,
                            &metrics,
                        )
                        .await;
                        return;
                    }
                    Ok(Err(e)) => {
                        metrics.tls_handshake_failed(started.elapsed());
                        tracing::debug!(peer = %origin.peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics.tls_handshake_failed(started.elapsed());
                        tracing::debug!(peer = %origin.peer, "TLS handshake timed out");
                        return;
                    }
                }
            }
        };
        let conn = Arc::new(Connection {
            peer: origin.peer,
            proxied_by: origin.proxied_by,
            local,
            scheme,
            client_cert,
        });
        let heads = Arc::new(Heads::default());
        let service = {
            let conn = conn.clone();
            let tracker = tracker.clone();
            let heads = heads.clone();
            service_fn(move |mut req| {
                let proxy = proxy.clone();
                let conn = conn.clone();
                let in_flight = tracker.request();
                if heads.next_is_ambiguous() {
                    req.extensions_mut().insert(AmbiguousFraming);
                }
                async move {
                    // Boxed: the request's future is several kilobytes, and hyper moves the service's
                    // future (for HTTP/2 into a task of its own); a pointer moves cheaply.
                    let resp = Box::pin(proxy.handle(&conn, req)).await;
                    Ok::<_, Infallible>(in_flight.attach(resp))
                }
            })
        };
        let result: Result<(), Box<dyn std::error::Error + Send + Sync>> = match io {
            Io::Plain(tcp) => {
                let io = TimedIo::new(
                    Framing::new(tcp, heads, max_head, max_headers),
                    tracker,
                    timeouts,
                    Protocol::Unknown,
                );
                let served = builder
                    .sniffing
                    .serve_connection_with_upgrades(TokioIo::new(io), service);
                until_drained(served, stop, |c| c.graceful_shutdown()).await
            }
            Io::Tls(stream) => {
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                // The handshake is over: the header-read clock of the first request starts now.
                tracker.restart_clock();
                if h2 {
                    let io = TimedIo::new(*stream, tracker, timeouts, Protocol::Http2);
                    let served = builder.http2.serve_connection(TokioIo::new(io), service);
                    until_drained(served, stop, |c| c.graceful_shutdown())
                        .await
                        .map_err(Into::into)
                } else {
                    let io = TimedIo::new(
                        Framing::new(*stream, heads, max_head, max_headers),
                        tracker,
                        timeouts,
                        Protocol::Http1,
                    );
                    let served = builder
                        .http1
                        .serve_connection(TokioIo::new(io), service)
                        .with_upgrades();
                    until_drained(served, stop, |c| c.graceful_shutdown())
                        .await
                        .map_err(Into::into)
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
        }
    }
}

/// A connection after its TLS handshake, if it has one.
enum Io {
    Plain(Prefixed<TcpStream>),
    Tls(Box<TlsStream<Prefixed<TcpStream>>>),
}

/// How a connection on the HTTPS listener goes on after its ClientHello.
enum Handshake<'t> {
    Terminated(Box<TlsStream<Prefixed<TcpStream>>>, ClientCertificate),
    /// An `ssl-passthrough` host: the connection, its ClientHello still to be read.
    Passthrough(&'t Passthrough, Prefixed<TcpStream>),
}

/// The TLS handshake, with the server configuration the ClientHello's server name calls for. With
/// passthrough hosts live, the bytes rustls reads up to the ClientHello are recorded, so a
/// passthrough host's connection can be replayed to its backend: the ClientHello is parsed once,
/// by rustls, and other hosts pay only for that copy.
async fn handshake<'t>(
    configs: &ServerConfigs,
    passthrough: Option<&'t PassthroughTable>,
    mut tcp: Prefixed<TcpStream>,
) -> std::io::Result<Handshake<'t>> {
    if passthrough.is_some() {
        tcp.record();
    }
    let mut start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
    let hello = start.client_hello();
    if let Some(to) = passthrough
        .zip(hello.server_name())
        .and_then(|(t, n)| t.get(n))
    {
        return Ok(Handshake::Passthrough(to, start.io.into_replay()));
    }
    start.io.stop_recording();
    let (config, requested) = configs.for_hello(&start.client_hello());
    let stream = start.into_stream(config).await?;
    let client_cert = match requested {
        false => ClientCertificate::not_requested(),
        true => ClientCertificate::requested(stream.get_ref().1.peer_certificates()),
    };
    Ok(Handshake::Terminated(Box::new(stream), client_cert))
}
