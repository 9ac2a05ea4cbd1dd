//! `server-alias` through the real binary in manifest mode: an alias is served like its Ingress's
//! host, over HTTPS with the host's certificate and over plain HTTP, and an alias that another
//! Ingress has rules for stays that Ingress's, reported.

mod support;

use support::client;
use support::manifests;
use support::*;

const NS: &str = "shop";

#[tokio::test]
async fn an_alias_is_served_like_the_host_with_its_certificate_and_conflicts_are_reported() {
    let dir = ManifestDir::new();
    let shop = manifests::echo_service(&dir, NS, "shop").await;
    let other = manifests::echo_service(&dir, NS, "other").await;
    let cert = manifests::certificate_file(&dir, NS, "shop-cert", &["shop.test", "www.shop.test"]);
    let aliased = IngressBuilder::new(NS, "shop")
        .route(Some("shop.test"), "shop")
        .tls(&["shop.test"], "shop-cert")
        .nginx_annotations(&[("server-alias", "www.shop.test, other.test")])
        .build();
    let taken = IngressBuilder::new(NS, "other")
        .route(Some("other.test"), "other")
        .build();
    dir.write("ingresses.yaml", &[&aliased, &taken]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let conn = TlsClient::new()
        .sni("www.shop.test")
        .connect(ctl.addrs.https)
        .await
        .expect("handshake");
    assert_eq!(
        conn.leaf(),
        &cert.leaf,
        "the host's certificate for its alias"
    );
    let reply = conn
        .http()
        .await
        .send(request("GET", "www.shop.test", "/cart"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echo().service, shop.identity().service);
    // Plain HTTP: the host's TLS redirect applies to its alias too.
    let reply = client::http_send(ctl.addrs.http, request("GET", "www.shop.test", "/cart")).await;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("location"), Some("https://www.shop.test/cart"));

    let reply = client::http_send(ctl.addrs.http, request("GET", "other.test", "/")).await;
    assert_eq!(reply.echo().service, other.identity().service);
    ctl.wait_for_log(&["server-alias \"other.test\" is ignored", "shop/other"])
        .await;
}
