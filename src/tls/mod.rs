//! Certificate material: Secrets parsed into rustls keys (keeping the last good one), the certificate
//! table of one configuration generation, and the generated default certificate. Pure data below the
//! model; the listeners' SNI resolver and server configuration belong to the proxy.

pub mod certs;

use std::collections::HashMap;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

use crate::vocab::hosts::normalize_host;

pub use certs::{CertError, CertLoad, CertStore, CertWarning, LoadedCert};

/// The name the generated default certificate is issued for; `.invalid` can never be a real host.
pub const DEFAULT_CERT_NAME: &str = "portcullis.invalid";

/// Certificates by server name for one configuration generation.
#[derive(Debug, Clone)]
pub struct CertTable {
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// `*.example.com` is stored under `example.com`.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertTable {
    pub fn new(default: Arc<CertifiedKey>) -> Self {
        CertTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
        }
    }

    /// Adds a certificate for a TLS host (`name` or `*.suffix`, lower-case). The first one added for a
    /// name stays; returns false if the name was taken.
    pub fn insert(&mut self, host: &str, key: Arc<CertifiedKey>) -> bool {
        let (map, name) = match host.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix),
            None => (&mut self.exact, host),
        };
        match map.entry(name.into()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(key);
                true
            }
        }
    }

    /// The certificate for a server name: exact, then wildcard for exactly one label; `None` if neither.
    pub fn find(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        let name = normalize_host(server_name);
        self.exact.get(name.as_ref()).or_else(|| {
            name.split_once('.')
                .filter(|(label, _)| !label.is_empty())
                .and_then(|(_, suffix)| self.wildcard.get(suffix))
        })
    }

    /// Drops the certificate of a TLS host (`name` or `*.suffix`, lower-case).
    pub fn remove(&mut self, host: &str) {
        match host.strip_prefix("*.") {
            Some(suffix) => self.wildcard.remove(suffix),
            None => self.exact.remove(host),
        };
    }

    /// Takes every host of `other`, replacing what this table has for them; keeps this default.
    pub fn absorb(&mut self, other: CertTable) {
        self.exact.extend(other.exact);
        self.wildcard.extend(other.wildcard);
    }

    pub fn default_cert(&self) -> &Arc<CertifiedKey> {
        &self.default
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Generates the self-signed certificate served for unknown names (`portcullis.invalid`).
pub fn generate_default_cert(provider: &CryptoProvider) -> anyhow::Result<Arc<CertifiedKey>> {
    let mut params = rcgen::CertificateParams::new(vec![DEFAULT_CERT_NAME.to_string()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEFAULT_CERT_NAME);
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        "Portcullis default certificate",
    );
    let signing_key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&signing_key)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    Ok(Arc::new(CertifiedKey::from_der(
        vec![cert.der().clone()],
        key,
        provider,
    )?))
}

/// Accepts any certificate while still checking handshake signatures. Portcullis uses it towards
/// backends, which it reaches by IP and which usually present self-signed certificates (as ingress-nginx
/// does by default: `proxy_ssl_verify off`); tests use it to look at what a server presents.
#[derive(Debug)]
pub struct AcceptAnyCertificate(pub Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
