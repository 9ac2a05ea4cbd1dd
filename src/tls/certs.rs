//! Turning `kubernetes.io/tls` Secrets into certified keys, once per Secret content, keeping the last good
//! one when a Secret turns bad.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::vocab::NamespacedName;

pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// An optional Secret entry: a DER OCSP response for the leaf, stapled as it is to handshakes of
/// clients that ask for one. Portcullis neither fetches nor checks it; keep it fresh.
pub const OCSP_ENTRY: &str = "tls.ocsp";

/// Why a Secret gave no usable certificate. Messages never include key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("type is {0:?}, only {TLS_SECRET_TYPE} Secrets hold certificates")]
    WrongType(String),
    #[error("has no {0} entry")]
    MissingEntry(&'static str),
    #[error("tls.crt holds no PEM certificate")]
    NoCertificate,
    #[error("tls.crt is not valid PEM: {0}")]
    BadCertificatePem(String),
    #[error("tls.crt: the first certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("tls.crt: the first certificate is a CA certificate, not a server certificate")]
    CaCertificate,
    #[error("tls.key holds no PEM private key (PKCS#1, PKCS#8 or SEC1 expected)")]
    NoKey,
    #[error("tls.key is encrypted; Portcullis needs an unencrypted key")]
    EncryptedKey,
    #[error("tls.key is not valid PEM: {0}")]
    BadKeyPem(String),
    #[error("tls.key cannot be used: {0}")]
    UnsupportedKey(String),
    #[error("tls.key does not match the certificate in tls.crt")]
    KeyMismatch,
}

impl CertError {
    /// A short, stable name for metrics and Events.
    pub fn kind(&self) -> &'static str {
        match self {
            CertError::KeyMismatch => "key-mismatch",
            _ => "invalid-certificate",
        }
    }
}

/// A parsed certificate with what the rest of the controller needs to know about it.
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// DNS names the leaf is valid for (SANs; the CN only when there are no DNS SANs), lower-case.
    pub dns_names: Vec<String>,
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// Hex SHA-256 of the leaf, safe to log.
    pub fingerprint: String,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("LoadedCert")
            .field("dns_names", &self.dns_names)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl LoadedCert {
    pub fn covers(&self, host: &str) -> bool {
        self.dns_names
            .iter()
            .any(|pattern| crate::vocab::hosts::host_covered_by(host, pattern))
    }
}

/// Parses PEM `tls.crt` and `tls.key` into a [`LoadedCert`], checking that the key matches.
pub fn load_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<LoadedCert, CertError> {
    load_pem_with_ocsp(cert_pem, key_pem, None, provider)
}

/// [`load_pem`], stapling `ocsp` (a DER OCSP response) when given and not empty.
pub fn load_pem_with_ocsp(
    cert_pem: &[u8],
    key_pem: &[u8],
    ocsp: Option<&[u8]>,
    provider: &CryptoProvider,
) -> Result<LoadedCert, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::BadCertificatePem(pem_error(&e)))?;
    let leaf = chain.first().ok_or(CertError::NoCertificate)?;
    let (dns_names, not_before, not_after) = inspect_leaf(leaf)?;
    let fingerprint = sha256_hex(leaf.as_ref());

    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) if contains(key_pem, b"ENCRYPTED") => {
            return Err(CertError::EncryptedKey);
        }
        Err(pem::Error::NoItemsFound) => return Err(CertError::NoKey),
        Err(e) => return Err(CertError::BadKeyPem(pem_error(&e))),
    };
    let mut certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => CertError::KeyMismatch,
        other => CertError::UnsupportedKey(other.to_string()),
    })?;
    certified.ocsp = ocsp.filter(|r| !r.is_empty()).map(<[u8]>::to_vec);
    Ok(LoadedCert {
        key: Arc::new(certified),
        dns_names,
        not_before,
        not_after,
        fingerprint,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// PEM errors can quote base64 content; keep only the category so no key byte ever reaches a log.
fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".into(),
        pem::Error::NoItemsFound => "no PEM section found".into(),
        _ => "malformed PEM".into(),
    }
}

fn inspect_leaf(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, i64, i64), CertError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    if cert.is_ca() {
        return Err(CertError::CaCertificate);
    }
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let validity = cert.validity();
    Ok((
        names,
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The outcome of looking at one Secret: the certificate to serve (possibly the last good one) and, if
/// the current content is bad, why.
#[derive(Debug, Clone)]
pub struct CertLoad {
    pub cert: Option<Arc<LoadedCert>>,
    pub error: Option<CertError>,
}

struct Entry {
    content: u64,
    current: Result<Arc<LoadedCert>, CertError>,
    last_good: Option<Arc<LoadedCert>>,
}

/// Remembers every Secret's parsed certificate across builds: a Secret is parsed again only when its
/// content changes, and a Secret whose new content is bad keeps serving its last good certificate.
pub struct CertStore {
    provider: Arc<CryptoProvider>,
    entries: HashMap<NamespacedName, Entry>,
}

impl CertStore {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        CertStore {
            provider,
            entries: HashMap::new(),
        }
    }

    pub fn load(&mut self, id: &NamespacedName, secret: &Secret) -> CertLoad {
        let parts = secret_parts(secret);
        let ocsp = secret_entry(secret, OCSP_ENTRY);
        let content = match &parts {
            Ok((crt, key)) => {
                let mut h = DefaultHasher::new();
                crt.hash(&mut h);
                key.hash(&mut h);
                ocsp.hash(&mut h);
                h.finish()
            }
            Err(_) => 0,
        };
        let entry = self.entries.get_mut(id);
        let entry = match entry {
            Some(e) if e.content == content && parts.is_ok() => e,
            previous => {
                let last_good = previous.and_then(|e| e.last_good.clone());
                let current = parts
                    .and_then(|(crt, key)| load_pem_with_ocsp(crt, key, ocsp, &self.provider))
                    .map(Arc::new);
                let last_good = current.as_ref().ok().cloned().or(last_good);
                self.entries.insert(
                    id.clone(),
                    Entry {
                        content,
                        current,
                        last_good,
                    },
                );
                self.entries.get_mut(id).expect("just inserted")
            }
        };
        match &entry.current {
            Ok(cert) => CertLoad {
                cert: Some(cert.clone()),
                error: None,
            },
            Err(e) => CertLoad {
                cert: entry.last_good.clone(),
                error: Some(e.clone()),
            },
        }
    }

    /// Forgets Secrets that no longer exist, so a re-created Secret starts without a last good certificate.
    pub fn retain(&mut self, live: &HashSet<NamespacedName>) {
        self.entries.retain(|id, _| live.contains(id));
    }
}

/// One entry of a Secret, `stringData` taking precedence over `data` as in the API server.
fn secret_entry<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    if let Some(v) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.as_bytes());
    }
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.as_slice())
}

/// `tls.crt` and `tls.key` of a Secret, `stringData` taking precedence over `data` as in the API server.
fn secret_parts(secret: &Secret) -> Result<(&[u8], &[u8]), CertError> {
    let ty = secret.type_.as_deref().unwrap_or("Opaque");
    if ty != TLS_SECRET_TYPE {
        return Err(CertError::WrongType(ty.to_string()));
    }
    let get = |key: &'static str| secret_entry(secret, key).ok_or(CertError::MissingEntry(key));
    Ok((get("tls.crt")?, get("tls.key")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn self_signed(names: &[&str]) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .expect("rcgen");
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    fn secret(crt: &str, key: &str) -> Secret {
        let mut data = BTreeMap::new();
        data.insert("tls.crt".to_string(), ByteString(crt.as_bytes().to_vec()));
        data.insert("tls.key".to_string(), ByteString(key.as_bytes().to_vec()));
        Secret {
            type_: Some(TLS_SECRET_TYPE.into()),
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn loads_a_matching_pair_and_reads_names() {
        let (crt, key) = self_signed(&["a.example.com", "*.b.example.com"]);
        let cert = load_pem(crt.as_bytes(), key.as_bytes(), &provider()).unwrap();
        assert!(cert.covers("a.example.com"));
        assert!(cert.covers("x.b.example.com"));
        assert!(!cert.covers("b.example.com"));
        assert!(cert.not_after > cert.not_before);
        assert_eq!(cert.fingerprint.len(), 64);
    }

    #[test]
    fn rejects_a_key_of_another_certificate() {
        let (crt, _) = self_signed(&["a.example.com"]);
        let (_, other_key) = self_signed(&["a.example.com"]);
        let err = load_pem(crt.as_bytes(), other_key.as_bytes(), &provider()).unwrap_err();
        assert_eq!(err, CertError::KeyMismatch);
    }

    #[test]
    fn names_each_failure() {
        let (crt, key) = self_signed(&["a.example.com"]);
        let p = provider();
        assert_eq!(
            load_pem(b"", key.as_bytes(), &p).unwrap_err(),
            CertError::NoCertificate
        );
        assert_eq!(
            load_pem(crt.as_bytes(), b"garbage", &p).unwrap_err(),
            CertError::NoKey
        );
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            load_pem(crt.as_bytes(), encrypted.as_bytes(), &p).unwrap_err(),
            CertError::EncryptedKey
        );
        let truncated = &crt[..crt.len() - 30];
        assert!(matches!(
            load_pem(truncated.as_bytes(), key.as_bytes(), &p),
            Err(CertError::BadCertificatePem(_))
        ));
    }

    #[test]
    fn error_messages_never_contain_key_material() {
        let (crt, key) = self_signed(&["a.example.com"]);
        let broken_key = key.replace('A', "*");
        let err = load_pem(crt.as_bytes(), broken_key.as_bytes(), &provider()).unwrap_err();
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        for chunk in body.as_bytes().chunks(16) {
            assert!(
                !err.to_string()
                    .contains(std::str::from_utf8(chunk).unwrap()),
                "{err}"
            );
        }
    }

    #[test]
    fn store_keeps_last_good_certificate_when_secret_turns_bad() {
        let mut store = CertStore::new(provider());
        let id = NamespacedName::new("ns", "tls");
        let (crt, key) = self_signed(&["a.example.com"]);
        let good = store.load(&id, &secret(&crt, &key));
        let good_fp = good.cert.as_ref().unwrap().fingerprint.clone();
        assert!(good.error.is_none());

        let (_, wrong_key) = self_signed(&["a.example.com"]);
        let bad = store.load(&id, &secret(&crt, &wrong_key));
        assert_eq!(bad.error, Some(CertError::KeyMismatch));
        assert_eq!(bad.cert.unwrap().fingerprint, good_fp);

        store.retain(&HashSet::new());
        let fresh = store.load(&id, &secret(&crt, &wrong_key));
        assert!(
            fresh.cert.is_none(),
            "a forgotten Secret has no last good certificate"
        );
    }

    #[test]
    fn store_parses_unchanged_content_once() {
        let mut store = CertStore::new(provider());
        let id = NamespacedName::new("ns", "tls");
        let (crt, key) = self_signed(&["a.example.com"]);
        let first = store.load(&id, &secret(&crt, &key)).cert.unwrap();
        let second = store.load(&id, &secret(&crt, &key)).cert.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn string_data_overrides_data_and_type_is_checked() {
        let (crt, key) = self_signed(&["a.example.com"]);
        let mut s = secret("junk", "junk");
        s.string_data = Some(BTreeMap::from([
            ("tls.crt".into(), crt.clone()),
            ("tls.key".into(), key.clone()),
        ]));
        assert!(secret_parts(&s).is_ok());
        let mut store = CertStore::new(provider());
        assert!(
            store
                .load(&NamespacedName::new("a", "b"), &s)
                .cert
                .is_some()
        );
        s.type_ = Some("Opaque".into());
        assert_eq!(
            secret_parts(&s).unwrap_err(),
            CertError::WrongType("Opaque".into())
        );
    }
}
