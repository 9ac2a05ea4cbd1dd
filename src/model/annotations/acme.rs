//! ACME opt-in: `portcullis.io/acme: "true"` (the default issuer) and `portcullis.io/acme-issuer: NAME`.
//! Only under our own prefix: ingress-nginx has no such annotation, and `cert-manager.io/*` on the same
//! Ingress means cert-manager owns its certificates.

use super::{AnnotationError, OWN_PREFIX, Reader, parse_bool};

/// The annotation names of this family (without prefix); read under `portcullis.io/` only.
pub const NAMES: &[&str] = &["acme", "acme-issuer"];

/// Annotations under this prefix mean cert-manager's ingress-shim orders for the Ingress.
pub const CERT_MANAGER_PREFIX: &str = "cert-manager.io/";

/// What an Ingress asks of ACME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeAnnotation {
    /// `None`: the configuration's `acme.default-issuer`.
    pub issuer: Option<String>,
    /// The Ingress also carries `cert-manager.io/*` annotations, so nothing is ordered for it.
    pub cert_manager: bool,
}

/// `Some` when the Ingress opts in: `acme: "true"`, or `acme-issuer` without `acme: "false"`.
pub(super) fn parse(r: &mut Reader<'_>) -> Option<AcmeAnnotation> {
    let own = |r: &Reader<'_>, name: &str| {
        let key = format!("{OWN_PREFIX}{name}");
        r.all.get(&key).map(|v| (key, v.trim().to_string()))
    };
    let enabled = match own(r, "acme") {
        None => None,
        Some((key, value)) => match parse_bool(&value) {
            Ok(on) => Some(on),
            Err(reason) => {
                r.errors.push(AnnotationError::Invalid { key, reason });
                // Not ordering is the safe reading: nothing is written on a typo's behalf.
                return None;
            }
        },
    };
    let issuer = match own(r, "acme-issuer") {
        None => None,
        Some((key, value)) if value.is_empty() => {
            r.errors.push(AnnotationError::Invalid {
                key,
                reason: "must name an issuer of the configuration's acme.issuers".into(),
            });
            return None;
        }
        Some((_, value)) => Some(value),
    };
    match (enabled, &issuer) {
        (Some(true), _) | (None, Some(_)) => Some(AcmeAnnotation {
            issuer,
            cert_manager: r.all.keys().any(|k| k.starts_with(CERT_MANAGER_PREFIX)),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::annotations;

    fn acme(pairs: &[(&str, &str)]) -> (Option<AcmeAnnotation>, Vec<AnnotationError>) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (parsed, errors) = annotations::parse(Some(&map));
        (parsed.acme, errors)
    }

    #[test]
    fn opting_in_with_the_default_or_a_named_issuer() {
        let (a, e) = acme(&[("portcullis.io/acme", "true")]);
        assert_eq!(
            a,
            Some(AcmeAnnotation {
                issuer: None,
                cert_manager: false
            })
        );
        assert!(e.is_empty(), "{e:?}");
        let (a, e) = acme(&[("portcullis.io/acme-issuer", "staging")]);
        assert_eq!(a.unwrap().issuer.as_deref(), Some("staging"));
        assert!(e.is_empty(), "{e:?}");
        let (a, _) = acme(&[
            ("portcullis.io/acme", "false"),
            ("portcullis.io/acme-issuer", "x"),
        ]);
        assert_eq!(a, None, "an explicit false wins");
        assert_eq!(acme(&[]).0, None);
    }

    #[test]
    fn invalid_values_order_nothing_and_are_reported() {
        let (a, e) = acme(&[("portcullis.io/acme", "yes")]);
        assert_eq!(a, None);
        assert!(e[0].to_string().contains("portcullis.io/acme"), "{e:?}");
        let (a, e) = acme(&[("portcullis.io/acme-issuer", " ")]);
        assert_eq!(a, None);
        assert_eq!(e.len(), 1);
        // ingress-nginx has no ACME annotation: ours are not read under its prefix.
        let (a, e) = acme(&[("nginx.ingress.kubernetes.io/acme", "true")]);
        assert_eq!(a, None);
        assert!(matches!(e[0], AnnotationError::Unsupported { .. }), "{e:?}");
    }

    #[test]
    fn cert_manager_annotations_are_noticed() {
        let (a, _) = acme(&[
            ("portcullis.io/acme", "true"),
            ("cert-manager.io/cluster-issuer", "le"),
        ]);
        assert!(a.unwrap().cert_manager);
    }
}
