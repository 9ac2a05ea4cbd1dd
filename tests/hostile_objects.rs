//! Hostile or broken objects, and secrets hygiene, against the real binary in manifest mode.
//!
//! The corpus in `tests/hostile_objects/` holds one malformed thing per file (Ingresses, Secrets,
//! Services, EndpointSlices, broken YAML). Each file says what it is on its first line and which
//! problem kinds may report it on its second (`# expect: kind[,kind]`, or `none` for objects that must
//! simply be served). Certificates are made by the test and put in place of `${…}` markers, so no
//! private key is committed.
//!
//! While the files are applied one by one to a controller that serves `good.test`, a checker keeps
//! requesting `https://good.test/` and verifies the certificate: nothing may be lost, the process must
//! not crash, each file must be reported in a log line naming it, and memory must stay bounded.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::client::{self, TlsClient, try_http_send};
use support::controller::base64;
use support::manifests::{self, ErasedObject};
use support::pki::hex;
use support::wait::{LIVE, eventually};
use support::*;

const NS: &str = "web";
const GOOD: &str = "good.test";
/// RSS the controller may gain over its baseline while the corpus is applied.
const RSS_BUDGET_KIB: u64 = 256 * 1024;

/// A certificate and its key, as PEM, and the leaf as DER.
struct Made {
    crt: String,
    key: String,
    der: Vec<u8>,
}

/// A date as (year, month, day).
type Ymd = (i32, u8, u8);

fn make(names: &[&str], validity: Option<(Ymd, Ymd)>, ca: bool) -> Made {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("certificate params");
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().copied().unwrap_or("hostile CA"),
    );
    if let Some(((y1, m1, d1), (y2, m2, d2))) = validity {
        params.not_before = rcgen::date_time_ymd(y1, m1, d1);
        params.not_after = rcgen::date_time_ymd(y2, m2, d2);
    }
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("certificate");
    Made {
        crt: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// The certificates the corpus refers to by name, made on first use.
#[derive(Default)]
struct Certs {
    made: HashMap<String, Made>,
}

impl Certs {
    fn get(&mut self, name: &str) -> &Made {
        self.made
            .entry(name.to_string())
            .or_insert_with(|| match name {
                "expired" => make(
                    &["cert-expired.test"],
                    Some(((2000, 1, 1), (2001, 1, 1))),
                    false,
                ),
                "future" => make(
                    &["cert-future.test"],
                    Some(((2090, 1, 1), (2091, 1, 1))),
                    false,
                ),
                "otherhost" => make(&["other.example"], None, false),
                "ca" => make(&["cert-ca.test"], None, true),
                other => make(&[&format!("cert-{other}.test")], None, false),
            })
    }

    fn keys(&self) -> Vec<String> {
        self.made.values().map(|m| m.key.clone()).collect()
    }
}

/// Replaces the `${…}` markers of a corpus file.
fn substitute(text: &str, certs: &mut Certs) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closed marker") + start;
        let marker = &rest[start + 2..end];
        let (what, name) = marker.split_once(':').unwrap_or((marker, ""));
        let value: Vec<u8> = match what {
            "CRT" => certs.get(name).crt.clone().into_bytes(),
            "KEY" => certs.get(name).key.clone().into_bytes(),
            "DER" => certs.get(name).der.clone(),
            "TRUNCATED_CRT" => {
                let crt = &certs.get(name).crt;
                crt.as_bytes()[..crt.len() / 2].to_vec()
            }
            "CHAIN_REVERSED" => {
                let ca = certs.get("ca").crt.clone();
                format!("{ca}{}", certs.get(name).crt).into_bytes()
            }
            "ENCRYPTED_KEY" => {
                let body: String = (0..20)
                    .map(|i| format!("{}\n", base64(&[i as u8; 48])))
                    .collect();
                format!("-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}-----END ENCRYPTED PRIVATE KEY-----\n")
                    .into_bytes()
            }
            "HUGE" => {
                let mut junk = b"-----BEGIN CERTIFICATE-----\n".to_vec();
                junk.extend(std::iter::repeat_n(b'Q', 4 << 20));
                junk
            }
            other => panic!("unknown marker {other}"),
        };
        out.push_str(&base64(&value));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The `# expect:` kinds of a corpus file (empty for `none`).
fn expected(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .expect("every corpus file has an expect line")
        .trim()
        .to_string();
    if line == "none" {
        return Vec::new();
    }
    line.split(',').map(|s| s.trim().to_string()).collect()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn alive(ctl: &Controller) -> bool {
    Path::new(&format!("/proc/{}/status", ctl.pid())).exists()
        && !std::fs::read_to_string(format!("/proc/{}/status", ctl.pid()))
            .unwrap_or_default()
            .contains("State:\tZ")
}

/// Writes `bytes` to `name` in the manifest directory atomically (temporary file, then rename).
fn put(dir: &ManifestDir, name: &str, bytes: &[u8]) {
    let temp = dir.file(&format!(".{name}.tmp"));
    std::fs::write(&temp, bytes).expect("write");
    std::fs::rename(&temp, dir.file(name)).expect("rename");
}

/// Keeps requesting `https://good.test/` with SNI, checking the certificate, until stopped.
struct Checker {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl Checker {
    fn start(ctl: &Controller, fingerprint: String) -> Checker {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let (addr, http) = (ctl.addrs.https, ctl.addrs.http);
        let (s, o) = (stop.clone(), ok.clone());
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            let started = Instant::now();
            // Bounded: at most ten minutes, whatever happens.
            while !s.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(600) {
                let check = async {
                    let conn = TlsClient::new().sni(GOOD).connect(addr).await?;
                    if conn.fingerprint() != fingerprint {
                        return Err("another certificate was served for good.test".to_string());
                    }
                    let resp = conn
                        .http()
                        .await
                        .try_send(request("GET", GOOD, "/"))
                        .await?;
                    if resp.status != 200 {
                        return Err(format!("https status {}", resp.status));
                    }
                    let plain = try_http_send(http, request("GET", GOOD, "/")).await?;
                    if plain.status != 308 {
                        return Err(format!("plain HTTP status {}", plain.status));
                    }
                    Ok(())
                };
                match check.await {
                    Ok(()) => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(format!("{:?}: {e}", started.elapsed())),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failures
        });
        Checker { stop, ok, task }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.task.await.expect("checker");
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// Waits for configuration generation `n`, allowing for a loaded machine and a debug build parsing
/// megabytes of YAML.
async fn wait_generation(ctl: &Controller, n: u64) {
    eventually(
        &format!("configuration generation {n}"),
        Duration::from_secs(30),
        async || match ctl.generation() {
            g if g >= n => Ok(()),
            g => Err(format!("generation {g} is live")),
        },
    )
    .await
}

/// The log lines at WARN or above that name `file`.
fn problem_lines(ctl: &Controller, file: &str) -> Vec<String> {
    ctl.logs()
        .lines()
        .filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && l.contains(file))
        .map(|l| l.chars().take(600).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_of_broken_objects_never_costs_a_served_route_or_certificate() {
    let dir = ManifestDir::new();
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let svc = manifests::service_with_endpoints(NS, "app", 80, Some("http"), &[echo.addr()], true);
    dir.write("base-svc.yaml", &svc.objects());
    let good = TestCert::self_signed(&[GOOD]);
    dir.write(
        "base-secret.yaml",
        &[&manifests::tls_secret(NS, "good-tls", &good)],
    );
    let ingress = IngressBuilder::new(NS, "good")
        .created("2020-01-01T00:00:00Z")
        .tls(&[GOOD], "good-tls")
        .route(Some(GOOD), "app")
        .build();
    dir.write("base-ingress.yaml", &[&ingress]);
    let ctl = Controller::start(dir.path(), &[]).await;
    eventually("good.test served over HTTPS", LIVE, async || {
        let conn = TlsClient::new().sni(GOOD).connect(ctl.addrs.https).await?;
        let resp = conn
            .http()
            .await
            .try_send(request("GET", GOOD, "/"))
            .await?;
        (resp.status == 200)
            .then_some(())
            .ok_or(format!("status {}", resp.status))
    })
    .await;
    let checker = Checker::start(&ctl, good.fingerprint());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss_kib(ctl.pid());
    let mut peak = baseline;

    let corpus_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile_objects");
    let mut corpus: Vec<_> = std::fs::read_dir(&corpus_dir)
        .expect("the corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    corpus.sort();
    assert!(corpus.len() >= 50, "the corpus has {} files", corpus.len());

    let mut certs = Certs::default();
    let mut contents = Vec::new();
    let mut report = Vec::new();
    for path in &corpus {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let raw = std::fs::read(path).expect("read a corpus file");
        let expect = expected(&raw);
        let bytes = match std::str::from_utf8(&raw) {
            Ok(text) => substitute(text, &mut certs).into_bytes(),
            Err(_) => raw.clone(),
        };
        let generation = ctl.generation();
        put(&dir, &name, &bytes);
        wait_generation(&ctl, generation + 1).await;
        let file = dir.file(&name).display().to_string();
        if expect.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let lines = problem_lines(&ctl, &file);
            assert!(
                lines.is_empty(),
                "{name}: reported although valid: {lines:#?}"
            );
        } else {
            let lines = eventually(
                &format!("a problem report naming {name}"),
                LIVE,
                async || {
                    let lines = problem_lines(&ctl, &file);
                    match lines
                        .iter()
                        .any(|l| expect.iter().any(|k| l.contains(k.as_str())))
                    {
                        true => Ok(lines),
                        false => Err(format!("expected {expect:?}, lines: {lines:#?}")),
                    }
                },
            )
            .await;
            assert!(
                lines.len() <= 8,
                "{name}: {} problem lines, expected a few: {lines:#?}",
                lines.len()
            );
            report.push(format!("{name}: {}", lines[0]));
        }
        assert!(alive(&ctl), "the controller died on {name}");
        peak = peak.max(rss_kib(ctl.pid()));
        assert!(
            peak < baseline + RSS_BUDGET_KIB,
            "{name}: RSS {peak} KiB, baseline {baseline} KiB"
        );
        let generation = ctl.generation();
        dir.remove(&name);
        wait_generation(&ctl, generation + 1).await;
        contents.push((name, bytes));
    }

    // Objects that must still work while broken ones are around.
    let generation = ctl.generation();
    for (name, bytes) in &contents {
        put(&dir, name, bytes);
    }
    wait_generation(&ctl, generation + 1).await;
    // Reading and parsing all of it (4 MiB Secrets, 20,000 levels of nesting) takes a debug build a
    // few seconds.
    eventually(
        "the whole corpus at once to be read",
        Duration::from_secs(30),
        async || {
            let lines = problem_lines(&ctl, "yaml-syntax-error.yaml");
            (lines.len() >= 2)
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    let started = Instant::now();
    let resp = client::http_send(
        ctl.addrs.http,
        request(
            "GET",
            "regex-catastrophic.test",
            &format!("/{}!", "a".repeat(4000)),
        ),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a pathological path against (a+)+$ took {:?}",
        started.elapsed()
    );
    // Not matched; the corpus's broken default backend answers it (503).
    assert_ne!(
        resp.status, 200,
        "(a+)+$ does not match a path ending in '!'"
    );
    let resp = client::http_send(
        ctl.addrs.http,
        request("GET", "regex-catastrophic.test", "/aaaa"),
    )
    .await;
    assert_eq!(
        resp.status, 200,
        "the catastrophic-looking regex route is served"
    );
    assert_eq!(
        client::http_send(ctl.addrs.http, request("GET", "rewrite.test", "/x"))
            .await
            .status,
        200
    );
    peak = peak.max(rss_kib(ctl.pid()));

    // Files too large to read, and a large one that is read.
    let huge = dir.file("huge.yaml");
    {
        let f = std::fs::File::create(dir.file(".huge.yaml.tmp")).expect("huge file");
        f.set_len(70 << 20).expect("70 MiB");
    }
    std::fs::rename(dir.file(".huge.yaml.tmp"), &huge).expect("rename");
    eventually("the 70 MiB file to be refused", LIVE, async || {
        let lines = problem_lines(&ctl, "huge.yaml");
        lines
            .iter()
            .any(|l| l.contains("allowed"))
            .then_some(())
            .ok_or(format!("{lines:?}"))
    })
    .await;
    // 16 MiB of YAML, ending in a broken object so the test sees when it has been read.
    let mut big = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata:\n");
    while big.len() < 16 << 20 {
        big.push_str(&format!("  k{}: {}\n", big.len(), "v".repeat(1000)));
    }
    big.push_str(
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: big-marker}\nspec: {ports: 1}\n",
    );
    let started = Instant::now();
    put(&dir, "big.yaml", big.as_bytes());
    drop(big);
    eventually(
        "the 16 MiB file to be read",
        Duration::from_secs(60),
        async || {
            peak = peak.max(rss_kib(ctl.pid()));
            let lines = problem_lines(&ctl, "big.yaml");
            (!lines.is_empty())
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    eprintln!("a 16 MiB manifest was read in {:?}", started.elapsed());
    peak = peak.max(rss_kib(ctl.pid()));

    // The served objects themselves turn bad: the last good version stays.
    let generation = ctl.generation();
    dir.write(
        "base-secret.yaml",
        &[&manifests::tls_secret_raw(
            NS, "good-tls", "garbage", "garbage",
        )],
    );
    wait_generation(&ctl, generation + 1).await;
    let generation = ctl.generation();
    dir.write_raw(
        "base-ingress.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: [broken\n",
    );
    wait_generation(&ctl, generation + 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (ok, failures) = checker.finish().await;
    peak = peak.max(rss_kib(ctl.pid()));
    eprintln!(
        "{} corpus files; {ok} checks of good.test passed; RSS baseline {baseline} KiB, peak {peak} KiB\n{}",
        corpus.len(),
        report.join("\n")
    );
    assert!(
        failures.is_empty(),
        "good.test was not served: {failures:#?}"
    );
    assert!(ok >= 50, "only {ok} checks ran");
    assert!(alive(&ctl));
    let mut keys = certs.keys();
    keys.extend(dir.private_keys());
    ctl.assert_no_key_material(&keys);
    drop(echo);
}

// ---------------------------------------------------------------------------------------------
// Secrets hygiene

/// Every encoding of `key_pem` a leak could take: windows of the PEM body, of the base64 of the whole
/// PEM (a Secret's `data`), and of the hex of the DER, in both cases.
///
/// A key's DER shares bytes with public data (algorithm identifiers; PKCS#8 and SEC1 EC keys embed
/// the public key), so a window that also occurs in the same encoding of a certificate in `public`
/// proves nothing and is skipped.
fn leak_in(haystack: &str, key_pem: &str, public: &[String]) -> Option<String> {
    let encodings = |pem: &str| -> [String; 4] {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = decode_base64(&body);
        [
            body,
            base64(pem.as_bytes()),
            hex(&der),
            hex(&der).to_ascii_uppercase(),
        ]
    };
    let public: Vec<[String; 4]> = public.iter().map(|p| encodings(p)).collect();
    for (i, encoded) in encodings(key_pem).iter().enumerate() {
        for start in (0..encoded.len().saturating_sub(24)).step_by(8) {
            let window = &encoded[start..start + 24];
            if haystack.contains(window) && !public.iter().any(|p| p[i].contains(window)) {
                return Some(window.to_string());
            }
        }
    }
    None
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let Some(v) = ALPHABET.iter().position(|&a| a == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Keys in several formats, and broken pairs, for one controller.
fn hygiene_objects(dir: &ManifestDir) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::new();
    let mut public = Vec::new();
    let mut ingress = IngressBuilder::new(NS, "hygiene").created("2020-01-01T00:00:00Z");
    let pairs: Vec<(&str, String, String)> = {
        let ec = TestCert::self_signed(&["ec.hygiene.test"]);
        let rsa = TestCert::self_signed_with(&["rsa.hygiene.test"], &rcgen::PKCS_RSA_SHA256);
        let chain = TestCert::ca_signed(&["chain.hygiene.test"], &rcgen::PKCS_ECDSA_P384_SHA384);
        let ed = TestCert::self_signed_with(&["ed.hygiene.test"], &rcgen::PKCS_ED25519);
        let other = TestCert::self_signed(&["mismatch.hygiene.test"]);
        let truncated_key = ec.key_pem[..ec.key_pem.len() * 2 / 3].to_string();
        let starred_key = rsa.key_pem.replace('A', "*");
        vec![
            ("ec", ec.chain_pem.clone(), ec.key_pem.clone()),
            ("rsa", rsa.chain_pem.clone(), rsa.key_pem.clone()),
            ("chain", chain.chain_pem.clone(), chain.key_pem.clone()),
            ("ed", ed.chain_pem.clone(), ed.key_pem.clone()),
            ("mismatch", other.chain_pem.clone(), ec.key_pem.clone()),
            ("truncated", ec.chain_pem.clone(), truncated_key),
            ("starred", rsa.chain_pem.clone(), starred_key),
            ("key-as-cert", ec.key_pem.clone(), ec.key_pem.clone()),
        ]
    };
    for (name, crt, key) in &pairs {
        keys.push(key.clone());
        public.push(crt.clone());
        let secret = manifests::tls_secret_raw(NS, &format!("{name}-tls"), crt, key);
        dir.write(
            &format!("secret-{name}.yaml"),
            &[&secret as &dyn ErasedObject],
        );
        let host = format!("{name}.hygiene.test");
        ingress = ingress
            .tls(&[&host], &format!("{name}-tls"))
            .route(Some(&host), "app");
    }
    // A Secret of the wrong type and one that is not even YAML, with key material inside.
    let opaque = TestCert::self_signed(&["opaque.hygiene.test"]);
    keys.push(opaque.key_pem.clone());
    public.push(opaque.chain_pem.clone());
    let mut secret = manifests::tls_secret(NS, "opaque-tls", &opaque);
    secret.type_ = Some("Opaque".into());
    dir.write("secret-opaque.yaml", &[&secret as &dyn ErasedObject]);
    ingress = ingress
        .tls(&["opaque.hygiene.test"], "opaque-tls")
        .route(Some("opaque.hygiene.test"), "app");
    let broken = TestCert::self_signed(&["broken.hygiene.test"]);
    keys.push(broken.key_pem.clone());
    public.push(broken.chain_pem.clone());
    dir.write_raw(
        "secret-broken-yaml.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: [broken\ndata:\n  tls.key: {}\nstringData:\n  tls.key: |\n{}",
            base64(broken.key_pem.as_bytes()),
            broken.key_pem.lines().map(|l| format!("    {l}\n")).collect::<String>()
        ),
    );
    dir.write("ingress.yaml", &[&ingress.build()]);
    (keys, public)
}

async fn hygiene_run(format: &str) {
    let dir = ManifestDir::new();
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let svc = manifests::service_with_endpoints(NS, "app", 80, Some("http"), &[echo.addr()], true);
    dir.write("svc.yaml", &svc.objects());
    let (keys, public) = hygiene_objects(&dir);
    let ctl = Controller::start(
        dir.path(),
        &[
            "--log-format",
            format,
            "--log-level",
            "debug",
            "--access-log",
        ],
    )
    .await;
    // Requests and handshakes of every kind, so every log path runs.
    for host in [
        "ec",
        "rsa",
        "chain",
        "ed",
        "mismatch",
        "truncated",
        "opaque",
    ] {
        let host = format!("{host}.hygiene.test");
        if let Ok(conn) = TlsClient::new().sni(&host).connect(ctl.addrs.https).await {
            let _ = conn.http().await.try_send(request("GET", &host, "/")).await;
        }
        let _ = try_http_send(ctl.addrs.http, request("GET", &host, "/")).await;
    }
    eventually("the problems to be reported", LIVE, async || {
        let logs = ctl.logs();
        (logs.contains("key-mismatch") && logs.contains("invalid-certificate"))
            .then_some(())
            .ok_or("not yet".to_string())
    })
    .await;
    let metrics = try_http_send(ctl.addrs.admin, request("GET", "admin", "/metrics"))
        .await
        .expect("/metrics")
        .text();
    assert!(metrics.contains("portcullis_"), "metrics: {metrics}");
    let logs = ctl.logs();
    for (what, text) in [("log", &logs), ("metrics", &metrics)] {
        assert!(
            !text.contains("PRIVATE KEY"),
            "a key PEM marker in the {what} ({format})"
        );
        for key in &keys {
            if let Some(window) = leak_in(text, key, &public) {
                panic!("key material {window:?} in the {what} ({format} logs):\n{text}");
            }
        }
    }
    if format == "json" {
        for line in logs.lines().filter(|l| l.starts_with('{')) {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("a JSON log line that is not JSON ({e}): {line}"));
        }
    }
}

#[tokio::test]
async fn no_key_material_in_text_logs_problems_or_metrics() {
    hygiene_run("text").await;
}

#[tokio::test]
async fn no_key_material_in_json_logs_problems_or_metrics() {
    hygiene_run("json").await;
}

#[test]
fn debug_output_of_key_holding_types_is_redacted() {
    use portcullis::model::{BuildOptions, Object, Snapshot, build};
    use portcullis::settings::Settings;
    use portcullis::tls::{CertStore, generate_default_cert};

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cert = TestCert::self_signed(&["debug.test"]);
    let rsa = TestCert::self_signed_with(&["rsa.debug.test"], &rcgen::PKCS_RSA_SHA256);
    let keys = [cert.key_pem.clone(), rsa.key_pem.clone()];
    let public = [cert.chain_pem.clone(), rsa.chain_pem.clone()];

    let loaded = portcullis::tls::certs::load_pem(
        cert.chain_pem.as_bytes(),
        cert.key_pem.as_bytes(),
        &provider,
    )
    .expect("a good pair");
    let mut outputs = vec![
        ("LoadedCert", format!("{loaded:?}")),
        ("LoadedCert (pretty)", format!("{loaded:#?}")),
        ("CertifiedKey", format!("{:?}", loaded.key)),
        ("signing key", format!("{:?}", loaded.key.key)),
    ];
    let err = portcullis::tls::certs::load_pem(
        cert.chain_pem.as_bytes(),
        rsa.key_pem.as_bytes(),
        &provider,
    )
    .expect_err("a mismatched pair");
    outputs.push(("CertError", format!("{err:?} / {err}")));

    let mut snapshot = Snapshot::default();
    for (name, c) in [("a", &cert), ("b", &rsa)] {
        snapshot.push(Object::Secret(Arc::new(manifests::tls_secret(NS, name, c))));
    }
    snapshot.push(Object::Ingress(Arc::new(
        IngressBuilder::new(NS, "i")
            .tls(&["debug.test"], "a")
            .tls(&["rsa.debug.test"], "b")
            .route(Some("debug.test"), "app")
            .build(),
    )));
    let options = BuildOptions {
        ingress_class: "portcullis".into(),
        watch_without_class: false,
        default_cert: generate_default_cert(&provider).expect("default certificate"),
        settings: Arc::new(Settings::default()),
    };
    let mut store = CertStore::new(provider.clone());
    let config = build(&snapshot, &options, &mut store, 1_800_000_000, 1);
    assert_eq!(
        config.certs.len(),
        2,
        "both certificates load: {:?}",
        config.problems
    );
    let load = store.load(
        &portcullis::model::NamespacedName::new(NS, "a"),
        &manifests::tls_secret(NS, "a", &cert),
    );
    outputs.push(("CertLoad", format!("{load:?}")));
    outputs.push(("Config", format!("{config:?}")));
    outputs.push(("CertTable", format!("{:?}", config.certs)));
    outputs.push(("Problems", format!("{:?}", config.problems)));
    for (what, text) in &outputs {
        assert!(!text.contains("PRIVATE KEY"), "{what}: {text}");
        for key in &keys {
            if let Some(window) = leak_in(text, key, &public) {
                panic!("{what} Debug output holds key material {window:?}: {text}");
            }
        }
    }
}
