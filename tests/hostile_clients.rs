//! Hostile and broken clients against the real binary: slow headers, slow bodies, idle keep-alive
//! connections, oversized heads, connection floods, request smuggling, absurd TLS ClientHellos, HTTP/2
//! rapid reset and stream floods; and the TLS posture (versions, cipher suites, ALPN).
//!
//! Each test runs the controller with a `--config` file of small limits so the attacks take about a
//! second, and checks two things: the attack is cut off the way the limit promises, and the controller
//! keeps serving everyone else. Every loop is bounded in count and every wait in time.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::client::danger::ServerCertVerifier;
use support::client::{self, TlsClient, http_send, try_http_send};
use support::manifests;
use support::tools;
use support::wait::{LIVE, eventually};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

const NS: &str = "web";
const HOST: &str = "app.test";

/// A controller with limits from `limits` (YAML lines under `limits:`), an echo backend for
/// [`HOST`] on plain HTTP and HTTPS, and the objects behind it.
struct Rig {
    dir: ManifestDir,
    echo: EchoServer,
    ctl: Controller,
    _config: tempfile::TempDir,
}

async fn rig(limits: &[&str]) -> Rig {
    let dir = ManifestDir::new();
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let svc = manifests::service_with_endpoints(NS, "app", 80, Some("http"), &[echo.addr()], true);
    dir.write("svc-app.yaml", &svc.objects());
    let cert = TestCert::self_signed(&[HOST]);
    dir.write(
        "secret.yaml",
        &[&manifests::tls_secret(NS, "app-tls", &cert)],
    );
    let ing = IngressBuilder::new(NS, "app")
        .annotation("portcullis.io/ssl-redirect", "false")
        .tls(&[HOST], "app-tls")
        .route(Some(HOST), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let config_dir = tempfile::tempdir().expect("config dir");
    let config = config_dir.path().join("config.yaml");
    let mut text = String::from("limits:\n");
    for line in limits {
        text.push_str(&format!("  {line}\n"));
    }
    std::fs::write(&config, text).expect("write the config file");
    let ctl = Controller::start(
        dir.path(),
        &["--config", config.to_str().expect("UTF-8 path")],
    )
    .await;
    wait_for_status(ctl.addrs.http, HOST, "/", 200, LIVE).await;
    Rig {
        dir,
        echo,
        ctl,
        _config: config_dir,
    }
}

impl Rig {
    /// A normal client is served, quickly.
    async fn assert_serves_others(&self) {
        let started = Instant::now();
        let resp = http_send(self.ctl.addrs.http, request("GET", HOST, "/")).await;
        assert_eq!(resp.status, 200, "a normal client is served");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a normal client waited {:?}",
            started.elapsed()
        );
        let conn = TlsClient::new()
            .sni(HOST)
            .connect(self.ctl.addrs.https)
            .await
            .expect("a normal TLS client connects");
        let resp = conn.http().await.send(request("GET", HOST, "/")).await;
        assert_eq!(resp.status, 200, "a normal TLS client is served");
    }

    fn assert_alive(&self) {
        let status = std::process::Command::new("kill")
            .args(["-0", &self.ctl.pid().to_string()])
            .status()
            .expect("kill -0");
        assert!(status.success(), "the controller is still running");
    }

    fn finish(&self) {
        self.assert_alive();
        self.ctl.assert_no_key_material(&self.dir.private_keys());
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    client::tcp(addr, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Reads until the peer closes the connection or `timeout` passes: what was read, and how long the
/// close took (`None`: still open).
async fn read_until_closed<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (all, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (all, Some(started.elapsed())),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status code of the first response in `bytes`.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Reads exactly one response with a `Content-Length` from a keep-alive connection.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream
                .read(&mut byte)
                .await
                .expect("read the response head");
            assert!(
                n == 1,
                "the connection closed before a response: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_head)
        .await
        .expect("a response head within 10 s");
    let text = String::from_utf8_lossy(&head).into_owned();
    let length: usize = text
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("a Content-Length");
    let mut body = vec![0u8; length];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut body))
        .await
        .expect("the body within 10 s")
        .expect("read the body");
    (status_of(&head).expect("a status line"), text)
}

fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

// ---------------------------------------------------------------------------------------------
// Slow and idle clients

/// Sends a request head one byte every 100 ms until the server closes the connection (at most 10 s);
/// returns when it closed (from the first byte) and what the server sent.
async fn drip_headers(mut stream: TcpStream) -> (Option<Duration>, Vec<u8>) {
    let line = b"X-Slow: aaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(10) {
        if stream
            .write_all(&line[i % line.len()..][..1])
            .await
            .is_err()
        {
            return (Some(started.elapsed()), received);
        }
        i += 1;
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(started.elapsed()), received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    (None, received)
}

#[tokio::test]
async fn slowloris_headers_are_cut_off_at_the_header_read_timeout_while_others_are_served() {
    let rig = rig(&["header-read-timeout: 1s", "idle-timeout: 30s"]).await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = connect(rig.ctl.addrs.http).await;
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n").as_bytes())
            .await
            .expect("start the head");
        slow.push(tokio::spawn(drip_headers(s)));
    }
    // A client that connects and sends nothing at all is cut off too.
    let mut silent = connect(rig.ctl.addrs.http).await;

    for _ in 0..5 {
        rig.assert_serves_others().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for task in slow {
        let (closed, received) = task.await.expect("drip task");
        let closed = closed.expect("the slow connection was closed");
        assert!(
            closed >= Duration::from_millis(800) && closed < Duration::from_secs(4),
            "closed after {closed:?}, expected about the 1 s header-read timeout"
        );
        assert_ne!(status_of(&received), Some(200), "no request was served");
    }
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(4)).await;
    assert!(closed.is_some(), "a silent connection is closed too");
    rig.assert_serves_others().await;
    rig.finish();
}

#[tokio::test]
async fn idle_http1_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let rig = rig(&["header-read-timeout: 5s", "idle-timeout: 1s"]).await;
    let mut s = connect(rig.ctl.addrs.http).await;
    // A connection in use stays open: requests 600 ms apart, for longer than the idle timeout…
    for _ in 0..4 {
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await
            .expect("send");
        assert_eq!(read_response(&mut s).await.0, 200);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // …and so does one whose request takes longer than it (a slow backend).
    s.write_all(format!("GET /_echo/sleep?ms=1800 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    assert_eq!(read_response(&mut s).await.0, 200);
    // Then idle: closed after about a second, not after the 5 s header-read timeout.
    let (rest, closed) = read_until_closed(&mut s, Duration::from_secs(4)).await;
    let closed = closed.expect("the idle connection was closed");
    assert!(rest.is_empty(), "nothing is sent on close: {rest:?}");
    assert!(
        closed >= Duration::from_millis(800) && closed < Duration::from_secs(3),
        "closed after {closed:?}, expected about the 1 s idle timeout"
    );
    rig.finish();
}

#[tokio::test]
async fn idle_http2_connections_are_closed_after_the_idle_timeout() {
    let rig = rig(&["header-read-timeout: 5s", "idle-timeout: 1s"]).await;
    let conn = TlsClient::new()
        .sni(HOST)
        .alpn(&["h2"])
        .connect(rig.ctl.addrs.https)
        .await
        .expect("TLS");
    assert_eq!(conn.alpn().as_deref(), Some("h2"));
    let (mut h2, driver) = h2::client::handshake(conn.stream)
        .await
        .expect("HTTP/2 handshake");
    let driver = tokio::spawn(driver);
    let mut idle_from = Instant::now();
    for round in 0..3 {
        if round > 0 {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let req = http::Request::get(format!("https://{HOST}/"))
            .body(())
            .expect("request");
        let (resp, _) = h2.send_request(req, true).expect("send");
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .expect("a response in time")
            .expect("a response");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        idle_from = Instant::now();
    }
    let ended = tokio::time::timeout(Duration::from_secs(4), driver).await;
    assert!(
        ended.is_ok(),
        "the server closed the idle HTTP/2 connection"
    );
    let after = idle_from.elapsed();
    assert!(
        after >= Duration::from_millis(700) && after < Duration::from_secs(3),
        "closed after {after:?}, expected about the 1 s idle timeout"
    );
    drop(h2);
    rig.finish();
}

#[tokio::test]
async fn slow_request_bodies_get_408_at_the_request_body_timeout() {
    let rig = rig(&["request-body-timeout: 1s"]).await;
    let mut s = connect(rig.ctl.addrs.http).await;
    s.write_all(
        format!(
            "POST /_echo/hash HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100\r\n\r\n0123456789"
        )
        .as_bytes(),
    )
    .await
    .expect("send");
    let started = Instant::now();
    let (received, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert_eq!(
        status_of(&received),
        Some(408),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "answered after {:?}, before the timeout",
        started.elapsed()
    );
    rig.assert_serves_others().await;
    rig.finish();
}

#[tokio::test]
async fn oversized_heads_and_too_many_headers_get_431() {
    let rig = rig(&["max-header-bytes: 16k", "max-headers: 20"]).await;
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(20 * 1024));
    let fine: String = (0..10)
        .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(400)))
        .collect();
    for (what, headers, want) in [
        ("30 headers", many.as_str(), 431),
        ("a 20 KiB header", big.as_str(), 431),
        ("10 headers of 400 bytes", fine.as_str(), 200),
    ] {
        let mut s = connect(rig.ctl.addrs.http).await;
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n").as_bytes())
            .await
            .expect("send");
        let (received, _) = read_until_closed(&mut s, Duration::from_millis(1500)).await;
        assert_eq!(status_of(&received), Some(want), "{what}");
    }
    // HTTP/2: a header list larger than the limit is refused, not forwarded.
    let conn = TlsClient::new()
        .sni(HOST)
        .alpn(&["h2"])
        .connect(rig.ctl.addrs.https)
        .await
        .expect("TLS");
    let (mut h2, driver) = h2::client::handshake(conn.stream)
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(driver);
    let req = http::Request::get(format!("https://{HOST}/big"))
        .header("x-big", "a".repeat(20 * 1024))
        .body(())
        .expect("request");
    let outcome = match h2.send_request(req, true) {
        Ok((resp, _)) => match tokio::time::timeout(Duration::from_secs(5), resp).await {
            Ok(Ok(resp)) => Some(resp.status().as_u16()),
            Ok(Err(_)) => None,
            Err(_) => panic!("no answer to an oversized HTTP/2 header list"),
        },
        Err(_) => None,
    };
    assert!(
        matches!(outcome, None | Some(431)),
        "an oversized HTTP/2 header list got {outcome:?}"
    );
    assert!(
        !rig.echo.seen().iter().any(|s| s.path == "/big"),
        "the oversized request never reached the backend"
    );
    rig.assert_serves_others().await;
    rig.finish();
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_in_the_backlog_and_memory_stays_bounded() {
    let rig = rig(&[
        "max-connections: 20",
        "header-read-timeout: 30s",
        "idle-timeout: 30s",
    ])
    .await;
    // Twenty connections take every slot (each proven accepted by a served request).
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = connect(rig.ctl.addrs.http).await;
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await
            .expect("send");
        assert_eq!(read_response(&mut s).await.0, 200);
        held.push(s);
    }
    let before = rss_kib(rig.ctl.pid());
    // The 21st connects (the kernel's backlog), but is not served while all slots are taken.
    let mut waiting = connect(rig.ctl.addrs.http).await;
    waiting
        .write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(800), waiting.read(&mut byte))
            .await
            .is_err(),
        "a connection beyond max-connections is not served"
    );
    // A flood of 1,000 more waits in the backlog too, costing the controller no memory.
    let mut flood = Vec::new();
    for _ in 0..1000 {
        let mut s = connect(rig.ctl.addrs.http).await;
        let _ = s
            .write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await;
        flood.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(rig.ctl.pid());
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB with 1,000 connections waiting"
    );
    // Freeing one slot lets the first waiting connection in.
    drop(held.pop());
    let (status, _) = read_response(&mut waiting).await;
    assert_eq!(
        status, 200,
        "the waiting connection is served once a slot frees"
    );
    drop(flood);
    drop(held);
    // Normal service after the flood.
    wait_for_status(rig.ctl.addrs.http, HOST, "/", 200, Duration::from_secs(10)).await;
    rig.finish();
}

// ---------------------------------------------------------------------------------------------
// Request smuggling

/// A backend that records every byte it receives and every request it parses, and answers `ok`.
struct RecordingBackend {
    addr: SocketAddr,
    bytes: Arc<Mutex<Vec<u8>>>,
    paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Recorded {
    inner: TcpStream,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recorded {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let fresh = buf.filled()[before..].to_vec();
        self.bytes.lock().expect("bytes").extend_from_slice(&fresh);
        polled
    }
}

impl AsyncWrite for Recorded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl RecordingBackend {
    async fn start() -> RecordingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (b, p) = (bytes.clone(), paths.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let io = Recorded {
                    inner: tcp,
                    bytes: b.clone(),
                };
                let paths = p.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<Incoming>| {
                        let paths = paths.clone();
                        async move {
                            paths
                                .lock()
                                .expect("paths")
                                .push(req.uri().path().to_string());
                            let _ = req.into_body().collect().await;
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), service)
                        .await;
                });
            }
        });
        RecordingBackend {
            addr,
            bytes,
            paths,
            task,
        }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().expect("bytes")).into_owned()
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().expect("paths").clone()
    }
}

#[tokio::test]
async fn request_smuggling_attempts_get_400_and_never_desynchronise_the_backend() {
    let rig = rig(&["request-body-timeout: 2s", "header-read-timeout: 2s"]).await;
    let raw = RecordingBackend::start().await;
    let svc = manifests::service_with_endpoints(NS, "raw", 80, Some("http"), &[raw.addr], true);
    rig.dir.write("svc-raw.yaml", &svc.objects());
    let ing = IngressBuilder::new(NS, "raw")
        .route(Some("smuggle.test"), "raw")
        .build();
    rig.dir.write("ingress-raw.yaml", &[&ing]);
    wait_for_status(rig.ctl.addrs.http, "smuggle.test", "/ready", 200, LIVE).await;

    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: smuggle.test\r\n\r\n";
    let h = "Host: smuggle.test\r\n";
    // (name, bytes, whether 400 is the only acceptable answer)
    // (name, bytes, whether 400 is the only acceptable answer)
    let attacks: Vec<(&str, String, bool)> = vec![
        (
            "duplicate CL, different values",
            format!(
                "POST /a HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 50\r\n\r\nhello{smuggled}"
            ),
            true,
        ),
        (
            "CL list",
            format!("POST /a HTTP/1.1\r\n{h}Content-Length: 5, 50\r\n\r\nhello{smuggled}"),
            true,
        ),
        (
            "CL with sign",
            format!("POST /a HTTP/1.1\r\n{h}Content-Length: +5\r\n\r\nhello{smuggled}"),
            true,
        ),
        (
            "CL negative",
            format!("POST /a HTTP/1.1\r\n{h}Content-Length: -1\r\n\r\n{smuggled}"),
            true,
        ),
        (
            "CL hex",
            format!("POST /a HTTP/1.1\r\n{h}Content-Length: 0x5\r\n\r\nhello{smuggled}"),
            true,
        ),
        (
            "CL overflow",
            format!(
                "POST /a HTTP/1.1\r\n{h}Content-Length: 99999999999999999999999\r\n\r\n{smuggled}"
            ),
            true,
        ),
        (
            "space before colon",
            format!("POST /a HTTP/1.1\r\n{h}Content-Length : 5\r\n\r\nhello{smuggled}"),
            true,
        ),
        (
            "TE not chunked",
            format!("POST /a HTTP/1.1\r\n{h}Transfer-Encoding: gzip\r\n\r\n{smuggled}"),
            true,
        ),
        (
            "TE chunked not last",
            format!(
                "POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            true,
        ),
        (
            "TE in HTTP/1.0",
            format!("POST /a HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            true,
        ),
        (
            "obs-fold",
            format!("GET /a HTTP/1.1\r\n{h}X-Folded: a\r\n b\r\n\r\n{smuggled}"),
            true,
        ),
        (
            "obs-fold of TE",
            format!(
                "POST /a HTTP/1.1\r\n{h}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            true,
        ),
        (
            "bare CR",
            format!("GET /a HTTP/1.1\r{h}\r\n{smuggled}"),
            true,
        ),
        // Unambiguous, so accepted as RFC 9112 allows; it is forwarded re-framed with CRLF.
        (
            "bare LF",
            format!("GET /a HTTP/1.1\n{h}X: y\nConnection: close\n\n"),
            false,
        ),
        (
            "invalid chunk size",
            format!(
                "POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{smuggled}"
            ),
            true,
        ),
        (
            "chunk size overflow",
            format!(
                "POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n{smuggled}"
            ),
            true,
        ),
        (
            "chunk size with bare LF",
            format!(
                "POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n{smuggled}"
            ),
            true,
        ),
        (
            "chunk data longer than its size",
            format!(
                "POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n{smuggled}"
            ),
            true,
        ),
        (
            "NUL in header",
            format!("GET /a HTTP/1.1\r\n{h}X: a\0b\r\n\r\n{smuggled}"),
            true,
        ),
        (
            "space in method line",
            format!("GET  /a HTTP/1.1\r\n{h}\r\n{smuggled}"),
            true,
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, bytes, strict) in &attacks {
        let mut s = connect(rig.ctl.addrs.http).await;
        s.write_all(bytes.as_bytes())
            .await
            .expect("send the attack");
        let (received, closed) = read_until_closed(&mut s, Duration::from_secs(4)).await;
        let text = String::from_utf8_lossy(&received);
        let statuses = text.matches("HTTP/1.1 ").count();
        let status = status_of(&received);
        outcomes.push(format!(
            "{name}: {status:?} ({statuses} responses, closed: {})",
            closed.is_some()
        ));
        assert!(
            closed.is_some(),
            "{name}: the connection is closed after the attack"
        );
        assert!(statuses <= 1, "{name}: one response at most, got {text:?}");
        if *strict {
            assert_eq!(status, Some(400), "{name}: {text:?}");
        } else {
            assert!(matches!(status, Some(200 | 400)), "{name}: {text:?}");
        }
    }
    eprintln!("smuggling outcomes:\n{}", outcomes.join("\n"));

    // Both framings in one head, whichever comes first, also after an honest request on the same
    // connection: 400 and close, on plain HTTP and on TLS with or without ALPN, never forwarded.
    let ambiguous: [(&str, String, &[u16]); 3] = [
        (
            "CL then TE",
            format!(
                "POST /a HTTP/1.1\r\n{h}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[400],
        ),
        (
            "TE then CL",
            format!(
                "POST /a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 60\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[400],
        ),
        (
            "CL and TE after a pipelined request",
            format!(
                "POST /a HTTP/1.1\r\n{h}Content-Length: 5\r\n\r\nhelloPOST /b HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            &[200, 400],
        ),
    ];
    for listener in ["http", "https (ALPN http/1.1)", "https (no ALPN)"] {
        for (name, bytes, want) in &ambiguous {
            let forwarded = raw.paths().len();
            let (received, closed) = match listener {
                "http" => {
                    let mut s = connect(rig.ctl.addrs.http).await;
                    s.write_all(bytes.as_bytes()).await.expect("send");
                    read_until_closed(&mut s, Duration::from_secs(4)).await
                }
                _ => {
                    let alpn: &[&str] = if listener.contains("ALPN http") {
                        &["http/1.1"]
                    } else {
                        &[]
                    };
                    let conn = TlsClient::new()
                        .sni("smuggle.test")
                        .alpn(alpn)
                        .connect(rig.ctl.addrs.https)
                        .await
                        .expect("TLS");
                    let mut s = conn.stream;
                    s.write_all(bytes.as_bytes()).await.expect("send");
                    read_until_closed(&mut s, Duration::from_secs(4)).await
                }
            };
            let text = String::from_utf8_lossy(&received);
            let statuses: Vec<u16> = text
                .match_indices("HTTP/1.1 ")
                .filter_map(|(i, m)| text.get(i + m.len()..i + m.len() + 3)?.parse().ok())
                .collect();
            assert_eq!(&statuses, want, "{listener}, {name}: {text:?}");
            assert!(
                closed.is_some(),
                "{listener}, {name}: the connection is closed"
            );
            assert!(
                text.to_ascii_lowercase().contains("connection: close"),
                "{listener}, {name}: the 400 says the connection closes: {text:?}"
            );
            assert_eq!(
                raw.paths().len() - forwarded,
                want.len() - 1,
                "{listener}, {name}: only the honest request is forwarded: {:?}",
                raw.paths()
            );
        }
    }
    // A last, honest request on a fresh connection reaches the backend as itself.
    let resp = http_send(
        rig.ctl.addrs.http,
        request("GET", "smuggle.test", "/honest"),
    )
    .await;
    assert_eq!(resp.status, 200);
    let received = raw.received();
    assert!(
        !received.contains("/smuggled"),
        "the backend received smuggled bytes:\n{received}"
    );
    assert!(
        !raw.paths().iter().any(|p| p == "/smuggled"),
        "{:?}",
        raw.paths()
    );
    assert_eq!(raw.paths().last().map(String::as_str), Some("/honest"));
    rig.assert_serves_others().await;
    rig.finish();
}

#[tokio::test]
async fn paths_crafted_to_route_one_way_and_be_read_another_are_refused_or_matched_strictly() {
    let rig = rig(&[]).await;
    // `/admin` only for 192.0.2.0/24 (so never for this loopback client); everything else public.
    let admin = IngressBuilder::new(NS, "admin")
        .annotation("portcullis.io/allowlist-source-range", "192.0.2.0/24")
        .prefix(Some("paths.test"), "/admin", "app")
        .build();
    let public = IngressBuilder::new(NS, "public")
        .prefix(Some("paths.test"), "/", "app")
        .build();
    rig.dir.write("ingress-paths.yaml", &[&admin, &public]);
    wait_for_status(rig.ctl.addrs.http, "paths.test", "/admin", 403, LIVE).await;
    for (path, want) in [
        ("/public", 200),
        ("//admin", 403),
        ("/admin//x", 403),
        ("///admin/", 403),
        ("/public/../admin", 400),
        ("/public/%2e%2e/admin", 400),
        ("/public/%2E./admin", 400),
        ("/./admin", 400),
        ("/admin/..", 400),
        ("/public/..%2fadmin", 200),
    ] {
        let mut s = connect(rig.ctl.addrs.http).await;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: paths.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("send");
        let (received, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert_eq!(status_of(&received), Some(want), "{path}");
    }
    assert!(
        !rig.echo
            .seen()
            .iter()
            .any(|s| s.path.contains("admin") && !s.path.contains("%2f")),
        "no admin path reached the backend: {:?}",
        rig.echo.seen()
    );
    rig.finish();
}

// ---------------------------------------------------------------------------------------------
// Absurd TLS

/// A real ClientHello record as rustls sends it.
fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::try_from(HOST).expect("name"),
    )
    .expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

#[tokio::test]
async fn absurd_client_hellos_and_plain_http_on_the_tls_port_are_refused_cleanly() {
    let rig = rig(&["handshake-timeout: 1s"]).await;
    let hello = client_hello();
    let mut oversized = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    oversized.extend(std::iter::repeat_n(0x01u8, 0xffff));
    let mut huge_handshake = vec![0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0xff, 0xff, 0xff];
    huge_handshake.extend(std::iter::repeat_n(0u8, 4096));
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", garbage),
        (
            "plain HTTP",
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").into_bytes(),
        ),
        ("truncated ClientHello", hello[..hello.len() / 2].to_vec()),
        ("record longer than TLS allows", oversized),
        ("handshake message of 16 MiB announced", huge_handshake),
        ("ClientHello with a corrupted length", {
            let mut h = hello.clone();
            h[6] ^= 0x7f;
            h
        }),
        (
            "SSLv2-style hello",
            vec![
                0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
            ],
        ),
        ("empty", Vec::new()),
    ];
    for (name, bytes) in &cases {
        // Several of each at once, to be sure nothing accumulates.
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let addr = rig.ctl.addrs.https;
            let bytes = bytes.clone();
            tasks.push(tokio::spawn(async move {
                let mut s = connect(addr).await;
                let _ = s.write_all(&bytes).await;
                read_until_closed(&mut s, Duration::from_secs(4)).await
            }));
        }
        for task in tasks {
            let (received, closed) = task.await.expect("task");
            let closed = closed.unwrap_or_else(|| panic!("{name}: the connection was not closed"));
            assert!(
                closed < Duration::from_secs(3),
                "{name}: closed after {closed:?}"
            );
            assert!(
                !String::from_utf8_lossy(&received).contains("HTTP/1.1"),
                "{name}: no HTTP answer on the TLS port"
            );
            // Anything sent is at most a TLS alert record.
            assert!(
                received.is_empty() || received[0] == 0x15,
                "{name}: answered {received:?}"
            );
        }
        rig.assert_alive();
    }
    rig.assert_serves_others().await;
    rig.finish();
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 floods

#[tokio::test]
async fn http2_rapid_reset_is_cut_off_and_reaches_few_backends() {
    let rig = rig(&[
        "http2-max-concurrent-streams: 8",
        "http2-max-pending-reset-streams: 16",
    ])
    .await;
    // Raw frames rather than an HTTP/2 client library: a client library stops at the first write
    // that fails once the server has closed, and may never read the GOAWAY that explains why.
    let (mut rx, mut tx) = tokio::io::split(raw_h2(rig.ctl.addrs.https).await);
    let reader = tokio::spawn(async move {
        let mut goaway = None;
        while let Ok(Some((kind, _, _, payload))) =
            tokio::time::timeout(Duration::from_secs(15), read_frame(&mut rx)).await
        {
            if kind == 0x7 && payload.len() >= 8 {
                goaway = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
        goaway
    });
    let before = rig.echo.seen().len();
    let started = Instant::now();
    let mut sent = 0u32;
    // Rounds of 20 requests, each reset right after its HEADERS, with a pause between rounds.
    'flood: for _ in 0..250 {
        let mut round = Vec::new();
        for _ in 0..20 {
            let stream = 2 * sent + 1;
            round.extend(frame(
                0x1,
                0x5,
                stream,
                &get_block(HOST, "/_echo/sleep?ms=2000"),
            ));
            round.extend(frame(0x3, 0, stream, &0x8u32.to_be_bytes())); // RST_STREAM CANCEL
            sent += 1;
        }
        if tx.write_all(&round).await.is_err() || tx.flush().await.is_err() {
            break 'flood;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if reader.is_finished() || started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let goaway = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the server ends the rapid-reset connection")
        .expect("reader task");
    let reached = rig.echo.seen().len() - before;
    eprintln!(
        "rapid reset: {sent} streams opened and reset, {reached} reached the backend, GOAWAY code {goaway:?}"
    );
    assert_eq!(goaway, Some(0xb), "GOAWAY with ENHANCE_YOUR_CALM");
    assert!(
        sent < 5000,
        "the server stopped the flood before 5,000 resets ({sent})"
    );
    assert!(
        reached <= 100,
        "{reached} reset requests reached the backend"
    );
    rig.assert_serves_others().await;
    rig.finish();
}

/// Waits until a plain-HTTP `GET host path` is answered with `status`.
async fn wait_for_status(addr: SocketAddr, host: &str, path: &str, status: u16, timeout: Duration) {
    eventually(&format!("{status} for {host}{path}"), timeout, async || {
        let resp = try_http_send(addr, request("GET", host, path)).await?;
        (resp.status == status)
            .then_some(())
            .ok_or(format!("status {}", resp.status))
    })
    .await;
}

/// An HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A HEADERS block for `GET path` to `host`, with literal fields (no dynamic table).
fn get_block(host: &str, path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x87]; // :method GET, :scheme https
    b.push(0x04); // :path, literal without indexing
    b.push(path.len() as u8);
    b.extend_from_slice(path.as_bytes());
    b.push(0x01); // :authority, literal without indexing
    b.push(host.len() as u8);
    b.extend_from_slice(host.as_bytes());
    b
}

/// Reads one frame: (type, flags, stream, payload).
async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream, payload))
}

#[tokio::test]
async fn http2_streams_beyond_the_concurrency_limit_are_refused() {
    let rig = rig(&["http2-max-concurrent-streams: 8"]).await;
    let conn = TlsClient::new()
        .sni(HOST)
        .alpn(&["h2"])
        .connect(rig.ctl.addrs.https)
        .await
        .expect("TLS");
    let mut s = conn.stream;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    s.write_all(&frame(0x4, 0, 0, &[])).await.expect("SETTINGS");
    // The server's SETTINGS, which must announce the limit; acknowledge them so they apply.
    let mut advertised = None;
    loop {
        let (kind, flags, _, payload) =
            tokio::time::timeout(Duration::from_secs(5), read_frame(&mut s))
                .await
                .expect("server SETTINGS in time")
                .expect("a frame");
        if kind == 0x4 && flags & 0x1 == 0 {
            for setting in payload.chunks(6) {
                if setting[..2] == [0x00, 0x03] {
                    advertised = Some(u32::from_be_bytes([
                        setting[2], setting[3], setting[4], setting[5],
                    ]));
                }
            }
            s.write_all(&frame(0x4, 0x1, 0, &[]))
                .await
                .expect("SETTINGS ACK");
            break;
        }
    }
    assert_eq!(advertised, Some(8), "SETTINGS_MAX_CONCURRENT_STREAMS");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rig.echo.seen().len();
    // 100 concurrent slow requests in one burst.
    let mut burst = Vec::new();
    for i in 0..100u32 {
        burst.extend(frame(
            0x1,
            0x5,
            2 * i + 1,
            &get_block(HOST, "/_echo/sleep?ms=1500"),
        ));
    }
    s.write_all(&burst).await.expect("the burst");
    let mut refused = 0;
    let mut responses = 0;
    let mut goaway = false;
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut peak = 0;
    while Instant::now() < deadline && refused + responses < 100 && !goaway {
        peak = peak.max(rig.echo.seen().len() - before);
        match tokio::time::timeout(Duration::from_millis(200), read_frame(&mut s)).await {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some((kind, _, _, payload))) => match kind {
                0x3 if payload == [0, 0, 0, 0x7] => refused += 1,
                0x3 => refused += 1,
                0x1 => responses += 1,
                0x7 => goaway = true,
                _ => {}
            },
        }
    }
    let reached = rig.echo.seen().len() - before;
    eprintln!(
        "stream flood: {responses} answered, {refused} refused, GOAWAY: {goaway}, {reached} reached the backend (peak seen while flooding {peak})"
    );
    assert!(
        reached <= 8 + 8,
        "{reached} of 100 requests reached the backend"
    );
    assert!(
        refused >= 80 || goaway,
        "streams beyond the limit are refused ({refused} refused)"
    );
    rig.assert_serves_others().await;
    rig.finish();
}

/// An HTTP/2 connection over TLS that has exchanged SETTINGS, for raw frames.
async fn raw_h2(addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let conn = TlsClient::new()
        .sni(HOST)
        .alpn(&["h2"])
        .connect(addr)
        .await
        .expect("TLS");
    let mut s = conn.stream;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    s.write_all(&frame(0x4, 0, 0, &[])).await.expect("SETTINGS");
    s
}

/// Writes `bytes` until done, the server closes, or `timeout`; whether the server cut it short.
async fn write_flood<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8], timeout: Duration) -> bool {
    let write = async {
        for chunk in bytes.chunks(16 * 1024) {
            if s.write_all(chunk).await.is_err() {
                return true;
            }
        }
        s.flush().await.is_err()
    };
    tokio::time::timeout(timeout, write).await.unwrap_or(true)
}

#[tokio::test]
async fn http2_control_frame_and_continuation_floods_are_bounded() {
    let rig = rig(&["idle-timeout: 2s", "max-header-bytes: 16k"]).await;
    let before = rss_kib(rig.ctl.pid());
    // 100,000 PINGs and 20,000 SETTINGS from a client that never reads the answers: the server stops
    // reading when its answers back up, and gives up on the client when they stay stuck.
    let mut s = raw_h2(rig.ctl.addrs.https).await;
    let mut flood = Vec::new();
    for i in 0..100_000u64 {
        flood.extend(frame(0x6, 0, 0, &i.to_be_bytes()));
        if i % 5 == 0 {
            flood.extend(frame(0x4, 0, 0, &[0x00, 0x03, 0x00, 0x00, 0x00, 0x64]));
        }
    }
    let started = Instant::now();
    let cut = write_flood(&mut s, &flood, Duration::from_secs(15)).await;
    eprintln!(
        "control-frame flood: {} bytes, cut short: {cut}, {:?}",
        flood.len(),
        started.elapsed()
    );
    let during = rss_kib(rig.ctl.pid());
    rig.assert_serves_others().await;
    drop(s);

    // A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION frames.
    let mut s = raw_h2(rig.ctl.addrs.https).await;
    let mut flood = frame(0x1, 0x0, 1, &get_block(HOST, "/"));
    // Literal header fields `x: ` repeated, 1,000 bytes a frame.
    let filler: Vec<u8> = std::iter::repeat_n([0x00u8, 0x01, b'x', 0x00], 250)
        .flatten()
        .collect();
    for _ in 0..10_000 {
        flood.extend(frame(0x9, 0x0, 1, &filler));
    }
    let cut = write_flood(&mut s, &flood, Duration::from_secs(15)).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut answer)).await;
    eprintln!(
        "CONTINUATION flood: {} bytes, cut short: {cut}, {} bytes answered",
        flood.len(),
        answer.len()
    );
    assert!(cut, "the server stopped a 10 MB header block");
    let after = rss_kib(rig.ctl.pid());
    eprintln!("RSS before {before} KiB, during the control flood {during} KiB, after {after} KiB");
    assert!(
        during.max(after) < before + 32 * 1024,
        "RSS grew from {before} KiB to {during}/{after} KiB"
    );
    rig.assert_serves_others().await;
    rig.finish();
}

// ---------------------------------------------------------------------------------------------
// TLS posture

/// The HTTP version of a TLS connection is the one ALPN chose, whatever the client sends afterwards;
/// plain HTTP serves HTTP/1.1 and HTTP/2 with prior knowledge.
#[tokio::test]
async fn the_http_version_is_the_one_alpn_negotiated_and_plain_http_also_serves_h2c() {
    let rig = rig(&[]).await;
    let tls = |alpn: &'static [&'static str]| async move {
        let conn = TlsClient::new()
            .sni(HOST)
            .alpn(alpn)
            .connect(rig.ctl.addrs.https)
            .await
            .expect("TLS");
        conn.stream
    };
    let get = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");

    // `h2` negotiated, HTTP/1.1 sent: an invalid connection preface ends the connection, unanswered.
    let mut s = tls(&["h2"]).await;
    s.write_all(get.as_bytes()).await.expect("send");
    let (received, closed) = read_until_closed(&mut s, Duration::from_secs(4)).await;
    assert!(closed.is_some(), "the connection is closed");
    assert!(
        !received.windows(9).any(|w| w == b"HTTP/1.1 "),
        "no HTTP/1.1 answer after ALPN h2: {:?}",
        String::from_utf8_lossy(&received)
    );

    // `http/1.1` negotiated (or no ALPN), the HTTP/2 preface sent: not HTTP/2, so a 400 at most.
    for alpn in [&["http/1.1"][..], &[]] {
        let mut s = tls(alpn).await;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("preface");
        s.write_all(&frame(0x4, 0, 0, &[])).await.expect("SETTINGS");
        let (received, closed) = read_until_closed(&mut s, Duration::from_secs(4)).await;
        assert!(closed.is_some(), "{alpn:?}: the connection is closed");
        assert!(
            received.is_empty() || status_of(&received) == Some(400),
            "{alpn:?}: not served as HTTP/2: {:?}",
            String::from_utf8_lossy(&received)
        );
        // And HTTP/1.1 is what it serves.
        let mut s = tls(alpn).await;
        s.write_all(get.as_bytes()).await.expect("send");
        let (received, _) = read_until_closed(&mut s, Duration::from_secs(4)).await;
        assert_eq!(status_of(&received), Some(200), "{alpn:?}");
    }

    // Plain HTTP: HTTP/2 with prior knowledge (h2c) and HTTP/1.1.
    let mut h2c = Sender::http2(connect(rig.ctl.addrs.http).await)
        .await
        .expect("h2c handshake");
    let resp = h2c.send(request("GET", HOST, "/")).await;
    assert_eq!(resp.status, 200, "h2c prior knowledge on plain HTTP");
    assert_eq!(resp.version, http::Version::HTTP_2);
    rig.assert_serves_others().await;
    rig.finish();
}

#[tokio::test]
async fn tls_posture_versions_cipher_suites_and_alpn() {
    let rig = rig(&[]).await;
    let addr = rig.ctl.addrs.https;
    for (flag, ok) in [
        ("-tls1", false),
        ("-tls1_1", false),
        ("-tls1_2", true),
        ("-tls1_3", true),
    ] {
        // Old versions need OpenSSL's security level lowered, or the client refuses before we do.
        let out = tools::s_client(
            addr,
            HOST,
            &[flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-brief"],
        )
        .await;
        let connected =
            out.stderr.contains("Protocol version") || out.stdout.contains("Protocol version");
        assert_eq!(
            connected, ok,
            "{flag}: stdout {} stderr {}",
            out.stdout, out.stderr
        );
    }
    // Weak TLS 1.2 suites: CBC, RC4, 3DES, NULL, EXPORT, anonymous, static RSA key exchange.
    for suite in [
        "AES128-SHA",
        "AES256-SHA256",
        "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384",
        "RC4-SHA",
        "DES-CBC3-SHA",
        "NULL-SHA256",
        "EXP-RC4-MD5",
        "ADH-AES128-GCM-SHA256",
        "AES128-GCM-SHA256",
        "CBC",
    ] {
        let out = tools::s_client(
            addr,
            HOST,
            &[
                "-tls1_2",
                "-cipher",
                &format!("{suite}:@SECLEVEL=0"),
                "-brief",
            ],
        )
        .await;
        let connected =
            out.stderr.contains("Protocol version") || out.stdout.contains("Protocol version");
        assert!(!connected, "{suite} was accepted: {}", out.stderr);
    }
    // The suites that are offered are AEAD with forward secrecy.
    for suite in [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ] {
        let out = tools::s_client(addr, HOST, &["-tls1_2", "-cipher", suite, "-brief"]).await;
        let connected =
            out.stderr.contains("Protocol version") || out.stdout.contains("Protocol version");
        assert!(connected, "{suite} is accepted: {}", out.stderr);
    }
    // ALPN: h2 and http/1.1 are chosen when offered, nothing else ever is.
    for (offer, chosen) in [
        (vec!["h2", "http/1.1"], Some("h2")),
        (vec!["http/1.1"], Some("http/1.1")),
        (vec!["h2"], Some("h2")),
    ] {
        let conn = TlsClient::new()
            .sni(HOST)
            .alpn(&offer)
            .connect(addr)
            .await
            .expect("TLS");
        assert_eq!(conn.alpn().as_deref(), chosen, "offered {offer:?}");
    }
    for offer in [vec!["spdy/3"], vec!["h3"], vec!["http/1.0"], vec!["h2c"]] {
        match TlsClient::new().sni(HOST).alpn(&offer).connect(addr).await {
            Ok(conn) => assert_eq!(conn.alpn(), None, "offered {offer:?}"),
            Err(e) => assert!(e.contains("handshake"), "offered {offer:?}: {e}"),
        }
    }
    rig.finish();
}

/// Accepts any certificate, like the library's verifier it wraps, and keeps the OCSP response the
/// server stapled.
#[derive(Debug)]
struct OcspCapture {
    any: portcullis::tls::AcceptAnyCertificate,
    stapled: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for OcspCapture {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.stapled.lock().expect("stapled") = Some(ocsp_response.to_vec());
        self.any
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.any.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.any.supported_verify_schemes()
    }
}

/// What the server stapled for `sni` in a handshake of `version`.
async fn stapled(
    addr: SocketAddr,
    sni: &str,
    version: &'static rustls::SupportedProtocolVersion,
) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let capture = Arc::new(OcspCapture {
        any: portcullis::tls::AcceptAnyCertificate(provider.clone()),
        stapled: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let tcp = connect(addr).await;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
    let _conn = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let stapled = capture.stapled.lock().expect("stapled").clone();
    stapled.expect("the certificate was verified")
}

#[tokio::test]
async fn an_ocsp_response_in_the_secret_is_stapled() {
    let rig = rig(&[]).await;
    let cert = TestCert::self_signed(&["ocsp.test"]);
    // The server staples the bytes as they are; a real response comes from the CA's responder.
    let response = b"\x30\x03\x0a\x01\x00 stand-in OCSP response".to_vec();
    let mut secret = manifests::tls_secret(NS, "ocsp-tls", &cert);
    secret
        .data
        .as_mut()
        .expect("data")
        .insert("tls.ocsp".into(), k8s_openapi::ByteString(response.clone()));
    rig.dir.write("secret-ocsp.yaml", &[&secret]);
    let ing = IngressBuilder::new(NS, "ocsp")
        .tls(&["ocsp.test"], "ocsp-tls")
        .route(Some("ocsp.test"), "app")
        .build();
    rig.dir.write("ingress-ocsp.yaml", &[&ing]);
    eventually("the OCSP certificate", LIVE, async || {
        let conn = TlsClient::new()
            .sni("ocsp.test")
            .connect(rig.ctl.addrs.https)
            .await?;
        (conn.fingerprint() == cert.fingerprint())
            .then_some(())
            .ok_or("not yet".to_string())
    })
    .await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        assert_eq!(
            stapled(rig.ctl.addrs.https, "ocsp.test", version).await,
            response
        );
        assert!(
            stapled(rig.ctl.addrs.https, HOST, version).await.is_empty(),
            "nothing is stapled for a Secret without tls.ocsp"
        );
    }
    rig.finish();
}
