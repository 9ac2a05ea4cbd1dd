//! Typed Ingress annotations, read under `portcullis.io/` and, for the same meaning, under
//! `nginx.ingress.kubernetes.io/` (ours wins when both are set). An invalid value is reported and the
//! default applies.

use std::collections::BTreeMap;

pub const OWN_PREFIX: &str = "portcullis.io/";
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The policy an Ingress's annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressAnnotations {
    /// Redirect plain HTTP to HTTPS for hosts in the Ingress's `tls` section (`ssl-redirect`, default true).
    pub ssl_redirect: bool,
    /// Redirect plain HTTP to HTTPS even for hosts without TLS (`force-ssl-redirect`, default false).
    pub force_ssl_redirect: bool,
}

impl Default for IngressAnnotations {
    fn default() -> Self {
        IngressAnnotations {
            ssl_redirect: true,
            force_ssl_redirect: false,
        }
    }
}

/// One annotation whose value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {reason}")]
pub struct AnnotationError {
    pub key: String,
    pub reason: String,
}

/// Reads every annotation Portcullis understands; errors name the annotation and the expected form.
pub fn parse(
    annotations: Option<&BTreeMap<String, String>>,
) -> (IngressAnnotations, Vec<AnnotationError>) {
    let empty = BTreeMap::new();
    let reader = Reader {
        all: annotations.unwrap_or(&empty),
        errors: Vec::new(),
    };
    reader.read()
}

struct Reader<'a> {
    all: &'a BTreeMap<String, String>,
    errors: Vec<AnnotationError>,
}

impl Reader<'_> {
    fn read(mut self) -> (IngressAnnotations, Vec<AnnotationError>) {
        let defaults = IngressAnnotations::default();
        let parsed = IngressAnnotations {
            ssl_redirect: self.bool("ssl-redirect").unwrap_or(defaults.ssl_redirect),
            force_ssl_redirect: self
                .bool("force-ssl-redirect")
                .unwrap_or(defaults.force_ssl_redirect),
        };
        (parsed, self.errors)
    }

    /// The value under our prefix, else under the ingress-nginx prefix, with the full key it came from.
    fn get(&self, name: &str) -> Option<(String, &str)> {
        [OWN_PREFIX, NGINX_PREFIX].iter().find_map(|prefix| {
            let key = format!("{prefix}{name}");
            self.all.get(&key).map(|v| (key, v.as_str()))
        })
    }

    fn bool(&mut self, name: &str) -> Option<bool> {
        let (key, value) = self.get(name)?;
        // The forms Go's strconv.ParseBool accepts, which ingress-nginx users have written for years.
        match value.trim() {
            "true" | "True" | "TRUE" | "t" | "T" | "1" => Some(true),
            "false" | "False" | "FALSE" | "f" | "F" | "0" => Some(false),
            other => {
                self.errors.push(AnnotationError {
                    key,
                    reason: format!("{other:?} is not a boolean (use \"true\" or \"false\")"),
                });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_map(pairs: &[(&str, &str)]) -> (IngressAnnotations, Vec<AnnotationError>) {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(Some(&map))
    }

    #[test]
    fn defaults_without_annotations() {
        assert_eq!(parse(None), (IngressAnnotations::default(), vec![]));
        let d = IngressAnnotations::default();
        assert!(d.ssl_redirect && !d.force_ssl_redirect);
    }

    #[test]
    fn reads_both_prefixes_and_ours_wins() {
        let (a, _) = parse_map(&[("nginx.ingress.kubernetes.io/ssl-redirect", "false")]);
        assert!(!a.ssl_redirect);
        let (a, _) = parse_map(&[
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
            ("portcullis.io/ssl-redirect", "true"),
        ]);
        assert!(a.ssl_redirect);
        let (a, _) = parse_map(&[("portcullis.io/force-ssl-redirect", "True")]);
        assert!(a.force_ssl_redirect);
    }

    #[test]
    fn invalid_boolean_is_reported_and_default_kept() {
        let (a, errors) = parse_map(&[("portcullis.io/ssl-redirect", "yes please")]);
        assert!(a.ssl_redirect);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].key, "portcullis.io/ssl-redirect");
        assert!(
            errors[0].to_string().contains("not a boolean"),
            "{}",
            errors[0]
        );
    }
}
