use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::model::NamespacedName;
use crate::model::annotations::external_auth::Template;
use crate::proxy::Scheme;

fn backend(n: u8) -> Backend {
    let endpoints = (0..n)
        .map(|i| SocketAddr::from(([10, 0, 0, 1 + i], 8080)))
        .collect();
    Backend::new(NamespacedName::new("ns", "app"), "80".into(), endpoints).keyed(b"service-uid")
}

/// A session cookie with ingress-nginx's defaults.
pub(in crate::proxy) fn cookie(mode: AffinityMode) -> SessionCookie {
    SessionCookie {
        mode,
        name: "INGRESSCOOKIE".into(),
        path: None,
        domain: None,
        samesite: None,
        conditional_samesite_none: false,
        secure: false,
        expires: None,
        max_age: None,
        change_on_failure: false,
    }
}

struct Req {
    headers: HeaderMap,
    uri: http::Uri,
    client: ClientView,
}

impl Req {
    fn new(uri: &str, headers: &[(&str, &str)]) -> Req {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        Req {
            headers: map,
            uri: uri.parse().unwrap(),
            client: ClientView {
                scheme: Scheme::Http,
                ip: "192.0.2.7".parse().unwrap(),
                trusted_peer: false,
            },
        }
    }

    fn facts(&self) -> Facts<'_> {
        Facts {
            headers: &self.headers,
            uri: &self.uri,
            method: &http::Method::GET,
            client: &self.client,
            host: "shop.example",
            local_port: 80,
            cookie_path: "/cart",
        }
    }
}

/// The `name=value` part of a `Set-Cookie`.
fn cookie_pair(set_cookie: &HeaderValue) -> String {
    set_cookie
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// Starts `n` sessions; each is the endpoint it was given and the cookie it was given.
fn sessions(b: &Backend, c: &SessionCookie, n: usize) -> Vec<(SocketAddr, String)> {
    let balancing = Balancing::Sticky(Arc::new(c.clone()));
    (0..n)
        .map(|_| {
            let choice = choose(b, &balancing, &Req::new("/", &[]).facts()).unwrap();
            (choice.endpoint, cookie_pair(&choice.set_cookie.unwrap()))
        })
        .collect()
}

/// Where a session with this cookie goes now, and whether it was given a new cookie.
fn revisit(b: &Backend, c: &SessionCookie, pair: &str) -> (SocketAddr, bool) {
    let balancing = Balancing::Sticky(Arc::new(c.clone()));
    let req = Req::new("/", &[("cookie", &format!("other=1; {pair}"))]);
    let choice = choose(b, &balancing, &req.facts()).unwrap();
    (choice.endpoint, choice.set_cookie.is_some())
}

#[test]
fn a_session_stays_on_its_endpoint_in_both_modes() {
    for mode in [AffinityMode::Persistent, AffinityMode::Balanced] {
        let (b, c) = (backend(5), cookie(mode));
        for (endpoint, pair) in sessions(&b, &c, 50) {
            for _ in 0..5 {
                assert_eq!(revisit(&b, &c, &pair), (endpoint, false), "{mode:?} {pair}");
            }
        }
    }
}

#[test]
fn new_sessions_are_spread_over_all_endpoints() {
    for mode in [AffinityMode::Persistent, AffinityMode::Balanced] {
        let (b, c) = (backend(4), cookie(mode));
        let mut per: HashMap<SocketAddr, usize> = HashMap::new();
        for (endpoint, _) in sessions(&b, &c, 4_000) {
            *per.entry(endpoint).or_default() += 1;
        }
        assert_eq!(per.len(), 4, "{mode:?}");
        assert!(
            per.values().all(|n| (800..1_200).contains(n)),
            "{mode:?} {per:?}"
        );
    }
}

#[test]
fn the_cookie_reveals_no_address() {
    let (b, c) = (backend(2), cookie(AffinityMode::Persistent));
    for (_, pair) in sessions(&b, &c, 10) {
        assert!(!pair.contains("10.0.0") && !pair.contains("8080"), "{pair}");
        assert_eq!(pair.len(), "INGRESSCOOKIE=".len() + 33, "{pair}");
    }
}

#[test]
fn forged_and_foreign_cookies_are_balanced_anew() {
    let (b, c) = (backend(3), cookie(AffinityMode::Persistent));
    let other = Backend::new(
        NamespacedName::new("ns", "other"),
        "80".into(),
        b.endpoints.to_vec(),
    )
    .keyed(b"service-uid");
    let (_, foreign) = sessions(&other, &c, 1).remove(0);
    let tag = String::from_utf8(b.tag().to_vec()).unwrap();
    for forged in [
        "INGRESSCOOKIE=10.0.0.1:8080".to_string(),
        format!("INGRESSCOOKIE=0123456789abcdef.{tag}"),
        format!("INGRESSCOOKIE=../../etc.{tag}"),
        foreign,
    ] {
        let (_, new_cookie) = revisit(&b, &c, &forged);
        assert!(new_cookie, "{forged} must get a new session");
    }
}

#[test]
fn persistent_sessions_survive_scaling_up_and_only_removed_endpoints_move() {
    let c = cookie(AffinityMode::Persistent);
    let three = backend(3);
    let before = sessions(&three, &c, 300);
    let four = backend(4);
    for (endpoint, pair) in &before {
        assert_eq!(
            revisit(&four, &c, pair),
            (*endpoint, false),
            "3 → 4 moved {pair}"
        );
    }
    // 10.0.0.2 goes away: only its sessions move, and they get a new cookie.
    let gone = three.endpoints[1];
    let two = Backend::new(
        NamespacedName::new("ns", "app"),
        "80".into(),
        vec![three.endpoints[0], three.endpoints[2]],
    )
    .keyed(b"service-uid");
    for (endpoint, pair) in &before {
        let (now, new_cookie) = revisit(&two, &c, pair);
        if *endpoint == gone {
            assert!(now != gone && new_cookie);
        } else {
            assert_eq!((now, new_cookie), (*endpoint, false));
        }
    }
}

#[test]
fn balanced_sessions_move_only_to_a_new_endpoint() {
    let c = cookie(AffinityMode::Balanced);
    let before = sessions(&backend(3), &c, 3_000);
    let four = backend(4);
    let added = four.endpoints[3];
    let mut moved = 0;
    for (endpoint, pair) in &before {
        let (now, new_cookie) = revisit(&four, &c, pair);
        assert!(!new_cookie);
        if now != *endpoint {
            assert_eq!(now, added, "moved between old endpoints");
            moved += 1;
        }
    }
    assert!(
        (450..1_050).contains(&moved),
        "about a quarter move: {moved}"
    );
}

#[test]
fn cookie_attributes_follow_ingress_nginx() {
    let b = backend(2);
    let attributes = |c: SessionCookie, scheme: Scheme, ua: &str| {
        let mut req = Req::new("/", &[("user-agent", ua)]);
        req.client.scheme = scheme;
        let balancing = Balancing::Sticky(Arc::new(c));
        let choice = choose(&b, &balancing, &req.facts()).unwrap();
        let v = choice.set_cookie.unwrap().to_str().unwrap().to_string();
        v.split_once("; ").unwrap().1.to_string()
    };
    let plain = cookie(AffinityMode::Balanced);
    assert_eq!(
        attributes(plain.clone(), Scheme::Http, "curl"),
        "Path=/cart; HttpOnly"
    );
    assert_eq!(
        attributes(plain.clone(), Scheme::Https, "curl"),
        "Path=/cart; Secure; HttpOnly",
        "HTTPS requests get Secure"
    );
    let full = SessionCookie {
        path: Some("/".into()),
        domain: Some("example.com".into()),
        samesite: Some(SameSite::None),
        conditional_samesite_none: true,
        secure: true,
        max_age: Some(60),
        expires: Some(120),
        ..plain
    };
    let modern = attributes(
        full.clone(),
        Scheme::Http,
        "Mozilla/5.0 Chrome/120.0 Safari/537.36",
    );
    assert!(
        modern.starts_with("Path=/; Domain=example.com; Expires="),
        "{modern}"
    );
    assert!(
        modern.ends_with(" GMT; Max-Age=60; Secure; HttpOnly; SameSite=None"),
        "{modern}"
    );
    let old = attributes(
        full,
        Scheme::Http,
        "Mozilla/5.0 Chrome/62.0.3202.94 Safari/537.36",
    );
    assert!(
        old.ends_with("Secure; HttpOnly"),
        "no SameSite=None for Chrome 62: {old}"
    );
}

#[test]
fn hashing_sends_one_key_to_one_endpoint_and_spreads_keys() {
    let b = backend(4);
    let by = |t: &str| Balancing::Hash(Template::parse(t).unwrap());
    let pick = |balancing: &Balancing, uri: &str, headers: &[(&str, &str)]| {
        choose(&b, balancing, &Req::new(uri, headers).facts())
            .unwrap()
            .endpoint
    };
    let uri = by("$request_uri");
    let mut seen = HashMap::<SocketAddr, usize>::new();
    for i in 0..2_000 {
        let path = format!("/item/{i}");
        let first = pick(&uri, &path, &[]);
        assert_eq!(pick(&uri, &path, &[]), first);
        *seen.entry(first).or_default() += 1;
    }
    assert!(seen.values().all(|n| (350..650).contains(n)), "{seen:?}");

    let user = by("$http_x_user$cookie_team:$arg_id");
    let a = pick(
        &user,
        "/a?id=7",
        &[("x-user", "ann"), ("cookie", "team=red")],
    );
    for path in ["/b?id=7", "/c?x=1&id=7"] {
        assert_eq!(
            pick(&user, path, &[("x-user", "ann"), ("cookie", "team=red")]),
            a
        );
    }
    let others: std::collections::HashSet<_> = (0..40)
        .map(|i| pick(&user, &format!("/a?id={i}"), &[("x-user", "bob")]))
        .collect();
    assert!(others.len() > 1, "other keys reach other endpoints");
}

#[test]
fn two_choices_prefer_the_less_loaded_endpoint() {
    let mut rng = fastrand::Rng::with_seed(7);
    let scores = [5.0, 1.0, 5.0, 5.0];
    let mut wins = [0; 4];
    for _ in 0..10_000 {
        wins[two_choices(4, |i| scores[i], &mut rng)] += 1;
    }
    // Endpoint 1 wins whenever it is one of the two: 1 - (3/4 · 2/3) = half the time.
    assert!((4_700..5_300).contains(&wins[1]), "{wins:?}");
    assert!(
        wins.iter().all(|w| *w > 1_000),
        "the others still get requests: {wins:?}"
    );
}

#[test]
fn ewma_moves_load_away_from_a_slow_endpoint() {
    let b = backend(3);
    for (i, latency) in [(0, 200_000), (1, 2_000), (2, 2_000)] {
        b.loads()[i].start();
        b.loads()[i].finish(b.clock_us(), Some(latency));
    }
    let mut per = [0; 3];
    for _ in 0..3_000 {
        let req = Req::new("/", &[]);
        let choice = choose(&b, &Balancing::Ewma, &req.facts()).unwrap();
        let i = b
            .endpoints
            .iter()
            .position(|e| *e == choice.endpoint)
            .unwrap();
        per[i] += 1;
    }
    assert!(per[0] < 300, "the slow endpoint loses every draw: {per:?}");
}
