//! `limit-rps`, `limit-rpm`, `limit-burst-multiplier`, `limit-connections` and `limit-whitelist`
//! (alias `limit-allowlist`): request-rate and concurrency limits per client address, shared by every
//! route of the Ingress, as ingress-nginx keys them. They fail closed: a limit that cannot be read makes the Ingress answer 503, since
//! serving it unlimited could let through the very flood the limit was written to stop.

use std::num::NonZeroU32;

use super::{AnnotationError, Reader};
use crate::settings::Cidr;

/// ingress-nginx's default `limit-burst-multiplier`.
const DEFAULT_BURST_MULTIPLIER: NonZeroU32 = NonZeroU32::new(5).expect("5 is not zero");

/// The request-rate limits of one Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimit {
    Limit(RateLimits),
    /// A limit annotation was invalid: the Ingress answers 503 until it is fixed.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// At least one limit is set.
    pub rates: Rates,
    /// Clients never limited.
    pub whitelist: Vec<Cidr>,
}

/// What decides the state of the buckets: a change here starts them afresh, a change of the
/// whitelist does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rates {
    pub per_second: Option<NonZeroU32>,
    pub per_minute: Option<NonZeroU32>,
    /// The burst is the rate times this, as in ingress-nginx.
    pub burst_multiplier: NonZeroU32,
    /// Requests in progress at once.
    pub connections: Option<NonZeroU32>,
}

impl Reader<'_> {
    pub(super) fn rate_limit(&mut self) -> Option<RateLimit> {
        // Each is read (and reported) even when another is invalid.
        let per_second = self.limit_count("limit-rps");
        let per_minute = self.limit_count("limit-rpm");
        let burst_multiplier = self.limit_count("limit-burst-multiplier");
        let connections = self.limit_count("limit-connections");
        let whitelist = self.limit_whitelist();
        let (
            Some(per_second),
            Some(per_minute),
            Some(burst_multiplier),
            Some(connections),
            Some(whitelist),
        ) = (
            per_second,
            per_minute,
            burst_multiplier,
            connections,
            whitelist,
        )
        else {
            return Some(RateLimit::Invalid);
        };
        if per_second.is_none() && per_minute.is_none() && connections.is_none() {
            return None;
        }
        Some(RateLimit::Limit(RateLimits {
            rates: Rates {
                per_second,
                per_minute,
                burst_multiplier: burst_multiplier.unwrap_or(DEFAULT_BURST_MULTIPLIER),
                connections,
            },
            whitelist,
        }))
    }

    /// `Some(None)`: absent or `0` (no limit, as in ingress-nginx); `None`: invalid, reported.
    fn limit_count(&mut self, name: &str) -> Option<Option<NonZeroU32>> {
        let Some((key, value)) = self.get(name) else {
            return Some(None);
        };
        match value.parse::<u32>() {
            Ok(n) => Some(NonZeroU32::new(n)),
            Err(_) => {
                self.fail_closed(key, format!("{value:?} is not a whole number"));
                None
            }
        }
    }

    fn limit_whitelist(&mut self) -> Option<Vec<Cidr>> {
        let name = if self.get("limit-allowlist").is_some() {
            "limit-allowlist"
        } else {
            "limit-whitelist"
        };
        let Some((key, value)) = self.get(name) else {
            return Some(Vec::new());
        };
        let parsed = Cidr::parse_list(value);
        parsed.map_err(|reason| self.fail_closed(key, reason)).ok()
    }

    fn fail_closed(&mut self, key: String, reason: String) {
        self.errors.push(AnnotationError::Invalid {
            key,
            reason: format!("{reason}; the Ingress answers 503 until it is fixed"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{nginx, one_error, ours, parse_nginx_map};
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> (Option<RateLimit>, Vec<AnnotationError>) {
        let (a, errors) = parse_nginx_map(pairs);
        (a.rate_limit, errors)
    }

    fn limits(limit: Option<RateLimit>) -> RateLimits {
        match limit {
            Some(RateLimit::Limit(l)) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rps_with_the_default_burst_multiplier() {
        let (a, errors) = nginx("limit-rps", "10");
        assert!(errors.is_empty(), "{errors:?}");
        let l = limits(a.rate_limit);
        assert_eq!(l.rates.per_second, NonZeroU32::new(10));
        assert_eq!(l.rates.per_minute, None);
        assert_eq!(l.rates.burst_multiplier.get(), 5);
        assert!(l.whitelist.is_empty());
    }

    #[test]
    fn rpm_multiplier_and_whitelist() {
        let (limit, errors) = annotations(&[
            ("limit-rpm", "300"),
            ("limit-burst-multiplier", "2"),
            ("limit-whitelist", "10.0.0.0/8, 192.0.2.7,"),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let l = limits(limit);
        assert_eq!(l.rates.per_minute, NonZeroU32::new(300));
        assert_eq!(l.rates.burst_multiplier.get(), 2);
        let shown: Vec<String> = l.whitelist.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.0.2.7/32"]);
    }

    #[test]
    fn connections_alone_are_a_limit() {
        let (a, errors) = nginx("limit-connections", "3");
        assert!(errors.is_empty(), "{errors:?}");
        let l = limits(a.rate_limit);
        assert_eq!(l.rates.connections, NonZeroU32::new(3));
        assert_eq!((l.rates.per_second, l.rates.per_minute), (None, None));
        let (a, errors) = nginx("limit-connections", "many");
        assert_eq!(a.rate_limit, Some(RateLimit::Invalid));
        one_error(&errors, "answers 503");
    }

    #[test]
    fn allowlist_is_the_newer_name() {
        let (limit, _) = annotations(&[("limit-rps", "1"), ("limit-allowlist", "::1")]);
        assert_eq!(limits(limit).whitelist.len(), 1);
    }

    #[test]
    fn zero_or_absent_rates_mean_no_limit() {
        assert_eq!(nginx("limit-rps", "0").0.rate_limit, None);
        assert_eq!(
            annotations(&[("limit-whitelist", "10.0.0.0/8")]).0,
            None,
            "a whitelist alone limits nothing"
        );
    }

    #[test]
    fn invalid_values_fail_closed() {
        for bad in ["ten", "-1", "1.5", "", "99999999999"] {
            let (a, errors) = ours("limit-rps", bad);
            assert_eq!(a.rate_limit, Some(RateLimit::Invalid), "{bad:?}");
            one_error(&errors, "answers 503");
        }
        let (limit, errors) = annotations(&[("limit-rpm", "60"), ("limit-burst-multiplier", "x")]);
        assert_eq!(limit, Some(RateLimit::Invalid));
        one_error(&errors, "answers 503");
        let (limit, errors) =
            annotations(&[("limit-rps", "5"), ("limit-whitelist", "10.0.0.0/33")]);
        assert_eq!(limit, Some(RateLimit::Invalid));
        one_error(&errors, "answers 503");
    }
}
