//! What the proxy knows about one client connection before its first request.

use std::net::SocketAddr;

pub use super::client_cert::ClientCertificate;

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
    /// The client's end: the TCP peer, or the source address of a trusted PROXY protocol header.
    pub peer: SocketAddr,
    /// The TCP peer (the load balancer) when a trusted PROXY protocol header named the client.
    pub proxied_by: Option<SocketAddr>,
    pub local: SocketAddr,
    pub scheme: Scheme,
    pub client_cert: ClientCertificate,
}
