//! Pending challenge answers, set by the orderer (manifest mode) or from the object every replica
//! watches (cluster mode), and read by the :80 handler (HTTP-01) and the TLS resolver (TLS-ALPN-01)
//! without locks: each map is swapped whole, as the configuration is.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;

/// The ALPN protocol of TLS-ALPN-01 validation handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The answers of the order in progress: what replicas share. Key authorizations only (public: the
/// CA fetches them over plain HTTP), never a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answers {
    /// HTTP-01: token → key authorization.
    pub http01: BTreeMap<String, String>,
    /// TLS-ALPN-01: host name → SHA-256 digest of the key authorization.
    pub tls_alpn01: BTreeMap<String, Vec<u8>>,
}

impl Answers {
    pub fn is_empty(&self) -> bool {
        self.http01.is_empty() && self.tls_alpn01.is_empty()
    }
}

/// Key authorizations by token, challenge certificates by host name.
#[derive(Debug, Default)]
pub struct Challenges {
    http01: ArcSwap<HashMap<String, Arc<str>>>,
    tls_alpn01: ArcSwap<HashMap<String, AlpnAnswer>>,
}

/// A TLS-ALPN-01 answer: the digest it was made for, and the certificate.
type AlpnAnswer = (Vec<u8>, Arc<CertifiedKey>);

impl Challenges {
    /// The body of `GET /.well-known/acme-challenge/TOKEN` while that challenge is pending.
    pub fn http01(&self, token: &str) -> Option<Arc<str>> {
        self.http01.load().get(token).cloned()
    }

    /// The certificate for a handshake offering only ALPN `acme-tls/1` for `host`, while pending.
    pub fn tls_alpn01(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01.load().get(host).map(|(_, c)| c.clone())
    }

    /// Makes `answers` the pending ones. The TLS-ALPN-01 certificates are made here, so each replica
    /// signs its own and only digests are shared; an unchanged one is kept.
    pub fn replace(&self, answers: &Answers, provider: &Arc<CryptoProvider>) {
        let current = self.tls_alpn01.load();
        let mut certs = HashMap::new();
        for (host, digest) in &answers.tls_alpn01 {
            match current.get(host) {
                Some((d, cert)) if d == digest => {
                    certs.insert(host.clone(), (d.clone(), cert.clone()));
                }
                _ => match alpn_certificate(host, digest, provider) {
                    Ok(cert) => {
                        certs.insert(host.clone(), (digest.clone(), cert));
                    }
                    Err(e) => {
                        tracing::warn!(host, error = e, "cannot make the TLS-ALPN-01 certificate")
                    }
                },
            }
        }
        self.tls_alpn01.store(Arc::new(certs));
        self.http01.store(Arc::new(
            answers
                .http01
                .iter()
                .map(|(t, k)| (t.clone(), Arc::from(k.as_str())))
                .collect(),
        ));
    }

    /// Whether every one of `answers` is being answered now.
    pub fn answers_all(&self, answers: &Answers) -> bool {
        let http = self.http01.load();
        let tls = self.tls_alpn01.load();
        answers
            .http01
            .iter()
            .all(|(t, k)| http.get(t).is_some_and(|v| **v == **k))
            && answers
                .tls_alpn01
                .iter()
                .all(|(h, d)| tls.get(h).is_some_and(|(v, _)| v == d))
    }
}

/// The RFC 8737 certificate: self-signed for `host`, with the critical acmeIdentifier extension
/// holding the SHA-256 digest of the key authorization.
fn alpn_certificate(
    host: &str,
    digest: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<CertifiedKey>, String> {
    if digest.len() != 32 {
        return Err("the key authorization digest is not SHA-256".into());
    }
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_string()]).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der_key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not `CertifiedKey::from_der`: its key check parses the certificate with webpki, which refuses
    // the critical acmeIdentifier extension that is the point of this certificate.
    let signing_key = provider
        .key_provider
        .load_private_key(der_key)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alpn_certificate_carries_the_acme_identifier() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cert = alpn_certificate("a.example", &[7u8; 32], &provider).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert.cert[0]).unwrap();
        let ext = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(ext.critical);
        assert!(alpn_certificate("a.example", &[7u8; 20], &provider).is_err());
    }

    #[test]
    fn replaced_answers_are_served_and_withdrawn() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let table = Challenges::default();
        let answers = Answers {
            http01: BTreeMap::from([("tok".into(), "tok.thumb".into())]),
            tls_alpn01: BTreeMap::from([("a.example".into(), vec![1u8; 32])]),
        };
        table.replace(&answers, &provider);
        assert!(table.answers_all(&answers));
        assert_eq!(table.http01("tok").as_deref(), Some("tok.thumb"));
        assert!(table.tls_alpn01("a.example").is_some());
        table.replace(&Answers::default(), &provider);
        assert!(table.http01("tok").is_none());
        assert!(table.tls_alpn01("a.example").is_none());
        assert!(!table.answers_all(&answers));
    }
}
