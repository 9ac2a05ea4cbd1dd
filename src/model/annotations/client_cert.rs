//! Client certificates (mutual TLS): `auth-tls-secret`, `auth-tls-verify-client`,
//! `auth-tls-verify-depth`, `auth-tls-pass-certificate-to-upstream`, `auth-tls-error-page` and
//! `auth-tls-match-cn`, and their resolution against the named Secret (`ca.crt`, optional `ca.crl`)
//! into the policy a route enforces. Anything invalid or unresolvable fails closed: the Ingress's
//! routes answer 503 rather than serve without the protection.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::{AnnotationError, Reader};
use crate::tls::certs::secret_entry;
use crate::vocab::{NamespacedName, parse_reference};

/// The annotation names of this family (without prefix).
pub const NAMES: &[&str] = &[
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-error-page",
    "auth-tls-match-cn",
];

/// The Secret keys holding the trusted CA certificates and the optional revocation list.
pub const CA_KEY: &str = "ca.crt";
pub const CRL_KEY: &str = "ca.crl";

/// The longest chain `auth-tls-verify-depth` may ask for; deeper chains are a misconfiguration.
const MAX_DEPTH: usize = 10;

/// `auth-tls-verify-client` (`off` means no client-certificate policy at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerifyClient {
    /// A valid certificate is required (the default).
    On,
    /// A certificate may be left out; one that is sent must be valid.
    Optional,
    /// A certificate may be left out or fail verification; the result only goes upstream.
    OptionalNoCa,
}

/// What the annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientCertAnnotation {
    Verify(ClientCertSettings),
    /// The annotations are invalid (already reported).
    Invalid,
}

/// The settings of a valid `auth-tls-*` family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCertSettings {
    /// `None`: the Ingress's namespace.
    pub secret_namespace: Option<String>,
    pub secret_name: String,
    pub verify: VerifyClient,
    /// Certificates in the chain, the client's own included: 1 means issued directly by a CA of `ca.crt`.
    pub depth: usize,
    pub pass_certificate: bool,
    /// Where a failed verification is redirected instead of answering 400.
    pub error_page: Option<String>,
    /// A regular expression the subject DN must match (else 403).
    pub match_cn: Option<String>,
}

/// What a route enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCertPolicy {
    Enforce(Arc<ClientAuth>),
    /// No usable CA, or the Ingresses of a host disagree: every request is answered 503.
    Unavailable,
}

/// A resolved client-certificate policy, ready to check requests against.
pub struct ClientAuth {
    pub settings: ClientCertSettings,
    /// webpki verification against the Secret's CA certificates and revocation lists.
    pub verifier: Arc<dyn ClientCertVerifier>,
    /// `auth-tls-match-cn`, compiled.
    pub match_cn: Option<regex::Regex>,
    /// `auth-tls-error-page` as a `Location` value.
    pub error_page: Option<HeaderValue>,
    /// The Secret's CA material, to tell two policies apart.
    material: Vec<u8>,
}

impl PartialEq for ClientAuth {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings && self.material == other.material
    }
}

impl Eq for ClientAuth {}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

pub(super) fn parse(r: &mut Reader<'_>) -> Option<ClientCertAnnotation> {
    let invalid = |r: &mut Reader<'_>, key: String, reason: &str| {
        r.errors.push(AnnotationError::Invalid {
            key,
            reason: format!("{reason}; the Ingress's routes answer 503"),
        });
        Some(ClientCertAnnotation::Invalid)
    };
    let verify = match r.get("auth-tls-verify-client") {
        None => Some(VerifyClient::On),
        Some((_, "on")) => Some(VerifyClient::On),
        Some((_, "off")) => None,
        Some((_, "optional")) => Some(VerifyClient::Optional),
        Some((_, "optional_no_ca")) => Some(VerifyClient::OptionalNoCa),
        Some((key, other)) => {
            let reason = format!("{other:?} is not on, off, optional or optional_no_ca");
            return invalid(r, key, &reason);
        }
    };
    let Some((secret_key, secret)) = r.get("auth-tls-secret") else {
        // `off` alone asks for nothing; any other setting without a CA cannot be honoured.
        let (key, _) = NAMES
            .iter()
            .filter(|n| verify.is_some() || **n != "auth-tls-verify-client")
            .find_map(|n| r.get(n))?;
        return invalid(r, key, "is set without auth-tls-secret");
    };
    let verify = verify?;
    let Some((secret_namespace, secret_name)) = parse_reference(secret) else {
        let reason = format!("{secret:?} is not NAME or NAMESPACE/NAME");
        return invalid(r, secret_key, &reason);
    };
    let depth = match r.get("auth-tls-verify-depth") {
        None => 1,
        Some((key, v)) => match v.parse::<usize>() {
            Ok(d) if (1..=MAX_DEPTH).contains(&d) => d,
            _ => {
                let reason = format!("{v:?} is not a chain depth from 1 to {MAX_DEPTH}");
                return invalid(r, key, &reason);
            }
        },
    };
    let pass_certificate = match r.get("auth-tls-pass-certificate-to-upstream") {
        None => false,
        Some((key, v)) => match super::parse_bool(v) {
            Ok(b) => b,
            Err(reason) => return invalid(r, key, &reason),
        },
    };
    let error_page = match r.get("auth-tls-error-page") {
        None => None,
        Some((key, v)) => match error_page(v) {
            Some(_) => Some(v.to_string()),
            None => {
                let reason = format!("{v:?} is not an absolute http:// or https:// URL");
                return invalid(r, key, &reason);
            }
        },
    };
    let match_cn = match r.get("auth-tls-match-cn") {
        None => None,
        Some((key, v)) => match regex::Regex::new(v) {
            Ok(_) if !v.is_empty() => Some(v.to_string()),
            _ => {
                let reason = format!("{v:?} is not a regular expression");
                return invalid(r, key, &reason);
            }
        },
    };
    Some(ClientCertAnnotation::Verify(ClientCertSettings {
        secret_namespace,
        secret_name,
        verify,
        depth,
        pass_certificate,
        error_page,
        match_cn,
    }))
}

/// The `Location` of the error page, if it is an absolute http(s) URL.
fn error_page(url: &str) -> Option<HeaderValue> {
    let uri: http::Uri = url.parse().ok()?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => HeaderValue::from_str(url).ok(),
        _ => None,
    }
}

/// The Secret an Ingress's client-certificate settings name, for the cluster source to watch it.
pub fn referenced_secret(
    annotations: Option<&BTreeMap<String, String>>,
    ingress_namespace: &str,
) -> Option<NamespacedName> {
    let all = annotations?;
    if !all.keys().any(|k| k.ends_with("auth-tls-secret")) {
        return None;
    }
    let mut r = Reader {
        all,
        errors: Vec::new(),
    };
    match parse(&mut r)? {
        ClientCertAnnotation::Verify(s)
            if s.secret_namespace
                .as_deref()
                .is_none_or(|ns| ns == ingress_namespace) =>
        {
            Some(NamespacedName::new(ingress_namespace, s.secret_name))
        }
        _ => None,
    }
}

/// Resolves the annotations against the Secret (`lookup` by namespace and name); the error is the
/// reason the routes answer 503, naming the Secret.
pub fn resolve<'s>(
    annotation: &ClientCertAnnotation,
    ingress_namespace: &str,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    lookup: impl FnOnce(&str, &str) -> Option<&'s Secret>,
) -> Result<ClientCertPolicy, ResolveError> {
    let ClientCertAnnotation::Verify(settings) = annotation else {
        return Ok(ClientCertPolicy::Unavailable);
    };
    let namespace = settings
        .secret_namespace
        .as_deref()
        .unwrap_or(ingress_namespace);
    let id = NamespacedName::new(namespace, settings.secret_name.as_str());
    if namespace != ingress_namespace {
        return Err(ResolveError::OtherNamespace(id));
    }
    let secret =
        lookup(namespace, &settings.secret_name).ok_or(ResolveError::Missing(id.clone()))?;
    let invalid = |reason: String| ResolveError::Invalid(id.clone(), reason);
    let ca =
        secret_entry(secret, CA_KEY).ok_or_else(|| invalid(format!("has no key {CA_KEY:?}")))?;
    let mut roots = rustls::RootCertStore::empty();
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(ca) {
        let cert = cert.map_err(|e| invalid(format!("key {CA_KEY:?} is not PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("key {CA_KEY:?} holds an unusable certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid(format!("key {CA_KEY:?} holds no certificate")));
    }
    let mut material = ca.to_vec();
    let mut crls = Vec::new();
    if let Some(crl) = secret_entry(secret, CRL_KEY) {
        for der in CertificateRevocationListDer::pem_slice_iter(crl) {
            crls.push(der.map_err(|e| invalid(format!("key {CRL_KEY:?} is not PEM: {e}")))?);
        }
        if crls.is_empty() {
            return Err(invalid(format!("key {CRL_KEY:?} holds no revocation list")));
        }
        material.extend_from_slice(crl);
    }
    // Missing or failed certificates are answered over HTTP (400, or the error page) as nginx does,
    // so the verifier itself never requires one; the request step decides. A revocation list past its
    // next update fails verification, as OpenSSL's check in nginx does.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .enforce_revocation_expiration()
        .allow_unauthenticated()
        .build()
        .map_err(|e| invalid(format!("cannot verify clients with it: {e}")))?;
    Ok(ClientCertPolicy::Enforce(Arc::new(ClientAuth {
        match_cn: settings
            .match_cn
            .as_deref()
            .and_then(|m| regex::Regex::new(m).ok()),
        error_page: settings.error_page.as_deref().and_then(error_page),
        settings: settings.clone(),
        verifier,
        material,
    })))
}

/// Why an Ingress's client-certificate settings cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("auth-tls-secret {0} does not exist; the Ingress's routes answer 503")]
    Missing(NamespacedName),
    #[error("auth-tls-secret {0}: {1}; the Ingress's routes answer 503")]
    Invalid(NamespacedName, String),
    /// Consistent with `auth-secret`: an Ingress uses Secrets of its own namespace only.
    #[error(
        "auth-tls-secret {0} is in another namespace than the Ingress, which is not allowed; the Ingress's routes answer 503"
    )]
    OtherNamespace(NamespacedName),
}

#[cfg(test)]
mod tests;
