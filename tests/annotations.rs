//! Every annotation and global setting, proven on real requests through the real binary in manifest
//! mode: redirect codes and Locations, HSTS per Ingress and per scheme, trusted versus untrusted
//! forwarded headers, the source-range allowlist, the body limit, rewrites, backend protocols against
//! real TLS and h2c backends, strict SNI, the configuration file, and a realistic ingress-nginx Ingress.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::client::{self, Captured, Sender};
use support::manifests;
use support::wait::LIVE;
use support::*;

const NS: &str = "web";

async fn backend(dir: &ManifestDir, service: &str) -> EchoServer {
    manifests::echo_service(dir, NS, service).await
}

fn certificate(dir: &ManifestDir, name: &str, hosts: &[&str]) -> TestCert {
    manifests::certificate_file(dir, NS, name, hosts)
}

fn get(host: &str, path: &str) -> client::Req {
    request("GET", host, path)
}

async fn plain(ctl: &Controller, req: client::Req) -> Captured {
    client::http_send(ctl.addrs.http, req).await
}

/// A plain-HTTP request sent from a chosen loopback source address.
async fn plain_from(ctl: &Controller, source: Ipv4Addr, req: client::Req) -> Captured {
    let tcp = client::tcp(ctl.addrs.http, Some(IpAddr::V4(source)))
        .await
        .expect("connect");
    Sender::http1(tcp).await.expect("handshake").send(req).await
}

async fn secure(ctl: &Controller, req: client::Req) -> Captured {
    let conn = TlsClient::new()
        .sni(&req.host.clone())
        .connect(ctl.addrs.https)
        .await
        .expect("TLS");
    conn.http().await.send(req).await
}

fn config_file(dir: &tempfile::TempDir, yaml: &str) -> String {
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path.display().to_string()
}

fn location(resp: &Captured) -> &str {
    resp.header("location").unwrap_or("")
}

#[tokio::test]
async fn redirect_annotations_answer_with_their_codes_and_locations() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let ingress = |name: &str, host: &str, annotations: &[(&str, &str)]| {
        let mut b = IngressBuilder::new(NS, name).route(Some(host), "app");
        for (k, v) in annotations {
            b = b.annotation(k, v);
        }
        b.build()
    };
    certificate(&dir, "tls", &["slash.test", "port.test"]);
    let tls = |name: &str, host: &str, annotations: &[(&str, &str)]| {
        let mut b = IngressBuilder::new(NS, name)
            .tls(&[host], "tls")
            .route(Some(host), "app");
        for (k, v) in annotations {
            b = b.annotation(k, v);
        }
        b.build()
    };
    dir.write(
        "ingresses.yaml",
        &[
            &ingress(
                "moved",
                "moved.test",
                &[(
                    "nginx.ingress.kubernetes.io/permanent-redirect",
                    "https://example.com/new",
                )],
            ),
            &ingress(
                "moved308",
                "moved308.test",
                &[
                    ("portcullis.io/permanent-redirect", "https://example.com/"),
                    ("portcullis.io/permanent-redirect-code", "308"),
                ],
            ),
            &ingress(
                "away",
                "away.test",
                &[(
                    "nginx.ingress.kubernetes.io/temporal-redirect",
                    "http://example.org/tmp",
                )],
            ),
            &ingress(
                "root",
                "root.test",
                &[("nginx.ingress.kubernetes.io/app-root", "/app")],
            ),
            &ingress(
                "www",
                "bare.test",
                &[("nginx.ingress.kubernetes.io/from-to-www-redirect", "true")],
            ),
            &tls(
                "slash",
                "slash.test",
                &[(
                    "nginx.ingress.kubernetes.io/preserve-trailing-slash",
                    "true",
                )],
            ),
            &tls(
                "port",
                "port.test",
                &[("portcullis.io/use-port-in-redirects", "true")],
            ),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;

    let r = plain(&ctl, get("moved.test", "/any/path?q=1")).await;
    assert_eq!(
        (r.status.as_u16(), location(&r)),
        (301, "https://example.com/new")
    );
    let r = plain(&ctl, get("moved308.test", "/")).await;
    assert_eq!(r.status.as_u16(), 308);
    let r = secure(&ctl, get("away.test", "/x")).await;
    assert_eq!(
        (r.status.as_u16(), location(&r)),
        (302, "http://example.org/tmp"),
        "fixed redirects answer on HTTPS too"
    );
    let r = plain(&ctl, get("root.test", "/")).await;
    assert_eq!(
        (r.status.as_u16(), location(&r)),
        (302, "http://root.test/app")
    );
    assert_eq!(
        plain(&ctl, get("root.test", "/other")).await.status,
        200,
        "app-root only redirects /"
    );
    let r = plain(&ctl, get("www.bare.test", "/p?q=1")).await;
    assert_eq!(
        (r.status.as_u16(), location(&r)),
        (308, "http://bare.test/p?q=1")
    );
    assert_eq!(plain(&ctl, get("bare.test", "/p")).await.status, 200);
    let r = plain(&ctl, get("slash.test", "/docs/")).await;
    assert_eq!(
        (r.status.as_u16(), location(&r)),
        (308, "https://slash.test/docs/"),
        "preserve-trailing-slash"
    );
    let r = plain(&ctl, get("port.test", "/docs/")).await;
    let port = ctl.addrs.https.port();
    assert_eq!(
        (r.status.as_u16(), location(&r).to_string()),
        (308, format!("https://port.test:{port}/docs")),
        "use-port-in-redirects; the trailing slash is dropped as ingress-nginx does"
    );
}

#[tokio::test]
async fn the_redirect_code_comes_from_the_config_file_and_a_bad_reload_keeps_it() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    certificate(&dir, "tls", &["secure.test"]);
    dir.write(
        "ingress.yaml",
        &[&IngressBuilder::new(NS, "a")
            .tls(&["secure.test"], "tls")
            .route(Some("secure.test"), "app")
            .build()],
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_file(&config_dir, "redirect: {code: 301}\n");
    let ctl = Controller::start(dir.path(), &["--config", &config]).await;
    assert_eq!(plain(&ctl, get("secure.test", "/")).await.status, 301);

    config_file(&config_dir, "redirect: {code: 302}\n");
    eventually("the new redirect code", LIVE, async || {
        match plain(&ctl, get("secure.test", "/")).await.status.as_u16() {
            302 => Ok(()),
            other => Err(other.to_string()),
        }
    })
    .await;

    config_file(
        &config_dir,
        "redirect: {code: 302}\nhsts: {enbled: false}\n",
    );
    ctl.wait_for_log(&["invalid configuration file", "unknown field `enbled`"])
        .await;
    assert_eq!(
        plain(&ctl, get("secure.test", "/")).await.status,
        302,
        "the previous settings stay"
    );
}

#[tokio::test]
async fn a_bad_config_file_at_start_exits_with_code_2_and_says_why() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_file(&config_dir, "upstream:\n  read-timeout: soon\n");
    let manifests = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "--manifests",
            &manifests.path().display().to_string(),
            "--config",
            &config,
        ])
        .args([
            "--https-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run portcullis");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config.yaml")
            && stderr.contains("read-timeout")
            && stderr.contains("duration"),
        "{stderr}"
    );
}

#[tokio::test]
async fn hsts_is_sent_over_https_for_hosts_with_a_certificate_as_each_ingress_asks() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    certificate(&dir, "tls", &["default.test", "off.test", "custom.test"]);
    let tls = |name: &str, host: &str, secret: &str, annotations: &[(&str, &str)]| {
        let mut b = IngressBuilder::new(NS, name)
            .tls(&[host], secret)
            .route(Some(host), "app")
            .annotation("portcullis.io/ssl-redirect", "false");
        for (k, v) in annotations {
            b = b.annotation(k, v);
        }
        b.build()
    };
    dir.write(
        "ingresses.yaml",
        &[
            &tls("default", "default.test", "tls", &[]),
            &tls("off", "off.test", "tls", &[("portcullis.io/hsts", "false")]),
            &tls(
                "custom",
                "custom.test",
                "tls",
                &[
                    ("portcullis.io/hsts-max-age", "600"),
                    ("portcullis.io/hsts-include-subdomains", "false"),
                    ("portcullis.io/hsts-preload", "true"),
                ],
            ),
            &tls("nocert", "nocert.test", "missing-secret", &[]),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    let hsts = |r: &Captured| r.header("strict-transport-security").map(str::to_string);
    assert_eq!(
        hsts(&secure(&ctl, get("default.test", "/")).await).as_deref(),
        Some("max-age=31536000; includeSubDomains")
    );
    assert_eq!(
        hsts(&plain(&ctl, get("default.test", "/")).await),
        None,
        "never on plain HTTP"
    );
    assert_eq!(
        hsts(&secure(&ctl, get("off.test", "/")).await),
        None,
        "switched off for this Ingress"
    );
    assert_eq!(
        hsts(&secure(&ctl, get("custom.test", "/")).await).as_deref(),
        Some("max-age=600; preload")
    );
    assert_eq!(
        hsts(&secure(&ctl, get("nocert.test", "/")).await),
        None,
        "not for a host served with the default certificate"
    );
}

#[tokio::test]
async fn forwarded_proto_is_believed_only_from_trusted_proxies() {
    let dir = ManifestDir::new();
    let app = backend(&dir, "app").await;
    certificate(&dir, "tls", &["lb.test"]);
    dir.write(
        "ingress.yaml",
        &[&IngressBuilder::new(NS, "lb")
            .tls(&["lb.test"], "tls")
            .route(Some("lb.test"), "app")
            .build()],
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_file(&config_dir, "trusted-proxies: [127.0.0.7/32]\n");
    let ctl = Controller::start(dir.path(), &["--config", &config]).await;
    let behind_lb = get("lb.test", "/through-lb")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-for", "203.0.113.50");

    // The trusted load balancer says the client used HTTPS: no redirect, so no loop.
    let r = plain_from(&ctl, Ipv4Addr::new(127, 0, 0, 7), behind_lb.clone()).await;
    assert_eq!(
        r.status, 200,
        "no redirect for a request a trusted proxy received over HTTPS"
    );
    let seen = r.echo();
    assert_eq!(seen.header("X-Forwarded-Proto"), Some("https"));
    assert_eq!(
        seen.header("X-Real-Ip"),
        Some("203.0.113.50"),
        "the client as the proxy reports it"
    );
    assert_eq!(
        seen.header("X-Forwarded-For"),
        Some("203.0.113.50, 127.0.0.7"),
        "the chain is extended"
    );

    // Anyone else saying so is redirected, and their claims are replaced.
    let r = plain_from(&ctl, Ipv4Addr::new(127, 0, 0, 8), behind_lb).await;
    assert_eq!(
        (r.status.as_u16(), location(&r)),
        (308, "https://lb.test/through-lb")
    );
    let r = plain_from(
        &ctl,
        Ipv4Addr::new(127, 0, 0, 8),
        get("lb.test", "/.well-known/acme-challenge/x").header("x-forwarded-for", "203.0.113.50"),
    )
    .await;
    assert_eq!(r.echo().header("X-Forwarded-For"), Some("127.0.0.8"));
    assert_eq!(r.echo().header("X-Real-Ip"), Some("127.0.0.8"));
    drop(app);
}

#[tokio::test]
async fn the_source_range_allowlist_admits_listed_clients_and_fails_closed() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    dir.write(
        "ingresses.yaml",
        &[
            &IngressBuilder::new(NS, "listed")
                .route(Some("listed.test"), "app")
                .annotation(
                    "nginx.ingress.kubernetes.io/whitelist-source-range",
                    "127.0.0.5/32, 10.0.0.0/8",
                )
                .build(),
            &IngressBuilder::new(NS, "broken")
                .route(Some("broken.test"), "app")
                .annotation(
                    "nginx.ingress.kubernetes.io/allowlist-source-range",
                    "127.0.0.5/32, not-a-cidr",
                )
                .build(),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    assert_eq!(
        plain_from(&ctl, Ipv4Addr::new(127, 0, 0, 5), get("listed.test", "/"))
            .await
            .status,
        200
    );
    assert_eq!(
        plain_from(&ctl, Ipv4Addr::new(127, 0, 0, 6), get("listed.test", "/"))
            .await
            .status,
        403
    );
    assert_eq!(
        plain_from(&ctl, Ipv4Addr::new(127, 0, 0, 5), get("broken.test", "/"))
            .await
            .status,
        403,
        "an invalid list denies everyone"
    );
    ctl.wait_for_log(&[
        "Ingress web/broken",
        "allowlist-source-range",
        "every client is denied",
    ])
    .await;
}

#[tokio::test]
async fn proxy_body_size_rejects_larger_bodies_with_413() {
    let dir = ManifestDir::new();
    let app = backend(&dir, "app").await;
    dir.write(
        "ingress.yaml",
        &[&IngressBuilder::new(NS, "small")
            .route(Some("small.test"), "app")
            .annotation("nginx.ingress.kubernetes.io/proxy-body-size", "1k")
            .build()],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    let upload =
        |n: usize| request("POST", "small.test", support::backend::HASH).body(vec![b'x'; n]);
    assert_eq!(plain(&ctl, upload(1024)).await.status, 200, "at the limit");
    let r = plain(&ctl, upload(1025)).await;
    assert_eq!(r.status, 413);
    let reached = app
        .seen()
        .iter()
        .filter(|s| s.path.starts_with(support::backend::HASH))
        .count();
    assert_eq!(
        reached, 1,
        "a body announced too large never reaches the backend"
    );

    // Without Content-Length (chunked), the limit applies while streaming.
    let tcp = client::tcp(ctl.addrs.http, None).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let chunks = futures_util::stream::iter((0..4).map(|_| {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'y'; 512])))
    }));
    let req = http::Request::post(support::backend::HASH)
        .header("host", "small.test")
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 413, "a chunked body over the limit");
}

#[tokio::test]
async fn rewrite_target_vhost_and_forwarded_prefix_shape_what_the_backend_sees() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let ing = IngressBuilder::new(NS, "rewrite")
        .path(
            Some("rewrite.test"),
            "/something(/|$)(.*)",
            manifests::PathType::ImplementationSpecific,
            "app",
            manifests::Port::Number(80),
        )
        .annotation("nginx.ingress.kubernetes.io/rewrite-target", "/$2")
        .annotation("nginx.ingress.kubernetes.io/upstream-vhost", "internal.svc")
        .annotation(
            "nginx.ingress.kubernetes.io/x-forwarded-prefix",
            "/something",
        )
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;
    let seen = plain(&ctl, get("rewrite.test", "/something/new/path?q=1"))
        .await
        .echo();
    assert_eq!(seen.path, "/new/path?q=1");
    assert_eq!(seen.host, "internal.svc");
    assert_eq!(seen.header("X-Forwarded-Prefix"), Some("/something"));
    assert_eq!(
        plain(&ctl, get("rewrite.test", "/SOMETHING"))
            .await
            .echo()
            .path,
        "/",
        "regex paths ignore case; no capture is empty"
    );
    assert_eq!(plain(&ctl, get("rewrite.test", "/other")).await.status, 404);
}

/// A backend that answers with the protocol it saw and whether the connection was TLS.
struct ProtocolBackend {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProtocolBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProtocolBackend {
    async fn start(tls: Option<Arc<rustls::ServerConfig>>, h2_only: bool) -> ProtocolBackend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let secure = tls.is_some();
                    let service = service_fn(
                        move |req: http::Request<hyper::body::Incoming>| async move {
                            let body = format!(
                                "{{\"proto\":\"{:?}\",\"tls\":{secure},\"host\":\"{}\"}}",
                                req.version(),
                                req.headers()
                                    .get("host")
                                    .and_then(|h| h.to_str().ok())
                                    .unwrap_or("")
                            );
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(body),
                            )))
                        },
                    );
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if h2_only {
                        builder = builder.http2_only();
                    }
                    match tls {
                        Some(config) => {
                            if let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                            {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        ProtocolBackend { addr, task }
    }
}

fn backend_tls(alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    let cert = TestCert::self_signed(&["backend.internal"]);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.leaf.clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

use rustls::pki_types::pem::PemObject as _;

#[tokio::test]
async fn backend_protocols_reach_tls_h2c_and_h2_over_tls_backends() {
    let dir = ManifestDir::new();
    let https = ProtocolBackend::start(Some(backend_tls(&[b"http/1.1"])), false).await;
    let h2c = ProtocolBackend::start(None, true).await;
    let grpcs = ProtocolBackend::start(Some(backend_tls(&[b"h2"])), true).await;
    for (name, b) in [
        ("https-svc", &https),
        ("h2c-svc", &h2c),
        ("grpcs-svc", &grpcs),
    ] {
        dir.write(
            &format!("svc-{name}.yaml"),
            &manifests::service_with_endpoints(NS, name, 80, None, &[b.addr], true).objects(),
        );
    }
    let ing = |name: &str, svc: &str, protocol: &str| {
        IngressBuilder::new(NS, name)
            .route(Some(&format!("{name}.test")), svc)
            .annotation("nginx.ingress.kubernetes.io/backend-protocol", protocol)
            .build()
    };
    dir.write(
        "ingresses.yaml",
        &[
            &ing("https", "https-svc", "HTTPS"),
            &ing("h2c", "h2c-svc", "H2C"),
            &ing("grpc", "h2c-svc", "GRPC"),
            &ing("grpcs", "grpcs-svc", "GRPCS"),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    let seen = |r: Captured| -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{}: {}", r.status, r.text()))
    };

    let v = seen(plain(&ctl, get("https.test", "/")).await);
    assert_eq!(
        (v["proto"].as_str(), v["tls"].as_bool()),
        (Some("HTTP/1.1"), Some(true))
    );
    assert_eq!(v["host"], "https.test");
    for host in ["h2c.test", "grpc.test"] {
        let v = seen(plain(&ctl, get(host, "/")).await);
        assert_eq!(
            (v["proto"].as_str(), v["tls"].as_bool()),
            (Some("HTTP/2.0"), Some(false)),
            "{host}"
        );
    }
    let v = seen(plain(&ctl, get("grpcs.test", "/")).await);
    assert_eq!(
        (v["proto"].as_str(), v["tls"].as_bool()),
        (Some("HTTP/2.0"), Some(true))
    );
}

#[tokio::test]
async fn strict_sni_from_the_config_refuses_unknown_names() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let cert = certificate(&dir, "tls", &["known.test"]);
    dir.write(
        "ingress.yaml",
        &[&IngressBuilder::new(NS, "known")
            .tls(&["known.test"], "tls")
            .route(Some("known.test"), "app")
            .build()],
    );
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_file(&config_dir, "tls: {strict-sni: true}\n");
    let ctl = Controller::start(dir.path(), &["--config", &config]).await;
    let known = TlsClient::new()
        .sni("known.test")
        .connect(ctl.addrs.https)
        .await
        .expect("a known name is served");
    assert_eq!(known.fingerprint(), cert.fingerprint());
    assert!(
        TlsClient::new()
            .sni("unknown.test")
            .connect(ctl.addrs.https)
            .await
            .is_err(),
        "an unknown name is refused"
    );
}

#[tokio::test]
async fn a_realistic_ingress_nginx_ingress_is_served_the_same_way() {
    let dir = ManifestDir::new();
    let _api = backend(&dir, "api").await;
    let _slow = backend(&dir, "slow").await;
    certificate(&dir, "shop-tls", &["shop.test"]);
    // What an ingress-nginx user typically has: TLS with the redirect, a regex rewrite under /api,
    // a body limit, timeouts, an allowlist, a prefix header, CORS, and one annotation Portcullis lacks.
    let ing = IngressBuilder::new(NS, "shop")
        .tls(&["shop.test"], "shop-tls")
        .path(
            Some("shop.test"),
            "/api(/|$)(.*)",
            manifests::PathType::ImplementationSpecific,
            "api",
            manifests::Port::Number(80),
        )
        .path(
            Some("shop.test"),
            "/slow(/|$)(.*)",
            manifests::PathType::ImplementationSpecific,
            "slow",
            manifests::Port::Number(80),
        )
        .annotation("kubernetes.io/ingress.class", "portcullis")
        .annotation("nginx.ingress.kubernetes.io/ssl-redirect", "true")
        .annotation("nginx.ingress.kubernetes.io/use-regex", "true")
        .annotation("nginx.ingress.kubernetes.io/rewrite-target", "/$2")
        .annotation("nginx.ingress.kubernetes.io/proxy-body-size", "8m")
        .annotation("nginx.ingress.kubernetes.io/proxy-read-timeout", "120")
        .annotation("nginx.ingress.kubernetes.io/proxy-connect-timeout", "5")
        .annotation(
            "nginx.ingress.kubernetes.io/whitelist-source-range",
            "127.0.0.0/8",
        )
        .annotation("nginx.ingress.kubernetes.io/x-forwarded-prefix", "/api")
        .annotation("nginx.ingress.kubernetes.io/enable-cors", "true")
        .annotation("nginx.ingress.kubernetes.io/enable-modsecurity", "true")
        .class(None)
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let r = plain(&ctl, get("shop.test", "/api/v1/cart?id=7")).await;
    assert_eq!(
        (r.status.as_u16(), location(&r)),
        (308, "https://shop.test/api/v1/cart?id=7")
    );
    let r = secure(&ctl, get("shop.test", "/api/v1/cart?id=7")).await;
    assert_eq!(r.status, 200);
    assert!(r.header("strict-transport-security").is_some());
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let seen = r.echo();
    assert_eq!(
        (seen.service.as_str(), seen.path.as_str()),
        ("api", "/v1/cart?id=7")
    );
    assert_eq!(seen.header("X-Forwarded-Prefix"), Some("/api"));
    assert_eq!(seen.header("X-Forwarded-Proto"), Some("https"));
    assert_eq!(
        secure(&ctl, get("shop.test", "/slow/x"))
            .await
            .echo()
            .service,
        "slow"
    );
    let big = request("POST", "shop.test", "/api/upload").body(vec![0u8; 9 << 20]);
    assert_eq!(secure(&ctl, big).await.status, 413);
    ctl.wait_for_log(&["Ingress web/shop", "enable-modsecurity", "not supported"])
        .await;
    // Reported once, not on every rebuild.
    dir.write(
        "unrelated.yaml",
        &[&IngressBuilder::new(NS, "other")
            .route(Some("other.test"), "api")
            .build()],
    );
    ctl.wait_for_generation(2).await;
    assert_eq!(
        ctl.logs().matches("enable-modsecurity").count(),
        1,
        "{}",
        ctl.logs()
    );
}
