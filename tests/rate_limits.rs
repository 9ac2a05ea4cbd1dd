//! Rate limits (`limit-rps`, `limit-rpm`, `limit-burst-multiplier`, `limit-whitelist`), proven on real
//! requests through the real binary in manifest mode against a real backend: a burst beyond the
//! limit is refused (503, or 429 when configured), other clients and whitelisted ones are not
//! affected, the bucket refills, the client a trusted proxy reports is the one limited, buckets
//! survive a configuration rebuild, and an invalid limit fails closed. `limit-rate` paces a response
//! body, after its first `limit-rate-after` kilobytes, which come at once.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::api::networking::v1::Ingress;
use support::client::{self, Sender};
use support::manifests;
use support::tools;
use support::*;

const NS: &str = "web";
const P: &str = "nginx.ingress.kubernetes.io/";

/// An Ingress for `host` on Service `app` with these `nginx.ingress.kubernetes.io/` annotations.
fn ingress(name: &str, host: &str, annotations: &[(&str, &str)]) -> Ingress {
    IngressBuilder::new(NS, name)
        .route(Some(host), "app")
        .nginx_annotations(annotations)
        .build()
}

/// The status of one `GET /` from a chosen loopback source address, with extra headers.
async fn status_from(ctl: &Controller, source: u8, host: &str, headers: &[(&str, &str)]) -> u16 {
    status_of(ctl, source, host, "/", headers).await
}

async fn status_of(
    ctl: &Controller,
    source: u8,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> u16 {
    let tcp = client::tcp(
        ctl.addrs.http,
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, source))),
    )
    .await
    .expect("connect");
    let req = headers
        .iter()
        .fold(request("GET", host, path), |r, (k, v)| r.header(k, v));
    let r = Sender::http1(tcp).await.expect("handshake").send(req).await;
    r.status.as_u16()
}

/// The statuses of `n` requests sent one after another from `source`.
async fn burst(ctl: &Controller, source: u8, host: &str, n: usize) -> Vec<u16> {
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        seen.push(status_from(ctl, source, host, &[]).await);
    }
    seen
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

fn config_file(dir: &tempfile::TempDir, yaml: &str) -> String {
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_burst_beyond_the_limit_gets_503_per_client_and_whitelisted_clients_pass() {
    let dir = ManifestDir::new();
    let _app = manifests::echo_service(&dir, NS, "app").await;
    // 6 a minute with a multiplier of 1: 7 requests pass at once (burst + 1, as nginx), then one
    // every 10 s, far slower than this test.
    dir.write(
        "ingress.yaml",
        &[&IngressBuilder::new(NS, "limited")
            .route(Some("limited.test"), "app")
            .prefix(Some("other.test"), "/", "app")
            .annotation(&format!("{P}limit-rpm"), "6")
            .annotation(&format!("{P}limit-burst-multiplier"), "1")
            .annotation(&format!("{P}limit-whitelist"), "127.0.0.9/32")
            .build()],
    );
    let ctl = Controller::start(dir.path(), &[]).await;

    let first = burst(&ctl, 5, "limited.test", 10).await;
    assert_eq!(first[..7], [200; 7], "{first:?}");
    assert_eq!(first[7..], [503; 3], "{first:?}");
    assert_eq!(
        status_from(&ctl, 5, "other.test", &[]).await,
        503,
        "all hosts of the Ingress share the client's bucket"
    );
    assert_eq!(
        count(&burst(&ctl, 6, "limited.test", 10).await, 200),
        7,
        "another client has its own bucket"
    );
    assert_eq!(
        burst(&ctl, 9, "limited.test", 20).await,
        [200; 20],
        "a whitelisted client is never limited"
    );
}

#[tokio::test]
async fn the_bucket_refills_and_429_can_be_chosen() {
    let dir = ManifestDir::new();
    let _app = manifests::echo_service(&dir, NS, "app").await;
    // 4 a second, multiplier 1: 5 at once, then one every 250 ms.
    dir.write(
        "ingress.yaml",
        &[&ingress(
            "fast",
            "fast.test",
            &[("limit-rps", "4"), ("limit-burst-multiplier", "1")],
        )],
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_file(&config_dir, "limits:\n  rate-limit-status: 429\n");
    let ctl = Controller::start(dir.path(), &["--config", &config]).await;

    let first = burst(&ctl, 5, "fast.test", 12).await;
    assert!(count(&first, 200) >= 5, "{first:?}");
    assert!(count(&first, 429) >= 1, "{first:?}");
    assert_eq!(count(&first, 503), 0, "{first:?}");
    // Idle for a second: the bucket is full again.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let again = burst(&ctl, 5, "fast.test", 5).await;
    assert_eq!(again, [200; 5]);
}

#[tokio::test]
async fn the_client_a_trusted_proxy_reports_is_the_one_limited() {
    let dir = ManifestDir::new();
    let _app = manifests::echo_service(&dir, NS, "app").await;
    dir.write(
        "ingress.yaml",
        &[&ingress(
            "lb",
            "lb.test",
            &[
                ("limit-rpm", "2"),
                ("limit-burst-multiplier", "1"),
                ("limit-whitelist", "198.51.100.9"),
            ],
        )],
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_file(&config_dir, "trusted-proxies: [127.0.0.7/32]\n");
    let ctl = Controller::start(dir.path(), &["--config", &config]).await;
    let via_lb = async |client: &str| {
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(status_from(&ctl, 7, "lb.test", &[("x-forwarded-for", client)]).await);
        }
        seen
    };
    assert_eq!(via_lb("198.51.100.1").await, [200, 200, 200, 503, 503]);
    assert_eq!(via_lb("198.51.100.2").await, [200, 200, 200, 503, 503]);
    assert_eq!(via_lb("198.51.100.9").await, [200; 5], "whitelisted");
    // From an untrusted peer the header is ignored: the peer itself is limited.
    let mut untrusted = Vec::new();
    for i in 0..5 {
        let xff = format!("203.0.113.{i}");
        untrusted.push(status_from(&ctl, 8, "lb.test", &[("x-forwarded-for", &xff)]).await);
    }
    assert_eq!(untrusted, [200, 200, 200, 503, 503]);
}

#[tokio::test]
async fn limit_connections_bounds_requests_in_progress_per_client() {
    let dir = ManifestDir::new();
    let _app = manifests::echo_service(&dir, NS, "app").await;
    dir.write(
        "ingress.yaml",
        &[&ingress("conn", "conn.test", &[("limit-connections", "2")])],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    let slow = format!("{}?ms=1500", backend::SLEEP);
    let meanwhile = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        (
            status_from(&ctl, 5, "conn.test", &[]).await,
            status_from(&ctl, 6, "conn.test", &[]).await,
        )
    };
    let (first, second, (third, other)) = tokio::join!(
        status_of(&ctl, 5, "conn.test", &slow, &[]),
        status_of(&ctl, 5, "conn.test", &slow, &[]),
        meanwhile,
    );
    assert_eq!((first, second), (200, 200));
    assert_eq!(third, 503, "a third request at once from the same client");
    assert_eq!(other, 200, "another client is not affected");
    assert_eq!(
        status_from(&ctl, 5, "conn.test", &[]).await,
        200,
        "finished requests are given back"
    );
}

#[tokio::test]
async fn buckets_survive_a_configuration_rebuild() {
    let dir = ManifestDir::new();
    let _app = manifests::echo_service(&dir, NS, "app").await;
    let limited = ingress(
        "limited",
        "limited.test",
        &[("limit-rpm", "3"), ("limit-burst-multiplier", "1")],
    );
    dir.write("ingress.yaml", &[&limited]);
    let ctl = Controller::start(dir.path(), &[]).await;
    assert_eq!(count(&burst(&ctl, 5, "limited.test", 6).await, 200), 4);

    let generation = ctl.generation();
    dir.write(
        "ingress.yaml",
        &[&limited, &ingress("added", "added.test", &[])],
    );
    ctl.wait_for_generation(generation + 1).await;
    assert_eq!(status_from(&ctl, 5, "added.test", &[]).await, 200);
    assert_eq!(
        status_from(&ctl, 5, "limited.test", &[]).await,
        503,
        "a rebuild must not hand out a fresh burst"
    );
}

#[tokio::test]
async fn an_invalid_limit_fails_closed_with_503_and_is_reported() {
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    dir.write(
        "ingresses.yaml",
        &[
            &IngressBuilder::new(NS, "broken")
                .route(Some("broken.test"), "app")
                .prefix(Some("other.test"), "/", "app")
                .annotation(&format!("{P}limit-rps"), "ten")
                .build(),
            &ingress("fine", "fine.test", &[("limit-rps", "100")]),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    ctl.wait_for_log(&["Ingress web/broken", "limit-rps", "answers 503"])
        .await;
    for host in ["broken.test", "other.test"] {
        assert_eq!(status_from(&ctl, 5, host, &[]).await, 503, "{host}");
    }
    assert!(app.seen().is_empty(), "never served without the limit");
    assert_eq!(status_from(&ctl, 5, "fine.test", &[]).await, 200);
    assert_eq!(
        tools::problems_metric(ctl.addrs.admin)
            .await
            .get("invalid-annotation"),
        Some(&1)
    );
}

/// When each part of a response body arrived: (time since the response head, bytes so far).
async fn download(ctl: &Controller, host: &str, path: &str) -> Vec<(Duration, usize)> {
    use http_body_util::BodyExt;
    let tcp = client::tcp(ctl.addrs.http, None).await.expect("connect");
    let mut sender = Sender::http1(tcp).await.expect("handshake");
    let mut resp = sender.send_streaming(request("GET", host, path)).await;
    assert_eq!(resp.status(), 200, "{host}");
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut total = 0;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), resp.body_mut().frame())
        .await
        .expect("the body keeps coming")
    {
        if let Ok(data) = frame.expect("body frame").into_data() {
            total += data.len();
            seen.push((started.elapsed(), total));
        }
    }
    seen
}

/// 256 KiB from the backend, in four 64 KiB chunks.
const QUARTER_MIB: &str = "/_echo/stream?chunks=4&size=65536";

#[tokio::test]
async fn limit_rate_paces_a_response_and_limit_rate_after_bytes_come_at_once() {
    let dir = ManifestDir::new();
    let _app = manifests::echo_service(&dir, NS, "app").await;
    dir.write(
        "ingresses.yaml",
        &[
            &ingress("slow", "slow.test", &[("limit-rate", "64")]),
            &ingress(
                "later",
                "later.test",
                &[("limit-rate", "64"), ("limit-rate-after", "128")],
            ),
            &ingress("open", "open.test", &[]),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    let took = |seen: &[(Duration, usize)]| {
        let (t, total) = *seen.last().expect("some body");
        assert_eq!(total, 256 * 1024, "the whole body");
        t
    };

    let open = took(&download(&ctl, "open.test", QUARTER_MIB).await);
    assert!(open < Duration::from_secs(1), "without a limit: {open:?}");

    // 256 KiB at 64 KiB/s: 4 s (never sooner; a busy machine may add a little).
    let (slow, later) = tokio::join!(
        download(&ctl, "slow.test", QUARTER_MIB),
        download(&ctl, "later.test", QUARTER_MIB)
    );
    let t = took(&slow);
    assert!(
        t >= Duration::from_millis(3900) && t < Duration::from_millis(5500),
        "256 KiB at 64 KiB/s took {t:?}"
    );
    let halfway = slow.iter().find(|(_, n)| *n >= 128 * 1024).map(|(t, _)| *t);
    assert!(
        halfway.is_some_and(|h| h >= Duration::from_millis(1900)),
        "evenly paced: the first 128 KiB after {halfway:?}"
    );

    // The first 128 KiB at once, the other 128 KiB at 64 KiB/s: 2 s.
    let free = later
        .iter()
        .find(|(_, n)| *n >= 128 * 1024)
        .map(|(t, _)| *t);
    assert!(
        free.is_some_and(|f| f < Duration::from_millis(500)),
        "limit-rate-after bytes at once: after {free:?}"
    );
    let t = took(&later);
    assert!(
        t >= Duration::from_millis(1900) && t < Duration::from_millis(3500),
        "the rest at 64 KiB/s took {t:?}"
    );
}

#[tokio::test]
async fn an_invalid_limit_rate_fails_closed_with_503_and_is_reported() {
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    dir.write(
        "ingresses.yaml",
        &[&ingress("broken", "broken.test", &[("limit-rate", "64k")])],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    ctl.wait_for_log(&["Ingress web/broken", "limit-rate", "answers 503"])
        .await;
    assert_eq!(status_from(&ctl, 5, "broken.test", &[]).await, 503);
    assert!(app.seen().is_empty(), "never served at full speed");
    assert_eq!(
        tools::problems_metric(ctl.addrs.admin)
            .await
            .get("invalid-annotation"),
        Some(&1)
    );
}
