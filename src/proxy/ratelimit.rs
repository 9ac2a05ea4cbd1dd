//! The rate-limit step, after allow/deny: `limit-connections`, `limit-rpm` and `limit-rps` (in
//! ingress-nginx's order) per client address (the one the source-range step sees), per Ingress, per
//! replica; the rates with governor's keyed GCRA buckets, concurrency with a count of requests in
//! progress that a guard, dropped when the response ends, gives back.
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
use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{Response, StatusCode};
use prometheus::IntGauge;

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

/// One Ingress's buckets, one per client address and rate, and its clients' requests in progress.
struct Buckets {
    rates: Rates,
    /// Only clients with a request in progress, and only with `limit-connections`.
    in_flight: DashMap<IpAddr, u32>,
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
            in_flight: DashMap::new(),
            per_minute: rates.per_minute.map(|r| keyed(Quota::per_minute, r)),
            per_second: rates.per_second.map(|r| keyed(Quota::per_second, r)),
        }
    }

    /// Counts the request against the client's concurrency limit; `None` when it is reached.
    fn enter(self: &Arc<Self>, client: IpAddr) -> Option<Option<InFlight>> {
        let Some(limit) = self.rates.connections else {
            return Some(None);
        };
        let mut count = self.in_flight.entry(client).or_insert(0);
        if *count >= limit.get() {
            return None;
        }
        *count += 1;
        Some(Some(InFlight {
            buckets: self.clone(),
            client,
        }))
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
        self.in_flight.shrink_to_fit();
        self.in_flight.len()
            + [&self.per_minute, &self.per_second]
                .into_iter()
                .flatten()
                .map(|limiter| {
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                    limiter.len()
                })
                .sum::<usize>()
    }
}

/// What the rate-limit step decides for one request.
pub(super) enum Admission {
    /// Passed on, with the guard to keep until the response ends when the Ingress limits
    /// concurrency.
    Pass(Option<InFlight>),
    Refuse(Response<Body>),
}

/// One request in progress of a client with `limit-connections`; dropping it ends the request.
pub(super) struct InFlight {
    buckets: Arc<Buckets>,
    client: IpAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(mut count) = self.buckets.in_flight.get_mut(&self.client) {
            *count = count.saturating_sub(1);
        }
        self.buckets
            .in_flight
            .remove_if(&self.client, |_, count| *count == 0);
    }
}

impl RateLimiters {
    /// The buckets, pruned every few seconds for as long as they are in use; `entries` shows how
    /// many per-client entries are left after each pruning.
    pub(super) fn start(entries: IntGauge) -> Arc<RateLimiters> {
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
                entries.set(i64::try_from(limiters.prune()).unwrap_or(i64::MAX));
            }
        });
        limiters
    }

    /// Admits or refuses the request.
    pub(super) fn check(
        &self,
        client: IpAddr,
        ingress: &NamespacedName,
        policy: &RateLimitPolicy,
    ) -> Admission {
        let limits = match &policy.limit {
            RateLimit::Invalid => {
                return Admission::Refuse(response::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the Ingress's rate limit is invalid",
                ));
            }
            RateLimit::Limit(limits) => limits,
        };
        if limits.whitelist.iter().any(|c| c.0.contains(&client)) {
            return Admission::Pass(None);
        }
        let buckets = self.buckets(ingress, limits.rates);
        match buckets.enter(client) {
            Some(in_flight) if buckets.admit(client) => Admission::Pass(in_flight),
            _ => Admission::Refuse(response::error(
                policy.status,
                "too many requests from your address",
            )),
        }
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

    /// Forgets idle clients, and Ingresses none of whose clients are left (deleted ones, say);
    /// returns how many per-client entries are left.
    fn prune(&self) -> usize {
        let mut left = 0;
        let emptied: Vec<NamespacedName> = self
            .table
            .load()
            .iter()
            .filter(|(_, b)| {
                let n = b.prune();
                left += n;
                n == 0
            })
            .map(|(ingress, _)| ingress.clone())
            .collect();
        if emptied.is_empty() {
            return left;
        }
        self.table.rcu(|table| {
            let mut table = HashMap::clone(table);
            table.retain(|ingress, _| !emptied.contains(ingress));
            table
        });
        left
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
            connections: None,
        }
    }

    impl Admission {
        fn passed(&self) -> bool {
            matches!(self, Admission::Pass(_))
        }

        fn guard(self) -> Option<InFlight> {
            match self {
                Admission::Pass(guard) => guard,
                Admission::Refuse(_) => None,
            }
        }

        fn status(self) -> Option<StatusCode> {
            match self {
                Admission::Pass(_) => None,
                Admission::Refuse(r) => Some(r.status()),
            }
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
            .filter(|_| limiters.check(ip.parse().unwrap(), &ingress, p).passed())
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
        assert_eq!(refused.status(), Some(StatusCode::TOO_MANY_REQUESTS));
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
    fn concurrency_is_given_back_when_a_request_ends() {
        let limiters = RateLimiters::default();
        let mut r = rates(0, 1);
        r.connections = NonZeroU32::new(2);
        let p = RateLimitPolicy {
            limit: RateLimit::Limit(RateLimits {
                rates: r,
                whitelist: vec![],
            }),
            status: StatusCode::SERVICE_UNAVAILABLE,
        };
        let ingress = NamespacedName::new("ns", "a");
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let first = limiters.check(client, &ingress, &p).guard();
        let second = limiters.check(client, &ingress, &p).guard();
        assert!(first.is_some() && second.is_some());
        assert!(
            !limiters.check(client, &ingress, &p).passed(),
            "a third at once"
        );
        assert!(
            limiters
                .check("192.0.2.2".parse().unwrap(), &ingress, &p)
                .passed(),
            "another client"
        );
        drop(first);
        let third = limiters.check(client, &ingress, &p).guard();
        assert!(third.is_some(), "the first one's place is free again");
        drop((second, third));
        limiters.prune();
        assert!(limiters.table.load().is_empty(), "nothing left in flight");
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
        assert_eq!(refused.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
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
            assert!(limiters.check(ip, &ingress, &p).passed());
        }
        assert_eq!(limiters.clients(), 100_000);
        if let (Some(before), Some(after)) = (before, rss()) {
            let grown = after.saturating_sub(before);
            eprintln!("100,000 clients: {} KiB", grown / 1024);
            assert!(grown < 64 << 20, "100,000 clients cost {grown} bytes");
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(limiters.prune(), 0, "pruning reports what is left");
        assert_eq!(limiters.clients(), 0);
        assert!(
            limiters.table.load().is_empty(),
            "the idle Ingress is forgotten too"
        );
        assert!(
            limiters
                .check("192.0.2.1".parse().unwrap(), &ingress, &p)
                .passed()
        );
    }
}
