use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

use super::traffic::{METHODS, STATUS_CLASSES, method_index, status_class_index};
use super::*;
use crate::model::matching::HostKey;
use crate::model::{Backend, CertificateInfo, NamespacedName, PathKind, Policy, Route};
use crate::tls::CertTable;

const PEER: &str = "192.0.2.7:40000";

fn route(ingress: &str, host: Option<&str>, service: &str, endpoints: usize) -> Arc<Route> {
    let endpoints = (0..endpoints)
        .map(|i| SocketAddr::from(([10, 0, 0, i as u8 + 1], 8080)))
        .collect();
    Arc::new(Route {
        ingress: NamespacedName::new("shop", ingress),
        host: host.map(Into::into),
        backend: Arc::new(Backend::new(
            NamespacedName::new("shop", service),
            "80".into(),
            endpoints,
        )),
        fallback: None,
        https_redirect: false,
        redirect_host: None,
        path_regex: None,
        policy: Arc::new(Policy::new(&Default::default(), &Default::default())),
        cookie_path: "/".into(),
        canary: None,
    })
}

fn config(generation: u64, routes: &[(&str, Arc<Route>)]) -> Config {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let default = crate::tls::generate_default_cert(&provider).unwrap();
    let mut config = Config::empty(CertTable::new(default), Default::default());
    config.generation = generation;
    let table = Arc::make_mut(&mut config.routes);
    for (path, route) in routes {
        let host = HostKey::from_rule_host(route.host.as_deref());
        table
            .insert(&host, PathKind::Prefix, path, route.clone())
            .unwrap();
    }
    config
}

/// Sends one request through the recording path as the proxy does, and drains the response body.
async fn exchange(
    metrics: &Metrics,
    method: Method,
    route: Option<&Arc<Route>>,
    host: &str,
    status: StatusCode,
    body: &'static str,
) {
    let req = Request::builder()
        .method(method)
        .uri("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut exchange = metrics.exchange(&req, PEER.parse().unwrap(), None);
    match route {
        Some(route) => exchange.matched(route),
        None => exchange.unmatched(host),
    }
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    let body = exchange.respond(resp).into_body();
    body.collect().await.unwrap();
}

/// Series of one family in a scrape: labels → value.
fn series(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (metric, labels) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let labels = labels
            .split("\",")
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.push((labels, value.parse().unwrap()));
    }
    out
}

/// The value of the one series of `name` whose labels include `want`; `None` if there is none.
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = series(text, name)
        .into_iter()
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .collect();
    assert!(found.len() <= 1, "{name} {want:?} matches {found:?}");
    found.first().copied()
}

#[test]
fn methods_and_status_classes_are_bounded() {
    assert_eq!(METHODS[method_index(&Method::GET)], "GET");
    assert_eq!(METHODS[method_index(&Method::PATCH)], "PATCH");
    let custom = Method::from_bytes(b"PROPFIND").unwrap();
    assert_eq!(METHODS[method_index(&custom)], "other");
    assert_eq!(STATUS_CLASSES[status_class_index(StatusCode::OK)], "2xx");
    assert_eq!(
        STATUS_CLASSES[status_class_index(StatusCode::SWITCHING_PROTOCOLS)],
        "1xx"
    );
    let odd = StatusCode::from_u16(799).unwrap();
    assert_eq!(STATUS_CLASSES[status_class_index(odd)], "other");
}

#[tokio::test]
async fn requests_are_counted_under_their_route_with_sizes() {
    let metrics = Metrics::new().unwrap();
    let web = route("web", Some("web.example"), "echo", 1);
    metrics.config_published(&config(1, &[("/", web.clone())]), 0.01, 1.0);
    for _ in 0..3 {
        exchange(
            &metrics,
            Method::GET,
            Some(&web),
            "web.example",
            StatusCode::OK,
            "hello",
        )
        .await;
    }
    exchange(
        &metrics,
        Method::POST,
        Some(&web),
        "web.example",
        StatusCode::NOT_FOUND,
        "no",
    )
    .await;

    let text = metrics.render();
    let labels = [
        ("namespace", "shop"),
        ("ingress", "web"),
        ("service", "echo"),
        ("host", "web.example"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = labels.to_vec();
        all.extend_from_slice(extra);
        all
    };
    let get_2xx = with(&[("method", "GET"), ("status", "2xx")]);
    let post_4xx = with(&[("method", "POST"), ("status", "4xx")]);
    assert_eq!(
        value(&text, "portcullis_requests_total", &get_2xx),
        Some(3.0)
    );
    assert_eq!(
        value(&text, "portcullis_requests_total", &post_4xx),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "portcullis_request_duration_seconds_count", &get_2xx),
        Some(3.0)
    );
    assert_eq!(
        value(&text, "portcullis_response_size_bytes_sum", &labels),
        Some(17.0)
    );
    assert_eq!(
        value(&text, "portcullis_response_size_bytes_count", &labels),
        Some(4.0)
    );
    assert_eq!(
        value(&text, "portcullis_request_size_bytes_sum", &labels),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "portcullis_upstream_duration_seconds_count", &labels),
        None,
        "nothing was forwarded"
    );
    assert_eq!(
        series(&text, "portcullis_requests_total").len(),
        2,
        "only combinations that happened are exported"
    );
}

#[tokio::test]
async fn unmatched_requests_name_only_configured_hosts() {
    let metrics = Metrics::new().unwrap();
    let web = route("web", Some("web.example"), "echo", 1);
    let apps = route("apps", Some("*.apps.example"), "echo", 1);
    let routes = [("/api", web), ("/api", apps)];
    metrics.config_published(&config(1, &routes), 0.01, 1.0);
    for host in [
        "WEB.example:443",
        "x.apps.example",
        "evil.example",
        "",
        "a.b.apps.example",
    ] {
        exchange(&metrics, Method::GET, None, host, StatusCode::NOT_FOUND, "").await;
    }
    let text = metrics.render();
    let unmatched = |host| {
        value(
            &text,
            "portcullis_requests_total",
            &[
                ("ingress", ""),
                ("service", ""),
                ("namespace", ""),
                ("host", host),
            ],
        )
    };
    assert_eq!(unmatched("web.example"), Some(1.0));
    assert_eq!(unmatched("*.apps.example"), Some(1.0));
    assert_eq!(unmatched("_other"), Some(3.0));
}

#[tokio::test]
async fn routes_without_a_host_are_labelled_with_a_star() {
    let metrics = Metrics::new().unwrap();
    let any = route("catchall", None, "echo", 1);
    metrics.config_published(&config(1, &[("/", any.clone())]), 0.01, 1.0);
    exchange(
        &metrics,
        Method::GET,
        Some(&any),
        "whatever.example",
        StatusCode::OK,
        "",
    )
    .await;
    let text = metrics.render();
    assert_eq!(
        value(
            &text,
            "portcullis_requests_total",
            &[("ingress", "catchall"), ("host", "*")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_reload_keeps_counters_and_drops_series_of_removed_routes() {
    let metrics = Metrics::new().unwrap();
    let web = route("web", Some("web.example"), "echo", 1);
    let old = route("old", Some("old.example"), "legacy", 1);
    metrics.config_published(
        &config(1, &[("/", web.clone()), ("/", old.clone())]),
        0.01,
        1.0,
    );
    exchange(
        &metrics,
        Method::GET,
        Some(&web),
        "web.example",
        StatusCode::OK,
        "",
    )
    .await;
    exchange(
        &metrics,
        Method::GET,
        Some(&old),
        "old.example",
        StatusCode::OK,
        "",
    )
    .await;

    // The next generation rebuilds every route; `web` keeps its labels, `old` is gone.
    let web2 = route("web", Some("web.example"), "echo", 1);
    metrics.config_published(&config(2, &[("/", web2.clone())]), 0.01, 2.0);
    exchange(
        &metrics,
        Method::GET,
        Some(&web2),
        "web.example",
        StatusCode::OK,
        "",
    )
    .await;
    let text = metrics.render();
    assert_eq!(
        value(&text, "portcullis_requests_total", &[("ingress", "web")]),
        Some(2.0),
        "same labels: the counter goes on"
    );
    assert_eq!(
        value(&text, "portcullis_requests_total", &[("ingress", "old")]),
        None
    );
    assert_eq!(
        value(
            &text,
            "portcullis_response_size_bytes_count",
            &[("ingress", "old")]
        ),
        None
    );

    // A request routed by the old configuration that finishes now is still counted (the slow path),
    // until the next configuration removes the series again.
    exchange(
        &metrics,
        Method::GET,
        Some(&old),
        "old.example",
        StatusCode::OK,
        "",
    )
    .await;
    let text = metrics.render();
    assert_eq!(
        value(&text, "portcullis_requests_total", &[("ingress", "old")]),
        Some(1.0)
    );
    metrics.config_published(&config(3, &[("/", web2.clone())]), 0.01, 3.0);
    let text = metrics.render();
    assert_eq!(
        value(&text, "portcullis_requests_total", &[("ingress", "old")]),
        None
    );
    assert_eq!(value(&text, "portcullis_config_generation", &[]), Some(3.0));
}

#[test]
fn certificate_and_endpoint_series_follow_the_configuration() {
    let metrics = Metrics::new().unwrap();
    let cert = |host: &str, not_after, fingerprint: &str| CertificateInfo {
        secret: NamespacedName::new("shop", "web-tls"),
        host: host.into(),
        not_before: 1_700_000_000,
        not_after,
        fingerprint: fingerprint.into(),
    };
    let mut first = config(
        1,
        &[
            ("/", route("web", Some("web.example"), "echo", 2)),
            ("/down", route("web", Some("web.example"), "down", 0)),
        ],
    );
    first.certificates = vec![
        cert("web.example", 1_800_000_000, "aa"),
        cert("www.web.example", 1_800_000_000, "aa"),
    ]
    .into();
    metrics.config_published(&first, 0.01, 1.0);
    let text = metrics.render();
    let expiry = |text: &str, host| {
        value(
            text,
            "portcullis_certificate_expiry_timestamp_seconds",
            &[("namespace", "shop"), ("secret", "web-tls"), ("host", host)],
        )
    };
    assert_eq!(expiry(&text, "web.example"), Some(1_800_000_000.0));
    assert_eq!(
        value(
            &text,
            "portcullis_certificate_info",
            &[("host", "web.example"), ("fingerprint_sha256", "aa")]
        ),
        Some(1.0)
    );
    let endpoints = |text: &str, service| {
        value(
            text,
            "portcullis_backend_endpoints",
            &[("ingress", "web"), ("service", service)],
        )
    };
    assert_eq!(endpoints(&text, "echo"), Some(2.0));
    assert_eq!(endpoints(&text, "down"), Some(0.0));

    // The certificate is renewed for one host only, the other host and the `down` path are removed.
    let mut second = config(2, &[("/", route("web", Some("web.example"), "echo", 3))]);
    second.certificates = vec![cert("web.example", 1_900_000_000, "bb")].into();
    metrics.config_published(&second, 0.01, 2.0);
    let text = metrics.render();
    assert_eq!(expiry(&text, "web.example"), Some(1_900_000_000.0));
    assert_eq!(expiry(&text, "www.web.example"), None);
    assert_eq!(series(&text, "portcullis_certificate_info").len(), 1);
    assert_eq!(
        value(
            &text,
            "portcullis_certificate_info",
            &[("fingerprint_sha256", "bb")]
        ),
        Some(1.0)
    );
    assert_eq!(endpoints(&text, "echo"), Some(3.0));
    assert_eq!(endpoints(&text, "down"), None);
}

#[test]
fn tls_connection_and_redirect_series() {
    let metrics = Metrics::new().unwrap();
    let https = metrics.listener("https");
    let open = https.accepted();
    let _second = https.accepted();
    drop(open);
    metrics.tls_handshake_succeeded(
        Some(rustls::ProtocolVersion::TLSv1_3),
        Duration::from_millis(2),
    );
    metrics.tls_handshake_failed(Duration::from_millis(1));
    metrics.redirect(StatusCode::PERMANENT_REDIRECT);
    metrics.redirect(StatusCode::PERMANENT_REDIRECT);
    let text = metrics.render();
    assert_eq!(
        value(
            &text,
            "portcullis_open_connections",
            &[("listener", "https")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "portcullis_connections_accepted_total",
            &[("listener", "https")]
        ),
        Some(2.0)
    );
    let handshakes = |result, version| {
        value(
            &text,
            "portcullis_tls_handshakes_total",
            &[("result", result), ("version", version)],
        )
    };
    assert_eq!(handshakes("success", "TLSv1.3"), Some(1.0));
    assert_eq!(handshakes("success", "TLSv1.2"), Some(0.0));
    assert_eq!(handshakes("failure", "unknown"), Some(1.0));
    assert_eq!(
        value(&text, "portcullis_redirects_total", &[("code", "308")]),
        Some(2.0)
    );
}

#[test]
fn names_cover_every_family_with_histogram_suffixes() {
    let metrics = Metrics::new().unwrap();
    let names = metrics.names();
    for name in [
        "portcullis_requests_total",
        "portcullis_request_duration_seconds_bucket",
        "portcullis_request_duration_seconds_sum",
        "portcullis_request_duration_seconds_count",
        "portcullis_certificate_expiry_timestamp_seconds",
        "portcullis_build_info",
        "process_cpu_seconds_total",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    assert!(!names.contains("portcullis_request_duration_seconds"));
}

/// Not a test: the cost of recording one request through the route table, against resolving its
/// labels per request, on 1 and 2 threads hitting the same route.
/// `cargo test --release --lib metrics::tests::recording_cost -- --ignored --nocapture`
#[test]
#[ignore]
fn recording_cost() {
    const N: u32 = 200_000;
    let metrics = Metrics::new().unwrap();
    let routes: Vec<_> = (0..1000)
        .map(|i| {
            route(
                &format!("ing{i}"),
                Some(&format!("h{i}.example")),
                "echo",
                1,
            )
        })
        .collect();
    let paths: Vec<String> = (0..routes.len()).map(|i| format!("/p{i}")).collect();
    let table: Vec<_> = paths
        .iter()
        .map(String::as_str)
        .zip(routes.iter().cloned())
        .collect();
    metrics.config_published(&config(1, &table), 0.0, 0.0);
    let hot = &routes[7];
    let peer: SocketAddr = PEER.parse().unwrap();

    let with_table = || {
        let req = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
        for _ in 0..N {
            let mut exchange = metrics.exchange(&req, peer, None);
            exchange.matched(hot);
            exchange.upstream(peer);
            exchange.upstream_responded(Duration::from_micros(300));
            drop(exchange.respond(Response::new(Empty::<Bytes>::new())));
        }
    };
    let f = &metrics.requests.families;
    let per_request_labels = || {
        for _ in 0..N {
            let started = Instant::now();
            let labels = ["shop", "ing7", "echo", "h7.example", "GET", "2xx"];
            let route_labels = &labels[..4];
            f.requests.with_label_values(&labels).inc();
            let seconds = started.elapsed().as_secs_f64();
            f.duration.with_label_values(&labels).observe(seconds);
            f.request_size.with_label_values(route_labels).observe(0.0);
            f.response_size.with_label_values(route_labels).observe(0.0);
            f.upstream.with_label_values(route_labels).observe(0.0003);
        }
    };
    let time = |threads: u32, work: &(dyn Fn() + Sync)| {
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(work);
            }
        });
        started.elapsed() / (N * threads)
    };
    for threads in [1, 2] {
        println!(
            "{threads} thread(s), per request: {:?} with the route table, {:?} resolving labels",
            time(threads, &with_table),
            time(threads, &per_request_labels),
        );
    }
}
