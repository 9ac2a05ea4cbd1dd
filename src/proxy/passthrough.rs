//! SSL passthrough on the HTTPS listener. When the live configuration passes some host through, a
//! connection's ClientHello is read (not consumed) before rustls sees it: a passed-through host's
//! connection is spliced, ClientHello first, to an endpoint of its backend, which then holds the TLS
//! session (its certificate, its ALPN); every other connection goes on to the usual handshake with
//! the same bytes replayed. Without passthrough hosts the listener never comes here.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::client_hello::{self, Hello, MAX_HELLO_BYTES};
use super::proxy_protocol::Prefixed;
use super::tunnels::Tunnels;
use crate::metrics::Metrics;
use crate::model::passthrough::{Passthrough, PassthroughTable};

/// The most bytes buffered while looking for a whole ClientHello: records may split it finely.
const MAX_BUFFERED: usize = 2 * MAX_HELLO_BYTES;
/// The most endpoints tried for one connection before it is closed.
const MAX_TRIES: usize = 3;

/// Where a connection goes once its ClientHello has been read.
pub enum Routed<'a> {
    Passthrough(&'a Passthrough, Prefixed<TcpStream>),
    /// To the terminating handshake, with every byte read so far still to be read.
    Terminate(Prefixed<TcpStream>),
    /// No ClientHello within the handshake timeout.
    TimedOut,
}

/// Reads the start of a connection until its ClientHello decides where it goes.
pub async fn route(
    tcp: Prefixed<TcpStream>,
    table: &PassthroughTable,
    wait: Duration,
) -> Routed<'_> {
    let (mut buf, mut tcp) = tcp.into_parts();
    let read = async move {
        let hello = loop {
            match client_hello::peek(&buf) {
                Hello::Incomplete if buf.len() < MAX_BUFFERED => {}
                Hello::Incomplete => break Hello::Invalid,
                answer => break answer,
            }
            buf.reserve(4096);
            match tcp.read_buf(&mut buf).await {
                // The handshake that follows fails on the same bytes, and is counted as it always was.
                Ok(0) | Err(_) => break Hello::Invalid,
                Ok(_) => {}
            }
        };
        (hello, Prefixed::new(buf, tcp))
    };
    match tokio::time::timeout(wait, read).await {
        Err(_) => Routed::TimedOut,
        Ok((
            Hello::Complete {
                server_name: Some(name),
            },
            tcp,
        )) => match table.get(&name) {
            Some(entry) => Routed::Passthrough(entry, tcp),
            None => Routed::Terminate(tcp),
        },
        Ok((_, tcp)) => Routed::Terminate(tcp),
    }
}

/// Splices the client's connection to an endpoint of the host's backend until either side closes
/// (or shutdown's deadline closes it). Nothing can be answered without TLS, so a backend with no
/// reachable endpoint closes the connection.
pub async fn splice(
    client: Prefixed<TcpStream>,
    peer: SocketAddr,
    to: &Passthrough,
    connect_timeout: Duration,
    tunnels: &Tunnels,
    metrics: &Metrics,
) {
    let tries = to.backend.endpoints.len().min(MAX_TRIES);
    if tries == 0 {
        metrics.passthrough_connection("no_endpoint");
        tracing::debug!(%peer, ingress = %to.ingress, "passthrough backend has no ready endpoint; connection closed");
        return;
    }
    let mut backend = None;
    for endpoint in std::iter::from_fn(|| to.backend.pick()).take(tries) {
        match tokio::time::timeout(connect_timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => {
                backend = Some(stream);
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, %endpoint, error = %e, "passthrough connect failed")
            }
            Err(_) => tracing::debug!(%peer, %endpoint, "passthrough connect timed out"),
        }
    }
    let Some(backend) = backend else {
        metrics.passthrough_connection("connect_failed");
        return;
    };
    let _ = backend.set_nodelay(true);
    metrics.passthrough_connection("passed");
    tunnels.carry(client, backend).await;
}
