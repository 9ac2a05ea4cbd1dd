//! External authentication against the real oauth2-proxy (built from its Go module by
//! `tests/e2e/oauth2-proxy`), set up as its documentation gives for ingress-nginx: one Ingress routes
//! `/oauth2` to oauth2-proxy, the protected Ingress has `auth-url: …/oauth2/auth` and `auth-signin`
//! pointing at oauth2-proxy's sign-in. Two real sign-ins, with `curl` and a cookie jar:
//!
//! - oauth2-proxy's htpasswd form (`/oauth2/sign_in`): redirected to sign in, a wrong password
//!   refused, the right one lets the user reach the backend with `X-Auth-Request-User`; once the
//!   session cookie has expired, the same cookie sends them back to sign in;
//! - `/oauth2/start` with a small OpenID Connect provider started by the test: the whole browser
//!   round trip, after which the backend sees `X-Auth-Request-User` and `X-Auth-Request-Email` from
//!   the auth answer (a forged e-mail header from the client is replaced).

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use support::manifests::{self, PathType, Port};
use support::tools;
use support::*;

const NS: &str = "web";
const HOST: &str = "app.test";
const COOKIE_EXPIRE_SECONDS: u64 = 3;

/// The cached oauth2-proxy binary, built on first use.
async fn oauth2_proxy_binary() -> String {
    let script = format!("{}/tests/e2e/oauth2-proxy", env!("CARGO_MANIFEST_DIR"));
    let out = tools::run(&script, &["path".into()], Duration::from_secs(900)).await;
    assert!(out.success, "tests/e2e/oauth2-proxy path: {}", out.stderr);
    out.stdout.trim().to_string()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// `curl` through Portcullis's HTTP listener as `HOST`, with a cookie jar: status, headers, body.
struct Curl {
    resolve: String,
    base: String,
    jar: std::path::PathBuf,
}

struct Got {
    status: u16,
    head: String,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

impl Curl {
    async fn run(&self, path: &str, extra: &[&str]) -> Got {
        let url = format!("{}{path}", self.base);
        let jar = self.jar.display().to_string();
        let mut args = vec![
            "-s",
            "-i",
            "--resolve",
            &self.resolve,
            "-b",
            &jar,
            "-c",
            &jar,
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = tools::curl(&args).await;
        assert!(out.success, "curl {url}: {}", out.stderr);
        // With `-L`, one head per response (curl prints no body of a redirect it follows): the last
        // head is the final response's.
        let (mut head, mut body) = ("", out.stdout.as_str());
        while body.starts_with("HTTP/")
            && let Some((h, rest)) = body.split_once("\r\n\r\n")
        {
            (head, body) = (h, rest);
        }
        let status = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {:?}", out.stdout));
        Got {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    }
}

/// oauth2-proxy on loopback behind Portcullis: an Ingress routes `/oauth2` on `HOST` to it, and the
/// protected Ingress `app` asks its `/oauth2/auth`, signing users in at `signin_path`.
struct Setup {
    _ctl: Controller,
    _manifests: ManifestDir,
    curl: Curl,
    app: EchoServer,
    _oauth2_proxy: KillOnDrop,
    _work: tempfile::TempDir,
}

/// Starts oauth2-proxy with `provider_args` (plus what every setup shares) and Portcullis in front.
async fn setup(work: tempfile::TempDir, provider_args: &[String], signin_path: &str) -> Setup {
    let binary = oauth2_proxy_binary().await;
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    let o2p_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = std::fs::File::create(work.path().join("oauth2-proxy.log")).expect("log file");
    let mut args = vec![
        format!("--http-address={o2p_addr}"),
        "--cookie-secret=0123456789abcdef0123456789abcdef".into(),
        "--cookie-secure=false".into(),
        "--email-domain=*".into(),
        "--upstream=static://202".into(),
        "--reverse-proxy".into(),
        "--set-xauthrequest".into(),
    ];
    args.extend_from_slice(provider_args);
    let child = std::process::Command::new(&binary)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start oauth2-proxy");
    let oauth2_proxy = KillOnDrop(child);
    eventually(
        "oauth2-proxy answers /ping",
        Duration::from_secs(20),
        async || {
            let out = tools::curl(&[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{o2p_addr}/ping"),
            ])
            .await;
            match out.stdout.as_str() {
                "200" => Ok(()),
                other => Err(format!("status {other:?}")),
            }
        },
    )
    .await;

    let svc = manifests::service_with_endpoints(
        NS,
        "oauth2-proxy",
        4180,
        Some("http"),
        &[o2p_addr],
        true,
    );
    dir.write("svc-oauth2-proxy.yaml", &svc.objects());
    let sign_in_routes = IngressBuilder::new(NS, "oauth2-proxy")
        .path(
            Some(HOST),
            "/oauth2",
            PathType::Prefix,
            "oauth2-proxy",
            Port::Number(4180),
        )
        .build();
    let auth_url = format!("http://{o2p_addr}/oauth2/auth");
    let signin = format!("http://$http_host{signin_path}?rd=$escaped_request_uri");
    let protected = IngressBuilder::new(NS, "app")
        .route(Some(HOST), "app")
        .nginx_annotations(&[
            ("auth-url", &auth_url),
            ("auth-signin", &signin),
            (
                "auth-response-headers",
                "X-Auth-Request-User, X-Auth-Request-Email",
            ),
        ])
        .build();
    dir.write("ingresses.yaml", &[&sign_in_routes, &protected]);
    let ctl = Controller::start(dir.path(), &[]).await;
    let http = ctl.addrs.http;
    let curl = Curl {
        resolve: format!("{HOST}:{}:{}", http.port(), http.ip()),
        base: format!("http://{HOST}:{}", http.port()),
        jar: work.path().join("cookies"),
    };
    Setup {
        _ctl: ctl,
        _manifests: dir,
        curl,
        app,
        _oauth2_proxy: oauth2_proxy,
        _work: work,
    }
}

#[tokio::test]
async fn oauth2_proxy_signs_users_in_and_expired_sessions_sign_in_again() {
    let work = tempfile::tempdir().expect("temp dir");
    let htpasswd_file = work.path().join("users.htpasswd");
    let line = tools::run(
        "htpasswd",
        &["-nbB", "alice", "alice's password"].map(String::from),
        Duration::from_secs(10),
    )
    .await;
    assert!(line.success, "htpasswd: {}", line.stderr);
    std::fs::write(&htpasswd_file, &line.stdout).expect("write htpasswd");
    // A provider is required to start; the htpasswd form signs users in without contacting it.
    let provider = [
        "--provider=github".to_string(),
        "--client-id=portcullis-tests".into(),
        "--client-secret=unused".into(),
        format!("--cookie-expire={COOKIE_EXPIRE_SECONDS}s"),
        "--cookie-refresh=0".into(),
        format!("--htpasswd-file={}", htpasswd_file.display()),
    ];
    let Setup { curl, app, .. } = &setup(work, &provider, "/oauth2/sign_in").await;

    // Not signed in: redirected to oauth2-proxy's sign-in page, which is served through Portcullis.
    let first = curl.run("/private/page?tab=2", &[]).await;
    assert_eq!(first.status, 302, "{}", first.head);
    let sign_in = first.header("location").expect("a Location").to_string();
    let sign_in_path = format!("/oauth2/sign_in?rd={}", "%2Fprivate%2Fpage%3Ftab%3D2");
    assert_eq!(sign_in, format!("{}{sign_in_path}", curl.base));
    let form = curl.run(&sign_in_path, &[]).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("name=\"username\""), "the htpasswd form");

    // A wrong password is refused by oauth2-proxy; the right one sets the session cookie.
    let wrong = curl
        .run(
            &sign_in_path,
            &[
                "--data-urlencode",
                "username=alice",
                "--data-urlencode",
                "password=guess",
            ],
        )
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.head);
    let signed_in = curl
        .run(
            &sign_in_path,
            &[
                "--data-urlencode",
                "username=alice",
                "--data-urlencode",
                "password=alice's password",
            ],
        )
        .await;
    assert_eq!(signed_in.status, 302, "{}", signed_in.head);
    assert_eq!(signed_in.header("location"), Some("/private/page?tab=2"));
    let session = signed_in
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    assert!(session.starts_with("_oauth2_proxy="), "{session}");

    // Signed in: the backend sees who the user is, and a forged identity header is gone.
    let through = curl
        .run(
            "/private/page?tab=2",
            &[
                "-H",
                "X-Auth-Request-Email: forged@example.com",
                "-H",
                "X-Auth-Request-User: mallory",
            ],
        )
        .await;
    assert_eq!(through.status, 200, "{}", through.head);
    let echo: EchoReply = serde_json::from_str(&through.body).expect("echo JSON");
    assert_eq!(echo.path, "/private/page?tab=2");
    assert_eq!(echo.header("X-Auth-Request-User"), Some("alice"));
    assert_eq!(
        echo.header("X-Auth-Request-Email"),
        None,
        "htpasswd users have no e-mail address; the forged one is removed"
    );

    // Expired: the same cookie (sent by hand, the jar would drop it) is refused and the user is
    // sent back to sign in.
    tokio::time::sleep(Duration::from_secs(COOKIE_EXPIRE_SECONDS + 1)).await;
    let cookie_header = format!("Cookie: {session}");
    let expired = curl.run("/private/again", &["-H", &cookie_header]).await;
    assert_eq!(expired.status, 302, "{}", expired.head);
    assert_eq!(
        expired.header("location"),
        Some(format!("{}/oauth2/sign_in?rd=%2Fprivate%2Fagain", curl.base).as_str())
    );
    assert!(
        app.seen()
            .iter()
            .filter(|s| s.path.starts_with("/private"))
            .count()
            == 1,
        "only the signed-in request reached the backend: {:?}",
        app.seen()
    );
}

/// Stops the child process when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small OpenID Connect provider on loopback that signs every visitor in as alice: discovery, an
/// authorization endpoint that redirects straight back with a code, a token endpoint answering with
/// an ES256-signed ID token, and the JWKS to check it.
struct OidcProvider {
    issuer: String,
}

impl OidcProvider {
    async fn start(client_id: &'static str) -> OidcProvider {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let key = Arc::new(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("key"));
        let point = key.public_key().as_ref().to_vec();
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "test-key",
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        }]})
        .to_string();
        let iss = issuer.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (key, jwks, iss) = (key.clone(), jwks.clone(), iss.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (key, jwks, iss) = (key.clone(), jwks.clone(), iss.clone());
                            async move {
                                Ok::<_, std::convert::Infallible>(oidc_answer(
                                    &req, &key, &jwks, &iss, client_id,
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        OidcProvider { issuer }
    }
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn oidc_answer(
    req: &http::Request<hyper::body::Incoming>,
    key: &aws_lc_rs::signature::EcdsaKeyPair,
    jwks: &str,
    issuer: &str,
    client_id: &str,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let json = |body: String| {
        http::Response::builder()
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("response")
    };
    match req.uri().path() {
        "/.well-known/openid-configuration" => json(
            serde_json::json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/authorize"),
                "token_endpoint": format!("{issuer}/token"),
                "jwks_uri": format!("{issuer}/jwks"),
                "userinfo_endpoint": format!("{issuer}/userinfo"),
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            })
            .to_string(),
        ),
        "/jwks" => json(jwks.to_string()),
        "/authorize" => {
            let query = req.uri().query().unwrap_or("");
            let param = |name: &str| {
                query.split('&').find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    (k == name).then(|| v.to_string())
                })
            };
            let redirect = param("redirect_uri").expect("redirect_uri");
            let redirect = percent_decode(&redirect);
            let state = param("state").expect("state");
            http::Response::builder()
                .status(302)
                .header("location", format!("{redirect}?code=test-code&state={state}"))
                .body(http_body_util::Full::default())
                .expect("response")
        }
        "/token" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            let header = b64(br#"{"alg":"ES256","typ":"JWT","kid":"test-key"}"#);
            let claims = b64(serde_json::json!({
                "iss": issuer, "aud": client_id, "sub": "alice", "iat": now, "exp": now + 3600,
                "email": "alice@example.com", "email_verified": true, "preferred_username": "alice",
            })
            .to_string()
            .as_bytes());
            let signing_input = format!("{header}.{claims}");
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let signature = key.sign(&rng, signing_input.as_bytes()).expect("sign");
            let id_token = format!("{signing_input}.{}", b64(signature.as_ref()));
            json(
                serde_json::json!({
                    "access_token": "test-access-token", "token_type": "Bearer",
                    "expires_in": 3600, "id_token": id_token,
                })
                .to_string(),
            )
        }
        "/userinfo" => json(
            serde_json::json!({"sub": "alice", "email": "alice@example.com", "email_verified": true})
                .to_string(),
        ),
        _ => http::Response::builder()
            .status(404)
            .body(http_body_util::Full::default())
            .expect("response"),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                let hex = std::str::from_utf8(hex).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn oauth2_proxy_with_an_oidc_provider_passes_user_and_email_to_the_backend() {
    const CLIENT_ID: &str = "portcullis-tests";
    let provider = OidcProvider::start(CLIENT_ID).await;
    let work = tempfile::tempdir().expect("temp dir");
    let redirect = format!(
        "http://{HOST}:{}/oauth2/callback",
        support::controller::HTTP_PORT
    );
    let args = [
        "--provider=oidc".to_string(),
        format!("--oidc-issuer-url={}", provider.issuer),
        format!("--client-id={CLIENT_ID}"),
        "--client-secret=test-secret".into(),
        format!("--redirect-url={redirect}"),
    ];
    // The configuration oauth2-proxy's documentation gives for ingress-nginx: sign in at /oauth2/start.
    let Setup { curl, app, .. } = &setup(work, &args, "/oauth2/start").await;

    let first = curl.run("/private/report?y=2026", &[]).await;
    assert_eq!(first.status, 302, "{}", first.head);
    let start = first.header("location").expect("a Location").to_string();
    assert_eq!(
        start,
        format!(
            "{}/oauth2/start?rd=%2Fprivate%2Freport%3Fy%3D2026",
            curl.base
        )
    );
    // The browser's part: oauth2-proxy's start page, the provider, the callback through Portcullis,
    // and back to the page first asked for.
    let path = start.strip_prefix(&curl.base).expect("same origin");
    let done = curl
        .run(
            path,
            &["-L", "-H", "X-Auth-Request-Email: forged@example.com"],
        )
        .await;
    assert_eq!(
        done.status, 200,
        "signed in and back at the page: {}",
        done.head
    );
    let echo: EchoReply = serde_json::from_str(&done.body).expect("echo JSON");
    assert_eq!(echo.path, "/private/report?y=2026");
    assert_eq!(echo.header("X-Auth-Request-User"), Some("alice"));
    assert_eq!(
        echo.header("X-Auth-Request-Email"),
        Some("alice@example.com"),
        "from the auth answer, not the client"
    );
    assert_eq!(
        app.seen()
            .iter()
            .filter(|s| s.path.starts_with("/private"))
            .count(),
        1
    );
}
