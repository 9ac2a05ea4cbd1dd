//! Manifest mode end to end: the real binary on its own loopback address, reading YAML files the test
//! writes, in front of real echo backends, driven by real TLS and HTTP clients (rustls + hyper, and
//! `curl` and `openssl s_client` where an independent stack says more).
//!
//! One behaviour per test, named for it. Changes to the manifest directory are awaited by polling
//! for their effect with a deadline, never by sleeping.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::BodyExt;
use support::backend::{self, BodyDigest};
use support::client::{self, Sender, TlsConn, http_send, try_http_send};
use support::controller::unique_loopback_ip;
use support::manifests::{self, PathType, Port};
use support::wait::{LIVE, within};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const NS: &str = "web";

/// An echo backend for `service` and its Service (port 80, named `http`) and EndpointSlice, written to
/// `svc-<service>.yaml`.
async fn backend(dir: &ManifestDir, service: &str) -> EchoServer {
    manifests::echo_service(dir, NS, service).await
}

/// A certificate for `hosts`, its Secret `<name>` in `secret-<name>.yaml`.
fn certificate(dir: &ManifestDir, name: &str, hosts: &[&str]) -> TestCert {
    manifests::certificate_file(dir, NS, name, hosts)
}

fn get(host: &str, path: &str) -> client::Req {
    request("GET", host, path)
}

/// One request over a new plain-HTTP connection to the controller.
async fn plain(ctl: &Controller, req: client::Req) -> Captured {
    http_send(ctl.addrs.http, req).await
}

/// A TLS connection to the controller with `sni`, accepting any certificate.
async fn tls(ctl: &Controller, sni: &str) -> TlsConn {
    TlsClient::new()
        .sni(sni)
        .connect(ctl.addrs.https)
        .await
        .unwrap_or_else(|e| panic!("TLS connection with SNI {sni}: {e}"))
}

/// One request over a new TLS connection with SNI = `req.host`.
async fn secure(ctl: &Controller, req: client::Req) -> Captured {
    tls(ctl, &req.host.clone())
        .await
        .http()
        .await
        .send(req)
        .await
}

/// Waits until `host`+`path` answers `status` on plain HTTP.
async fn wait_for_status(ctl: &Controller, host: &str, path: &str, status: u16) -> Captured {
    eventually(
        &format!("http://{host}{path} to answer {status}"),
        LIVE,
        async || {
            let resp = try_http_send(ctl.addrs.http, get(host, path)).await?;
            if resp.status == status {
                Ok(resp)
            } else {
                Err(format!("status {}: {}", resp.status, resp.text()))
            }
        },
    )
    .await
}

/// Every test ends here: no private key written by the test may appear in the controller's log.
fn finish(ctl: &Controller, dir: &ManifestDir) {
    ctl.assert_no_key_material(&dir.private_keys());
}

// ---------------------------------------------------------------------------------------------
// TLS: certificates by SNI, versions, ALPN

#[tokio::test]
async fn sni_exact_name_selects_its_certificate() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let a = certificate(&dir, "a-tls", &["a.test"]);
    let b = certificate(&dir, "b-tls", &["b.test"]);
    let ing = IngressBuilder::new(NS, "ab")
        .tls(&["a.test"], "a-tls")
        .tls(&["b.test"], "b-tls")
        .route(Some("a.test"), "app")
        .route(Some("b.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    for (name, cert) in [("a.test", &a), ("b.test", &b)] {
        let conn = tls(&ctl, name).await;
        assert_eq!(conn.fingerprint(), cert.fingerprint(), "SNI {name}");
        let resp = conn.http().await.send(get(name, "/")).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.echo().service, "app");
    }
    finish(&ctl, &dir);
}

#[tokio::test]
async fn sni_wildcard_certificate_covers_exactly_one_label() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let wild = certificate(&dir, "wild-tls", &["*.wild.test"]);
    let ing = IngressBuilder::new(NS, "wild")
        .tls(&["*.wild.test"], "wild-tls")
        .route(Some("*.wild.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let conn = tls(&ctl, "x.wild.test").await;
    assert_eq!(conn.fingerprint(), wild.fingerprint());
    let resp = conn.http().await.send(get("x.wild.test", "/")).await;
    assert_eq!(resp.echo().host, "x.wild.test");

    for name in ["a.b.wild.test", "wild.test"] {
        let conn = tls(&ctl, name).await;
        assert_eq!(
            pki::dns_names(conn.leaf()),
            ["portcullis.invalid"],
            "{name} is not covered by *.wild.test, so the default certificate is served"
        );
    }
    finish(&ctl, &dir);
}

#[tokio::test]
async fn unknown_or_absent_server_name_gets_the_default_certificate() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    certificate(&dir, "a-tls", &["a.test"]);
    let ing = IngressBuilder::new(NS, "a")
        .tls(&["a.test"], "a-tls")
        .route(Some("a.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let unknown = tls(&ctl, "unknown.test").await;
    assert_eq!(pki::dns_names(unknown.leaf()), ["portcullis.invalid"]);
    let without_sni = TlsClient::new().connect(ctl.addrs.https).await.unwrap();
    assert_eq!(without_sni.fingerprint(), unknown.fingerprint());
    // The default certificate is only a certificate: routing still goes by Host.
    let resp = unknown.http().await.send(get("a.test", "/")).await;
    assert_eq!(resp.status, 200);
    finish(&ctl, &dir);
}

#[tokio::test]
async fn strict_sni_refuses_unknown_server_names() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let a = certificate(&dir, "a-tls", &["a.test"]);
    let ing = IngressBuilder::new(NS, "a")
        .tls(&["a.test"], "a-tls")
        .route(Some("a.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &["--strict-sni"]).await;

    assert_eq!(tls(&ctl, "a.test").await.fingerprint(), a.fingerprint());
    let refused = TlsClient::new()
        .sni("unknown.test")
        .connect(ctl.addrs.https)
        .await;
    assert!(
        refused.is_err(),
        "a handshake for an unknown name must fail"
    );
    finish(&ctl, &dir);
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_accepted_and_tls_1_1_is_refused() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let cert = certificate(&dir, "a-tls", &["a.test"]);
    let ing = IngressBuilder::new(NS, "a")
        .tls(&["a.test"], "a-tls")
        .route(Some("a.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    for (version, expected) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let conn = TlsClient::new()
            .sni("a.test")
            .versions(&[version])
            .connect(ctl.addrs.https)
            .await
            .unwrap_or_else(|e| panic!("{expected:?}: {e}"));
        assert_eq!(conn.version(), Some(expected));
        assert_eq!(conn.fingerprint(), cert.fingerprint());
        assert_eq!(conn.http().await.send(get("a.test", "/")).await.status, 200);
    }

    // OpenSSL as an independent client. Security level 0 lets it really offer TLS 1.1, so a failure
    // is the server's refusal (an alert), not the client's own policy.
    for (flag, line) in [("-tls1_2", "New, TLSv1.2,"), ("-tls1_3", "New, TLSv1.3,")] {
        let out = tools::s_client(ctl.addrs.https, "a.test", &[flag]).await;
        assert!(
            out.success && out.stdout.contains(line),
            "openssl {flag}: {out:?}"
        );
    }
    let out = tools::s_client(
        ctl.addrs.https,
        "a.test",
        &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"],
    )
    .await;
    assert!(!out.success, "TLS 1.1 must be refused: {out:?}");
    assert!(
        out.stderr.contains("alert") && out.stdout.contains("Cipher is (NONE)"),
        "the server must refuse TLS 1.1 with an alert: {out:?}"
    );
    finish(&ctl, &dir);
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    certificate(&dir, "a-tls", &["a.test"]);
    let ing = IngressBuilder::new(NS, "a")
        .tls(&["a.test"], "a-tls")
        .route(Some("a.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let conn = TlsClient::new()
        .sni("a.test")
        .alpn(&["h2", "http/1.1"])
        .connect(ctl.addrs.https)
        .await
        .unwrap();
    assert_eq!(conn.alpn().as_deref(), Some("h2"));
    let mut h2 = conn.http().await;
    for path in ["/one", "/two"] {
        let resp = h2.send(get("a.test", path)).await;
        assert_eq!(resp.version, http::Version::HTTP_2);
        assert_eq!(resp.status, 200);
        let echo = resp.echo();
        assert_eq!(
            (echo.proto.as_str(), echo.host.as_str(), echo.path.as_str()),
            ("HTTP/1.1", "a.test", path),
            "HTTP/2 downstream becomes HTTP/1.1 upstream with :authority as Host"
        );
    }

    let conn = TlsClient::new()
        .sni("a.test")
        .alpn(&["http/1.1"])
        .connect(ctl.addrs.https)
        .await
        .unwrap();
    assert_eq!(conn.alpn().as_deref(), Some("http/1.1"));
    let resp = conn.http().await.send(get("a.test", "/")).await;
    assert_eq!(resp.version, http::Version::HTTP_11);

    let https = ctl.addrs.https;
    let out = tools::curl(&[
        "--insecure",
        "--http2",
        "--resolve",
        &format!("a.test:{}:{}", https.port(), https.ip()),
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_version} %{http_code}",
        &format!("https://a.test:{}/curl", https.port()),
    ])
    .await;
    assert_eq!(out.stdout, "2 200", "curl --http2: {out:?}");
    finish(&ctl, &dir);
}

#[tokio::test]
async fn keys_in_pkcs1_and_sec1_with_full_chains_are_served() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let rsa = TestCert::ca_signed(&["rsa.test"], &rcgen::PKCS_RSA_SHA256);
    let ec = TestCert::ca_signed(&["ec.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
    // rcgen writes PKCS#8; `openssl pkey -traditional` rewrites it as PKCS#1 (RSA) or SEC1 (EC).
    let mut secrets = Vec::new();
    for (name, cert, marker) in [
        ("rsa-tls", &rsa, "BEGIN RSA PRIVATE KEY"),
        ("ec-tls", &ec, "BEGIN EC PRIVATE KEY"),
    ] {
        let key_file = dir.path().join(format!(".{name}.key"));
        std::fs::write(&key_file, &cert.key_pem).unwrap();
        let out = tools::run(
            "openssl",
            &[
                "pkey".into(),
                "-in".into(),
                key_file.display().to_string(),
                "-traditional".into(),
            ],
            Duration::from_secs(10),
        )
        .await;
        std::fs::remove_file(&key_file).unwrap();
        assert!(out.success && out.stdout.contains(marker), "{out:?}");
        dir.remember_key(&out.stdout);
        secrets.push(manifests::tls_secret_raw(
            NS,
            name,
            &cert.chain_pem,
            &out.stdout,
        ));
    }
    dir.write("secrets.yaml", &[&secrets[0], &secrets[1]]);
    let ing = IngressBuilder::new(NS, "keys")
        .tls(&["rsa.test"], "rsa-tls")
        .tls(&["ec.test"], "ec-tls")
        .route(Some("rsa.test"), "app")
        .route(Some("ec.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    for (name, cert) in [("rsa.test", &rsa), ("ec.test", &ec)] {
        // Verified as a browser would: chain to the test CA, name matching SNI.
        let conn = TlsClient::new()
            .sni(name)
            .verify_with(vec![cert.trust_anchor()])
            .connect(ctl.addrs.https)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            conn.chain.len(),
            2,
            "{name}: leaf and intermediate are sent"
        );
        assert_eq!(conn.fingerprint(), cert.fingerprint());
        assert_eq!(conn.http().await.send(get(name, "/")).await.status, 200);
    }
    finish(&ctl, &dir);
}

// ---------------------------------------------------------------------------------------------
// :80 — redirects, ACME, plain HTTP

/// The Ingress of the redirect tests: `r.test` with TLS.
async fn redirect_setup(dir: &ManifestDir) -> EchoServer {
    let echo = backend(dir, "app").await;
    certificate(dir, "r-tls", &["r.test"]);
    let ing = IngressBuilder::new(NS, "r")
        .tls(&["r.test"], "r-tls")
        .route(Some("r.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    echo
}

#[tokio::test]
async fn plain_http_to_a_tls_host_redirects_with_308_to_https() {
    let dir = ManifestDir::new();
    let echo = redirect_setup(&dir).await;
    let ctl = Controller::start(dir.path(), &[]).await;

    let resp = plain(&ctl, get("r.test:8080", "/p/a?x=1&y=%20")).await;
    assert_eq!(resp.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        resp.header("location"),
        Some("https://r.test/p/a?x=1&y=%20"),
        "host without the port, path and query kept"
    );
    let resp = plain(&ctl, request("POST", "R.TEST", "/form").body("a=1")).await;
    assert_eq!(resp.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.header("location"), Some("https://r.test/form"));

    // curl, as users check it.
    let http = ctl.addrs.http;
    let out = tools::curl(&[
        "--resolve",
        &format!("r.test:{}:{}", http.port(), http.ip()),
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code} %{redirect_url}",
        &format!("http://r.test:{}/curl?q=1", http.port()),
    ])
    .await;
    assert_eq!(out.stdout, "308 https://r.test/curl?q=1", "{out:?}");
    assert!(echo.seen().is_empty(), "redirects never reach the backend");
    finish(&ctl, &dir);
}

#[tokio::test]
async fn acme_challenge_path_is_proxied_not_redirected() {
    let dir = ManifestDir::new();
    let echo = redirect_setup(&dir).await;
    let ctl = Controller::start(dir.path(), &[]).await;

    let resp = plain(&ctl, get("r.test", "/.well-known/acme-challenge/token-123")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.echo().path, "/.well-known/acme-challenge/token-123");
    assert_eq!(echo.seen().len(), 1);
    finish(&ctl, &dir);
}

#[tokio::test]
async fn ssl_redirect_false_annotation_proxies_plain_http() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    certificate(&dir, "s-tls", &["own.test", "nginx.test"]);
    let own = IngressBuilder::new(NS, "own")
        .annotation("portcullis.io/ssl-redirect", "false")
        .tls(&["own.test"], "s-tls")
        .route(Some("own.test"), "app")
        .build();
    let nginx = IngressBuilder::new(NS, "nginx")
        .annotation("nginx.ingress.kubernetes.io/ssl-redirect", "false")
        .tls(&["nginx.test"], "s-tls")
        .route(Some("nginx.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&own, &nginx]);
    let ctl = Controller::start(dir.path(), &[]).await;

    for host in ["own.test", "nginx.test"] {
        let resp = plain(&ctl, get(host, "/x")).await;
        assert_eq!(resp.status, 200, "{host}: {}", resp.text());
        assert_eq!(resp.echo().header("X-Forwarded-Proto"), Some("http"));
        let resp = secure(&ctl, get(host, "/x")).await;
        assert_eq!(resp.status, 200, "{host} over HTTPS");
    }
    finish(&ctl, &dir);
}

#[tokio::test]
async fn force_ssl_redirect_annotation_redirects_a_host_without_tls() {
    let dir = ManifestDir::new();
    let echo = backend(&dir, "app").await;
    let own = IngressBuilder::new(NS, "own")
        .annotation("portcullis.io/force-ssl-redirect", "true")
        .route(Some("own.test"), "app")
        .build();
    let nginx = IngressBuilder::new(NS, "nginx")
        .annotation("nginx.ingress.kubernetes.io/force-ssl-redirect", "true")
        .route(Some("nginx.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&own, &nginx]);
    let ctl = Controller::start(dir.path(), &[]).await;

    for host in ["own.test", "nginx.test"] {
        let resp = plain(&ctl, get(host, "/x?y=1")).await;
        assert_eq!(resp.status, StatusCode::PERMANENT_REDIRECT, "{host}");
        assert_eq!(
            resp.header("location"),
            Some(format!("https://{host}/x?y=1").as_str())
        );
    }
    assert!(echo.seen().is_empty());
    finish(&ctl, &dir);
}

#[tokio::test]
async fn host_without_tls_is_proxied_on_plain_http() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let ing = IngressBuilder::new(NS, "p")
        .route(Some("p.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let resp = plain(&ctl, get("p.test", "/plain")).await;
    assert_eq!(resp.status, 200);
    let echo = resp.echo();
    assert_eq!(
        (echo.service.as_str(), echo.path.as_str()),
        ("app", "/plain")
    );
    finish(&ctl, &dir);
}

// ---------------------------------------------------------------------------------------------
// Routing

#[tokio::test]
async fn routes_follow_exact_prefix_and_precedence_across_ingresses() {
    let dir = ManifestDir::new();
    let _old = backend(&dir, "old").await;
    let _new = backend(&dir, "new").await;
    let _exact = backend(&dir, "exact").await;
    let older = IngressBuilder::new(NS, "older")
        .created("2024-01-01T00:00:00Z")
        .prefix(Some("r.test"), "/", "old")
        .prefix(Some("r.test"), "/app", "old")
        .build();
    let newer = IngressBuilder::new(NS, "newer")
        .created("2024-06-01T00:00:00Z")
        // Same host, path and type as the older Ingress: the older one wins.
        .prefix(Some("r.test"), "/app", "new")
        .path(
            Some("r.test"),
            "/app",
            PathType::Exact,
            "exact",
            Port::name("http"),
        )
        .path(
            Some("r.test"),
            "/app/deep",
            PathType::ImplementationSpecific,
            "new",
            Port::Number(80),
        )
        .build();
    dir.write("newer.yaml", &[&newer]);
    dir.write("older.yaml", &[&older]);
    let ctl = Controller::start(dir.path(), &[]).await;

    for (host, path, service) in [
        ("r.test", "/app", "exact"), // Exact beats Prefix of the same length
        ("r.test", "/app/", "old"),  // not the Exact path; the older Prefix wins the tie
        ("r.test", "/app/x?q=/app/deep", "old"), // the query never takes part
        ("r.test", "/app/deep/x", "new"), // the longest match wins, whichever Ingress has it
        ("r.test", "/appx", "old"),  // prefixes match whole path elements only
        ("R.Test:8080", "/app/x", "old"), // host: any case, port ignored
    ] {
        let resp = plain(&ctl, get(host, path)).await;
        assert_eq!(resp.status, 200, "{host}{path}: {}", resp.text());
        assert_eq!(resp.echo().service, service, "{host}{path}");
        assert_eq!(resp.echo().path, path, "the path goes upstream unchanged");
    }
    // The losing rule is reported against the newer Ingress, naming the winner and the file.
    let line = ctl
        .wait_for_log(&["WARN", "Ingress web/newer", "web/older"])
        .await;
    assert!(line.contains("newer.yaml"), "{line}");
    finish(&ctl, &dir);
}

#[tokio::test]
async fn request_matching_no_rule_gets_404_from_portcullis() {
    let dir = ManifestDir::new();
    let echo = backend(&dir, "app").await;
    let ing = IngressBuilder::new(NS, "only")
        .prefix(Some("r.test"), "/only", "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    for (host, path) in [
        ("r.test", "/elsewhere"),
        ("r.test", "/onlyx"),
        ("other.test", "/only"),
    ] {
        let resp = plain(&ctl, get(host, path)).await;
        assert_eq!(resp.status, 404, "{host}{path}");
        assert_eq!(resp.header("server"), Some("portcullis"));
        assert!(resp.try_echo().is_err(), "404 comes from Portcullis itself");
    }
    assert!(echo.seen().is_empty());
    finish(&ctl, &dir);
}

#[tokio::test]
async fn default_backend_serves_requests_no_rule_matches() {
    let dir = ManifestDir::new();
    let _api = backend(&dir, "api").await;
    let _fallback = backend(&dir, "fallback").await;
    let ing = IngressBuilder::new(NS, "d")
        .default_backend("fallback", Port::Number(80))
        .prefix(Some("r.test"), "/api", "api")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    for (host, path, service) in [
        ("r.test", "/api/v1", "api"),
        ("r.test", "/web", "fallback"),
        ("other.test", "/", "fallback"),
        ("", "/no-host", "fallback"),
    ] {
        let resp = plain(&ctl, get(host, path)).await;
        assert_eq!(resp.status, 200, "{host}{path}");
        assert_eq!(resp.echo().service, service, "{host}{path}");
    }
    finish(&ctl, &dir);
}

#[tokio::test]
async fn ingresses_of_another_class_are_not_served() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let other = IngressBuilder::new(NS, "other")
        .class(Some("nginx"))
        .route(Some("other.test"), "app")
        .build();
    let legacy = IngressBuilder::new(NS, "legacy")
        .class(None)
        .annotation("kubernetes.io/ingress.class", "portcullis")
        .route(Some("legacy.test"), "app")
        .build();
    let classless = IngressBuilder::new(NS, "classless")
        .class(None)
        .route(Some("classless.test"), "app")
        .build();
    dir.write(
        "ingress.yaml",
        &[&manifests::ingress_class(), &other, &legacy, &classless],
    );
    let ctl = Controller::start(dir.path(), &[]).await;

    assert_eq!(plain(&ctl, get("other.test", "/")).await.status, 404);
    assert_eq!(plain(&ctl, get("classless.test", "/")).await.status, 404);
    assert_eq!(
        plain(&ctl, get("legacy.test", "/")).await.status,
        200,
        "the legacy kubernetes.io/ingress.class annotation names our class"
    );
    finish(&ctl, &dir);
}

#[tokio::test]
async fn endpoints_are_chosen_per_request_round_robin() {
    let dir = ManifestDir::new();
    let mut pods = Vec::new();
    for pod in ["pod-1", "pod-2"] {
        pods.push(
            EchoServer::start(EchoIdentity {
                service: "app".into(),
                pod: pod.into(),
                ..Default::default()
            })
            .await,
        );
    }
    let addrs: Vec<_> = pods.iter().map(EchoServer::addr).collect();
    let svc = manifests::service_with_endpoints(NS, "app", 80, Some("http"), &addrs, true);
    let ing = IngressBuilder::new(NS, "rr")
        .route(Some("rr.test"), "app")
        .build();
    dir.write("app.yaml", &[svc.objects(), vec![&ing]].concat());
    let ctl = Controller::start(dir.path(), &[]).await;

    // One keep-alive connection: the choice must be per request, not per connection.
    let mut conn = client::http_connection(ctl.addrs.http).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(conn.send(get("rr.test", "/")).await.echo().pod);
    }
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "consecutive requests alternate between the endpoints: {seen:?}"
    );
    finish(&ctl, &dir);
}

// ---------------------------------------------------------------------------------------------
// Proxying: headers, errors, bodies, upgrades

#[tokio::test]
async fn forwarded_headers_are_set_and_the_request_is_kept() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    certificate(&dir, "f-tls", &["fwd.test"]);
    let ing = IngressBuilder::new(NS, "fwd")
        .tls(&["fwd.test"], "f-tls")
        .annotation("portcullis.io/ssl-redirect", "false")
        .route(Some("fwd.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;
    // A client address of its own, so X-Forwarded-For is known to come from the connection.
    let client_ip = IpAddr::V4(unique_loopback_ip());

    let req = || {
        request("PATCH", "fwd.test", "/p/q?a=1&b=%2F")
            .header("X-Custom", "kept")
            // A client cannot choose the address the backend sees.
            .header("X-Forwarded-For", "192.0.2.66")
            .body("patch-body")
    };
    let stream = client::tcp(ctl.addrs.http, Some(client_ip)).await.unwrap();
    let over_http = Sender::http1(stream).await.unwrap().send(req()).await;
    let conn = TlsClient::new()
        .sni("fwd.test")
        .connect_from(ctl.addrs.https, Some(client_ip))
        .await
        .unwrap();
    let over_https = conn.http().await.send(req()).await;

    for (resp, proto, port) in [(over_http, "http", "8080"), (over_https, "https", "8443")] {
        assert_eq!(resp.status, 200, "{proto}");
        let echo = resp.echo();
        assert_eq!(echo.method, "PATCH");
        assert_eq!(echo.path, "/p/q?a=1&b=%2F");
        assert_eq!(echo.host, "fwd.test", "Host is kept");
        assert_eq!(echo.header("X-Custom"), Some("kept"));
        let client_ip = client_ip.to_string();
        assert_eq!(
            echo.headers.get("X-Forwarded-For"),
            Some(&vec![client_ip.clone()]),
            "{proto}"
        );
        assert_eq!(
            echo.header("X-Real-Ip"),
            Some(client_ip.as_str()),
            "{proto}"
        );
        assert_eq!(echo.header("X-Forwarded-Proto"), Some(proto));
        assert_eq!(echo.header("X-Forwarded-Host"), Some("fwd.test"));
        assert_eq!(echo.header("X-Forwarded-Port"), Some(port));
    }
    finish(&ctl, &dir);
}

#[tokio::test]
async fn server_header_is_added_only_when_the_backend_sends_none() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let ing = IngressBuilder::new(NS, "s")
        .route(Some("s.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let resp = plain(&ctl, get("s.test", "/")).await;
    assert_eq!(resp.header("server"), Some("portcullis"));
    let resp = plain(&ctl, get("s.test", backend::WITH_SERVER)).await;
    let servers: Vec<_> = resp.headers.get_all("server").iter().collect();
    assert_eq!(
        servers,
        [backend::BACKEND_SERVER],
        "the backend's own Server is kept"
    );
    finish(&ctl, &dir);
}

#[tokio::test]
async fn closed_endpoint_port_gives_502() {
    let dir = ManifestDir::new();
    // A fresh loopback address nothing listens on: connections are refused.
    let closed = std::net::SocketAddr::from((unique_loopback_ip(), 9));
    let svc = manifests::service_with_endpoints(NS, "gone", 80, None, &[closed], true);
    let ing = IngressBuilder::new(NS, "e")
        .route(Some("e.test"), "gone")
        .build();
    dir.write("app.yaml", &[svc.objects(), vec![&ing]].concat());
    let ctl = Controller::start(dir.path(), &[]).await;

    let resp = plain(&ctl, get("e.test", "/")).await;
    assert_eq!(resp.status, StatusCode::BAD_GATEWAY, "{}", resp.text());
    assert!(
        !resp.text().contains(&closed.to_string()),
        "no internal address in the body"
    );
    finish(&ctl, &dir);
}

#[tokio::test]
async fn service_without_a_ready_endpoint_gives_503() {
    let dir = ManifestDir::new();
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let svc = manifests::service_with_endpoints(NS, "app", 80, Some("http"), &[echo.addr()], false);
    let ing = IngressBuilder::new(NS, "e")
        .route(Some("e.test"), "app")
        .build();
    dir.write("app.yaml", &[svc.objects(), vec![&ing]].concat());
    let ctl = Controller::start(dir.path(), &[]).await;

    let resp = plain(&ctl, get("e.test", "/")).await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text()
    );
    assert!(
        echo.seen().is_empty(),
        "a not-ready endpoint gets no traffic"
    );
    finish(&ctl, &dir);
}

#[tokio::test]
async fn missing_service_gives_503_and_is_reported() {
    let dir = ManifestDir::new();
    let ing = IngressBuilder::new(NS, "m")
        .route(Some("m.test"), "nowhere")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let resp = plain(&ctl, get("m.test", "/")).await;
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text()
    );
    let line = ctl
        .wait_for_log(&[
            "WARN",
            "Ingress web/m",
            "Service web/nowhere does not exist",
        ])
        .await;
    assert!(
        line.contains("ingress.yaml"),
        "the log names the file: {line}"
    );
    finish(&ctl, &dir);
}

/// 1 MiB of bytes that are not all alike, so a reordering or a lost chunk changes the hash.
fn mebibyte() -> Bytes {
    let mut state = 0x2545_f491_u32;
    (0..1 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn upload_of_1_mib_arrives_intact_with_its_content_length() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    certificate(&dir, "u-tls", &["up.test"]);
    let ing = IngressBuilder::new(NS, "u")
        .tls(&["up.test"], "u-tls")
        .annotation("portcullis.io/ssl-redirect", "false")
        .route(Some("up.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;
    let body = mebibyte();
    let expected = pki::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body).as_ref());

    let over_http = plain(
        &ctl,
        request("POST", "up.test", backend::HASH).body(body.clone()),
    )
    .await;
    let h2 = TlsClient::new()
        .sni("up.test")
        .alpn(&["h2"])
        .connect(ctl.addrs.https)
        .await
        .unwrap();
    let over_h2 = h2
        .http()
        .await
        .send(
            request("PUT", "up.test", backend::HASH)
                .header("content-length", &body.len().to_string())
                .body(body.clone()),
        )
        .await;
    for (resp, via) in [(over_http, "HTTP/1.1"), (over_h2, "HTTP/2")] {
        assert_eq!(resp.status, 200, "{via}: {}", resp.text());
        let digest: BodyDigest = resp.json();
        assert_eq!(digest.length, 1 << 20, "{via}");
        assert_eq!(digest.sha256, expected, "{via}");
        assert_eq!(digest.content_length.as_deref(), Some("1048576"), "{via}");
        assert_eq!(digest.transfer_encoding, None, "{via}: no re-chunking");
    }
    finish(&ctl, &dir);
}

#[tokio::test]
async fn download_streams_before_the_backend_finishes() {
    let dir = ManifestDir::new();
    let echo = backend(&dir, "app").await;
    let ing = IngressBuilder::new(NS, "d")
        .route(Some("dl.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    const SIZE: usize = 64 * 1024;
    const CHUNKS: usize = 16;
    let mut conn = client::http_connection(ctl.addrs.http).await;
    let resp = conn
        .send_streaming(get(
            "dl.test",
            &format!("{}?chunks={CHUNKS}&size={SIZE}&hold=2", backend::STREAM),
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = Vec::new();
    // The backend sends two chunks, then waits for the test: those must already reach the client.
    within("the first chunks to arrive", LIVE, async {
        while received.len() < 2 * SIZE {
            let frame = body.frame().await.expect("more body").expect("body frame");
            received.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..]));
        }
    })
    .await;
    assert!(
        received.len() < CHUNKS * SIZE,
        "the backend is still holding the rest"
    );
    echo.release_streams();
    let rest = within("the rest of the body", LIVE, body.collect())
        .await
        .expect("body")
        .to_bytes();
    received.extend_from_slice(&rest);
    assert_eq!(received.len(), CHUNKS * SIZE);
    for (i, chunk) in received.chunks(SIZE).enumerate() {
        assert!(
            chunk.iter().all(|&b| b == (i % 251) as u8),
            "chunk {i} intact and in order"
        );
    }
    finish(&ctl, &dir);
}

#[tokio::test]
async fn websocket_upgrade_is_passed_through() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    certificate(&dir, "ws-tls", &["wss.test"]);
    let plain_ws = IngressBuilder::new(NS, "ws")
        .route(Some("ws.test"), "app")
        .build();
    let secure_ws = IngressBuilder::new(NS, "wss")
        .tls(&["wss.test"], "ws-tls")
        .route(Some("wss.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&plain_ws, &secure_ws]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let tcp = client::tcp(ctl.addrs.http, None).await.unwrap();
    let (ws, resp) = within(
        "the WebSocket handshake",
        LIVE,
        tokio_tungstenite::client_async(format!("ws://ws.test{}", backend::WEBSOCKET), tcp),
    )
    .await
    .expect("WebSocket handshake over plain HTTP");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    echo_messages(ws).await;

    let conn = TlsClient::new()
        .sni("wss.test")
        .alpn(&["http/1.1"])
        .connect(ctl.addrs.https)
        .await
        .unwrap();
    let (ws, _) = within(
        "the WebSocket handshake over TLS",
        LIVE,
        tokio_tungstenite::client_async(
            format!("ws://wss.test{}", backend::WEBSOCKET),
            conn.stream,
        ),
    )
    .await
    .expect("WebSocket handshake over TLS");
    echo_messages(ws).await;
    finish(&ctl, &dir);
}

/// Sends text and binary messages and expects each back.
async fn echo_messages<S>(mut ws: tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for message in [
        Message::text("hello through the proxy"),
        Message::binary(vec![0u8, 1, 2, 255]),
    ] {
        ws.send(message.clone()).await.expect("send");
        let back = within("the echoed message", LIVE, ws.next())
            .await
            .expect("a message")
            .expect("a frame");
        assert_eq!(back, message);
    }
    ws.close(None).await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// Changes while running: certificates, files, Ingresses, shutdown

#[tokio::test]
async fn replaced_certificate_goes_live_without_breaking_established_connections() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let first = certificate(&dir, "hot-tls", &["hot.test"]);
    let ing = IngressBuilder::new(NS, "hot")
        .tls(&["hot.test"], "hot-tls")
        .route(Some("hot.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;

    let established = tls(&ctl, "hot.test").await;
    assert_eq!(established.fingerprint(), first.fingerprint());
    let mut established = established.http().await;
    assert_eq!(
        established.send(get("hot.test", "/before")).await.status,
        200
    );

    let second = certificate(&dir, "hot-tls", &["hot.test"]);
    eventually(
        "new connections to get the new certificate",
        LIVE,
        async || {
            let conn = TlsClient::new()
                .sni("hot.test")
                .connect(ctl.addrs.https)
                .await?;
            match conn.fingerprint() {
                f if f == second.fingerprint() => Ok(()),
                f => Err(format!("still {f}")),
            }
        },
    )
    .await;

    let resp = established.send(get("hot.test", "/after")).await;
    assert_eq!(
        resp.status, 200,
        "the connection from before the reload still works"
    );
    assert_eq!(resp.echo().path, "/after");
    let starts = ctl
        .logs()
        .lines()
        .filter(|l| l.contains("listening") && l.contains("https="))
        .count();
    assert_eq!(starts, 1, "the listeners were never restarted");
    finish(&ctl, &dir);
}

/// Starts with a good certificate for `keep.test`, then rewrites its Secret with `crt` and `key`,
/// and checks that the good certificate is still served and the log explains why.
async fn secret_turns_bad(crt: &str, key: &str, problem: &str) {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let good = certificate(&dir, "keep-tls", &["keep.test"]);
    let ing = IngressBuilder::new(NS, "keep")
        .tls(&["keep.test"], "keep-tls")
        .route(Some("keep.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;
    assert_eq!(
        tls(&ctl, "keep.test").await.fingerprint(),
        good.fingerprint()
    );

    let before = ctl.generation();
    dir.write(
        "secret-keep-tls.yaml",
        &[&manifests::tls_secret_raw(NS, "keep-tls", crt, key)],
    );
    let line = ctl
        .wait_for_log(&["WARN", "Secret web/keep-tls", problem])
        .await;
    assert!(
        line.contains("Ingress web/keep") && line.contains("last good certificate"),
        "the log names the object and the consequence: {line}"
    );
    ctl.wait_for_generation(before + 1).await;
    let conn = tls(&ctl, "keep.test").await;
    assert_eq!(
        conn.fingerprint(),
        good.fingerprint(),
        "the last good certificate is kept"
    );
    assert_eq!(
        conn.http().await.send(get("keep.test", "/")).await.status,
        200
    );
    finish(&ctl, &dir);
}

#[tokio::test]
async fn secret_rewritten_with_a_bad_certificate_keeps_the_last_good_one() {
    let other = TestCert::self_signed(&["keep.test"]);
    let garbage =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    secret_turns_bad(garbage, &other.key_pem, "tls.crt").await;
}

#[tokio::test]
async fn secret_rewritten_with_a_mismatched_key_keeps_the_last_good_one() {
    let cert = TestCert::self_signed(&["keep.test"]);
    let other = TestCert::self_signed(&["keep.test"]);
    secret_turns_bad(&cert.chain_pem, &other.key_pem, "does not match").await;
}

const BROKEN_YAML: &str =
    "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: [unclosed\n";

#[tokio::test]
async fn broken_yaml_file_is_reported_and_everything_else_stays_live() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let ing = IngressBuilder::new(NS, "ok")
        .route(Some("ok.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    dir.write_raw("broken.yaml", BROKEN_YAML);
    let ctl = Controller::start(dir.path(), &[]).await;

    assert_eq!(plain(&ctl, get("ok.test", "/")).await.status, 200);
    ctl.wait_for_log(&["WARN", "broken.yaml"]).await;

    // A second broken file while running: reported too, nothing else changes.
    let before = ctl.generation();
    dir.write_raw("broken-too.yml", "kind: Service\n\tbad indentation: [\n");
    ctl.wait_for_log(&["WARN", "broken-too.yml"]).await;
    ctl.wait_for_generation(before + 1).await;
    assert_eq!(plain(&ctl, get("ok.test", "/")).await.status, 200);
    finish(&ctl, &dir);
}

#[tokio::test]
async fn file_edited_into_broken_yaml_keeps_its_last_good_objects() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let ing = IngressBuilder::new(NS, "edit")
        .route(Some("edit.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;
    assert_eq!(plain(&ctl, get("edit.test", "/")).await.status, 200);

    // Half-saved: the file is cut short in place.
    let before = ctl.generation();
    let text = std::fs::read_to_string(dir.file("ingress.yaml")).unwrap();
    dir.edit_in_place(
        "ingress.yaml",
        &format!("{}\n  - [", &text[..text.len() / 2]),
    );
    ctl.wait_for_log(&["WARN", "ingress.yaml"]).await;
    ctl.wait_for_generation(before + 1).await;
    assert_eq!(plain(&ctl, get("edit.test", "/")).await.status, 200);

    // Other changes rebuild the configuration; the broken file still contributes its last good objects.
    let _other = backend(&dir, "other").await;
    ctl.wait_for_generation(before + 2).await;
    assert_eq!(plain(&ctl, get("edit.test", "/")).await.status, 200);
    finish(&ctl, &dir);
}

#[tokio::test]
async fn ingress_added_then_removed_serves_then_404s() {
    let dir = ManifestDir::new();
    let _app = backend(&dir, "app").await;
    let ctl = Controller::start(dir.path(), &[]).await;
    assert_eq!(plain(&ctl, get("new.test", "/")).await.status, 404);

    let ing = IngressBuilder::new(NS, "new")
        .route(Some("new.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let resp = wait_for_status(&ctl, "new.test", "/", 200).await;
    assert_eq!(resp.echo().service, "app");

    dir.remove("ingress.yaml");
    wait_for_status(&ctl, "new.test", "/", 404).await;
    finish(&ctl, &dir);
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let dir = ManifestDir::new();
    let echo = backend(&dir, "app").await;
    let ing = IngressBuilder::new(NS, "slow")
        .route(Some("slow.test"), "app")
        .build();
    dir.write("ingress.yaml", &[&ing]);
    let mut ctl = Controller::start(dir.path(), &[]).await;

    let http = ctl.addrs.http;
    let in_flight = tokio::spawn(http_send(
        http,
        get("slow.test", &format!("{}?ms=1000", backend::SLEEP)),
    ));
    echo.wait_for_request(backend::SLEEP, LIVE).await;
    ctl.sigterm();

    // New connections are no longer accepted once the listeners close.
    eventually("the listener to close", LIVE, async || {
        match client::tcp(http, None).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_string()),
        }
    })
    .await;
    let resp = within("the in-flight request", Duration::from_secs(10), in_flight)
        .await
        .expect("request task");
    assert_eq!(resp.status, 200, "the in-flight request completes");
    let status = ctl.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        ctl.logs()
    );
    finish(&ctl, &dir);
}
