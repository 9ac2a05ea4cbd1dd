//! Canary Ingresses: `canary`, `canary-by-header`, `canary-by-header-value`,
//! `canary-by-header-pattern`, `canary-by-cookie`, `canary-weight` and `canary-weight-total`. A canary
//! Ingress sends a share of the requests of another Ingress's host and path to its own Service.

use std::collections::BTreeMap;

use http::HeaderName;

use super::Reader;

/// The annotation names of this family (without prefix).
pub const NAMES: &[&str] = &[
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "canary-weight",
    "canary-weight-total",
];

/// ingress-nginx's weight total, also used whenever `canary-weight-total` is not above it.
const DEFAULT_TOTAL: u32 = 100;

/// Which requests a canary Ingress takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    pub header: Option<(HeaderName, HeaderRule)>,
    pub cookie: Option<String>,
    /// Out of `weight_total`.
    pub weight: u32,
    pub weight_total: u32,
}

/// What the `canary-by-header` header must say.
#[derive(Debug, Clone)]
pub enum HeaderRule {
    /// `canary-by-header-value`: exactly this value.
    Value(String),
    /// `canary-by-header-pattern`: a match anywhere in the value.
    Pattern(regex::Regex),
    /// The pattern did not compile: ingress-nginx sends such requests to the primary.
    InvalidPattern,
    /// Neither: `always` or `never`.
    AlwaysNever,
}

impl PartialEq for HeaderRule {
    fn eq(&self, other: &HeaderRule) -> bool {
        match (self, other) {
            (HeaderRule::Value(a), HeaderRule::Value(b)) => a == b,
            (HeaderRule::Pattern(a), HeaderRule::Pattern(b)) => a.as_str() == b.as_str(),
            (HeaderRule::InvalidPattern, HeaderRule::InvalidPattern)
            | (HeaderRule::AlwaysNever, HeaderRule::AlwaysNever) => true,
            _ => false,
        }
    }
}

impl Eq for HeaderRule {}

/// A canary attached to the primary's route: who it takes, where they go, and how its endpoints
/// are chosen (the canary Ingress's own balancing and affinity).
#[derive(Debug)]
pub struct CanaryRoute {
    pub ingress: crate::vocab::NamespacedName,
    pub rule: Canary,
    pub backend: std::sync::Arc<crate::model::Backend>,
    pub balancing: super::balancing::Balancing,
}

/// `None` unless `canary: "true"`.
pub(super) fn parse(r: &mut Reader<'_>) -> Option<Canary> {
    if !r.bool("canary").unwrap_or(false) {
        return None;
    }
    let header = r.parse("canary-by-header", |v| {
        HeaderName::from_bytes(v.as_bytes()).map_err(|_| format!("{v:?} is not a header name"))
    });
    let value = r.parse("canary-by-header-value", |v| match v.is_empty() {
        true => Err("must not be empty".to_string()),
        false => Ok(v.to_string()),
    });
    let pattern = r.get("canary-by-header-pattern").map(|(key, v)| {
        regex::RegexBuilder::new(v)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| (key, e.to_string().replace('\n', " ")))
    });
    let rule = match (value, pattern) {
        (Some(v), _) => HeaderRule::Value(v),
        (None, Some(Ok(re))) => HeaderRule::Pattern(re),
        (None, Some(Err((key, reason)))) => {
            r.errors.push(super::AnnotationError::Invalid {
                key,
                reason: format!("is not a regular expression ({reason}); requests with the header go to the primary"),
            });
            HeaderRule::InvalidPattern
        }
        (None, None) => HeaderRule::AlwaysNever,
    };
    let total = r
        .parse("canary-weight-total", |v| {
            v.parse::<u32>()
                .ok()
                .filter(|t| *t > 0)
                .ok_or_else(|| format!("{v:?} is not a positive whole number"))
        })
        .filter(|t| *t > DEFAULT_TOTAL)
        .unwrap_or(DEFAULT_TOTAL);
    let weight = r
        .parse("canary-weight", |v| match v.parse::<u32>() {
            Ok(w) if w <= total => Ok(w),
            _ => Err(format!("{v:?} is not a whole number from 0 to {total}")),
        })
        .unwrap_or(0);
    Some(Canary {
        header: header.map(|h| (h, rule)),
        cookie: r.parse("canary-by-cookie", |v| match v.is_empty() {
            true => Err("must not be empty".to_string()),
            false => Ok(v.to_string()),
        }),
        weight,
        weight_total: total,
    })
}

/// Whether the annotations mark a canary Ingress (`canary`, ours winning over ingress-nginx's).
pub fn marked(annotations: Option<&BTreeMap<String, String>>) -> bool {
    let Some(all) = annotations else {
        return false;
    };
    [super::OWN_PREFIX, super::NGINX_PREFIX]
        .iter()
        .find_map(|p| all.get(&format!("{p}canary")))
        .is_some_and(|v| super::parse_bool(v.trim()) == Ok(true))
}

/// Whether a canary Ingress's annotation applies to it; the rest come from the primary Ingress, as
/// in ingress-nginx (which keeps only the balancing and affinity settings of a canary).
pub fn kept_on_canary(name: &str) -> bool {
    NAMES.contains(&name) || super::balancing::NAMES.contains(&name)
}

/// The annotations of a canary Ingress that do not apply to it (reported, not silently dropped).
pub fn ignored(annotations: Option<&BTreeMap<String, String>>) -> Vec<&str> {
    annotations
        .into_iter()
        .flat_map(BTreeMap::keys)
        .filter(|key| {
            [super::OWN_PREFIX, super::NGINX_PREFIX]
                .iter()
                .find_map(|p| key.strip_prefix(p))
                .is_some_and(|name| !kept_on_canary(name))
        })
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse_nginx_map;
    use super::*;

    #[test]
    fn only_canary_true_makes_a_canary() {
        assert_eq!(parse_nginx_map(&[("canary-weight", "10")]).0.canary, None);
        assert_eq!(parse_nginx_map(&[("canary", "false")]).0.canary, None);
        let (a, errors) = parse_nginx_map(&[("canary", "true")]);
        assert!(errors.is_empty());
        assert_eq!(
            a.canary,
            Some(Canary {
                header: None,
                cookie: None,
                weight: 0,
                weight_total: 100
            })
        );
    }

    #[test]
    fn the_header_rule_prefers_the_value_over_the_pattern() {
        let (a, _) = parse_nginx_map(&[
            ("canary", "true"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-value", "yes"),
            ("canary-by-header-pattern", "^y"),
        ]);
        let c = a.canary.unwrap();
        assert_eq!(
            c.header,
            Some((
                HeaderName::from_static("x-canary"),
                HeaderRule::Value("yes".into())
            ))
        );
        let (a, errors) = parse_nginx_map(&[
            ("canary", "true"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-pattern", "(unclosed"),
        ]);
        assert_eq!(
            a.canary.unwrap().header.unwrap().1,
            HeaderRule::InvalidPattern
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn weight_total_counts_only_above_100() {
        let total = |t: &str, w: &str| {
            let (a, errors) = parse_nginx_map(&[
                ("canary", "true"),
                ("canary-weight", w),
                ("canary-weight-total", t),
            ]);
            let c = a.canary.unwrap();
            (c.weight, c.weight_total, errors.len())
        };
        assert_eq!(total("1000", "250"), (250, 1000, 0));
        assert_eq!(total("50", "30"), (30, 100, 0), "a total below 100 is 100");
        assert_eq!(
            total("100", "101"),
            (0, 100, 1),
            "a weight beyond the total is refused"
        );
        assert_eq!(total("x", "5"), (5, 100, 1));
    }

    #[test]
    fn a_canary_keeps_only_balancing_and_canary_annotations() {
        for kept in [
            "canary-weight",
            "affinity",
            "session-cookie-name",
            "upstream-hash-by",
            "load-balance",
        ] {
            assert!(kept_on_canary(kept), "{kept}");
        }
        for ignored in ["auth-url", "rewrite-target", "limit-rps", "ssl-redirect"] {
            assert!(!kept_on_canary(ignored), "{ignored}");
        }
    }
}
