//! SSL passthrough on the HTTPS listener. When the live configuration passes some host through, the
//! listener records the bytes rustls reads up to a connection's ClientHello; a passed-through host's
//! connection is spliced, those bytes first, to an endpoint of its backend, which then holds the TLS
//! session (its certificate, its ALPN). Every other connection goes on with its handshake.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use super::proxy_protocol::Prefixed;
use super::tunnels::Tunnels;
use crate::metrics::Metrics;
use crate::model::passthrough::Passthrough;

/// The most endpoints tried for one connection before it is closed.
const MAX_TRIES: usize = 3;

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
