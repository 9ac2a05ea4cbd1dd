//! The HTTPS listener as an outside auditor sees it: testssl.sh (Debian's `testssl.sh`) scans the real
//! binary in manifest mode, and `openssl s_client` checks the server's cipher choice and each kind of
//! session resumption. Neither tool shares code with rustls.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::manifests::{self, tls_secret};
use support::*;

const NS: &str = "web";
/// A host with an RSA 2048 certificate (what most users have) and HSTS as configured by default.
const AUDITED: &str = "audit.test";
/// A host whose Ingress switches HSTS off.
const NO_HSTS: &str = "nohsts.test";
/// A host with an ECDSA P-256 certificate, for the TLS 1.2 ECDSA suites.
const ECDSA: &str = "ecdsa.test";

/// testssl's sections that must hold nothing "NOT ok" or "VULNERABLE": JSON key and text heading, as
/// testssl 3.0 (Debian 12) names them.
const AUDITED_SECTIONS: &[(&str, &str)] = &[
    ("protocols", "Testing protocols"),
    ("ciphers", "Testing cipher categories"),
    ("pfs", "Testing robust"),
    ("serverPreferences", "Testing server preferences"),
    ("vulnerabilities", "Testing vulnerabilities"),
];

/// A controller serving the three hosts from one echo backend, and the backend.
async fn audited_controller(dir: &ManifestDir) -> (Controller, EchoServer) {
    let app = manifests::echo_service(dir, NS, "app").await;
    let rsa = TestCert::self_signed_with(&[AUDITED, NO_HSTS], &rcgen::PKCS_RSA_SHA256);
    dir.write("secret-rsa.yaml", &[&tls_secret(NS, "rsa", &rsa)]);
    dir.remember_key(&rsa.key_pem);
    manifests::certificate_file(dir, NS, "ecdsa", &[ECDSA]);
    let ingress = |name: &str, host: &str, secret: &str| {
        IngressBuilder::new(NS, name)
            .tls(&[host], secret)
            .route(Some(host), "app")
    };
    dir.write(
        "ingresses.yaml",
        &[
            &ingress("audit", AUDITED, "rsa").build(),
            &ingress("nohsts", NO_HSTS, "rsa")
                .annotation("portcullis.io/hsts", "false")
                .build(),
            &ingress("ecdsa", ECDSA, "ecdsa").build(),
        ],
    );
    let ctl = Controller::start(dir.path(), &[]).await;
    (ctl, app)
}

/// What one testssl run reported: its text and its structured (`--jsonfile-pretty`) findings.
struct Report {
    text: String,
    json: Value,
}

impl Report {
    /// The findings of one section (`protocols`, `headerResponse`, ...) of the scan.
    fn findings(&self, section: &str) -> &[Value] {
        self.json["scanResult"][0][section]
            .as_array()
            .map_or(&[], Vec::as_slice)
    }

    /// The severity and text of finding `id` in `section`.
    fn finding(&self, section: &str, id: &str) -> Option<(&str, &str)> {
        let f = self.findings(section).iter().find(|f| f["id"] == id)?;
        Some((f["severity"].as_str()?, f["finding"].as_str()?))
    }

    /// The text of the section whose heading starts with `heading`, up to the next heading.
    fn section_text(&self, heading: &str) -> Option<String> {
        let mut lines = self
            .text
            .lines()
            .skip_while(|l| !l.trim().starts_with(heading));
        let first = lines.next()?;
        let rest: Vec<&str> = lines
            .take_while(|l| !l.starts_with(" Testing ") && !l.starts_with(" Running "))
            .collect();
        Some(format!("{first}\n{}", rest.join("\n")))
    }
}

/// Runs testssl.sh with `checks` against `host` on the controller's HTTPS address: no DNS, no
/// outside servers, the host given as SNI and `Host`, the address given directly.
async fn testssl(ctl: &Controller, host: &str, checks: &[&str]) -> Report {
    let dir = tempfile::tempdir().expect("temp dir for testssl's report");
    let json_path = dir.path().join("report.json");
    let mut args: Vec<String> = [
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "off",
        "--connect-timeout",
        "5",
        "--openssl-timeout",
        "5",
        "--nodns",
        "none",
        "--ip",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.push(ctl.addrs.ip.to_string());
    args.extend(checks.iter().map(|c| c.to_string()));
    args.push("--jsonfile-pretty".into());
    args.push(json_path.display().to_string());
    args.push(format!("{host}:{}", ctl.addrs.https.port()));
    let out = tools::run("testssl", &args, Duration::from_secs(400)).await;
    let json = std::fs::read_to_string(&json_path).unwrap_or_else(|e| {
        panic!(
            "testssl wrote no report ({e}); stdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        )
    });
    let json = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("testssl's JSON report does not parse: {e}\n{json}"));
    Report {
        text: out.stdout,
        json,
    }
}

#[tokio::test]
async fn testssl_finds_nothing_not_ok_or_vulnerable_and_sees_hsts_where_configured() {
    let dir = ManifestDir::new();
    let (ctl, _app) = audited_controller(&dir).await;
    let started = Instant::now();
    let (full, without_hsts) = tokio::join!(
        testssl(&ctl, AUDITED, &["-p", "-s", "-f", "-P", "-U", "-h"]),
        testssl(&ctl, NO_HSTS, &["-h"]),
    );
    // Shown when the test fails or runs with --nocapture: the report the assertions below read.
    eprintln!("testssl took {:?}:\n{}", started.elapsed(), full.text);

    for (key, heading) in AUDITED_SECTIONS {
        let text = full.section_text(heading).unwrap_or_else(|| {
            panic!("no section {heading:?} in testssl's report:\n{}", full.text)
        });
        for flag in ["NOT ok", "VULNERABLE"] {
            assert!(!text.contains(flag), "testssl: {text}");
        }
        let findings = full.findings(key);
        assert!(
            findings.len() >= 3,
            "testssl's {key} section is (almost) empty: {findings:?}"
        );
        // WARN is a check testssl could not make; it must not pass as a clean result.
        let bad: Vec<&Value> = findings
            .iter()
            .filter(|f| {
                matches!(
                    f["severity"].as_str(),
                    Some("MEDIUM" | "HIGH" | "CRITICAL" | "WARN")
                )
            })
            .collect();
        assert!(bad.is_empty(), "testssl's {key} findings: {bad:#?}\n{text}");
    }
    let order = full.finding("serverPreferences", "cipher_order");
    assert_eq!(
        order.map(|(severity, _)| severity),
        Some("OK"),
        "the server chooses the cipher suite: {order:?}"
    );
    for (protocol, offered) in [
        ("SSLv2", false),
        ("SSLv3", false),
        ("TLS1", false),
        ("TLS1_1", false),
        ("TLS1_2", true),
        ("TLS1_3", true),
    ] {
        let finding = full.finding("protocols", protocol);
        assert_eq!(
            finding.is_some_and(|(_, text)| text.starts_with("offered")),
            offered,
            "{protocol}: {finding:?}"
        );
    }

    // The HTTP header section requests "/" of each host: the route answers, HSTS where configured.
    for report in [&full, &without_hsts] {
        let status = report.finding("headerResponse", "HTTP_status_code");
        assert!(
            status.is_some_and(|(_, text)| text.starts_with("200 OK")),
            "{status:?}"
        );
    }
    assert_eq!(
        full.finding("headerResponse", "HSTS_time"),
        Some(("OK", "365 days (=31536000 seconds) > 15552000 seconds")),
        "HSTS for {AUDITED}"
    );
    assert_eq!(
        full.finding("headerResponse", "HSTS_subdomains"),
        Some(("OK", "includes subdomains"))
    );
    assert_eq!(
        without_hsts.finding("headerResponse", "HSTS"),
        Some(("LOW", "not offered")),
        "no HSTS for {NO_HSTS}"
    );
    ctl.assert_no_key_material(&dir.private_keys());
}

/// The cipher suite `openssl s_client` reports for one handshake with `flags`.
async fn negotiated(ctl: &Controller, host: &str, flags: &[&str]) -> String {
    let out = tools::s_client(ctl.addrs.https, host, flags).await;
    out.stdout
        .lines()
        .find_map(|l| {
            l.split_once("Cipher is ")
                .map(|(_, c)| c.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no handshake with {flags:?}: {out:?}"))
}

#[tokio::test]
async fn the_server_picks_the_strongest_suite_the_client_offers_whatever_its_order() {
    let dir = ManifestDir::new();
    let (ctl, _app) = audited_controller(&dir).await;
    for (host, kind) in [(AUDITED, "RSA"), (ECDSA, "ECDSA")] {
        let weakest_first = format!(
            "ECDHE-{kind}-AES128-GCM-SHA256:ECDHE-{kind}-CHACHA20-POLY1305:ECDHE-{kind}-AES256-GCM-SHA384"
        );
        assert_eq!(
            negotiated(&ctl, host, &["-tls1_2", "-cipher", &weakest_first]).await,
            format!("ECDHE-{kind}-AES256-GCM-SHA384")
        );
        let without_aes256 =
            format!("ECDHE-{kind}-AES128-GCM-SHA256:ECDHE-{kind}-CHACHA20-POLY1305");
        assert_eq!(
            negotiated(&ctl, host, &["-tls1_2", "-cipher", &without_aes256]).await,
            format!("ECDHE-{kind}-CHACHA20-POLY1305")
        );
    }
    for (offer, chosen) in [
        (
            "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384",
            "TLS_AES_256_GCM_SHA384",
        ),
        (
            "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256",
            "TLS_CHACHA20_POLY1305_SHA256",
        ),
    ] {
        assert_eq!(
            negotiated(&ctl, AUDITED, &["-tls1_3", "-ciphersuites", offer]).await,
            chosen
        );
    }
    ctl.assert_no_key_material(&dir.private_keys());
}

/// One `openssl s_client` connection with `flags` that sends a request for `/` and reads the whole
/// answer (so TLS 1.3 session tickets, sent after the handshake, arrive); its stdout.
async fn session(ctl: &Controller, flags: &[&str]) -> String {
    let mut args: Vec<String> = vec![
        "s_client".into(),
        "-connect".into(),
        ctl.addrs.https.to_string(),
        "-servername".into(),
        AUDITED.into(),
        "-ign_eof".into(),
    ];
    args.extend(flags.iter().map(|f| f.to_string()));
    let request = format!("GET / HTTP/1.1\r\nHost: {AUDITED}\r\nConnection: close\r\n\r\n");
    let out = tools::run_with_input(
        "openssl",
        &args,
        request.as_bytes(),
        Duration::from_secs(15),
    )
    .await;
    assert!(
        out.stdout.contains("HTTP/1.1 200 OK"),
        "the request over {flags:?} was not answered: {out:?}"
    );
    out.stdout
}

/// Connects twice with `version` and `flags`, saving the session the first time and offering it the
/// second; checks the first was a full handshake and the second resumed it, and returns the first
/// connection's output.
async fn resumed(ctl: &Controller, version: &str, flags: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir for the session");
    let file = dir.path().join("session.pem").display().to_string();
    let args = |save: &'static str| {
        let mut all = vec![version, save, file.as_str()];
        all.extend_from_slice(flags);
        all
    };
    let first = session(ctl, &args("-sess_out")).await;
    assert!(
        first.contains(&format!("New, {}", name(version))),
        "{first}"
    );
    let second = session(ctl, &args("-sess_in")).await;
    assert!(
        second.contains(&format!("Reused, {}", name(version))),
        "the session from the first connection is resumed: {second}"
    );
    first
}

/// `TLSv1.2` for `-tls1_2`, as s_client prints versions.
fn name(flag: &str) -> &'static str {
    match flag {
        "-tls1_2" => "TLSv1.2",
        "-tls1_3" => "TLSv1.3",
        other => panic!("unknown version flag {other}"),
    }
}

#[tokio::test]
async fn tls12_sessions_resume_by_session_id() {
    let dir = ManifestDir::new();
    let (ctl, _app) = audited_controller(&dir).await;
    // Without the ticket extension the only way back is the server's session cache.
    let first = resumed(&ctl, "-tls1_2", &["-no_ticket"]).await;
    assert!(!first.contains("TLS session ticket:"), "{first}");
    let id = first
        .lines()
        .find_map(|l| l.trim().strip_prefix("Session-ID: "))
        .unwrap_or_default();
    assert!(!id.is_empty(), "the server gave a session ID: {first}");
    ctl.assert_no_key_material(&dir.private_keys());
}

#[tokio::test]
async fn tls12_sessions_resume_by_ticket() {
    let dir = ManifestDir::new();
    let (ctl, _app) = audited_controller(&dir).await;
    let first = resumed(&ctl, "-tls1_2", &[]).await;
    assert!(
        first.contains("TLS session ticket:"),
        "the server issued a ticket: {first}"
    );
    ctl.assert_no_key_material(&dir.private_keys());
}

#[tokio::test]
async fn tls13_sessions_resume() {
    let dir = ManifestDir::new();
    let (ctl, _app) = audited_controller(&dir).await;
    resumed(&ctl, "-tls1_3", &[]).await;
    ctl.assert_no_key_material(&dir.private_keys());
}
