//! SSL passthrough (`--enable-ssl-passthrough`, `ssl-passthrough: "true"`) through the real binary in
//! manifest mode: a TLS backend started by the test with its own certificate and an ALPN protocol
//! Portcullis never offers, `openssl s_client` and `curl` as clients. A passed-through host's clients
//! see the backend's certificate and ALPN and talk to it end to end; a terminated host on the same
//! listener keeps Portcullis's certificate and routing; PROXY protocol headers are still read; the
//! connections are counted and survive the start of a drain; without the flag nothing is passed
//! through and the annotation is reported.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::manifests;
use support::openssl::Openssl;
use support::*;
use support::{client, tools};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NS: &str = "argocd";
const PASS: &str = "cd.test";
const TERMINATED: &str = "app.test";
/// The ALPN protocol the backend prefers: Portcullis itself only ever selects `h2` or `http/1.1`.
const BACKEND_ALPN: &str = "x-backend";

/// A TLS server with its own certificate that answers every HTTP/1.1 request with the server name
/// and ALPN protocol its handshake saw.
struct TlsBackend {
    addr: SocketAddr,
    cert: TestCert,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsBackend {
    async fn start() -> TlsBackend {
        let cert = TestCert::self_signed(&[PASS]);
        let chain = CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("backend chain");
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("backend key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("backend certificate");
        config.alpn_protocols = vec![BACKEND_ALPN.into(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (_, session) = tls.get_ref();
                    let sni = session.server_name().unwrap_or("-").to_string();
                    let alpn = session
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_else(|| "-".into());
                    // One answer per request head, for as long as the client keeps the connection.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let body = format!("passthrough backend sni={sni} alpn={alpn}\n");
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if tls.write_all(answer.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        TlsBackend { addr, cert, task }
    }
}

/// The passthrough Ingress (with an annotation it ignores) and a terminated one, with their
/// backends, in one manifest directory.
async fn setup(extra_args: &[&str]) -> (ManifestDir, TlsBackend, EchoServer, TestCert, Controller) {
    let dir = ManifestDir::new();
    let backend = TlsBackend::start().await;
    let svc = manifests::service_with_endpoints(
        NS,
        "argocd-server",
        443,
        Some("https"),
        &[backend.addr],
        true,
    );
    dir.write("svc-argocd.yaml", &svc.objects());
    let app = manifests::echo_service(&dir, NS, "app").await;
    let cert = manifests::certificate_file(&dir, NS, "app-cert", &[TERMINATED]);
    let passthrough = IngressBuilder::new(NS, "argocd-server")
        .path(
            Some(PASS),
            "/",
            manifests::PathType::Prefix,
            "argocd-server",
            manifests::Port::name("https"),
        )
        .nginx_annotations(&[("ssl-passthrough", "true"), ("force-ssl-redirect", "true")])
        .build();
    let terminated = IngressBuilder::new(NS, "app")
        .route(Some(TERMINATED), "app")
        .tls(&[TERMINATED], "app-cert")
        .build();
    dir.write("ingresses.yaml", &[&passthrough, &terminated]);
    let ctl = Controller::start(dir.path(), extra_args).await;
    (dir, backend, app, cert, ctl)
}

/// The first certificate `openssl s_client -showcerts` printed, as DER.
fn served_leaf(s_client_stdout: &str) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(s_client_stdout.as_bytes())
        .next()
        .unwrap_or_else(|| panic!("no certificate in s_client output:\n{s_client_stdout}"))
        .expect("certificate PEM")
}

async fn metrics(ctl: &Controller) -> String {
    let out = tools::curl(&[&format!("http://{}/metrics", ctl.addrs.admin)]).await;
    assert!(out.success, "scrape /metrics: {}", out.stderr);
    out.stdout
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn openssl_sees_the_backends_own_certificate_and_alpn() {
    let (_dir, backend, _app, _cert, ctl) = setup(&["--enable-ssl-passthrough"]).await;
    let out = tools::s_client(
        ctl.addrs.https,
        PASS,
        &["-showcerts", "-alpn", &format!("{BACKEND_ALPN},http/1.1")],
    )
    .await;
    assert_eq!(
        served_leaf(&out.stdout),
        backend.cert.leaf,
        "the backend's certificate, not Portcullis's:\n{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("ALPN protocol: {BACKEND_ALPN}")),
        "the backend's ALPN choice reaches the client:\n{}",
        out.stdout
    );
}

#[tokio::test]
async fn curl_verifies_the_backends_certificate_and_gets_its_answer() {
    let (_dir, backend, _app, _cert, ctl) = setup(&["--enable-ssl-passthrough"]).await;
    let scratch = Openssl::scratch();
    scratch.write("backend.crt", &backend.cert.chain_pem);
    let https = ctl.addrs.https;
    let resolve = format!("{PASS}:{}:{}", https.port(), https.ip());
    let url = format!("https://{PASS}:{}/api/version", https.port());
    let ca = scratch.path("backend.crt").display().to_string();
    for _ in 0..3 {
        let out = tools::curl(&["--cacert", &ca, "--resolve", &resolve, "--http1.1", &url]).await;
        assert!(out.success, "curl {url}: {}", out.stderr);
        assert_eq!(
            out.stdout,
            format!("passthrough backend sni={PASS} alpn=http/1.1\n")
        );
    }
    let scraped = metrics(&ctl).await;
    assert_eq!(
        metric(
            &scraped,
            "portcullis_passthrough_connections_total{result=\"passed\"}"
        ),
        3.0,
        "{scraped}"
    );
    // Passed-through connections are no handshakes of Portcullis's, succeeded or failed.
    let handshakes: f64 = scraped
        .lines()
        .filter_map(|l| l.strip_prefix("portcullis_tls_handshakes_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(handshakes, 0.0, "{scraped}");
}

#[tokio::test]
async fn terminated_hosts_on_the_same_listener_are_unaffected() {
    let (_dir, backend, app, cert, ctl) = setup(&["--enable-ssl-passthrough"]).await;
    let conn = TlsClient::new()
        .sni(TERMINATED)
        .alpn(&["h2", "http/1.1"])
        .connect(ctl.addrs.https)
        .await
        .expect("handshake with Portcullis");
    assert_eq!(
        conn.leaf(),
        &cert.leaf,
        "Portcullis's certificate for the terminated host"
    );
    assert_eq!(conn.alpn().as_deref(), Some("h2"));
    let reply = conn
        .http()
        .await
        .send(request("GET", TERMINATED, "/x"))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echo().service, app.identity().service);
    // No SNI, and an unknown one: the default certificate, as before.
    for client in [TlsClient::new(), TlsClient::new().sni("other.test")] {
        let conn = client.connect(ctl.addrs.https).await.expect("handshake");
        assert_ne!(conn.leaf(), &backend.cert.leaf);
        assert_ne!(conn.leaf(), &cert.leaf);
    }
    // Plain HTTP for the passed-through host redirects to HTTPS, where its backend answers.
    let reply = client::http_send(ctl.addrs.http, request("GET", PASS, "/login")).await;
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location"),
        Some(format!("https://{PASS}/login").as_str())
    );
}

#[tokio::test]
async fn other_annotations_of_a_passthrough_ingress_are_reported_as_ignored() {
    let (_dir, _backend, _app, _cert, ctl) = setup(&["--enable-ssl-passthrough"]).await;
    ctl.wait_for_log(&[
        "nginx.ingress.kubernetes.io/force-ssl-redirect is ignored",
        "ssl-passthrough",
    ])
    .await;
}

#[tokio::test]
async fn without_the_flag_nothing_is_passed_through_and_the_annotation_is_reported() {
    let (_dir, backend, _app, _cert, ctl) = setup(&[]).await;
    let conn = TlsClient::new()
        .sni(PASS)
        .connect(ctl.addrs.https)
        .await
        .expect("handshake with Portcullis");
    assert_ne!(conn.leaf(), &backend.cert.leaf, "terminated by Portcullis");
    ctl.wait_for_log(&["ssl-passthrough needs --enable-ssl-passthrough"])
        .await;
}

#[tokio::test]
async fn a_proxy_protocol_header_from_a_trusted_balancer_is_read_before_the_client_hello() {
    let dir_config = Openssl::scratch();
    dir_config.write(
        "config.yaml",
        "proxy-protocol: required\ntrusted-proxies: [\"127.0.0.0/8\"]\n",
    );
    let config = dir_config.path("config.yaml").display().to_string();
    let (_dir, backend, _app, _cert, ctl) =
        setup(&["--enable-ssl-passthrough", "--config", &config]).await;
    let mut tcp = TcpStream::connect(ctl.addrs.https).await.expect("connect");
    tcp.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n")
        .await
        .expect("PROXY header");
    let answer = get_over_tls(tcp, backend.cert.leaf.clone(), PASS).await;
    assert!(
        answer.contains("passthrough backend sni=cd.test"),
        "the header did not reach the backend: {answer}"
    );
}

/// A TLS handshake for `host` over `tcp`, trusting only `root`, then one request: the answer's start.
async fn get_over_tls(tcp: TcpStream, root: CertificateDer<'static>, host: &str) -> String {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("name");
    let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("the expected certificate verifies");
    tls.write_all(format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut answer))
        .await
        .expect("answer in time")
        .expect("answer");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// A relay to `to` that passes the client's first bytes (its ClientHello) on in 5-byte segments,
/// a millisecond apart, then everything as it comes: the listener must gather the ClientHello over
/// many reads.
async fn trickling_relay(to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut server) = TcpStream::connect(to).await else {
            return;
        };
        let _ = server.set_nodelay(true);
        let mut hello = vec![0u8; 16 * 1024];
        let Ok(n) = client.read(&mut hello).await else {
            return;
        };
        for piece in hello[..n].chunks(5) {
            if server.write_all(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    addr
}

#[tokio::test]
async fn a_client_hello_in_many_small_segments_is_routed_by_its_server_name() {
    let (_dir, backend, _app, cert, ctl) = setup(&["--enable-ssl-passthrough"]).await;
    let relay = trickling_relay(ctl.addrs.https).await;
    let tcp = TcpStream::connect(relay).await.expect("connect");
    let answer = get_over_tls(tcp, backend.cert.leaf.clone(), PASS).await;
    assert!(
        answer.contains("passthrough backend sni=cd.test"),
        "{answer}"
    );
    // A terminated host, trickled the same way, gets Portcullis's certificate and its route.
    let relay = trickling_relay(ctl.addrs.https).await;
    let tcp = TcpStream::connect(relay).await.expect("connect");
    let answer = get_over_tls(tcp, cert.trust_anchor(), TERMINATED).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_open_passthrough_connection_is_counted_and_drained_on_shutdown() {
    let (_dir, backend, _app, _cert, mut ctl) = setup(&["--enable-ssl-passthrough"]).await;
    let conn = TlsClient::new()
        .sni(PASS)
        .connect(ctl.addrs.https)
        .await
        .expect("handshake with the backend");
    assert_eq!(conn.leaf(), &backend.cert.leaf);
    let mut stream = conn.stream;
    let ask = format!("GET / HTTP/1.1\r\nhost: {PASS}\r\n\r\n");
    let mut answer = vec![0u8; 4096];
    stream.write_all(ask.as_bytes()).await.expect("request");
    let n = stream.read(&mut answer).await.expect("answer");
    assert!(String::from_utf8_lossy(&answer[..n]).contains("passthrough backend"));
    let scraped = metrics(&ctl).await;
    assert!(
        metric(&scraped, "portcullis_open_connections{listener=\"https\"}") >= 1.0,
        "{scraped}"
    );

    ctl.sigterm();
    ctl.wait_for_log(&["draining"]).await;
    // Still served while draining: the connection ends when its client is done with it.
    stream
        .write_all(ask.as_bytes())
        .await
        .expect("request while draining");
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answer in time")
        .expect("answer while draining");
    assert!(String::from_utf8_lossy(&answer[..n]).contains("passthrough backend"));
    drop(stream);
    let status = ctl.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
}
