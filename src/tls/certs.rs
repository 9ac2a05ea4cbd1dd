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
    #[error("tls.key holds no PEM private key (PKCS#1, PKCS#8 or SEC1 expected)")]
    NoKey,
    #[error("tls.key is encrypted; Portcullis needs an unencrypted key")]
    EncryptedKey,
    #[error("tls.key is not valid PEM: {0}")]
    BadKeyPem(String),
    #[error(
        "tls.key cannot be used: the certificate's RSA key has {0} bits, and handshakes cannot be signed with RSA keys below 2048 bits"
    )]
    RsaKeyTooSmall(usize),
    #[error("tls.key cannot be used: {0}")]
    UnsupportedKey(String),
    #[error("tls.key does not match any certificate in tls.crt")]
    KeyMismatch,
}

/// Something about a certificate that clients may object to, but that does not stop Portcullis serving
/// it: the client's error then names the real problem. Reported, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CertWarning {
    /// A CA certificate (`CA:TRUE`) issued by another CA. Self-signed ones are what
    /// `openssl req -x509` makes and are not reported.
    CaCertificate,
    /// No DNS subjectAltName: browsers ignore the CN, so they reject it for every name.
    NoSubjectAltName,
    /// The certificate matching the key was not first, or the issuers did not follow it in order; it is
    /// served reordered (leaf, then each issuer).
    ChainOrder,
    /// Certificates in `tls.crt` that are not on the leaf's issuer path (their subjects); served after
    /// the chain, as given.
    UnrelatedCertificates(Vec<String>),
    /// extendedKeyUsage without serverAuth: clients refuse it for TLS servers.
    NoServerAuth,
    /// keyUsage without digitalSignature: clients refuse handshake signatures made with it.
    NoDigitalSignature,
    /// An Ed25519 key, which no major browser accepts in certificates.
    Ed25519Key,
}

impl fmt::Display for CertWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertWarning::CaCertificate => f.write_str(
                "the certificate is a CA certificate (basicConstraints CA:TRUE) issued by another CA; many clients refuse a CA certificate as a server certificate",
            ),
            CertWarning::NoSubjectAltName => f.write_str(
                "the certificate has no DNS subjectAltName; browsers ignore the common name and refuse it",
            ),
            CertWarning::ChainOrder => f.write_str(
                "tls.crt is not in order (the server certificate first, then each issuer); Portcullis sends it reordered",
            ),
            CertWarning::UnrelatedCertificates(subjects) => {
                // A bundle can hold hundreds; name a few.
                let shown: Vec<&str> = subjects.iter().take(3).map(String::as_str).collect();
                let more = if subjects.len() > 3 { "; …" } else { "" };
                write!(
                    f,
                    "tls.crt holds {} certificate(s) that are not issuers of the server certificate ({}{more}); they are sent after the chain",
                    subjects.len(),
                    shown.join("; ")
                )
            }
            CertWarning::NoServerAuth => f.write_str(
                "the certificate's extendedKeyUsage does not include serverAuth; clients refuse it for a TLS server",
            ),
            CertWarning::NoDigitalSignature => f.write_str(
                "the certificate's keyUsage does not include digitalSignature; clients refuse the handshake",
            ),
            CertWarning::Ed25519Key => f.write_str(
                "the certificate has an Ed25519 key; browsers do not support those, only some other clients do",
            ),
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
    /// What clients may object to; the certificate is served anyway.
    pub warnings: Vec<CertWarning>,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("LoadedCert")
            .field("dns_names", &self.dns_names)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("fingerprint", &self.fingerprint)
            .field("warnings", &self.warnings)
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
///
/// The server certificate is the one whose public key matches `tls.key`, wherever it is in `tls.crt`;
/// it is served first, followed by its issuers in order, then anything else `tls.crt` holds.
pub fn load_pem_with_ocsp(
    cert_pem: &[u8],
    key_pem: &[u8],
    ocsp: Option<&[u8]>,
    provider: &CryptoProvider,
) -> Result<LoadedCert, CertError> {
    use x509_parser::certificate::X509Certificate;
    use x509_parser::prelude::FromDer;
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::BadCertificatePem(pem_error(&e)))?;
    let first = chain.first().ok_or(CertError::NoCertificate)?;
    X509Certificate::from_der(first.as_ref())
        .map_err(|e| CertError::BadCertificate(e.to_string()))?;
    // Certificates after the first that do not parse are passed on as they are.
    let parsed: Vec<Option<Parsed<'_>>> = chain
        .iter()
        .map(|c| X509Certificate::from_der(c.as_ref()).ok().map(|(_, c)| c))
        .collect();

    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) if contains(key_pem, b"ENCRYPTED") => {
            return Err(CertError::EncryptedKey);
        }
        Err(pem::Error::NoItemsFound) => return Err(CertError::NoKey),
        Err(e) => return Err(CertError::BadKeyPem(pem_error(&e))),
    };
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| {
        // The leaf is not known yet; in a file in order it is the first certificate.
        match parsed[0].as_ref().and_then(small_rsa_bits) {
            Some(bits) => CertError::RsaKeyTooSmall(bits),
            None => CertError::UnsupportedKey(e.to_string()),
        }
    })?;

    let mut warnings = Vec::new();
    let leaf_index = match signing_key.public_key() {
        Some(spki) => parsed
            .iter()
            .position(|c| {
                c.as_ref()
                    .is_some_and(|c| c.public_key().raw == spki.as_ref())
            })
            .ok_or(CertError::KeyMismatch)?,
        // The provider cannot tell; trust the order given, as rustls does.
        None => 0,
    };
    let order = issuer_path(&parsed, leaf_index);
    if order.iter().enumerate().any(|(position, &i)| position != i) {
        warnings.push(CertWarning::ChainOrder);
    }
    let mut on_path = vec![false; chain.len()];
    for &i in &order {
        on_path[i] = true;
    }
    let unrelated: Vec<usize> = (0..chain.len()).filter(|&i| !on_path[i]).collect();
    if !unrelated.is_empty() {
        warnings.push(CertWarning::UnrelatedCertificates(
            unrelated
                .iter()
                .map(|&i| match &parsed[i] {
                    Some(c) => c.subject().to_string(),
                    None => "unparsable".to_string(),
                })
                .collect(),
        ));
    }
    let Some(leaf) = parsed[leaf_index].as_ref() else {
        return Err(CertError::KeyMismatch);
    };
    if leaf.is_ca() && (order.len() > 1 || !self_issued(leaf)) {
        warnings.push(CertWarning::CaCertificate);
    }
    let (dns_names, not_before, not_after) = inspect_leaf(leaf, &mut warnings);
    if signing_key.algorithm() == rustls::SignatureAlgorithm::ED25519 {
        warnings.push(CertWarning::Ed25519Key);
    }
    let fingerprint = sha256_hex(chain[leaf_index].as_ref());

    let served: Vec<CertificateDer<'static>> = order
        .iter()
        .chain(&unrelated)
        .map(|&i| chain[i].clone())
        .collect();
    let mut certified = CertifiedKey::new(served, signing_key);
    certified.ocsp = ocsp.filter(|r| !r.is_empty()).map(<[u8]>::to_vec);
    Ok(LoadedCert {
        key: Arc::new(certified),
        dns_names,
        not_before,
        not_after,
        fingerprint,
        warnings,
    })
}

type Parsed<'a> = x509_parser::certificate::X509Certificate<'a>;

/// Indices into `certs` of the leaf at `leaf` and then each issuer, up to the last one present.
fn issuer_path(certs: &[Option<Parsed<'_>>], leaf: usize) -> Vec<usize> {
    let mut path = vec![leaf];
    let mut used = vec![false; certs.len()];
    used[leaf] = true;
    let mut current = certs[leaf].as_ref();
    while let Some(cert) = current {
        let next = certs
            .iter()
            .enumerate()
            .find(|(i, c)| !used[*i] && c.as_ref().is_some_and(|c| issued_by(cert, c)));
        match next {
            Some((i, c)) => {
                path.push(i);
                used[i] = true;
                current = c.as_ref();
            }
            None => break,
        }
    }
    path
}

/// Whether `issuer` looks like the issuer of `cert`: its subject is `cert`'s issuer, with another key,
/// and the key identifiers agree where both are given. (Signatures are the client's to check.)
fn issued_by(cert: &Parsed<'_>, issuer: &Parsed<'_>) -> bool {
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && cert.public_key().raw != issuer.public_key().raw
        && match (authority_key_id(cert), subject_key_id(issuer)) {
            (Some(a), Some(s)) => a == s,
            _ => true,
        }
}

/// Whether `cert` names itself as its issuer (by name, and by key identifier where given).
fn self_issued(cert: &Parsed<'_>) -> bool {
    cert.issuer().as_raw() == cert.subject().as_raw()
        && match (authority_key_id(cert), subject_key_id(cert)) {
            (Some(a), Some(s)) => a == s,
            _ => true,
        }
}

fn authority_key_id<'a>(cert: &'a Parsed<'_>) -> Option<&'a [u8]> {
    use x509_parser::extensions::ParsedExtension;
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0)
            }
            _ => None,
        })
}

fn subject_key_id<'a>(cert: &'a Parsed<'_>) -> Option<&'a [u8]> {
    use x509_parser::extensions::ParsedExtension;
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0),
            _ => None,
        })
}

/// The size of a certificate's RSA key when it is below 2048 bits.
fn small_rsa_bits(cert: &Parsed<'_>) -> Option<usize> {
    use x509_parser::public_key::PublicKey;
    let Ok(PublicKey::RSA(rsa)) = cert.public_key().parsed() else {
        return None;
    };
    let modulus = rsa.modulus;
    let significant = modulus.iter().position(|&b| b != 0)?;
    let bits = (modulus.len() - significant) * 8 - modulus[significant].leading_zeros() as usize;
    (bits < 2048).then_some(bits)
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

/// The leaf's DNS names and validity, noting what clients may object to in `warnings`.
fn inspect_leaf(cert: &Parsed<'_>, warnings: &mut Vec<CertWarning>) -> (Vec<String>, i64, i64) {
    use x509_parser::prelude::*;
    if let Ok(Some(eku)) = cert.extended_key_usage()
        && !eku.value.server_auth
        && !eku.value.any
    {
        warnings.push(CertWarning::NoServerAuth);
    }
    if let Ok(Some(ku)) = cert.key_usage()
        && !ku.value.digital_signature()
    {
        warnings.push(CertWarning::NoDigitalSignature);
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
        warnings.push(CertWarning::NoSubjectAltName);
        // Still the names to route by when an Ingress lists no TLS hosts.
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let validity = cert.validity();
    (
        names,
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    )
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

    /// Forgets one Secret no configuration uses any more (the incremental form of [`Self::retain`]).
    pub fn forget(&mut self, id: &NamespacedName) {
        self.entries.remove(id);
    }
}

/// One entry of a Secret (manifests have `stringData` folded into `data` when they are read).
pub fn secret_entry<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.as_slice())
}

/// `tls.crt` and `tls.key` of a Secret.
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

    /// A leaf for `name` issued by a fresh CA: (leaf PEM, leaf key PEM, CA PEM).
    fn issued(
        name: &str,
        tweak: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> (String, String, String) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        tweak(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &ca).unwrap();
        (leaf.pem(), key.serialize_pem(), ca.pem())
    }

    fn served_chain(cert: &LoadedCert) -> Vec<Vec<u8>> {
        cert.key.cert.iter().map(|c| c.to_vec()).collect()
    }

    fn ders(pem: &str) -> Vec<Vec<u8>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.unwrap().to_vec())
            .collect()
    }

    #[test]
    fn a_self_signed_ca_certificate_is_served_without_warning() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let crt = params.self_signed(&key).unwrap().pem();
        let cert = load_pem(crt.as_bytes(), key.serialize_pem().as_bytes(), &provider()).unwrap();
        assert!(cert.warnings.is_empty(), "{:?}", cert.warnings);
        assert!(cert.covers("a.example.com"));
    }

    #[test]
    fn a_ca_certificate_issued_by_another_ca_is_served_with_a_warning() {
        let (leaf, key, ca) = issued("a.example.com", |p| {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        });
        let cert = load_pem(
            format!("{leaf}{ca}").as_bytes(),
            key.as_bytes(),
            &provider(),
        )
        .unwrap();
        assert_eq!(cert.warnings, [CertWarning::CaCertificate]);
    }

    #[test]
    fn the_leaf_is_found_by_its_key_and_the_chain_served_in_order() {
        let (leaf, key, ca) = issued("a.example.com", |_| {});
        let (stray, _) = self_signed(&["stray.example.com"]);
        let p = provider();
        let ordered = load_pem(format!("{leaf}{ca}").as_bytes(), key.as_bytes(), &p).unwrap();
        assert!(ordered.warnings.is_empty(), "{:?}", ordered.warnings);
        assert_eq!(served_chain(&ordered), [ders(&leaf), ders(&ca)].concat());

        let reversed = load_pem(format!("{ca}{leaf}").as_bytes(), key.as_bytes(), &p).unwrap();
        assert_eq!(reversed.warnings, [CertWarning::ChainOrder]);
        assert_eq!(served_chain(&reversed), served_chain(&ordered));
        assert_eq!(reversed.fingerprint, ordered.fingerprint);

        let cluttered =
            load_pem(format!("{stray}{leaf}{ca}").as_bytes(), key.as_bytes(), &p).unwrap();
        assert_eq!(cluttered.warnings.len(), 2, "{:?}", cluttered.warnings);
        assert!(matches!(
            &cluttered.warnings[1],
            CertWarning::UnrelatedCertificates(subjects) if subjects.len() == 1
        ));
        assert_eq!(
            served_chain(&cluttered),
            [ders(&leaf), ders(&ca), ders(&stray)].concat(),
            "unrelated certificates go last"
        );
    }

    #[test]
    fn names_and_usages_clients_refuse_are_warned_about() {
        let p = provider();
        let warnings = |tweak: fn(&mut rcgen::CertificateParams)| {
            let (leaf, key, _) = issued("a.example.com", tweak);
            load_pem(leaf.as_bytes(), key.as_bytes(), &p)
                .unwrap()
                .warnings
        };
        assert_eq!(
            warnings(|p| {
                p.subject_alt_names.clear();
                p.distinguished_name
                    .push(rcgen::DnType::CommonName, "a.example.com");
            }),
            [CertWarning::NoSubjectAltName]
        );
        assert_eq!(
            warnings(|p| p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]),
            [CertWarning::NoServerAuth]
        );
        assert_eq!(
            warnings(|p| p.key_usages = vec![rcgen::KeyUsagePurpose::KeyAgreement]),
            [CertWarning::NoDigitalSignature]
        );
        assert_eq!(
            warnings(|p| {
                p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
                p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
            }),
            []
        );
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
    fn type_is_checked() {
        let (crt, key) = self_signed(&["a.example.com"]);
        let mut s = secret(&crt, &key);
        assert!(secret_parts(&s).is_ok());
        s.type_ = Some("Opaque".into());
        assert_eq!(
            secret_parts(&s).unwrap_err(),
            CertError::WrongType("Opaque".into())
        );
    }
}
