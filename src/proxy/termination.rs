//! TLS termination on the HTTPS listener: the SNI resolver that picks each handshake's certificate from
//! the live configuration without locks, and the rustls server configuration shared by every connection.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::model::ConfigHandle;
use crate::settings::{TlsSettings, TlsVersion};

/// Picks the certificate for each handshake from the live configuration: exact name, wildcard, then the
/// default certificate (or nothing, which fails the handshake, under `strict_sni`).
#[derive(Debug)]
pub struct SniResolver {
    config: ConfigHandle,
}

impl SniResolver {
    pub fn new(config: ConfigHandle) -> Self {
        SniResolver { config }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let config = self.config.load();
        let certs = &config.certs;
        match hello.server_name().and_then(|name| certs.find(name)) {
            Some(key) => Some(key.clone()),
            None if config.settings.tls.strict_sni => None,
            None => Some(certs.default_cert().clone()),
        }
    }
}

/// The rustls server configuration: TLS 1.3 (and 1.2 unless `min-version` is 1.3), the provider's
/// default (strong, AEAD-only) cipher suites, ALPN h2 and http/1.1, certificates by SNI.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    resolver: Arc<SniResolver>,
    settings: &TlsSettings,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = match settings.session_cache_size {
        0 => Arc::new(rustls::server::NoServerSessionStorage {}),
        n => rustls::server::ServerSessionMemoryCache::new(n),
    };
    if settings.session_tickets {
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    }
    Ok(config)
}
