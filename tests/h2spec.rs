//! h2spec, the HTTP/2 conformance tester (an outside implementation nobody here wrote), against the
//! HTTPS listener of the real binary in manifest mode: every one of its cases must pass.
//!
//! h2spec is built from the Go module pinned in `tests/e2e/tools/h2spec` on first use and cached
//! (`tests/e2e/h2spec build`, which `.ci/run` calls).

mod support;

use std::time::Duration;

use support::manifests;
use support::tools;
use support::wait::{LIVE, eventually};
use support::*;

/// The cached h2spec binary, built if needed.
fn h2spec() -> String {
    tools::go_tool("h2spec")
}

/// h2spec's last line: `145 tests, 145 passed, 0 skipped, 0 failed`.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    tests: u32,
    passed: u32,
    skipped: u32,
    failed: u32,
}

fn summary(output: &str) -> Option<Summary> {
    let line = output.lines().rev().find(|l| l.contains(" tests, "))?;
    let mut counts = line
        .split(',')
        .map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
    let mut next = || counts.next().flatten();
    Some(Summary {
        tests: next()?,
        passed: next()?,
        skipped: next()?,
        failed: next()?,
    })
}

#[test]
fn the_summary_line_is_read() {
    assert_eq!(
        summary("x\n\nFinished in 3.1 seconds\n145 tests, 144 passed, 0 skipped, 1 failed\n"),
        Some(Summary {
            tests: 145,
            passed: 144,
            skipped: 0,
            failed: 1
        })
    );
    assert_eq!(summary("no summary"), None);
}

#[tokio::test]
async fn h2spec_passes_every_case_on_the_https_listener() {
    let h2spec = h2spec();
    let dir = ManifestDir::new();
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let svc =
        manifests::service_with_endpoints("web", "app", 80, Some("http"), &[echo.addr()], true);
    dir.write("svc-app.yaml", &svc.objects());
    // h2spec connects by IP address (no SNI, the default certificate) and sends that as `:authority`:
    // a rule without a host serves it.
    let ing = IngressBuilder::new("web", "app").route(None, "app").build();
    dir.write("ingress.yaml", &[&ing]);
    let ctl = Controller::start(dir.path(), &[]).await;
    let https = ctl.addrs.https;
    eventually("the route is served over HTTP/2", LIVE, async || {
        let conn = TlsClient::new().alpn(&["h2"]).connect(https).await?;
        let mut http = Sender::http2(conn.stream).await?;
        let resp = http.try_send(request("GET", "any.test", "/")).await?;
        (resp.status == 200)
            .then_some(())
            .ok_or(format!("status {}", resp.status))
    })
    .await;

    let args: Vec<String> = [
        "--tls",
        "--insecure",
        "--host",
        &https.ip().to_string(),
        "--port",
        &https.port().to_string(),
        "--timeout",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tools::run(&h2spec, &args, Duration::from_secs(600)).await;
    let Some(result) = summary(&out.stdout) else {
        panic!(
            "no h2spec summary (exit {:?}):\n{}\n{}",
            out.code, out.stdout, out.stderr
        );
    };
    eprintln!("h2spec: {result:?}");
    if let Some(failures) = out.stdout.split("Failures:").nth(1) {
        eprintln!("h2spec failures:{failures}");
    }
    assert!(
        result.tests > 0 && result.passed == result.tests && out.success,
        "h2spec: {result:?} (exit {:?}); its output:\n{}",
        out.code,
        out.stdout
    );
    ctl.assert_no_key_material(&dir.private_keys());
}
