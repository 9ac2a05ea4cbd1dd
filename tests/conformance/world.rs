//! Step definitions for the upstream Ingress conformance features (kubernetes-sigs/
//! ingress-controller-conformance), independent of how objects reach the controller.
//!
//! The steps do what upstream's Go steps do (`test/conformance/*/feature.go`, `test/state`,
//! `test/http`): one namespace per scenario, an echo backend per Service the Ingress names, requests
//! sent to the controller's address with the scenario's Host (and SNI), redirects followed the same
//! way, and the same assertions. Applying objects, starting backends and finding the controller's
//! address is the [`Driver`]'s job: manifest mode here, a real API server in the cluster suite, which
//! registers its own driver with [`use_driver`] and reuses every step.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use cucumber::gherkin::Step;
use cucumber::{given, then, when};
use futures_util::future::LocalBoxFuture as BoxFuture;
use http::HeaderMap;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::support::client::{self, Sender};
use crate::support::manifests;
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
    /// reporting its own pod name. Cluster-only.
    fn scale_backend<'a>(
        &'a mut self,
        namespace: &'a str,
        service: &'a str,
        replicas: usize,
    ) -> BoxFuture<'a, Result<(), String>> {
        let _ = (namespace, service, replicas);
        Box::pin(async { Err("scaling a Deployment needs a cluster".to_string()) })
    }

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
    driver: Box<dyn Driver>,
    namespace: Option<String>,
    ingress_name: Option<String>,
    /// Certificates generated by this scenario: what "verify the hostname" trusts.
    certificates: Vec<TestCert>,
    exchange: Option<Exchange>,
    /// The responses of "I send N requests".
    exchanges: Vec<Exchange>,
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

    fn namespace(&self) -> Result<String, String> {
        self.namespace
            .clone()
            .ok_or_else(|| "no namespace: the scenario must create one first".into())
    }

    fn exchange(&self) -> Result<&Exchange, String> {
        self.exchange
            .as_ref()
            .ok_or_else(|| "no request was sent yet".into())
    }

    /// Upstream's `DeploymentsFromIngress` then `NewIngress`. Ingresses that name no class get ours,
    /// as upstream gives them the suite's `--ingress-class`.
    async fn create_ingress(&mut self, mut ingress: Ingress) -> StepResult {
        let namespace = self.namespace()?;
        ingress.metadata.namespace = Some(namespace.clone());
        let name = ingress
            .metadata
            .name
            .clone()
            .ok_or("the Ingress has no metadata.name")?;
        let spec = ingress.spec.get_or_insert_with(Default::default);
        spec.ingress_class_name
            .get_or_insert_with(|| INGRESS_CLASS.into());
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
    async fn capture_round_trip(
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

/// One request, as Go's client sends it in the upstream suite: HTTP/1.1 (no ALPN), no compression,
/// `User-Agent: Go-http-client/1.1`, TLS without verification but with the chain recorded.
async fn send(
    target: &Target,
    method: &str,
    scheme: &str,
    hostname: &str,
    path: &str,
) -> Result<Exchange, String> {
    let port = match scheme {
        "http" => target.http_port,
        "https" => target.https_port,
        other => return Err(format!("unsupported scheme {other:?}")),
    };
    let addr = SocketAddr::new(target.ip, port);
    // Go sends the URL's host when no Host is set: the controller's address.
    let host = if hostname.is_empty() {
        addr.to_string()
    } else {
        hostname.to_string()
    };
    let req = client::request(method, &host, &format!("/{}", path.trim_start_matches('/')))
        .header("user-agent", USER_AGENT);
    let (mut sender, chain) = if scheme == "https" {
        let mut tls = TlsClient::new();
        if !hostname.is_empty() {
            tls = tls.sni(hostname);
        }
        let conn = tls.connect(addr).await?;
        let chain = conn.chain.clone();
        (Sender::http1(conn.stream).await?, chain)
    } else {
        (
            Sender::http1(client::tcp(addr, None).await?).await?,
            Vec::new(),
        )
    };
    let resp = sender.try_send(req).await?;
    let request = match serde_json::from_slice::<serde_json::Value>(&resp.body) {
        Ok(value) if value.is_object() => serde_json::from_value(value)
            .map_err(|e| format!("unexpected error reading response: {e}"))?,
        _ => EchoReply::default(),
    };
    let tls_hostname = chain.first().map(|leaf| {
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
        chain,
    })
}

/// The rows of a `| key | value |` table after its header row (upstream's `assertHeaderTable`).
fn header_table(step: &Step) -> Result<Vec<(String, String)>, String> {
    let table = step.table.as_ref().ok_or("expected a table")?;
    let mut rows = table.rows.iter();
    match rows.next() {
        Some(header) if header.len() == 2 && (header[0] == "key" || header[1] == "value") => {}
        other => {
            return Err(format!(
                "expected a header row of 'key' and 'value', got {other:?}"
            ));
        }
    }
    rows.map(|row| match row.as_slice() {
        [key, value] => Ok((key.clone(), value.clone())),
        _ => Err(format!("expected a table with 2 cells, got {row:?}")),
    })
    .collect()
}

/// A header must be present; with a value other than `*`, one of its values must equal it.
fn assert_header(values: &[String], key: &str, expected: &str, side: &str) -> StepResult {
    if values.is_empty() {
        return Err(format!("expected {side} headers to contain {key}"));
    }
    if expected != "*" && !values.iter().any(|v| v == expected) {
        return Err(format!(
            "expected {side} header {key} to contain {expected:?}, it contained {values:?}"
        ));
    }
    Ok(())
}

// ---- steps ------------------------------------------------------------------------------------
// godog matches a step whatever its keyword; cucumber-rs gives `And` the keyword before it, so every
// step is registered for Given, When and Then alike.

#[given(regex = r"^a new random namespace$")]
#[when(regex = r"^a new random namespace$")]
async fn a_new_random_namespace(w: &mut IngressWorld) -> StepResult {
    w.namespace = Some(w.driver.new_namespace().await?);
    Ok(())
}

#[given(regex = r#"^an Ingress resource named "([^"]*)" with this spec:$"#)]
async fn an_ingress_resource_named_with_this_spec(
    w: &mut IngressWorld,
    name: String,
    step: &Step,
) -> StepResult {
    let doc = step.docstring.as_deref().ok_or("expected a doc string")?;
    let spec: IngressSpec =
        serde_yaml::from_str(doc).map_err(|e| format!("deserializing Ingress from spec: {e}"))?;
    let ingress = Ingress {
        metadata: ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        spec: Some(spec),
        ..Default::default()
    };
    w.create_ingress(ingress).await
}

#[given(regex = r"^an Ingress resource$")]
async fn an_ingress_resource(w: &mut IngressWorld, step: &Step) -> StepResult {
    let doc = step.docstring.as_deref().ok_or("expected a doc string")?;
    let ingress: Ingress = serde_yaml::from_str(doc)
        .map_err(|e| format!("deserializing Ingress from manifest: {e}"))?;
    w.create_ingress(ingress).await
}

#[given(regex = r"^an Ingress resource in a new random namespace$")]
async fn an_ingress_resource_in_a_new_random_namespace(
    w: &mut IngressWorld,
    step: &Step,
) -> StepResult {
    a_new_random_namespace(w).await?;
    an_ingress_resource(w, step).await
}

#[given(regex = r#"^a self-signed TLS secret named "([^"]*)" for the "([^"]*)" hostname$"#)]
async fn a_self_signed_tls_secret(w: &mut IngressWorld, name: String, host: String) -> StepResult {
    let namespace = w.namespace()?;
    // Upstream generates an RSA 2048 certificate for the host.
    let cert = TestCert::self_signed_with(&[&host], &rcgen::PKCS_RSA_SHA256);
    let secret = manifests::tls_secret(&namespace, &name, &cert);
    w.certificates.push(cert);
    w.driver.create_secret(secret).await
}

#[given(regex = r"^The Ingress status shows the IP address or FQDN where it is exposed$")]
#[when(regex = r"^The Ingress status shows the IP address or FQDN where it is exposed$")]
#[then(regex = r"^The Ingress status shows the IP address or FQDN where it is exposed$")]
async fn the_ingress_status_shows_the_address(w: &mut IngressWorld) -> StepResult {
    let namespace = w.namespace()?;
    let name = w.ingress_name.clone().ok_or("no Ingress was created")?;
    // Cluster-only: the driver waits for status.loadBalancer and returns the address; manifest mode
    // has no API server to write status to, so it returns None and the step checks nothing. The
    // cluster suite asserts it.
    let _address = w.driver.ingress_address(&namespace, &name).await?;
    Ok(())
}

#[when(regex = r#"^I send a "([^"]*)" request to http://"([^"]*)"/"([^"]*)"$"#)]
async fn i_send_a_request_to_http(
    w: &mut IngressWorld,
    method: String,
    host: String,
    path: String,
) -> StepResult {
    w.capture_round_trip(&method, "http", &host, &path).await
}

#[when(regex = r#"^I send a "([^"]*)" request to "([^"]*)"$"#)]
async fn i_send_a_request_to(w: &mut IngressWorld, method: String, url: String) -> StepResult {
    let uri: http::Uri = url.parse().map_err(|e| format!("URL {url:?}: {e}"))?;
    let scheme = uri.scheme_str().ok_or("the URL has no scheme")?.to_string();
    // Go's url.URL.Host: host and port as written.
    let host = uri.authority().map_or("", |a| a.as_str()).to_string();
    w.capture_round_trip(&method, &scheme, &host, uri.path())
        .await
}

#[given(regex = r#"^the secure connection must verify the "([^"]*)" hostname$"#)]
#[when(regex = r#"^the secure connection must verify the "([^"]*)" hostname$"#)]
#[then(regex = r#"^the secure connection must verify the "([^"]*)" hostname$"#)]
async fn the_secure_connection_must_verify_the_hostname(
    w: &mut IngressWorld,
    hostname: String,
) -> StepResult {
    let exchange = w.exchange()?;
    let Some(tls_hostname) = &exchange.tls_hostname else {
        return Err(
            "hostname verification requires executing a request and also target an HTTPS URL"
                .into(),
        );
    };
    if *tls_hostname != hostname {
        return Err(format!(
            "expected the response TLS hostname to be {hostname} but was {tls_hostname}"
        ));
    }
    // Upstream checks the leaf's names only; verifying the whole chain against the certificate this
    // scenario generated also proves the right Secret was served.
    let roots: Vec<CertificateDer<'static>> =
        w.certificates.iter().map(TestCert::trust_anchor).collect();
    verify_chain(&exchange.chain, &roots, &hostname)
}

/// Verifies `chain` (leaf first) for `hostname` against `roots`, as a browser would.
fn verify_chain(
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

#[given(regex = r"^the response status-code must be (\d+)$")]
#[when(regex = r"^the response status-code must be (\d+)$")]
#[then(regex = r"^the response status-code must be (\d+)$")]
async fn the_response_status_code_must_be(w: &mut IngressWorld, status: u16) -> StepResult {
    let exchange = w.exchange()?;
    if exchange.status != status {
        return Err(format!(
            "expected status code {status} but {} was returned",
            exchange.status
        ));
    }
    Ok(())
}

#[given(regex = r#"^the response must be served by the "([^"]*)" service$"#)]
#[when(regex = r#"^the response must be served by the "([^"]*)" service$"#)]
#[then(regex = r#"^the response must be served by the "([^"]*)" service$"#)]
async fn the_response_must_be_served_by(w: &mut IngressWorld, service: String) -> StepResult {
    let served_by = &w.exchange()?.request.service;
    if *served_by != service {
        return Err(format!(
            "expected the request to be served by {service} but it was served by {served_by:?}"
        ));
    }
    Ok(())
}

#[given(regex = r#"^the response proto must be "([^"]*)"$"#)]
#[when(regex = r#"^the response proto must be "([^"]*)"$"#)]
#[then(regex = r#"^the response proto must be "([^"]*)"$"#)]
async fn the_response_proto_must_be(w: &mut IngressWorld, proto: String) -> StepResult {
    expect_eq("response protocol", &w.exchange()?.proto, &proto)
}

#[given(regex = r"^the response headers must contain <key> with matching <value>$")]
#[when(regex = r"^the response headers must contain <key> with matching <value>$")]
#[then(regex = r"^the response headers must contain <key> with matching <value>$")]
async fn the_response_headers_must_contain(w: &mut IngressWorld, step: &Step) -> StepResult {
    let exchange = w.exchange()?;
    for (key, value) in header_table(step)? {
        let values: Vec<String> = exchange
            .headers
            .get_all(key.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        assert_header(&values, &key, &value, "response")?;
    }
    Ok(())
}

#[given(regex = r#"^the request method must be "([^"]*)"$"#)]
#[when(regex = r#"^the request method must be "([^"]*)"$"#)]
#[then(regex = r#"^the request method must be "([^"]*)"$"#)]
async fn the_request_method_must_be(w: &mut IngressWorld, method: String) -> StepResult {
    expect_eq("request method", &w.exchange()?.request.method, &method)
}

#[given(regex = r#"^the request path must be "([^"]*)"$"#)]
#[when(regex = r#"^the request path must be "([^"]*)"$"#)]
#[then(regex = r#"^the request path must be "([^"]*)"$"#)]
async fn the_request_path_must_be(w: &mut IngressWorld, path: String) -> StepResult {
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    expect_eq("request path", &w.exchange()?.request.path, &path)
}

#[given(regex = r#"^the request proto must be "([^"]*)"$"#)]
#[when(regex = r#"^the request proto must be "([^"]*)"$"#)]
#[then(regex = r#"^the request proto must be "([^"]*)"$"#)]
async fn the_request_proto_must_be(w: &mut IngressWorld, proto: String) -> StepResult {
    expect_eq("request protocol", &w.exchange()?.request.proto, &proto)
}

#[given(regex = r#"^the request host must be "([^"]*)"$"#)]
#[when(regex = r#"^the request host must be "([^"]*)"$"#)]
#[then(regex = r#"^the request host must be "([^"]*)"$"#)]
async fn the_request_host_must_be(w: &mut IngressWorld, host: String) -> StepResult {
    expect_eq("request host", &w.exchange()?.request.host, &host)
}

#[given(regex = r"^the request headers must contain <key> with matching <value>$")]
#[when(regex = r"^the request headers must contain <key> with matching <value>$")]
#[then(regex = r"^the request headers must contain <key> with matching <value>$")]
async fn the_request_headers_must_contain(w: &mut IngressWorld, step: &Step) -> StepResult {
    let headers = &w.exchange()?.request.headers;
    for (key, value) in header_table(step)? {
        let values = headers.get(&key).map_or(&[][..], Vec::as_slice);
        assert_header(values, &key, &value, "request")?;
    }
    Ok(())
}

fn expect_eq(what: &str, actual: &str, expected: &str) -> StepResult {
    if actual != expected {
        return Err(format!(
            "expected the {what} to be {expected:?} but it was {actual:?}"
        ));
    }
    Ok(())
}

#[given(regex = r"^The Ingress status should not contain the IP address or FQDN$")]
#[when(regex = r"^The Ingress status should not contain the IP address or FQDN$")]
#[then(regex = r"^The Ingress status should not contain the IP address or FQDN$")]
async fn the_ingress_status_should_not_contain_an_address(w: &mut IngressWorld) -> StepResult {
    let namespace = w.namespace()?;
    let name = w.ingress_name.clone().ok_or("no Ingress was created")?;
    w.driver.ingress_status_stays_empty(&namespace, &name).await
}

#[given(
    regex = r#"^The backend deployment "([^"]*)" for the ingress resource is scaled to (\d+)$"#
)]
#[when(regex = r#"^The backend deployment "([^"]*)" for the ingress resource is scaled to (\d+)$"#)]
#[then(regex = r#"^The backend deployment "([^"]*)" for the ingress resource is scaled to (\d+)$"#)]
async fn the_backend_deployment_is_scaled(
    w: &mut IngressWorld,
    service: String,
    replicas: usize,
) -> StepResult {
    let namespace = w.namespace()?;
    w.driver.scale_backend(&namespace, &service, replicas).await
}

#[when(regex = r#"^I send (\d+) requests to "([^"]*)"$"#)]
async fn i_send_n_requests(w: &mut IngressWorld, count: usize, url: String) -> StepResult {
    let uri: http::Uri = url.parse().map_err(|e| format!("URL {url:?}: {e}"))?;
    let scheme = uri.scheme_str().ok_or("the URL has no scheme")?.to_string();
    let host = uri.authority().map_or("", |a| a.as_str()).to_string();
    let target = w.driver.target().await?;
    w.exchanges.clear();
    for _ in 0..count {
        let exchange = send(&target, "GET", &scheme, &host, uri.path()).await?;
        w.exchanges.push(exchange);
    }
    Ok(())
}

#[then(
    regex = r"^all the responses status-code must be (\d+) and the response body should contain the IP address of (\d+) different Kubernetes pods$"
)]
async fn all_responses_from_n_pods(w: &mut IngressWorld, status: u16, pods: usize) -> StepResult {
    if w.exchanges.is_empty() {
        return Err("no requests were sent".into());
    }
    if let Some(bad) = w.exchanges.iter().find(|e| e.status != status) {
        return Err(format!(
            "expected status code {status} but {} was returned",
            bad.status
        ));
    }
    let distinct: std::collections::BTreeSet<&str> =
        w.exchanges.iter().map(|e| e.request.pod.as_str()).collect();
    if distinct.len() != pods {
        return Err(format!(
            "expected {pods} different pods to answer, {} did: {distinct:?}",
            distinct.len()
        ));
    }
    Ok(())
}
