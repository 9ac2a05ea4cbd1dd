//! The property that makes incremental builds safe: after any sequence of changes, the configuration
//! built from the previous one equals the one `build()` makes from scratch.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, OnceLock};

use super::*;
use crate::model::annotations::client_cert::ClientCertPolicy;
use crate::model::{Kind, Object, ObjectRef, ProblemKind, Route, build};
use crate::settings::Settings;
use crate::source::manifests::parse_documents;

const T0: i64 = 1_800_000_000;
const HOSTS: &[&str] = &["a.test", "b.test", "www.a.test", "*.test", "c.test", ""];
const PROBE_HOSTS: &[&str] = &[
    "a.test",
    "b.test",
    "www.a.test",
    "c.test",
    "x.test",
    "alias.test",
    "www.b.test",
    "other.example",
];
const PROBE_PATHS: &[&str] = &["/", "/x", "/x/y", "/z"];
const SECRETS: &[&str] = &["tls-a", "tls-wild", "tls-b", "tls-short", "ca", "users"];
const SERVICES: &[&str] = &["svc1", "svc2", "svc3"];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A small deterministic generator: each seed is one reproducible history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// PEM certificate and key pairs, made once: the names a Secret may carry, one expiring mid-test.
fn pems() -> &'static BTreeMap<&'static str, (String, String)> {
    static PEMS: OnceLock<BTreeMap<&'static str, (String, String)>> = OnceLock::new();
    PEMS.get_or_init(|| {
        let leaf = |names: &[&str], not_after: Option<(i32, u8, u8)>| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(
                names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            if let Some((y, m, d)) = not_after {
                params.not_after = rcgen::date_time_ymd(y, m, d);
            }
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let ca = {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            (params.self_signed(&key).unwrap().pem(), String::new())
        };
        BTreeMap::from([
            ("a", leaf(&["a.test", "www.a.test"], None)),
            ("a2", leaf(&["a.test", "www.a.test"], None)),
            ("wild", leaf(&["*.test"], None)),
            ("b", leaf(&["b.test"], None)),
            // T0 is 2027-01-15T08:00Z: this one expires during a history.
            ("short", leaf(&["c.test"], Some((2027, 1, 16)))),
            ("ca", ca),
        ])
    })
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

fn secret_yaml(rng: &mut Rng, name: &str) -> String {
    let pems = pems();
    let meta = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: ns}}\n");
    match name {
        "ca" => format!("{meta}stringData:\n  ca.crt: |\n{}", indent(&pems["ca"].0)),
        "users" => format!("{meta}stringData:\n  auth: \"user:{{PLAIN}}pw\"\n"),
        _ => {
            let cert = match (name, rng.below(4)) {
                (_, 0) => "broken",
                ("tls-a", 1) => "a2",
                ("tls-a", _) => "a",
                ("tls-wild", _) => "wild",
                ("tls-b", 1) => "a",
                ("tls-b", _) => "b",
                _ => "short",
            };
            let (crt, key) = match cert {
                "broken" => ("not a certificate".to_string(), "not a key".to_string()),
                c => pems[c].clone(),
            };
            format!(
                "{meta}type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
                indent(&crt),
                indent(&key)
            )
        }
    }
}

fn service_yaml(rng: &mut Rng, name: &str) -> String {
    let port = if rng.chance(70) {
        "{port: 80, name: http}"
    } else {
        "{port: 8080}"
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns, uid: u-{name}}}\nspec: {{clusterIP: 10.96.0.{}, ports: [{port}]}}\n",
        rng.below(3) + 1
    )
}

fn slice_yaml(rng: &mut Rng, name: &str) -> String {
    let service = if name.ends_with('1') { "svc1" } else { "svc2" };
    let mut endpoints = String::new();
    for _ in 0..rng.below(3) {
        let address = rng.pick(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "not-an-ip"]);
        let ready = rng.chance(80);
        let _ = write!(
            endpoints,
            "- addresses: [\"{address}\"]\n  conditions: {{ready: {ready}}}\n"
        );
    }
    if endpoints.is_empty() {
        endpoints = "[]\n".into();
    } else {
        endpoints.insert(0, '\n');
    }
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: ns, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: {}, port: 9000}}]\nendpoints: {endpoints}",
        if rng.chance(80) { "http" } else { "\"\"" }
    )
}

fn ingress_yaml(rng: &mut Rng, name: &str) -> String {
    let mut annotations = Vec::new();
    let n = "nginx.ingress.kubernetes.io";
    for (percent, annotation) in [
        (
            15,
            format!(
                "{n}/server-alias: \"{}\"",
                rng.pick(&["alias.test", "b.test"])
            ),
        ),
        (15, format!("{n}/from-to-www-redirect: \"true\"")),
        (10, format!("{n}/ssl-redirect: \"false\"")),
        (15, format!("{n}/canary: \"true\"")),
        (10, format!("{n}/canary-weight: \"30\"")),
        (10, format!("{n}/default-backend: {}", rng.pick(SERVICES))),
        (10, format!("{n}/custom-http-errors: \"404,503\"")),
        (
            10,
            format!("{n}/auth-tls-secret: ns/{}", rng.pick(&["ca", "users"])),
        ),
        (10, format!("{n}/ssl-passthrough: \"true\"")),
        (10, "portcullis.io/acme: \"true\"".to_string()),
        (10, format!("{n}/auth-type: basic")),
        (
            10,
            format!("{n}/auth-secret: {}", rng.pick(&["users", "ca"])),
        ),
        (10, format!("{n}/use-regex: \"true\"")),
        (8, format!("{n}/service-upstream: \"true\"")),
    ] {
        if rng.chance(percent) {
            annotations.push(annotation);
        }
    }
    let class = if rng.chance(90) {
        "portcullis"
    } else {
        "other"
    };
    let created = format!("2026-0{}-01T00:00:00Z", rng.below(3) + 1);
    let mut spec = format!("  ingressClassName: {class}\n");
    if rng.chance(15) {
        let _ = writeln!(
            spec,
            "  defaultBackend: {{service: {{name: {}, port: {{number: 80}}}}}}",
            rng.pick(SERVICES)
        );
    }
    if rng.chance(60) {
        spec.push_str("  tls:\n");
        for _ in 0..rng.below(2) + 1 {
            let hosts: Vec<&str> = (0..rng.below(3)).map(|_| rng.pick(&HOSTS[..5])).collect();
            let secret = rng.pick(&["tls-a", "tls-wild", "tls-b", "tls-short", "missing"]);
            let _ = writeln!(spec, "  - hosts: {hosts:?}\n    secretName: {secret}");
        }
    }
    spec.push_str("  rules:\n");
    for _ in 0..rng.below(3) {
        let host = rng.pick(HOSTS);
        if host.is_empty() {
            spec.push_str("  - http:\n      paths:\n");
        } else {
            let _ = write!(spec, "  - host: \"{host}\"\n    http:\n      paths:\n");
        }
        for _ in 0..rng.below(2) + 1 {
            let path = rng.pick(&["/", "/x", "/x/y", "/x.*"]);
            let kind = rng.pick(&["Prefix", "Exact", "ImplementationSpecific"]);
            let port = if rng.chance(80) {
                "number: 80"
            } else {
                "name: http"
            };
            let _ = write!(
                spec,
                "      - path: \"{path}\"\n        pathType: {kind}\n        backend: {{service: {{name: {}, port: {{{port}}}}}}}\n",
                rng.pick(SERVICES)
            );
        }
    }
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!(
            "  annotations:\n{}",
            annotations
                .iter()
                .map(|a| format!("    {a}\n"))
                .collect::<String>()
        )
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: ns\n  creationTimestamp: \"{created}\"\n{annotations}spec:\n{spec}"
    )
}

fn class_yaml(rng: &mut Rng) -> String {
    let controller = if rng.chance(85) {
        "portcullis.io/ingress-controller"
    } else {
        "example.com/other"
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: portcullis}}\nspec: {{controller: {controller}}}\n"
    )
}

/// The objects of one moment; an object not changed keeps its `Arc`, as both sources do.
struct World {
    objects: BTreeMap<ObjectRef, Object>,
}

impl World {
    fn set(&mut self, yaml: &str) {
        let (objects, problems) = parse_documents(yaml, &Arc::from("test.yaml"));
        assert!(problems.is_empty(), "{problems:?}\n{yaml}");
        for object in objects {
            self.objects.insert(object.object_ref(), object);
        }
    }

    fn remove(&mut self, kind: Kind, name: &str) {
        let namespace = if kind == Kind::IngressClass { "" } else { "ns" };
        self.objects.remove(&ObjectRef::new(kind, namespace, name));
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        let mut snapshot = Snapshot::default();
        for object in self.objects.values() {
            snapshot.push(object.clone());
        }
        Arc::new(snapshot)
    }

    /// One random change: an object of a random kind added, replaced or removed.
    fn change(&mut self, rng: &mut Rng) {
        let remove = rng.chance(15);
        match rng.below(10) {
            0..=4 => {
                let name = format!("ing{}", rng.below(8));
                match remove {
                    true => self.remove(Kind::Ingress, &name),
                    false => self.set(&ingress_yaml(rng, &name)),
                }
            }
            5 | 6 => {
                let name = rng.pick(SECRETS);
                match remove {
                    true => self.remove(Kind::Secret, name),
                    false => self.set(&secret_yaml(rng, name)),
                }
            }
            7 => {
                let name = rng.pick(SERVICES);
                match remove {
                    true => self.remove(Kind::Service, name),
                    false => self.set(&service_yaml(rng, name)),
                }
            }
            8 => {
                let name = rng.pick(&["slice1", "slice2"]);
                match remove {
                    true => self.remove(Kind::EndpointSlice, name),
                    false => self.set(&slice_yaml(rng, name)),
                }
            }
            // Otherwise unchanged objects, a new moment: nothing is translated again.
            _ => {
                if rng.chance(50) {
                    self.set(&class_yaml(rng));
                }
            }
        }
    }
}

fn route_line(route: Option<&Arc<Route>>) -> String {
    let Some(r) = route else {
        return "none".into();
    };
    let client_cert = match &r.policy.client_cert {
        None => "-",
        Some(ClientCertPolicy::Enforce(_)) => "enforce",
        Some(ClientCertPolicy::Unavailable) => "unavailable",
    };
    format!(
        "{} host={:?} backend={}:{} {:?} fallback={:?} redirect={} to={:?} regex={:?} cookie={} canary={:?} client-cert={client_cert} basic-auth={} error-pages={:?}",
        r.ingress,
        r.host,
        r.backend.service,
        r.backend.port,
        r.backend.endpoints,
        r.fallback
            .as_ref()
            .map(|b| (b.service.to_string(), b.endpoints.clone())),
        r.https_redirect,
        r.redirect_host,
        r.path_regex.as_ref().map(|re| re.as_str().to_string()),
        r.cookie_path,
        r.canary
            .as_ref()
            .map(|c| (c.ingress.to_string(), c.backend.service.to_string())),
        r.policy.basic_auth.is_some(),
        r.policy.error_pages.as_ref().map(|e| (
            e.codes.clone(),
            e.backend.as_ref().map(|b| b.service.to_string())
        )),
    )
}

/// Everything a request, a handshake, a metric or a status update can observe of a configuration.
fn describe(config: &Config) -> String {
    let mut out = String::new();
    for host in PROBE_HOSTS {
        for path in PROBE_PATHS {
            let _ = writeln!(
                out,
                "{host}{path}: {}",
                route_line(config.routes.lookup(host, path))
            );
        }
        let cert = config
            .certs
            .find(host)
            .map(|k| format!("{:?}", &k.cert[0].as_ref()[..16]));
        let passthrough = config
            .passthrough
            .get(host)
            .map(|p| (p.ingress.to_string(), p.backend.service.to_string()));
        let _ = writeln!(out, "{host}: cert {cert:?} passthrough {passthrough:?}");
    }
    let _ = writeln!(
        out,
        "default: {}",
        route_line(config.routes.default_value())
    );
    let _ = writeln!(out, "ingresses: {:?}", config.ingresses);
    let _ = writeln!(out, "certificates: {:#?}", config.certificates);
    let _ = writeln!(out, "acme: {:#?}", config.acme);
    for problem in &config.problems {
        let _ = writeln!(out, "problem: {problem:?}");
    }
    out
}

fn options() -> BuildOptions {
    let settings = Settings::from_yaml(
        "tls:\n  ssl-passthrough: true\nacme:\n  default-issuer: le\n  issuers:\n    le: {directory: https://ca.example/dir}\n",
    )
    .unwrap();
    BuildOptions {
        ingress_class: "portcullis".into(),
        watch_without_class: false,
        default_cert: crate::tls::generate_default_cert(&provider()).unwrap(),
        settings: Arc::new(settings),
    }
}

#[test]
fn after_any_history_an_incremental_build_equals_a_full_one() {
    let options = options();
    let mut partial_builds = 0;
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut world = World {
            objects: BTreeMap::new(),
        };
        world.set(&class_yaml(&mut Rng(1)));
        for _ in 0..6 {
            world.change(&mut rng);
        }
        let mut incremental = Incremental::default();
        let mut incremental_certs = CertStore::new(provider());
        let mut full_certs = CertStore::new(provider());
        let mut now = T0;
        for step in 0..60u64 {
            let snapshot = world.snapshot();
            let (got, rebuilt) =
                incremental.apply(&snapshot, &options, &mut incremental_certs, now, step);
            let want = build(&snapshot, &options, &mut full_certs, now, step);
            assert_eq!(
                describe(&got),
                describe(&want),
                "seed {seed}, step {step} ({rebuilt:?})"
            );
            if matches!(rebuilt, Rebuilt::Some(_)) {
                partial_builds += 1;
            }
            world.change(&mut rng);
            now += rng.below(4 * 3600) as i64;
        }
    }
    // Most changes reach a few Ingresses: the property is about partial builds, not fallbacks.
    assert!(
        partial_builds > 1200,
        "only {partial_builds} partial builds"
    );
}

#[test]
fn one_changed_secret_among_many_translates_only_its_ingress() {
    let options = options();
    let mut world = World {
        objects: BTreeMap::new(),
    };
    let mut rng = Rng(7);
    world.set(&class_yaml(&mut Rng(1)));
    world.set(&service_yaml(&mut rng, "svc1"));
    let pems = pems();
    for i in 0..200 {
        world.set(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: h{i}, namespace: ns}}\nspec:\n  ingressClassName: portcullis\n  tls: [{{hosts: [h{i}.test], secretName: s{i}}}]\n  rules: [{{host: h{i}.test, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: svc1, port: {{number: 80}}}}}}}}]}}}}]\n"
        ));
        let (crt, key) = &pems[if i % 2 == 0 { "a" } else { "b" }];
        world.set(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: s{i}, namespace: ns}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(crt),
            indent(key)
        ));
    }
    let mut incremental = Incremental::default();
    let mut certs = CertStore::new(provider());
    let (_, first) = incremental.apply(&world.snapshot(), &options, &mut certs, T0, 1);
    assert_eq!(first, Rebuilt::All);

    let (crt, key) = &pems["wild"];
    world.set(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: s7, namespace: ns}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(crt),
        indent(key)
    ));
    let (config, rebuilt) = incremental.apply(&world.snapshot(), &options, &mut certs, T0, 2);
    assert_eq!(rebuilt, Rebuilt::Some(1));
    let served = |host: &str| config.certs.find(host).map(|k| k.cert[0].clone());
    use rustls::pki_types::pem::PemObject;
    let wild = rustls::pki_types::CertificateDer::from_pem_slice(crt.as_bytes()).unwrap();
    assert_eq!(served("h7.test"), Some(wild));
    assert_eq!(config.certs.len(), 200);
    assert_eq!(
        config
            .routes
            .lookup("h150.test", "/")
            .map(|r| r.ingress.name.as_str()),
        Some("h150")
    );
    assert!(
        config
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::CertificateHostMismatch)
    );

    // The Service every Ingress uses changed: all of them again, by a full build.
    world.set(&service_yaml(&mut rng, "svc1"));
    let (_, rebuilt) = incremental.apply(&world.snapshot(), &options, &mut certs, T0, 3);
    assert_eq!(rebuilt, Rebuilt::All);
}
