//! The hosts whose TLS connections are passed through unterminated (`ssl-passthrough`), by the exact
//! server name a ClientHello asks for, and the backend each goes to.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Backend, NamespacedName};

/// Empty unless `ssl-passthrough` is enabled and some Ingress asks for it; the HTTPS listener only
/// reads ClientHellos ahead of rustls when it is not empty.
#[derive(Debug, Default, Clone)]
pub struct PassthroughTable {
    hosts: HashMap<Box<str>, Passthrough>,
}

/// Where the TLS connections of one host go.
#[derive(Debug, Clone)]
pub struct Passthrough {
    pub ingress: NamespacedName,
    pub backend: Arc<Backend>,
}

impl PassthroughTable {
    /// Enters a host (lower-case); an older Ingress's entry for it stays, and is returned.
    pub fn insert(&mut self, host: &str, entry: Passthrough) -> Result<(), &Passthrough> {
        match self.hosts.entry(host.into()) {
            std::collections::hash_map::Entry::Occupied(o) => Err(o.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(entry);
                Ok(())
            }
        }
    }

    /// The entry for a ClientHello's server name (lower-case, no trailing dot); exact names only,
    /// as ingress-nginx.
    pub fn get(&self, server_name: &str) -> Option<&Passthrough> {
        self.hosts.get(server_name)
    }

    pub fn remove(&mut self, host: &str) {
        self.hosts.remove(host);
    }

    /// Takes every host of `other`, replacing what this table has for them.
    pub fn absorb(&mut self, other: PassthroughTable) {
        self.hosts.extend(other.hosts);
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn hosts(&self) -> impl Iterator<Item = (&str, &Passthrough)> {
        self.hosts.iter().map(|(h, p)| (h.as_ref(), p))
    }
}
