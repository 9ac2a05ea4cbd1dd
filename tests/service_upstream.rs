//! `service-upstream: "true"` in manifest mode: requests go to the Service's cluster IP and port
//! (from its manifest), not to its endpoints.

mod support;

use std::net::IpAddr;

use support::client::try_http_send;
use support::controller::unique_loopback_ip;
use support::manifests::{self, PathType, Port};
use support::*;
use tokio::net::TcpListener;

const NS: &str = "web";
const HOST: &str = "app.test";

/// A Service whose cluster IP is where `echo` listens, and whose only endpoint refuses connections.
async fn setup(
    echo: &EchoServer,
    cluster_ip: &str,
    annotations: &[(&str, &str)],
) -> (ManifestDir, Controller) {
    let refused = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let port = echo.addr().port();
    let mut svc =
        manifests::service_with_endpoints(NS, "app", i32::from(port), None, &[refused], true);
    if let Some(spec) = svc.service.spec.as_mut() {
        spec.cluster_ip = Some(cluster_ip.into());
    }
    let dir = ManifestDir::new();
    dir.write("service.yaml", &svc.objects());
    let mut ingress = IngressBuilder::new(NS, "app").path(
        Some(HOST),
        "/",
        PathType::Prefix,
        "app",
        Port::Number(i32::from(port)),
    );
    for (k, v) in annotations {
        ingress = ingress.annotation(&format!("nginx.ingress.kubernetes.io/{k}"), v);
    }
    dir.write("ingress.yaml", &[&ingress.build()]);
    let ctl = Controller::start(dir.path(), &[]).await;
    (dir, ctl)
}

async fn status(ctl: &Controller) -> u16 {
    support::client::http_status(ctl.addrs.http, HOST, "/").await
}

#[tokio::test]
async fn requests_go_to_the_cluster_ip_instead_of_the_endpoints() {
    let ip = IpAddr::V4(unique_loopback_ip());
    let echo = EchoServer::start_on(ip, EchoIdentity::service("app")).await;
    let (_dir, ctl) = setup(&echo, &ip.to_string(), &[("service-upstream", "true")]).await;
    let resp = try_http_send(ctl.addrs.http, request("GET", HOST, "/"))
        .await
        .expect("a response");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.echo().service, "app");
    drop(ctl);
    let (_dir, ctl) = setup(&echo, &ip.to_string(), &[]).await;
    assert_eq!(
        status(&ctl).await,
        502,
        "without it: the (refusing) endpoints"
    );
}

#[tokio::test]
async fn a_headless_service_keeps_its_endpoints_and_is_reported() {
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let (_dir, ctl) = setup(&echo, "None", &[("service-upstream", "true")]).await;
    assert_eq!(status(&ctl).await, 502);
    ctl.wait_for_log(&["service-upstream", "has no cluster IP"])
        .await;
}
