//! Traffic management through the real binary in manifest mode, against several real backends of
//! one Service: cookie affinity (sessions stay on their endpoint, persistent sessions survive
//! scaling up and only a removed endpoint's sessions move), canary Ingresses (header, cookie, and a
//! weight stepped up under load the way Argo Rollouts and Flagger do it, with no failed request and
//! the split within 3 points over 10,000 requests), `upstream-hash-by`, and `load-balance: ewma`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::networking::v1::Ingress;
use support::client;
use support::manifests::service_with_endpoints;
use support::*;

const NS: &str = "shop";
const HOST: &str = "shop.test";

/// `n` echo backends of `service`, whose pods are `<service>-0`, `<service>-1`…
async fn pods(service: &str, n: usize) -> Vec<EchoServer> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(
            EchoServer::start(EchoIdentity {
                namespace: NS.into(),
                service: service.into(),
                pod: format!("{service}-{i}"),
                ..Default::default()
            })
            .await,
        );
    }
    all
}

/// Writes `service` with these backends as its ready endpoints.
fn endpoints(dir: &ManifestDir, service: &str, backends: &[&EchoServer]) {
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr()).collect();
    let svc = service_with_endpoints(NS, service, 80, Some("http"), &addrs, true);
    dir.write(&format!("svc-{service}.yaml"), &svc.objects());
}

fn ingress(name: &str, service: &str, annotations: &[(&str, &str)]) -> Ingress {
    IngressBuilder::new(NS, name)
        .prefix(Some(HOST), "/", service)
        .nginx_annotations(annotations)
        .build()
}

/// Service `app` with `total` pods, of which the first `serving` are its endpoints, behind one
/// Ingress with these annotations, served by a started controller.
async fn app_with(
    total: usize,
    serving: usize,
    annotations: &[(&str, &str)],
) -> (ManifestDir, Vec<EchoServer>, Controller) {
    let dir = ManifestDir::new();
    let app = pods("app", total).await;
    endpoints(&dir, "app", &app.iter().take(serving).collect::<Vec<_>>());
    dir.write("ingress.yaml", &[&ingress("app", "app", annotations)]);
    let ctl = Controller::start(dir.path(), &[]).await;
    (dir, app, ctl)
}

/// One request on a connection of its own, with extra headers.
async fn get(ctl: &Controller, path: &str, headers: &[(&str, &str)]) -> Captured {
    let req = headers
        .iter()
        .fold(request("GET", HOST, path), |r, (k, v)| r.header(k, v));
    client::http_send(ctl.addrs.http, req).await
}

/// The `name=value` of the response's `Set-Cookie`, if any.
fn session_cookie(r: &Captured) -> Option<String> {
    r.header("set-cookie")
        .map(|c| c.split(';').next().unwrap_or("").to_string())
}

/// Changes files and waits until the change is live.
async fn change(ctl: &Controller, write: impl FnOnce()) {
    let generation = ctl.generation();
    write();
    ctl.wait_for_generation(generation + 1).await;
}

/// Starts `n` sessions: for each, the pod it landed on and its cookie.
async fn sessions(ctl: &Controller, n: usize) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for _ in 0..n {
        let r = get(ctl, "/", &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let cookie = session_cookie(&r).expect("a new session gets a cookie");
        all.push((r.echo().pod, cookie));
    }
    all
}

/// Where each session goes now, and whether it was handed a new cookie.
async fn revisit(ctl: &Controller, sessions: &[(String, String)]) -> Vec<(String, bool)> {
    let mut all = Vec::new();
    for (_, cookie) in sessions {
        let r = get(ctl, "/", &[("cookie", cookie)]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        all.push((r.echo().pod, r.header("set-cookie").is_some()));
    }
    all
}

#[tokio::test]
async fn persistent_affinity_keeps_sessions_when_scaling_up_and_moves_only_a_removed_endpoints() {
    let (dir, app, ctl) = app_with(
        4,
        3,
        &[
            ("affinity", "cookie"),
            ("affinity-mode", "persistent"),
            ("session-cookie-name", "route"),
            ("session-cookie-max-age", "3600"),
        ],
    )
    .await;

    let before = sessions(&ctl, 60).await;
    let first = get(&ctl, "/", &[]).await;
    let attributes = first.header("set-cookie").unwrap();
    assert!(attributes.starts_with("route="), "{attributes}");
    assert!(
        attributes.ends_with("; Path=/; Max-Age=3600; HttpOnly"),
        "{attributes}"
    );
    for addr in app.iter().map(|a| a.addr()) {
        for form in [addr.to_string(), addr.port().to_string()] {
            assert!(!attributes.contains(&form), "{attributes} reveals {form}");
        }
    }
    let pods_used: BTreeSet<&str> = before.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        pods_used.len(),
        3,
        "new sessions are balanced: {pods_used:?}"
    );
    let expected: Vec<(String, bool)> = before.iter().map(|(p, _)| (p.clone(), false)).collect();
    assert_eq!(revisit(&ctl, &before).await, expected, "sessions stay put");

    change(&ctl, || {
        endpoints(&dir, "app", &[&app[0], &app[1], &app[2], &app[3]])
    })
    .await;
    assert_eq!(
        revisit(&ctl, &before).await,
        expected,
        "3 → 4 endpoints: no session moves"
    );
    let after: BTreeSet<String> = sessions(&ctl, 40)
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(
        after.contains("app-3"),
        "new sessions reach the new endpoint: {after:?}"
    );

    change(&ctl, || {
        endpoints(&dir, "app", &[&app[0], &app[2], &app[3]])
    })
    .await;
    for ((was, _), (now, new_cookie)) in before.iter().zip(revisit(&ctl, &before).await) {
        if was == "app-1" {
            assert!(
                now != "app-1" && new_cookie,
                "a removed endpoint's session moves"
            );
        } else {
            assert_eq!((&now, new_cookie), (was, false), "other sessions stay");
        }
    }

    let forged = get(
        &ctl,
        "/",
        &[("cookie", "route=127.0.0.1:1.0000000000000000")],
    )
    .await;
    assert_eq!(forged.status, 200);
    assert!(
        forged.header("set-cookie").is_some(),
        "a forged value starts a new session"
    );
}

#[tokio::test]
async fn balanced_affinity_moves_sessions_only_onto_a_new_endpoint() {
    let (dir, app, ctl) = app_with(4, 3, &[("affinity", "cookie")]).await;

    let before = sessions(&ctl, 80).await;
    change(&ctl, || {
        endpoints(&dir, "app", &[&app[0], &app[1], &app[2], &app[3]])
    })
    .await;
    let mut moved = 0;
    for ((was, _), (now, new_cookie)) in before.iter().zip(revisit(&ctl, &before).await) {
        assert!(!new_cookie);
        if &now != was {
            assert_eq!(now, "app-3", "a session moved between old endpoints");
            moved += 1;
        }
    }
    assert!(
        (5..=40).contains(&moved),
        "about a quarter of the sessions move: {moved}"
    );
}

/// Counts the pods that answer `n` requests sent by `concurrency` keep-alive connections; every
/// answer must be a 200.
async fn split(ctl: &Controller, n: usize, concurrency: usize) -> BTreeMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let addr = ctl.addrs.http;
        tasks.push(tokio::spawn(async move {
            let mut conn = client::http_connection(addr).await;
            let mut seen = BTreeMap::<String, usize>::new();
            for _ in 0..n / concurrency {
                let r = conn.send(request("GET", HOST, "/")).await;
                assert_eq!(r.status, 200, "{}", r.text());
                *seen.entry(r.echo().service).or_default() += 1;
            }
            seen
        }));
    }
    let mut total = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.expect("load task") {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

#[tokio::test]
async fn a_canary_weight_stepped_up_under_load_fails_no_request_and_splits_as_asked() {
    let dir = ManifestDir::new();
    let app = pods("app", 2).await;
    let canary = pods("app-canary", 2).await;
    endpoints(&dir, "app", &[&app[0], &app[1]]);
    endpoints(&dir, "app-canary", &[&canary[0], &canary[1]]);
    dir.write("ingress.yaml", &[&ingress("app", "app", &[])]);
    let ctl = Controller::start(dir.path(), &[]).await;

    // Background load for the whole rollout, on keep-alive connections.
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (addr, stop) = (ctl.addrs.http, stop.clone());
        load.push(tokio::spawn(async move {
            let mut conn = client::http_connection(addr).await;
            let mut failed = Vec::new();
            for _ in 0..200_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match conn.try_send(request("GET", HOST, "/")).await {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failed.push(format!("{} {}", r.status, r.text())),
                    Err(e) => failed.push(e),
                }
            }
            failed
        }));
    }

    // The generated `-canary` Ingress, its weight changed step by step as a rollout does.
    let canary_at = |weight: &str| {
        ingress(
            "app-canary",
            "app-canary",
            &[("canary", "true"), ("canary-weight", weight)],
        )
    };
    for weight in [0usize, 10, 30, 50, 100] {
        change(&ctl, || {
            dir.write("canary.yaml", &[&canary_at(&weight.to_string())]);
        })
        .await;
        if weight == 30 || weight == 100 {
            let n = 10_000;
            let seen = split(&ctl, n, 8).await;
            let to_canary = seen.get("app-canary").copied().unwrap_or(0);
            let share = to_canary as f64 * 100.0 / n as f64;
            eprintln!("canary weight {weight}: {share:.2} % of {n} requests");
            assert!(
                (share - weight as f64).abs() <= 3.0,
                "weight {weight}: {share:.1} % went to the canary ({seen:?})"
            );
        }
    }
    // Promotion: the primary takes the new version and the canary goes away.
    change(&ctl, || endpoints(&dir, "app", &[&canary[0], &canary[1]])).await;
    change(&ctl, || dir.remove("canary.yaml")).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let failed = task.await.expect("load task");
        assert!(failed.is_empty(), "failed during the rollout: {failed:?}");
    }
}

#[tokio::test]
async fn canary_header_and_cookie_beat_the_weight_as_in_ingress_nginx() {
    let dir = ManifestDir::new();
    let app = pods("app", 1).await;
    let canary = pods("app-canary", 1).await;
    endpoints(&dir, "app", &[&app[0]]);
    endpoints(&dir, "app-canary", &[&canary[0]]);
    dir.write(
        "ingress.yaml",
        &[
            &ingress("app", "app", &[]),
            &ingress(
                "app-canary",
                "app-canary",
                &[
                    ("canary", "true"),
                    ("canary-by-header", "X-Canary"),
                    ("canary-by-cookie", "canary"),
                    ("canary-weight", "0"),
                ],
            ),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    let service = async |headers: &[(&str, &str)]| get(&ctl, "/", headers).await.echo().service;
    assert_eq!(service(&[]).await, "app");
    assert_eq!(service(&[("x-canary", "always")]).await, "app-canary");
    assert_eq!(service(&[("cookie", "canary=always")]).await, "app-canary");
    assert_eq!(
        service(&[("x-canary", "never"), ("cookie", "canary=always")]).await,
        "app",
        "the header is decided before the cookie"
    );
    assert_eq!(
        service(&[("x-canary", "other"), ("cookie", "canary=always")]).await,
        "app-canary"
    );

    // The canary's requests count for its Service, under the primary Ingress.
    let out = support::tools::curl(&[&format!("http://{}/metrics", ctl.addrs.admin)]).await;
    let counted = |service: &str| -> f64 {
        out.stdout
            .lines()
            .filter(|l| l.starts_with("portcullis_requests_total{"))
            .filter(|l| l.contains(&format!("service=\"{service}\"")))
            .filter(|l| l.contains("ingress=\"app\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        (counted("app"), counted("app-canary")),
        (2.0, 3.0),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn affinity_keeps_a_session_on_the_side_of_the_canary_it_started_on() {
    let dir = ManifestDir::new();
    let app = pods("app", 2).await;
    let canary = pods("app-canary", 2).await;
    endpoints(&dir, "app", &[&app[0], &app[1]]);
    endpoints(&dir, "app-canary", &[&canary[0], &canary[1]]);
    let sticky = [("affinity", "cookie"), ("affinity-mode", "persistent")];
    let canary_at = |weight: &str| {
        let mut a = vec![("canary", "true"), ("canary-weight", weight)];
        a.extend(sticky);
        ingress("app-canary", "app-canary", &a)
    };
    dir.write("ingress.yaml", &[&ingress("app", "app", &sticky)]);
    dir.write("canary.yaml", &[&canary_at("50")]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let mut started = Vec::new();
    for _ in 0..40 {
        let r = get(&ctl, "/", &[]).await;
        started.push((r.echo().pod, session_cookie(&r).expect("a new session")));
    }
    let sides: BTreeSet<bool> = started
        .iter()
        .map(|(p, _)| p.starts_with("app-canary"))
        .collect();
    assert_eq!(sides.len(), 2, "at 50 % both sides get sessions");
    // Whatever the weight now says, each session stays where it began.
    for weight in ["0", "100"] {
        change(&ctl, || dir.write("canary.yaml", &[&canary_at(weight)])).await;
        for (pod, cookie) in &started {
            let r = get(&ctl, "/", &[("cookie", cookie)]).await;
            assert_eq!(&r.echo().pod, pod, "weight {weight}");
        }
    }
}

#[tokio::test]
async fn upstream_hash_by_sends_one_key_to_one_endpoint() {
    let (_dir, _app, ctl) =
        app_with(3, 3, &[("upstream-hash-by", "$arg_user$http_x_tenant")]).await;
    let mut by_user = BTreeMap::<String, BTreeSet<String>>::new();
    for round in 0..3 {
        for user in 0..30 {
            let path = format!("/p{round}?user=u{user}");
            let pod = get(&ctl, &path, &[("x-tenant", "t1")]).await.echo().pod;
            by_user.entry(format!("u{user}")).or_default().insert(pod);
        }
    }
    assert!(by_user.values().all(|pods| pods.len() == 1), "{by_user:?}");
    let used: BTreeSet<&String> = by_user.values().flatten().collect();
    assert_eq!(used.len(), 3, "keys spread over every endpoint: {used:?}");
}

#[tokio::test]
async fn ewma_serves_from_every_healthy_endpoint() {
    let (_dir, _app, ctl) = app_with(3, 3, &[("load-balance", "ewma")]).await;
    let mut conn = client::http_connection(ctl.addrs.http).await;
    let mut used = BTreeSet::new();
    for _ in 0..300 {
        let r = conn.send(request("GET", HOST, "/")).await;
        assert_eq!(r.status, 200);
        used.insert(r.echo().pod);
    }
    assert_eq!(used.len(), 3, "{used:?}");
}

/// A session whose endpoint stops answering is served by another one (`proxy-next-upstream`); with
/// `session-cookie-change-on-failure` its cookie moves there, without it the cookie is left alone.
#[tokio::test]
async fn a_failed_sessions_cookie_moves_only_with_change_on_failure() {
    for change_on_failure in [true, false] {
        let flag = change_on_failure.to_string();
        let (_dir, mut app, ctl) = app_with(
            2,
            2,
            &[
                ("affinity", "cookie"),
                ("affinity-mode", "persistent"),
                ("session-cookie-change-on-failure", &flag),
            ],
        )
        .await;
        let started = sessions(&ctl, 20).await;
        let (_, cookie) = started
            .iter()
            .find(|(pod, _)| pod == "app-0")
            .expect("20 sessions over 2 endpoints land on both")
            .clone();
        drop(app.remove(0));
        let r = get(&ctl, "/", &[("cookie", &cookie)]).await;
        assert_eq!(r.status, 200, "retried on the other endpoint: {}", r.text());
        assert_eq!(r.echo().pod, "app-1");
        let moved = session_cookie(&r);
        if !change_on_failure {
            assert_eq!(moved, None, "the session stays where it was");
            continue;
        }
        let moved = moved.expect("the session follows the endpoint that answered");
        assert_ne!(moved, cookie);
        for _ in 0..5 {
            let again = get(&ctl, "/", &[("cookie", &moved)]).await;
            assert_eq!(again.echo().pod, "app-1");
            assert_eq!(session_cookie(&again), None, "the moved session is kept");
        }
    }
}
