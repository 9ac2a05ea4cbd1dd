//! TLS termination on the HTTPS listener: the SNI resolver that picks each handshake's certificate from
//! the live configuration without locks, and the rustls server configurations: one shared by every
//! connection to hosts without client certificates, one that asks for a client certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::CipherSuite;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::acme::Challenges;
use crate::acme::challenges::ACME_TLS_ALPN;
use crate::model::ConfigHandle;
use crate::settings::{TlsSettings, TlsVersion};
use crate::tls::AcceptAnyCertificate;

/// Picks the certificate for each handshake from the live configuration: exact name, wildcard, then the
/// default certificate (or nothing, which fails the handshake, under `strict_sni`). A handshake that
/// offers only ALPN `acme-tls/1` is an ACME validation: it gets the pending TLS-ALPN-01 certificate for
/// its name, or fails.
#[derive(Debug)]
pub struct SniResolver {
    config: ConfigHandle,
    challenges: Arc<Challenges>,
    /// For a Gateway's socket: certificates come from its listeners, not from the Ingresses.
    gateway_socket: Option<SocketAddr>,
}

impl SniResolver {
    pub fn new(config: ConfigHandle, challenges: Arc<Challenges>) -> Self {
        SniResolver {
            config,
            challenges,
            gateway_socket: None,
        }
    }

    /// The resolver of one Gateway socket: the certificate of the listener the name matches.
    pub fn for_gateway(
        config: ConfigHandle,
        challenges: Arc<Challenges>,
        socket: SocketAddr,
    ) -> Self {
        SniResolver {
            config,
            challenges,
            gateway_socket: Some(socket),
        }
    }

    /// Whether a handshake for `server_name` should ask for a client certificate: some route that a
    /// request for that host can reach checks one. Only a hint for the handshake; the request step
    /// checks the route it actually matched, whatever the `Host` header says.
    fn wants_client_cert(&self, server_name: Option<&str>) -> bool {
        if self.gateway_socket.is_some() {
            return false;
        }
        self.config
            .load()
            .routes
            .host_values(server_name.unwrap_or(""))
            .any(|route| route.policy.client_cert.is_some())
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
        if let Some(socket) = &self.gateway_socket {
            let found = config.gateway.certificate(socket, hello.server_name());
            return match found {
                Some(cert) => Some(cert.key.clone()),
                None if config.settings.tls.strict_sni => None,
                None => Some(config.certs.default_cert().clone()),
            };
        }
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

/// The HTTPS listener's two server configurations, rebuilt together when the TLS settings change.
#[derive(Debug)]
pub struct ServerConfigs {
    /// For hosts without client certificates: no certificate request, the shared session ticketer.
    pub plain: Arc<rustls::ServerConfig>,
    /// For hosts with client certificates: asks for one. Its own ticketer and session cache, so a
    /// session from `plain` (which carries no certificate) is never resumed here.
    pub client_auth: Arc<rustls::ServerConfig>,
    resolver: Arc<SniResolver>,
}

impl ServerConfigs {
    /// The configuration for a handshake, and whether it asks for a client certificate.
    pub fn for_hello(&self, hello: &ClientHello<'_>) -> (Arc<rustls::ServerConfig>, bool) {
        match self.resolver.wants_client_cert(hello.server_name()) {
            true => (self.client_auth.clone(), true),
            false => (self.plain.clone(), false),
        }
    }
}

/// Asks for a client certificate and takes whatever is sent, checking only the handshake signature
/// (the client holds the key). Which CA must have issued it depends on the route a request matches,
/// and a handshake cannot know that (the `Host` header may name another host than SNI, and resumed
/// sessions skip certificate verification), so verification against the route's CA happens per request
/// (`proxy::client_cert`); a missing or bad certificate is then answered over HTTP, as nginx does.
#[derive(Debug)]
struct RequestClientCert(AcceptAnyCertificate);

impl rustls::server::danger::ClientCertVerifier for RequestClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    // The handshake signatures are checked as for any peer certificate (`AcceptAnyCertificate`).
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Both server configurations of the HTTPS listener (see [`ServerConfigs`]).
pub fn server_configs(
    provider: Arc<CryptoProvider>,
    resolver: Arc<SniResolver>,
    settings: &TlsSettings,
) -> Result<ServerConfigs, rustls::Error> {
    let plain = server_config(provider.clone(), resolver.clone(), settings, None)?;
    let verifier = Arc::new(RequestClientCert(AcceptAnyCertificate(provider.clone())));
    let client_auth = server_config(provider, resolver.clone(), settings, Some(verifier))?;
    Ok(ServerConfigs {
        plain: Arc::new(plain),
        client_auth: Arc::new(client_auth),
        resolver,
    })
}

/// The rustls server configuration: TLS 1.3 (and 1.2 unless `min-version` is 1.3), the provider's
/// default (strong, AEAD-only) cipher suites in [`SERVER_SUITE_ORDER`], ALPN h2 and http/1.1 (and
/// `acme-tls/1`, last, which only ACME validations offer), certificates by SNI, a client certificate
/// asked for with `client_auth`.
fn server_config(
    provider: Arc<CryptoProvider>,
    resolver: Arc<SniResolver>,
    settings: &TlsSettings,
    client_auth: Option<Arc<RequestClientCert>>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(server_provider(&provider)))
        .with_protocol_versions(versions)?;
    let builder = match client_auth {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
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
