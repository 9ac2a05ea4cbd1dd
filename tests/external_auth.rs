//! External authentication (`auth-url`) through the real binary in manifest mode, against a small auth
//! service started by the test that answers by path and records what it was asked: what the
//! subrequest carries, how each answer is used (2xx with headers copied and forged ones removed,
//! 401/403 passed on, sign-in redirects, 500 for anything else or no answer), caching, and failing
//! closed on invalid settings. The end-to-end run against the real oauth2-proxy is in
//! `tests/oauth2_proxy.rs`.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::client::http_send;
use support::manifests;
use support::*;
use tokio::net::TcpListener;

const NS: &str = "web";

/// `(name, value)` annotation pairs, without prefix.
type Annotations<'a> = &'a [(&'a str, &'a str)];

/// One subrequest as the auth service received it.
#[derive(Debug, Clone)]
struct Asked {
    method: String,
    path: String,
    headers: HeaderMap,
    body_len: usize,
}

/// The test's auth service. `/allow` answers 200 with `X-Auth-User: alice`, an `X-Auth-Groups`
/// header twice and a cookie; `/allow-quiet` 200 without headers; `/deny` 401 with a Bearer
/// challenge and a cookie; `/forbid` 403; `/broken` 500; `/moved` 302; `/slow` 500 after 3 s.
struct AuthServer {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl AuthServer {
    async fn start() -> AuthServer {
        AuthServer::serve(None).await
    }

    /// The same over TLS, with a self-signed certificate.
    async fn start_tls() -> AuthServer {
        use rustls::pki_types::pem::PemObject as _;
        let cert = TestCert::self_signed(&["auth.internal"]);
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.leaf.clone()], key)
            .expect("certificate");
        AuthServer::serve(Some(Arc::new(config))).await
    }

    async fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let record = asked.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let record = record.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve_connection(stream, record).await;
                            }
                        }
                        None => serve_connection(tcp, record).await,
                    }
                });
            }
        });
        AuthServer { addr, asked }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

async fn serve_connection<S>(stream: S, record: Arc<Mutex<Vec<Asked>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body_len = body.collect().await.map_or(0, |b| b.to_bytes().len());
            record.lock().unwrap().push(Asked {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                headers: parts.headers.clone(),
                body_len,
            });
            if parts.uri.path() == "/slow" {
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            }
            Ok::<_, Infallible>(answer(parts.uri.path()))
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

fn answer(path: &str) -> Response<Full<Bytes>> {
    let b = Response::builder();
    let b = match path {
        "/allow" => b
            .status(200)
            .header("x-auth-user", "alice")
            .header("x-auth-groups", "admins")
            .header("x-auth-groups", "staff")
            .header("set-cookie", "session=fresh; Path=/"),
        "/allow-quiet" => b.status(200),
        "/deny" => b
            .status(401)
            .header("www-authenticate", "Bearer realm=\"tests\"")
            .header("set-cookie", "tried=1; Path=/"),
        "/forbid" => b.status(403),
        "/moved" => b.status(302).header("location", "/elsewhere"),
        _ => b.status(500),
    };
    b.body(Full::new(Bytes::from_static(b"auth says so")))
        .expect("response")
}

fn protected(
    name: &str,
    annotations: &[(&str, &str)],
) -> k8s_openapi::api::networking::v1::Ingress {
    IngressBuilder::new(NS, name)
        .route(Some(&format!("{name}.test")), "app")
        .nginx_annotations(annotations)
        .build()
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn allowed_requests_carry_the_auth_headers_and_forged_ones_are_removed() {
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    let auth = AuthServer::start().await;
    let allow = auth.url("/allow");
    let quiet = auth.url("/allow-quiet");
    let by_name = format!("http://localhost:{}/allow-quiet", auth.addr.port());
    let tls_auth = AuthServer::start_tls().await;
    let over_tls = format!("https://{}/allow", tls_auth.addr);
    let headers = "X-Auth-User, X-Auth-Groups, X-Auth-Email";
    dir.write(
        "ingresses.yaml",
        &[
            &protected(
                "allowed",
                &[("auth-url", &allow), ("auth-response-headers", headers)],
            ),
            &protected(
                "quiet",
                &[("auth-url", &quiet), ("auth-response-headers", headers)],
            ),
            &protected("by-name", &[("auth-url", &by_name)]),
            &protected(
                "over-tls",
                &[("auth-url", &over_tls), ("auth-response-headers", headers)],
            ),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;

    let resp = http_send(
        ctl.addrs.http,
        request("POST", "allowed.test", "/page?x=1&y=2")
            .header("cookie", "session=old")
            .header("authorization", "Bearer token-1")
            .header("x-auth-user", "mallory")
            .header("x-auth-email", "forged@example.com")
            .header("x-original-url", "http://forged/")
            .body("a request body the auth service never sees"),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(
        resp.header("set-cookie"),
        Some("session=fresh; Path=/"),
        "the auth service's cookie reaches the client"
    );
    let echo = resp.echo();
    assert_eq!(echo.path, "/page?x=1&y=2");
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.header("X-Auth-User"), Some("alice"));
    assert_eq!(
        echo.headers.get("X-Auth-Groups").map(Vec::len),
        Some(2),
        "every value is copied: {:?}",
        echo.headers
    );
    assert_eq!(
        echo.header("X-Auth-Email"),
        None,
        "a header the auth answer lacks is removed, not forged"
    );
    let request_id = echo
        .header("X-Request-Id")
        .expect("a request id")
        .to_string();

    let asked = auth.asked();
    assert_eq!(asked.len(), 1);
    let a = &asked[0];
    assert_eq!((a.method.as_str(), a.path.as_str()), ("GET", "/allow"));
    assert_eq!(a.body_len, 0, "no body");
    let h = |name: &str| a.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(h("host"), Some(auth.addr.to_string().as_str()));
    assert_eq!(
        h("x-original-url"),
        Some("http://allowed.test/page?x=1&y=2")
    );
    assert_eq!(h("x-original-method"), Some("POST"));
    assert_eq!(h("x-auth-request-redirect"), Some("/page?x=1&y=2"));
    assert_eq!(h("cookie"), Some("session=old"));
    assert_eq!(h("authorization"), Some("Bearer token-1"));
    assert_eq!(h("x-forwarded-host"), Some("allowed.test"));
    assert_eq!(h("x-forwarded-proto"), Some("http"));
    assert_eq!(
        h("x-real-ip"),
        echo.header("X-Real-Ip"),
        "the client's address"
    );
    assert_eq!(h("x-forwarded-for"), h("x-real-ip"));
    assert_eq!(h("x-request-id"), Some(request_id.as_str()), "the same id");
    assert_eq!(h("content-length"), None);

    let resp = http_send(
        ctl.addrs.http,
        request("GET", "quiet.test", "/").header("x-auth-user", "mallory"),
    )
    .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.echo().header("X-Auth-User"), None, "never forged");

    let resp = http_send(ctl.addrs.http, request("GET", "over-tls.test", "/")).await;
    assert_eq!(resp.status, StatusCode::OK, "an https auth-url");
    assert_eq!(resp.echo().header("X-Auth-User"), Some("alice"));
    assert_eq!(tls_auth.asked().len(), 1);

    let resp = http_send(ctl.addrs.http, request("GET", "by-name.test", "/")).await;
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "an auth-url host name is resolved"
    );
    let last = auth.asked().pop().expect("asked");
    assert_eq!(
        last.headers.get("host").and_then(|v| v.to_str().ok()),
        Some(format!("localhost:{}", auth.addr.port()).as_str())
    );
    drop(app);
}

#[tokio::test]
async fn denials_pass_through_sign_in_redirects_and_failures_answer_500() {
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    let auth = AuthServer::start().await;
    let unreachable = format!("http://127.0.0.1:{}/auth", closed_port().await);
    let slow = auth.url("/slow");
    let (deny, forbid, broken, moved) = (
        auth.url("/deny"),
        auth.url("/forbid"),
        auth.url("/broken"),
        auth.url("/moved"),
    );
    dir.write(
        "ingresses.yaml",
        &[
            &protected("deny", &[("auth-url", &deny)]),
            &protected(
                "signin",
                &[
                    ("auth-url", &deny),
                    ("auth-signin", "https://login.example/start"),
                ],
            ),
            &protected(
                "signin-own-rd",
                &[
                    ("auth-url", &deny),
                    (
                        "auth-signin",
                        "https://$host/oauth2/start?rd=$escaped_request_uri",
                    ),
                ],
            ),
            &protected(
                "signin-param",
                &[
                    ("auth-url", &deny),
                    ("auth-signin", "https://login.example/start?app=1"),
                    ("auth-signin-redirect-param", "return_to"),
                ],
            ),
            &protected(
                "forbid",
                &[
                    ("auth-url", &forbid),
                    ("auth-signin", "https://login.example/start"),
                ],
            ),
            &protected("broken", &[("auth-url", &broken)]),
            &protected("moved", &[("auth-url", &moved)]),
            &protected(
                "always",
                &[("auth-url", &deny), ("auth-always-set-cookie", "true")],
            ),
            &protected("unreachable", &[("auth-url", &unreachable)]),
            &protected(
                "slow",
                &[("auth-url", &slow), ("proxy-read-timeout", "500ms")],
            ),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    let get = async |host: &str, path: &str| {
        http_send(
            ctl.addrs.http,
            request("GET", &format!("{host}.test"), path),
        )
        .await
    };

    let r = get("deny", "/denied").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"tests\""));
    assert_eq!(
        r.header("set-cookie"),
        None,
        "no cookie on a 401 by default"
    );

    let r = get("always", "/denied").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("set-cookie"),
        Some("tried=1; Path=/"),
        "auth-always-set-cookie"
    );

    let r = get("signin", "/denied?a=1").await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location"),
        Some("https://login.example/start?rd=http%3A%2F%2Fsignin.test%2Fdenied%3Fa%3D1")
    );
    assert_eq!(
        r.header("set-cookie"),
        Some("tried=1; Path=/"),
        "on the 302 too"
    );

    let r = get("signin-own-rd", "/denied/x").await;
    assert_eq!(
        r.header("location"),
        Some("https://signin-own-rd.test/oauth2/start?rd=%2Fdenied%2Fx"),
        "an rd already present is kept as written"
    );

    let r = get("signin-param", "/denied").await;
    assert_eq!(
        r.header("location"),
        Some("https://login.example/start?app=1&return_to=http%3A%2F%2Fsignin-param.test%2Fdenied")
    );

    let r = get("forbid", "/denied").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a 403 is never redirected");
    for host in ["broken", "moved", "unreachable"] {
        let r = get(host, "/denied").await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{host}");
    }
    let sent = std::time::Instant::now();
    let r = get("slow", "/denied").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(2),
        "the Ingress's proxy-read-timeout bounds the subrequest: {:?}",
        sent.elapsed()
    );
    assert!(
        app.seen().iter().all(|s| !s.path.starts_with("/denied")),
        "the backend never sees a refused request: {:?}",
        app.seen()
    );

    let metrics = support::tools::curl(&[&format!("http://{}/metrics", ctl.addrs.admin)]).await;
    for (ingress, result) in [
        ("deny", "denied"),
        ("broken", "error"),
        ("unreachable", "error"),
    ] {
        let series = format!(
            "portcullis_external_auth_duration_seconds_count{{ingress=\"{ingress}\",namespace=\"{NS}\",result=\"{result}\"}}"
        );
        assert!(
            metrics.stdout.lines().any(|l| l.starts_with(&series)),
            "{series} in {}",
            metrics.stdout
        );
    }
}

#[tokio::test]
async fn answers_are_cached_per_key_for_their_status_duration() {
    let dir = ManifestDir::new();
    let _app = manifests::echo_service(&dir, NS, "app").await;
    let auth = AuthServer::start().await;
    let quiet = auth.url("/allow-quiet");
    let allow = auth.url("/allow");
    dir.write(
        "ingresses.yaml",
        &[
            &protected(
                "cached",
                &[
                    ("auth-url", &quiet),
                    ("auth-cache-key", "$http_authorization"),
                    ("auth-cache-duration", "200 1m"),
                ],
            ),
            &protected(
                "cookies",
                &[
                    ("auth-url", &allow),
                    ("auth-cache-key", "$http_authorization"),
                ],
            ),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    let get = async |host: &str, token: &str| {
        http_send(
            ctl.addrs.http,
            request("GET", host, "/").header("authorization", token),
        )
        .await
        .status
    };
    for _ in 0..3 {
        assert_eq!(get("cached.test", "Bearer one").await, StatusCode::OK);
    }
    assert_eq!(auth.asked().len(), 1, "one key, asked once");
    assert_eq!(get("cached.test", "Bearer two").await, StatusCode::OK);
    assert_eq!(auth.asked().len(), 2, "another key is asked about");

    for _ in 0..2 {
        assert_eq!(get("cookies.test", "Bearer one").await, StatusCode::OK);
    }
    assert_eq!(
        auth.asked().len(),
        4,
        "answers that set cookies are not cached, and routes do not share answers"
    );
}

#[tokio::test]
async fn invalid_auth_settings_answer_503_and_are_reported() {
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    let auth = AuthServer::start().await;
    let allow = auth.url("/allow");
    let cases: &[(&str, Annotations, &str)] = &[
        ("relative", &[("auth-url", "/oauth2/auth")], "absolute http"),
        (
            "variable",
            &[("auth-url", "http://auth/$unknown_thing")],
            "$unknown_thing is not a variable",
        ),
        (
            "configmap",
            &[
                ("auth-url", &allow),
                ("auth-proxy-set-headers", "web/extra"),
            ],
            "ConfigMap",
        ),
        (
            "no-url",
            &[("auth-signin", "https://login.example/")],
            "is set without auth-url",
        ),
    ];
    let mut objects: Vec<_> = cases
        .iter()
        .map(|(name, annotations, _)| protected(name, annotations))
        .collect();
    objects.push(protected("open", &[]));
    let refs: Vec<&dyn manifests::ErasedObject> = objects.iter().map(|o| o as _).collect();
    dir.write("ingresses.yaml", &refs);
    let ctl = Controller::start(dir.path(), &[]).await;
    for (name, _, why) in cases {
        let r = http_send(
            ctl.addrs.http,
            request("GET", &format!("{name}.test"), "/denied"),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{name}: fails closed"
        );
        ctl.wait_for_log(&[&format!("Ingress web/{name}"), why])
            .await;
    }
    let open = http_send(ctl.addrs.http, request("GET", "open.test", "/")).await;
    assert_eq!(open.status, StatusCode::OK, "the rest keeps serving");
    assert!(app.seen().iter().all(|s| !s.path.starts_with("/denied")));
    assert!(auth.asked().is_empty());
    let problems = support::tools::problems_metric(ctl.addrs.admin).await;
    assert!(
        problems.get("invalid-annotation").is_some_and(|n| *n >= 3),
        "{problems:?}"
    );
    assert!(
        problems
            .get("unsupported-annotation")
            .is_some_and(|n| *n >= 1),
        "{problems:?}"
    );
}

#[tokio::test]
async fn http2_requests_are_asked_about_with_one_cookie_header() {
    let dir = ManifestDir::new();
    let _app = manifests::echo_service(&dir, NS, "app").await;
    let auth = AuthServer::start().await;
    let allow = auth.url("/allow");
    manifests::certificate_file(&dir, NS, "tls", &["h2.test"]);
    dir.write(
        "ingresses.yaml",
        &[&IngressBuilder::new(NS, "h2")
            .tls(&["h2.test"], "tls")
            .route(Some("h2.test"), "app")
            .nginx_annotations(&[
                ("auth-url", &allow),
                ("auth-response-headers", "X-Auth-User"),
            ])
            .build()],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    let conn = TlsClient::new()
        .sni("h2.test")
        .alpn(&["h2"])
        .connect(ctl.addrs.https)
        .await
        .expect("TLS");
    let mut h2 = conn.http().await;
    let resp = h2
        .send(
            request("GET", "h2.test", "/over-h2?q=1")
                .header("cookie", "a=1")
                .header("cookie", "b=2"),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    assert_eq!(resp.echo().header("X-Auth-User"), Some("alice"));
    let asked = auth.asked();
    let h = |name: &str| {
        asked[0]
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(h("cookie"), vec!["a=1; b=2"]);
    assert_eq!(h("x-original-url"), vec!["https://h2.test/over-h2?q=1"]);
    assert_eq!(h("x-forwarded-proto"), vec!["https"]);
}
