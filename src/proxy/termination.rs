//! TLS termination on the HTTPS listener: the SNI resolver that picks each handshake's certificate from
//! the live configuration without locks, and the rustls server configuration shared by every connection.

use std::sync::Arc;

use rustls::CipherSuite;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::acme::Challenges;
use crate::acme::challenges::ACME_TLS_ALPN;
use crate::model::ConfigHandle;
use crate::settings::{TlsSettings, TlsVersion};

/// Picks the certificate for each handshake from the live configuration: exact name, wildcard, then the
/// default certificate (or nothing, which fails the handshake, under `strict_sni`). A handshake that
/// offers only ALPN `acme-tls/1` is an ACME validation: it gets the pending TLS-ALPN-01 certificate for
/// its name, or fails.
#[derive(Debug)]
pub struct SniResolver {
    config: ConfigHandle,
    challenges: Arc<Challenges>,
}

impl SniResolver {
    pub fn new(config: ConfigHandle, challenges: Arc<Challenges>) -> Self {
        SniResolver { config, challenges }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(mut alpn) = hello.alpn()
            && alpn.next() == Some(ACME_TLS_ALPN)
            && alpn.next().is_none()
        {
            return self.challenges.tls_alpn01(hello.server_name()?);
        }
        let config = self.config.load();
        let certs = &config.certs;
        match hello.server_name().and_then(|name| certs.find(name)) {
            Some(key) => Some(key.clone()),
            None if config.settings.tls.strict_sni => None,
            None => Some(certs.default_cert().clone()),
        }
    }
}

/// The server's cipher suite preference, strongest first: 256-bit AEADs (AES-256-GCM, then
/// ChaCha20-Poly1305), then AES-128-GCM, for TLS 1.3 and for TLS 1.2 with either key type. Suites the
/// provider has that are not listed keep its order, after these.
const SERVER_SUITE_ORDER: &[CipherSuite] = &[
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// The rustls server configuration: TLS 1.3 (and 1.2 unless `min-version` is 1.3), the provider's
/// default (strong, AEAD-only) cipher suites in [`SERVER_SUITE_ORDER`], ALPN h2 and http/1.1 (and
/// `acme-tls/1`, last, which only ACME validations offer), certificates by SNI.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    resolver: Arc<SniResolver>,
    settings: &TlsSettings,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(server_provider(&provider)))
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    // The server, not the client, picks the suite: a client that lists a weaker suite first still
    // gets the strongest one both support. Audits (testssl.sh) require it.
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    config.session_storage = match settings.session_cache_size {
        0 => Arc::new(rustls::server::NoServerSessionStorage {}),
        n => rustls::server::ServerSessionMemoryCache::new(n),
    };
    if settings.session_tickets {
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    }
    Ok(config)
}

/// `provider` with its cipher suites in the server's order of preference.
fn server_provider(provider: &CryptoProvider) -> CryptoProvider {
    let mut ordered = provider.clone();
    ordered.cipher_suites.sort_by_key(|suite| {
        SERVER_SUITE_ORDER
            .iter()
            .position(|s| *s == suite.suite())
            .unwrap_or(SERVER_SUITE_ORDER.len())
    });
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The suites of `provider` usable with `version`, by name, in order.
    fn order(
        provider: &CryptoProvider,
        version: rustls::ProtocolVersion,
        kind: &str,
    ) -> Vec<String> {
        provider
            .cipher_suites
            .iter()
            .filter(|s| s.version().version == version)
            .map(|s| format!("{:?}", s.suite()))
            .filter(|name| name.contains(kind))
            .collect()
    }

    #[test]
    fn server_suites_are_the_providers_strongest_first() {
        let default = rustls::crypto::aws_lc_rs::default_provider();
        let server = server_provider(&default);
        let mut same: Vec<_> = server.cipher_suites.iter().map(|s| s.suite()).collect();
        let mut provided: Vec<_> = default.cipher_suites.iter().map(|s| s.suite()).collect();
        same.sort_by_key(|s| u16::from(*s));
        provided.sort_by_key(|s| u16::from(*s));
        assert_eq!(same, provided, "reordered, never added or removed");

        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        assert_eq!(
            order(&server, TLSv1_3, "TLS13"),
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS13_AES_128_GCM_SHA256"
            ]
        );
        for kind in ["ECDSA", "RSA"] {
            assert_eq!(
                order(&server, TLSv1_2, &format!("ECDHE_{kind}")),
                [
                    format!("TLS_ECDHE_{kind}_WITH_AES_256_GCM_SHA384"),
                    format!("TLS_ECDHE_{kind}_WITH_CHACHA20_POLY1305_SHA256"),
                    format!("TLS_ECDHE_{kind}_WITH_AES_128_GCM_SHA256"),
                ],
                "TLS 1.2 with an {kind} key"
            );
        }
    }
}
