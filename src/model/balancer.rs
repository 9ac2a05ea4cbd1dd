//! What choosing an endpoint of a [`Backend`] needs beyond its address list: a consistent-hash ring
//! (`upstream-hash-by`, balanced affinity), opaque per-endpoint cookie tokens (persistent affinity)
//! and latency averages (`ewma`). Each is built on first use, so a backend that is only balanced
//! round robin pays for none of them; all of it is rebuilt with the backend on every configuration
//! generation (the latency averages start afresh).

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use aws_lc_rs::hmac;

use super::Backend;

/// Points per endpoint on the ring: enough that 3 to 100 endpoints get shares within a few percent.
const POINTS_PER_ENDPOINT: u32 = 160;
/// How fast a latency average forgets (ingress-nginx's `ewma` decay time).
const DECAY_SECONDS: f64 = 10.0;

/// A fixed seed, so that every replica (and every restart) puts a key on the same endpoint.
fn ring_hasher() -> foldhash::quality::FixedState {
    foldhash::quality::FixedState::with_seed(0x706f_7274_6375_6c6c)
}

/// The hash of a key (`upstream-hash-by` value or balanced-affinity cookie) on the ring.
pub fn ring_hash(key: &[u8]) -> u64 {
    ring_hasher().hash_one(key)
}

/// Endpoints placed at many points of a 64-bit circle; a key goes to the first point at or after its
/// hash. Adding an endpoint takes over only the arcs before its points, so only the keys on them move.
#[derive(Debug)]
pub struct Ring {
    points: Box<[(u64, u32)]>,
}

impl Ring {
    pub fn new(endpoints: &[SocketAddr]) -> Ring {
        let h = ring_hasher();
        let mut points: Vec<(u64, u32)> = endpoints
            .iter()
            .enumerate()
            .flat_map(|(i, e)| {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                let h = &h;
                // By address, not position: an endpoint keeps its points when others come and go.
                (0..POINTS_PER_ENDPOINT).map(move |v| (h.hash_one((e, v)), i))
            })
            .collect();
        points.sort_unstable();
        Ring {
            points: points.into(),
        }
    }

    /// The endpoint index for a key hash; `None` on an empty ring.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        let at = self.points.partition_point(|(p, _)| *p < hash);
        let (_, i) = self.points.get(at).or(self.points.first())?;
        Some(*i as usize)
    }
}

/// The latency average and requests in flight of one endpoint.
#[derive(Debug, Default)]
pub struct Load {
    /// Microseconds, as `f64` bits.
    ewma: AtomicU64,
    /// When `ewma` was last updated, in microseconds since the backend was built.
    stamp: AtomicU64,
    in_flight: AtomicU32,
}

impl Load {
    /// The cost of sending one more request here: the latency average times the requests waiting.
    pub fn score(&self) -> f64 {
        let ewma = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        (ewma + 1.0) * f64::from(self.in_flight.load(Ordering::Relaxed) + 1)
    }

    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends one request; `latency` is `None` when it failed before a response (which says nothing
    /// about the endpoint's speed).
    pub fn finish(&self, now_us: u64, latency_us: Option<u64>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let Some(latency) = latency_us else {
            return;
        };
        let now_us = now_us.max(1);
        let last = self.stamp.swap(now_us, Ordering::Relaxed);
        // The first sample is the average; later ones weigh by how long ago the last one came.
        let elapsed = now_us.saturating_sub(last) as f64 / 1e6;
        let weight = if last == 0 {
            0.0
        } else {
            (-elapsed / DECAY_SECONDS).exp()
        };
        let old = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let new = old * weight + latency as f64 * (1.0 - weight);
        // Racing updates may lose one sample; an average does not need them all.
        self.ewma.store(new.to_bits(), Ordering::Relaxed);
    }
}

/// The state built on first use, per backend.
#[derive(Debug)]
pub struct BalancerState {
    /// The secret that keys cookie tokens: without it, a token cannot be matched to an address.
    key: hmac::Key,
    built: Instant,
    ring: OnceLock<Ring>,
    tokens: OnceLock<Box<[Token]>>,
    tag: OnceLock<Token>,
    loads: OnceLock<Box<[Load]>>,
}

/// 16 hex digits of a keyed hash.
pub type Token = [u8; 16];

impl BalancerState {
    pub fn new(secret: &[u8]) -> BalancerState {
        BalancerState {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            built: Instant::now(),
            ring: OnceLock::new(),
            tokens: OnceLock::new(),
            tag: OnceLock::new(),
            loads: OnceLock::new(),
        }
    }

    fn token(&self, data: &[u8]) -> Token {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let tag = hmac::sign(&self.key, data);
        let mut out = [0u8; 16];
        for (i, b) in tag.as_ref().iter().take(8).enumerate() {
            out[2 * i] = HEX[usize::from(b >> 4)];
            out[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        out
    }
}

impl Backend {
    pub fn ring(&self) -> &Ring {
        self.balancer
            .ring
            .get_or_init(|| Ring::new(&self.endpoints))
    }

    /// The cookie token of each endpoint, in endpoint order.
    pub fn tokens(&self) -> &[Token] {
        self.balancer.tokens.get_or_init(|| {
            self.endpoints
                .iter()
                .map(|e| self.balancer.token(e.to_string().as_bytes()))
                .collect()
        })
    }

    /// The token that says a cookie was set for this backend (so a canary's cookie is told apart
    /// from its primary's, though both have the same name).
    pub fn tag(&self) -> &Token {
        self.balancer.tag.get_or_init(|| {
            let label = format!("backend {}/{}", self.service, self.port);
            self.balancer.token(label.as_bytes())
        })
    }

    pub fn loads(&self) -> &[Load] {
        self.balancer
            .loads
            .get_or_init(|| self.endpoints.iter().map(|_| Load::default()).collect())
    }

    /// Microseconds since this backend was built: the clock of its latency averages.
    pub fn clock_us(&self) -> u64 {
        u64::try_from(self.balancer.built.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NamespacedName;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, 1 + i as u8], 8080)))
            .collect()
    }

    fn shares(ring: &Ring, n: usize, keys: u32) -> Vec<u32> {
        let mut counts = vec![0; n];
        for k in 0..keys {
            counts[ring
                .lookup(ring_hash(format!("key-{k}").as_bytes()))
                .unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn the_ring_spreads_keys_evenly() {
        let ring = Ring::new(&addrs(4));
        for share in shares(&ring, 4, 40_000) {
            assert!((8_000..12_000).contains(&share), "{share}");
        }
        assert_eq!(Ring::new(&[]).lookup(1), None);
    }

    #[test]
    fn adding_an_endpoint_moves_only_keys_to_it() {
        let three = addrs(3);
        let four = addrs(4);
        let (before, after) = (Ring::new(&three), Ring::new(&four));
        let mut moved = 0;
        for k in 0..10_000 {
            let h = ring_hash(format!("key-{k}").as_bytes());
            let (a, b) = (before.lookup(h).unwrap(), after.lookup(h).unwrap());
            if a != b {
                assert_eq!(b, 3, "a key moved between old endpoints");
                moved += 1;
            }
        }
        assert!(
            (1_800..3_200).contains(&moved),
            "about a quarter move: {moved}"
        );
    }

    #[test]
    fn tokens_are_keyed_and_hide_the_address() {
        let a = Backend::new(NamespacedName::new("ns", "s"), "80".into(), addrs(2)).keyed(b"uid-1");
        let b = Backend::new(NamespacedName::new("ns", "s"), "80".into(), addrs(2)).keyed(b"uid-2");
        assert_ne!(a.tokens()[0], a.tokens()[1]);
        assert_ne!(a.tokens()[0], b.tokens()[0], "another key, other tokens");
        let text = String::from_utf8(a.tokens()[0].to_vec()).unwrap();
        assert!(!text.contains("10.0.0") && text.len() == 16, "{text}");
    }

    #[test]
    fn the_latency_average_follows_recent_samples() {
        let load = Load::default();
        load.start();
        load.finish(1_000_000, Some(50_000));
        let first = load.score();
        load.start();
        load.finish(60_000_000, Some(1_000));
        assert!(load.score() < first / 10.0, "{first} then {}", load.score());
        load.start();
        assert!(load.score() > 1.9 * 1_000.0, "in-flight requests count");
    }
}
