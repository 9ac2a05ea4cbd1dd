//! External clients (`curl`, `openssl s_client`): independent TLS and HTTP stacks, so the controller
//! is not only ever checked by the same libraries it is built on.
//!
//! They run on the blocking pool: the test's runtime must stay free to serve the echo backends the
//! controller forwards to while the tool waits for an answer.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program` with `args` and stdin closed, killing it after `timeout`. Panics if the program
/// cannot be started (a missing tool is a broken test environment, not a pass).
pub async fn run(program: &str, args: &[String], timeout: Duration) -> Output {
    run_with_input(program, args, b"", timeout).await
}

/// Like [`run`], with `input` as the program's stdin (closed after it; empty means none at all).
pub async fn run_with_input(
    program: &str,
    args: &[String],
    input: &[u8],
    timeout: Duration,
) -> Output {
    let program = program.to_string();
    let args = args.to_vec();
    let input = input.to_vec();
    tokio::task::spawn_blocking(move || run_blocking(&program, &args, &input, timeout))
        .await
        .expect("tool task")
}

fn run_blocking(program: &str, args: &[String], input: &[u8], timeout: Duration) -> Output {
    let dir = tempfile::tempdir().expect("temp dir for tool output");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let stdin = if input.is_empty() {
        Stdio::null()
    } else {
        let in_path = dir.path().join("stdin");
        std::fs::write(&in_path, input).expect("stdin file");
        Stdio::from(std::fs::File::open(&in_path).expect("stdin file"))
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(stdin)
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} (.ci/run installs it): {e}");
        });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the tool") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{program} {args:?} did not finish within {timeout:?}; stderr: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        success: status.success(),
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// `openssl s_client` to `addr` with `servername` (SNI) and extra flags (e.g. `-tls1_2`).
pub async fn s_client(addr: std::net::SocketAddr, servername: &str, flags: &[&str]) -> Output {
    let mut args: Vec<String> = vec![
        "s_client".into(),
        "-connect".into(),
        addr.to_string(),
        "-servername".into(),
        servername.into(),
    ];
    args.extend(flags.iter().map(|f| f.to_string()));
    run("openssl", &args, Duration::from_secs(15)).await
}

/// `curl` with `args`, bounded by `--max-time`.
pub async fn curl(args: &[&str]) -> Output {
    let mut all: Vec<String> = vec![
        "--silent".into(),
        "--show-error".into(),
        "--max-time".into(),
        "10".into(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    run("curl", &all, Duration::from_secs(15)).await
}

/// `curl --cacert CA https://HOST/` with HOST resolved to `addr`: stdout is the status code; stderr
/// says why verification failed, as a user would read it.
pub async fn curl_https_status(
    host: &str,
    addr: std::net::SocketAddr,
    ca: &std::path::Path,
) -> Output {
    let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
    let url = format!("https://{host}:{}/", addr.port());
    let ca = ca.display().to_string();
    curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url,
    ])
    .await
}

/// The `portcullis_problems` gauge per kind, scraped from the admin listener's `/metrics`.
pub async fn problems_metric(
    admin: std::net::SocketAddr,
) -> std::collections::BTreeMap<String, u64> {
    let out = curl(&[&format!("http://{admin}/metrics")]).await;
    assert!(out.success, "scrape /metrics: {}", out.stderr);
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("portcullis_problems{kind=\""))
        .filter_map(|l| {
            let (kind, value) = l.split_once("\"} ")?;
            Some((kind.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The cached binary of the outside tool `tests/e2e/NAME` (h2spec, pebble, …), built with Go if needed;
/// a missing Go toolchain fails the test, naming the command.
pub fn go_tool(name: &str) -> String {
    let script = format!("{}/tests/e2e/{name}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&script)
        .arg("path")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `tests/e2e/{name} path`: {e}"));
    assert!(
        out.status.success(),
        "`tests/e2e/{name} path` failed (it builds {name} with Go; .ci/run installs what it needs):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
