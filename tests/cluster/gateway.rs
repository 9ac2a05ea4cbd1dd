//! The Gateway API in cluster mode, with the chart's RBAC: a Gateway with HTTP and HTTPS listeners on
//! an address of the pool, an HTTPRoute redirect from HTTP to HTTPS, a traffic split by weight, a
//! certificate rotated through the API under an established connection, a GRPCRoute to an h2c
//! backend, a route in another namespace with and without a ReferenceGrant, and the status the spec
//! asks for on each object.
//!
//! One scenario: its controller watches every namespace (a route in another namespace needs that), so
//! it would take other scenarios' Gateways for its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::harness::*;

pub const NAMES: &[&str] =
    &["gateway_listeners_redirect_split_rotation_and_reference_grants_through_the_api"];

const WAIT: Duration = Duration::from_secs(20);
/// The Gateway API CRDs the chart vendors, installed once for the whole run.
const CRDS: &str = "charts/portcullis/files/gateway-api";

pub async fn run(name: &str, cp: &ControlPlane, slot: u8) -> Result<()> {
    match name {
        "gateway_listeners_redirect_split_rotation_and_reference_grants_through_the_api" => {
            scenario(cp, slot).await
        }
        other => bail!("unknown scenario {other}"),
    }
}

/// Installs the vendored CRDs and waits until the API server serves them.
pub fn install_crds(cp: &ControlPlane) -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CRDS);
    cp.kubectl(&["apply", "--server-side", "-f", &dir.display().to_string()])?;
    for crd in [
        "gatewayclasses",
        "gateways",
        "httproutes",
        "grpcroutes",
        "referencegrants",
    ] {
        cp.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{crd}.gateway.networking.k8s.io"),
        ])?;
    }
    Ok(())
}

/// A JSONPath of one object; `ns` empty for a cluster-scoped one.
fn jsonpath(cp: &ControlPlane, ns: &str, what: &str, path: &str) -> Option<String> {
    let path = format!("jsonpath={path}");
    let mut args = vec!["get", what, "-o", &path];
    if !ns.is_empty() {
        args.extend(["-n", ns]);
    }
    cp.kubectl(&args).ok()
}

async fn scenario(cp: &ControlPlane, slot: u8) -> Result<()> {
    let infra = cp.namespace("gw-infra")?;
    let apps = cp.namespace("gw-apps")?;
    // Every namespace: the chart's ClusterRole, not the namespaced Role.
    let kubeconfig =
        cp.controller_identity_with(&infra, &infra, &["controller.watchNamespace="])?;
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, slot, 1));
    let gateway_ip = IpAddr::V4(Ipv4Addr::new(127, 0, slot, 100));
    let backend = |n: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, slot, n)), 8080);
    let web = Backend::start(backend(1), "web", "web-1").await?;
    let grpc = crate::support::grpc::GrpcBackend::start_at(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 244, slot, 3)),
        50051,
    ))
    .await;
    let canary = Backend::start(backend(2), "canary", "canary-1").await?;
    let (secret, first) = tls_secret(&infra, "gw-tls", &["gw.example.com"]);
    let class = format!("portcullis-{infra}");
    cp.apply(
        &[
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: {class}}}\n\
                 spec: {{controllerName: portcullis.io/gateway-controller}}\n"
            ),
            secret,
            service_with_endpoints(&infra, "web", &[web.addr]),
            service_with_endpoints(&infra, "canary", &[canary.addr]),
            service_with_endpoints(&infra, "echo", &[grpc.addr]),
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: echo, namespace: {infra}}}\n\
                 spec:\n  parentRefs: [{{name: edge, sectionName: http}}]\n  hostnames: [grpc.test]\n\
                 \x20 rules: [{{matches: [{{method: {{service: pkg.Echo}}}}], backendRefs: [{{name: echo, port: 80}}]}}]\n"
            ),
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: edge, namespace: {infra}}}\n\
                 spec:\n  gatewayClassName: {class}\n  listeners:\n\
                 \x20 - {{name: http, protocol: HTTP, port: 80, allowedRoutes: {{namespaces: {{from: All}}}}}}\n\
                 \x20 - name: https\n    protocol: HTTPS\n    port: 443\n    hostname: gw.example.com\n\
                 \x20   tls: {{mode: Terminate, certificateRefs: [{{name: gw-tls}}]}}\n"
            ),
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: to-https, namespace: {infra}}}\n\
                 spec:\n  parentRefs: [{{name: edge, sectionName: http}}]\n  hostnames: [gw.example.com]\n\
                 \x20 rules: [{{filters: [{{type: RequestRedirect, requestRedirect: {{scheme: https, statusCode: 301}}}}]}}]\n"
            ),
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: split, namespace: {infra}}}\n\
                 spec:\n  parentRefs: [{{name: edge, sectionName: https}}]\n\
                 \x20 rules: [{{backendRefs: [{{name: web, port: 80, weight: 1}}, {{name: canary, port: 80, weight: 1}}]}}]\n"
            ),
        ]
        .join("---\n"),
    )?;
    let pool = gateway_ip.to_string();
    let controller = Controller::launch(
        &[
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--namespace".into(),
            infra.clone(),
            "--publish-status-address".into(),
            "192.0.2.1".into(),
            "--gateway-addresses".into(),
            pool.clone(),
            "--https-addr".into(),
            format!("{ip}:443"),
            "--http-addr".into(),
            format!("{ip}:80"),
            "--admin-addr".into(),
            format!("{ip}:10254"),
        ],
        &[("RUST_LOG".into(), "info,portcullis=debug".into())],
        ip,
        SocketAddr::new(ip, 10254),
        &infra,
    )
    .await?;
    let log = || std::fs::read_to_string(&controller.log).unwrap_or_default();

    // Status: the class accepted, the Gateway programmed at its pool address, both routes accepted.
    eventually("the GatewayClass accepted", WAIT, || async {
        let s = jsonpath(
            cp,
            "",
            &format!("gatewayclass/{class}"),
            "{.status.conditions[?(@.type==\"Accepted\")].status}",
        )?;
        (s == "True").then_some(())
    })
    .await?;
    eventually("the Gateway programmed at its pool address", WAIT, || async {
        let s = jsonpath(
            cp,
            &infra,
            "gateway/edge",
            "{.status.conditions[?(@.type==\"Programmed\")].status} {.status.addresses[0].value} {.status.listeners[*].attachedRoutes}",
        )?;
        (s == format!("True {pool} 2 1")).then_some(())
    })
    .await
    .with_context(|| format!("controller log:\n{}", log()))?;
    for route in ["to-https", "split"] {
        eventually(&format!("HTTPRoute {route} accepted"), WAIT, || async {
            let s = jsonpath(
                cp,
                &infra,
                &format!("httproute/{route}"),
                "{.status.parents[0].controllerName} {.status.parents[0].conditions[?(@.type==\"Accepted\")].status} {.status.parents[0].conditions[?(@.type==\"Accepted\")].observedGeneration}",
            )?;
            (s == "portcullis.io/gateway-controller True 1").then_some(())
        })
        .await?;
    }

    // HTTP → HTTPS, then a split by weight over HTTPS with the listener's certificate.
    let http = SocketAddr::new(gateway_ip, 80);
    let https = SocketAddr::new(gateway_ip, 443);
    let (status, _) = http_get(http, "gw.example.com", "/shop?x=1").await?;
    ensure!(status == 301, "redirected, got {status}");
    let redirect = crate::support::client::try_http_send(
        http,
        crate::support::request("GET", "gw.example.com", "/shop?x=1"),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    ensure!(
        redirect.header("location") == Some("https://gw.example.com/shop?x=1"),
        "Location: {:?}",
        redirect.header("location")
    );
    let (mut to_web, mut to_canary) = (0, 0);
    for _ in 0..100 {
        let (status, body, fp) = https_get(https, "gw.example.com", "/").await?;
        ensure!(
            status == 200 && fp == first,
            "status {status}, certificate {fp}"
        );
        match body.contains("\"canary\"") {
            true => to_canary += 1,
            false => to_web += 1,
        }
    }
    ensure!(
        (25..=75).contains(&to_web) && to_web + to_canary == 100,
        "1:1 weights gave web {to_web}, canary {to_canary}"
    );

    // A GRPCRoute over h2c to an HTTP/2-only backend, and its status.
    let (status, message, trailer) =
        eventually("a gRPC call through the Gateway", WAIT, || async {
            crate::support::grpc::grpc_call(http, "/pkg.Echo/Say")
                .await
                .ok()
        })
        .await?;
    ensure!(
        status == 200 && message == "/pkg.Echo/Say HTTP/2.0" && trailer.as_deref() == Some("0"),
        "gRPC answer: {status} {message:?} {trailer:?}"
    );
    eventually("GRPCRoute echo accepted", WAIT, || async {
        let s = jsonpath(
            cp,
            &infra,
            "grpcroute/echo",
            "{.status.parents[0].conditions[?(@.type==\"Accepted\")].status}",
        )?;
        (s == "True").then_some(())
    })
    .await?;

    // A rotation through the API: new handshakes get the new certificate, the open connection lives.
    let (tls, fp) = tls_connect(https, "gw.example.com").await?;
    ensure!(fp == first);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let (secret, second) = tls_secret(&infra, "gw-tls", &["gw.example.com"]);
    cp.apply(&secret)?;
    eventually("the rotated certificate", WAIT, || async {
        https_get(https, "gw.example.com", "/")
            .await
            .ok()
            .filter(|(_, _, fp)| *fp == second)
    })
    .await?;
    let req = hyper::Request::get("/after")
        .header("host", "gw.example.com")
        .body(Full::new(bytes::Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    ensure!(
        resp.status() == 200,
        "the connection from before the rotation still serves"
    );
    let body = resp.into_body().collect().await?.to_bytes();
    ensure!(String::from_utf8_lossy(&body).contains("/after"));

    // A route in another namespace, to a Service in the Gateway's: refused until a ReferenceGrant
    // allows it.
    cp.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: shared, namespace: {apps}}}\n\
         spec:\n  parentRefs: [{{name: edge, namespace: {infra}, sectionName: http}}]\n  hostnames: [apps.example.com]\n\
         \x20 rules: [{{backendRefs: [{{name: web, namespace: {infra}, port: 80}}]}}]\n"
    ))?;
    eventually("RefNotPermitted without a ReferenceGrant", WAIT, || async {
        let s = jsonpath(
            cp,
            &apps,
            "httproute/shared",
            "{.status.parents[0].conditions[?(@.type==\"ResolvedRefs\")].reason}",
        )?;
        (s == "RefNotPermitted").then_some(())
    })
    .await?;
    let (status, _) = http_get(http, "apps.example.com", "/").await?;
    ensure!(
        status == 500,
        "a backend not permitted gets 500, got {status}"
    );
    cp.apply(&format!(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: apps-to-web, namespace: {infra}}}\n\
         spec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {apps}}}]\n\
         \x20 to: [{{group: \"\", kind: Service, name: web}}]\n"
    ))?;
    eventually(
        "the route served once the ReferenceGrant exists",
        WAIT,
        || async {
            let (status, body) = http_get(http, "apps.example.com", "/").await.ok()?;
            (status == 200 && body.contains("\"web\"")).then_some(())
        },
    )
    .await?;
    eventually("ResolvedRefs once granted", WAIT, || async {
        let s = jsonpath(
            cp,
            &apps,
            "httproute/shared",
            "{.status.parents[0].conditions[?(@.type==\"ResolvedRefs\")].status}",
        )?;
        (s == "True").then_some(())
    })
    .await?;
    Ok(())
}
