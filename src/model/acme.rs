//! The certificates ACME should obtain: each `spec.tls[]` entry of an Ingress that opts in with
//! `portcullis.io/acme`, resolved against the configured issuers. Entries that cannot be ordered are
//! problems; the rest of the Ingress is served as usual.

use k8s_openapi::api::core::v1::Secret;

use super::annotations::acme::AcmeAnnotation;
use super::{NamespacedName, ObjectRef, Problem, ProblemKind};
use crate::settings::AcmeSettings;

/// Label on the Secrets Portcullis writes; a Secret without it is never overwritten.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "portcullis";
/// Annotations on those Secrets: the issuer, the names, the expiry (Unix seconds) and the ARI
/// identifier (RFC 9773) of the certificate.
pub const ISSUER_ANNOTATION: &str = "portcullis.io/acme-issuer";
pub const NAMES_ANNOTATION: &str = "portcullis.io/acme-names";
pub const NOT_AFTER_ANNOTATION: &str = "portcullis.io/acme-not-after";
pub const ARI_ID_ANNOTATION: &str = "portcullis.io/acme-ari-id";

/// One certificate to obtain and keep renewed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WantedCertificate {
    /// Where it is served from: the entry's `secretName` in the Ingress's namespace.
    pub secret: NamespacedName,
    /// Exactly the entry's hosts (lower-case, no wildcards), in the Ingress's order.
    pub hosts: Vec<String>,
    /// A name in `acme.issuers`.
    pub issuer: String,
    /// The Ingress that asked for it, for reports.
    pub ingress: NamespacedName,
}

/// Whether Portcullis wrote this Secret (so it may replace it).
pub fn is_managed(secret: &Secret) -> bool {
    let labelled = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY);
    let annotated = secret
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ISSUER_ANNOTATION));
    labelled && annotated
}

/// The wanted certificate for one entry (an Ingress's `spec.tls[i]`, a Gateway's HTTPS listener;
/// `at` names it), or why none is ordered. `existing` is the entry's Secret if it exists.
pub(super) fn resolve(
    acme: &AcmeAnnotation,
    settings: &AcmeSettings,
    object: &ObjectRef,
    at: &str,
    secret: NamespacedName,
    hosts: &[String],
    existing: Option<&Secret>,
) -> Result<WantedCertificate, Problem> {
    let problem = |message: String| {
        Problem::object(
            object.clone(),
            ProblemKind::AcmeNotOrdered,
            format!("{at}: {message}"),
        )
    };
    if acme.cert_manager {
        return Err(problem(
            "the Ingress has cert-manager.io annotations, so cert-manager owns its certificates; Portcullis orders none".into(),
        ));
    }
    let issuer = match (&acme.issuer, &settings.default_issuer) {
        (Some(name), _) | (None, Some(name)) => name,
        (None, None) => {
            return Err(problem(
                "portcullis.io/acme is set but the configuration has no acme.default-issuer".into(),
            ));
        }
    };
    if !settings.issuers.contains_key(issuer) {
        return Err(problem(format!(
            "issuer {issuer:?} is not one of the configuration's acme.issuers; no certificate is ordered"
        )));
    }
    if hosts.is_empty() {
        return Err(problem(
            "has no hosts: ACME needs the names to put in the certificate".into(),
        ));
    }
    if let Some(wildcard) = hosts.iter().find(|h| h.starts_with("*.")) {
        return Err(problem(format!(
            "wildcard host {wildcard:?} cannot be validated by HTTP-01 or TLS-ALPN-01; no certificate is ordered for this entry"
        )));
    }
    if let Some(existing) = existing
        && !is_managed(existing)
    {
        return Err(problem(format!(
            "Secret {secret} exists and was not created by Portcullis; it is not overwritten and keeps serving"
        )));
    }
    Ok(WantedCertificate {
        secret,
        hosts: hosts.to_vec(),
        issuer: issuer.clone(),
        ingress: NamespacedName::new(&object.namespace, &object.name),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::Kind;
    use crate::settings::Settings;

    fn settings() -> AcmeSettings {
        Settings::from_yaml(
            "acme:\n  default-issuer: le\n  issuers:\n    le: {directory: https://ca.example/dir}\n",
        )
        .unwrap()
        .acme
    }

    fn resolve_with(
        acme: &AcmeAnnotation,
        hosts: &[&str],
        existing: Option<&Secret>,
    ) -> Result<WantedCertificate, Problem> {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        resolve(
            acme,
            &settings(),
            &ObjectRef::new(Kind::Ingress, "shop", "web"),
            "spec.tls[0]",
            NamespacedName::new("shop", "web-tls"),
            &hosts,
            existing,
        )
    }

    const DEFAULT: AcmeAnnotation = AcmeAnnotation {
        issuer: None,
        cert_manager: false,
    };

    #[test]
    fn an_entry_is_wanted_with_exactly_its_hosts_from_the_default_issuer() {
        let w = resolve_with(&DEFAULT, &["a.example", "b.example"], None).unwrap();
        assert_eq!(w.hosts, ["a.example", "b.example"]);
        assert_eq!(w.issuer, "le");
        assert_eq!(w.ingress, NamespacedName::new("shop", "web"));
    }

    #[test]
    fn what_cannot_be_ordered_is_a_problem_naming_why() {
        let message = |r: Result<WantedCertificate, Problem>| {
            let p = r.unwrap_err();
            assert_eq!(p.kind, ProblemKind::AcmeNotOrdered);
            p.message
        };
        assert!(message(resolve_with(&DEFAULT, &["*.example"], None)).contains("wildcard"));
        assert!(message(resolve_with(&DEFAULT, &[], None)).contains("no hosts"));
        let unknown = AcmeAnnotation {
            issuer: Some("zerossl".into()),
            ..DEFAULT
        };
        assert!(message(resolve_with(&unknown, &["a.example"], None)).contains("\"zerossl\""));
        let theirs = AcmeAnnotation {
            cert_manager: true,
            ..DEFAULT
        };
        assert!(message(resolve_with(&theirs, &["a.example"], None)).contains("cert-manager"));
    }

    #[test]
    fn only_secrets_portcullis_wrote_may_be_replaced() {
        let mut foreign = Secret::default();
        let e = resolve_with(&DEFAULT, &["a.example"], Some(&foreign)).unwrap_err();
        assert!(e.message.contains("not overwritten"), "{e}");
        foreign.metadata.labels = Some(BTreeMap::from([(
            MANAGED_BY_LABEL.to_string(),
            MANAGED_BY.to_string(),
        )]));
        foreign.metadata.annotations = Some(BTreeMap::from([(
            ISSUER_ANNOTATION.to_string(),
            "le".to_string(),
        )]));
        assert!(resolve_with(&DEFAULT, &["a.example"], Some(&foreign)).is_ok());
    }
}
