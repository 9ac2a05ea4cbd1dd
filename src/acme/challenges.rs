//! Pending challenge answers, written by the orderer and read by the :80 handler (HTTP-01) and the
//! TLS resolver (TLS-ALPN-01) without locks: each map is swapped whole, as the configuration is.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Key authorizations by token, challenge certificates by host name.
#[derive(Debug, Default)]
pub struct Challenges {
    http01: ArcSwap<HashMap<String, Arc<str>>>,
    tls_alpn01: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The body of `GET /.well-known/acme-challenge/TOKEN` while that challenge is pending.
    pub fn http01(&self, token: &str) -> Option<Arc<str>> {
        self.http01.load().get(token).cloned()
    }

    /// The certificate for a handshake offering only ALPN `acme-tls/1` for `host`, while pending.
    pub fn tls_alpn01(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01.load().get(host).cloned()
    }

    pub(super) fn set_http01(&self, token: &str, key_authorization: &str) {
        let value: Arc<str> = key_authorization.into();
        update(&self.http01, |m| {
            m.insert(token.to_string(), value.clone());
        });
    }

    pub(super) fn remove_http01(&self, token: &str) {
        update(&self.http01, |m| {
            m.remove(token);
        });
    }

    pub(super) fn set_tls_alpn01(&self, host: &str, cert: Arc<CertifiedKey>) {
        update(&self.tls_alpn01, |m| {
            m.insert(host.to_string(), cert.clone());
        });
    }

    pub(super) fn remove_tls_alpn01(&self, host: &str) {
        update(&self.tls_alpn01, |m| {
            m.remove(host);
        });
    }
}

/// Publishes a changed copy of `map`; readers keep the version they loaded.
fn update<V: Clone>(map: &ArcSwap<HashMap<String, V>>, change: impl Fn(&mut HashMap<String, V>)) {
    map.rcu(|current| {
        let mut next = HashMap::clone(current);
        change(&mut next);
        next
    });
}
