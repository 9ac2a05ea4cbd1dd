//! The real `portcullis` binary as a child process.
//!
//! Each instance gets its own loopback address (all of 127.0.0.0/8 is local on Linux), so the fixed
//! ports 8080/8443/10254 never collide between tests running in parallel, in this process or another.
//! Its stderr goes to a file the test can read at any time, to assert on log lines.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::wait::{self, eventually};

/// How long the controller may take from spawn to `/readyz` = 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub const HTTP_PORT: u16 = 8080;
pub const HTTPS_PORT: u16 = 8443;
pub const ADMIN_PORT: u16 = 10254;

static NEXT_IP: AtomicU32 = AtomicU32::new(0);

/// A loopback address no other controller of this test run uses: the second octet comes from the pid
/// (different test binaries), the last two from a counter (different tests of one binary). 127.0.x.x
/// is avoided, as that is where other services on the machine usually listen.
pub fn unique_loopback_ip() -> Ipv4Addr {
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    let second = 16 + (std::process::id() % 224) as u8;
    Ipv4Addr::new(127, second, (n / 250 % 250) as u8 + 1, (n % 250) as u8 + 1)
}

/// A random address in 127.16.0.0–127.239.255.255, for when the pid-derived one is taken (two test
/// processes whose pids agree modulo 224 would otherwise keep colliding in step).
fn random_loopback_ip() -> Ipv4Addr {
    use std::hash::{BuildHasher, RandomState};
    let n = RandomState::new().hash_one(Instant::now());
    let [a, b, c, ..] = n.to_le_bytes();
    Ipv4Addr::new(127, 16 + a % 224, b, c.max(1))
}

/// Where one controller listens.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub ip: Ipv4Addr,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
}

impl Addrs {
    fn on(ip: Ipv4Addr) -> Addrs {
        let at = |port| SocketAddr::from((ip, port));
        Addrs {
            ip,
            http: at(HTTP_PORT),
            https: at(HTTPS_PORT),
            admin: at(ADMIN_PORT),
        }
    }

    /// Whether all three ports can be bound right now, with `SO_REUSEADDR` as the controller binds
    /// them (so connections in TIME_WAIT from an earlier run do not count as taken).
    fn free(&self) -> bool {
        [self.http, self.https, self.admin].iter().all(|addr| {
            let bound = || -> std::io::Result<()> {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                socket.set_reuse_address(true)?;
                socket.bind(&(*addr).into())?;
                socket.listen(1)
            };
            bound().is_ok()
        })
    }
}

/// A running controller; killed when dropped.
pub struct Controller {
    child: Child,
    pub addrs: Addrs,
    log_path: PathBuf,
    /// Holds the log file; `None` only while startup attempts are made.
    _log_dir: Option<tempfile::TempDir>,
}

impl Controller {
    /// Starts the controller in manifest mode on `manifests` and waits until it is ready.
    pub async fn start(manifests: &Path, extra_args: &[&str]) -> Controller {
        let mut args: Vec<OsString> = vec!["--manifests".into(), manifests.into()];
        args.extend(extra_args.iter().map(OsString::from));
        Controller::spawn(&args, &[]).await
    }

    /// Starts the binary with `args` plus the three listener addresses (chosen here) and `envs`, and
    /// waits until `/readyz` answers 200. Mode-independent: a cluster suite passes `--kubeconfig`.
    pub async fn spawn(args: &[OsString], envs: &[(&str, &str)]) -> Controller {
        let log_dir = tempfile::tempdir().expect("temp dir for the controller log");
        let mut failures = Vec::new();
        for attempt in 0..16 {
            let ip = match attempt {
                0 => unique_loopback_ip(),
                _ => random_loopback_ip(),
            };
            let addrs = Addrs::on(ip);
            if !addrs.free() {
                failures.push(format!("{}: ports in use", addrs.ip));
                continue;
            }
            let log_path = log_dir.path().join(format!("controller-{attempt}.log"));
            let log = std::fs::File::create(&log_path).expect("controller log file");
            let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
            // A developer's environment must not change what the tests run.
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("PORTCULLIS_") {
                    command.env_remove(name);
                }
            }
            command
                .args(args)
                .arg("--https-addr")
                .arg(addrs.https.to_string())
                .arg("--http-addr")
                .arg(addrs.http.to_string())
                .arg("--admin-addr")
                .arg(addrs.admin.to_string())
                .env("NO_COLOR", "1")
                .env("PORTCULLIS_LOG_LEVEL", "info")
                .envs(envs.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            let child = command.spawn().expect("spawn the portcullis binary");
            let mut controller = Controller {
                child,
                addrs,
                log_path,
                _log_dir: None,
            };
            match controller.wait_ready().await {
                Ok(()) => {
                    controller._log_dir = Some(log_dir);
                    return controller;
                }
                Err(Startup::AddressTaken(log)) => failures.push(log),
                Err(Startup::Failed(why)) => panic!("{why}"),
            }
        }
        panic!("could not start the controller: {failures:#?}");
    }

    async fn wait_ready(&mut self) -> Result<(), Startup> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the controller") {
                let log = self.logs();
                if log.contains("Address already in use") || log.contains("cannot listen") {
                    return Err(Startup::AddressTaken(log));
                }
                return Err(Startup::Failed(format!(
                    "the controller exited during startup with {status}; its log:\n{log}"
                )));
            }
            if admin_get(self.addrs.admin, "/readyz").await == Some(200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Startup::Failed(format!(
                    "the controller was not ready within {READY_TIMEOUT:?}; its log:\n{}",
                    self.logs()
                )));
            }
            tokio::time::sleep(wait::POLL).await;
        }
    }

    /// The file the controller's stderr goes to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the controller logged so far, without colour codes.
    pub fn logs(&self) -> String {
        let raw = std::fs::read(&self.log_path).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&raw))
    }

    /// The first log line containing every one of `needles`.
    pub fn log_line(&self, needles: &[&str]) -> Option<String> {
        self.logs()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    }

    /// Waits for a log line containing every one of `needles` and returns it.
    pub async fn wait_for_log(&self, needles: &[&str]) -> String {
        eventually(
            &format!("a log line containing {needles:?}"),
            wait::LIVE,
            async || {
                self.log_line(needles)
                    .ok_or_else(|| format!("log so far:\n{}", self.logs()))
            },
        )
        .await
    }

    /// The highest configuration generation the controller has logged as live (0 before the first).
    pub fn generation(&self) -> u64 {
        self.logs()
            .lines()
            .filter(|l| l.contains("configuration live"))
            .filter_map(|l| field(l, "generation")?.parse().ok())
            .max()
            .unwrap_or(0)
    }

    /// Waits until generation `n` (or a later one) is live.
    pub async fn wait_for_generation(&self, n: u64) {
        eventually(
            &format!("configuration generation {n}"),
            wait::LIVE,
            async || match self.generation() {
                g if g >= n => Ok(()),
                g => Err(format!("generation {g} is live")),
            },
        )
        .await
    }

    /// `GET` on the admin listener; the status code, or `None` if it does not answer.
    pub async fn admin_status(&self, path: &str) -> Option<u16> {
        admin_get(self.addrs.admin, path).await
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own, not yet reaped child.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// Waits for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the controller") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the controller did not exit within {timeout:?}; its log:\n{}",
                self.logs()
            );
            tokio::time::sleep(wait::POLL).await;
        }
    }

    /// Panics if the log contains a private key PEM marker, or 32 or more consecutive characters of
    /// one of `keys` (PEM text), either as in a PEM file or base64-encoded again as in a Secret's `data`.
    pub fn assert_no_key_material(&self, keys: &[String]) {
        if let Some(found) = self.find_key_material(keys) {
            panic!("{found}");
        }
    }

    /// What [`Self::assert_no_key_material`] checks, as a description of the leak found.
    pub fn find_key_material(&self, keys: &[String]) -> Option<String> {
        let log = self.logs();
        if log.contains("PRIVATE KEY") {
            return Some(format!(
                "a private key PEM marker appears in the log:\n{log}"
            ));
        }
        for key in keys {
            for encoded in [pem_body(key), base64(key.as_bytes())] {
                // Overlapping windows: any leaked run of 32 characters or more contains one.
                for start in (0..encoded.len().saturating_sub(24)).step_by(8) {
                    let window = &encoded[start..start + 24];
                    if log.contains(window) {
                        return Some(format!(
                            "key material {window:?} appears in the log:\n{log}"
                        ));
                    }
                }
            }
        }
        None
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // A failing test shows what the controller said (the test harness prints captured output).
        if std::thread::panicking() {
            eprintln!(
                "--- log of the controller on {} ---\n{}",
                self.addrs.ip,
                self.logs()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Startup {
    AddressTaken(String),
    Failed(String),
}

/// One `GET` on the admin listener with a raw HTTP/1.1 request: the status, or `None`.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.ok()?;
        let head = String::from_utf8_lossy(&response);
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// The value of `name=value` in a tracing text line (quotes removed).
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"')?],
        None => rest.split_whitespace().next()?,
    };
    Some(value)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The base64 lines of a PEM document, joined.
fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// Standard base64, as Kubernetes writes a Secret's `data`.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
