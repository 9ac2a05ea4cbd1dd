//! Basic authentication through the real binary in manifest mode, with `curl` as the client and
//! password hashes made by Apache's own `htpasswd`: the right password reaches the backend, anything
//! else gets 401 with the realm and never reaches it, every hash scheme `htpasswd` makes works, and an
//! auth setting that cannot be enforced answers 503 (never serves the route open) and is reported.
//! Secret files edited while running take effect without a restart.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::client;
use support::manifests;
use support::tools;
use support::wait::LIVE;
use support::*;

const NS: &str = "web";
const PASSWORD: &str = "open sesame";

/// One `user:hash` line made by `htpasswd -nb <flag>`.
async fn htpasswd(flag: &str, user: &str, password: &str) -> String {
    let args = ["-nb", flag, user, password].map(String::from);
    let out = tools::run("htpasswd", &args, Duration::from_secs(10)).await;
    assert!(out.success, "htpasswd {flag}: {}", out.stderr);
    out.stdout.trim().to_string()
}

fn protected(
    name: &str,
    host: &str,
    annotations: &[(&str, &str)],
) -> k8s_openapi::api::networking::v1::Ingress {
    IngressBuilder::new(NS, name)
        .route(Some(host), "app")
        .nginx_annotations(annotations)
        .build()
}

/// `(name, value)` annotation pairs, without prefix.
type Annotations<'a> = &'a [(&'a str, &'a str)];

/// What `curl` got: status and response headers (lower-case names).
struct Answer {
    status: u16,
    headers: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

async fn curl(ctl: &Controller, host: &str, path: &str, user: Option<(&str, &str)>) -> Answer {
    let url = format!("http://{}{path}", ctl.addrs.http);
    let host_header = format!("Host: {host}");
    let credentials = user.map(|(u, p)| format!("{u}:{p}"));
    let mut args = vec!["-D", "-", "-o", "/dev/null", "-H", &host_header, &url];
    if let Some(c) = &credentials {
        args.extend(["-u", c.as_str()]);
    }
    let out = tools::curl(&args).await;
    assert!(out.success, "curl {url}: {}", out.stderr);
    let status = out
        .stdout
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {:?}", out.stdout));
    Answer {
        status,
        headers: out.stdout,
    }
}

#[tokio::test]
async fn every_htpasswd_scheme_admits_the_right_password_and_challenges_the_rest() {
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    let schemes = [
        ("-B", "bcrypt"),
        ("-m", "apr1"),
        ("-s", "sha1"),
        ("-2", "sha256"),
        ("-5", "sha512"),
    ];
    let mut lines = vec!["# made by htpasswd".to_string()];
    for (flag, user) in schemes {
        lines.push(htpasswd(flag, user, PASSWORD).await);
    }
    lines.push(String::new());
    dir.write(
        "secret-users.yaml",
        &[&manifests::opaque_secret(
            NS,
            "users",
            &[("auth", &lines.join("\n"))],
        )],
    );
    dir.write(
        "ingresses.yaml",
        &[
            &protected(
                "private",
                "private.test",
                &[
                    ("auth-type", "basic"),
                    ("auth-secret", "users"),
                    ("auth-realm", "Authentication Required - private"),
                ],
            ),
            &protected(
                "default-realm",
                "plain-realm.test",
                &[("auth-type", "basic"), ("auth-secret", "web/users")],
            ),
            &protected("open", "open.test", &[]),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;

    for (_, user) in schemes {
        let ok = curl(
            &ctl,
            "private.test",
            &format!("/ok-{user}"),
            Some((user, PASSWORD)),
        )
        .await;
        assert_eq!(ok.status, 200, "{user} with the right password");
        let wrong = curl(
            &ctl,
            "private.test",
            "/denied-wrong",
            Some((user, "open sesame!")),
        )
        .await;
        assert_eq!(wrong.status, 401, "{user} with a wrong password");
        assert_eq!(
            wrong.header("www-authenticate"),
            Some("Basic realm=\"Authentication Required - private\"")
        );
    }
    let unknown = curl(
        &ctl,
        "private.test",
        "/denied-unknown",
        Some(("mallory", PASSWORD)),
    )
    .await;
    assert_eq!(unknown.status, 401);
    let anonymous = curl(&ctl, "private.test", "/denied-anonymous", None).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Basic realm=\"Authentication Required - private\"")
    );

    let default_realm = curl(&ctl, "plain-realm.test", "/denied-default", None).await;
    assert_eq!(default_realm.status, 401);
    assert_eq!(
        default_realm.header("www-authenticate"),
        Some("Basic realm=\"\""),
        "ingress-nginx's default realm"
    );
    assert_eq!(
        curl(
            &ctl,
            "plain-realm.test",
            "/ok-ns",
            Some(("bcrypt", PASSWORD))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        curl(&ctl, "open.test", "/ok-open", None).await.status,
        200,
        "other Ingresses stay open"
    );

    // A verified password is remembered; the next requests pass without re-hashing and still pass.
    for _ in 0..3 {
        assert_eq!(
            curl(
                &ctl,
                "private.test",
                "/ok-again",
                Some(("bcrypt", PASSWORD))
            )
            .await
            .status,
            200
        );
    }
    assert_eq!(app.paths_under("/ok-").len(), schemes.len() + 5);
    assert_eq!(
        app.paths_under("/denied"),
        Vec::<String>::new(),
        "the backend never sees a refused request"
    );
}

#[tokio::test]
async fn auth_map_secrets_map_users_to_hashes_in_the_ingress_namespace_only() {
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    let alice = htpasswd("-B", "alice", "alice's secret").await;
    let bob = htpasswd("-m", "bob", "bob's secret").await;
    let hash = |line: &str| line.split_once(':').map(|(_, h)| h.to_string()).unwrap();
    let team = [("alice", hash(&alice)), ("bob", hash(&bob))];
    let team: Vec<(&str, &str)> = team.iter().map(|(u, h)| (*u, h.as_str())).collect();
    dir.write(
        "secret-map.yaml",
        &[
            &manifests::opaque_secret(NS, "team", &team),
            &manifests::opaque_secret("elsewhere", "team", &team),
        ],
    );
    let map = |secret| {
        [
            ("auth-type", "basic"),
            ("auth-secret", secret),
            ("auth-secret-type", "auth-map"),
        ]
    };
    dir.write(
        "ingress.yaml",
        &[
            &protected("mapped", "mapped.test", &map("web/team")),
            &protected("borrowed", "borrowed.test", &map("elsewhere/team")),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    let alice = Some(("alice", "alice's secret"));
    assert_eq!(curl(&ctl, "mapped.test", "/ok-a", alice).await.status, 200);
    let bob = Some(("bob", "bob's secret"));
    assert_eq!(curl(&ctl, "mapped.test", "/ok-b", bob).await.status, 200);
    let mixed = Some(("alice", "bob's secret"));
    assert_eq!(
        curl(&ctl, "mapped.test", "/denied", mixed).await.status,
        401
    );
    let borrowed = curl(&ctl, "borrowed.test", "/denied", alice).await;
    assert_eq!(
        borrowed.status, 503,
        "another namespace's Secret is not used"
    );
    ctl.wait_for_log(&[
        "Ingress web/borrowed",
        "auth-secret elsewhere/team is in another namespace",
    ])
    .await;
    assert_eq!(app.paths_under("/denied"), Vec::<String>::new());
}

#[tokio::test]
async fn auth_that_cannot_be_enforced_answers_503_and_is_reported() {
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    let good = htpasswd("-B", "alice", PASSWORD).await;
    let des = htpasswd("-d", "alice", "secret").await;
    let plain = htpasswd("-p", "alice", PASSWORD).await;
    dir.write(
        "secrets.yaml",
        &[
            &manifests::opaque_secret(NS, "no-key", &[("users", &good)]),
            &manifests::opaque_secret(
                NS,
                "garbage",
                &[("auth", &format!("{good}\nthis line has no hash\n"))],
            ),
            &manifests::opaque_secret(NS, "des", &[("auth", &des)]),
            &manifests::opaque_secret(NS, "plain", &[("auth", &plain)]),
        ],
    );
    let basic = |secret: &'static str| [("auth-type", "basic"), ("auth-secret", secret)];
    let cases: &[(&str, Annotations, &str)] = &[
        ("missing", &basic("nowhere"), "does not exist"),
        ("no-key", &basic("no-key"), "has no key \"auth\""),
        ("garbage", &basic("garbage"), "line 2 is not user:hash"),
        ("des", &basic("des"), "DES crypt hashes are refused"),
        ("plain", &basic("plain"), "plain-text passwords are refused"),
        (
            "digest",
            &[("auth-type", "digest"), ("auth-secret", "des")],
            "digest authentication is not implemented",
        ),
        ("no-secret", &[("auth-type", "basic")], "needs auth-secret"),
        (
            "no-type",
            &[("auth-secret", "des")],
            "is set without auth-type",
        ),
    ];
    let mut objects: Vec<_> = cases
        .iter()
        .map(|(name, annotations, _)| protected(name, &format!("{name}.test"), annotations))
        .collect();
    objects.push(protected("open", "open.test", &[]));
    let refs: Vec<&dyn manifests::ErasedObject> = objects.iter().map(|o| o as _).collect();
    dir.write("ingresses.yaml", &refs);
    let ctl = Controller::start(dir.path(), &[]).await;

    for (name, _, why) in cases {
        let r = curl(
            &ctl,
            &format!("{name}.test"),
            "/denied",
            Some(("alice", PASSWORD)),
        )
        .await;
        assert_eq!(r.status, 503, "{name}: fails closed");
        ctl.wait_for_log(&[&format!("Ingress web/{name}"), why])
            .await;
    }
    assert_eq!(
        curl(&ctl, "open.test", "/ok", None).await.status,
        200,
        "the rest keeps serving"
    );
    assert_eq!(app.paths_under("/denied"), Vec::<String>::new());

    let metrics = tools::curl(&[&format!("http://{}/metrics", ctl.addrs.admin)]).await;
    for kind in [
        "missing-secret",
        "invalid-auth-secret",
        "invalid-annotation",
        "unsupported-annotation",
    ] {
        let series = format!("portcullis_problems{{kind=\"{kind}\"}}");
        let value = metrics
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse::<u64>().ok());
        assert!(value.is_some_and(|v| v >= 1), "{series}: {value:?}");
    }
}

#[tokio::test]
async fn an_edited_secret_file_is_live_without_restart_and_fails_closed_when_broken() {
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    let first = htpasswd("-B", "alice", "first password").await;
    dir.write(
        "secret.yaml",
        &[&manifests::opaque_secret(NS, "users", &[("auth", &first)])],
    );
    dir.write(
        "ingress.yaml",
        &[&protected(
            "private",
            "private.test",
            &[("auth-type", "basic"), ("auth-secret", "users")],
        )],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    assert_eq!(
        curl(
            &ctl,
            "private.test",
            "/ok-1",
            Some(("alice", "first password"))
        )
        .await
        .status,
        200
    );

    // Written by hand with `stringData`, as manifests often are; it is read like `data`.
    let second = htpasswd("-m", "alice", "second password").await;
    let mut edited = manifests::opaque_secret(NS, "users", &[]);
    edited.data = None;
    edited.string_data = Some(BTreeMap::from([("auth".to_string(), second)]));
    dir.write("secret.yaml", &[&edited]);
    eventually("the new password admits alice", LIVE, async || match curl(
        &ctl,
        "private.test",
        "/ok-2",
        Some(("alice", "second password")),
    )
    .await
    .status
    {
        200 => Ok(()),
        other => Err(format!("status {other}")),
    })
    .await;
    let old = curl(
        &ctl,
        "private.test",
        "/denied-old",
        Some(("alice", "first password")),
    )
    .await;
    assert_eq!(
        old.status, 401,
        "the old password, although remembered as verified, no longer passes"
    );

    // No last good credentials: a Secret that turns bad shuts the site rather than keeping old users.
    dir.write(
        "secret.yaml",
        &[&manifests::opaque_secret(
            NS,
            "users",
            &[("auth", "alice:plain text")],
        )],
    );
    eventually("a broken Secret answers 503", LIVE, async || {
        match curl(
            &ctl,
            "private.test",
            "/probe-broken",
            Some(("alice", "second password")),
        )
        .await
        .status
        {
            503 => Ok(()),
            other => Err(format!("status {other}")),
        }
    })
    .await;
    dir.remove("secret.yaml");
    ctl.wait_for_log(&[
        "Ingress web/private",
        "auth-secret web/users does not exist",
    ])
    .await;
    assert_eq!(
        curl(
            &ctl,
            "private.test",
            "/denied-gone",
            Some(("alice", "second password"))
        )
        .await
        .status,
        503
    );
    assert_eq!(app.paths_under("/denied"), Vec::<String>::new());
}

/// Browsers send a CORS preflight without credentials, so it is answered before authentication (as
/// ingress-nginx does); the request it announces still needs the password.
#[tokio::test]
async fn a_cors_preflight_is_answered_without_credentials_and_the_request_still_needs_them() {
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    let line = htpasswd("-B", "alice", PASSWORD).await;
    dir.write(
        "secret.yaml",
        &[&manifests::opaque_secret(NS, "users", &[("auth", &line)])],
    );
    dir.write(
        "ingress.yaml",
        &[&protected(
            "api",
            "api.test",
            &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://app.test"),
            ],
        )],
    );
    let ctl = Controller::start(dir.path(), &[]).await;

    let preflight = request("OPTIONS", "api.test", "/preflight")
        .header("origin", "https://app.test")
        .header("access-control-request-method", "PUT");
    let r = client::http_send(ctl.addrs.http, preflight).await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test")
    );

    let put = request("PUT", "api.test", "/put").header("origin", "https://app.test");
    let r = client::http_send(ctl.addrs.http, put).await;
    assert_eq!(r.status, 401, "the request itself is still authenticated");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.test"),
        "so the browser can show the 401 to the page"
    );
    assert_eq!(
        curl(&ctl, "api.test", "/ok", Some(("alice", PASSWORD)))
            .await
            .status,
        200
    );
    assert_eq!(
        app.paths_under("/p"),
        Vec::<String>::new(),
        "neither reached the backend"
    );
}
