//! `proxy-next-upstream` and passive health in manifest mode, against real backends that refuse
//! connections, hang up mid-request, answer 503, and close keep-alive connections as the next request
//! arrives: what a client sees, and what the retry metrics say.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::backend::{BodyDigest, HASH};
use support::client::try_http_send;
use support::manifests;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const NS: &str = "web";
const HOST: &str = "app.test";

/// The controller with one Ingress for `HOST` whose Service has `endpoints`, in this order.
async fn setup(
    endpoints: &[SocketAddr],
    annotations: &[(&str, &str)],
) -> (ManifestDir, Controller) {
    let dir = ManifestDir::new();
    let svc = manifests::service_with_endpoints(NS, "app", 80, None, endpoints, true);
    dir.write("service.yaml", &svc.objects());
    let mut ingress = IngressBuilder::new(NS, "app").route(Some(HOST), "app");
    for (k, v) in annotations {
        ingress = ingress.annotation(&format!("nginx.ingress.kubernetes.io/{k}"), v);
    }
    dir.write("ingress.yaml", &[&ingress.build()]);
    let ctl = Controller::start(dir.path(), &[]).await;
    (dir, ctl)
}

/// An address nothing listens on: connections are refused.
async fn refusing() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A backend that reads the start of each request and hangs up without answering.
async fn hanging_up() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            let mut buf = [0u8; 64];
            let _ = tcp.read(&mut buf).await;
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (addr, seen, task)
}

/// A raw HTTP/1.1 backend answering `status` to every request, keeping connections alive.
async fn answering(status: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        let head = format!("HTTP/1.1 {status}\r\ncontent-length: 4\r\n\r\nnope");
                        if tcp.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A keep-alive backend that answers the first request on each connection and closes the
/// connection when the next one arrives, without answering it: what a backend whose idle timeout
/// fires just as the proxy reuses the connection does, made deterministic.
async fn one_request_per_connection() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>)
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let count = dropped.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut answered = false;
                while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                    if !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    if answered {
                        count.fetch_add(1, Ordering::SeqCst);
                        return; // closes with the request unanswered
                    }
                    answered = true;
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if tcp.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, dropped, task)
}

async fn status_of(ctl: &Controller, method: &str, body: Option<Vec<u8>>) -> u16 {
    let mut req = request(method, HOST, "/");
    if let Some(body) = body {
        req = req.body(body);
    }
    try_http_send(ctl.addrs.http, req)
        .await
        .expect("a response")
        .status
        .as_u16()
}

async fn statuses(ctl: &Controller, method: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(status_of(ctl, method, None).await);
    }
    out
}

async fn metrics(ctl: &Controller) -> String {
    try_http_send(ctl.addrs.admin, request("GET", "admin", "/metrics"))
        .await
        .expect("/metrics")
        .text()
}

/// The value of one series, e.g. `portcullis_upstream_retries_total{...}`, 0 when absent.
fn series(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn retries(metrics: &str, reason: &str) -> f64 {
    series(
        metrics,
        "portcullis_upstream_retries_total",
        &[("namespace", NS), ("ingress", "app"), ("reason", reason)],
    )
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_endpoint_for_every_method() {
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let (_dir, ctl) = setup(&[refusing().await, echo.addr()], &[]).await;
    for method in ["GET", "POST"] {
        let got = statuses(&ctl, method, 6).await;
        assert!(got.iter().all(|s| *s == 200), "{method}: {got:?}");
    }
    assert!(retries(&metrics(&ctl).await, "error") >= 1.0);
}

#[tokio::test]
async fn a_hang_up_mid_request_is_retried_for_idempotent_methods_only() {
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let (bad, seen, task) = hanging_up().await;
    let (_dir, ctl) = setup(&[bad, echo.addr()], &[]).await;
    let got = statuses(&ctl, "GET", 6).await;
    assert!(got.iter().all(|s| *s == 200), "GET: {got:?}");
    assert!(
        seen.load(Ordering::SeqCst) >= 1,
        "the bad endpoint was tried"
    );
    // The endpoint may have acted on a POST it received: never sent twice.
    let got = statuses(&ctl, "POST", 4).await;
    assert!(got.contains(&502) && got.contains(&200), "POST: {got:?}");
    task.abort();
}

#[tokio::test]
async fn non_idempotent_and_off_change_what_is_retried() {
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let (bad, _seen, task) = hanging_up().await;
    let (_dir, ctl) = setup(
        &[bad, echo.addr()],
        &[("proxy-next-upstream", "error timeout non_idempotent")],
    )
    .await;
    let got = statuses(&ctl, "POST", 6).await;
    assert!(got.iter().all(|s| *s == 200), "POST: {got:?}");
    drop(ctl);
    let (_dir, ctl) = setup(&[bad, echo.addr()], &[("proxy-next-upstream", "off")]).await;
    let got = statuses(&ctl, "GET", 4).await;
    assert!(got.contains(&502), "off: {got:?}");
    task.abort();
}

#[tokio::test]
async fn listed_statuses_are_retried_and_others_passed_on() {
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let (unavailable, task) = answering("503 Service Unavailable").await;
    let (_dir, ctl) = setup(
        &[unavailable, echo.addr()],
        &[("proxy-next-upstream", "error http_503")],
    )
    .await;
    let got = statuses(&ctl, "GET", 6).await;
    assert!(got.iter().all(|s| *s == 200), "http_503: {got:?}");
    assert!(retries(&metrics(&ctl).await, "http_503") >= 1.0);
    drop(ctl);
    let (_dir, ctl) = setup(&[unavailable, echo.addr()], &[]).await;
    let got = statuses(&ctl, "GET", 4).await;
    assert!(
        got.contains(&503),
        "by default a 503 is the answer: {got:?}"
    );
    task.abort();
}

#[tokio::test]
async fn tries_bound_the_attempts() {
    let (a, seen_a, ta) = hanging_up().await;
    let (b, seen_b, tb) = hanging_up().await;
    let (c, seen_c, tc) = hanging_up().await;
    let (_dir, ctl) = setup(&[a, b, c], &[("proxy-next-upstream-tries", "2")]).await;
    assert_eq!(status_of(&ctl, "GET", None).await, 502);
    let total = [&seen_a, &seen_b, &seen_c]
        .iter()
        .map(|s| s.load(Ordering::SeqCst))
        .sum::<usize>();
    assert_eq!(total, 2, "two tries, then the last failure is the answer");
    for t in [ta, tb, tc] {
        t.abort();
    }
}

#[tokio::test]
async fn small_bodies_are_replayed_intact_and_large_ones_not_retried() {
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let (bad, _seen, task) = hanging_up().await;
    let (_dir, ctl) = setup(&[bad, echo.addr()], &[]).await;
    let small: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    for _ in 0..4 {
        let resp = try_http_send(
            ctl.addrs.http,
            request("PUT", HOST, HASH).body(small.clone()),
        )
        .await
        .expect("a response");
        assert_eq!(resp.status, 200, "{}", resp.text());
        let digest: BodyDigest = resp.json();
        assert_eq!(digest.length, small.len() as u64);
    }
    let large = vec![7u8; 100_000];
    let mut got = Vec::new();
    for _ in 0..4 {
        // A 502 sent before the body was read may reach the client as a reset instead (0).
        let req = request("PUT", HOST, "/").body(large.clone());
        got.push(
            try_http_send(ctl.addrs.http, req)
                .await
                .map_or(0, |r| r.status.as_u16()),
        );
    }
    assert!(
        got.iter().any(|s| *s != 200) && got.contains(&200),
        "bodies over 64 KiB are streamed, not retried: {got:?}"
    );
    task.abort();
}

/// Before retries, the second request on the pooled connection got a 502.
#[tokio::test]
async fn a_pooled_connection_closed_as_the_request_arrives_is_not_an_error() {
    let (backend, dropped, task) = one_request_per_connection().await;
    let (_dir, ctl) = setup(&[backend], &[]).await;
    let got = statuses(&ctl, "GET", 5).await;
    assert_eq!(got, vec![200; 5]);
    assert!(
        dropped.load(Ordering::SeqCst) >= 1,
        "a pooled connection was reused and closed"
    );
    assert!(retries(&metrics(&ctl).await, "stale_connection") >= 1.0);
    task.abort();
}

#[tokio::test]
async fn an_endpoint_refusing_connections_is_skipped_for_a_while() {
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let dead = refusing().await;
    let (_dir, ctl) = setup(&[dead, echo.addr(), refusing().await], &[]).await;
    // Round robin starts on the dead endpoint every third request: three failures mark it.
    let got = statuses(&ctl, "GET", 12).await;
    assert!(got.iter().all(|s| *s == 200), "{got:?}");
    let m = metrics(&ctl).await;
    let skipped = series(
        &m,
        "portcullis_upstream_endpoints_skipped_total",
        &[("namespace", NS), ("service", "app")],
    );
    assert!(skipped >= 1.0, "skipped {skipped}");
    let before = retries(&m, "error");
    let got = statuses(&ctl, "GET", 12).await;
    assert!(got.iter().all(|s| *s == 200), "{got:?}");
    let after = retries(&metrics(&ctl).await, "error");
    assert_eq!(
        after, before,
        "skipped endpoints are not tried, so nothing is retried"
    );
}

#[tokio::test]
async fn when_every_endpoint_fails_the_failure_is_the_answer() {
    let (_dir, ctl) = setup(&[refusing().await, refusing().await], &[]).await;
    for _ in 0..8 {
        assert_eq!(status_of(&ctl, "GET", None).await, 502);
    }
}

/// A backend that accepts connections and never answers.
async fn stalling() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = l.accept().await {
            held.push(tcp);
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_stalled_endpoint_is_retried_after_the_read_timeout_within_the_retry_time_limit() {
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let (a, ta) = stalling().await;
    let (b, tb) = stalling().await;
    let (_dir, ctl) = setup(&[a, echo.addr()], &[("proxy-read-timeout", "1")]).await;
    for _ in 0..2 {
        let started = std::time::Instant::now();
        assert_eq!(status_of(&ctl, "GET", None).await, 200);
        assert!(started.elapsed() < std::time::Duration::from_secs(3));
    }
    assert!(retries(&metrics(&ctl).await, "timeout") >= 1.0);
    drop(ctl);
    // Three stalled endpoints, three tries, but no new attempt 1.5 s after the first: the second
    // timeout is the answer.
    let (c, tc) = stalling().await;
    let (_dir, ctl) = setup(
        &[a, b, c],
        &[
            ("proxy-read-timeout", "1"),
            ("proxy-next-upstream-timeout", "1500ms"),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    assert_eq!(status_of(&ctl, "GET", None).await, 504);
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(1900)
            && took < std::time::Duration::from_millis(2800),
        "two attempts of 1 s, not three: {took:?}"
    );
    tc.abort();
    ta.abort();
    tb.abort();
}
