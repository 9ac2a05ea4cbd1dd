//! Accept loops for the plain-HTTP and TLS listeners. Each connection is served by hyper (HTTP/1.1 with
//! upgrades, HTTP/2 by ALPN or prior knowledge) and tracked so shutdown can drain it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{Connection, Proxy, Scheme};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a complete request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    pub tls: Option<TlsAcceptor>,
    pub proxy: Arc<Proxy>,
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
        let builder = Arc::new(http_builder());
        loop {
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
            let conn = Arc::new(Connection {
                peer,
                local,
                scheme,
            });
            let task = serve(
                tcp,
                conn,
                self.tls.clone(),
                self.proxy.clone(),
                builder.clone(),
                graceful.watcher(),
            );
            tokio::spawn(task);
        }
    }
}

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250)
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

async fn serve(
    tcp: TcpStream,
    conn: Arc<Connection>,
    tls: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let service = {
        let conn = conn.clone();
        service_fn(move |req| {
            let proxy = proxy.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(proxy.handle(&conn, req).await) }
        })
    };
    let result = match tls {
        None => {
            watcher
                .watch(
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .into_owned(),
                )
                .await
        }
        Some(acceptor) => {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %conn.peer, "TLS handshake timed out");
                    return;
                }
            };
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
