//! The rate-limit step, after allow/deny: `limit-rps` and `limit-rpm` per client address (the one
//! the source-range step sees), per Ingress, per replica, with governor's keyed GCRA buckets.
//!
//! The buckets outlive configuration generations: they live here, keyed by Ingress, and are kept
//! as long as the Ingress's rates stay the same, so a rebuild does not hand every client a fresh
//! burst. Idle clients are pruned periodically, so a flood of distinct addresses costs memory only
//! while it lasts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{Response, StatusCode};

use super::response::{self, Body};
use crate::model::NamespacedName;
use crate::model::annotations::{RateLimit, Rates};
use crate::model::policy::RateLimitPolicy;

/// How often idle clients are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(5);

/// The buckets of every Ingress with a rate limit.
#[derive(Default)]
pub(super) struct RateLimiters {
    table: ArcSwap<HashMap<NamespacedName, Arc<Buckets>>>,
}

/// One Ingress's buckets, one per client address and rate.
struct Buckets {
    rates: Rates,
    per_minute: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_second: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl Buckets {
    fn new(rates: Rates) -> Buckets {
        let keyed = |quota: fn(NonZeroU32) -> Quota, rate: NonZeroU32| {
            // nginx lets burst + 1 requests through at once (`limit_req … burst=rate×multiplier`).
            let burst = rate
                .saturating_mul(rates.burst_multiplier)
                .saturating_add(1);
            RateLimiter::keyed(quota(rate).allow_burst(burst))
        };
        Buckets {
            rates,
            per_minute: rates.per_minute.map(|r| keyed(Quota::per_minute, r)),
            per_second: rates.per_second.map(|r| keyed(Quota::per_second, r)),
        }
    }

    /// Whether the client may send this request; ingress-nginx checks the per-minute rate first.
    fn admit(&self, client: IpAddr) -> bool {
        [&self.per_minute, &self.per_second]
            .into_iter()
            .flatten()
            .all(|limiter| limiter.check_key(&client).is_ok())
    }

    /// Forgets clients whose buckets are full again (indistinguishable from new ones); returns how
    /// many clients are left.
    fn prune(&self) -> usize {
        [&self.per_minute, &self.per_second]
            .into_iter()
            .flatten()
            .map(|limiter| {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            })
            .sum()
    }
}

impl RateLimiters {
    /// The buckets, pruned every few seconds for as long as they are in use.
    pub(super) fn start() -> Arc<RateLimiters> {
        let limiters = Arc::new(RateLimiters::default());
        let weak: Weak<RateLimiters> = Arc::downgrade(&limiters);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(limiters) = weak.upgrade() else {
                    return;
                };
                limiters.prune();
            }
        });
        limiters
    }

    /// The refusal for this client, if the Ingress's rate limit refuses it.
    pub(super) fn check(
        &self,
        client: IpAddr,
        ingress: &NamespacedName,
        policy: &RateLimitPolicy,
    ) -> Option<Response<Body>> {
        let limits = match &policy.limit {
            RateLimit::Invalid => {
                return Some(response::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the Ingress's rate limit is invalid",
                ));
            }
            RateLimit::Limit(limits) => limits,
        };
        if limits.whitelist.iter().any(|c| c.0.contains(&client)) {
            return None;
        }
        (!self.buckets(ingress, limits.rates).admit(client))
            .then(|| response::error(policy.status, "too many requests from your address"))
    }

    /// The Ingress's buckets; fresh ones when it is new or its rates changed.
    fn buckets(&self, ingress: &NamespacedName, rates: Rates) -> Arc<Buckets> {
        if let Some(b) = self.table.load().get(ingress)
            && b.rates == rates
        {
            return b.clone();
        }
        let mut found = None;
        self.table.rcu(|table| {
            let mut table = HashMap::clone(table);
            let b = match table.get(ingress) {
                Some(b) if b.rates == rates => b.clone(),
                _ => {
                    let b = Arc::new(Buckets::new(rates));
                    table.insert(ingress.clone(), b.clone());
                    b
                }
            };
            found = Some(b);
            table
        });
        found.unwrap_or_else(|| Arc::new(Buckets::new(rates)))
    }

    /// Forgets idle clients, and Ingresses none of whose clients are left (deleted ones, say).
    fn prune(&self) {
        let emptied: Vec<NamespacedName> = self
            .table
            .load()
            .iter()
            .filter(|(_, b)| b.prune() == 0)
            .map(|(ingress, _)| ingress.clone())
            .collect();
        if emptied.is_empty() {
            return;
        }
        self.table.rcu(|table| {
            let mut table = HashMap::clone(table);
            table.retain(|ingress, _| !emptied.contains(ingress));
            table
        });
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.table
            .load()
            .values()
            .map(|b| {
                [&b.per_minute, &b.per_second]
                    .into_iter()
                    .flatten()
                    .map(|l| l.len())
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::annotations::RateLimits;
    use crate::settings::Cidr;

    fn policy(rps: u32, multiplier: u32, whitelist: &[&str]) -> RateLimitPolicy {
        RateLimitPolicy {
            limit: RateLimit::Limit(RateLimits {
                rates: rates(rps, multiplier),
                whitelist: whitelist.iter().map(|c| Cidr::parse(c).unwrap()).collect(),
            }),
            status: StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn rates(rps: u32, multiplier: u32) -> Rates {
        Rates {
            per_second: NonZeroU32::new(rps),
            per_minute: None,
            burst_multiplier: NonZeroU32::new(multiplier).unwrap(),
        }
    }

    fn passed(
        limiters: &RateLimiters,
        ip: &str,
        ingress: &str,
        p: &RateLimitPolicy,
        n: usize,
    ) -> usize {
        let ingress = NamespacedName::new("ns", ingress);
        (0..n)
            .filter(|_| limiters.check(ip.parse().unwrap(), &ingress, p).is_none())
            .count()
    }

    #[test]
    fn burst_plus_one_pass_then_the_status_chosen() {
        let limiters = RateLimiters::default();
        let p = policy(1, 5, &[]);
        assert_eq!(
            passed(&limiters, "192.0.2.1", "a", &p, 20),
            6,
            "burst 5 + 1, as nginx"
        );
        let ingress = NamespacedName::new("ns", "a");
        let refused = limiters.check("192.0.2.1".parse().unwrap(), &ingress, &p);
        assert_eq!(
            refused.map(|r| r.status()),
            Some(StatusCode::TOO_MANY_REQUESTS)
        );
        assert_eq!(
            passed(&limiters, "192.0.2.2", "a", &p, 20),
            6,
            "another client has its own bucket"
        );
        assert_eq!(
            passed(&limiters, "192.0.2.1", "b", &p, 20),
            6,
            "another Ingress has its own buckets"
        );
    }

    #[test]
    fn whitelisted_clients_are_never_limited() {
        let limiters = RateLimiters::default();
        let p = policy(1, 1, &["10.0.0.0/8"]);
        assert_eq!(passed(&limiters, "10.1.2.3", "a", &p, 100), 100);
        assert_eq!(limiters.clients(), 0, "and take no memory");
    }

    #[test]
    fn buckets_survive_a_rebuild_unless_the_rates_change() {
        let limiters = RateLimiters::default();
        assert_eq!(
            passed(&limiters, "192.0.2.1", "a", &policy(1, 1, &[]), 10),
            2
        );
        // A new generation: an equal policy, another whitelist.
        assert_eq!(
            passed(
                &limiters,
                "192.0.2.1",
                "a",
                &policy(1, 1, &["10.0.0.0/8"]),
                10
            ),
            0
        );
        assert_eq!(
            passed(&limiters, "192.0.2.1", "a", &policy(2, 1, &[]), 10),
            3,
            "new rates, new buckets"
        );
    }

    #[test]
    fn an_invalid_limit_serves_nobody() {
        let p = RateLimitPolicy {
            limit: RateLimit::Invalid,
            status: StatusCode::TOO_MANY_REQUESTS,
        };
        let refused = RateLimiters::default().check(
            "192.0.2.1".parse().unwrap(),
            &NamespacedName::new("ns", "a"),
            &p,
        );
        assert_eq!(
            refused.map(|r| r.status()),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );
    }

    /// Resident memory of this process in bytes.
    fn rss() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }

    #[test]
    fn a_flood_of_distinct_addresses_is_pruned_once_idle() {
        let limiters = RateLimiters::default();
        // 1000 r/s: a client's bucket is full again a few milliseconds after its request.
        let p = policy(1000, 1, &[]);
        let ingress = NamespacedName::new("ns", "a");
        let before = rss();
        for i in 0..100_000u32 {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(
                0x2001_0db8_u128 << 96 | u128::from(i),
            ));
            assert!(limiters.check(ip, &ingress, &p).is_none());
        }
        assert_eq!(limiters.clients(), 100_000);
        if let (Some(before), Some(after)) = (before, rss()) {
            let grown = after.saturating_sub(before);
            eprintln!("100,000 clients: {} KiB", grown / 1024);
            assert!(grown < 64 << 20, "100,000 clients cost {grown} bytes");
        }
        std::thread::sleep(Duration::from_millis(50));
        limiters.prune();
        assert_eq!(limiters.clients(), 0);
        assert!(
            limiters.table.load().is_empty(),
            "the idle Ingress is forgotten too"
        );
        assert!(
            limiters
                .check("192.0.2.1".parse().unwrap(), &ingress, &p)
                .is_none()
        );
    }
}
