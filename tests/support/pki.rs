//! Certificates made for one test run (rcgen), and what a test needs to recognise them on the wire.

use rustls::pki_types::CertificateDer;

/// A certificate with its key, both PEM, as they go into a `kubernetes.io/tls` Secret.
#[derive(Clone)]
pub struct TestCert {
    /// `tls.crt`: the leaf, then any intermediates.
    pub chain_pem: String,
    /// `tls.key` (PKCS#8 unless converted).
    pub key_pem: String,
    /// The leaf as the server must present it.
    pub leaf: CertificateDer<'static>,
    /// The issuing CA, when the leaf is not self-signed: what a client trusts.
    pub ca: Option<CertificateDer<'static>>,
}

impl std::fmt::Debug for TestCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCert")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl TestCert {
    /// A self-signed ECDSA P-256 certificate for `names` (DNS names, `*.` wildcards allowed).
    pub fn self_signed(names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names).expect("rcgen self-signed");
        TestCert {
            chain_pem: generated.cert.pem(),
            key_pem: generated.signing_key.serialize_pem(),
            leaf: generated.cert.der().clone(),
            ca: None,
        }
    }

    /// A self-signed certificate for `names` with a key for `alg` (e.g. `rcgen::PKCS_RSA_SHA256`, the
    /// RSA 2048 certificates the upstream conformance suite generates).
    pub fn self_signed_with(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> TestCert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Portcullis test");
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        TestCert {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            leaf: cert.der().clone(),
            ca: None,
        }
    }

    /// A leaf for `names` issued by a fresh test CA, with `tls.crt` holding the full chain
    /// (leaf, then CA) and the key generated for `alg` (e.g. `rcgen::PKCS_RSA_SHA256`).
    pub fn ca_signed(names: &[&str], alg: &'static rcgen::SignatureAlgorithm) -> TestCert {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Portcullis test CA");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let leaf_params = rcgen::CertificateParams::new(names).expect("leaf params");
        let leaf_key = rcgen::KeyPair::generate_for(alg).expect("leaf key");
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca)
            .expect("leaf certificate");
        TestCert {
            chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
            key_pem: leaf_key.serialize_pem(),
            leaf: leaf.der().clone(),
            ca: Some(ca.der().clone()),
        }
    }

    /// Hex SHA-256 of the leaf: how tests tell certificates apart.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.leaf)
    }

    /// The certificate a client should trust to verify this one: the CA, or the leaf itself.
    pub fn trust_anchor(&self) -> CertificateDer<'static> {
        self.ca.clone().unwrap_or_else(|| self.leaf.clone())
    }
}

/// Hex SHA-256 of a DER certificate.
pub fn fingerprint(der: &CertificateDer<'_>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    hex(digest.as_ref())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The DNS names in a certificate's subjectAltName extension.
pub fn dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("parse the certificate");
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}
