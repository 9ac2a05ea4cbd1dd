//! Basic authentication: `auth-type: basic`, `auth-secret`, `auth-secret-type`, `auth-realm`, and their
//! resolution against the named Secret into the policy a route enforces. Anything invalid or unresolvable
//! fails closed: the Ingress's routes answer 503 rather than serve without the protection.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderValue;
use k8s_openapi::api::core::v1::Secret;

use super::{AnnotationError, Reader};
use crate::model::htpasswd::{Credentials, Refused};
use crate::vocab::{NamespacedName, parse_reference};

/// The annotation names of this family (without prefix).
pub const NAMES: &[&str] = &["auth-type", "auth-secret", "auth-secret-type", "auth-realm"];

/// The htpasswd key of an `auth-file` Secret.
pub const AUTH_FILE_KEY: &str = "auth";

/// How the Secret holds the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretType {
    /// Key `auth` holds htpasswd lines (the default).
    AuthFile,
    /// Every key is a user, its value the hash.
    AuthMap,
}

/// What the annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BasicAuthAnnotation {
    Basic {
        /// `None`: the Ingress's namespace.
        secret_namespace: Option<String>,
        secret_name: String,
        secret_type: SecretType,
        realm: String,
    },
    /// The annotations are invalid or ask for something unsupported (already reported).
    Invalid,
}

/// What a route enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BasicAuthPolicy {
    Enforce {
        credentials: Arc<Credentials>,
        /// The whole `WWW-Authenticate` value of a 401.
        challenge: HeaderValue,
    },
    /// No usable credentials: every request is answered 503.
    Unavailable,
}

pub(super) fn parse(r: &mut Reader<'_>) -> Option<BasicAuthAnnotation> {
    let auth_type = r.get("auth-type");
    let invalid = |r: &mut Reader<'_>, key: String, reason: &str| {
        r.errors.push(AnnotationError::Invalid {
            key,
            reason: format!("{reason}; the Ingress's routes answer 503"),
        });
        Some(BasicAuthAnnotation::Invalid)
    };
    let (type_key, auth_type) = match auth_type {
        Some((key, value)) => (key, value.to_ascii_lowercase()),
        None => {
            let (key, _) = NAMES.iter().find_map(|n| r.get(n))?;
            return invalid(r, key, "is set without auth-type");
        }
    };
    match auth_type.as_str() {
        "basic" => {}
        "digest" => {
            r.errors.push(AnnotationError::Unsupported {
                key: type_key,
                hint: "digest authentication is not implemented; the Ingress's routes answer 503 (use basic)",
            });
            return Some(BasicAuthAnnotation::Invalid);
        }
        other => return invalid(r, type_key, &format!("{other:?} is not basic")),
    }
    let secret_type = match r.get("auth-secret-type") {
        None => SecretType::AuthFile,
        Some((_, "auth-file")) => SecretType::AuthFile,
        Some((_, "auth-map")) => SecretType::AuthMap,
        Some((key, other)) => {
            let reason = format!("{other:?} is not auth-file or auth-map");
            return invalid(r, key, &reason);
        }
    };
    let realm = r.get("auth-realm").map_or("", |(_, v)| v).to_string();
    if challenge(&realm).is_none() {
        let key = r.get("auth-realm").map(|(k, _)| k).unwrap_or_default();
        return invalid(r, key, "cannot be sent in a header");
    }
    let Some((secret_key, secret)) = r.get("auth-secret") else {
        return invalid(r, type_key, "needs auth-secret");
    };
    let Some((secret_namespace, secret_name)) = parse_reference(secret) else {
        let reason = format!("{secret:?} is not NAME or NAMESPACE/NAME");
        return invalid(r, secret_key, &reason);
    };
    Some(BasicAuthAnnotation::Basic {
        secret_namespace,
        secret_name,
        secret_type,
        realm,
    })
}

/// The Secret an Ingress's basic auth names, for the cluster source to watch it: only those Secrets
/// are read, never every Secret of the cluster.
pub fn referenced_secret(
    annotations: Option<&BTreeMap<String, String>>,
    ingress_namespace: &str,
) -> Option<NamespacedName> {
    let all = annotations?;
    if !all
        .keys()
        .any(|k| k.ends_with("auth-type") || k.ends_with("auth-secret"))
    {
        return None;
    }
    let mut r = Reader {
        all,
        errors: Vec::new(),
    };
    match parse(&mut r)? {
        BasicAuthAnnotation::Basic {
            secret_namespace,
            secret_name,
            ..
        } if secret_namespace
            .as_deref()
            .is_none_or(|ns| ns == ingress_namespace) =>
        {
            Some(NamespacedName::new(ingress_namespace, secret_name))
        }
        BasicAuthAnnotation::Basic { .. } => None,
        BasicAuthAnnotation::Invalid => None,
    }
}

/// Resolves the annotations against the Secret (`lookup` by namespace and name). The error is the
/// reason the routes answer 503; the warnings name users whose entries are unusable (only they are
/// locked out). Both name the Secret.
pub fn resolve<'s>(
    annotation: &BasicAuthAnnotation,
    ingress_namespace: &str,
    lookup: impl FnOnce(&str, &str) -> Option<&'s Secret>,
) -> (BasicAuthPolicy, Result<Vec<String>, ResolveError>) {
    let BasicAuthAnnotation::Basic {
        secret_namespace,
        secret_name,
        secret_type,
        realm,
    } = annotation
    else {
        return (BasicAuthPolicy::Unavailable, Ok(Vec::new()));
    };
    let namespace = secret_namespace.as_deref().unwrap_or(ingress_namespace);
    let id = NamespacedName::new(namespace, secret_name.as_str());
    if namespace != ingress_namespace {
        return (
            BasicAuthPolicy::Unavailable,
            Err(ResolveError::OtherNamespace(id)),
        );
    }
    let Some(secret) = lookup(namespace, secret_name) else {
        return (BasicAuthPolicy::Unavailable, Err(ResolveError::Missing(id)));
    };
    let data = secret.data.as_ref();
    let parsed = match secret_type {
        SecretType::AuthFile => match data.and_then(|d| d.get(AUTH_FILE_KEY)) {
            None => Err(format!("has no key {AUTH_FILE_KEY:?}")),
            Some(bytes) => std::str::from_utf8(&bytes.0)
                .map_err(|_| format!("key {AUTH_FILE_KEY:?} is not UTF-8 text"))
                .and_then(Credentials::from_htpasswd),
        },
        SecretType::AuthMap => {
            let entries: Result<Vec<(&str, &str)>, String> = data
                .into_iter()
                .flatten()
                .map(|(user, hash)| match std::str::from_utf8(&hash.0) {
                    Ok(h) => Ok((user.as_str(), h)),
                    Err(_) => Err(format!("the value of {user:?} is not UTF-8 text")),
                })
                .collect();
            entries.and_then(Credentials::from_map)
        }
    };
    match parsed {
        Ok((credentials, refused)) => {
            // The realm was checked when parsed.
            let policy = match challenge(realm) {
                Some(challenge) => BasicAuthPolicy::Enforce {
                    credentials: Arc::new(credentials),
                    challenge,
                },
                None => BasicAuthPolicy::Unavailable,
            };
            let warnings = refused
                .into_iter()
                .map(|Refused { user, reason }| {
                    format!("auth-secret {id}: user {user:?}: {reason}; this user cannot sign in")
                })
                .collect();
            (policy, Ok(warnings))
        }
        Err(reason) => (
            BasicAuthPolicy::Unavailable,
            Err(ResolveError::Invalid(id, reason)),
        ),
    }
}

/// Why an Ingress's basic auth cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("auth-secret {0} does not exist; the Ingress's routes answer 503")]
    Missing(NamespacedName),
    #[error("auth-secret {0}: {1}; the Ingress's routes answer 503")]
    Invalid(NamespacedName, String),
    /// Another namespace's users and hashes are not an Ingress author's to use (nor to test
    /// passwords against).
    #[error(
        "auth-secret {0} is in another namespace than the Ingress, which is not allowed; the Ingress's routes answer 503"
    )]
    OtherNamespace(NamespacedName),
}

/// `Basic realm="…"`, with quotes and backslashes escaped (RFC 9110 quoted-string).
fn challenge(realm: &str) -> Option<HeaderValue> {
    let mut value = String::with_capacity(realm.len() + 14);
    value.push_str("Basic realm=\"");
    for c in realm.chars() {
        if c == '"' || c == '\\' {
            value.push('\\');
        }
        value.push(c);
    }
    value.push('"');
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::annotations::{AnnotationError, parse as parse_all};
    use k8s_openapi::ByteString;

    const APR1: &str = "$apr1$aWkGiNqZ$ORm1UUd/s7T9p/PzgAj171";

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), v.to_string()))
            .collect()
    }

    fn parsed(pairs: &[(&str, &str)]) -> (Option<BasicAuthAnnotation>, Vec<AnnotationError>) {
        let (a, errors) = parse_all(Some(&annotations(pairs)));
        (a.basic_auth, errors)
    }

    fn secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.namespace = Some(ns.into());
        s.metadata.name = Some(name.into());
        s.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        );
        s
    }

    #[test]
    fn basic_with_defaults() {
        let (a, errors) = parsed(&[("auth-type", "basic"), ("auth-secret", "users")]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            a,
            Some(BasicAuthAnnotation::Basic {
                secret_namespace: None,
                secret_name: "users".into(),
                secret_type: SecretType::AuthFile,
                realm: String::new(),
            })
        );
    }

    #[test]
    fn namespace_map_and_realm() {
        let (a, errors) = parsed(&[
            ("auth-type", "Basic"),
            ("auth-secret", "auth/users"),
            ("auth-secret-type", "auth-map"),
            ("auth-realm", "Authentication Required - foo"),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let Some(BasicAuthAnnotation::Basic {
            secret_namespace,
            secret_type,
            realm,
            ..
        }) = a
        else {
            panic!("{a:?}")
        };
        assert_eq!(secret_namespace.as_deref(), Some("auth"));
        assert_eq!(secret_type, SecretType::AuthMap);
        assert_eq!(realm, "Authentication Required - foo");
    }

    #[test]
    fn no_annotations_no_auth() {
        assert_eq!(parsed(&[("ssl-redirect", "false")]).0, None);
    }

    #[test]
    fn invalid_settings_fail_closed_and_are_reported() {
        for bad in [
            &[("auth-type", "basic")][..],
            &[("auth-type", "form"), ("auth-secret", "s")],
            &[("auth-type", "basic"), ("auth-secret", "a/b/c")],
            &[("auth-type", "basic"), ("auth-secret", "Bad_NS/s")],
            &[("auth-type", "basic"), ("auth-secret", "/s")],
            &[("auth-type", "basic"), ("auth-secret", "ns/")],
            &[
                ("auth-type", "basic"),
                ("auth-secret", "s"),
                ("auth-secret-type", "file"),
            ],
            &[("auth-secret", "s")],
            &[("auth-realm", "x")],
        ] {
            let (a, errors) = parsed(bad);
            assert_eq!(a, Some(BasicAuthAnnotation::Invalid), "{bad:?}");
            assert!(
                matches!(&errors[..], [AnnotationError::Invalid { reason, .. }] if reason.contains("503")),
                "{bad:?}: {errors:?}"
            );
        }
    }

    #[test]
    fn digest_is_reported_unsupported_and_fails_closed() {
        let (a, errors) = parsed(&[("auth-type", "digest"), ("auth-secret", "s")]);
        assert_eq!(a, Some(BasicAuthAnnotation::Invalid));
        assert!(
            matches!(&errors[..], [AnnotationError::Unsupported { .. }]),
            "{errors:?}"
        );
    }

    #[test]
    fn own_prefix_wins() {
        let mut all = annotations(&[("auth-type", "basic"), ("auth-secret", "theirs")]);
        all.insert("portcullis.io/auth-secret".into(), "ours".into());
        let (a, errors) = super::super::parse(Some(&all));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            matches!(a.basic_auth, Some(BasicAuthAnnotation::Basic { secret_name, .. }) if secret_name == "ours")
        );
    }

    #[test]
    fn realm_quotes_are_escaped() {
        let (a, _) = parsed(&[
            ("auth-type", "basic"),
            ("auth-secret", "s"),
            ("auth-realm", r#"say "hi""#),
        ]);
        let s = secret("ns", "s", &[("auth", &format!("alice:{APR1}"))]);
        let (policy, result) = resolve(&a.unwrap(), "ns", |_, _| Some(&s));
        assert!(result.unwrap().is_empty());
        let BasicAuthPolicy::Enforce { challenge, .. } = policy else {
            panic!("{policy:?}")
        };
        assert_eq!(challenge, r#"Basic realm="say \"hi\"""#);
    }

    #[test]
    fn resolution_reads_the_named_secret() {
        let a = parsed(&[("auth-type", "basic"), ("auth-secret", "ns/s")])
            .0
            .unwrap();
        let s = secret("ns", "s", &[("auth", &format!("alice:{APR1}\n"))]);
        let (policy, result) = resolve(&a, "ns", |ns, name| {
            assert_eq!((ns, name), ("ns", "s"));
            Some(&s)
        });
        assert!(result.is_ok());
        let BasicAuthPolicy::Enforce {
            credentials,
            challenge,
        } = policy
        else {
            panic!("{policy:?}")
        };
        assert_eq!(challenge, "Basic realm=\"\"");
        assert!(credentials.user("alice").unwrap().verify(b"open sesame"));
    }

    #[test]
    fn secrets_of_other_namespaces_are_refused() {
        let a = parsed(&[("auth-type", "basic"), ("auth-secret", "other/s")])
            .0
            .unwrap();
        let s = secret("other", "s", &[("auth", &format!("alice:{APR1}\n"))]);
        let (policy, result) = resolve(&a, "ns", |_, _| Some(&s));
        assert_eq!(policy, BasicAuthPolicy::Unavailable);
        assert!(matches!(result, Err(ResolveError::OtherNamespace(_))));
    }

    #[test]
    fn auth_map_users_are_keys() {
        let a = parsed(&[
            ("auth-type", "basic"),
            ("auth-secret", "s"),
            ("auth-secret-type", "auth-map"),
        ])
        .0
        .unwrap();
        let s = secret("ns", "s", &[("alice", APR1), ("bob", "plain")]);
        let (policy, result) = resolve(&a, "ns", |_, _| Some(&s));
        let refused = result.unwrap();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            matches!(policy, BasicAuthPolicy::Enforce { credentials, .. } if credentials.user("alice").is_some())
        );
    }

    #[test]
    fn unresolvable_secrets_fail_closed() {
        let a = parsed(&[("auth-type", "basic"), ("auth-secret", "s")])
            .0
            .unwrap();
        let (policy, result) = resolve(&a, "ns", |_, _| None);
        assert_eq!(policy, BasicAuthPolicy::Unavailable);
        assert!(matches!(result, Err(ResolveError::Missing(_))));
        for data in [
            &[("other", "x")][..],
            &[("auth", "")],
            &[("auth", "alice")],
            &[("auth", "alice:OToCBR9y4/UG.")],
        ] {
            let s = secret("ns", "s", data);
            let (policy, result) = resolve(&a, "ns", |_, _| Some(&s));
            assert_eq!(policy, BasicAuthPolicy::Unavailable, "{data:?}");
            let err = result.unwrap_err().to_string();
            assert!(err.contains("ns/s") && err.contains("503"), "{err}");
        }
    }

    #[test]
    fn referenced_secret_names_only_basic_auth_secrets() {
        let a = annotations(&[("auth-type", "basic"), ("auth-secret", "s")]);
        assert_eq!(
            referenced_secret(Some(&a), "ns"),
            Some(NamespacedName::new("ns", "s"))
        );
        let a = annotations(&[("auth-type", "basic"), ("auth-secret", "ns/s")]);
        assert_eq!(
            referenced_secret(Some(&a), "ns"),
            Some(NamespacedName::new("ns", "s"))
        );
        let a = annotations(&[("auth-type", "basic"), ("auth-secret", "o/s")]);
        assert_eq!(referenced_secret(Some(&a), "ns"), None, "never read");
        assert_eq!(
            referenced_secret(Some(&annotations(&[("auth-secret", "s")])), "ns"),
            None
        );
        assert_eq!(referenced_secret(None, "ns"), None);
    }
}
