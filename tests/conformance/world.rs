//! The World of the Ingress conformance scenarios, independent of how objects reach the controller:
//! one namespace per scenario, an echo backend per Service the Ingress names, requests sent to the
//! controller's address with the scenario's Host (and SNI), as Go's client in the upstream suite sends
//! them. The project's own steps are in `steps.rs`, upstream's phrasing in `upstream_steps.rs`.
//! Applying objects, starting backends and finding the controller's address is the [`Driver`]'s job:
//! manifest mode here, a real API server in the cluster suite, which registers its own driver with
//! [`use_driver`] and reuses every step.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use futures_util::future::LocalBoxFuture as BoxFuture;
use http::HeaderMap;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressSpec};
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::support::client::{self, Sender};
use crate::support::{EchoReply, TestCert, TlsClient};

pub type StepResult = Result<(), String>;

/// The class upstream sets on Ingresses that name none (`--ingress-class` of the suite).
pub const INGRESS_CLASS: &str = "portcullis";

/// The User-Agent of Go's HTTP client, which the upstream suite uses; the default backend feature
/// asserts that the backend receives it.
pub const USER_AGENT: &str = "Go-http-client/1.1";

/// Where requests for the Ingresses go.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub ip: IpAddr,
    pub http_port: u16,
    pub https_port: u16,
}

/// A Service port as an Ingress backend names it; upstream's echo Service gets that name (if any) and
/// that number (8080 if none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPort {
    pub number: Option<i32>,
    pub name: Option<String>,
}

/// How objects reach the controller and where it listens.
pub trait Driver {
    /// Creates a namespace for one scenario and returns its name.
    fn new_namespace(&mut self) -> BoxFuture<'_, Result<String, String>>;

    /// Runs an echo backend for `service` of `ingress` (upstream's `NewEchoDeployment`): the
    /// Service, its ready endpoints, and a server answering the echo JSON with these identities.
    /// Called once per Service name; later calls for the same Service are no-ops.
    fn deploy_backend<'a>(
        &'a mut self,
        namespace: &'a str,
        ingress: &'a str,
        service: &'a str,
        port: &'a BackendPort,
    ) -> BoxFuture<'a, Result<(), String>>;

    fn create_secret(&mut self, secret: Secret) -> BoxFuture<'_, Result<(), String>>;

    fn create_ingress(&mut self, ingress: Ingress) -> BoxFuture<'_, Result<(), String>>;

    /// Waits for the Ingress status to show an address and returns it; `Ok(None)` where there is no
    /// status to wait for (manifest mode: nothing writes status without an API server).
    fn ingress_address<'a>(
        &'a mut self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, String>>;

    /// Where to send requests, once every object so far is live.
    fn target(&mut self) -> BoxFuture<'_, Result<Target, String>>;

    /// Makes our IngressClass the default class (`ingressclass.kubernetes.io/is-default-class`).
    fn make_class_default(&mut self) -> BoxFuture<'_, Result<(), String>>;

    /// Checks that the Ingress status stays without an address (upstream waits, then looks).
    /// Cluster-only.
    fn ingress_status_stays_empty<'a>(
        &'a mut self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        let _ = (namespace, name);
        Box::pin(async { Err("Ingress status needs a cluster".to_string()) })
    }

    /// Scales a backend deployed by [`Driver::deploy_backend`] to `replicas` ready pods, each
    /// reporting its own pod name, and waits until the controller routes to all of them.
    fn scale_backend<'a>(
        &'a mut self,
        namespace: &'a str,
        service: &'a str,
        replicas: usize,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Checks made after each scenario, whatever its outcome.
    fn after_scenario(&mut self) -> Result<(), String> {
        Ok(())
    }
}

type DriverFactory = fn() -> Box<dyn Driver>;
static DRIVER: OnceLock<DriverFactory> = OnceLock::new();

/// Chooses the driver every scenario's World gets. Call once, before running.
pub fn use_driver(factory: DriverFactory) {
    assert!(
        DRIVER.set(factory).is_ok(),
        "the conformance driver is chosen once"
    );
}

/// What one request and its response showed (upstream's `CapturedRequest`/`CapturedResponse`).
#[derive(Debug)]
pub struct Exchange {
    /// The echo backend's report; empty when the body was not a JSON object (a 404 page, say).
    pub request: EchoReply,
    pub status: u16,
    pub proto: String,
    pub headers: HeaderMap,
    /// For HTTPS: the first DNS name of the leaf certificate, and the chain as presented.
    pub tls_hostname: Option<String>,
    pub chain: Vec<CertificateDer<'static>>,
}

#[derive(cucumber::World)]
#[world(init = Self::new)]
pub struct IngressWorld {
    pub driver: Box<dyn Driver>,
    pub namespace: Option<String>,
    /// The Ingress created last.
    pub ingress_name: Option<String>,
    /// Certificates generated by this scenario, by Secret name: what "verify the hostname" trusts.
    pub certificates: Vec<(String, TestCert)>,
    /// The last request's exchange.
    pub exchange: Option<Exchange>,
    /// The responses of "I send N requests".
    pub exchanges: Vec<Exchange>,
}

impl std::fmt::Debug for IngressWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressWorld")
            .field("namespace", &self.namespace)
            .field("ingress_name", &self.ingress_name)
            .field("exchange", &self.exchange)
            .finish_non_exhaustive()
    }
}

impl IngressWorld {
    fn new() -> IngressWorld {
        let factory = DRIVER
            .get()
            .expect("use_driver() must be called before the scenarios run");
        IngressWorld {
            driver: factory(),
            namespace: None,
            ingress_name: None,
            certificates: Vec::new(),
            exchange: None,
            exchanges: Vec::new(),
        }
    }

    /// Runs the driver's checks after a scenario (an `after` hook calls this).
    pub fn after_scenario(&mut self) -> Result<(), String> {
        self.driver.after_scenario()
    }

    pub fn namespace(&self) -> Result<String, String> {
        self.namespace
            .clone()
            .ok_or_else(|| "no namespace: the scenario must create one first".into())
    }

    pub fn exchange(&self) -> Result<&Exchange, String> {
        self.exchange
            .as_ref()
            .ok_or_else(|| "no request was sent yet".into())
    }

    /// Upstream's `DeploymentsFromIngress` then `NewIngress`: a backend for every Service the
    /// Ingress names, then the Ingress in the scenario's namespace. With `class_if_none`, an Ingress
    /// naming no class gets ours, as upstream gives it the suite's `--ingress-class`.
    pub async fn create_ingress(
        &mut self,
        mut ingress: Ingress,
        class_if_none: bool,
    ) -> StepResult {
        let namespace = self.namespace()?;
        ingress.metadata.namespace = Some(namespace.clone());
        let name = ingress
            .metadata
            .name
            .clone()
            .ok_or("the Ingress has no metadata.name")?;
        let spec = ingress.spec.get_or_insert_with(Default::default);
        if class_if_none {
            spec.ingress_class_name
                .get_or_insert_with(|| INGRESS_CLASS.into());
        }
        for (service, port) in backends_of(spec) {
            self.driver
                .deploy_backend(&namespace, &name, &service, &port)
                .await?;
        }
        self.driver.create_ingress(ingress).await?;
        self.ingress_name = Some(name);
        Ok(())
    }

    /// Upstream's `CaptureRoundTrip`: the request goes to the controller's address with `hostname` as
    /// Host (and SNI), and a redirect is followed to the controller again with the Location's scheme,
    /// host and path.
    pub async fn capture_round_trip(
        &mut self,
        method: &str,
        scheme: &str,
        hostname: &str,
        path: &str,
    ) -> StepResult {
        let target = self.driver.target().await?;
        let (mut scheme, mut hostname, mut path) =
            (scheme.to_string(), hostname.to_string(), path.to_string());
        for _ in 0..10 {
            let exchange = send(&target, method, &scheme, &hostname, &path).await?;
            if !matches!(exchange.status, 301 | 302 | 303 | 307 | 308) {
                self.exchange = Some(exchange);
                return Ok(());
            }
            let location = exchange
                .headers
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or("a redirect without Location")?;
            let uri: http::Uri = location
                .parse()
                .map_err(|e| format!("Location {location:?}: {e}"))?;
            scheme = uri.scheme_str().unwrap_or("http").to_string();
            hostname = uri.host().unwrap_or("").to_string();
            path = uri.path().to_string();
        }
        Err("more than 10 redirects".into())
    }
}

/// Every Service an Ingress names, with the port it names, in order, each once.
fn backends_of(spec: &IngressSpec) -> Vec<(String, BackendPort)> {
    let paths = spec
        .rules
        .iter()
        .flatten()
        .flat_map(|r| r.http.iter().flat_map(|h| h.paths.iter()))
        .map(|p| &p.backend);
    let mut seen = BTreeMap::new();
    let mut out = Vec::new();
    for backend in spec.default_backend.iter().chain(paths) {
        let IngressBackend {
            service: Some(service),
            ..
        } = backend
        else {
            continue;
        };
        let port = BackendPort {
            number: service.port.as_ref().and_then(|p| p.number),
            name: service.port.as_ref().and_then(|p| p.name.clone()),
        };
        if seen.insert(service.name.clone(), ()).is_none() {
            out.push((service.name.clone(), port));
        }
    }
    out
}

/// One request on a connection of its own, as Go's client sends it in the upstream suite.
pub async fn send(
    target: &Target,
    method: &str,
    scheme: &str,
    hostname: &str,
    path: &str,
) -> Result<Exchange, String> {
    Connection::open(target, scheme, hostname)
        .await?
        .send(method, path)
        .await
}

/// A client connection to the controller for one Host, as Go's client opens it in the upstream
/// suite: HTTP/1.1 (no ALPN), no compression, `User-Agent: Go-http-client/1.1`, TLS without
/// verification but with the chain recorded. Requests on it reuse it (keep-alive).
pub struct Connection {
    sender: Sender,
    host: String,
    chain: Vec<CertificateDer<'static>>,
}

impl Connection {
    /// Connects to the controller's `scheme` port; `hostname` (host, or host and port, as in a URL)
    /// becomes the Host header and, without its port, the SNI. Empty, the Host is the address
    /// connected to, as Go sends the URL's host when no Host is set.
    pub async fn open(target: &Target, scheme: &str, hostname: &str) -> Result<Connection, String> {
        let port = match scheme {
            "http" => target.http_port,
            "https" => target.https_port,
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let addr = SocketAddr::new(target.ip, port);
        let host = if hostname.is_empty() {
            addr.to_string()
        } else {
            hostname.to_string()
        };
        if scheme == "https" {
            let mut tls = TlsClient::new();
            let sni = hostname.rsplit_once(':').map_or(hostname, |(name, _)| name);
            if !sni.is_empty() {
                tls = tls.sni(sni);
            }
            let conn = tls.connect(addr).await?;
            Ok(Connection {
                chain: conn.chain.clone(),
                sender: Sender::http1(conn.stream).await?,
                host,
            })
        } else {
            Ok(Connection {
                sender: Sender::http1(client::tcp(addr, None).await?).await?,
                host,
                chain: Vec::new(),
            })
        }
    }

    /// Sends `method` for `path` (and query) and reads the whole response.
    pub async fn send(&mut self, method: &str, path: &str) -> Result<Exchange, String> {
        let req = client::request(
            method,
            &self.host,
            &format!("/{}", path.trim_start_matches('/')),
        )
        .header("user-agent", USER_AGENT);
        let resp = self.sender.try_send(req).await?;
        let request = match serde_json::from_slice::<serde_json::Value>(&resp.body) {
            Ok(value) if value.is_object() => serde_json::from_value(value)
                .map_err(|e| format!("unexpected error reading response: {e}"))?,
            _ => EchoReply::default(),
        };
        let tls_hostname = self.chain.first().map(|leaf| {
            crate::support::pki::dns_names(leaf)
                .into_iter()
                .next()
                .unwrap_or_default()
        });
        Ok(Exchange {
            request,
            status: resp.status.as_u16(),
            proto: format!("{:?}", resp.version),
            headers: resp.headers,
            tls_hostname,
            chain: self.chain.clone(),
        })
    }
}

/// Verifies `chain` (leaf first) for `hostname` against `roots`, as a browser would.
pub fn verify_chain(
    chain: &[CertificateDer<'static>],
    roots: &[CertificateDer<'static>],
    hostname: &str,
) -> StepResult {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| format!("no certificate to trust: {e}"))?;
    let (leaf, intermediates) = chain.split_first().ok_or("no certificate was presented")?;
    let name = ServerName::try_from(hostname.to_string()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| format!("the certificate does not verify for {hostname}: {e}"))
}

pub fn expect_eq(what: &str, actual: &str, expected: &str) -> StepResult {
    if actual != expected {
        return Err(format!(
            "expected the {what} to be {expected:?} but it was {actual:?}"
        ));
    }
    Ok(())
}
