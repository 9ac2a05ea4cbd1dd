//! ACME in manifest mode against Pebble, Let's Encrypt's own test CA, with `pebble-challtestsrv` as its
//! DNS resolving every name to the controller's loopback address: Pebble's validator connects to the
//! real HTTP and HTTPS listeners, the served certificate is checked by `curl` against the root Pebble
//! generated at start (fetched from its management port), and what a user would see on failure (log,
//! metric, no tight loop of orders) is checked from outside.
//!
//! Pebble and pebble-challtestsrv are built from the Go module pinned in `tests/e2e/tools/pebble*` on
//! first use and cached (`tests/e2e/pebble build`, which `.ci/run` calls).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::manifests;
use support::pebble::{Pebble, SHORT_LIFETIME_S, fixture};
use support::tools;
use support::*;

const NS: &str = "shop";
/// How long an issuance may take: Pebble validates at once (`PEBBLE_VA_NOSLEEP`); the margin is for a
/// loaded machine.
const ISSUED: Duration = Duration::from_secs(60);

/// A controller in manifest mode with a state directory and a configuration file it re-reads.
struct Setup {
    dir: ManifestDir,
    state: tempfile::TempDir,
    config_dir: tempfile::TempDir,
    _app: EchoServer,
}

impl Setup {
    async fn new(ingresses: &[&k8s_openapi::api::networking::v1::Ingress]) -> Setup {
        let dir = ManifestDir::new();
        let app = manifests::echo_service(&dir, NS, "app").await;
        let objects: Vec<&dyn manifests::ErasedObject> = ingresses
            .iter()
            .map(|i| *i as &dyn manifests::ErasedObject)
            .collect();
        dir.write("ingresses.yaml", &objects);
        let config_dir = tempfile::tempdir().expect("config dir");
        std::fs::write(config_dir.path().join("config.yaml"), "").expect("config file");
        Setup {
            dir,
            state: tempfile::tempdir().expect("state dir"),
            config_dir,
            _app: app,
        }
    }

    fn config_path(&self) -> String {
        self.config_dir
            .path()
            .join("config.yaml")
            .display()
            .to_string()
    }

    async fn controller(&self) -> Controller {
        let state = self.state.path().display().to_string();
        Controller::start(
            self.dir.path(),
            &["--config", &self.config_path(), "--state-dir", &state],
        )
        .await
    }

    /// Writes the configuration; the controller applies it within a second.
    fn configure(&self, text: &str) {
        let tmp = self.config_dir.path().join("config.yaml.tmp");
        std::fs::write(&tmp, text).expect("write the config");
        std::fs::rename(&tmp, self.config_dir.path().join("config.yaml")).expect("config");
    }
}

/// A controller and Pebble, with a certificate for `host` issued under `config`.
struct Issued {
    ctl: Controller,
    pebble: Pebble,
    root: PathBuf,
    /// From the configuration change to a verified certificate.
    took: Duration,
}

impl Setup {
    async fn issue(&self, host: &str, config: impl FnOnce(&Pebble) -> String) -> Issued {
        let ctl = self.controller().await;
        let pebble =
            Pebble::start(ctl.addrs.ip, controller::HTTP_PORT, controller::HTTPS_PORT).await;
        let root = pebble.root().await;
        let started = Instant::now();
        self.configure(&config(&pebble));
        eventually("a certificate from Pebble", ISSUED, async || {
            verified(&ctl, host, &root).await
        })
        .await;
        Issued {
            ctl,
            pebble,
            root,
            took: started.elapsed(),
        }
    }
}

/// The fingerprint of the certificate served for `host`.
async fn served(addr: SocketAddr, host: &str) -> String {
    TlsClient::new()
        .sni(host)
        .connect(addr)
        .await
        .expect("handshake")
        .fingerprint()
}

fn acme_ingress(name: &str, host: &str, secret: &str) -> k8s_openapi::api::networking::v1::Ingress {
    IngressBuilder::new(NS, name)
        .route(Some(host), "app")
        .tls(&[host], secret)
        .annotation("portcullis.io/acme", "true")
        .build()
}

/// `curl https://HOST/` verifying against `root`: `Ok` once the answer is 200 with a verified chain.
async fn verified(ctl: &Controller, host: &str, root: &Path) -> Result<(), String> {
    let out = tools::curl_https_status(host, ctl.addrs.https, root).await;
    match out.stdout.trim() {
        "200" => Ok(()),
        other => Err(format!("status {other:?}: {}", out.stderr)),
    }
}

async fn metrics(ctl: &Controller) -> String {
    let out = tools::curl(&[&format!("http://{}/metrics", ctl.addrs.admin)]).await;
    assert!(out.success, "scrape /metrics: {}", out.stderr);
    out.stdout
}

/// The first log line with every one of `needles`, waiting up to `ISSUED` (an order's whole course).
async fn order_log(ctl: &Controller, needles: &[&str]) -> String {
    eventually(
        &format!("a log line with {needles:?}"),
        ISSUED,
        async || {
            ctl.log_line(needles)
                .ok_or_else(|| format!("log so far:\n{}", ctl.logs()))
        },
    )
    .await
}

fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn http01_issues_a_certificate_that_verifies_against_pebbles_root() {
    let setup = Setup::new(&[&acme_ingress("web", "shop.test", "shop-tls")]).await;
    let ctl = setup.controller().await;
    let pebble = Pebble::start(ctl.addrs.ip, controller::HTTP_PORT, controller::HTTPS_PORT).await;
    let root = pebble.root().await;
    assert!(
        verified(&ctl, "shop.test", &root).await.is_err(),
        "before ACME is configured, the default certificate is served"
    );

    let started = Instant::now();
    setup.configure(&pebble.config("http-01"));
    eventually("a certificate from Pebble", ISSUED, async || {
        verified(&ctl, "shop.test", &root).await
    })
    .await;
    eprintln!("http-01 issuance took {:?}", started.elapsed());

    assert_eq!(pebble.orders(), 1);
    let m = metrics(&ctl).await;
    assert_eq!(
        metric_value(
            &m,
            "portcullis_acme_orders_total{issuer=\"pebble\",result=\"success\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric_value(
            &m,
            "portcullis_acme_challenges_answered_total{challenge=\"http-01\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
    let renewal = metric_value(
        &m,
        "portcullis_acme_next_renewal_timestamp_seconds{namespace=\"shop\",secret=\"shop-tls\"}",
    )
    .expect("the next renewal is exported");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let days = (renewal - now) / 86_400.0;
    assert!(
        (59.0..=61.0).contains(&days),
        "a 90-day certificate is renewed with a third of its life left: in {days} days"
    );
    // The account and the certificate are on disk, readable by the owner only.
    let stored = std::fs::read_dir(setup.state.path().join("certificates"))
        .unwrap()
        .count();
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn tls_alpn01_issues_a_certificate_and_leaves_normal_handshakes_alone() {
    let setup = Setup::new(&[&acme_ingress("web", "alpn.test", "alpn-tls")]).await;
    let Issued { ctl, took, .. } = setup.issue("alpn.test", |p| p.config("tls-alpn-01")).await;
    eprintln!("tls-alpn-01 issuance took {took:?}");
    let m = metrics(&ctl).await;
    assert!(
        metric_value(
            &m,
            "portcullis_acme_challenges_answered_total{challenge=\"tls-alpn-01\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );

    // With no challenge pending, an acme-tls/1 handshake gets nothing; h2 still negotiates.
    let acme_only = TlsClient::new()
        .sni("alpn.test")
        .alpn(&["acme-tls/1"])
        .connect(ctl.addrs.https)
        .await;
    assert!(
        acme_only.is_err(),
        "no challenge certificate outside an order"
    );
    let normal = TlsClient::new()
        .sni("alpn.test")
        .alpn(&["h2", "http/1.1"])
        .connect(ctl.addrs.https)
        .await
        .expect("a normal handshake");
    assert_eq!(normal.alpn().as_deref(), Some("h2"));
}

#[tokio::test]
async fn a_restart_orders_nothing_while_the_certificate_is_valid() {
    let setup = Setup::new(&[&acme_ingress("web", "again.test", "again-tls")]).await;
    let Issued {
        mut ctl,
        pebble,
        root,
        ..
    } = setup.issue("again.test", |p| p.config("http-01")).await;
    let before = served(ctl.addrs.https, "again.test").await;
    assert_eq!(pebble.orders(), 1);

    ctl.sigterm();
    ctl.wait_exit(Duration::from_secs(20)).await;
    let ctl = setup.controller().await;
    verified(&ctl, "again.test", &root)
        .await
        .expect("the stored certificate is served at once after the restart");
    assert_eq!(
        served(ctl.addrs.https, "again.test").await,
        before,
        "the same certificate"
    );
    // Give a re-order every chance to happen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pebble.orders(), 1, "no new order: {}", ctl.logs());
    assert!(ctl.log_line(&["ACME certificate issued"]).is_none());
}

#[tokio::test]
async fn a_short_lived_certificate_is_renewed_before_expiry_without_a_failed_request() {
    let setup = Setup::new(&[&acme_ingress("web", "renew.test", "renew-tls")]).await;
    let Issued {
        ctl, pebble, root, ..
    } = setup
        .issue("renew.test", |p| p.config_with_profile("http-01", "short"))
        .await;
    let roots = vec![CertificateDer::from_pem_file(&root).expect("Pebble's root")];

    // New connections, one after another, verified against Pebble's root, until the certificate
    // changes: every one must succeed, before, during and after the swap.
    let client = TlsClient::new().sni("renew.test").verify_with(roots);
    let fetch = async || -> Result<String, String> {
        let conn = client.connect(ctl.addrs.https).await?;
        let fingerprint = conn.fingerprint();
        let mut http = conn.http().await;
        let answer = http.try_send(request("GET", "renew.test", "/")).await?;
        match answer.status.as_u16() {
            200 => Ok(fingerprint),
            other => Err(format!("status {other}")),
        }
    };
    let first = fetch().await.expect("the first certificate serves");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3 * SHORT_LIFETIME_S);
    let (mut requests, mut failures) = (0u32, Vec::new());
    let renewed = loop {
        assert!(
            Instant::now() < deadline && requests < 20_000,
            "no renewal within {:?} ({requests} requests): {}",
            started.elapsed(),
            ctl.logs()
        );
        requests += 1;
        match fetch().await {
            Ok(f) if f != first => break f,
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    };
    eprintln!(
        "renewed after {:?}, {requests} requests during the wait",
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert_ne!(renewed, first);
    let m = metrics(&ctl).await;
    assert!(
        metric_value(
            &m,
            "portcullis_acme_orders_total{issuer=\"pebble\",result=\"success\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{m}"
    );
    assert!(pebble.orders() >= 2);
}

#[tokio::test]
async fn a_renewal_window_from_ari_in_the_past_renews_at_once_replacing_the_certificate() {
    let setup = Setup::new(&[&acme_ingress("web", "ari.test", "ari-tls")]).await;
    let Issued {
        mut ctl,
        pebble,
        root,
        ..
    } = setup.issue("ari.test", |p| p.config("http-01")).await;
    let first = served(ctl.addrs.https, "ari.test").await;
    ctl.sigterm();
    ctl.wait_exit(Duration::from_secs(20)).await;
    // The next controller has another address: it starts without issuers, so that nothing is
    // ordered before Pebble's DNS points at it.
    setup.configure("");

    // The CA now suggests a window that has passed (as after an incident): renew at once.
    let stored = std::fs::read_to_string(setup.state.path().join("certificates/shop_ari-tls.json"))
        .expect("the stored certificate");
    let chain = serde_json::from_str::<serde_json::Value>(&stored).unwrap()["chain"]
        .as_str()
        .unwrap()
        .to_string();
    let window =
        r#"{"suggestedWindow":{"start":"2026-01-01T00:00:00Z","end":"2026-01-01T01:00:00Z"}}"#;
    let body = serde_json::json!({"certificate": chain, "ariResponse": window}).to_string();
    let url = format!("https://{}/set-renewal-info/", pebble.management);
    let ca = fixture("pebble.minica.pem").display().to_string();
    let out = tools::curl(&["-f", "--cacert", &ca, "-d", &body, &url]).await;
    assert!(out.success, "set-renewal-info: {}", out.stderr);

    let ctl = setup.controller().await;
    // Without issuers nothing is ordered, yet the stored certificate is served from the very first
    // configuration on.
    assert!(
        ctl.log_line(&["missing-secret"]).is_none(),
        "{}",
        ctl.logs()
    );
    assert_eq!(served(ctl.addrs.https, "ari.test").await, first);
    pebble.resolve_all(ctl.addrs.ip).await;
    setup.configure(&pebble.config("http-01"));
    eventually("the replacement certificate", ISSUED, async || {
        if served(ctl.addrs.https, "ari.test").await == first {
            return Err(format!("still the first certificate; log:\n{}", ctl.logs()));
        }
        verified(&ctl, "ari.test", &root).await
    })
    .await;
    assert_eq!(pebble.orders(), 2);
}

#[tokio::test]
async fn a_failing_validation_is_reported_and_backs_off() {
    let setup = Setup::new(&[&acme_ingress("web", "elsewhere.test", "elsewhere-tls")]).await;
    let ctl = setup.controller().await;
    let pebble = Pebble::start(ctl.addrs.ip, controller::HTTP_PORT, controller::HTTPS_PORT).await;
    // Nothing listens there: the validator's connection is refused.
    pebble.resolve("elsewhere.test", "127.255.255.254").await;
    setup.configure(&pebble.config("http-01"));

    let line = order_log(&ctl, &["ACME order failed", "validation"]).await;
    assert!(
        line.contains("elsewhere.test"),
        "the CA's detail names the host: {line}"
    );
    assert!(line.contains("shop/elsewhere-tls"), "{line}");
    let m = metrics(&ctl).await;
    assert_eq!(
        metric_value(
            &m,
            "portcullis_acme_order_failures_total{issuer=\"pebble\",step=\"validation\"}"
        ),
        Some(1.0),
        "{m}"
    );
    // The next attempt waits about a minute (with jitter), not a tight loop.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(pebble.orders(), 1, "one order in 10 s: {}", pebble.log());
}

#[tokio::test]
async fn wildcards_and_cert_manager_ingresses_are_reported_and_not_ordered() {
    let mixed = IngressBuilder::new(NS, "mixed")
        .route(Some("ok.test"), "app")
        .tls(&["*.wild.test"], "wild-tls")
        .tls(&["ok.test"], "ok-tls")
        .annotation("portcullis.io/acme", "true")
        .build();
    let cert_manager = IngressBuilder::new(NS, "theirs")
        .route(Some("theirs.test"), "app")
        .tls(&["theirs.test"], "theirs-tls")
        .annotation("portcullis.io/acme", "true")
        .annotation("cert-manager.io/cluster-issuer", "letsencrypt")
        .build();
    let setup = Setup::new(&[&mixed, &cert_manager]).await;
    // The rest of the Ingress is ordered.
    let Issued { ctl, pebble, .. } = setup.issue("ok.test", |p| p.config("http-01")).await;
    let wildcard = order_log(&ctl, &["acme-not-ordered", "*.wild.test"]).await;
    assert!(wildcard.contains("shop/mixed"), "{wildcard}");
    let theirs = order_log(&ctl, &["acme-not-ordered", "cert-manager"]).await;
    assert!(theirs.contains("shop/theirs"), "{theirs}");
    let problems = tools::problems_metric(ctl.addrs.admin).await;
    assert_eq!(problems.get("acme-not-ordered"), Some(&2));
    assert_eq!(
        problems.get("missing-secret"),
        Some(&2),
        "the Secrets not ordered for are reported missing like any other (cert-manager's is to come)"
    );
    assert_eq!(pebble.orders(), 1, "only ok.test");
}

/// A CA that requires external account binding (ZeroSSL, Google, private CAs): the account is
/// created with the key id from the issuer and the HMAC key from a Secret in the manifests.
#[tokio::test]
async fn external_account_binding_takes_the_hmac_key_from_a_secret_in_the_manifests() {
    // The form CAs hand HMAC keys out in: base64url without padding.
    const HMAC: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let setup = Setup::new(&[&acme_ingress("web", "shop.test", "shop-tls")]).await;
    let secret = manifests::opaque_secret(NS, "eab", &[("hmac-key", HMAC)]);
    setup.dir.write("eab.yaml", &[&secret]);
    let ctl = setup.controller().await;
    let pebble = Pebble::start_with(
        ctl.addrs.ip,
        controller::HTTP_PORT,
        controller::HTTPS_PORT,
        serde_json::json!({
            "externalAccountBindingRequired": true,
            "externalAccountMACKeys": {"kid-1": HMAC},
        }),
    )
    .await;
    let root = pebble.root().await;
    let eab =
        format!("      external-account-binding: {{key-id: kid-1, hmac-key-secret: {NS}/eab}}\n");
    // Without the binding, the CA refuses the account: the failure names the step.
    setup.configure(&pebble.config("http-01"));
    order_log(&ctl, &["ACME order failed", "account"]).await;
    assert!(verified(&ctl, "shop.test", &root).await.is_err());

    // A restart retries at once (the failure's backoff is in memory only).
    let mut ctl = ctl;
    ctl.sigterm();
    ctl.wait_exit(Duration::from_secs(20)).await;
    setup.configure(&(pebble.config("http-01") + &eab));
    let ctl = setup.controller().await;
    pebble.resolve_all(ctl.addrs.ip).await;
    eventually(
        "a certificate through the bound account",
        ISSUED,
        async || verified(&ctl, "shop.test", &root).await,
    )
    .await;
}

#[tokio::test]
async fn a_bad_acme_section_is_refused_at_start_with_exit_code_2() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "acme:\n  default-issuer: pebble\n  issuers:\n    pebble:\n      directory: https://ca.test/dir\n      challenge: dns-01\n",
    )
    .unwrap();
    let manifests = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("--manifests")
        .arg(manifests.path())
        .arg("--config")
        .arg(&config)
        .args(["--https-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .output()
        .expect("run portcullis");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config.yaml") && stderr.contains("dns-01"),
        "{stderr}"
    );
}
