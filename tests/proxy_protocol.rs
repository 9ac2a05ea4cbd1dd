//! The PROXY protocol behind a real TCP load balancer: Debian's HAProxy in TCP mode (`send-proxy`,
//! `send-proxy-v2`) in front of the real binary on loopback, clients reaching HAProxy from distinct
//! loopback addresses, and curl's `--haproxy-protocol` as a second sender. Also what a hostile or
//! broken sender gets: a header from an untrusted peer changes nothing, and garbage, truncated,
//! oversized or dribbled headers close only their own connection.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::client::{self, Captured, Sender};
use support::controller::unique_loopback_ip;
use support::manifests;
use support::tools;
use support::wait::LIVE;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NS: &str = "web";
const HOST: &str = "app.test";
/// The address HAProxy connects to the controller from: the only peer in `trusted-proxies`.
const LB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Two clients of the load balancer.
const ALICE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);
const BOB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 22);
/// A peer that is not a trusted proxy.
const MALLORY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

/// HAProxy in TCP mode with one frontend per (listener, PROXY version), each forwarding to the
/// controller from [`LB`]; killed when dropped.
struct Haproxy {
    child: Child,
    http_v1: SocketAddr,
    http_v2: SocketAddr,
    https_v1: SocketAddr,
    https_v2: SocketAddr,
    /// IPv6 frontends on `[::1]`: the PROXY header then carries an IPv6 client address.
    http_v2_ipv6: SocketAddr,
    https_v2_ipv6: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    async fn start(ctl: &Controller) -> Haproxy {
        let ip = IpAddr::V4(unique_loopback_ip());
        let at = |port| SocketAddr::new(ip, port);
        // Ports of [::1] are shared by every test process: take free ones from the kernel.
        let free_v6 = || {
            std::net::TcpListener::bind("[::1]:0")
                .and_then(|l| l.local_addr())
                .expect("a free port on ::1")
        };
        let (http_v2_ipv6, https_v2_ipv6) = (free_v6(), free_v6());
        let frontends = [
            ("http_v1", at(8080), ctl.addrs.http, "send-proxy"),
            ("http_v2", at(8081), ctl.addrs.http, "send-proxy-v2"),
            ("https_v1", at(8443), ctl.addrs.https, "send-proxy"),
            ("https_v2", at(8444), ctl.addrs.https, "send-proxy-v2"),
            (
                "http_v2_ipv6",
                http_v2_ipv6,
                ctl.addrs.http,
                "send-proxy-v2",
            ),
            (
                "https_v2_ipv6",
                https_v2_ipv6,
                ctl.addrs.https,
                "send-proxy-v2",
            ),
        ];
        let mut cfg = String::from(
            "global\n  maxconn 512\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n",
        );
        for (name, bind, to, send) in &frontends {
            cfg.push_str(&format!(
                "frontend {name}\n  bind {bind}\n  default_backend {name}\n\
                 backend {name}\n  server ctl {to} {send} source {LB}\n"
            ));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run haproxy (.ci/run installs it): {e}"));
        let haproxy = Haproxy {
            child,
            http_v1: at(8080),
            http_v2: at(8081),
            https_v1: at(8443),
            https_v2: at(8444),
            http_v2_ipv6,
            https_v2_ipv6,
            _dir: dir,
        };
        // Not probed by connecting: HAProxy would relay the probe, and the controller count its header.
        for (_, bind, _, _) in frontends {
            eventually(&format!("HAProxy listening on {bind}"), LIVE, async || {
                listening(bind)
                    .then_some(())
                    .ok_or_else(|| "not yet".to_string())
            })
            .await;
        }
        haproxy
    }
}

/// Whether a socket listens on `addr`, from the kernel's table (`/proc/net/tcp`, `/proc/net/tcp6`):
/// each address is written as 32-bit words in host order, in hex, then the port.
fn listening(addr: SocketAddr) -> bool {
    let (table, octets) = match addr.ip() {
        IpAddr::V4(ip) => ("/proc/net/tcp", ip.octets().to_vec()),
        IpAddr::V6(ip) => ("/proc/net/tcp6", ip.octets().to_vec()),
    };
    let words: String = octets
        .chunks(4)
        .map(|w| format!("{:08X}", u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
        .collect();
    let local = format!("{words}:{:04X}", addr.port());
    let text = std::fs::read_to_string(table).unwrap_or_default();
    text.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A")
    })
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_file(dir: &tempfile::TempDir, yaml: &str) -> String {
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path.display().to_string()
}

/// A controller serving [`HOST`] (plain and TLS) from one echo backend, plus `allow.test`, which
/// admits only [`ALICE`], with `config` as its `--config` file.
struct Setup {
    ctl: Controller,
    config: String,
    _config_dir: tempfile::TempDir,
    _backend: EchoServer,
    _dir: ManifestDir,
}

async fn setup(config: &str) -> Setup {
    let dir = ManifestDir::new();
    let backend = manifests::echo_service(&dir, NS, "app").await;
    manifests::certificate_file(&dir, NS, "tls", &[HOST, "allow.test"]);
    dir.write(
        "ingresses.yaml",
        &[
            &IngressBuilder::new(NS, "app")
                .tls(&[HOST], "tls")
                .annotation("nginx.ingress.kubernetes.io/ssl-redirect", "false")
                .route(Some(HOST), "app")
                .build(),
            &IngressBuilder::new(NS, "allow")
                .tls(&["allow.test"], "tls")
                .annotation("nginx.ingress.kubernetes.io/ssl-redirect", "false")
                .annotation(
                    "nginx.ingress.kubernetes.io/whitelist-source-range",
                    &format!("{ALICE}/32"),
                )
                .route(Some("allow.test"), "app")
                .build(),
        ],
    );
    let config_dir = tempfile::tempdir().expect("temp dir");
    let config = config_file(&config_dir, config);
    let ctl = Controller::start(dir.path(), &["--config", &config, "--access-log"]).await;
    Setup {
        ctl,
        config,
        _config_dir: config_dir,
        _backend: backend,
        _dir: dir,
    }
}

const REQUIRED: &str = "proxy-protocol: required\ntrusted-proxies: [127.0.0.2/32]\n\
                        limits: {header-read-timeout: 1s}\n";

fn get(host: &str) -> client::Req {
    request("GET", host, "/")
}

/// One plain-HTTP/1.1 request to `addr` from `source`.
async fn http_from(addr: SocketAddr, source: IpAddr, host: &str) -> Captured {
    let tcp = client::tcp(addr, Some(source)).await.expect("connect");
    Sender::http1(tcp)
        .await
        .expect("handshake")
        .send(get(host))
        .await
}

/// One HTTPS request to `addr` from `source`, with ALPN `alpn` (HTTP/2 or HTTP/1.1 over TLS).
async fn https_from(addr: SocketAddr, source: IpAddr, host: &str, alpn: &str) -> Captured {
    let conn = TlsClient::new()
        .sni(host)
        .alpn(&[alpn])
        .connect_from(addr, Some(source))
        .await
        .expect("TLS through the load balancer");
    assert_eq!(conn.alpn().as_deref(), Some(alpn));
    conn.http().await.send(get(host)).await
}

/// The client address the backend was told, from both headers (which must agree).
fn client_seen(r: &Captured) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.echo();
    let xff = echo
        .header("X-Forwarded-For")
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        echo.header("X-Real-Ip"),
        Some(xff.as_str()),
        "X-Real-IP and X-Forwarded-For name the same client"
    );
    xff
}

/// `GET /metrics` on the admin listener.
async fn scrape(ctl: &Controller) -> String {
    let mut tcp = TcpStream::connect(ctl.addrs.admin).await.expect("admin");
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the series `name{labels}` (labels exactly as Prometheus renders them), 0 if absent.
async fn metric(ctl: &Controller, series: &str) -> u64 {
    let text = scrape(ctl).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn refused(listener: &str, reason: &str) -> String {
    format!(
        "portcullis_proxy_protocol_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
    )
}

fn headers(listener: &str, result: &str, version: &str) -> String {
    format!(
        "portcullis_proxy_protocol_headers_total{{listener=\"{listener}\",result=\"{result}\",version=\"{version}\"}}"
    )
}

/// Reads until the controller closes the connection; `Ok(bytes)` read, or the error (a reset).
async fn until_closed(tcp: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut out))
        .await
        .map_err(|_| "the connection was not closed within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Asserts the controller closes `tcp` without sending a byte.
async fn assert_closed_silently(tcp: &mut TcpStream, what: &str) {
    match until_closed(tcp).await {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "{what}: expected no answer, got {:?}",
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => assert!(!e.contains("not closed"), "{what}: {e}"),
    }
}

#[tokio::test]
async fn haproxy_send_proxy_delivers_each_clients_address_over_http1_https_and_http2() {
    let s = setup(REQUIRED).await;
    let lb = Haproxy::start(&s.ctl).await;
    for (frontend, version) in [(lb.http_v1, "1"), (lb.http_v2, "2")] {
        for client in [ALICE, BOB] {
            let r = http_from(frontend, client.into(), HOST).await;
            assert_eq!(
                client_seen(&r),
                client.to_string(),
                "HTTP/1.1, PROXY v{version}"
            );
            assert_eq!(r.echo().header("X-Forwarded-Proto"), Some("http"));
        }
    }
    for (frontend, version) in [(lb.https_v1, "1"), (lb.https_v2, "2")] {
        for (client, alpn) in [(ALICE, "h2"), (BOB, "http/1.1")] {
            let r = https_from(frontend, client.into(), HOST, alpn).await;
            assert_eq!(
                client_seen(&r),
                client.to_string(),
                "HTTPS ({alpn}), PROXY v{version}"
            );
            assert_eq!(r.echo().header("X-Forwarded-Proto"), Some("https"));
        }
    }
    // The access log names the client and the load balancer it came through.
    s.ctl
        .wait_for_log(&[
            "portcullis::access",
            &format!("client={BOB}"),
            &format!("peer={BOB}:"),
            &format!("proxied_by={LB}:"),
        ])
        .await;
    for listener in ["http", "https"] {
        for version in ["1", "2"] {
            assert_eq!(
                metric(&s.ctl, &headers(listener, "accepted", version)).await,
                2,
                "{listener} v{version}"
            );
        }
    }
    let text = scrape(&s.ctl).await;
    for client in [ALICE, BOB] {
        assert!(
            !text.contains(&client.to_string()),
            "metrics carry no client address"
        );
    }
}

#[tokio::test]
async fn ipv6_clients_arrive_in_v2_headers() {
    let s = setup(REQUIRED).await;
    let lb = Haproxy::start(&s.ctl).await;
    let r = http_from(lb.http_v2_ipv6, Ipv6Addr::LOCALHOST.into(), HOST).await;
    assert_eq!(client_seen(&r), "::1");
    let r = https_from(lb.https_v2_ipv6, Ipv6Addr::LOCALHOST.into(), HOST, "h2").await;
    assert_eq!(client_seen(&r), "::1");

    // Any IPv6 source a trusted load balancer reports, not only the loopback one.
    let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    header.extend("2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
    header.extend("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    header.extend([0x12, 0x67, 0x00, 0x50]);
    let mut tcp = client::tcp(s.ctl.addrs.http, Some(LB.into()))
        .await
        .unwrap();
    tcp.write_all(&header).await.unwrap();
    let r = Sender::http1(tcp).await.unwrap().send(get(HOST)).await;
    assert_eq!(client_seen(&r), "2001:db8::7");
}

#[tokio::test]
async fn the_allowlist_sees_the_client_behind_the_load_balancer() {
    let s = setup(REQUIRED).await;
    let lb = Haproxy::start(&s.ctl).await;
    for frontend in [lb.http_v1, lb.http_v2] {
        assert_eq!(
            http_from(frontend, ALICE.into(), "allow.test").await.status,
            200
        );
        assert_eq!(
            http_from(frontend, BOB.into(), "allow.test").await.status,
            403
        );
    }
    for frontend in [lb.https_v1, lb.https_v2] {
        let r = https_from(frontend, ALICE.into(), "allow.test", "h2").await;
        assert_eq!(r.status, 200);
        let r = https_from(frontend, BOB.into(), "allow.test", "h2").await;
        assert_eq!(r.status, 403);
    }
}

#[tokio::test]
async fn required_closes_direct_connections_before_reading_a_request() {
    let s = setup(REQUIRED).await;
    let before = metric(&s.ctl, &refused("http", "missing")).await;
    let mut tcp = client::tcp(s.ctl.addrs.http, Some(LB.into()))
        .await
        .unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    assert_closed_silently(&mut tcp, "plain HTTP without a header").await;
    assert_eq!(
        metric(&s.ctl, &refused("http", "missing")).await,
        before + 1
    );

    let tls = TlsClient::new()
        .sni(HOST)
        .connect_from(s.ctl.addrs.https, Some(LB.into()))
        .await;
    assert!(tls.is_err(), "a TLS handshake without a header is refused");
    assert_eq!(metric(&s.ctl, &refused("https", "missing")).await, 1);
}

#[tokio::test]
async fn a_header_from_an_untrusted_peer_changes_nothing() {
    let s = setup(REQUIRED).await;
    let before = metric(&s.ctl, &headers("http", "untrusted", "1")).await;
    let mut tcp = client::tcp(s.ctl.addrs.http, Some(MALLORY.into()))
        .await
        .unwrap();
    tcp.write_all(b"PROXY TCP4 127.0.0.21 127.0.0.1 4711 80\r\n")
        .await
        .unwrap();
    let r = Sender::http1(tcp)
        .await
        .unwrap()
        .send(get("allow.test"))
        .await;
    assert_eq!(
        r.status, 403,
        "claiming to be an allowed client does not help"
    );
    let r = {
        let mut tcp = client::tcp(s.ctl.addrs.http, Some(MALLORY.into()))
            .await
            .unwrap();
        tcp.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 4711 80\r\n")
            .await
            .unwrap();
        Sender::http1(tcp).await.unwrap().send(get(HOST)).await
    };
    assert_eq!(client_seen(&r), MALLORY.to_string(), "the TCP peer is used");
    assert_eq!(
        metric(&s.ctl, &headers("http", "untrusted", "1")).await,
        before + 2
    );
}

#[tokio::test]
async fn broken_headers_close_only_their_own_connection() {
    let s = setup(REQUIRED).await;
    let lb = Haproxy::start(&s.ctl).await;
    // A keep-alive client of the load balancer, busy while the others misbehave.
    let tcp = client::tcp(lb.http_v2, Some(ALICE.into())).await.unwrap();
    let mut alice = Sender::http1(tcp).await.unwrap();
    assert_eq!(client_seen(&alice.send(get(HOST)).await), ALICE.to_string());

    let mut oversized = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec();
    oversized.extend([0u8; 1024]);
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "garbage",
            b"PROXY HELLO WORLD\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
            "malformed",
        ),
        (
            "a bad address",
            b"PROXY TCP4 300.1.2.3 127.0.0.1 1 80\r\n".to_vec(),
            "malformed",
        ),
        (
            "an unending v1 line",
            [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat(),
            "too_large",
        ),
        ("a v2 header of 64 KiB", oversized, "too_large"),
        (
            "a truncated v2 header",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x7f\x00".to_vec(),
            "truncated",
        ),
    ];
    for (what, bytes, reason) in cases {
        let before = metric(&s.ctl, &refused("http", reason)).await;
        let mut tcp = client::tcp(s.ctl.addrs.http, Some(LB.into()))
            .await
            .unwrap();
        tcp.write_all(&bytes).await.unwrap();
        if reason == "truncated" {
            tcp.shutdown().await.unwrap();
        }
        assert_closed_silently(&mut tcp, what).await;
        assert_eq!(
            metric(&s.ctl, &refused("http", reason)).await,
            before + 1,
            "{what} is counted as {reason}"
        );
        assert_eq!(
            client_seen(&alice.send(get(HOST)).await),
            ALICE.to_string(),
            "after {what}, the other connection still serves"
        );
    }

    // A header dribbled a byte at a time is cut at the header timeout (1 s here), not served late.
    let mut tcp = client::tcp(s.ctl.addrs.https, Some(LB.into()))
        .await
        .unwrap();
    let started = Instant::now();
    let header = b"PROXY TCP4 127.0.0.21 127.0.0.1 4711 443\r\n";
    let mut closed = false;
    for byte in header {
        if tcp.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    if !closed {
        assert_closed_silently(&mut tcp, "a dribbled header").await;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "cut after {took:?}"
    );
    assert_eq!(metric(&s.ctl, &refused("https", "timeout")).await, 1);
    let r = https_from(lb.https_v1, BOB.into(), HOST, "h2").await;
    assert_eq!(client_seen(&r), BOB.to_string());
    assert_eq!(client_seen(&alice.send(get(HOST)).await), ALICE.to_string());
}

#[tokio::test]
async fn curl_haproxy_protocol_is_a_second_sender() {
    // curl names its own address in the header: trust it as the load balancer here.
    let curl_ip = Ipv4Addr::new(127, 0, 0, 31);
    let s = setup(&format!(
        "proxy-protocol: required\ntrusted-proxies: [{curl_ip}/32]\n"
    ))
    .await;
    let resolve = |port: u16| format!("{HOST}:{port}:{}", s.ctl.addrs.ip);
    for (url, port, extra) in [
        (
            format!("http://{HOST}:{}/", s.ctl.addrs.http.port()),
            s.ctl.addrs.http.port(),
            "--http1.1",
        ),
        (
            format!("https://{HOST}:{}/", s.ctl.addrs.https.port()),
            s.ctl.addrs.https.port(),
            "--http2",
        ),
    ] {
        let resolve = resolve(port);
        let args = [
            "--haproxy-protocol",
            "--interface",
            "127.0.0.31",
            "--insecure",
            extra,
            "--resolve",
            &resolve,
            &url,
        ];
        let out = tools::curl(&args).await;
        assert!(out.success, "curl {url}: {}", out.stderr);
        let echo: client::EchoReply = serde_json::from_str(&out.stdout).expect("an echo reply");
        assert_eq!(echo.header("X-Real-Ip"), Some("127.0.0.31"), "{url}");
        // Without the header the same request is refused.
        let out = tools::curl(&args[1..]).await;
        assert!(
            !out.success,
            "curl {url} without --haproxy-protocol was answered"
        );
    }
    assert_eq!(metric(&s.ctl, &headers("http", "accepted", "1")).await, 1);
    assert_eq!(metric(&s.ctl, &headers("https", "accepted", "1")).await, 1);
}

#[tokio::test]
async fn optional_serves_both_and_the_mode_reloads_for_new_connections() {
    let s = setup("proxy-protocol: optional\ntrusted-proxies: [127.0.0.2/32]\n").await;
    let lb = Haproxy::start(&s.ctl).await;
    let direct = http_from(s.ctl.addrs.http, BOB.into(), HOST).await;
    assert_eq!(
        client_seen(&direct),
        BOB.to_string(),
        "no header: served as usual"
    );
    let proxied = http_from(lb.http_v1, ALICE.into(), HOST).await;
    assert_eq!(client_seen(&proxied), ALICE.to_string());
    let h2 = https_from(s.ctl.addrs.https, BOB.into(), HOST, "h2").await;
    assert_eq!(client_seen(&h2), BOB.to_string());

    // A connection open before the change keeps working; new ones need a header.
    let tcp = client::tcp(s.ctl.addrs.http, Some(BOB.into()))
        .await
        .unwrap();
    let mut open = Sender::http1(tcp).await.unwrap();
    assert_eq!(open.send(get(HOST)).await.status, 200);
    std::fs::write(&s.config, REQUIRED).expect("rewrite config");
    eventually(
        "direct connections refused after the reload",
        LIVE,
        async || match client::try_http_send(s.ctl.addrs.http, get(HOST)).await {
            Ok(r) => Err(format!("still answered {}", r.status)),
            Err(_) => Ok(()),
        },
    )
    .await;
    assert_eq!(open.send(get(HOST)).await.status, 200);
    let proxied = http_from(lb.http_v2, ALICE.into(), HOST).await;
    assert_eq!(client_seen(&proxied), ALICE.to_string());
}

#[tokio::test]
async fn without_trusted_proxies_headers_are_ignored_and_the_start_warns() {
    let s = setup("proxy-protocol: required\n").await;
    s.ctl
        .wait_for_log(&["WARN", "trusted-proxies is empty"])
        .await;
    let mut tcp = client::tcp(s.ctl.addrs.http, Some(LB.into()))
        .await
        .unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 4711 80\r\n")
        .await
        .unwrap();
    let r = Sender::http1(tcp).await.unwrap().send(get(HOST)).await;
    assert_eq!(client_seen(&r), LB.to_string());
    assert_eq!(metric(&s.ctl, &headers("http", "untrusted", "1")).await, 1);
}
