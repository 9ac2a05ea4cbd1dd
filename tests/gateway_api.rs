//! The Gateway API through the real binary in manifest mode: Gateways on addresses of the pool, with
//! HTTP and HTTPS listeners, HTTPRoute matching, filters, weights and redirects, two Gateways kept
//! apart, and a listener's certificate replaced under an open connection.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use support::client;
use support::grpc::{GrpcBackend, grpc_call};
use support::manifests;
use support::*;

const NS: &str = "shop";
const HTTP_PORT: u16 = 18080;
const HTTPS_PORT: u16 = 18443;

fn gateway_class() -> String {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portcullis}\n\
     spec: {controllerName: portcullis.io/gateway-controller}\n"
        .into()
}

fn gateway(name: &str, https_secret: Option<&str>) -> String {
    let mut listeners = format!("  - {{name: http, protocol: HTTP, port: {HTTP_PORT}}}\n");
    if let Some(secret) = https_secret {
        listeners.push_str(&format!(
            "  - name: https\n    protocol: HTTPS\n    port: {HTTPS_PORT}\n    hostname: shop.test\n    tls: {{mode: Terminate, certificateRefs: [{{name: {secret}}}]}}\n"
        ));
    }
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: {NS}, creationTimestamp: \"2026-01-0{}T00:00:00Z\"}}\n\
         spec:\n  gatewayClassName: portcullis\n  listeners:\n{listeners}",
        if name == "first" { 1 } else { 2 }
    )
}

/// An HTTPRoute (or, with `kind`, another route kind) in the test namespace; `spec` is its indented
/// body after `spec:`.
fn route(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n{spec}"
    )
}

/// The class and a plain-HTTP Gateway `first` written to `dir`.
fn class_and_gateway(dir: &ManifestDir) {
    dir.write_raw("class.yaml", &gateway_class());
    dir.write_raw("gateway.yaml", &gateway("first", None));
}

async fn controller(dir: &ManifestDir, pool: &[IpAddr]) -> Controller {
    let pool: Vec<String> = pool.iter().map(ToString::to_string).collect();
    Controller::start(dir.path(), &["--gateway-addresses", &pool.join(",")]).await
}

/// Retries until the Gateway socket answers (it is bound once the configuration is live).
async fn send(addr: SocketAddr, req: impl Fn() -> support::client::Req) -> Captured {
    eventually(
        &format!("an answer from the Gateway socket {addr}"),
        Duration::from_secs(10),
        async || client::try_http_send(addr, req()).await,
    )
    .await
}

#[tokio::test]
async fn routes_filters_weights_and_redirects_on_a_gateway_address() {
    let dir = ManifestDir::new();
    let shop = manifests::echo_service(&dir, NS, "shop").await;
    let canary = manifests::echo_service(&dir, NS, "canary").await;
    let api = manifests::echo_service(&dir, NS, "api").await;
    class_and_gateway(&dir);
    dir.write_raw(
        "route.yaml",
        &route(
            "HTTPRoute",
            "shop",
            "  parentRefs: [{name: first}]\n  hostnames: [shop.test]\n  rules:\n\
             \x20 - matches: [{path: {type: PathPrefix, value: /api}}]\n\
             \x20   filters:\n\
             \x20   - type: RequestHeaderModifier\n\
             \x20     requestHeaderModifier: {set: [{name: X-Route, value: api}]}\n\
             \x20   - type: ResponseHeaderModifier\n\
             \x20     responseHeaderModifier: {add: [{name: X-Served-By, value: portcullis}]}\n\
             \x20   backendRefs: [{name: api, port: 80}]\n\
             \x20 - matches: [{path: {type: Exact, value: /old}}]\n\
             \x20   filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]\n\
             \x20 - matches: [{path: {type: PathPrefix, value: /v1}}]\n\
             \x20   filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}]\n\
             \x20   backendRefs: [{name: api, port: 80}]\n\
             \x20 - backendRefs: [{name: shop, port: 80, weight: 80}, {name: canary, port: 80, weight: 20}]\n",
        ),
    );
    let ip = controller::unique_loopback_ip();
    let ctl = controller(&dir, &[IpAddr::V4(ip)]).await;
    let at = SocketAddr::from((ip, HTTP_PORT));

    let reply = send(at, || request("GET", "shop.test", "/api/items?x=1")).await;
    assert_eq!(reply.status, 200);
    let echo = reply.echo();
    assert_eq!(echo.service, api.identity().service);
    assert_eq!(echo.path, "/api/items?x=1");
    assert_eq!(echo.header("X-Route"), Some("api"));
    assert_eq!(reply.header("x-served-by"), Some("portcullis"));

    let reply = client::http_send(at, request("GET", "shop.test", "/old?q=1")).await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("https://shop.test/old?q=1"));

    let reply = client::http_send(at, request("GET", "shop.test", "/v1/users")).await;
    assert_eq!(reply.echo().path, "/v2/users");

    // Another host has no route on this Gateway.
    let reply = client::http_send(at, request("GET", "other.test", "/")).await;
    assert_eq!(reply.status, 404);
    // The Ingress listeners do not serve Gateway routes.
    let reply = client::http_send(ctl.addrs.http, request("GET", "shop.test", "/api")).await;
    assert_eq!(reply.status, 404);

    let mut to_shop = 0;
    let total = 400;
    let mut conn = client::http_connection(at).await;
    for _ in 0..total {
        let reply = conn.send(request("GET", "shop.test", "/")).await;
        let service = reply.echo().service;
        if service == shop.identity().service {
            to_shop += 1;
        } else {
            assert_eq!(service, canary.identity().service);
        }
    }
    // 80 % of 400 is 320, with a standard deviation of 8.
    assert!(
        (280..=360).contains(&to_shop),
        "{to_shop} of {total} requests went to the weight-80 backend"
    );
}

#[tokio::test]
async fn two_gateways_on_one_port_never_see_each_others_routes() {
    let dir = ManifestDir::new();
    let shop = manifests::echo_service(&dir, NS, "shop").await;
    let admin = manifests::echo_service(&dir, NS, "admin").await;
    dir.write_raw("class.yaml", &gateway_class());
    dir.write_raw(
        "gateways.yaml",
        &format!("{}---\n{}", gateway("first", None), gateway("second", None)),
    );
    let to = |name: &str, parent: &str, service: &str| {
        let spec = format!(
            "  parentRefs: [{{name: {parent}}}]\n  rules:\n  - backendRefs: [{{name: {service}, port: 80}}]\n"
        );
        route("HTTPRoute", name, &spec)
    };
    dir.write_raw(
        "routes.yaml",
        &format!(
            "{}---\n{}",
            to("shop", "first", "shop"),
            to("admin", "second", "admin")
        ),
    );
    let (a, b) = (
        controller::unique_loopback_ip(),
        controller::unique_loopback_ip(),
    );
    let _ctl = controller(&dir, &[IpAddr::V4(a), IpAddr::V4(b)]).await;

    // The older Gateway takes the first address of the pool.
    let first = send(SocketAddr::from((a, HTTP_PORT)), || {
        request("GET", "any.test", "/")
    })
    .await;
    assert_eq!(first.echo().service, shop.identity().service);
    let second = send(SocketAddr::from((b, HTTP_PORT)), || {
        request("GET", "any.test", "/")
    })
    .await;
    assert_eq!(second.echo().service, admin.identity().service);
}

#[tokio::test]
async fn an_https_listener_serves_its_certificate_and_a_new_one_without_dropping_connections() {
    let dir = ManifestDir::new();
    let shop = manifests::echo_service(&dir, NS, "shop").await;
    let first = manifests::certificate_file(&dir, NS, "shop-cert", &["shop.test"]);
    dir.write_raw("class.yaml", &gateway_class());
    dir.write_raw("gateway.yaml", &gateway("first", Some("shop-cert")));
    dir.write_raw(
        "route.yaml",
        &route(
            "HTTPRoute",
            "shop",
            "  parentRefs: [{name: first, sectionName: https}, {name: first, sectionName: http}]\n  hostnames: [shop.test]\n  rules:\n\
             \x20 - matches: [{path: {type: PathPrefix, value: /}}]\n\
             \x20   backendRefs: [{name: shop, port: 80}]\n",
        ),
    );
    let ip = controller::unique_loopback_ip();
    let _ctl = controller(&dir, &[IpAddr::V4(ip)]).await;
    let at = SocketAddr::from((ip, HTTPS_PORT));

    let conn = eventually(
        "a TLS handshake on the Gateway's HTTPS listener",
        Duration::from_secs(10),
        async || TlsClient::new().sni("shop.test").connect(at).await,
    )
    .await;
    assert_eq!(conn.leaf(), &first.leaf, "the listener's certificate");
    let mut open = conn.http().await;
    let reply = open.send(request("GET", "shop.test", "/cart")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echo().service, shop.identity().service);

    let second = manifests::certificate_file(&dir, NS, "shop-cert", &["shop.test"]);
    eventually(
        "the new certificate on new handshakes",
        Duration::from_secs(10),
        async || {
            let conn = TlsClient::new().sni("shop.test").connect(at).await?;
            match conn.leaf() == &second.leaf {
                true => Ok(()),
                false => Err("still the first certificate".to_string()),
            }
        },
    )
    .await;
    // The connection opened before the change still serves.
    let reply = open.send(request("GET", "shop.test", "/again")).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_grpc_route_reaches_an_h2c_backend_by_service_and_method() {
    let dir = ManifestDir::new();
    let grpc = GrpcBackend::start_at("127.0.0.1:0".parse().expect("address")).await;
    dir.write(
        "svc-echo.yaml",
        &manifests::service_with_endpoints(NS, "echo", 50051, None, &[grpc.addr], true).objects(),
    );
    class_and_gateway(&dir);
    dir.write_raw(
        "route.yaml",
        &route(
            "GRPCRoute",
            "echo",
            "  parentRefs: [{name: first}]\n  hostnames: [grpc.test]\n  rules:\n\
             \x20 - matches: [{method: {service: pkg.Echo, method: Say}}]\n\
             \x20   backendRefs: [{name: echo, port: 50051}]\n",
        ),
    );
    let ip = controller::unique_loopback_ip();
    let _ctl = controller(&dir, &[IpAddr::V4(ip)]).await;
    let at = SocketAddr::from((ip, HTTP_PORT));

    let (status, message, trailer) = eventually(
        "a gRPC call through the Gateway",
        Duration::from_secs(10),
        async || grpc_call(at, "/pkg.Echo/Say").await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        message, "/pkg.Echo/Say HTTP/2.0",
        "over HTTP/2 to the backend"
    );
    assert_eq!(
        trailer.as_deref(),
        Some("0"),
        "the grpc-status trailer passes"
    );
    let (status, _, _) = grpc_call(at, "/pkg.Echo/Shout").await.expect("answer");
    assert_eq!(status, 404, "another method of the service has no route");
}

#[tokio::test]
async fn a_request_mirror_gets_a_copy_while_the_backend_answers() {
    let dir = ManifestDir::new();
    let shop = manifests::echo_service(&dir, NS, "shop").await;
    let mirror = manifests::echo_service(&dir, NS, "mirror").await;
    class_and_gateway(&dir);
    dir.write_raw(
        "route.yaml",
        &route(
            "HTTPRoute",
            "shop",
            "  parentRefs: [{name: first}]\n  rules:\n\
             \x20 - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: mirror, port: 80}}}]\n\
             \x20   backendRefs: [{name: shop, port: 80}]\n",
        ),
    );
    let ip = controller::unique_loopback_ip();
    let _ctl = controller(&dir, &[IpAddr::V4(ip)]).await;
    let at = SocketAddr::from((ip, HTTP_PORT));
    let reply = send(at, || request("GET", "shop.test", "/mirrored?n=1")).await;
    assert_eq!(
        reply.echo().service,
        shop.identity().service,
        "the backend answers"
    );
    let copy = mirror
        .wait_for_request("/mirrored", Duration::from_secs(10))
        .await;
    assert_eq!(
        (copy.method.as_str(), copy.path.as_str()),
        ("GET", "/mirrored?n=1")
    );
}

#[tokio::test]
async fn a_rule_timeout_answers_504_when_the_backend_is_slower() {
    let dir = ManifestDir::new();
    let _shop = manifests::echo_service(&dir, NS, "shop").await;
    class_and_gateway(&dir);
    dir.write_raw(
        "route.yaml",
        &route(
            "HTTPRoute",
            "shop",
            "  parentRefs: [{name: first}]\n  rules:\n\
             \x20 - timeouts: {request: 300ms}\n\
             \x20   backendRefs: [{name: shop, port: 80}]\n",
        ),
    );
    let ip = controller::unique_loopback_ip();
    let _ctl = controller(&dir, &[IpAddr::V4(ip)]).await;
    let at = SocketAddr::from((ip, HTTP_PORT));
    let quick = send(at, || {
        request(
            "GET",
            "shop.test",
            &format!("{}?ms=10", support::backend::SLEEP),
        )
    })
    .await;
    assert_eq!(quick.status, 200);
    let started = std::time::Instant::now();
    let slow = client::http_send(
        at,
        request(
            "GET",
            "shop.test",
            &format!("{}?ms=3000", support::backend::SLEEP),
        ),
    )
    .await;
    assert_eq!(slow.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at the timeout, not after the backend"
    );
}
