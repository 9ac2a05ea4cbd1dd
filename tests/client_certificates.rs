//! Client certificates (`auth-tls-*`) through the real binary in manifest mode, with a CA, client
//! certificates and a revocation list made by the `openssl` command line, `curl --cert` and
//! `openssl s_client` as clients, and an echo backend that reports the headers it received. A valid
//! certificate reaches the backend with `ssl-client-*` headers clients cannot forge; missing, expired,
//! revoked and foreign ones get 400 after the handshake, a refused subject 403; hosts without client
//! certificates are never asked for one; an unusable setting answers 503, is reported, and a fixed
//! Secret goes live without a restart.

mod support;

use std::path::PathBuf;

use k8s_openapi::api::networking::v1::Ingress;
use support::manifests;
use support::openssl::Openssl;
use support::tools;
use support::wait::LIVE;
use support::*;

const NS: &str = "shop";

/// A client-certificate PKI made with the `openssl` command line, as an operator would: `openssl ca`
/// keeps the index that revocation and the CRL need.
struct Pki(Openssl);

impl Pki {
    /// Two CAs (`ca` and `foreign`, each `<ca>.crt`, `<ca>.key`) with their own `openssl ca` database.
    fn new() -> Pki {
        let pki = Pki(Openssl::scratch());
        pki.ca("ca", "Shop Client CA");
        pki.ca("foreign", "Someone Else's CA");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    fn read(&self, name: &str) -> String {
        self.0.read(name)
    }

    fn ca(&self, name: &str, cn: &str) {
        self.0.write(
            &format!("{name}.cnf"),
            &format!(
                "[ca]\ndefault_ca = own\n[own]\ndatabase = {name}.index\nnew_certs_dir = .\nserial = {name}.serial\n\
                 crlnumber = {name}.crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\npolicy = any\n\
                 unique_subject = no\n[any]\ncommonName = supplied\n[client]\nextendedKeyUsage = clientAuth\n"
            ),
        );
        self.0.write(&format!("{name}.index"), "");
        self.0.write(&format!("{name}.serial"), "01\n");
        self.0.write(&format!("{name}.crlnumber"), "01\n");
        self.0.run(
            &format!(
                "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key -out {name}.crt -days 30"
            ),
            &[
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }

    /// A client certificate for `cn` issued by `ca` for `start`–`end` (`YYYYMMDDHHMMSSZ`).
    fn client(&self, name: &str, ca: &str, cn: &str, start: &str, end: &str) {
        self.0.run(
            &format!("req -new -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr"),
            &["-subj", &format!("/CN={cn}")],
        );
        self.0.run(
            &format!(
                "ca -batch -config {ca}.cnf -cert {ca}.crt -keyfile {ca}.key -extensions client -in {name}.csr -out {name}.crt -notext -startdate {start} -enddate {end}"
            ),
            &[],
        );
    }

    fn revoke(&self, name: &str, ca: &str) {
        self.0.run(
            &format!("ca -config {ca}.cnf -cert {ca}.crt -keyfile {ca}.key -revoke {name}.crt"),
            &[],
        );
        self.0.run(
            &format!("ca -config {ca}.cnf -cert {ca}.crt -keyfile {ca}.key -gencrl -out {ca}.crl"),
            &[],
        );
    }
}

/// A CA with clients `alice` (valid), `expired`, `revoked` (on the CRL) and `mallory` (valid, but
/// from another CA).
fn pki() -> Pki {
    let pki = Pki::new();
    let (past, future) = ("20200101000000Z", "20991231000000Z");
    pki.client("alice", "ca", "alice", past, future);
    pki.client("expired", "ca", "expired", past, "20200201000000Z");
    pki.client("revoked", "ca", "revoked", past, future);
    pki.revoke("revoked", "ca");
    pki.client("mallory", "foreign", "mallory", past, future);
    pki
}

fn ingress(name: &str, host: &str, annotations: &[(&str, &str)]) -> Ingress {
    IngressBuilder::new(NS, name)
        .route(Some(host), "app")
        .tls(&[host], "server-cert")
        .nginx_annotations(annotations)
        .build()
}

/// What `curl` got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// A request header as the echo backend received it.
    fn upstream(&self, canonical: &str) -> Option<String> {
        let echo: EchoReply = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an echo reply ({e}): {self:?}"));
        echo.header(canonical).map(str::to_string)
    }
}

/// `curl https://<sni>/<path>` to the controller, with `Host: host`, the client certificate `cert`
/// of `pki` and extra arguments. `sni` `None` connects to the IP address, which sends no SNI.
async fn curl(
    ctl: &Controller,
    sni: Option<&str>,
    host: &str,
    path: &str,
    cert: Option<(&Pki, &str)>,
    extra: &[&str],
) -> Answer {
    let https = ctl.addrs.https;
    let url = match sni {
        Some(name) => format!("https://{name}:{}{path}", https.port()),
        None => format!("https://{https}{path}"),
    };
    let resolve = format!("{}:{}:{}", sni.unwrap_or("none"), https.port(), https.ip());
    let host_header = format!("Host: {host}");
    let headers_file = tempfile::NamedTempFile::new().expect("headers file");
    let headers_path = headers_file.path().display().to_string();
    let mut args: Vec<String> = [
        "-k",
        "--resolve",
        &resolve,
        "-H",
        &host_header,
        "-D",
        &headers_path,
        &url,
    ]
    .map(String::from)
    .to_vec();
    if let Some((pki, name)) = cert {
        let file = |ext: &str| pki.path(&format!("{name}.{ext}")).display().to_string();
        args.extend(["--cert".into(), file("crt"), "--key".into(), file("key")]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tools::curl(&args).await;
    assert!(out.success, "curl {url}: {}", out.stderr);
    let headers = std::fs::read_to_string(headers_file.path()).expect("headers");
    let status = headers
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {headers:?}"));
    Answer {
        status,
        headers,
        body: out.stdout,
    }
}

/// The controller serving `ingresses` from a manifest directory with the echo backend, a server
/// certificate for their TLS hosts and the CA Secret `client-ca` (CA and CRL of `pki`).
async fn setup(pki: &Pki, ingresses: &[Ingress]) -> (ManifestDir, EchoServer, Controller) {
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    let hosts: Vec<&str> = ingresses
        .iter()
        .flat_map(|i| i.spec.iter().flat_map(|s| s.tls.iter().flatten()))
        .flat_map(|tls| tls.hosts.iter().flatten().map(String::as_str))
        .collect();
    manifests::certificate_file(&dir, NS, "server-cert", &hosts);
    dir.write(
        "secret-ca.yaml",
        &[&manifests::opaque_secret(
            NS,
            "client-ca",
            &[
                ("ca.crt", &pki.read("ca.crt")),
                ("ca.crl", &pki.read("ca.crl")),
            ],
        )],
    );
    let refs: Vec<&dyn manifests::ErasedObject> = ingresses.iter().map(|i| i as _).collect();
    dir.write("ingresses.yaml", &refs);
    let ctl = Controller::start(dir.path(), &[]).await;
    (dir, app, ctl)
}

#[tokio::test]
async fn only_valid_certificates_of_the_ca_reach_the_backend_with_unforgeable_headers() {
    let pki = pki();
    let ingresses = [
        ingress(
            "strict",
            "strict.test",
            &[
                ("auth-tls-secret", "shop/client-ca"),
                ("auth-tls-pass-certificate-to-upstream", "true"),
            ],
        ),
        ingress(
            "bob-only",
            "bob.test",
            &[
                ("auth-tls-secret", "client-ca"),
                ("auth-tls-match-cn", "CN=bob$"),
            ],
        ),
        ingress("open", "open.test", &[]),
    ];
    let (_dir, app, ctl) = setup(&pki, &ingresses).await;
    let strict = |path: &'static str, cert: Option<&'static str>| {
        let pki = &pki;
        let ctl = &ctl;
        async move {
            curl(
                ctl,
                Some("strict.test"),
                "strict.test",
                path,
                cert.map(|c| (pki, c)),
                &[
                    "-H",
                    "ssl-client-verify: FORGED",
                    "-H",
                    "ssl-client-subject-dn: CN=root",
                ],
            )
            .await
        }
    };

    let ok = strict("/ok-alice", Some("alice")).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.upstream("Ssl-Client-Verify").as_deref(), Some("SUCCESS"));
    assert_eq!(
        ok.upstream("Ssl-Client-Subject-Dn").as_deref(),
        Some("CN=alice")
    );
    assert_eq!(
        ok.upstream("Ssl-Client-Issuer-Dn").as_deref(),
        Some("CN=Shop Client CA")
    );
    let passed = ok
        .upstream("Ssl-Client-Cert")
        .expect("the certificate is passed");
    let alice_pem = pki.read("alice.crt");
    let alice_body = alice_pem
        .lines()
        .find(|l| !l.starts_with("-----"))
        .expect("PEM body");
    assert!(
        passed.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
        "URL-escaped PEM: {passed}"
    );
    assert!(
        passed.contains(&alice_body.replace('+', "%2B").replace('/', "%2F")),
        "alice's certificate: {passed}"
    );

    for (path, cert, why) in [
        ("/denied-none", None, "No required SSL certificate was sent"),
        (
            "/denied-expired",
            Some("expired"),
            "The SSL certificate error",
        ),
        (
            "/denied-revoked",
            Some("revoked"),
            "The SSL certificate error",
        ),
        (
            "/denied-foreign",
            Some("mallory"),
            "The SSL certificate error",
        ),
    ] {
        let refused = strict(path, cert).await;
        assert_eq!(refused.status, 400, "{path}: {refused:?}");
        assert!(refused.body.contains(why), "{path}: {refused:?}");
    }

    let cn = curl(
        &ctl,
        Some("bob.test"),
        "bob.test",
        "/denied-cn",
        Some((&pki, "alice")),
        &[],
    )
    .await;
    assert_eq!(cn.status, 403, "{cn:?}");
    assert!(cn.body.contains("client certificate unauthorized"));

    let open = curl(
        &ctl,
        Some("open.test"),
        "open.test",
        "/ok-open",
        None,
        &[
            "-H",
            "ssl-client-verify: SUCCESS",
            "-H",
            "ssl-client-cert: forged",
        ],
    )
    .await;
    assert_eq!(open.status, 200, "{open:?}");
    assert_eq!(
        open.upstream("Ssl-Client-Verify"),
        None,
        "a forged header never passes"
    );
    assert_eq!(open.upstream("Ssl-Client-Cert"), None);

    assert_eq!(
        app.paths_under("/denied"),
        Vec::<String>::new(),
        "the backend never sees a refused request"
    );
}

#[tokio::test]
async fn only_hosts_with_client_certificates_ask_for_one() {
    let pki = pki();
    let ingresses = [
        ingress("strict", "strict.test", &[("auth-tls-secret", "client-ca")]),
        ingress("open", "open.test", &[]),
    ];
    let (_dir, _app, ctl) = setup(&pki, &ingresses).await;
    for version in ["-tls1_3", "-tls1_2"] {
        let strict = tools::s_client(ctl.addrs.https, "strict.test", &["-msg", version]).await;
        assert!(
            strict.stdout.contains("CertificateRequest"),
            "{version}: strict.test asks for a certificate: {}",
            strict.stdout
        );
        let open = tools::s_client(ctl.addrs.https, "open.test", &["-msg", version]).await;
        assert!(
            open.stdout.contains("ServerHello") && !open.stdout.contains("CertificateRequest"),
            "{version}: open.test does not: {}",
            open.stdout
        );
    }
}

#[tokio::test]
async fn a_connection_not_asked_for_a_certificate_cannot_reach_a_host_that_needs_one() {
    let pki = pki();
    let ingresses = [
        ingress("strict", "strict.test", &[("auth-tls-secret", "client-ca")]),
        ingress("open", "open.test", &[]),
    ];
    let (_dir, app, ctl) = setup(&pki, &ingresses).await;
    let cert = Some((&pki, "alice"));
    let no_sni = curl(&ctl, None, "strict.test", "/denied-no-sni", cert, &[]).await;
    assert_eq!(no_sni.status, 421, "{no_sni:?}");
    let other_sni = curl(
        &ctl,
        Some("open.test"),
        "strict.test",
        "/denied-sni",
        cert,
        &[],
    )
    .await;
    assert_eq!(other_sni.status, 421, "{other_sni:?}");
    let plain = tools::curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Host: strict.test",
        &format!("http://{}/denied-plain", ctl.addrs.http),
    ])
    .await;
    assert_eq!(
        plain.stdout, "308",
        "plain HTTP is redirected to HTTPS first"
    );
    let right = curl(&ctl, Some("strict.test"), "strict.test", "/ok", cert, &[]).await;
    assert_eq!(right.status, 200, "{right:?}");
    assert_eq!(app.paths_under("/denied"), Vec::<String>::new());
}

#[tokio::test]
async fn optional_modes_pass_without_a_certificate_and_report_the_result() {
    let pki = pki();
    let ingresses = [
        ingress(
            "optional",
            "optional.test",
            &[
                ("auth-tls-secret", "client-ca"),
                ("auth-tls-verify-client", "optional"),
            ],
        ),
        ingress(
            "no-ca",
            "no-ca.test",
            &[
                ("auth-tls-secret", "client-ca"),
                ("auth-tls-verify-client", "optional_no_ca"),
            ],
        ),
        ingress(
            "help",
            "help.test",
            &[
                ("auth-tls-secret", "client-ca"),
                (
                    "auth-tls-error-page",
                    "https://help.example/client-certificates",
                ),
            ],
        ),
    ];
    let (_dir, _app, ctl) = setup(&pki, &ingresses).await;
    let ask = |host: &'static str, cert: Option<&'static str>| {
        let (ctl, pki) = (&ctl, &pki);
        async move { curl(ctl, Some(host), host, "/", cert.map(|c| (pki, c)), &[]).await }
    };

    let none = ask("optional.test", None).await;
    assert_eq!(none.status, 200, "{none:?}");
    assert_eq!(none.upstream("Ssl-Client-Verify").as_deref(), Some("NONE"));
    assert_eq!(none.upstream("Ssl-Client-Subject-Dn"), None);
    let alice = ask("optional.test", Some("alice")).await;
    assert_eq!(
        alice.upstream("Ssl-Client-Verify").as_deref(),
        Some("SUCCESS")
    );
    assert_eq!(ask("optional.test", Some("mallory")).await.status, 400);

    let foreign = ask("no-ca.test", Some("mallory")).await;
    assert_eq!(foreign.status, 200, "{foreign:?}");
    assert_eq!(
        foreign.upstream("Ssl-Client-Verify").as_deref(),
        Some("FAILED:unable to get local issuer certificate")
    );
    assert_eq!(
        foreign.upstream("Ssl-Client-Subject-Dn").as_deref(),
        Some("CN=mallory")
    );
    let expired = ask("no-ca.test", Some("expired")).await;
    assert_eq!(
        expired.upstream("Ssl-Client-Verify").as_deref(),
        Some("FAILED:certificate has expired")
    );
    assert_eq!(
        ask("no-ca.test", None)
            .await
            .upstream("Ssl-Client-Verify")
            .as_deref(),
        Some("NONE")
    );

    for cert in [None, Some("revoked")] {
        let redirected = ask("help.test", cert).await;
        assert_eq!(redirected.status, 302, "{cert:?}: {redirected:?}");
        assert_eq!(
            redirected.header("location"),
            Some("https://help.example/client-certificates")
        );
    }
    assert_eq!(ask("help.test", Some("alice")).await.status, 200);
}

#[tokio::test]
async fn unusable_settings_answer_503_are_reported_and_a_fixed_secret_goes_live() {
    let pki = pki();
    let ingresses = [
        ingress("strict", "strict.test", &[("auth-tls-secret", "client-ca")]),
        ingress(
            "typo",
            "typo.test",
            &[
                ("auth-tls-secret", "client-ca"),
                ("auth-tls-verify-client", "required"),
            ],
        ),
        ingress("open", "open.test", &[]),
    ];
    let dir = ManifestDir::new();
    let app = manifests::echo_service(&dir, NS, "app").await;
    manifests::certificate_file(
        &dir,
        NS,
        "server-cert",
        &["strict.test", "typo.test", "open.test"],
    );
    let refs: Vec<&dyn manifests::ErasedObject> = ingresses.iter().map(|i| i as _).collect();
    dir.write("ingresses.yaml", &refs);
    let ctl = Controller::start(dir.path(), &[]).await;
    let status = |host: &'static str, path: &'static str| {
        let (ctl, pki) = (&ctl, &pki);
        async move {
            curl(ctl, Some(host), host, path, Some((pki, "alice")), &[])
                .await
                .status
        }
    };

    // No Secret yet: fails closed, reported; the rest of the Ingresses serve.
    assert_eq!(status("strict.test", "/denied-missing").await, 503);
    assert_eq!(status("typo.test", "/denied-typo").await, 503);
    assert_eq!(status("open.test", "/ok-open").await, 200);
    ctl.wait_for_log(&[
        "Ingress shop/strict",
        "auth-tls-secret shop/client-ca does not exist",
    ])
    .await;
    ctl.wait_for_log(&["Ingress shop/typo", "auth-tls-verify-client", "503"])
        .await;
    let problems = tools::problems_metric(ctl.addrs.admin).await;
    assert!(
        problems.get("missing-secret").is_some_and(|n| *n >= 1),
        "{problems:?}"
    );

    // The Secret appears: live without a restart.
    let secret = |ca: &str| manifests::opaque_secret(NS, "client-ca", &[("ca.crt", ca)]);
    dir.write("secret-ca.yaml", &[&secret(&pki.read("ca.crt"))]);
    eventually("the CA Secret goes live", LIVE, async || {
        match status("strict.test", "/ok-live").await {
            200 => Ok(()),
            other => Err(format!("status {other}")),
        }
    })
    .await;

    // It turns bad: fails closed again, reported.
    dir.write(
        "secret-ca.yaml",
        &[&secret(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )],
    );
    eventually(
        "a broken CA Secret answers 503",
        LIVE,
        async || match status("strict.test", "/poll-bad").await {
            503 => Ok(()),
            other => Err(format!("status {other}")),
        },
    )
    .await;
    ctl.wait_for_log(&[
        "Ingress shop/strict",
        "auth-tls-secret shop/client-ca",
        "ca.crt",
    ])
    .await;
    assert_eq!(status("open.test", "/ok-open").await, 200);
    assert_eq!(app.paths_under("/denied"), Vec::<String>::new());
}

#[tokio::test]
async fn ingresses_that_disagree_on_a_host_fail_closed_for_that_host() {
    let pki = pki();
    let strict = IngressBuilder::new(NS, "strict")
        .prefix(Some("shared.test"), "/admin", "app")
        .tls(&["shared.test"], "server-cert")
        .nginx_annotations(&[("auth-tls-secret", "client-ca")])
        .created("2024-01-01T00:00:00Z")
        .build();
    let lax = IngressBuilder::new(NS, "lax")
        .prefix(Some("shared.test"), "/", "app")
        .created("2024-02-01T00:00:00Z")
        .build();
    let open = ingress("open", "open.test", &[]);
    let (_dir, app, ctl) = setup(&pki, &[strict, lax, open]).await;
    for path in ["/admin/denied", "/denied"] {
        let answer = curl(
            &ctl,
            Some("shared.test"),
            "shared.test",
            path,
            Some((&pki, "alice")),
            &[],
        )
        .await;
        assert_eq!(answer.status, 503, "{path}: {answer:?}");
    }
    ctl.wait_for_log(&["host shared.test", "different auth-tls-* settings"])
        .await;
    assert_eq!(
        curl(&ctl, Some("open.test"), "open.test", "/ok", None, &[])
            .await
            .status,
        200
    );
    assert_eq!(app.paths_under("/denied"), Vec::<String>::new());
    assert_eq!(app.paths_under("/admin"), Vec::<String>::new());
}

/// One `openssl s_client` connection to `host` with alice's certificate, `GET /path` on it, and
/// `flags` (e.g. `-sess_out FILE`); its stdout.
async fn s_client_get(
    ctl: &Controller,
    pki: &Pki,
    host: &str,
    path: &str,
    flags: &[&str],
) -> String {
    let mut args: Vec<String> = [
        "s_client",
        "-connect",
        &ctl.addrs.https.to_string(),
        "-servername",
        host,
        "-ign_eof",
        "-cert",
        &pki.path("alice.crt").display().to_string(),
        "-key",
        &pki.path("alice.key").display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    args.extend(flags.iter().map(|f| f.to_string()));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let out = tools::run_with_input(
        "openssl",
        &args,
        request.as_bytes(),
        std::time::Duration::from_secs(15),
    )
    .await;
    out.stdout
}

#[tokio::test]
async fn resumed_sessions_keep_their_certificate_and_are_checked_again() {
    let pki = pki();
    let ingresses = [ingress(
        "strict",
        "strict.test",
        &[("auth-tls-secret", "client-ca")],
    )];
    let (_dir, app, ctl) = setup(&pki, &ingresses).await;
    for (version, name) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let scratch = tempfile::tempdir().expect("session dir");
        let file = scratch.path().join("session.pem").display().to_string();
        let first = s_client_get(
            &ctl,
            &pki,
            "strict.test",
            "/ok-first",
            &[version, "-sess_out", &file],
        )
        .await;
        assert!(first.contains(&format!("New, {name}")), "{first}");
        assert!(first.contains("HTTP/1.1 200 OK"), "{first}");
        let second = s_client_get(
            &ctl,
            &pki,
            "strict.test",
            "/ok-resumed",
            &[version, "-sess_in", &file],
        )
        .await;
        assert!(second.contains(&format!("Reused, {name}")), "{second}");
        assert!(
            second.contains("HTTP/1.1 200 OK"),
            "the resumed session still has alice's certificate: {second}"
        );
    }
    assert_eq!(app.paths_under("/ok-resumed").len(), 2);
}

/// A keep-alive HTTP/1.1 connection with rustls as the client, sending alice's certificate when asked.
async fn rustls_connection(ctl: &Controller, pki: &Pki, host: &str) -> Sender {
    let conn = TlsClient::new()
        .sni(host)
        .client_cert(&pki.read("alice.crt"), &pki.read("alice.key"))
        .connect(ctl.addrs.https)
        .await
        .unwrap_or_else(|e| panic!("{host}: {e}"));
    conn.http().await
}

#[tokio::test]
async fn rustls_clients_are_verified_too() {
    let pki = pki();
    let ingresses = [ingress(
        "strict",
        "strict.test",
        &[("auth-tls-secret", "client-ca")],
    )];
    let (_dir, _app, ctl) = setup(&pki, &ingresses).await;
    let mut alice = rustls_connection(&ctl, &pki, "strict.test").await;
    for _ in 0..3 {
        let r = alice.send(request("GET", "strict.test", "/ok")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.echo().header("Ssl-Client-Subject-Dn"), Some("CN=alice"));
    }
    let mut anonymous = TlsClient::new()
        .sni("strict.test")
        .connect(ctl.addrs.https)
        .await
        .unwrap()
        .http()
        .await;
    assert_eq!(
        anonymous
            .send(request("GET", "strict.test", "/denied"))
            .await
            .status,
        400
    );
}

/// Benchmark note, not a timed test (run with `--ignored --nocapture`): the steady-state cost of a
/// route with client certificates (verified on every request) against an open route to the same
/// backend, one keep-alive TLS connection each, rounds interleaved.
#[tokio::test]
#[ignore]
async fn benchmark_client_certificate_route_against_an_open_route() {
    const ROUNDS: usize = 5;
    const REQUESTS: usize = 1000;
    let pki = pki();
    let ingresses = [
        ingress("strict", "strict.test", &[("auth-tls-secret", "client-ca")]),
        ingress("open", "open.test", &[]),
    ];
    let (_dir, _app, ctl) = setup(&pki, &ingresses).await;
    let mut open = rustls_connection(&ctl, &pki, "open.test").await;
    let mut strict = rustls_connection(&ctl, &pki, "strict.test").await;
    let mut elapsed = [std::time::Duration::ZERO; 2];
    for _ in 0..ROUNDS {
        for (i, (sender, host)) in [(&mut open, "open.test"), (&mut strict, "strict.test")]
            .into_iter()
            .enumerate()
        {
            let started = std::time::Instant::now();
            for _ in 0..REQUESTS {
                assert_eq!(
                    sender.send(request("GET", host, "/")).await.status,
                    200,
                    "{host}"
                );
            }
            elapsed[i] += started.elapsed();
        }
    }
    let per_request = |d: std::time::Duration| d.as_secs_f64() * 1e6 / (ROUNDS * REQUESTS) as f64;
    let (o, s) = (per_request(elapsed[0]), per_request(elapsed[1]));
    println!(
        "open route {o:.1} µs/request, client-certificate route {s:.1} µs/request, ratio {:.2}",
        s / o
    );
}
