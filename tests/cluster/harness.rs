//! The world of the cluster tests: a private network namespace, a real etcd + kube-apiserver
//! (`tests/e2e/control-plane`), kubectl and helm, echo backends on non-loopback addresses, Portcullis
//! processes running with a token of the ServiceAccount of a release of the Helm chart (so with exactly
//! the RBAC the chart grants), and real clients.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
const NETNS_MARKER: &str = "PORTCULLIS_TEST_NETNS";
/// Backends live here: local to the namespace, and acceptable to the API server in EndpointSlices.
pub const BACKEND_NET: &str = "10.244.0.0/16";

/// Re-runs this test binary inside a private network namespace (where 10.244.0.0/16 is local), unless
/// already inside one. Returns only inside the namespace.
pub fn enter_private_network() {
    if std::env::var_os(NETNS_MARKER).is_some() {
        for args in [
            &["link", "set", "lo", "up"][..],
            &["route", "add", "local", BACKEND_NET, "dev", "lo"],
        ] {
            let status = Command::new("ip").args(args).status();
            assert!(
                matches!(status, Ok(s) if s.success()),
                "ip {args:?} failed in the test network namespace"
            );
        }
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let root = nix_is_root();
    let mut unshare = Command::new("unshare");
    if !root {
        unshare.args(["--user", "--map-root-user"]);
    }
    let status = unshare
        .args(["--net", "--"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(NETNS_MARKER, "1")
        .status()
        .expect("run unshare (util-linux) to create a network namespace");
    std::process::exit(status.code().unwrap_or(1));
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The control plane, shared by every test of the binary.
pub struct ControlPlane {
    dir: PathBuf,
    pub kubeconfig: PathBuf,
    bin_dir: PathBuf,
    counter: AtomicU32,
}

impl ControlPlane {
    /// Starts a control plane; `name` keeps several of one test run apart.
    pub fn up(name: &str) -> Result<ControlPlane> {
        let dir = std::env::temp_dir().join(format!("portcullis-{name}-{}", std::process::id()));
        let status = Command::new(format!("{REPO}/tests/e2e/control-plane"))
            .arg("up")
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .context("run tests/e2e/control-plane")?;
        if !status.success() {
            bail!(
                "tests/e2e/control-plane up failed (see {}/kube-apiserver.log)",
                dir.display()
            );
        }
        let state = std::fs::read_to_string(dir.join("state"))?;
        let get = |key: &str| -> Result<String> {
            state
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(|v| v.trim_matches('\'').to_string())
                .with_context(|| format!("{key} missing from the control plane state"))
        };
        Ok(ControlPlane {
            kubeconfig: PathBuf::from(get("KUBECONFIG")?),
            bin_dir: PathBuf::from(get("BIN_DIR")?),
            dir,
            counter: AtomicU32::new(0),
        })
    }

    pub fn down(&self) {
        let _ = Command::new(format!("{REPO}/tests/e2e/control-plane"))
            .arg("down")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn control_plane_command(&self, command: &str) -> Result<()> {
        ControlPlane::command_in(&self.dir, command)
    }

    /// `tests/e2e/control-plane COMMAND DIR`, e.g. `stop-apiserver`, `restart-etcd`.
    pub fn command_in(dir: &Path, command: &str) -> Result<()> {
        let status = Command::new(format!("{REPO}/tests/e2e/control-plane"))
            .arg(command)
            .arg(dir)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("control-plane {command} failed");
        }
        Ok(())
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Runs kubectl as cluster admin; fails with its stderr when it fails.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        run_with_stdin(
            Command::new(self.bin("kubectl"))
                .args(args)
                .env("KUBECONFIG", &self.kubeconfig),
            stdin,
        )
        .with_context(|| format!("kubectl {}", args.join(" ")))
    }

    pub fn apply(&self, yaml: &str) -> Result<()> {
        self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml))
            .map(|_| ())
    }

    /// A fresh namespace (the API server has no namespace controller, so namespaces are never reused).
    pub fn namespace(&self, prefix: &str) -> Result<String> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let ns = format!("{prefix}-{n}");
        self.kubectl(&["create", "namespace", &ns])?;
        Ok(ns)
    }

    /// Runs helm as cluster admin, in the repository (so `charts/portcullis` is the chart); fails with
    /// its stderr when it fails.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let home = self.dir.join("helm");
        run_with_stdin(
            Command::new(self.bin("helm"))
                .args(args)
                .current_dir(REPO)
                .env("KUBECONFIG", &self.kubeconfig)
                .env("HELM_CACHE_HOME", home.join("cache"))
                .env("HELM_CONFIG_HOME", home.join("config"))
                .env("HELM_DATA_HOME", home.join("data")),
            None,
        )
        .with_context(|| format!("helm {}", args.join(" ")))
    }

    /// `helm install RELEASE charts/portcullis --namespace NAMESPACE --set VALUE…` (no `--wait`: no
    /// pod ever runs here).
    pub fn install_chart(&self, namespace: &str, release: &str, values: &[&str]) -> Result<()> {
        let mut args = vec![
            "install",
            release,
            "charts/portcullis",
            "--namespace",
            namespace,
        ];
        for value in values {
            args.extend(["--set", value]);
        }
        self.helm(&args).map(|_| ())
    }

    /// The objects of an installed release, as Helm rendered them.
    pub fn release_objects(
        &self,
        namespace: &str,
        release: &str,
    ) -> Result<Vec<serde_json::Value>> {
        let manifest = self.helm(&["get", "manifest", release, "--namespace", namespace])?;
        yaml_documents(&manifest)
    }

    /// A kubeconfig for the controller of a release of the Helm chart in `namespace` (named after the
    /// namespace), installed for a controller that watches that namespace only, with the Lease
    /// `portcullis-leader`: every scenario runs its controllers with the chart's RBAC, nothing more.
    pub fn controller_identity(&self, namespace: &str) -> Result<PathBuf> {
        self.controller_identity_with(namespace, namespace, &[])
    }

    /// [`Self::controller_identity`] for a release `release`, with more `--set` values.
    pub fn controller_identity_with(
        &self,
        namespace: &str,
        release: &str,
        values: &[&str],
    ) -> Result<PathBuf> {
        let watch = format!("controller.watchNamespace={namespace}");
        let mut all = vec![
            "ingressClass.create=false",
            watch.as_str(),
            "controller.electionId=portcullis-leader",
        ];
        all.extend_from_slice(values);
        self.install_chart(namespace, release, &all)?;
        let account = self
            .release_objects(namespace, release)?
            .into_iter()
            .find(|o| o["kind"] == "ServiceAccount")
            .and_then(|o| o["metadata"]["name"].as_str().map(String::from))
            .context("the release has no ServiceAccount")?;
        self.service_account_kubeconfig(namespace, &account)
    }

    /// The API server's URL, as the admin kubeconfig names it.
    pub fn server(&self) -> Result<String> {
        let server = self.kubectl(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ])?;
        Ok(server.trim().to_string())
    }

    /// A kubeconfig that authenticates with a token (TokenRequest) of a ServiceAccount.
    pub fn service_account_kubeconfig(&self, namespace: &str, account: &str) -> Result<PathBuf> {
        let token =
            self.kubectl(&["-n", namespace, "create", "token", account, "--duration=2h"])?;
        let server = self.server()?;
        let ca = self.dir.join("pki/ca.crt");
        let kubeconfig = self.dir.join(format!("{namespace}-{account}.kubeconfig"));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: t, cluster: {{server: \"{server}\", certificate-authority: \"{}\"}}}}]\n\
                 users: [{{name: portcullis, user: {{token: \"{}\"}}}}]\ncontexts: [{{name: t, context: {{cluster: t, user: portcullis, namespace: {namespace}}}}}]\ncurrent-context: t\n",
                ca.display(),
                token.trim()
            ),
        )?;
        Ok(kubeconfig)
    }
}

fn run_with_stdin(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(input) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The documents of a multi-document YAML text, as JSON values (empty documents left out).
pub fn yaml_documents(text: &str) -> Result<Vec<serde_json::Value>> {
    use serde::Deserialize;
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(document)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// A running `portcullis` in cluster mode; killed when dropped.
pub struct Controller {
    child: Child,
    pub ip: IpAddr,
    pub log: PathBuf,
    admin: SocketAddr,
}

impl Controller {
    /// Starts the controller on `ip` (ports 80, 443, 10254 there) and waits until it is ready.
    pub async fn start(
        kubeconfig: &Path,
        namespace: &str,
        ip: IpAddr,
        extra: &[&str],
    ) -> Result<Controller> {
        let mut args = vec!["--kubeconfig".to_string(), kubeconfig.display().to_string()];
        args.extend(
            [
                "--watch-namespace",
                namespace,
                "--namespace",
                namespace,
                "--https-addr",
                &format!("{ip}:443"),
                "--http-addr",
                &format!("{ip}:80"),
                "--admin-addr",
                &format!("{ip}:10254"),
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|a| a.to_string()));
        let env = [("RUST_LOG".to_string(), "info,portcullis=debug".to_string())];
        Controller::launch(&args, &env, ip, SocketAddr::new(ip, 10254), namespace).await
    }

    /// Runs `portcullis ARGS` with `env` and waits until `admin` answers `/readyz` with 200.
    pub async fn launch(
        args: &[String],
        env: &[(String, String)],
        ip: IpAddr,
        admin: SocketAddr,
        name: &str,
    ) -> Result<Controller> {
        let log = std::env::temp_dir().join(format!("portcullis-{name}-{ip}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()?;
        let controller = Controller {
            child,
            ip,
            log,
            admin,
        };
        eventually(
            "the controller to become ready",
            Duration::from_secs(30),
            || controller.ready(),
        )
        .await
        .with_context(|| format!("controller log: {}", controller.log.display()))?;
        Ok(controller)
    }

    async fn ready(&self) -> Option<()> {
        let (status, _) = http_get(self.admin, "admin", "/readyz").await.ok()?;
        (status == 200).then_some(())
    }

    pub fn http(&self) -> SocketAddr {
        SocketAddr::new(self.ip, 80)
    }

    pub fn https(&self) -> SocketAddr {
        SocketAddr::new(self.ip, 443)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An echo backend (the conformance echo server's JSON) on `addr`'s IP, reporting `service` and `pod`.
pub struct Backend {
    pub addr: SocketAddr,
    _server: crate::support::EchoServer,
}

impl Backend {
    pub async fn start(addr: SocketAddr, service: &str, pod: &str) -> Result<Backend> {
        let identity = crate::support::EchoIdentity {
            service: service.into(),
            pod: pod.into(),
            ..Default::default()
        };
        let server = crate::support::EchoServer::start_at(addr, identity).await;
        Ok(Backend {
            addr: server.addr(),
            _server: server,
        })
    }
}

/// Plain-HTTP GET with a given Host header; returns status and body.
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String)> {
    let resp =
        crate::support::client::try_http_send(addr, crate::support::request("GET", host, path))
            .await
            .map_err(anyhow::Error::msg)?;
    Ok((resp.status.as_u16(), resp.text()))
}

/// HTTPS GET with SNI and Host `host`; returns status, body and the SHA-256 of the certificate the
/// server presented (checked by nobody: the tests compare it with what they expect).
pub async fn https_get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String, String)> {
    let (tls, fingerprint) = tls_connect(addr, host).await?;
    let mut sender = crate::support::Sender::http1(tls)
        .await
        .map_err(anyhow::Error::msg)?;
    let resp = sender
        .try_send(crate::support::request("GET", host, path))
        .await
        .map_err(anyhow::Error::msg)?;
    Ok((resp.status.as_u16(), resp.text(), fingerprint))
}

/// Completes a TLS handshake (HTTP/1.1) with SNI `host`; returns the stream and the served
/// certificate's fingerprint.
pub async fn tls_connect(
    addr: SocketAddr,
    host: &str,
) -> Result<(
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    String,
)> {
    let conn = crate::support::TlsClient::new()
        .sni(host)
        .alpn(&["http/1.1"])
        .connect(addr)
        .await
        .map_err(anyhow::Error::msg)?;
    let fingerprint = conn.fingerprint();
    Ok((conn.stream, fingerprint))
}

/// A self-signed certificate for `names` as a `kubernetes.io/tls` Secret manifest, and its fingerprint.
pub fn tls_secret(namespace: &str, name: &str, names: &[&str]) -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("rcgen");
    let fp = crate::support::pki::fingerprint(ck.cert.der());
    (
        secret_manifest(
            namespace,
            name,
            &ck.cert.pem(),
            &ck.signing_key.serialize_pem(),
        ),
        fp,
    )
}

pub fn secret_manifest(namespace: &str, name: &str, crt: &str, key: &str) -> String {
    let mut data = BTreeMap::new();
    data.insert("tls.crt", crt);
    data.insert("tls.key", key);
    let string_data = serde_json::to_string(&data).expect("json");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\nstringData: {string_data}\n"
    )
}

/// A Service with one port (80, named `http`) and an EndpointSlice with the given ready endpoints.
pub fn service_with_endpoints(namespace: &str, name: &str, endpoints: &[SocketAddr]) -> String {
    let port = endpoints.first().map(|e| e.port()).unwrap_or(8080);
    let addresses: Vec<String> = endpoints
        .iter()
        .map(|e| {
            format!(
                "{{addresses: [\"{}\"], conditions: {{ready: true}}}}",
                e.ip()
            )
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {{ports: [{{name: http, port: 80, targetPort: {port}}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {namespace}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{}]\n",
        addresses.join(", ")
    )
}

/// An Ingress of class `portcullis` routing `host` `/` to `service` port `http`, with optional TLS.
pub fn ingress(
    namespace: &str,
    name: &str,
    host: &str,
    service: &str,
    tls_secret: Option<&str>,
) -> String {
    let tls = tls_secret
        .map(|s| format!("  tls: [{{hosts: [\"{host}\"], secretName: {s}}}]\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  ingressClassName: portcullis\n{tls}\
         \x20 rules:\n  - host: \"{host}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{name: http}}}}}}}}]}}\n"
    )
}

/// The IngressClass `portcullis`, optionally the cluster default (cluster-scoped: applied once).
pub fn ingress_class(default: bool) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: portcullis\n  annotations: {{ingressclass.kubernetes.io/is-default-class: \"{default}\"}}\nspec: {{controller: portcullis.io/ingress-controller}}\n"
    )
}
