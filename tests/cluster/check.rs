//! `portcullis check --kubeconfig`: the migration report read from a real API server with the token of
//! the chart's ServiceAccount, so with exactly the controller's read-only permissions (TLS Secrets
//! listed, an auth Secret read by name).

use anyhow::{Context, Result, ensure};

use crate::harness::*;

pub const NAME: &str = "check_reports_a_clusters_nginx_ingresses_with_the_controllers_permissions";

pub async fn run(cp: &ControlPlane, _slot: u8) -> Result<()> {
    let ns = cp.namespace("check")?;
    let kubeconfig = cp.controller_identity(&ns)?;
    let nginx = |name: &str, host: &str, annotations: &str, tls: Option<&str>| {
        ingress(&ns, name, host, "web", tls)
            .replace("ingressClassName: portcullis", "ingressClassName: nginx")
            .replace(
                &format!("namespace: {ns}}}"),
                &format!("namespace: {ns}, annotations: {{{annotations}}}}}"),
            )
    };
    let (secret, _) = tls_secret(&ns, "shop-tls", &["shop.example.com"]);
    cp.apply(
        &[
            service_with_endpoints(&ns, "web", &["10.244.0.1:8080".parse()?]),
            secret,
            // Plain text passwords are refused: proof that the Secret was read, not found missing.
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: {ns}}}\ntype: Opaque\nstringData: {{auth: \"alice:{{PLAIN}}secret\"}}\n"
            ),
            nginx(
                "shop",
                "shop.example.com",
                "nginx.ingress.kubernetes.io/proxy-read-timeout: \"60\"",
                Some("shop-tls"),
            ),
            nginx(
                "admin",
                "admin.example.com",
                "nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: users, \
                 nginx.ingress.kubernetes.io/mirror-target: https://mirror.example.com, nginx.ingress.kubernetes.io/proxy-body-size: lots",
                Some("missing-tls"),
            ),
            ingress(&ns, "already-ours", "ours.example.com", "web", None),
        ]
        .join("---\n"),
    )?;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "check",
            "--output",
            "json",
            "--namespace",
            &ns,
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .output()?;
    ensure!(
        out.status.code() == Some(1),
        "exit code {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ingress = |name: &str| {
        report["ingresses"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["name"] == name))
            .cloned()
            .with_context(|| format!("{name} is not in the report: {report}"))
    };
    ensure!(report["other_classes"] == 1, "{report}");

    let shop = ingress("shop")?;
    ensure!(shop["result"] == "same", "{shop}");
    ensure!(
        shop["tls"][0]["certificates"][0]["host"] == "shop.example.com",
        "the TLS Secret is listed with the controller's permissions: {shop}"
    );
    ensure!(shop["routes"][0]["redirects_to_https"] == true, "{shop}");

    let admin = ingress("admin")?;
    ensure!(admin["result"] == "differs", "{admin}");
    let verdict = |key: &str| {
        admin["annotations"]
            .as_array()
            .and_then(|all| all.iter().find(|a| a["key"] == key))
            .map(|a| a["verdict"].clone())
    };
    ensure!(
        verdict("nginx.ingress.kubernetes.io/mirror-target") == Some("unsupported".into()),
        "{admin}"
    );
    ensure!(
        verdict("nginx.ingress.kubernetes.io/proxy-body-size") == Some("invalid".into()),
        "{admin}"
    );
    ensure!(
        admin["tls"][0]["problems"][0]["kind"] == "missing-secret",
        "{admin}"
    );
    let kinds: Vec<&str> = admin["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["kind"].as_str())
        .collect();
    ensure!(
        kinds.contains(&"invalid-auth-secret"),
        "the auth Secret was read by name: {admin}"
    );

    // An identity without the controller's permissions cannot list: bad input, and the refusal is
    // named while it waits.
    cp.kubectl(&["-n", &ns, "create", "serviceaccount", "nobody"])?;
    let nobody = cp.service_account_kubeconfig(&ns, "nobody")?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--namespace", &ns, "--kubeconfig"])
        .arg(&nobody)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(2),
        "exit code {:?}: {stderr}",
        out.status.code()
    );
    ensure!(
        stderr.contains("forbidden") || stderr.contains("Forbidden"),
        "{stderr}"
    );
    ensure!(stderr.contains("could not list"), "{stderr}");
    Ok(())
}
