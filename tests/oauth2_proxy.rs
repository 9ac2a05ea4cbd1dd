//! External authentication against the real oauth2-proxy (built from its Go module by
//! `tests/e2e/oauth2-proxy`), set up as its documentation gives for ingress-nginx: one Ingress routes
//! `/oauth2` to oauth2-proxy, the protected Ingress has `auth-url: …/oauth2/auth` and `auth-signin`
//! pointing at its sign-in page. A user signs in through oauth2-proxy's htpasswd form with `curl` and a
//! cookie jar, then reaches the backend with the user's name in `X-Auth-Request-User`; once the
//! session cookie has expired, the same cookie sends them back to sign in.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
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
        let (head, body) = out
            .stdout
            .split_once("\r\n\r\n")
            .unwrap_or((&out.stdout, ""));
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

#[tokio::test]
async fn oauth2_proxy_signs_users_in_and_expired_sessions_sign_in_again() {
    let binary = oauth2_proxy_binary().await;
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;

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
    let port = free_port();
    let o2p_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = std::fs::File::create(work.path().join("oauth2-proxy.log")).expect("log file");
    // A provider is required to start; the htpasswd form signs users in without contacting it.
    let child = std::process::Command::new(&binary)
        .args([
            &format!("--http-address={o2p_addr}"),
            "--provider=github",
            "--client-id=portcullis-tests",
            "--client-secret=unused",
            "--cookie-secret=0123456789abcdef0123456789abcdef",
            "--cookie-secure=false",
            &format!("--cookie-expire={COOKIE_EXPIRE_SECONDS}s"),
            "--cookie-refresh=0",
            &format!("--htpasswd-file={}", htpasswd_file.display()),
            "--email-domain=*",
            "--upstream=static://202",
            "--reverse-proxy",
            "--set-xauthrequest",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start oauth2-proxy");
    let _oauth2_proxy = KillOnDrop(child);
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
    let protected = IngressBuilder::new(NS, "app")
        .route(Some(HOST), "app")
        .nginx_annotations(&[
            ("auth-url", &auth_url),
            (
                "auth-signin",
                "http://$http_host/oauth2/sign_in?rd=$escaped_request_uri",
            ),
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
