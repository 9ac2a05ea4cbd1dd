//! CORS and the source-range deny list, proven on real requests through the real binary in manifest
//! mode against a real backend: preflights answered by Portcullis, CORS headers on actual answers,
//! origin patterns, credentials, `Vary`, `max-age` (also through `curl`), the deny list with and
//! without the allowlist and behind a trusted proxy, and both features' invalid settings.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::networking::v1::Ingress;
use support::client::{self, Captured, Sender};
use support::manifests;
use support::tools;
use support::*;

const NS: &str = "web";
const P: &str = "nginx.ingress.kubernetes.io/";

async fn backend(dir: &ManifestDir, service: &str) -> EchoServer {
    manifests::echo_service(dir, NS, service).await
}

/// An Ingress for `host` on Service `app` with these `nginx.ingress.kubernetes.io/` annotations.
fn ingress(name: &str, host: &str, annotations: &[(&str, &str)]) -> Ingress {
    IngressBuilder::new(NS, name)
        .route(Some(host), "app")
        .nginx_annotations(annotations)
        .build()
}

async fn send(ctl: &Controller, req: client::Req) -> Captured {
    client::http_send(ctl.addrs.http, req).await
}

/// A request sent from a chosen loopback source address.
async fn send_from(ctl: &Controller, source: Ipv4Addr, req: client::Req) -> Captured {
    let tcp = client::tcp(ctl.addrs.http, Some(IpAddr::V4(source)))
        .await
        .expect("connect");
    Sender::http1(tcp).await.expect("handshake").send(req).await
}

fn get(host: &str, origin: Option<&str>) -> client::Req {
    let req = request("GET", host, "/data");
    match origin {
        Some(o) => req.header("origin", o),
        None => req,
    }
}

fn preflight(host: &str, origin: &str) -> client::Req {
    request("OPTIONS", host, "/data")
        .header("origin", origin)
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type")
}

fn allow_origin(r: &Captured) -> Option<&str> {
    r.header("access-control-allow-origin")
}

fn vary(r: &Captured) -> Vec<&str> {
    r.headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn backend_saw_options(app: &EchoServer) -> bool {
    app.seen().iter().any(|s| s.method == "OPTIONS")
}

#[tokio::test]
async fn a_preflight_from_a_listed_origin_is_answered_204_by_portcullis() {
    let dir = ManifestDir::new();
    let app = backend(&dir, "app").await;
    dir.write(
        "ingress.yaml",
        &[&ingress(
            "api",
            "api.test",
            &[
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://app.test, https://admin.test"),
            ],
        )],
    );
    let ctl = Controller::start(dir.path(), &[]).await;

    let r = send(&ctl, preflight("api.test", "https://admin.test")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(allow_origin(&r), Some("https://admin.test"), "echoed");
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, PUT, POST, DELETE, PATCH, OPTIONS")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some(
            "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization"
        ),
        "ingress-nginx's default, as it writes it"
    );
    assert_eq!(r.header("access-control-max-age"), Some("1728000"));
    assert_eq!(vary(&r), ["Origin"]);
    assert!(
        !backend_saw_options(&app),
        "the backend never sees a preflight"
    );

    // An origin not on the list is not Portcullis's to answer: the backend gets the OPTIONS request,
    // and the answer says nothing about CORS, except that it depends on the origin.
    let r = send(&ctl, preflight("api.test", "https://evil.test")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().method, "OPTIONS");
    assert_eq!(allow_origin(&r), None);
    assert_eq!(r.header("access-control-allow-methods"), None);
    assert_eq!(vary(&r), ["Origin"]);

    // OPTIONS without Access-Control-Request-Method is an ordinary request, with CORS headers.
    let r = send(
        &ctl,
        request("OPTIONS", "api.test", "/data").header("origin", "https://app.test"),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.echo().method.as_str()),
        (200, "OPTIONS")
    );
    assert_eq!(allow_origin(&r), Some("https://app.test"));
}

#[tokio::test]
async fn actual_responses_carry_cors_headers_only_for_listed_origins_and_always_vary() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    dir.write(
        "ingress.yaml",
        &[&ingress(
            "api",
            "api.test",
            &[
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://app.test"),
                ("cors-expose-headers", "X-Total-Count, X-Request-Id"),
                ("cors-allow-credentials", "false"),
                ("proxy-body-size", "1k"),
            ],
        )],
    );
    let ctl = Controller::start(dir.path(), &[]).await;

    let r = send(&ctl, get("api.test", Some("https://APP.test"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echo().path, "/data", "the backend answered");
    assert_eq!(allow_origin(&r), Some("https://APP.test"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("X-Total-Count, X-Request-Id")
    );
    assert_eq!(
        r.header("access-control-allow-credentials"),
        None,
        "cors-allow-credentials: false"
    );
    assert_eq!(vary(&r), ["Origin"]);

    for origin in [Some("https://evil.test"), Some("http://app.test"), None] {
        let r = send(&ctl, get("api.test", origin)).await;
        assert_eq!(r.status, 200);
        assert_eq!(allow_origin(&r), None, "{origin:?}");
        assert_eq!(r.header("access-control-expose-headers"), None);
        assert_eq!(
            vary(&r),
            ["Origin"],
            "{origin:?}: a cache must not reuse this answer for a listed origin"
        );
    }

    // Portcullis's own answers get them too, so a browser application can read its errors.
    let r = send(
        &ctl,
        request("POST", "api.test", "/upload")
            .header("origin", "https://app.test")
            .body(vec![0u8; 4096]),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(allow_origin(&r), Some("https://app.test"));
}

#[tokio::test]
async fn a_wildcard_origin_pattern_admits_exactly_one_label() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    dir.write(
        "ingress.yaml",
        &[&ingress(
            "api",
            "api.test",
            &[
                ("enable-cors", "true"),
                (
                    "cors-allow-origin",
                    "https://*.example.test, http://localhost:3000",
                ),
            ],
        )],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    for (origin, admitted) in [
        ("https://shop.example.test", true),
        ("https://Shop-2.EXAMPLE.test", true),
        ("http://localhost:3000", true),
        ("https://example.test", false),
        ("https://a.b.example.test", false),
        ("http://shop.example.test", false),
        ("https://shop.example.test:8443", false),
        ("https://shop.example.test.evil.test", false),
        ("https://evilexample.test", false),
        ("http://localhost:3001", false),
    ] {
        let r = send(&ctl, preflight("api.test", origin)).await;
        let expected = if admitted { 204 } else { 200 };
        assert_eq!(r.status, expected, "{origin}");
        assert_eq!(allow_origin(&r), admitted.then_some(origin), "{origin}");
        let r = send(&ctl, get("api.test", Some(origin))).await;
        assert_eq!(allow_origin(&r), admitted.then_some(origin), "{origin}");
    }
}

#[tokio::test]
async fn every_origin_gets_a_star_never_with_credentials() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    dir.write(
        "ingresses.yaml",
        &[
            &ingress("open", "open.test", &[("enable-cors", "true")]),
            &ingress(
                "creds",
                "creds.test",
                &[
                    ("enable-cors", "true"),
                    ("cors-allow-origin", "*"),
                    ("cors-allow-credentials", "true"),
                ],
            ),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    for host in ["open.test", "creds.test"] {
        let r = send(&ctl, preflight(host, "https://anyone.test")).await;
        assert_eq!(r.status, 204, "{host}");
        assert_eq!(allow_origin(&r), Some("*"));
        assert_eq!(
            r.header("access-control-allow-credentials"),
            None,
            "{host}: browsers refuse credentials with *"
        );
        assert!(
            vary(&r).is_empty(),
            "{host}: the answer is the same for every origin"
        );
        for origin in [Some("https://anyone.test"), None] {
            let r = send(&ctl, get(host, origin)).await;
            assert_eq!((r.status.as_u16(), allow_origin(&r)), (200, Some("*")));
            assert_eq!(r.header("access-control-allow-credentials"), None);
        }
    }
    ctl.wait_for_log(&[
        "Ingress web/creds",
        "cors-allow-credentials",
        "browsers refuse credentials",
    ])
    .await;
    assert!(
        ctl.log_line(&["Ingress web/open", "cors"]).is_none(),
        "{}",
        ctl.logs()
    );
}

#[tokio::test]
async fn curl_sees_the_configured_methods_headers_and_max_age() {
    let dir = ManifestDir::new();
    let app = backend(&dir, "app").await;
    dir.write(
        "ingress.yaml",
        &[&ingress(
            "api",
            "api.test",
            &[
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://app.test"),
                ("cors-allow-methods", "GET,PUT , DELETE"),
                ("cors-allow-headers", "Content-Type,X-Api-Key"),
                ("cors-max-age", "600"),
            ],
        )],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    let url = format!("http://api.test:{}/items/7", ctl.addrs.http.port());
    let resolve = format!("api.test:{}:{}", ctl.addrs.http.port(), ctl.addrs.ip);
    let out = tools::curl(&[
        "--include",
        "--resolve",
        &resolve,
        "--request",
        "OPTIONS",
        "--header",
        "Origin: https://app.test",
        "--header",
        "Access-Control-Request-Method: DELETE",
        "--header",
        "Access-Control-Request-Headers: x-api-key",
        &url,
    ])
    .await;
    assert!(out.success, "{}", out.stderr);
    let head = out.stdout.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 204"), "{head}");
    for line in [
        "access-control-allow-origin: https://app.test",
        "access-control-allow-credentials: true",
        "access-control-allow-methods: get, put, delete",
        "access-control-allow-headers: content-type, x-api-key",
        "access-control-max-age: 600",
        "vary: origin",
    ] {
        assert!(
            head.contains(&format!("{line}\r\n")),
            "no {line:?} in {head}"
        );
    }
    assert!(!backend_saw_options(&app));
}

#[tokio::test]
async fn an_invalid_cors_value_turns_cors_off_for_that_ingress_and_is_reported() {
    let dir = ManifestDir::new();
    let app = backend(&dir, "app").await;
    dir.write(
        "ingresses.yaml",
        &[
            &ingress(
                "broken",
                "broken.test",
                &[
                    ("enable-cors", "true"),
                    ("cors-allow-origin", "https://app.test/"),
                ],
            ),
            &ingress(
                "fine",
                "fine.test",
                &[
                    ("enable-cors", "true"),
                    ("cors-allow-origin", "https://app.test"),
                ],
            ),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    ctl.wait_for_log(&[
        "Ingress web/broken",
        "cors-allow-origin",
        "no path",
        "CORS is off for this Ingress",
    ])
    .await;
    let r = send(&ctl, preflight("broken.test", "https://app.test")).await;
    assert_eq!(r.status, 200, "the route still serves; the backend answers");
    assert_eq!(allow_origin(&r), None);
    assert!(vary(&r).is_empty());
    assert!(backend_saw_options(&app));
    let r = send(&ctl, get("broken.test", Some("https://app.test"))).await;
    assert_eq!((r.status.as_u16(), allow_origin(&r)), (200, None));

    let r = send(&ctl, preflight("fine.test", "https://app.test")).await;
    assert_eq!(
        (r.status.as_u16(), allow_origin(&r)),
        (204, Some("https://app.test"))
    );
    assert_eq!(
        tools::problems_metric(ctl.addrs.admin)
            .await
            .get("invalid-annotation"),
        Some(&1)
    );
}

#[tokio::test]
async fn the_deny_list_wins_over_the_allowlist() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    dir.write(
        "ingresses.yaml",
        &[
            &ingress(
                "both",
                "both.test",
                &[
                    ("whitelist-source-range", "127.0.0.0/24"),
                    ("denylist-source-range", "127.0.0.6/32, 127.0.0.8/31"),
                ],
            ),
            &IngressBuilder::new(NS, "ours")
                .route(Some("ours.test"), "app")
                .annotation("portcullis.io/denylist-source-range", "127.0.0.6")
                .annotation(&format!("{P}denylist-source-range"), "127.0.0.5")
                .build(),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    for (last, status) in [(5, 200), (6, 403), (7, 200), (8, 403), (9, 403), (10, 200)] {
        let r = send_from(&ctl, Ipv4Addr::new(127, 0, 0, last), get("both.test", None)).await;
        assert_eq!(r.status, status, "127.0.0.{last}");
    }
    let r = send_from(&ctl, Ipv4Addr::new(127, 0, 1, 5), get("both.test", None)).await;
    assert_eq!(r.status, 403, "outside the allowlist");

    // Only a deny list: everyone else is served. portcullis.io/ wins over the ingress-nginx name.
    let r = send_from(&ctl, Ipv4Addr::new(127, 0, 0, 6), get("ours.test", None)).await;
    assert_eq!(r.status, 403);
    let r = send_from(&ctl, Ipv4Addr::new(127, 0, 0, 5), get("ours.test", None)).await;
    assert_eq!(r.status, 200);
    assert!(ctl.log_line(&["denylist"]).is_none(), "{}", ctl.logs());
}

#[tokio::test]
async fn the_deny_list_judges_the_client_a_trusted_proxy_reports() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    dir.write(
        "ingress.yaml",
        &[&ingress(
            "lb",
            "lb.test",
            &[("denylist-source-range", "203.0.113.0/24, 127.0.0.8")],
        )],
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.yaml");
    std::fs::write(&config, "trusted-proxies: [127.0.0.7/32]\n").unwrap();
    let ctl = Controller::start(dir.path(), &["--config", &config.display().to_string()]).await;
    let lb = Ipv4Addr::new(127, 0, 0, 7);
    let from = |xff: &str| get("lb.test", None).header("x-forwarded-for", xff);

    assert_eq!(send_from(&ctl, lb, from("203.0.113.50")).await.status, 403);
    assert_eq!(send_from(&ctl, lb, from("198.51.100.1")).await.status, 200);
    // From an untrusted peer the header is ignored: the peer itself is judged.
    let untrusted = Ipv4Addr::new(127, 0, 0, 8);
    assert_eq!(
        send_from(&ctl, untrusted, from("198.51.100.1"))
            .await
            .status,
        403
    );
    let other = Ipv4Addr::new(127, 0, 0, 9);
    assert_eq!(
        send_from(&ctl, other, from("203.0.113.50")).await.status,
        200
    );
}

#[tokio::test]
async fn an_invalid_deny_list_fails_closed_with_503_and_is_reported() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    dir.write(
        "ingresses.yaml",
        &[
            &IngressBuilder::new(NS, "broken")
                .route(Some("broken.test"), "app")
                .prefix(Some("other.test"), "/", "app")
                .annotation(
                    &format!("{P}denylist-source-range"),
                    "10.0.0.0/8, 10.0.0.300",
                )
                .build(),
            &ingress(
                "fine",
                "fine.test",
                &[("denylist-source-range", "10.0.0.0/8")],
            ),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    ctl.wait_for_log(&["Ingress web/broken", "denylist-source-range", "answers 503"])
        .await;
    for host in ["broken.test", "other.test"] {
        let r = send(&ctl, get(host, None)).await;
        assert_eq!(r.status, 503, "{host}: {}", r.text());
        assert!(
            r.try_echo().is_err(),
            "{host}: never served without the list"
        );
    }
    assert_eq!(send(&ctl, get("fine.test", None)).await.status, 200);
    assert_eq!(
        tools::problems_metric(ctl.addrs.admin)
            .await
            .get("invalid-annotation"),
        Some(&1)
    );
}
