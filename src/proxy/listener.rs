//! Accept loops for the plain-HTTP and TLS listeners. Each connection is served by hyper (HTTP/1.1 with
//! upgrades, HTTP/2 by ALPN or prior knowledge) with the limits of the live settings, and tracked so
//! shutdown can drain it. With `proxy-protocol` on, a connection's PROXY header is read first, before
//! TLS or HTTP. Settings and certificates change under a running listener; the socket never closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::proxy_protocol::{self, Reading};
use super::timeouts::{Protocol, TimedIo, Timeouts, Tracker};
use super::{Connection, Proxy, Scheme};
use crate::metrics::OpenConnection;
use crate::model::ConfigHandle;
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
    /// The TLS configuration, replaced when TLS settings change; `None` for plain HTTP.
    pub tls: Option<Arc<ArcSwap<rustls::ServerConfig>>>,
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
        let mut builder = Arc::new(http_builder(&limits));
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
            let settings = self.config.load().settings.clone();
            if settings.limits != limits {
                limits = settings.limits.clone();
                builder = Arc::new(http_builder(&limits));
            }
            let accepted = Accepted {
                peer,
                local,
                scheme,
                reading: reading(&settings, peer, proxy_headers.clone()),
                tls: self.tls.as_ref().map(|t| TlsAcceptor::from(t.load_full())),
                handshake_timeout: limits.handshake_timeout.0,
                timeouts: Timeouts {
                    header_read: limits.header_read_timeout.0,
                    idle: limits.idle_timeout.0,
                },
                proxy: self.proxy.clone(),
                builder: builder.clone(),
                watcher: graceful.watcher(),
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

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let header_bytes = usize::try_from(limits.max_header_bytes.0).unwrap_or(usize::MAX);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The header-read and idle timeouts are enforced by `TimedIo`: hyper's own header timer starts
        // when a keep-alive connection goes idle, which would cap the idle timeout at it.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_headers(limits.max_headers)
        .max_buf_size(header_bytes.max(MIN_BUF_SIZE));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.http2_max_pending_reset_streams)
        .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

/// One accepted connection and what serving it needs.
struct Accepted {
    peer: SocketAddr,
    local: SocketAddr,
    scheme: Scheme,
    reading: Reading,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    timeouts: Timeouts,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
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
            handshake_timeout,
            timeouts,
            proxy,
            builder,
            watcher,
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
        let conn = Arc::new(Connection {
            peer: origin.peer,
            proxied_by: origin.proxied_by,
            local,
            scheme,
        });
        let service = {
            let conn = conn.clone();
            let tracker = tracker.clone();
            service_fn(move |req| {
                let proxy = proxy.clone();
                let conn = conn.clone();
                let in_flight = tracker.request();
                async move {
                    // Boxed: the request's future is several kilobytes, and hyper moves the service's
                    // future (for HTTP/2 into a task of its own); a pointer moves cheaply.
                    let resp = Box::pin(proxy.handle(&conn, req)).await;
                    Ok::<_, Infallible>(in_flight.attach(resp))
                }
            })
        };
        let result = match tls {
            None => {
                watcher
                    .watch(
                        builder
                            .serve_connection_with_upgrades(
                                TokioIo::new(TimedIo::new(
                                    tcp,
                                    tracker,
                                    timeouts,
                                    Protocol::Unknown,
                                )),
                                service,
                            )
                            .into_owned(),
                    )
                    .await
            }
            Some(acceptor) => {
                let started = Instant::now();
                let stream =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let version = stream.get_ref().1.protocol_version();
                            metrics.tls_handshake_succeeded(version, started.elapsed());
                            stream
                        }
                        Ok(Err(e)) => {
                            metrics.tls_handshake_failed(started.elapsed());
                            tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            metrics.tls_handshake_failed(started.elapsed());
                            tracing::debug!(peer = %conn.peer, "TLS handshake timed out");
                            return;
                        }
                    };
                let protocol = match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Protocol::Http2,
                    _ => Protocol::Unknown,
                };
                // The handshake is over: the header-read clock of the first request starts now.
                tracker.restart_clock();
                let stream = TimedIo::new(stream, tracker, timeouts, protocol);
                watcher
                    .watch(
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned(),
                    )
                    .await
            }
        };
        if let Err(e) = result {
            tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
        }
    }
}
