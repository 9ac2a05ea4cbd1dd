//! TLS to the backends (`backend-protocol: HTTPS` or `GRPCS`): `proxy-ssl-secret` (CA `ca.crt`,
//! optional client `tls.crt`/`tls.key`), `proxy-ssl-verify`, `proxy-ssl-verify-depth`,
//! `proxy-ssl-name`, `proxy-ssl-server-name` and `proxy-ssl-protocols`, and their resolution against
//! the Secret into the client configuration a route's connections use.
//!
//! Without `proxy-ssl-verify: "on"` backends' certificates are not verified, as before (and as
//! ingress-nginx's default); the Secret's client certificate is still presented. With it, anything
//! invalid or unresolvable fails closed: the Ingress's routes answer 503.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::Reader;
use crate::tls::certs::secret_entry;
use crate::vocab::{NamespacedName, parse_reference};

/// The annotation names of this family (without prefix).
pub const NAMES: &[&str] = &[
    "proxy-ssl-secret",
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "proxy-ssl-name",
    "proxy-ssl-server-name",
    "proxy-ssl-protocols",
];

/// The longest chain `proxy-ssl-verify-depth` may ask for.
const MAX_DEPTH: usize = 10;

/// What the annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProxySslAnnotation {
    Settings(ProxySslSettings),
    /// A value is invalid (already reported) and verification was asked for: 503.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxySslSettings {
    /// `(namespace, name)`; the namespace `None` means the Ingress's.
    pub secret: Option<(Option<String>, String)>,
    pub verify: bool,
    /// Certificates in the chain above the backend's own: 1 means issued directly by a CA of `ca.crt`.
    pub depth: usize,
    /// The name the certificate must carry (and the SNI sent, with `server_name`).
    pub name: Option<String>,
    pub server_name: bool,
    /// TLS 1.2 and/or 1.3.
    pub tls12: bool,
    pub tls13: bool,
}

pub(super) fn parse(r: &mut Reader<'_>) -> Option<ProxySslAnnotation> {
    if !NAMES.iter().any(|n| r.get(n).is_some()) {
        return None;
    }
    let errors = r.errors.len();
    let secret = r.parse("proxy-ssl-secret", |v| {
        parse_reference(v).ok_or_else(|| format!("{v:?} is not NAME or NAMESPACE/NAME"))
    });
    let verify = r.parse("proxy-ssl-verify", on_off);
    let depth = r.parse("proxy-ssl-verify-depth", |v| match v.parse::<usize>() {
        Ok(d) if (1..=MAX_DEPTH).contains(&d) => Ok(d),
        _ => Err(format!("{v:?} is not a depth from 1 to {MAX_DEPTH}")),
    });
    let name = r.parse("proxy-ssl-name", |v| {
        ServerName::try_from(v)
            .map(|_| v.to_ascii_lowercase())
            .map_err(|_| format!("{v:?} is not a host name"))
    });
    let server_name = r.parse("proxy-ssl-server-name", on_off);
    let protocols = r.parse("proxy-ssl-protocols", protocols);
    let invalid = r.errors.len() > errors;
    // An unreadable `proxy-ssl-verify` may have meant "on".
    let verify_asked = r
        .get("proxy-ssl-verify")
        .is_some_and(|(_, v)| !v.eq_ignore_ascii_case("off"));
    if invalid && verify_asked {
        return Some(ProxySslAnnotation::Invalid);
    }
    let (tls12, tls13) = protocols.unwrap_or((true, true));
    Some(ProxySslAnnotation::Settings(ProxySslSettings {
        secret,
        verify: verify.unwrap_or(false),
        depth: depth.unwrap_or(1),
        name,
        server_name: server_name.unwrap_or(false),
        tls12,
        tls13,
    }))
}

/// nginx's `on` / `off`.
fn on_off(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{v:?} is not \"on\" or \"off\"")),
    }
}

/// `TLSv1.2 TLSv1.3`; the older versions nginx knows are not offered (rustls has none), and a list
/// of only those is invalid.
fn protocols(v: &str) -> Result<(bool, bool), String> {
    let (mut tls12, mut tls13) = (false, false);
    for token in v.split_whitespace() {
        match token {
            "TLSv1.2" => tls12 = true,
            "TLSv1.3" => tls13 = true,
            "SSLv2" | "SSLv3" | "TLSv1" | "TLSv1.1" => {}
            other => return Err(format!("{other:?} is not a TLS version like TLSv1.2")),
        }
    }
    match tls12 || tls13 {
        true => Ok((tls12, tls13)),
        false => Err(format!("{v:?} names neither TLSv1.2 nor TLSv1.3")),
    }
}

/// The Secret an Ingress's backend-TLS settings name, for the cluster source to watch it.
pub fn referenced_secret(
    annotations: Option<&BTreeMap<String, String>>,
    ingress_namespace: &str,
) -> Option<NamespacedName> {
    let all = annotations?;
    let mut r = Reader {
        all,
        errors: Vec::new(),
    };
    match parse(&mut r)? {
        ProxySslAnnotation::Settings(ProxySslSettings {
            secret: Some((ns, name)),
            ..
        }) if ns.as_deref().is_none_or(|ns| ns == ingress_namespace) => {
            Some(NamespacedName::new(ingress_namespace, name))
        }
        _ => None,
    }
}

/// How a route's connections to its backends are made over TLS.
#[derive(Clone)]
pub struct BackendTls {
    pub config: Arc<ClientConfig>,
    /// The name verified (and sent as SNI if asked); `None`: as before, the endpoint's address.
    pub name: Option<ServerName<'static>>,
    /// Tells configurations apart (equal settings and Secret contents, equal id), to share pools.
    pub id: u64,
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for BackendTls {}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What a route uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendTlsPolicy {
    Use(BackendTls),
    /// Verification was asked for and cannot be done: every request is answered 503.
    Unavailable,
}

/// Why an Ingress's backend-TLS settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("proxy-ssl-secret {0} does not exist")]
    Missing(NamespacedName),
    #[error("proxy-ssl-secret {0}: {1}")]
    Invalid(NamespacedName, String),
    #[error("proxy-ssl-secret {0} is in another namespace than the Ingress, which is not allowed")]
    OtherNamespace(NamespacedName),
    #[error("proxy-ssl-verify is on without proxy-ssl-secret (the CA to verify with)")]
    NoSecret,
    #[error(
        "proxy-ssl-verify is on without proxy-ssl-name (the name the backend's certificate must carry)"
    )]
    NoName,
}

/// Resolves the settings against the Secret (`lookup` by namespace and name).
pub fn resolve<'s>(
    settings: &ProxySslSettings,
    ingress_namespace: &str,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    lookup: impl FnOnce(&str, &str) -> Option<&'s Secret>,
) -> Result<BackendTls, ResolveError> {
    let mut id = DefaultHasher::new();
    settings.hash(&mut id);
    let secret = match &settings.secret {
        None => None,
        Some((ns, name)) => {
            let namespace = ns.as_deref().unwrap_or(ingress_namespace);
            let secret_id = NamespacedName::new(namespace, name.as_str());
            if namespace != ingress_namespace {
                return Err(ResolveError::OtherNamespace(secret_id));
            }
            let secret = lookup(namespace, name).ok_or(ResolveError::Missing(secret_id.clone()))?;
            Some((secret_id, secret))
        }
    };
    let mut versions = Vec::new();
    if settings.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if settings.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| {
            ResolveError::Invalid(NamespacedName::new(ingress_namespace, ""), e.to_string())
        })?;
    let name = match &settings.name {
        Some(n) => Some(
            ServerName::try_from(n.clone())
                .map_err(|_| ResolveError::NoName)?
                .to_owned(),
        ),
        None if settings.verify => return Err(ResolveError::NoName),
        None => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (&secret, settings.verify) {
        (Some((secret_id, secret)), true) => {
            let invalid = |reason: String| ResolveError::Invalid(secret_id.clone(), reason);
            let ca = secret_entry(secret, "ca.crt")
                .ok_or_else(|| invalid("has no key \"ca.crt\"".into()))?;
            ca.hash(&mut id);
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| invalid(format!("key \"ca.crt\" is not PEM: {e}")))?;
                roots.add(cert).map_err(|e| {
                    invalid(format!("key \"ca.crt\" holds an unusable certificate: {e}"))
                })?;
            }
            if roots.is_empty() {
                return Err(invalid("key \"ca.crt\" holds no certificate".into()));
            }
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| invalid(format!("cannot verify backends with it: {e}")))?;
            Arc::new(Depth {
                inner,
                depth: settings.depth,
            })
        }
        (None, true) => return Err(ResolveError::NoSecret),
        (_, false) => Arc::new(crate::tls::AcceptAnyCertificate(provider.clone())),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let client_pair = secret.as_ref().and_then(|(secret_id, secret)| {
        let cert = secret_entry(secret, "tls.crt")?;
        let key = secret_entry(secret, "tls.key");
        Some((secret_id, cert, key))
    });
    let mut config = match client_pair {
        None => builder.with_no_client_auth(),
        Some((secret_id, cert, key)) => {
            let invalid = |reason: String| ResolveError::Invalid(secret_id.clone(), reason);
            let key = key.ok_or_else(|| invalid("has \"tls.crt\" but no \"tls.key\"".into()))?;
            cert.hash(&mut id);
            key.hash(&mut id);
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("key \"tls.crt\" is not PEM: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|_| invalid("key \"tls.key\" holds no usable private key".into()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid(format!("\"tls.crt\" and \"tls.key\": {e}")))?
        }
    };
    config.enable_sni = settings.server_name;
    Ok(BackendTls {
        config: Arc::new(config),
        name,
        id: id.finish(),
    })
}

/// webpki has no depth setting: only `depth - 1` of the backend's intermediates are used, which
/// limits the chain as nginx's `proxy_ssl_verify_depth` does.
#[derive(Debug)]
struct Depth {
    inner: Arc<WebPkiServerVerifier>,
    depth: usize,
}

impl ServerCertVerifier for Depth {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let used = &intermediates[..intermediates.len().min(self.depth.saturating_sub(1))];
        self.inner
            .verify_server_cert(end_entity, used, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{one_error, parse_nginx_map};
    use super::*;
    use crate::model::annotations::AnnotationError;

    fn settings(pairs: &[(&str, &str)]) -> (Option<ProxySslAnnotation>, Vec<AnnotationError>) {
        let (a, errors) = parse_nginx_map(pairs);
        (a.proxy_ssl, errors)
    }

    #[test]
    fn absent_means_no_settings() {
        assert_eq!(settings(&[]).0, None);
    }

    #[test]
    fn values_are_read_with_nginx_defaults() {
        let (s, errors) = settings(&[
            ("proxy-ssl-secret", "ns/backend-ca"),
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-name", "API.internal"),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let Some(ProxySslAnnotation::Settings(s)) = s else {
            panic!("{s:?}")
        };
        assert_eq!(s.secret, Some((Some("ns".into()), "backend-ca".into())));
        assert!(s.verify && !s.server_name && s.tls12 && s.tls13);
        assert_eq!((s.depth, s.name.as_deref()), (1, Some("api.internal")));
        let (s, _) = settings(&[
            ("proxy-ssl-server-name", "on"),
            ("proxy-ssl-protocols", "TLSv1.1 TLSv1.3"),
            ("proxy-ssl-verify-depth", "3"),
        ]);
        let Some(ProxySslAnnotation::Settings(s)) = s else {
            panic!("{s:?}")
        };
        assert!(s.server_name && !s.tls12 && s.tls13 && !s.verify);
        assert_eq!(s.depth, 3);
    }

    #[test]
    fn invalid_values_with_verify_on_fail_closed() {
        for (k, v) in [
            ("proxy-ssl-verify-depth", "0"),
            ("proxy-ssl-name", "not a name"),
            ("proxy-ssl-protocols", "TLSv1"),
            ("proxy-ssl-secret", "a/b/c"),
            ("proxy-ssl-server-name", "yes"),
        ] {
            let (s, errors) = settings(&[("proxy-ssl-verify", "on"), (k, v)]);
            assert_eq!(s, Some(ProxySslAnnotation::Invalid), "{k}: {v}");
            assert_eq!(errors.len(), 1, "{errors:?}");
        }
        let (s, errors) = settings(&[("proxy-ssl-verify", "maybe")]);
        one_error(&errors, "not \"on\" or \"off\"");
        assert_eq!(s, Some(ProxySslAnnotation::Invalid), "it may have meant on");
        let (s, errors) = settings(&[("proxy-ssl-verify", "off"), ("proxy-ssl-name", "a b")]);
        one_error(&errors, "not a host name");
        assert!(matches!(s, Some(ProxySslAnnotation::Settings(s)) if s.name.is_none()));
    }
}
