use std::sync::Arc;

use super::*;
use crate::model::Object;
use crate::settings::Settings;
use crate::source::manifests::parse_documents;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn options() -> BuildOptions {
    BuildOptions {
        ingress_class: "portcullis".into(),
        watch_without_class: false,
        default_cert: crate::tls::generate_default_cert(&provider()).unwrap(),
        settings: Arc::new(Settings::default()),
    }
}

fn snapshot(yaml: &str) -> Snapshot {
    let (objects, problems) = parse_documents(yaml, &Arc::from("test.yaml"));
    assert!(problems.is_empty(), "{problems:?}");
    let mut s = Snapshot::default();
    objects.into_iter().for_each(|o: Object| s.push(o));
    s
}

fn build_with(yaml: &str, options: &BuildOptions) -> Config {
    let mut certs = CertStore::new(provider());
    build(&snapshot(yaml), options, &mut certs, 1_800_000_000, 1)
}

fn build_yaml(yaml: &str) -> Config {
    build_with(yaml, &options())
}

/// Which Ingress and Service a request goes to, as "ingress->service".
fn route(config: &Config, host: &str, path: &str) -> Option<String> {
    config
        .routes
        .lookup(host, path)
        .map(|r| format!("{}->{}", r.ingress.name, r.backend.service.name))
}

fn kinds(config: &Config) -> Vec<ProblemKind> {
    config.problems.iter().map(|p| p.kind).collect()
}

fn ingress(
    name: &str,
    created: &str,
    host: &str,
    path: &str,
    path_type: &str,
    service: &str,
) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: ns, creationTimestamp: \"{created}\"}}\n\
         spec:\n  ingressClassName: portcullis\n  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: {path}\n        pathType: {path_type}\n        backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n---\n"
    )
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: ns}}\nspec: {{ports: [{{port: 80}}]}}\n---\n"
    )
}

#[test]
fn oldest_ingress_wins_a_conflicting_rule() {
    let yaml = [
        ingress(
            "newer",
            "2024-02-01T00:00:00Z",
            "a.example.com",
            "/",
            "Prefix",
            "svc-new",
        ),
        ingress(
            "older",
            "2024-01-01T00:00:00Z",
            "a.example.com",
            "/",
            "Prefix",
            "svc-old",
        ),
        service("svc-new"),
        service("svc-old"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert_eq!(
        route(&config, "a.example.com", "/x").as_deref(),
        Some("older->svc-old")
    );
    assert_eq!(kinds(&config), [ProblemKind::RuleConflict]);
    let p = &config.problems[0];
    assert_eq!(p.object.as_ref().unwrap().name, "newer");
    assert!(p.message.contains("ns/older"), "{}", p.message);
}

#[test]
fn equal_creation_times_are_decided_by_name() {
    let yaml = [
        ingress(
            "b",
            "2024-01-01T00:00:00Z",
            "a.example.com",
            "/",
            "Prefix",
            "svc-b",
        ),
        ingress(
            "a",
            "2024-01-01T00:00:00Z",
            "a.example.com",
            "/",
            "Prefix",
            "svc-a",
        ),
        service("svc-a"),
        service("svc-b"),
    ]
    .concat();
    assert_eq!(
        route(&build_yaml(&yaml), "a.example.com", "/").as_deref(),
        Some("a->svc-a")
    );
}

#[test]
fn rules_merge_across_ingresses_of_one_host() {
    let yaml = [
        ingress(
            "api",
            "2024-01-01T00:00:00Z",
            "a.example.com",
            "/api",
            "Prefix",
            "api",
        ),
        ingress(
            "web",
            "2024-01-02T00:00:00Z",
            "a.example.com",
            "/",
            "Prefix",
            "web",
        ),
        ingress(
            "health",
            "2024-01-03T00:00:00Z",
            "a.example.com",
            "/api",
            "Exact",
            "health",
        ),
        service("api"),
        service("web"),
        service("health"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert!(config.problems.is_empty(), "{:?}", config.problems);
    assert_eq!(
        route(&config, "a.example.com", "/api").as_deref(),
        Some("health->health")
    );
    assert_eq!(
        route(&config, "a.example.com", "/api/v1").as_deref(),
        Some("api->api")
    );
    assert_eq!(
        route(&config, "A.EXAMPLE.COM:443", "/index.html").as_deref(),
        Some("web->web")
    );
    assert_eq!(route(&config, "b.example.com", "/"), None);
}

#[test]
fn only_ingresses_of_our_class_are_served() {
    let ours = ingress(
        "ours",
        "2024-01-01T00:00:00Z",
        "a.example.com",
        "/",
        "Prefix",
        "svc",
    );
    let theirs = ingress(
        "theirs",
        "2024-01-01T00:00:00Z",
        "b.example.com",
        "/",
        "Prefix",
        "svc",
    )
    .replace("ingressClassName: portcullis", "ingressClassName: nginx");
    let legacy = ingress(
        "legacy",
        "2024-01-01T00:00:00Z",
        "c.example.com",
        "/",
        "Prefix",
        "svc",
    )
    .replace("  ingressClassName: portcullis\n", "")
    .replace(
        "namespace: ns,",
        "namespace: ns, annotations: {kubernetes.io/ingress.class: portcullis},",
    );
    let classless = ingress(
        "classless",
        "2024-01-01T00:00:00Z",
        "d.example.com",
        "/",
        "Prefix",
        "svc",
    )
    .replace("  ingressClassName: portcullis\n", "");
    let yaml = [ours, theirs, legacy, classless.clone(), service("svc")].concat();

    let config = build_yaml(&yaml);
    let served: Vec<&str> = config.ingresses.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(served, ["legacy", "ours"]);
    assert!(route(&config, "b.example.com", "/").is_none());
    assert!(route(&config, "d.example.com", "/").is_none());

    let mut with_classless = options();
    with_classless.watch_without_class = true;
    let config = build_with(&yaml, &with_classless);
    assert_eq!(
        route(&config, "d.example.com", "/").as_deref(),
        Some("classless->svc")
    );

    let default_class = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: portcullis\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: portcullis.io/ingress-controller}\n---\n";
    let config = build_yaml(&[&yaml, default_class].concat());
    assert_eq!(
        route(&config, "d.example.com", "/").as_deref(),
        Some("classless->svc")
    );
}

#[test]
fn an_ingress_class_of_another_controller_is_not_ours() {
    let yaml = [
        ingress("ours", "2024-01-01T00:00:00Z", "a.example.com", "/", "Prefix", "svc"),
        service("svc"),
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portcullis}\nspec: {controller: example.com/other}\n".into(),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert!(config.ingresses.is_empty());
    assert_eq!(kinds(&config), [ProblemKind::ForeignIngressClass]);
}

#[test]
fn backend_port_by_name_resolves_through_the_slice_port_name() {
    let yaml = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: ns}\nspec:\n  ingressClassName: portcullis\n  rules:\n  - http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}\n---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns}\nspec: {ports: [{name: metrics, port: 9090}, {name: http, port: 80, targetPort: web}]}\n---\n\
        apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: ns, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\n\
        ports: [{name: http, port: 8080}, {name: metrics, port: 9090}]\n\
        endpoints:\n- addresses: [10.0.0.1]\n  conditions: {ready: true}\n- addresses: [10.0.0.2]\n  conditions: {ready: false}\n- addresses: [10.0.0.3]\n---\n\
        apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: other, namespace: ns, labels: {kubernetes.io/service-name: other}}\naddressType: IPv4\nports: [{name: http, port: 1}]\nendpoints: [{addresses: [10.9.9.9]}]\n";
    let config = build_yaml(yaml);
    assert!(config.problems.is_empty(), "{:?}", config.problems);
    let r = config.routes.lookup("anything", "/").unwrap();
    let endpoints: Vec<String> = r
        .backend
        .endpoints
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(endpoints, ["10.0.0.1:8080", "10.0.0.3:8080"]);
    let picks: Vec<_> = (0..4)
        .map(|_| r.backend.pick().unwrap().to_string())
        .collect();
    assert_eq!(
        picks,
        [
            "10.0.0.1:8080",
            "10.0.0.3:8080",
            "10.0.0.1:8080",
            "10.0.0.3:8080"
        ],
        "round robin"
    );
}

#[test]
fn missing_service_or_port_keeps_the_route_with_no_endpoints() {
    let yaml = [
        ingress(
            "a",
            "2024-01-01T00:00:00Z",
            "a.example.com",
            "/",
            "Prefix",
            "absent",
        ),
        ingress(
            "b",
            "2024-01-01T00:00:00Z",
            "b.example.com",
            "/",
            "Prefix",
            "svc",
        )
        .replace("number: 80", "number: 81"),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert_eq!(
        kinds(&config),
        [ProblemKind::MissingService, ProblemKind::MissingServicePort]
    );
    assert!(
        config
            .routes
            .lookup("a.example.com", "/")
            .unwrap()
            .backend
            .pick()
            .is_none()
    );
    assert!(
        config
            .routes
            .lookup("b.example.com", "/")
            .unwrap()
            .backend
            .pick()
            .is_none()
    );
    assert!(
        config.problems[0].to_string().contains("Ingress ns/a"),
        "{}",
        config.problems[0]
    );
}

#[test]
fn invalid_rules_are_skipped_and_the_rest_served() {
    let backend = "backend: {service: {name: svc, port: {number: 80}}}";
    let yaml = [
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: mixed, namespace: ns}\nspec:\n  ingressClassName: portcullis\n  rules:\n".to_string(),
        format!("  - host: bad_host.example.com\n    http: {{paths: [{{path: /, pathType: Prefix, {backend}}}]}}\n"),
        "  - host: good.example.com\n    http:\n      paths:\n".to_string(),
        format!("      - {{path: relative, pathType: Prefix, {backend}}}\n"),
        format!("      - {{path: /x, pathType: Regex, {backend}}}\n"),
        format!("      - {{path: /ok, pathType: Exact, {backend}}}\n---\n"),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert_eq!(kinds(&config), [ProblemKind::InvalidRule; 3]);
    assert_eq!(
        route(&config, "good.example.com", "/ok").as_deref(),
        Some("mixed->svc")
    );
    assert_eq!(route(&config, "bad_host.example.com", "/"), None);
}

#[test]
fn default_backend_of_the_oldest_ingress_serves_unmatched_requests() {
    let default_backend = |name: &str, created: &str, svc: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: ns, creationTimestamp: \"{created}\"}}\nspec:\n  ingressClassName: portcullis\n  defaultBackend: {{service: {{name: {svc}, port: {{number: 80}}}}}}\n---\n"
        )
    };
    let yaml = [
        default_backend("second", "2024-02-01T00:00:00Z", "two"),
        default_backend("first", "2024-01-01T00:00:00Z", "one"),
        ingress(
            "rules",
            "2024-03-01T00:00:00Z",
            "a.example.com",
            "/api",
            "Prefix",
            "one",
        ),
        service("one"),
        service("two"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert_eq!(
        route(&config, "a.example.com", "/api").as_deref(),
        Some("rules->one")
    );
    assert_eq!(
        route(&config, "a.example.com", "/other").as_deref(),
        Some("first->one")
    );
    assert_eq!(route(&config, "", "/").as_deref(), Some("first->one"));
    assert_eq!(kinds(&config), [ProblemKind::RuleConflict]);
}

fn tls_secret(name: &str, names: &[&str]) -> String {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    secret_yaml(name, &ck.cert.pem(), &ck.signing_key.serialize_pem())
}

fn secret_yaml(name: &str, crt: &str, key: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: ns}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(crt),
        indent(key)
    )
}

fn tls_ingress(
    name: &str,
    annotations: &str,
    tls_hosts: &[&str],
    secret: &str,
    rule_hosts: &[&str],
) -> String {
    let rules: String = rule_hosts
        .iter()
        .map(|h| format!("  - host: \"{h}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}]}}\n"))
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: ns, annotations: {{{annotations}}}}}\nspec:\n  ingressClassName: portcullis\n  tls:\n  - hosts: {tls_hosts:?}\n    secretName: {secret}\n  rules:\n{rules}---\n"
    )
}

#[test]
fn tls_hosts_get_their_certificate_and_redirect() {
    let yaml = [
        tls_ingress(
            "tls",
            "",
            &["a.example.com", "*.w.example.com"],
            "cert",
            &["a.example.com", "*.w.example.com", "plain.example.com"],
        ),
        tls_secret("cert", &["a.example.com", "*.w.example.com"]),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert!(config.problems.is_empty(), "{:?}", config.problems);
    assert!(config.certs.find("a.example.com").is_some());
    assert!(config.certs.find("x.w.example.com").is_some());
    assert!(config.certs.find("w.example.com").is_none());
    assert!(config.certs.find("plain.example.com").is_none());
    let redirect = |host: &str| config.routes.lookup(host, "/").unwrap().https_redirect;
    assert!(redirect("a.example.com"));
    assert!(redirect("x.w.example.com"));
    assert!(!redirect("plain.example.com"));
    assert_eq!(config.certificates.len(), 2);
    assert_eq!(
        config.certificates[0].secret,
        NamespacedName::new("ns", "cert")
    );
}

#[test]
fn redirect_annotations_switch_it_off_or_force_it() {
    let yaml = [
        tls_ingress(
            "off",
            "portcullis.io/ssl-redirect: \"false\"",
            &["a.example.com"],
            "cert",
            &["a.example.com"],
        ),
        tls_ingress(
            "forced",
            "nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"",
            &["a.example.com"],
            "cert",
            &["b.example.com"],
        ),
        tls_secret("cert", &["a.example.com"]),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert!(
        !config
            .routes
            .lookup("a.example.com", "/")
            .unwrap()
            .https_redirect
    );
    assert!(
        config
            .routes
            .lookup("b.example.com", "/")
            .unwrap()
            .https_redirect
    );
}

#[test]
fn certificate_problems_are_reported_per_ingress() {
    let other = rcgen::generate_simple_self_signed(vec!["a.example.com".to_string()]).unwrap();
    let mine = rcgen::generate_simple_self_signed(vec!["a.example.com".to_string()]).unwrap();
    let yaml = [
        tls_ingress(
            "missing",
            "",
            &["m.example.com"],
            "nope",
            &["m.example.com"],
        ),
        tls_ingress(
            "wrong-host",
            "",
            &["w.example.com"],
            "cert",
            &["w.example.com"],
        ),
        tls_ingress(
            "mismatch",
            "",
            &["a.example.com"],
            "mismatched",
            &["a.example.com"],
        ),
        tls_secret("cert", &["a.example.com"]),
        secret_yaml(
            "mismatched",
            &mine.cert.pem(),
            &other.signing_key.serialize_pem(),
        ),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    let mut found: Vec<(String, ProblemKind)> = config
        .problems
        .iter()
        .map(|p| (p.object.as_ref().unwrap().name.clone(), p.kind))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("mismatch".to_string(), ProblemKind::KeyMismatch),
            ("missing".to_string(), ProblemKind::MissingSecret),
            (
                "wrong-host".to_string(),
                ProblemKind::CertificateHostMismatch
            ),
        ]
    );
    // A certificate for another name is still served for the host it was given for (the client's
    // name check then says what is wrong); a missing Secret and a mismatched key give nothing.
    assert_eq!(config.certs.len(), 1);
    assert!(config.certs.find("w.example.com").is_some());
    // Hosts in a TLS section still redirect, and are served with the default certificate.
    assert!(
        config
            .routes
            .lookup("m.example.com", "/")
            .unwrap()
            .https_redirect
    );
}

#[test]
fn a_tls_host_claimed_twice_keeps_the_older_certificate() {
    let yaml = [
        tls_ingress("first", "", &["a.example.com"], "one", &["a.example.com"]).replace(
            "namespace: ns,",
            "namespace: ns, creationTimestamp: \"2024-01-01T00:00:00Z\",",
        ),
        tls_ingress("second", "", &["a.example.com"], "two", &[])
            .replace(
                "namespace: ns,",
                "namespace: ns, creationTimestamp: \"2024-02-01T00:00:00Z\",",
            )
            .replace("  rules:\n", ""),
        tls_secret("one", &["a.example.com"]),
        tls_secret("two", &["a.example.com"]),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert_eq!(kinds(&config), [ProblemKind::TlsHostConflict]);
    assert_eq!(config.certificates.len(), 1);
    assert_eq!(config.certificates[0].secret.name, "one");
}

#[test]
fn a_secret_that_turns_bad_keeps_its_last_good_certificate() {
    let good = [
        tls_ingress("tls", "", &["a.example.com"], "cert", &["a.example.com"]),
        tls_secret("cert", &["a.example.com"]),
        service("svc"),
    ]
    .concat();
    let bad = [
        tls_ingress("tls", "", &["a.example.com"], "cert", &["a.example.com"]),
        secret_yaml(
            "cert",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----",
            "junk",
        ),
        service("svc"),
    ]
    .concat();
    let mut certs = CertStore::new(provider());
    let opts = options();
    let first = build(&snapshot(&good), &opts, &mut certs, 1_800_000_000, 1);
    let second = build(&snapshot(&bad), &opts, &mut certs, 1_800_000_000, 2);
    assert_eq!(kinds(&second), [ProblemKind::InvalidCertificate]);
    assert!(
        second.problems[0]
            .message
            .contains("last good certificate stays in use"),
        "{}",
        second.problems[0]
    );
    assert!(Arc::ptr_eq(
        first.certs.find("a.example.com").unwrap(),
        second.certs.find("a.example.com").unwrap()
    ));
}

#[test]
fn expired_certificates_are_reported_but_served() {
    let yaml = [
        tls_ingress("tls", "", &["a.example.com"], "cert", &["a.example.com"]),
        tls_secret("cert", &["a.example.com"]),
        service("svc"),
    ]
    .concat();
    let mut certs = CertStore::new(provider());
    // rcgen certificates are valid until 4096; far in the future they have expired.
    let config = build(&snapshot(&yaml), &options(), &mut certs, 80_000_000_000, 1);
    assert_eq!(kinds(&config), [ProblemKind::CertificateExpired]);
    assert!(config.certs.find("a.example.com").is_some());
}

#[test]
fn default_ssl_certificate_replaces_the_generated_one() {
    let yaml = tls_secret("fallback", &["fallback.example.com"]);
    let mut opts = options();
    let with_default = |name: &str| {
        let mut settings = Settings::default();
        settings.tls.default_certificate = Some(NamespacedName::new("ns", name));
        Arc::new(settings)
    };
    opts.settings = with_default("fallback");
    let config = build_with(&yaml, &opts);
    assert!(config.problems.is_empty(), "{:?}", config.problems);
    assert!(!Arc::ptr_eq(
        config.certs.default_cert(),
        &opts.default_cert
    ));

    opts.settings = with_default("absent");
    let config = build_with(&yaml, &opts);
    assert_eq!(kinds(&config), [ProblemKind::MissingSecret]);
    assert!(Arc::ptr_eq(config.certs.default_cert(), &opts.default_cert));
}

#[test]
fn invalid_annotation_values_are_reported() {
    let yaml = [
        tls_ingress(
            "a",
            "portcullis.io/ssl-redirect: maybe",
            &["a.example.com"],
            "cert",
            &["a.example.com"],
        ),
        tls_secret("cert", &["a.example.com"]),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert_eq!(kinds(&config), [ProblemKind::InvalidAnnotation]);
    assert!(
        config
            .routes
            .lookup("a.example.com", "/")
            .unwrap()
            .https_redirect,
        "the default applies"
    );
}

fn annotated_ingress(
    name: &str,
    annotations: &str,
    host: &str,
    paths: &[(&str, &str)],
    service: &str,
) -> String {
    let paths: String = paths
        .iter()
        .map(|(p, t)| format!("      - {{path: \"{p}\", pathType: {t}, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"))
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: ns, annotations: {{{annotations}}}}}\n\
         spec:\n  ingressClassName: portcullis\n  rules:\n  - host: {host}\n    http:\n      paths:\n{paths}---\n"
    )
}

#[test]
fn use_regex_paths_match_as_anchored_case_insensitive_regexes() {
    let yaml = [
        annotated_ingress(
            "re",
            "nginx.ingress.kubernetes.io/use-regex: \"true\"",
            "a.example.com",
            &[
                ("/api/v[0-9]+", "ImplementationSpecific"),
                ("/exact", "Exact"),
            ],
            "svc",
        ),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert!(config.problems.is_empty(), "{:?}", config.problems);
    assert!(route(&config, "a.example.com", "/API/V2/users").is_some());
    assert!(
        route(&config, "a.example.com", "/x/api/v2").is_none(),
        "anchored at the start"
    );
    assert!(route(&config, "a.example.com", "/exact").is_some());
    assert!(
        route(&config, "a.example.com", "/exact/more").is_none(),
        "Exact paths stay exact"
    );
    let r = config.routes.lookup("a.example.com", "/api/v1").unwrap();
    assert!(r.path_regex.is_some());
}

#[test]
fn invalid_or_huge_regexes_are_reported_not_served() {
    let huge = "/(a{1000}){1000}".to_string();
    let yaml = [
        annotated_ingress(
            "re",
            "nginx.ingress.kubernetes.io/rewrite-target: /$1",
            "a.example.com",
            &[
                ("/ok/(.*)", "Prefix"),
                ("/broken/(", "Prefix"),
                (&huge, "Prefix"),
            ],
            "svc",
        ),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert_eq!(
        kinds(&config),
        [ProblemKind::InvalidRule, ProblemKind::InvalidRule]
    );
    assert!(
        config
            .problems
            .iter()
            .any(|p| p.message.contains("not a valid regular expression"))
    );
    let r = config.routes.lookup("a.example.com", "/ok/x").unwrap();
    assert_eq!(r.policy.upstream.rewrite_target.as_deref(), Some("/$1"));
}

#[test]
fn default_backend_annotation_is_the_fallback_when_a_service_has_no_endpoints() {
    let yaml = [
        annotated_ingress("a", "nginx.ingress.kubernetes.io/default-backend: fallback", "a.example.com", &[("/", "Prefix")], "empty"),
        service("empty"),
        service("fallback"),
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: f, namespace: ns, labels: {kubernetes.io/service-name: fallback}}\naddressType: IPv4\nports: [{port: 8080}]\nendpoints: [{addresses: [10.0.0.9]}]\n---\n".into(),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert!(config.problems.is_empty(), "{:?}", config.problems);
    let r = config.routes.lookup("a.example.com", "/").unwrap();
    assert!(r.backend.endpoints.is_empty());
    assert_eq!(
        r.fallback.as_ref().unwrap().pick().unwrap().to_string(),
        "10.0.0.9:8080"
    );

    let missing = annotated_ingress(
        "b",
        "nginx.ingress.kubernetes.io/default-backend: nope",
        "b.example.com",
        &[("/", "Prefix")],
        "fallback",
    );
    let config = build_yaml(&[missing, service("fallback")].concat());
    assert_eq!(kinds(&config), [ProblemKind::MissingService]);
}

#[test]
fn from_to_www_redirect_adds_the_other_host_unless_it_has_rules() {
    let yaml = [
        annotated_ingress(
            "a",
            "portcullis.io/from-to-www-redirect: \"true\"",
            "example.com",
            &[("/", "Prefix")],
            "svc",
        ),
        annotated_ingress(
            "b",
            "portcullis.io/from-to-www-redirect: \"true\"",
            "www.other.com",
            &[("/", "Prefix")],
            "svc",
        ),
        annotated_ingress("c", "", "other.com", &[("/", "Prefix")], "svc"),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert!(config.problems.is_empty(), "{:?}", config.problems);
    let www = config.routes.lookup("www.example.com", "/x").unwrap();
    assert_eq!(www.redirect_host.as_deref(), Some("example.com"));
    assert!(
        config
            .routes
            .lookup("example.com", "/")
            .unwrap()
            .redirect_host
            .is_none()
    );
    let other = config.routes.lookup("other.com", "/").unwrap();
    assert_eq!(other.ingress.name, "c", "real rules win over the alias");
}

#[test]
fn unsupported_ingress_nginx_annotations_are_reported_once_per_ingress() {
    let yaml = [
        annotated_ingress("a", "nginx.ingress.kubernetes.io/enable-modsecurity: \"true\", nginx.ingress.kubernetes.io/server-snippet: x", "a.example.com", &[("/", "Prefix"), ("/b", "Prefix")], "svc"),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert_eq!(
        kinds(&config),
        [
            ProblemKind::UnsupportedAnnotation,
            ProblemKind::UnsupportedAnnotation
        ]
    );
    assert!(
        config.routes.lookup("a.example.com", "/").is_some(),
        "the Ingress is still served"
    );
}

#[test]
fn policy_is_per_ingress() {
    let yaml = [
        annotated_ingress("slow", "nginx.ingress.kubernetes.io/proxy-read-timeout: \"300\", portcullis.io/hsts: \"false\"", "a.example.com", &[("/slow", "Prefix")], "svc"),
        annotated_ingress("fast", "", "a.example.com", &[("/", "Prefix")], "svc"),
        service("svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    let slow = config.routes.lookup("a.example.com", "/slow/x").unwrap();
    let fast = config.routes.lookup("a.example.com", "/other").unwrap();
    assert_eq!(
        slow.policy.upstream.read_timeout,
        std::time::Duration::from_secs(300)
    );
    assert_eq!(
        fast.policy.upstream.read_timeout,
        std::time::Duration::from_secs(60)
    );
    assert!(slow.policy.hsts.is_none() && fast.policy.hsts.is_some());
    assert!(
        Arc::ptr_eq(&slow.backend, &fast.backend),
        "one Service port, one backend"
    );
}

/// A Secret with a CA certificate under `ca.crt`, as `auth-tls-secret` names it.
fn ca_secret(name: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    let indent: String = ca.pem().lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: ns}}\nstringData:\n  ca.crt: |\n{indent}---\n"
    )
}

fn client_cert_policy<'c>(
    config: &'c Config,
    host: &str,
    path: &str,
) -> Option<&'c annotations::client_cert::ClientCertPolicy> {
    config
        .routes
        .lookup(host, path)
        .and_then(|r| r.policy.client_cert.as_ref())
}

#[test]
fn client_certificates_resolve_per_ingress_and_fail_closed() {
    use annotations::client_cert::ClientCertPolicy;
    let tls = "nginx.ingress.kubernetes.io/auth-tls-secret";
    let yaml = [
        ca_secret("ca"),
        service("svc"),
        annotated_ingress(
            "good",
            &format!("{tls}: ns/ca"),
            "good.example",
            &[("/", "Prefix")],
            "svc",
        ),
        annotated_ingress(
            "missing",
            &format!("{tls}: nope"),
            "missing.example",
            &[("/", "Prefix")],
            "svc",
        ),
        annotated_ingress("plain", "", "plain.example", &[("/", "Prefix")], "svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert!(
        matches!(
            client_cert_policy(&config, "good.example", "/"),
            Some(ClientCertPolicy::Enforce(_))
        ),
        "{:?}",
        config.problems
    );
    assert_eq!(
        client_cert_policy(&config, "missing.example", "/"),
        Some(&ClientCertPolicy::Unavailable)
    );
    assert_eq!(client_cert_policy(&config, "plain.example", "/"), None);
    assert_eq!(kinds(&config), [ProblemKind::MissingSecret]);
}

#[test]
fn ingresses_of_one_host_that_disagree_on_client_certificates_fail_closed_for_that_host() {
    use annotations::client_cert::ClientCertPolicy;
    let tls = "nginx.ingress.kubernetes.io/auth-tls-secret";
    let yaml = [
        ca_secret("ca"),
        service("svc"),
        annotated_ingress(
            "strict",
            &format!("{tls}: ca"),
            "shared.example",
            &[("/admin", "Prefix")],
            "svc",
        ),
        annotated_ingress("lax", "", "shared.example", &[("/", "Prefix")], "svc"),
        annotated_ingress(
            "same-a",
            &format!("{tls}: ca"),
            "agree.example",
            &[("/a", "Prefix")],
            "svc",
        ),
        annotated_ingress(
            "same-b",
            &format!("{tls}: ns/ca"),
            "agree.example",
            &[("/b", "Prefix")],
            "svc",
        ),
        annotated_ingress("alone", "", "other.example", &[("/", "Prefix")], "svc"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    for path in ["/admin", "/"] {
        assert_eq!(
            client_cert_policy(&config, "shared.example", path),
            Some(&ClientCertPolicy::Unavailable),
            "{path}"
        );
    }
    for path in ["/a", "/b"] {
        assert!(matches!(
            client_cert_policy(&config, "agree.example", path),
            Some(ClientCertPolicy::Enforce(_))
        ));
    }
    assert_eq!(client_cert_policy(&config, "other.example", "/"), None);
    let conflicts: Vec<&str> = config
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::RuleConflict)
        .map(|p| p.object.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(conflicts, ["lax", "strict"], "{:?}", config.problems);
}

/// `ingress()` with these `nginx.ingress.kubernetes.io/` annotations.
fn annotated(
    name: &str,
    created: &str,
    host: &str,
    service: &str,
    annotations: &[(&str, &str)],
) -> String {
    let plain = ingress(name, created, host, "/", "Prefix", service);
    let list: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("nginx.ingress.kubernetes.io/{k}: {v:?}"))
        .collect();
    plain.replacen(
        &format!("creationTimestamp: \"{created}\"}}"),
        &format!(
            "creationTimestamp: \"{created}\", annotations: {{{}}}}}",
            list.join(", ")
        ),
        1,
    )
}

#[test]
fn a_canary_attaches_to_the_primary_route_whatever_their_age() {
    let yaml = [
        // Older than its primary: canaries are attached after every primary is in place.
        annotated(
            "app-canary",
            "2024-01-01T00:00:00Z",
            "a.example.com",
            "app-v2",
            &[
                ("canary", "true"),
                ("canary-weight", "20"),
                ("rewrite-target", "/x"),
                ("limit-rps", "nonsense"),
                ("ssl-passthrough", "true"),
            ],
        ),
        annotated("app", "2024-02-01T00:00:00Z", "a.example.com", "app", &[]),
        service("app"),
        service("app-v2"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    let r = config.routes.lookup("a.example.com", "/").unwrap();
    assert_eq!(r.ingress.name, "app", "the canary adds no route of its own");
    let canary = r.canary.as_ref().expect("canary attached");
    assert_eq!(
        (canary.backend.service.name.as_str(), canary.rule.weight),
        ("app-v2", 20)
    );
    let ignored: Vec<&Problem> = config
        .problems
        .iter()
        .filter(|p| p.message.contains("ignored on a canary"))
        .collect();
    assert_eq!(ignored.len(), 3, "{:?}", config.problems);
    assert!(ignored[0].message.contains("limit-rps"));
    assert!(ignored[1].message.contains("rewrite-target"));
    assert_eq!(
        config.problems.len(),
        3,
        "each ignored annotation is reported once, as ignored: {:?}",
        config.problems
    );
    assert_eq!(
        kinds(&config)
            .iter()
            .filter(|k| **k == ProblemKind::RuleConflict)
            .count(),
        0
    );
}

#[test]
fn a_canary_without_primary_or_a_second_canary_is_reported() {
    let yaml = [
        annotated("app", "2024-01-01T00:00:00Z", "a.example.com", "app", &[]),
        annotated(
            "c1",
            "2024-02-01T00:00:00Z",
            "a.example.com",
            "v2",
            &[("canary", "true")],
        ),
        annotated(
            "c2",
            "2024-03-01T00:00:00Z",
            "a.example.com",
            "v3",
            &[("canary", "true")],
        ),
        annotated(
            "lost",
            "2024-03-01T00:00:00Z",
            "b.example.com",
            "v2",
            &[("canary", "true")],
        ),
        service("app"),
        service("v2"),
        service("v3"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    let r = config.routes.lookup("a.example.com", "/").unwrap();
    assert_eq!(
        r.canary.as_ref().unwrap().ingress.name,
        "c1",
        "the older canary stays"
    );
    assert!(config.routes.lookup("b.example.com", "/").is_none());
    let about = |name: &str| {
        config
            .problems
            .iter()
            .filter(|p| p.object.as_ref().is_some_and(|o| o.name == name))
            .map(|p| (p.kind, p.message.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        about("c2")[0].0,
        ProblemKind::RuleConflict,
        "{:?}",
        about("c2")
    );
    assert!(
        about("lost")[0]
            .1
            .contains("no primary Ingress serves host \"b.example.com\""),
        "{:?}",
        about("lost")
    );
}

fn passthrough_options() -> BuildOptions {
    let mut settings = Settings::default();
    settings.tls.ssl_passthrough = true;
    BuildOptions {
        settings: Arc::new(settings),
        ..options()
    }
}

const PASSTHROUGH: &str = "nginx.ingress.kubernetes.io/ssl-passthrough: \"true\"";

#[test]
fn passthrough_hosts_go_to_the_backend_of_their_root_path() {
    let yaml = [
        annotated_ingress(
            "cd",
            PASSTHROUGH,
            "CD.example.com",
            &[("/", "Prefix"), ("/api", "Prefix")],
            "argocd",
        ),
        service("argocd"),
    ]
    .concat();
    let config = build_with(&yaml, &passthrough_options());
    let entry = config
        .passthrough
        .get("cd.example.com")
        .expect("passed through");
    assert_eq!(entry.backend.service.name, "argocd");
    assert_eq!(entry.ingress.name, "cd");
    assert!(config.passthrough.get("example.com").is_none());
    // The other path is reported; plain HTTP for the host redirects to HTTPS.
    assert!(
        config
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::InvalidRule
                && p.message
                    .contains("paths[1]: ssl-passthrough uses the path / alone")),
        "{:?}",
        config.problems
    );
    let r = config.routes.lookup("cd.example.com", "/x").unwrap();
    assert!(r.https_redirect && r.backend.endpoints.is_empty());
}

#[test]
fn passthrough_ignores_and_reports_every_other_annotation() {
    let annotations = format!(
        "{PASSTHROUGH}, nginx.ingress.kubernetes.io/whitelist-source-range: \"bogus\", portcullis.io/hsts: \"false\""
    );
    let yaml = [
        annotated_ingress(
            "cd",
            &annotations,
            "cd.example.com",
            &[("/", "Prefix")],
            "argocd",
        ),
        service("argocd"),
    ]
    .concat();
    let config = build_with(&yaml, &passthrough_options());
    let messages: Vec<&str> = config.problems.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    for key in [
        "nginx.ingress.kubernetes.io/whitelist-source-range",
        "portcullis.io/hsts",
    ] {
        assert!(
            messages
                .iter()
                .any(|m| m.contains(&format!("{key} is ignored"))),
            "{messages:?}"
        );
    }
    assert!(config.passthrough.get("cd.example.com").is_some());
}

#[test]
fn passthrough_needs_the_flag_and_is_otherwise_served_terminated() {
    let yaml = [
        annotated_ingress(
            "cd",
            PASSTHROUGH,
            "cd.example.com",
            &[("/", "Prefix")],
            "argocd",
        ),
        service("argocd"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    assert!(config.passthrough.is_empty());
    assert_eq!(kinds(&config), [ProblemKind::InvalidAnnotation]);
    assert_eq!(
        route(&config, "cd.example.com", "/").as_deref(),
        Some("cd->argocd")
    );
}

#[test]
fn passthrough_needs_an_exact_host_and_the_older_ingress_keeps_one() {
    let yaml = [
        ingress(
            "terminated",
            "2024-01-01T00:00:00Z",
            "cd.example.com",
            "/ui",
            "Prefix",
            "a",
        ),
        annotated_ingress(
            "wild",
            PASSTHROUGH,
            "'*.example.com'",
            &[("/", "Prefix")],
            "a",
        ),
        annotated_ingress("cd", PASSTHROUGH, "cd.example.com", &[("/", "Prefix")], "a"),
        annotated_ingress(
            "cd2",
            PASSTHROUGH,
            "cd.example.com",
            &[("/", "Prefix")],
            "b",
        ),
        service("a"),
        service("b"),
    ]
    .concat();
    let config = build_with(&yaml, &passthrough_options());
    let of = |name: &str| -> Vec<&str> {
        config
            .problems
            .iter()
            .filter(|p| p.object.as_ref().is_some_and(|o| o.name == name))
            .map(|p| p.message.as_str())
            .collect()
    };
    assert!(
        of("wild")[0].contains("needs an exact host"),
        "{:?}",
        of("wild")
    );
    let entry = config.passthrough.get("cd.example.com").unwrap();
    assert_eq!(
        (
            entry.ingress.name.as_str(),
            entry.backend.service.name.as_str()
        ),
        ("cd", "a")
    );
    assert!(of("cd2")[0].contains("already passed through to the older Ingress ns/cd"));
    assert!(
        of("terminated")[0].contains("never reach this Ingress's rules"),
        "{:?}",
        of("terminated")
    );
}

#[test]
fn server_aliases_serve_every_route_of_the_host_unless_they_have_rules() {
    let yaml = [
        annotated_ingress(
            "shop",
            "nginx.ingress.kubernetes.io/server-alias: \"Shop.example.net, taken.example.com, *.shop.example.org\"",
            "shop.example.com",
            &[("/", "Prefix")],
            "a",
        ),
        ingress("api", "2024-01-01T00:00:00Z", "shop.example.com", "/api", "Prefix", "b"),
        ingress("taken", "2024-01-01T00:00:00Z", "taken.example.com", "/", "Prefix", "b"),
        service("a"),
        service("b"),
    ]
    .concat();
    let config = build_yaml(&yaml);
    for host in ["shop.example.net", "x.shop.example.org"] {
        assert_eq!(
            route(&config, host, "/").as_deref(),
            Some("shop->a"),
            "{host}"
        );
        assert_eq!(
            route(&config, host, "/api/v1").as_deref(),
            Some("api->b"),
            "{host}"
        );
    }
    assert_eq!(
        route(&config, "taken.example.com", "/").as_deref(),
        Some("taken->b")
    );
    assert_eq!(kinds(&config), [ProblemKind::RuleConflict]);
    assert!(
        config.problems[0]
            .message
            .contains("\"taken.example.com\" is ignored")
            && config.problems[0].message.contains("ns/taken"),
        "{:?}",
        config.problems
    );
}
