//! Pebble, Let's Encrypt's own ACME test server, with `pebble-challtestsrv` as its DNS (every name
//! resolving to one address), both built from the Go module pinned in `tests/e2e/tools/pebble*` and
//! killed when dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::tools;
use super::wait::eventually;

/// The lifetime of Pebble's `short` profile. Its ARI window is the whole lifetime, so the renewal
/// comes at a random point of it, at the latest with a third left (about 11 s after issuance).
pub const SHORT_LIFETIME_S: u64 = 16;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pebble")
        .join(name)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Pebble and its DNS server, killed when dropped.
pub struct Pebble {
    children: Vec<Child>,
    dir: tempfile::TempDir,
    pub directory: String,
    pub management: SocketAddr,
    dns_management: SocketAddr,
}

impl Pebble {
    /// Pebble validating against `ip`, HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
    pub async fn start(ip: Ipv4Addr, http_port: u16, tls_port: u16) -> Pebble {
        Pebble::start_with(ip, http_port, tls_port, serde_json::json!({})).await
    }

    /// [`Pebble::start`] with more keys of Pebble's configuration (e.g. external account binding).
    pub async fn start_with(
        ip: Ipv4Addr,
        http_port: u16,
        tls_port: u16,
        more: serde_json::Value,
    ) -> Pebble {
        let dir = tempfile::tempdir().expect("temp dir for Pebble");
        let (acme, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": fixture("cert.pem"),
            "privateKey": fixture("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "retryAfter": {"authz": 1, "order": 1},
            // Pebble picks a profile at random for orders without one: the tests always name one.
            "profiles": {
                "default": {"description": "90 days", "validityPeriod": 7_776_000},
                "short": {"description": "16 seconds", "validityPeriod": SHORT_LIFETIME_S},
            },
        }});
        let mut config = config;
        if let (Some(pebble), Some(more)) = (config["pebble"].as_object_mut(), more.as_object()) {
            pebble.extend(more.clone());
        }
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("write Pebble's config");
        let log = |name: &str| {
            Stdio::from(std::fs::File::create(dir.path().join(name)).expect("log file"))
        };
        let dns_server = format!("127.0.0.1:{dns}");
        let challtestsrv = Command::new(tools::go_tool("pebble-challtestsrv"))
            .args(["-dnsserver", &dns_server])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .args(["-defaultIPv4", &ip.to_string(), "-defaultIPv6", ""])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", ""])
            .stdin(Stdio::null())
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("start pebble-challtestsrv");
        let pebble = Command::new(tools::go_tool("pebble"))
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns_server])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("start pebble");
        let p = Pebble {
            children: vec![challtestsrv, pebble],
            directory: format!("https://127.0.0.1:{acme}/dir"),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            dns_management: SocketAddr::from(([127, 0, 0, 1], dns_management)),
            dir,
        };
        let ca = fixture("pebble.minica.pem").display().to_string();
        eventually("Pebble's directory", Duration::from_secs(20), async || {
            let out = tools::curl(&["--cacert", &ca, &p.directory]).await;
            match out.success && out.stdout.contains("newOrder") {
                true => Ok(()),
                false => Err(format!("{}{}", out.stderr, p.log())),
            }
        })
        .await;
        p
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Orders Pebble created (not requests to its new-order URL: a request refused for a bad nonce,
    /// 5% of them, is retried by the client).
    pub fn orders(&self) -> usize {
        self.log().matches("Added order").count()
    }

    /// The `acme:` section of a configuration with one issuer, `pebble`, as the default, ordering
    /// Pebble's 90-day profile.
    pub fn config(&self, challenge: &str) -> String {
        self.config_with_profile(challenge, "default")
    }

    pub fn config_with_profile(&self, challenge: &str, profile: &str) -> String {
        format!(
            "acme:\n  default-issuer: pebble\n  issuers:\n    pebble:\n      directory: {}\n      email: ops@shop.test\n      challenge: {challenge}\n      profile: {profile}\n      directory-ca-file: {}\n",
            self.directory,
            fixture("pebble.minica.pem").display()
        )
    }

    /// Pebble's root, which it generates at each start, written to a file for `curl --cacert`.
    pub async fn root(&self) -> PathBuf {
        let url = format!("https://{}/roots/0", self.management);
        let ca = fixture("pebble.minica.pem").display().to_string();
        let out = tools::curl(&["--cacert", &ca, &url]).await;
        assert!(
            out.success && out.stdout.contains("BEGIN CERTIFICATE"),
            "{}",
            out.stderr
        );
        let path = self.dir.path().join("root.pem");
        std::fs::write(&path, out.stdout).expect("write the root");
        path
    }

    /// Makes every name resolve to `ip` for Pebble's validator (a restarted controller's address).
    pub async fn resolve_all(&self, ip: Ipv4Addr) {
        let body = serde_json::json!({"ip": ip.to_string()}).to_string();
        let url = format!("http://{}/set-default-ipv4", self.dns_management);
        let out = tools::curl(&["-f", "-d", &body, &url]).await;
        assert!(out.success, "challtestsrv set-default-ipv4: {}", out.stderr);
    }

    /// Makes `host` resolve to `ip` for Pebble's validator.
    pub async fn resolve(&self, host: &str, ip: &str) {
        let body = serde_json::json!({"host": host, "addresses": [ip]}).to_string();
        let url = format!("http://{}/add-a", self.dns_management);
        let out = tools::curl(&["-f", "-d", &body, &url]).await;
        assert!(out.success, "challtestsrv add-a: {}", out.stderr);
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- Pebble's log ---\n{}", self.log());
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
