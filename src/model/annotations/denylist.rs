//! `denylist-source-range`: networks refused even when the allowlist admits them. It fails closed: a
//! list that cannot be read makes the Ingress answer 503, since serving it could admit the very
//! clients the list was written to keep out.

use super::{AnnotationError, Reader};
use crate::settings::Cidr;

/// Which clients the Ingress refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyRange {
    Deny(Vec<Cidr>),
    /// The annotation was invalid or empty: the Ingress serves nobody (503) until it is fixed.
    Invalid,
}

impl Reader<'_> {
    pub(super) fn denylist(&mut self) -> Option<DenyRange> {
        let (key, value) = self.get("denylist-source-range")?;
        let parsed = Cidr::parse_list(value);
        let reason = match parsed {
            Ok(list) if !list.is_empty() => return Some(DenyRange::Deny(list)),
            Ok(_) => "is empty".to_string(),
            Err(reason) => reason,
        };
        self.errors.push(AnnotationError::Invalid {
            key,
            reason: format!("{reason}; the Ingress answers 503 until it is fixed"),
        });
        Some(DenyRange::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{nginx, one_error, ours};
    use super::*;

    #[test]
    fn lists_of_addresses_and_networks() {
        let (a, errors) = nginx(
            "denylist-source-range",
            "192.0.2.7, 10.0.0.0/8,,2001:db8::/32",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let Some(DenyRange::Deny(list)) = a.deny_range else {
            panic!("{:?}", a.deny_range);
        };
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["192.0.2.7/32", "10.0.0.0/8", "2001:db8::/32"]);
    }

    #[test]
    fn invalid_or_empty_lists_fail_closed() {
        for bad in ["10.0.0.0/8, nonsense", "10.0.0.0/33", " , ", ""] {
            let (a, errors) = ours("denylist-source-range", bad);
            assert_eq!(a.deny_range, Some(DenyRange::Invalid), "{bad:?}");
            one_error(&errors, "answers 503");
        }
    }

    #[test]
    fn absent_means_no_deny_list() {
        assert_eq!(
            nginx("whitelist-source-range", "10.0.0.0/8").0.deny_range,
            None
        );
    }
}
