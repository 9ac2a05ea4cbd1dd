//! `custom-http-errors` through the real binary in manifest mode, with an error-page backend started
//! by the test that behaves like ingress-nginx's `custom-error-pages` image: it answers with the status
//! in `X-Code` and reports the `X-*` headers it was given. Listed statuses from the backend, and
//! Portcullis's own 502 and 503, are replaced by its answer; other statuses pass unchanged; both the
//! `default-backend` annotation and the cluster's default backend serve as error backend.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::client::{self, Captured};
use support::manifests::{self, Port};
use support::*;
use tokio::net::TcpListener;

const NS: &str = "shop";

/// One server in two roles. With `X-Code` it is the error-page backend: it answers that status
/// with a JSON body of the `X-*` headers it got. Otherwise `/status/N` answers status N.
async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(&req))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

fn answer(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if let Some(code) = req.headers().get("x-code") {
        let seen: BTreeMap<String, String> = req
            .headers()
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("x-") || *n == "host")
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_string()))
            .chain([("path".to_string(), req.uri().to_string())])
            .collect();
        let status = code
            .to_str()
            .ok()
            .and_then(|c| c.parse::<u16>().ok())
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = Response::new(Full::new(Bytes::from(
            serde_json::to_string(&seen).expect("json"),
        )));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert("content-type", "application/json".parse().expect("value"));
        return resp;
    }
    let status = req
        .uri()
        .path()
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = Response::new(Full::new(Bytes::from_static(b"from the app\n")));
    *resp.status_mut() = status;
    resp
}

fn error_page(reply: &Captured) -> BTreeMap<String, String> {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not the error page ({e}): {:?}", reply.text()))
}

/// A port nothing listens on: connections to it are refused (502).
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address")
}

async fn setup() -> (ManifestDir, Controller) {
    let dir = ManifestDir::new();
    let app = start_backend().await;
    let pages = start_backend().await;
    for (name, endpoints) in [
        ("app", vec![app]),
        ("pages", vec![pages]),
        ("empty", vec![]),
        ("refusing", vec![closed_port()]),
    ] {
        let svc = manifests::service_with_endpoints(NS, name, 80, None, &endpoints, true);
        dir.write(&format!("svc-{name}.yaml"), &svc.objects());
    }
    let annotated = IngressBuilder::new(NS, "shop")
        .route(Some("shop.test"), "app")
        .prefix(Some("shop.test"), "/down", "refusing")
        .nginx_annotations(&[
            ("custom-http-errors", "404, 502,503"),
            ("default-backend", "pages"),
        ])
        .build();
    // No default-backend annotation: the cluster's default backend answers for it.
    let global = IngressBuilder::new(NS, "blog")
        .route(Some("blog.test"), "empty")
        .nginx_annotations(&[("custom-http-errors", "503")])
        .build();
    let default = IngressBuilder::new(NS, "default")
        .created("2020-01-01T00:00:00Z")
        .default_backend("pages", Port::Number(80))
        .build();
    let invalid = IngressBuilder::new(NS, "typo")
        .route(Some("typo.test"), "app")
        .nginx_annotations(&[("custom-http-errors", "404,abc")])
        .build();
    dir.write("ingresses.yaml", &[&annotated, &global, &default, &invalid]);
    let ctl = Controller::start(dir.path(), &[]).await;
    (dir, ctl)
}

#[tokio::test]
async fn a_listed_backend_status_is_replaced_by_the_error_backends_answer() {
    let (_dir, ctl) = setup().await;
    let reply = client::http_send(
        ctl.addrs.http,
        request("GET", "shop.test", "/status/404?x=1")
            .header("accept", "application/json")
            .header("x-request-id", "req-42"),
    )
    .await;
    assert_eq!(reply.status, 404);
    let seen = error_page(&reply);
    let want = [
        ("x-code", "404"),
        ("x-format", "application/json"),
        ("x-original-uri", "/status/404?x=1"),
        ("x-namespace", NS),
        ("x-ingress-name", "shop"),
        ("x-service-name", "app"),
        ("x-service-port", "80"),
        ("x-request-id", "req-42"),
        ("host", "shop.test"),
        ("path", "/"),
    ];
    for (name, value) in want {
        assert_eq!(
            seen.get(name).map(String::as_str),
            Some(value),
            "{name}: {seen:?}"
        );
    }
}

#[tokio::test]
async fn unlisted_statuses_pass_unchanged_and_a_request_id_is_made_when_missing() {
    let (_dir, ctl) = setup().await;
    for (path, status) in [("/status/500", 500), ("/status/200", 200)] {
        let reply = client::http_send(ctl.addrs.http, request("GET", "shop.test", path)).await;
        assert_eq!(reply.status, status);
        assert_eq!(reply.text(), "from the app\n");
    }
    let reply = client::http_send(ctl.addrs.http, request("GET", "shop.test", "/status/404")).await;
    let seen = error_page(&reply);
    assert_eq!(
        seen.get("x-request-id").map(String::len),
        Some(32),
        "{seen:?}"
    );
    assert_eq!(seen.get("x-format").map(String::as_str), Some("text/html"));
}

#[tokio::test]
async fn portcullis_own_502_and_503_are_covered_with_either_error_backend() {
    let (_dir, ctl) = setup().await;
    // Connection refused by the only endpoint: 502, answered by the annotation's error backend.
    let reply = client::http_send(ctl.addrs.http, request("GET", "shop.test", "/down/x")).await;
    assert_eq!(reply.status, 502);
    let seen = error_page(&reply);
    assert_eq!(seen.get("x-code").map(String::as_str), Some("502"));
    assert_eq!(
        seen.get("x-service-name").map(String::as_str),
        Some("refusing")
    );
    // No ready endpoint: 503, answered by the cluster's default backend.
    let reply = client::http_send(ctl.addrs.http, request("GET", "blog.test", "/")).await;
    assert_eq!(reply.status, 503);
    let seen = error_page(&reply);
    assert_eq!(seen.get("x-ingress-name").map(String::as_str), Some("blog"));
    assert_eq!(
        seen.get("x-service-name").map(String::as_str),
        Some("empty")
    );
}

#[tokio::test]
async fn an_invalid_list_is_reported_and_the_ingress_served_without_error_pages() {
    let (_dir, ctl) = setup().await;
    ctl.wait_for_log(&["custom-http-errors: \"abc\" is not an error status code"])
        .await;
    let reply = client::http_send(ctl.addrs.http, request("GET", "typo.test", "/status/404")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.text(), "from the app\n");
}

/// Without a cluster default backend, a path none of the host's rules matches gets Portcullis's own
/// 404; an Ingress of that host listing 404 with its own error backend has it replaced.
#[tokio::test]
async fn portcullis_own_404_for_an_unmatched_path_is_covered_by_the_hosts_error_backend() {
    let dir = ManifestDir::new();
    let app = start_backend().await;
    let pages = start_backend().await;
    for (name, endpoint) in [("app", app), ("pages", pages)] {
        let svc = manifests::service_with_endpoints(NS, name, 80, None, &[endpoint], true);
        dir.write(&format!("svc-{name}.yaml"), &svc.objects());
    }
    let docs = IngressBuilder::new(NS, "docs")
        .prefix(Some("docs.test"), "/api", "app")
        .nginx_annotations(&[("custom-http-errors", "404"), ("default-backend", "pages")])
        .build();
    let plain = IngressBuilder::new(NS, "plain")
        .prefix(Some("plain.test"), "/api", "app")
        .build();
    dir.write("ingresses.yaml", &[&docs, &plain]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let reply =
        client::http_send(ctl.addrs.http, request("GET", "docs.test", "/missing?q=1")).await;
    assert_eq!(reply.status, 404);
    let seen = error_page(&reply);
    for (name, value) in [
        ("x-code", "404"),
        ("x-original-uri", "/missing?q=1"),
        ("x-namespace", NS),
        ("x-ingress-name", "docs"),
        ("host", "docs.test"),
    ] {
        assert_eq!(
            seen.get(name).map(String::as_str),
            Some(value),
            "{name}: {seen:?}"
        );
    }
    assert!(!seen.contains_key("x-service-name"), "{seen:?}");
    // The matched path still reaches the app.
    let reply = client::http_send(ctl.addrs.http, request("GET", "docs.test", "/api/x")).await;
    assert_eq!(reply.text(), "from the app\n");
    // A host without error pages, and an unknown host, keep Portcullis's own 404.
    for host in ["plain.test", "nobody.test"] {
        let reply = client::http_send(ctl.addrs.http, request("GET", host, "/missing")).await;
        assert_eq!(reply.status, 404, "{host}");
        assert!(
            serde_json::from_slice::<BTreeMap<String, String>>(&reply.body).is_err(),
            "{host}"
        );
    }
}
