//! Backends that fail in the ways real ones do: never answering, closing mid-request, dying
//! mid-response, not accepting connections. The affected route fails fast with the right status; every
//! other route keeps working throughout.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::client::try_http_send;
use support::manifests;
use support::wait::{LIVE, within};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const NS: &str = "web";

/// The controller with a healthy route `ok.test` and a route `bad.test` whose only endpoint is `bad`,
/// with the given annotations.
async fn setup(
    bad: SocketAddr,
    annotations: &[(&str, &str)],
) -> (ManifestDir, Controller, EchoServer) {
    let dir = ManifestDir::new();
    let healthy = EchoServer::start(EchoIdentity::service("healthy")).await;
    let ok = manifests::service_with_endpoints(NS, "healthy", 80, None, &[healthy.addr()], true);
    let broken = manifests::service_with_endpoints(NS, "broken", 80, None, &[bad], true);
    dir.write("services.yaml", &[ok.objects(), broken.objects()].concat());
    let mut bad_ingress = IngressBuilder::new(NS, "bad").route(Some("bad.test"), "broken");
    for (k, v) in annotations {
        bad_ingress = bad_ingress.annotation(k, v);
    }
    let good_ingress = IngressBuilder::new(NS, "ok").route(Some("ok.test"), "healthy");
    dir.write(
        "ingresses.yaml",
        &[&bad_ingress.build(), &good_ingress.build()],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    (dir, ctl, healthy)
}

/// Sends `count` requests to the healthy route while `during` runs, and expects every one to succeed.
async fn healthy_meanwhile<T>(ctl: &Controller, during: impl std::future::Future<Output = T>) -> T {
    let addr = ctl.addrs.http;
    let probe = tokio::spawn(async move {
        let mut ok = 0;
        for _ in 0..40 {
            let resp = try_http_send(addr, request("GET", "ok.test", "/"))
                .await
                .expect("healthy route");
            assert_eq!(resp.status, 200, "the healthy route keeps working");
            ok += 1;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        ok
    });
    let out = during.await;
    assert_eq!(
        within("the healthy probes", LIVE, probe)
            .await
            .expect("probe task"),
        40
    );
    out
}

#[tokio::test]
async fn an_endpoint_that_accepts_and_never_answers_gives_504_after_the_read_timeout() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp); // accepted, read by nobody, answered never
        }
    });
    let (_dir, ctl, _healthy) = setup(
        bad,
        &[("nginx.ingress.kubernetes.io/proxy-read-timeout", "1")],
    )
    .await;
    let started = Instant::now();
    let resp = healthy_meanwhile(
        &ctl,
        try_http_send(ctl.addrs.http, request("GET", "bad.test", "/")),
    )
    .await
    .expect("a response");
    assert_eq!(resp.status, 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "504 after the 1 s read timeout, took {took:?}"
    );
    hold.abort();
}

#[tokio::test]
async fn an_endpoint_that_closes_mid_request_gives_502() {
    let closing = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = closing.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = closing.accept().await {
            let mut buf = [0u8; 64];
            let _ = tcp.read(&mut buf).await; // read part of the request, then hang up
        }
    });
    let (_dir, ctl, _healthy) = setup(bad, &[]).await;
    let started = Instant::now();
    let resp = healthy_meanwhile(
        &ctl,
        try_http_send(ctl.addrs.http, request("GET", "bad.test", "/")),
    )
    .await
    .expect("a response");
    assert_eq!(resp.status, 502);
    assert!(started.elapsed() < Duration::from_secs(2), "fails fast");
    task.abort();
}

#[tokio::test]
async fn a_backend_dying_mid_response_breaks_only_that_response() {
    let dying = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = dying.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = dying.accept().await {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly ten b")
                .await;
            // and the process dies: the connection closes with 990 bytes missing
        }
    });
    let (_dir, ctl, _healthy) = setup(bad, &[]).await;
    let result = healthy_meanwhile(
        &ctl,
        try_http_send(ctl.addrs.http, request("GET", "bad.test", "/")),
    )
    .await;
    match result {
        Err(_) => {}
        Ok(resp) => panic!(
            "a truncated response must not look complete: status {} body {:?}",
            resp.status,
            resp.text()
        ),
    }
    // The controller is fine and the same route still answers (and still breaks) per request.
    assert_eq!(
        try_http_send(ctl.addrs.http, request("GET", "ok.test", "/"))
            .await
            .expect("healthy")
            .status,
        200
    );
    task.abort();
}

#[tokio::test]
async fn an_endpoint_that_does_not_accept_connections_gives_504_after_the_connect_timeout() {
    // A listener with a full accept queue drops new SYNs, so connecting hangs: the connect timeout fires.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let bad = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(tcp)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(bad),
        )
        .await
        {
            fillers.push(tcp);
        }
    }
    let (_dir, ctl, _healthy) =
        setup(bad, &[("portcullis.io/proxy-connect-timeout", "500ms")]).await;
    let started = Instant::now();
    let resp = healthy_meanwhile(
        &ctl,
        try_http_send(ctl.addrs.http, request("GET", "bad.test", "/")),
    )
    .await
    .expect("a response");
    assert_eq!(resp.status, 504, "{}", resp.text());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "504 after the 500 ms connect timeout, took {took:?}"
    );
    drop(socket);
}
