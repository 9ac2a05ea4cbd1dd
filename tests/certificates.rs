//! Every row of `docs/certificates.md` against the real binary in manifest mode: which certificate a
//! client is served for the certificates people have, made as they make them (the `openssl` command
//! line) and by rcgen, and how each problem is reported.
//!
//! One controller serves all rows, one TLS host each (`<row>.certs.test`, its own Secret and Ingress).
//! For each row the test asserts the certificate and chain the handshake presents (or that the default
//! certificate stands in for a refused one), a request through it, the warning log line naming the
//! Ingress for each expected problem kind and none for a clean row, and the `portcullis_problems` series.
//! Where an independent TLS stack says what a user sees, `curl` verifies against the row's CA.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::manifests::{self, ErasedObject};
use support::openssl::Openssl;
use support::pki::{self, fingerprint};
use support::*;
use support::{controller, tools};

const NS: &str = "certs";

impl Openssl {
    /// A scratch directory with a minimal `openssl ca` setup: the one command line that sets arbitrary
    /// validity dates.
    fn new() -> Openssl {
        let openssl = Openssl::scratch();
        openssl.write(
            "ca.cnf",
            "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
             default_md = sha256\npolicy = any\ncopy_extensions = copy\nunique_subject = no\n\
             [any]\ncommonName = supplied\n",
        );
        openssl.write("index.txt", "");
        openssl.write("serial", "01\n");
        openssl
    }

    /// `openssl req -x509` for `cn`, with `key` (e.g. `-newkey rsa:2048` or `-key k.pem`) and
    /// `-addext` values; `name.crt` and `name.key` hold the result.
    fn self_signed(&self, name: &str, key: &str, cn: &str, addext: &[&str]) -> Made {
        let mut extra = vec!["-subj".to_string(), format!("/CN={cn}")];
        for ext in addext {
            extra.extend(["-addext".to_string(), ext.to_string()]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let keyout = if key.starts_with("-key ") {
            String::new()
        } else {
            format!("-keyout {name}.key")
        };
        self.run(
            &format!("req -x509 {key} -nodes {keyout} -out {name}.crt"),
            &extra,
        );
        let key_file = key
            .strip_prefix("-key ")
            .unwrap_or(&format!("{name}.key"))
            .to_string();
        Made::new(self.read(&format!("{name}.crt")), self.read(&key_file))
    }

    /// A root CA made with `openssl req -x509` (which marks it `CA:TRUE`).
    fn root(&self, name: &str, cn: &str) -> Made {
        self.self_signed(
            name,
            "-newkey ec -pkeyopt ec_paramgen_curve:P-256",
            cn,
            &["keyUsage=critical,keyCertSign,cRLSign"],
        )
    }

    /// A certificate for `cn` signed by `ca` with `openssl x509 -req` and the extension lines `ext`.
    fn signed(&self, name: &str, ca: &str, cn: &str, ext: &[&str]) -> Made {
        self.csr(name, cn, &[]);
        self.write(&format!("{name}.ext"), &ext.join("\n"));
        self.run(
            &format!(
                "x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -days 30 -extfile {name}.ext -out {name}.crt"
            ),
            &[],
        );
        Made::new(
            self.read(&format!("{name}.crt")),
            self.read(&format!("{name}.key")),
        )
    }

    /// A certificate for `cn` with its SAN, issued by `ca` with `openssl ca` for `start`–`end`
    /// (`YYYYMMDDHHMMSSZ`).
    fn dated(&self, name: &str, ca: &str, cn: &str, start: &str, end: &str) -> Made {
        self.csr(name, cn, &["-addext", &format!("subjectAltName=DNS:{cn}")]);
        self.run(
            &format!(
                "ca -batch -config ca.cnf -cert {ca}.crt -keyfile {ca}.key -in {name}.csr -out {name}.crt -notext -startdate {start} -enddate {end}"
            ),
            &[],
        );
        Made::new(
            self.read(&format!("{name}.crt")),
            self.read(&format!("{name}.key")),
        )
    }

    fn csr(&self, name: &str, cn: &str, extra: &[&str]) {
        let mut args = vec!["-subj".to_string(), format!("/CN={cn}")];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(
            &format!("req -new -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr"),
            &args,
        );
    }
}

/// A certificate (or chain) and key, PEM, as they go into a Secret.
#[derive(Clone)]
struct Made {
    crt: String,
    key: String,
}

impl Made {
    fn new(crt: String, key: String) -> Made {
        Made { crt, key }
    }

    fn from_rcgen(cert: &rcgen::Certificate, key: &rcgen::KeyPair) -> Made {
        Made::new(cert.pem(), key.serialize_pem())
    }

    /// The DER certificates of `tls.crt`, in file order.
    fn ders(&self) -> Vec<CertificateDer<'static>> {
        ders(&self.crt)
    }
}

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// What a row expects.
enum Expect {
    /// The Secret's certificate is served with exactly `chain` (leaf first), reported as `problems`.
    Served {
        chain: Vec<CertificateDer<'static>>,
        problems: Vec<&'static str>,
    },
    /// The default certificate is served instead, and the problem `kind` is logged with `says`.
    Refused {
        kind: &'static str,
        says: &'static str,
    },
}

/// What `curl`, verifying against `ca`, must make of the host.
struct Curl {
    ca: String,
    /// `None`: the request succeeds; `Some(text)`: curl fails saying `text`.
    fails_with: Option<&'static str>,
}

struct Row {
    name: String,
    /// The Ingress's `tls.hosts` entry (and rule host).
    host: String,
    secret: Made,
    expect: Expect,
    curl: Option<Curl>,
}

fn host(name: &str) -> String {
    format!("{name}.certs.test")
}

fn served(made: &Made, problems: &[&'static str]) -> Expect {
    Expect::Served {
        chain: made.ders(),
        problems: problems.to_vec(),
    }
}

fn row(name: &str, secret: Made, expect: Expect) -> Row {
    Row {
        name: name.to_string(),
        host: host(name),
        secret,
        expect,
        curl: None,
    }
}

impl Row {
    fn curl(mut self, ca: &str, fails_with: Option<&'static str>) -> Row {
        self.curl = Some(Curl {
            ca: ca.to_string(),
            fails_with,
        });
        self
    }
}

/// The rows made with the `openssl` command line.
fn openssl_rows(o: &Openssl) -> Vec<Row> {
    let san = |name: &str| format!("subjectAltName=DNS:{}", host(name));
    let self_signed = |name: &str, key: &str, addext: &[&str]| {
        let mut exts = vec![san(name)];
        exts.extend(addext.iter().map(|e| e.to_string()));
        let exts: Vec<&str> = exts.iter().map(String::as_str).collect();
        o.self_signed(name, key, &host(name), &exts)
    };
    let mut rows = Vec::new();

    // The Kubernetes documentation's command: self-signed and, with OpenSSL 3, CA:TRUE.
    let docs = self_signed("openssl-docs", "-newkey rsa:2048", &[]);
    rows.push(row("openssl-docs", docs.clone(), served(&docs, &[])).curl(&docs.crt, None));
    for bits in [3072, 4096] {
        let name = format!("openssl-rsa-{bits}");
        let made = self_signed(&name, &format!("-newkey rsa:{bits}"), &[]);
        rows.push(row(&name, made.clone(), served(&made, &[])));
    }
    o.run(
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p256.key",
        &[],
    );
    let p256 = self_signed("openssl-p256", "-key p256.key", &[]);
    rows.push(row("openssl-p256", p256.clone(), served(&p256, &[])).curl(&p256.crt, None));
    let p384 = self_signed(
        "openssl-p384",
        "-newkey ec -pkeyopt ec_paramgen_curve:P-384",
        &[],
    );
    rows.push(row("openssl-p384", p384.clone(), served(&p384, &[])));
    o.run("genpkey -algorithm ed25519 -out ed25519.key", &[]);
    let ed25519 = self_signed("openssl-ed25519", "-key ed25519.key", &[]);
    rows.push(row(
        "openssl-ed25519",
        ed25519.clone(),
        served(&ed25519, &["certificate-key-type"]),
    ));
    // Keys as older commands write them: PKCS#1 and SEC1 rather than PKCS#8.
    o.run("genrsa -traditional -out pkcs1.key 2048", &[]);
    let pkcs1 = self_signed("openssl-pkcs1", "-key pkcs1.key", &[]);
    assert!(pkcs1.key.contains("BEGIN RSA PRIVATE KEY"));
    rows.push(row("openssl-pkcs1", pkcs1.clone(), served(&pkcs1, &[])));
    o.run("ecparam -name prime256v1 -genkey -noout -out sec1.key", &[]);
    let sec1 = self_signed("openssl-sec1", "-key sec1.key", &[]);
    assert!(sec1.key.contains("BEGIN EC PRIVATE KEY"));
    rows.push(row("openssl-sec1", sec1.clone(), served(&sec1, &[])));

    // Issued by a CA: a server certificate (directly, and through an intermediate), and a CA:TRUE one.
    let root = o.root("root", "Certificates Test Root CA");
    let intermediate = o.signed(
        "intermediate",
        "root",
        "Certificates Test Intermediate CA",
        &[
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    let leaf = |name: &str, ca: &str| {
        let san = san(name);
        o.signed(
            name,
            ca,
            &host(name),
            &[
                "basicConstraints=CA:FALSE",
                "keyUsage=critical,digitalSignature,keyEncipherment",
                "extendedKeyUsage=serverAuth",
                &san,
            ],
        )
    };
    let cat = |parts: &[&Made]| {
        Made::new(
            parts.iter().map(|m| m.crt.as_str()).collect(),
            parts[0].key.clone(),
        )
    };
    let direct = cat(&[&leaf("openssl-ca-signed", "root"), &root]);
    rows.push(row("openssl-ca-signed", direct.clone(), served(&direct, &[])).curl(&root.crt, None));
    let via = cat(&[&leaf("openssl-intermediate", "intermediate"), &intermediate]);
    rows.push(row("openssl-intermediate", via.clone(), served(&via, &[])).curl(&root.crt, None));
    let ca_true = o.signed(
        "openssl-ca-true",
        "root",
        &host("openssl-ca-true"),
        &["basicConstraints=critical,CA:TRUE", &san("openssl-ca-true")],
    );
    let ca_true = cat(&[&ca_true, &root]);
    rows.push(row(
        "openssl-ca-true",
        ca_true.clone(),
        served(&ca_true, &["certificate-is-ca"]),
    ));

    // Chains as people paste them: issuer first, and with a certificate that has nothing to do with it.
    let reversed_leaf = leaf("openssl-chain-reversed", "intermediate");
    let reversed = Made::new(
        format!("{}{}", intermediate.crt, reversed_leaf.crt),
        reversed_leaf.key.clone(),
    );
    rows.push(
        row(
            "openssl-chain-reversed",
            reversed,
            Expect::Served {
                chain: [reversed_leaf.ders(), intermediate.ders()].concat(),
                problems: vec!["certificate-chain-order"],
            },
        )
        .curl(&root.crt, None),
    );
    let unrelated = cat(&[&leaf("openssl-chain-unrelated", "root"), &root, &docs]);
    rows.push(row(
        "openssl-chain-unrelated",
        unrelated.clone(),
        served(&unrelated, &["certificate-chain-unrelated"]),
    ));

    // Validity, as `openssl ca -startdate/-enddate` sets it.
    let expired = o.dated(
        "openssl-expired",
        "root",
        &host("openssl-expired"),
        "20000101000000Z",
        "20010101000000Z",
    );
    rows.push(
        row(
            "openssl-expired",
            expired.clone(),
            served(&expired, &["certificate-expired"]),
        )
        .curl(&root.crt, Some("certificate has expired")),
    );
    let future = o.dated(
        "openssl-not-yet-valid",
        "root",
        &host("openssl-not-yet-valid"),
        "20900101000000Z",
        "20910101000000Z",
    );
    rows.push(
        row(
            "openssl-not-yet-valid",
            future.clone(),
            served(&future, &["certificate-not-yet-valid"]),
        )
        .curl(&root.crt, Some("certificate is not yet valid")),
    );

    // Names: a certificate for another host, and one with only a CN.
    let other = o.self_signed(
        "openssl-other",
        "-newkey rsa:2048",
        "other.example",
        &["subjectAltName=DNS:other.example"],
    );
    rows.push(
        row(
            "openssl-san-mismatch",
            other.clone(),
            served(&other, &["certificate-host-mismatch"]),
        )
        .curl(
            &other.crt,
            Some("no alternative certificate subject name matches"),
        ),
    );
    let cn_only = o.self_signed(
        "openssl-cn-only",
        "-newkey rsa:2048",
        &host("openssl-cn-only"),
        &[],
    );
    rows.push(row(
        "openssl-cn-only",
        cn_only.clone(),
        served(&cn_only, &["certificate-without-san"]),
    ));

    // Key usage that does not allow a TLS server.
    let client_only = self_signed(
        "openssl-eku-client",
        "-newkey rsa:2048",
        &["extendedKeyUsage=clientAuth"],
    );
    rows.push(
        row(
            "openssl-eku-client",
            client_only.clone(),
            served(&client_only, &["certificate-key-usage"]),
        )
        .curl(&client_only.crt, Some("unsuitable certificate purpose")),
    );
    let no_signature = self_signed(
        "openssl-ku-no-signature",
        "-newkey rsa:2048",
        &["keyUsage=critical,keyEncipherment"],
    );
    rows.push(row(
        "openssl-ku-no-signature",
        no_signature.clone(),
        served(&no_signature, &["certificate-key-usage"]),
    ));

    // What cannot be served.
    let small = self_signed("openssl-rsa-1024", "-newkey rsa:1024", &[]);
    rows.push(row(
        "openssl-rsa-1024",
        small,
        Expect::Refused {
            kind: "invalid-certificate",
            says: "below 2048 bits",
        },
    ));
    rows.push(row(
        "openssl-key-mismatch",
        Made::new(docs.crt.clone(), p256.key.clone()),
        Expect::Refused {
            kind: "key-mismatch",
            says: "does not match",
        },
    ));
    o.run("genpkey -algorithm ed448 -out ed448.key", &[]);
    let ed448 = self_signed("openssl-ed448", "-key ed448.key", &[]);
    rows.push(row(
        "openssl-ed448",
        ed448,
        Expect::Refused {
            kind: "invalid-certificate",
            says: "tls.key cannot be used",
        },
    ));
    o.run(
        "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -aes256 -pass pass:secret -out encrypted.key",
        &[],
    );
    o.run(
        "req -x509 -key encrypted.key -passin pass:secret -out encrypted.crt -subj /CN=encrypted.certs.test",
        &[],
    );
    rows.push(row(
        "openssl-encrypted-key",
        Made::new(o.read("encrypted.crt"), o.read("encrypted.key")),
        Expect::Refused {
            kind: "invalid-certificate",
            says: "tls.key is encrypted",
        },
    ));
    rows
}

/// rcgen parameters for `name`'s host (SAN and CN), changed by `tweak`.
fn params(
    name: &str,
    tweak: impl FnOnce(&mut rcgen::CertificateParams),
) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(vec![host(name)]).expect("certificate params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, host(name));
    tweak(&mut params);
    params
}

fn rcgen_self_signed(
    name: &str,
    key: rcgen::KeyPair,
    tweak: impl FnOnce(&mut rcgen::CertificateParams),
) -> Made {
    let cert = params(name, tweak)
        .self_signed(&key)
        .expect("self-signed certificate");
    Made::from_rcgen(&cert, &key)
}

fn ecdsa() -> rcgen::KeyPair {
    rcgen::KeyPair::generate().expect("ECDSA P-256 key")
}

/// The rows made with rcgen, as programs (cert-manager's self-signed issuer, test suites) make them.
fn rcgen_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rcgen Test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ecdsa()).expect("CA");
    let ca_made = Made::new(ca.pem(), String::new());
    let issued = |name: &str, tweak: &dyn Fn(&mut rcgen::CertificateParams)| {
        let key = ecdsa();
        let cert = params(name, tweak)
            .signed_by(&key, &ca)
            .expect("issued certificate");
        Made::from_rcgen(&cert, &key)
    };
    let with_ca = |leaf: &Made| Made::new(format!("{}{}", leaf.crt, ca_made.crt), leaf.key.clone());

    let self_ca = rcgen_self_signed("rcgen-self-signed-ca", ecdsa(), |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    });
    rows.push(row(
        "rcgen-self-signed-ca",
        self_ca.clone(),
        served(&self_ca, &[]),
    ));
    let signed = with_ca(&issued("rcgen-ca-signed", &|_| {}));
    rows.push(
        row("rcgen-ca-signed", signed.clone(), served(&signed, &[])).curl(&ca_made.crt, None),
    );
    let ca_true = with_ca(&issued("rcgen-ca-true", &|p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }));
    rows.push(row(
        "rcgen-ca-true",
        ca_true.clone(),
        served(&ca_true, &["certificate-is-ca"]),
    ));
    let expired = issued("rcgen-expired", &|p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    rows.push(row(
        "rcgen-expired",
        expired.clone(),
        served(&expired, &["certificate-expired"]),
    ));
    let future = issued("rcgen-not-yet-valid", &|p| {
        p.not_before = rcgen::date_time_ymd(2090, 1, 1);
        p.not_after = rcgen::date_time_ymd(2091, 1, 1);
    });
    rows.push(row(
        "rcgen-not-yet-valid",
        future.clone(),
        served(&future, &["certificate-not-yet-valid"]),
    ));
    let key = ecdsa();
    let other = rcgen::CertificateParams::new(vec!["other.example".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let other = Made::from_rcgen(&other, &key);
    rows.push(row(
        "rcgen-san-mismatch",
        other.clone(),
        served(&other, &["certificate-host-mismatch"]),
    ));
    let cn_only = rcgen_self_signed("rcgen-cn-only", ecdsa(), |p| p.subject_alt_names.clear());
    rows.push(row(
        "rcgen-cn-only",
        cn_only.clone(),
        served(&cn_only, &["certificate-without-san"]),
    ));
    let leaf = issued("rcgen-chain-reversed", &|_| {});
    rows.push(row(
        "rcgen-chain-reversed",
        Made::new(format!("{}{}", ca_made.crt, leaf.crt), leaf.key.clone()),
        Expect::Served {
            chain: [leaf.ders(), ca_made.ders()].concat(),
            problems: vec!["certificate-chain-order"],
        },
    ));
    let leaf = issued("rcgen-chain-unrelated", &|_| {});
    let stray = rcgen_self_signed("rcgen-stray", ecdsa(), |_| {});
    let unrelated = Made::new(
        format!("{}{}{}", leaf.crt, stray.crt, ca_made.crt),
        leaf.key.clone(),
    );
    rows.push(row(
        "rcgen-chain-unrelated",
        unrelated,
        Expect::Served {
            // The issuer moves up next to the leaf; the stray certificate follows.
            chain: [leaf.ders(), ca_made.ders(), stray.ders()].concat(),
            problems: vec!["certificate-chain-order", "certificate-chain-unrelated"],
        },
    ));
    for (name, size) in [
        ("rcgen-rsa-2048", rcgen::RsaKeySize::_2048),
        ("rcgen-rsa-3072", rcgen::RsaKeySize::_3072),
        ("rcgen-rsa-4096", rcgen::RsaKeySize::_4096),
    ] {
        let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size).expect("RSA key");
        let made = rcgen_self_signed(name, key, |_| {});
        rows.push(row(name, made.clone(), served(&made, &[])));
    }
    for (name, alg, problems) in [
        ("rcgen-p256", &rcgen::PKCS_ECDSA_P256_SHA256, &[][..]),
        ("rcgen-p384", &rcgen::PKCS_ECDSA_P384_SHA384, &[][..]),
        (
            "rcgen-ed25519",
            &rcgen::PKCS_ED25519,
            &["certificate-key-type"][..],
        ),
    ] {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let made = rcgen_self_signed(name, key, |_| {});
        rows.push(row(name, made.clone(), served(&made, problems)));
    }
    let client_only = rcgen_self_signed("rcgen-eku-client", ecdsa(), |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    });
    rows.push(row(
        "rcgen-eku-client",
        client_only.clone(),
        served(&client_only, &["certificate-key-usage"]),
    ));
    let no_signature = rcgen_self_signed("rcgen-ku-no-signature", ecdsa(), |p| {
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyAgreement];
    });
    rows.push(row(
        "rcgen-ku-no-signature",
        no_signature.clone(),
        served(&no_signature, &["certificate-key-usage"]),
    ));
    let mine = rcgen_self_signed("rcgen-key-mismatch", ecdsa(), |_| {});
    rows.push(row(
        "rcgen-key-mismatch",
        Made::new(mine.crt, ecdsa().serialize_pem()),
        Expect::Refused {
            kind: "key-mismatch",
            says: "does not match",
        },
    ));
    rows
}

/// The warning log lines that name the Ingress of `row`.
fn warnings_for(ctl: &Controller, row: &str) -> Vec<String> {
    let object = format!("Ingress {NS}/{row} ");
    ctl.logs()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains(&object))
        .map(str::to_string)
        .collect()
}

async fn curl_check(
    ctl: &Controller,
    row: &Row,
    curl: &Curl,
    scratch: &Path,
) -> Result<(), String> {
    let ca = scratch.join(format!("{}-ca.pem", row.name));
    std::fs::write(&ca, &curl.ca).expect("write the CA file for curl");
    let out = tools::curl_https_status(&row.host, ctl.addrs.https, &ca).await;
    let ok = match curl.fails_with {
        None => out.success && out.stdout == "200",
        Some(text) => !out.success && out.stderr.contains(text),
    };
    ok.then_some(()).ok_or_else(|| {
        format!(
            "{}: curl verifying against the row's CA, expected {}: {} {}",
            row.name,
            curl.fails_with.unwrap_or("200"),
            out.stdout,
            out.stderr.lines().next().unwrap_or_default()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_certificate_property_is_served_or_refused_as_documented() {
    let openssl = Openssl::new();
    let rows: Vec<Row> = openssl_rows(&openssl)
        .into_iter()
        .chain(rcgen_rows())
        .collect();
    let dir = ManifestDir::new();
    let _echo = manifests::echo_service(&dir, NS, "app").await;
    for row in &rows {
        let secret = manifests::tls_secret_raw(NS, &row.name, &row.secret.crt, &row.secret.key);
        let ingress = IngressBuilder::new(NS, &row.name)
            .tls(&[&row.host], &row.name)
            .route(Some(&row.host), "app")
            .build();
        let objects: [&dyn ErasedObject; 2] = [&secret, &ingress];
        dir.write(&format!("{}.yaml", row.name), &objects);
    }
    let ctl = Controller::start(dir.path(), &[]).await;
    let all = rows.len().to_string();
    eventually("every row's Ingress live", wait::LIVE, async || {
        let live = ctl.logs().lines().any(|l| {
            l.contains("configuration live") && controller::field(l, "ingresses") == Some(&all)
        });
        live.then_some(())
            .ok_or(format!("not all {all} Ingresses are live"))
    })
    .await;
    let default = TlsClient::new()
        .sni("unknown.certs.test")
        .connect(ctl.addrs.https)
        .await
        .expect("default certificate");
    assert_eq!(pki::dns_names(default.leaf()), ["portcullis.invalid"]);

    let mut expected_kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    for row in &rows {
        let conn = match TlsClient::new()
            .sni(&row.host)
            .connect(ctl.addrs.https)
            .await
        {
            Ok(conn) => conn,
            Err(e) => {
                failures.push(format!("{}: handshake failed: {e}", row.name));
                continue;
            }
        };
        let logs = warnings_for(&ctl, &row.name);
        match &row.expect {
            Expect::Served { chain, problems } => {
                if &conn.chain != chain {
                    failures.push(format!(
                        "{}: served {:?}, expected its own chain {:?} (default is {})",
                        row.name,
                        conn.chain.iter().map(fingerprint).collect::<Vec<_>>(),
                        chain.iter().map(fingerprint).collect::<Vec<_>>(),
                        default.fingerprint(),
                    ));
                }
                for kind in problems {
                    *expected_kinds.entry(kind.to_string()).or_default() += 1;
                    if !logs.iter().any(|l| l.contains(&format!("kind=\"{kind}\""))) {
                        failures.push(format!(
                            "{}: no {kind} warning; its warnings: {logs:#?}",
                            row.name
                        ));
                    }
                }
                if logs.len() != problems.len() {
                    failures.push(format!(
                        "{}: expected {problems:?}, logged {logs:#?}",
                        row.name
                    ));
                }
                if !logs
                    .iter()
                    .all(|l| l.contains(&format!("Secret {NS}/{}", row.name)))
                {
                    failures.push(format!(
                        "{}: a warning does not name the Secret: {logs:#?}",
                        row.name
                    ));
                }
                let resp = conn
                    .http()
                    .await
                    .try_send(request("GET", &row.host, "/"))
                    .await;
                match resp {
                    Ok(resp) if resp.status == 200 => {}
                    other => failures.push(format!(
                        "{}: GET / over its certificate: {:?}",
                        row.name,
                        other.map(|r| r.status)
                    )),
                }
            }
            Expect::Refused { kind, says } => {
                *expected_kinds.entry(kind.to_string()).or_default() += 1;
                if conn.fingerprint() != default.fingerprint() {
                    failures.push(format!(
                        "{}: refused, so the default certificate should be served",
                        row.name
                    ));
                }
                if !logs
                    .iter()
                    .any(|l| l.contains(&format!("kind=\"{kind}\"")) && l.contains(says))
                {
                    failures.push(format!(
                        "{}: no {kind} warning saying {says:?}: {logs:#?}",
                        row.name
                    ));
                }
            }
        }
        if let Some(curl) = &row.curl
            && let Err(e) = curl_check(&ctl, row, curl, openssl.dir()).await
        {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    let metric = tools::problems_metric(ctl.addrs.admin).await;
    for (kind, count) in &metric {
        let certificate_kind = kind.starts_with("certificate-")
            || kind == "invalid-certificate"
            || kind == "key-mismatch";
        if certificate_kind {
            assert_eq!(
                count,
                expected_kinds.get(kind).unwrap_or(&0),
                "portcullis_problems{{kind={kind:?}}}"
            );
        }
    }
    for kind in expected_kinds.keys() {
        assert!(
            metric.contains_key(kind),
            "portcullis_problems has no {kind} series: {metric:?}"
        );
    }
    let keys: Vec<String> = rows
        .iter()
        .map(|r| r.secret.key.clone())
        .filter(|k| !k.is_empty())
        .collect();
    ctl.assert_no_key_material(&keys);
}
