//! Observability, end to end: the real binary in manifest mode is sent known traffic, and its
//! `/metrics` must say exactly what that traffic and its certificates imply; `promtool` checks the
//! exposition, the alert rules (and that the certificate alerts fire on synthetic series), and every
//! query of the Grafana dashboard and the alert rules must name only metrics the controller exports.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ProtocolVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use support::client::{self, TlsClient};
use support::manifests::{self, IngressBuilder, ManifestDir, service_with_endpoints, tls_secret};
use support::pki::TestCert;
use support::{Controller, eventually, wait};

const HOST: &str = "web.test";
/// The test certificate's notAfter: 2031-05-06T00:00:00Z.
const NOT_AFTER: i64 = 1_935_792_000;
const HELLO: &str = "hello\n";
const NOT_HERE: &str = "not here\n";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

// ---------------------------------------------------------------------------------------------
// The exposition format, parsed just enough to look series up.

/// One sample of a scrape.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let mut parsed = BTreeMap::new();
        let mut rest = labels;
        while let Some((key, after)) = rest.split_once("=\"") {
            // Values here never contain escaped quotes; stop at the closing one.
            let end = after.find('"').expect("closing quote");
            parsed.insert(
                key.trim_start_matches(',').to_string(),
                after[..end].to_string(),
            );
            rest = &after[end + 1..];
        }
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().expect("a sample value"),
        };
        samples.push(Sample {
            name: name.to_string(),
            labels: parsed,
            value,
        });
    }
    samples
}

/// The series of `name` whose labels include all of `want`.
fn matching<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// What a scrape must contain: one series with a value, or a number of series.
enum Expect {
    Value(&'static str, Vec<(&'static str, String)>, f64),
    Series(&'static str, Vec<(&'static str, String)>, usize),
}

fn value(name: &'static str, labels: &[(&'static str, &str)], v: f64) -> Expect {
    Expect::Value(name, own(labels), v)
}

fn series_count(name: &'static str, labels: &[(&'static str, &str)], n: usize) -> Expect {
    Expect::Series(name, own(labels), n)
}

fn own(labels: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    labels.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Every expectation that does not hold, or `Ok`.
fn check(text: &str, expectations: &[Expect]) -> Result<(), String> {
    let samples = parse_exposition(text);
    let mut wrong = Vec::new();
    for e in expectations {
        match e {
            Expect::Value(name, labels, want) => {
                let labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let found = matching(&samples, name, &labels);
                match found.as_slice() {
                    [one] if one.value == *want => {}
                    [one] => wrong.push(format!("{name}{labels:?} = {}, want {want}", one.value)),
                    [] => wrong.push(format!("{name}{labels:?} missing, want {want}")),
                    many => wrong.push(format!("{name}{labels:?} is ambiguous: {many:?}")),
                }
            }
            Expect::Series(name, labels, want) => {
                let labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let found = matching(&samples, name, &labels);
                if found.len() != *want {
                    wrong.push(format!(
                        "{name}{labels:?}: {} series, want {want}: {found:?}",
                        found.len()
                    ));
                }
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n"))
    }
}

/// `GET /metrics` on the admin listener.
async fn scrape(admin: SocketAddr) -> Result<String, String> {
    let mut tcp = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|e| format!("connect {admin}: {e}"))?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tcp.read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let response = String::from_utf8(response).map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no end of headers")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("scrape answered {head}"));
    }
    Ok(body.to_string())
}

// ---------------------------------------------------------------------------------------------
// promtool

/// `promtool`, or `None` outside CI when it is not installed (in CI a missing promtool fails).
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed (Debian package `prometheus`; .ci/run installs it)"
        );
        eprintln!(
            "SKIPPED: promtool is not installed (apt-get install prometheus); this check runs in CI"
        );
    }
    found
}

/// Runs promtool with `args` (and `stdin`), returning whether it succeeded and everything it printed.
fn run_promtool(promtool: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut input = child.stdin.take().expect("promtool stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write to promtool");
    }
    drop(input);
    let out = child.wait_with_output().expect("promtool output");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

// ---------------------------------------------------------------------------------------------
// The backend and the certificate

/// A backend that reads each request body completely, then answers `404 not here` on `/missing` and
/// `200 hello` on anything else: response sizes the test knows in advance.
async fn start_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(answer)),
            );
        }
    });
    addr
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let missing = req.uri().path() == "/missing";
    let _ = req.into_body().collect().await;
    let (status, body) = match missing {
        true => (StatusCode::NOT_FOUND, NOT_HERE),
        false => (StatusCode::OK, HELLO),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    Ok(resp)
}

/// A self-signed certificate for [`HOST`] valid until [`NOT_AFTER`].
fn certificate() -> TestCert {
    let mut params = rcgen::CertificateParams::new(vec![HOST.to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2031, 5, 6);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    TestCert {
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        leaf: cert.der().clone(),
        ca: None,
    }
}

fn not_after(cert: &TestCert) -> i64 {
    use x509_parser::prelude::*;
    let (_, parsed) = X509Certificate::from_der(cert.leaf.as_ref()).expect("parse the leaf");
    parsed.validity().not_after.timestamp()
}

// ---------------------------------------------------------------------------------------------
// Clients

type ReqBody = BoxBody<Bytes, Infallible>;

fn req(method: &str, path: &str, body: ReqBody) -> Request<ReqBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
        .body(body)
        .expect("a request")
}

/// Sends one request and reads the whole response: its status and body length.
async fn send(sender: &mut SendRequest<ReqBody>, req: Request<ReqBody>) -> (StatusCode, usize) {
    sender.ready().await.expect("connection ready");
    let resp = tokio::time::timeout(client::REQUEST_TIMEOUT, sender.send_request(req))
        .await
        .expect("a response in time")
        .expect("a response");
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("the body")
        .to_bytes();
    (status, body.len())
}

// ---------------------------------------------------------------------------------------------

/// 3 GETs answered 200 and 2 POSTs answered 404 by the backend (one with `Content-Length`, one
/// chunked), over one TLS 1.3 connection; one TLS 1.2 handshake; one handshake the client refuses;
/// over plain HTTP, one request for a host no rule has and one HTTPS redirect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_after_known_traffic_says_what_the_traffic_implies() {
    let backend = start_backend().await;
    let cert = certificate();
    assert_eq!(not_after(&cert), NOT_AFTER, "the certificate's notAfter");
    let dir = ManifestDir::new();
    let service = service_with_endpoints("shop", "echo", 80, None, &[backend], true);
    let ingress = IngressBuilder::new("shop", "web")
        .tls(&[HOST], "web-tls")
        .route(Some(HOST), "echo")
        .build();
    let secret = tls_secret("shop", "web-tls", &cert);
    let class = manifests::ingress_class();
    let mut objects = service.objects();
    objects.extend([&class as &dyn manifests::ErasedObject, &secret, &ingress]);
    dir.write("web.yaml", &objects);
    let controller = Controller::start(dir.path(), &["--access-log"]).await;
    let addrs = controller.addrs;

    // HTTPS, TLS 1.3: 3 × GET 200, POST 404 with Content-Length, POST 404 chunked.
    let tls13 = TlsClient::new()
        .sni(HOST)
        .alpn(&["http/1.1"])
        .versions(&[&rustls::version::TLS13])
        .connect(addrs.https)
        .await
        .expect("TLS 1.3 handshake");
    assert_eq!(tls13.version(), Some(ProtocolVersion::TLSv1_3));
    let (mut https, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls13.stream))
        .await
        .expect("HTTP/1.1 over TLS");
    tokio::spawn(connection);
    let mut web_response_bytes = Vec::new();
    for _ in 0..3 {
        let empty = http_body_util::Empty::new().boxed();
        let (status, len) = send(&mut https, req("GET", "/hello", empty)).await;
        assert_eq!(status, StatusCode::OK);
        web_response_bytes.push(len);
    }
    let sized = Full::new(Bytes::from_static(b"0123456789a")).boxed();
    let (status, len) = send(&mut https, req("POST", "/missing", sized)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    web_response_bytes.push(len);
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = ["0123456", "789abc"]
        .into_iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    let chunked = StreamBody::new(futures_util::stream::iter(chunks)).boxed();
    let (status, len) = send(&mut https, req("POST", "/missing", chunked)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    web_response_bytes.push(len);
    assert_eq!(
        &web_response_bytes[..],
        &[
            HELLO.len(),
            HELLO.len(),
            HELLO.len(),
            NOT_HERE.len(),
            NOT_HERE.len()
        ]
    );

    // A TLS 1.2 handshake, and one the client refuses (it trusts another certificate).
    let tls12 = TlsClient::new()
        .sni(HOST)
        .versions(&[&rustls::version::TLS12])
        .connect(addrs.https)
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(tls12.version(), Some(ProtocolVersion::TLSv1_2));
    let stranger = TestCert::self_signed(&["stranger.test"]);
    let refused = TlsClient::new()
        .sni(HOST)
        .verify_with(vec![stranger.trust_anchor()])
        .connect(addrs.https)
        .await;
    assert!(refused.is_err(), "the client must refuse the certificate");

    // Plain HTTP: a host no rule has (404 from Portcullis), then the HTTPS redirect.
    let mut http = client::http_connection(addrs.http).await;
    let unrouted = http
        .send(client::request("GET", "nowhere.test", "/hello"))
        .await;
    assert_eq!(unrouted.status, StatusCode::NOT_FOUND);
    let redirect = http.send(client::request("GET", HOST, "/hello")).await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
    web_response_bytes.push(redirect.body.len());

    let web = [
        ("namespace", "shop"),
        ("ingress", "web"),
        ("service", "echo"),
        ("host", HOST),
    ];
    let none = [
        ("namespace", ""),
        ("ingress", ""),
        ("service", ""),
        ("host", "_other"),
    ];
    let with = |base: &[(&'static str, &'static str)], extra: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        all
    };
    let get_2xx = with(&web, &[("method", "GET"), ("status", "2xx")]);
    let post_4xx = with(&web, &[("method", "POST"), ("status", "4xx")]);
    let get_3xx = with(&web, &[("method", "GET"), ("status", "3xx")]);
    let unrouted_4xx = with(&none, &[("method", "GET"), ("status", "4xx")]);
    let small = |sizes: &[usize]| sizes.iter().filter(|s| **s <= 64).count() as f64;
    let web_sent: usize = web_response_bytes.iter().sum();
    let unrouted_sent = unrouted.body.len();
    let cert_labels = [("namespace", "shop"), ("secret", "web-tls"), ("host", HOST)];
    let fingerprint = cert.fingerprint();
    let version = env!("CARGO_PKG_VERSION");
    let mut expectations = vec![
        // Requests: exactly the four combinations that happened.
        series_count("portcullis_requests_total", &[], 4),
        value("portcullis_requests_total", &get_2xx, 3.0),
        value("portcullis_requests_total", &post_4xx, 2.0),
        value("portcullis_requests_total", &get_3xx, 1.0),
        value("portcullis_requests_total", &unrouted_4xx, 1.0),
        value("portcullis_request_duration_seconds_count", &get_2xx, 3.0),
        value("portcullis_request_duration_seconds_count", &post_4xx, 2.0),
        value("portcullis_request_duration_seconds_count", &get_3xx, 1.0),
        value(
            "portcullis_request_duration_seconds_count",
            &unrouted_4xx,
            1.0,
        ),
        value(
            "portcullis_request_duration_seconds_bucket",
            &with(&get_2xx, &[("le", "10")]),
            3.0,
        ),
        // Upstream: the five requests that reached the backend.
        series_count("portcullis_upstream_duration_seconds_count", &[], 1),
        value("portcullis_upstream_duration_seconds_count", &web, 5.0),
        // Sizes: 11 bytes with Content-Length, 13 counted while streaming.
        value("portcullis_request_size_bytes_count", &web, 6.0),
        value("portcullis_request_size_bytes_sum", &web, 24.0),
        value(
            "portcullis_request_size_bytes_bucket",
            &with(&web, &[("le", "64")]),
            6.0,
        ),
        value("portcullis_request_size_bytes_count", &none, 1.0),
        value("portcullis_request_size_bytes_sum", &none, 0.0),
        value("portcullis_response_size_bytes_count", &web, 6.0),
        value("portcullis_response_size_bytes_sum", &web, web_sent as f64),
        value(
            "portcullis_response_size_bytes_bucket",
            &with(&web, &[("le", "64")]),
            small(&web_response_bytes),
        ),
        value(
            "portcullis_response_size_bytes_sum",
            &none,
            unrouted_sent as f64,
        ),
        // Redirects.
        series_count("portcullis_redirects_total", &[], 1),
        value("portcullis_redirects_total", &[("code", "308")], 1.0),
        // TLS handshakes.
        value(
            "portcullis_tls_handshakes_total",
            &[("result", "success"), ("version", "TLSv1.3")],
            1.0,
        ),
        value(
            "portcullis_tls_handshakes_total",
            &[("result", "success"), ("version", "TLSv1.2")],
            1.0,
        ),
        value(
            "portcullis_tls_handshakes_total",
            &[("result", "failure"), ("version", "unknown")],
            1.0,
        ),
        series_count("portcullis_tls_handshakes_total", &[], 3),
        value(
            "portcullis_tls_handshake_duration_seconds_count",
            &[("result", "success")],
            2.0,
        ),
        value(
            "portcullis_tls_handshake_duration_seconds_count",
            &[("result", "failure")],
            1.0,
        ),
        // Connections: three TLS, one plain; the TLS 1.3, TLS 1.2 and HTTP ones are still open.
        value(
            "portcullis_connections_accepted_total",
            &[("listener", "https")],
            3.0,
        ),
        value(
            "portcullis_connections_accepted_total",
            &[("listener", "http")],
            1.0,
        ),
        value("portcullis_open_connections", &[("listener", "https")], 2.0),
        value("portcullis_open_connections", &[("listener", "http")], 1.0),
        // Certificates and backends.
        value(
            "portcullis_certificate_expiry_timestamp_seconds",
            &cert_labels,
            NOT_AFTER as f64,
        ),
        series_count("portcullis_certificate_expiry_timestamp_seconds", &[], 1),
        series_count("portcullis_certificate_info", &[], 1),
        value(
            "portcullis_backend_endpoints",
            &[
                ("namespace", "shop"),
                ("ingress", "web"),
                ("service", "echo"),
            ],
            1.0,
        ),
        // The controller itself.
        value(
            "portcullis_config_builds_total",
            &[("result", "failure")],
            0.0,
        ),
        value("portcullis_problems", &[("kind", "missing-secret")], 0.0),
        value("portcullis_build_info", &[("version", version)], 1.0),
        value("portcullis_leader", &[], 0.0),
    ];
    expectations.push(Expect::Value(
        "portcullis_certificate_info",
        own(&[
            ("namespace", "shop"),
            ("secret", "web-tls"),
            ("host", HOST),
            ("fingerprint_sha256", fingerprint.as_str()),
        ]),
        1.0,
    ));

    let text = eventually("the scrape to match the traffic", wait::LIVE, async || {
        let text = scrape(addrs.admin).await?;
        check(&text, &expectations).map(|()| text)
    })
    .await;
    let samples = parse_exposition(&text);
    let generation = matching(&samples, "portcullis_config_generation", &[]);
    assert!(generation[0].value >= 1.0, "a configuration is live");
    let builds = matching(
        &samples,
        "portcullis_config_builds_total",
        &[("result", "success")],
    );
    assert!(builds[0].value >= 1.0);
    assert!(
        !matching(&samples, "process_resident_memory_bytes", &[]).is_empty(),
        "process metrics are exported"
    );

    // Every line promtool's linter reads is clean.
    if let Some(promtool) = promtool() {
        let (ok, printed) = run_promtool(&promtool, &["check", "metrics"], Some(&text));
        assert!(
            ok && printed.trim().is_empty(),
            "promtool check metrics:\n{printed}"
        );
    }

    // One access-log line per request, on its own target, with the metrics' labels.
    let access: Vec<String> = controller
        .logs()
        .lines()
        .filter(|l| l.contains("portcullis::access"))
        .map(str::to_string)
        .collect();
    assert_eq!(access.len(), 7, "access log:\n{}", access.join("\n"));
    let field = support::controller::field;
    let chunked_line = access
        .iter()
        .find(|l| field(l, "method") == Some("POST") && field(l, "request_bytes") == Some("13"))
        .unwrap_or_else(|| panic!("no line for the chunked POST:\n{}", access.join("\n")));
    assert_eq!(field(chunked_line, "status"), Some("404"));
    assert_eq!(field(chunked_line, "ingress"), Some("web"));
    assert_eq!(field(chunked_line, "route_host"), Some(HOST));
    assert_eq!(
        field(chunked_line, "upstream"),
        Some(backend.to_string().as_str())
    );
    let peer: SocketAddr = field(chunked_line, "peer")
        .and_then(|p| p.parse().ok())
        .expect("the peer address");
    assert_eq!(
        field(chunked_line, "client"),
        Some(peer.ip().to_string().as_str()),
        "no trusted proxy: the client is the peer"
    );
    let unrouted_line = access
        .iter()
        .find(|l| field(l, "host") == Some("nowhere.test"))
        .expect("a line for the unrouted request");
    assert_eq!(field(unrouted_line, "route_host"), Some("_other"));
    assert_eq!(field(unrouted_line, "status"), Some("404"));
    assert_eq!(field(unrouted_line, "upstream"), None);

    // Connections that close leave the gauges.
    drop(https);
    drop(tls12);
    drop(http);
    let closed = [
        value("portcullis_open_connections", &[("listener", "https")], 0.0),
        value("portcullis_open_connections", &[("listener", "http")], 0.0),
    ];
    eventually("the connections to close", wait::LIVE, async || {
        check(&scrape(addrs.admin).await?, &closed)
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Alert rules and dashboard

const RULES: &str = "charts/portcullis/files/prometheus-rules.yaml";
const RULES_TEST: &str = "tests/metrics/rules-test.yaml";
const DASHBOARD: &str = "charts/portcullis/files/grafana-dashboard.json";

#[test]
fn alert_rules_pass_promtool_and_fire_on_synthetic_series() {
    let Some(promtool) = promtool() else {
        return;
    };
    let rules = repo(RULES);
    let (ok, printed) = run_promtool(
        &promtool,
        &["check", "rules", rules.to_str().unwrap()],
        None,
    );
    assert!(ok, "promtool check rules:\n{printed}");
    let test = repo(RULES_TEST);
    let (ok, printed) = run_promtool(&promtool, &["test", "rules", test.to_str().unwrap()], None);
    assert!(ok, "promtool test rules:\n{printed}");
}

/// Every metric family the controller can export, with `_bucket`/`_sum`/`_count` for histograms.
fn exported() -> BTreeSet<String> {
    portcullis::metrics::Metrics::new()
        .expect("metrics")
        .names()
        .clone()
}

#[test]
fn dashboard_queries_name_only_exported_metrics() {
    let text = std::fs::read_to_string(repo(DASHBOARD)).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "only {} queries found", queries.len());
    let exported = exported();
    let mut used = BTreeSet::new();
    for query in &queries {
        let names = query_metrics(query);
        assert!(!names.is_empty(), "no metric in {query:?}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{name} in {query:?} is not exported; exported: {exported:?}"
            );
            used.insert(name);
        }
    }
    // The panels the issue asks for.
    for needed in [
        "portcullis_requests_total",
        "portcullis_request_duration_seconds_bucket",
        "portcullis_tls_handshakes_total",
        "portcullis_certificate_expiry_timestamp_seconds",
        "portcullis_config_builds_total",
    ] {
        assert!(used.contains(needed), "no panel uses {needed}");
    }
    // The datasource is a variable, not a fixed UID.
    assert!(text.contains("${datasource}"));
    let panels_datasources = text.matches("\"uid\": \"${datasource}\"").count();
    assert!(panels_datasources >= queries.len() / 2);
}

#[test]
fn alert_rules_name_only_exported_metrics() {
    let text = std::fs::read_to_string(repo(RULES)).expect("read the rules");
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("the rules are YAML");
    let exported = exported();
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            for name in query_metrics(expr) {
                assert!(
                    exported.contains(&name),
                    "{name} in {expr:?} is not exported"
                );
            }
            alerts.insert(rule["alert"].as_str().expect("alert name").to_string());
        }
    }
    for needed in [
        "PortcullisCertificateExpiringSoon",
        "PortcullisCertificateExpired",
        "PortcullisConfigurationBuildFailing",
        "PortcullisIngressWithoutEndpoints",
        "PortcullisHigh5xxRatio",
    ] {
        assert!(alerts.contains(needed), "no alert {needed} in {alerts:?}");
    }
}

#[test]
fn every_exported_metric_is_documented() {
    let doc = std::fs::read_to_string(repo("docs/metrics.md")).expect("read docs/metrics.md");
    for name in exported() {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| doc.contains(&format!("`{f}`")))
            .unwrap_or(&name);
        assert!(
            doc.contains(&format!("`{family}`")),
            "docs/metrics.md does not mention `{family}`"
        );
    }
}

/// Every PromQL query in a Grafana dashboard: targets' `expr`, and variables' queries.
fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(q)) if !q.is_empty() => out.push(q.clone()),
                    ("query", serde_json::Value::String(q)) if q.contains("label_values") => {
                        out.push(q.clone())
                    }
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression selects (Grafana's `$variables` and `label_values(metric,
/// label)` understood): identifiers outside strings, label matchers and ranges that are not
/// functions, keywords, or the label lists of `by`/`without`/`on`/`ignoring`/`group_*`.
fn query_metrics(query: &str) -> Vec<String> {
    const KEYWORDS: [&str; 10] = [
        "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = query.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    let skip_to = |i: &mut usize, open: char, close: char| {
        let mut depth = 0;
        while *i < chars.len() {
            match chars[*i] {
                '"' | '\'' | '`' => {
                    let quote = chars[*i];
                    *i += 1;
                    while *i < chars.len() && chars[*i] != quote {
                        *i += if chars[*i] == '\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        *i += 1;
                        return;
                    }
                }
                _ => {}
            }
            *i += 1;
        }
    };
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' => skip_to(&mut i, '{', '}'),
            '[' => skip_to(&mut i, '[', ']'),
            '$' => {
                // A Grafana variable: $name or ${name}.
                i += 1;
                if chars.get(i) == Some(&'{') {
                    skip_to(&mut i, '{', '}');
                } else {
                    while i < chars.len() && ident(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let rest: String = chars[next..].iter().take(8).collect();
                // An aggregation with its modifier first: `sum by (le) (…)`.
                let grouped = ["by", "without"].iter().any(|m| {
                    rest.strip_prefix(m)
                        .is_some_and(|r| r.starts_with([' ', '(']))
                });
                let call = chars.get(next) == Some(&'(') || grouped;
                if LABEL_LISTS.contains(&word.as_str()) {
                    if call {
                        i = next;
                        skip_to(&mut i, '(', ')');
                    }
                } else if word == "label_values" && call {
                    // label_values(metric{…}, label): only the metric is one.
                    let rest: String = chars[next + 1..].iter().collect();
                    let metric: String = rest
                        .trim_start()
                        .chars()
                        .take_while(|c| ident(*c))
                        .collect();
                    names.push(metric);
                    i = next;
                    skip_to(&mut i, '(', ')');
                } else if !call
                    && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                    && word != "NaN"
                {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn query_metrics_finds_metric_names_only() {
    let q = r#"histogram_quantile(0.99, sum by (le, ingress) (rate(portcullis_request_duration_seconds_bucket{namespace=~"$namespace", host!="_other"}[$__rate_interval]))) / on(ingress) group_left(x) portcullis_backend_endpoints > bool 0 and time() - portcullis_config_last_build_timestamp_seconds offset 5m"#;
    assert_eq!(
        query_metrics(q),
        [
            "portcullis_request_duration_seconds_bucket",
            "portcullis_backend_endpoints",
            "portcullis_config_last_build_timestamp_seconds"
        ]
    );
    assert_eq!(
        query_metrics(
            r#"label_values(portcullis_requests_total{namespace=~"$namespace"}, ingress)"#
        ),
        ["portcullis_requests_total"]
    );
    assert_eq!(
        query_metrics("sum without (instance) (rate(a_total[5m])) * 1e3"),
        ["a_total"]
    );
}
