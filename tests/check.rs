//! `portcullis check`, the migration report, run as the real binary: the corpus of ingress-nginx
//! Ingresses in `tests/fixtures/check/corpus` against the reports checked in beside it, and the exit
//! codes (0 all the same, 1 something differs, 2 bad input).
//!
//! After a deliberate change, regenerate the expected reports with
//! `UPDATE_EXPECTED=1 cargo test --test check` and review the diff.

use std::path::Path;
use std::process::{Command, Output};

const FIXTURES: &str = "tests/fixtures/check";

/// Runs `portcullis check ARGS` from the crate's root, so file names in the report are stable.
fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

fn corpus_report(output: &str) -> Output {
    check(&[
        "--manifests",
        &format!("{FIXTURES}/corpus"),
        "--configmap",
        &format!("{FIXTURES}/configmap.yaml"),
        "--output",
        output,
    ])
}

/// Compares with the checked-in file, or rewrites it when `UPDATE_EXPECTED` is set.
fn assert_expected(actual: &[u8], file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(FIXTURES)
        .join(file);
    let actual = String::from_utf8_lossy(actual);
    if std::env::var_os("UPDATE_EXPECTED").is_some() {
        std::fs::write(&path, actual.as_bytes()).expect("expected report is writable");
        return;
    }
    let expected = std::fs::read_to_string(&path).expect("expected report is checked in");
    assert!(
        actual == expected,
        "the report differs from {file} (UPDATE_EXPECTED=1 cargo test --test check regenerates it):\n{actual}"
    );
}

#[test]
fn corpus_text_report_is_the_checked_in_one() {
    let out = corpus_report("text");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_expected(&out.stdout, "expected.txt");
}

#[test]
fn corpus_json_report_is_the_checked_in_one() {
    let out = corpus_report("json");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(report["result"], "differs");
    assert_expected(&out.stdout, "expected.json");
}

/// The verdicts a migrating team acts on, read from the JSON report rather than trusted to the diff.
#[test]
fn corpus_verdicts_name_what_to_fix() {
    let out = corpus_report("json");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let ingress = |name: &str| {
        report["ingresses"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["name"] == name))
            .unwrap_or_else(|| panic!("{name} is in the report"))
            .clone()
    };
    let verdict = |ingress: &serde_json::Value, key: &str| {
        ingress["annotations"]
            .as_array()
            .and_then(|all| all.iter().find(|a| a["key"] == key))
            .map(|a| a["verdict"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("{key} is reported"))
    };
    let nginx = |name: &str| format!("nginx.ingress.kubernetes.io/{name}");

    // Classless (nginx is the default class) and legacy-annotated Ingresses are checked, Traefik's not.
    assert_eq!(ingress("docs")["result"], "same");
    assert_eq!(ingress("docs-redirects")["result"], "same");
    assert_eq!(report["other_classes"], 1);
    let app = ingress("app");
    assert_eq!(verdict(&app, &nginx("affinity")), "differs");
    assert_eq!(verdict(&app, &nginx("load-balance")), "invalid");
    assert_eq!(verdict(&app, &nginx("proxy-buffering")), "unsupported");
    assert_eq!(
        verdict(&app, &nginx("configuration-snippet")),
        "unsupported"
    );
    let api = ingress("orders-api");
    assert_eq!(verdict(&api, &nginx("proxy-connect-timeout")), "invalid");
    assert_eq!(verdict(&api, &nginx("rewrite-target")), "same");
    assert_eq!(verdict(&api, &nginx("limit-rps")), "differs");
    // TLS: a Secret that exists is served with its expiry; a missing one is named.
    let shop = ingress("storefront");
    assert_eq!(
        shop["tls"][0]["certificates"][0]["host"],
        "shop.example.com"
    );
    assert_eq!(shop["tls"][0]["certificates"][0]["not_after"], "2076-11-19");
    let partners = ingress("partner-api");
    assert_eq!(partners["tls"][0]["problems"][0]["kind"], "missing-secret");
    // A backend Portcullis cannot serve is reported on its path.
    let site = ingress("site");
    let bucket = site["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["path"] == "/bucket"))
        .expect("the /bucket path is listed");
    assert_eq!(bucket["problems"][0]["kind"], "unsupported-backend");
}

/// A directory holding only Ingresses that behave the same: exit code 0.
#[test]
fn only_same_ingresses_exit_zero() {
    let dir = tempfile::tempdir().expect("temporary directory");
    for file in ["00-classes.yaml", "60-plain.yaml"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(FIXTURES)
                .join("corpus")
                .join(file),
            dir.path().join(file),
        )
        .expect("fixture copied");
    }
    let out = check(&["--manifests", &dir.path().display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.ends_with(
            "2 Ingress(es) of class nginx: 2 the same, 0 differ; 1 of other classes not checked. Result: same.\n"
        ),
        "{stdout}"
    );
}

/// `--ingress-class` chooses which Ingresses are the ones to migrate.
#[test]
fn another_class_is_checked_instead() {
    let out = check(&[
        "--manifests",
        &format!("{FIXTURES}/corpus"),
        "--ingress-class",
        "traefik",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("Ingress docs/whoami (60-plain.yaml): same\n"),
        "{stdout}"
    );
}

#[test]
fn unreadable_input_exits_two() {
    let out = check(&["--manifests", "/nonexistent/manifests"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read --manifests"));

    let out = check(&["--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to the cluster"));

    let not_a_configmap = format!("{FIXTURES}/corpus/00-classes.yaml");
    let out = check(&[
        "--manifests",
        &format!("{FIXTURES}/corpus"),
        "--configmap",
        &not_a_configmap,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a ConfigMap"));
}

/// A file that does not parse makes the report incomplete: it says so and exits 2.
#[test]
fn a_manifest_that_does_not_parse_exits_two() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("broken.yaml"),
        "kind: Ingress\n  bad: [indent\n",
    )
    .expect("file written");
    let out = check(&["--manifests", &dir.path().display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.starts_with("Input problems (this report is incomplete):\n  broken.yaml: "),
        "{stdout}"
    );
}

#[test]
fn gateway_api_objects_are_reported_with_the_conditions_their_status_would_have() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("gateway.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portcullis}\n\
         spec: {controllerName: portcullis.io/gateway-controller}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: shop}\n\
         spec: {gatewayClassName: portcullis, listeners: [{name: http, protocol: HTTP, port: 80}]}\n---\n\
         apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: shop}\n\
         spec: {parentRefs: [{name: gw}], rules: [{backendRefs: [{name: missing, port: 80}]}]}\n",
    )
    .expect("write manifests");
    let out = check(&["--manifests", &dir.path().display().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("GatewayClass portcullis: ok"), "{text}");
    assert!(
        text.contains("Gateway shop/gw, listener http: ok"),
        "{text}"
    );
    assert!(
        text.contains(
            "HTTPRoute shop/web, parent Gateway shop/gw:\n    ResolvedRefs=false (BackendNotFound)"
        ),
        "{text}"
    );
}
