//! `limit-rate` and `limit-rate-after`: the bandwidth of each response, in kilobytes (KiB, as nginx's
//! `k`) per second after its first N kilobytes, which ingress-nginx turns into nginx's `limit_rate`
//! and `limit_rate_after`. Like the other `limit-*` annotations they fail closed: a value that cannot
//! be read makes the Ingress answer 503 rather than serve it at full speed.

use std::num::NonZeroU64;

use super::{AnnotationError, Reader};

/// The response bandwidth of one Ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRate {
    Limit(ResponseRate),
    /// An annotation was invalid: the Ingress answers 503 until it is fixed.
    Invalid,
}

/// Each response's body goes at `bytes_per_second` once its first `after` bytes have gone at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseRate {
    pub bytes_per_second: NonZeroU64,
    pub after: u64,
}

impl Reader<'_> {
    pub(super) fn limit_rate(&mut self) -> Option<LimitRate> {
        // Both are read (and reported) even when one is invalid.
        let rate = self.kilobytes("limit-rate");
        let after = self.kilobytes("limit-rate-after");
        let (Some(rate), Some(after)) = (rate, after) else {
            return Some(LimitRate::Invalid);
        };
        // Absent or 0: no limit, as in ingress-nginx.
        let Some(bytes_per_second) = rate.and_then(NonZeroU64::new) else {
            if let Some((key, _)) = self.get("limit-rate-after")
                && after.is_some_and(|a| a > 0)
            {
                self.errors.push(AnnotationError::Invalid {
                    key,
                    reason: "has no effect without limit-rate".into(),
                });
            }
            return None;
        };
        Some(LimitRate::Limit(ResponseRate {
            bytes_per_second,
            after: after.unwrap_or(0),
        }))
    }

    /// A whole number of kilobytes, in bytes. `Some(None)`: absent; `None`: invalid, reported.
    fn kilobytes(&mut self, name: &str) -> Option<Option<u64>> {
        let Some((key, value)) = self.get(name) else {
            return Some(None);
        };
        match value.parse::<u64>().ok().and_then(|k| k.checked_mul(1024)) {
            Some(bytes) => Some(Some(bytes)),
            None => {
                self.errors.push(AnnotationError::Invalid {
                    key,
                    reason: format!(
                        "{value:?} is not a whole number of kilobytes; the Ingress answers 503 until it is fixed"
                    ),
                });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{nginx, one_error, ours, parse_map, parse_nginx_map};
    use super::*;

    fn rate(pairs: &[(&str, &str)]) -> (Option<LimitRate>, Vec<AnnotationError>) {
        let (a, errors) = parse_nginx_map(pairs);
        (a.limit_rate, errors)
    }

    fn limit(bytes_per_second: u64, after: u64) -> Option<LimitRate> {
        Some(LimitRate::Limit(ResponseRate {
            bytes_per_second: NonZeroU64::new(bytes_per_second).unwrap(),
            after,
        }))
    }

    #[test]
    fn kilobytes_per_second_after_kilobytes() {
        let (l, errors) = rate(&[("limit-rate", "64"), ("limit-rate-after", "128")]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(l, limit(64 * 1024, 128 * 1024));
        let (a, errors) = ours("limit-rate", " 1 ");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            a.limit_rate,
            limit(1024, 0),
            "limit-rate-after defaults to 0"
        );
    }

    #[test]
    fn zero_or_absent_means_no_limit() {
        assert_eq!(nginx("limit-rate", "0").0.limit_rate, None);
        assert_eq!(parse_map(&[]).0.limit_rate, None);
        let (l, errors) = rate(&[("limit-rate-after", "10")]);
        assert_eq!(l, None);
        one_error(&errors, "no effect without limit-rate");
        let (l, errors) = rate(&[("limit-rate", "0"), ("limit-rate-after", "0")]);
        assert_eq!((l, errors.len()), (None, 0));
    }

    #[test]
    fn invalid_values_fail_closed() {
        for bad in ["fast", "-1", "1.5", "64k", "", "18446744073709551615"] {
            let (a, errors) = ours("limit-rate", bad);
            assert_eq!(a.limit_rate, Some(LimitRate::Invalid), "{bad:?}");
            one_error(&errors, "answers 503");
        }
        let (l, errors) = rate(&[("limit-rate", "64"), ("limit-rate-after", "lots")]);
        assert_eq!(l, Some(LimitRate::Invalid));
        one_error(&errors, "answers 503");
    }
}
