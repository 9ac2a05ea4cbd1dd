use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::*;
use crate::model::NamespacedName;
use crate::model::annotations::balancing::AffinityMode;
use crate::model::annotations::canary::Canary;
use crate::proxy::balance::tests::cookie;
use crate::proxy::balance::{Facts, choose};
use crate::proxy::{ClientView, Scheme};

fn backend(service: &str, first: u8) -> Arc<Backend> {
    let endpoints = (0..2)
        .map(|i| SocketAddr::from(([10, 0, first, 1 + i], 8080)))
        .collect();
    Arc::new(Backend::new(
        NamespacedName::new("ns", service),
        "80".into(),
        endpoints,
    ))
}

fn canary(rule: Canary, balancing: Balancing) -> CanaryRoute {
    CanaryRoute {
        ingress: NamespacedName::new("ns", "app-canary"),
        rule,
        backend: backend("app-canary", 2),
        balancing,
    }
}

fn rule(weight: u32) -> Canary {
    Canary {
        header: None,
        cookie: None,
        weight,
        weight_total: 100,
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}

/// Decides with a weight roll that would send the request to the canary only at weight 100.
fn decide(c: &CanaryRoute, h: &[(&str, &str)]) -> bool {
    takes(
        c,
        &backend("app", 1),
        &Balancing::RoundRobin,
        &headers(h),
        |t| t,
    )
}

#[test]
fn weight_splits_requests_within_a_percent_over_many_rolls() {
    let primary = backend("app", 1);
    for (weight, total) in [(0, 100), (10, 100), (50, 100), (100, 100), (333, 1000)] {
        let c = canary(
            Canary {
                weight_total: total,
                ..rule(weight)
            },
            Balancing::RoundRobin,
        );
        let mut rng = fastrand::Rng::with_seed(u64::from(weight));
        let n = 100_000;
        let hits = (0..n)
            .filter(|_| {
                takes(
                    &c,
                    &primary,
                    &Balancing::RoundRobin,
                    &HeaderMap::new(),
                    |t| rng.u32(1..=t),
                )
            })
            .count();
        let expected = n * weight as usize / total as usize;
        assert!(
            hits.abs_diff(expected) <= n / 100,
            "{weight}/{total}: {hits}"
        );
    }
}

#[test]
fn header_value_match_goes_to_canary_and_anything_else_falls_through() {
    let c = canary(
        Canary {
            header: Some((
                HeaderName::from_static("x-canary"),
                HeaderRule::Value("on".into()),
            )),
            cookie: Some("canary".into()),
            ..rule(0)
        },
        Balancing::RoundRobin,
    );
    assert!(decide(&c, &[("x-canary", "on")]));
    assert!(
        !decide(&c, &[("x-canary", "always")]),
        "a value rule has no always"
    );
    assert!(
        decide(&c, &[("x-canary", "off"), ("cookie", "canary=always")]),
        "a mismatch falls through to the cookie"
    );
}

#[test]
fn header_always_and_never_beat_the_cookie_and_the_weight() {
    let c = canary(
        Canary {
            header: Some((HeaderName::from_static("x-canary"), HeaderRule::AlwaysNever)),
            cookie: Some("canary".into()),
            ..rule(100)
        },
        Balancing::RoundRobin,
    );
    assert!(!decide(
        &c,
        &[("x-canary", "never"), ("cookie", "canary=always")]
    ));
    assert!(decide(
        &c,
        &[("x-canary", "always"), ("cookie", "canary=never")]
    ));
    assert!(!decide(
        &c,
        &[("x-canary", "maybe"), ("cookie", "canary=never")]
    ));
    assert!(
        decide(&c, &[("x-canary", "maybe"), ("cookie", "canary=other")]),
        "weight 100"
    );
}

#[test]
fn header_patterns_match_anywhere_and_a_broken_pattern_means_primary() {
    let pattern = |p: HeaderRule| {
        canary(
            Canary {
                header: Some((HeaderName::from_static("x-region"), p)),
                ..rule(100)
            },
            Balancing::RoundRobin,
        )
    };
    let c = pattern(HeaderRule::Pattern(
        regex::Regex::new("eu-(west|north)").unwrap(),
    ));
    assert!(decide(&c, &[("x-region", "prod-eu-west-1")]));
    let broken = pattern(HeaderRule::InvalidPattern);
    assert!(!decide(&broken, &[("x-region", "anything")]));
    assert!(
        decide(&broken, &[]),
        "without the header, the weight decides"
    );
}

#[test]
fn an_affinity_cookie_keeps_a_session_on_its_side() {
    let sticky = Balancing::Sticky(Arc::new(cookie(AffinityMode::Persistent)));
    let primary = backend("app", 1);
    let c = canary(rule(50), sticky.clone());
    let client = ClientView {
        scheme: Scheme::Http,
        ip: "192.0.2.1".parse().unwrap(),
        trusted_peer: false,
    };
    let session = |b: &Backend| {
        let h = HeaderMap::new();
        let uri = http::Uri::from_static("/");
        let facts = Facts {
            headers: &h,
            uri: &uri,
            method: &http::Method::GET,
            client: &client,
            host: "shop.example",
            local_port: 80,
            cookie_path: "/",
        };
        let set = choose(b, &sticky, &facts).unwrap().set_cookie.unwrap();
        set.to_str().unwrap().split(';').next().unwrap().to_string()
    };
    let on_primary = session(&primary);
    let on_canary = session(&c.backend);
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..1_000 {
        let mut roll = |t| rng.u32(1..=t);
        assert!(!takes(
            &c,
            &primary,
            &sticky,
            &headers(&[("cookie", &on_primary)]),
            &mut roll
        ));
        assert!(takes(
            &c,
            &primary,
            &sticky,
            &headers(&[("cookie", &on_canary)]),
            &mut roll
        ));
    }
}

#[test]
fn a_canary_without_endpoints_takes_nothing() {
    let mut c = canary(rule(100), Balancing::RoundRobin);
    c.backend = Arc::new(Backend::new(
        NamespacedName::new("ns", "x"),
        "80".into(),
        vec![],
    ));
    assert!(!decide(&c, &[]));
}
