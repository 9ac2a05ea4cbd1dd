//! The steps of the project's own scenarios (`tests/conformance/features/`).
//!
//! Objects are written in the scenario as they would be applied (the namespace is the scenario's,
//! nothing else is filled in), requests are not redirected behind the scenario's back, and a step that
//! cannot check what it says fails instead of passing.

use std::collections::BTreeSet;

use cucumber::gherkin::Step;
use cucumber::{given, then, when};
use k8s_openapi::api::networking::v1::Ingress;

use super::world::{Connection, IngressWorld, StepResult, expect_eq, send, verify_chain};
use crate::support::{TestCert, manifests};

/// Upper bound for "I send N requests": the scenarios stay quick and bounded.
const MAX_REQUESTS: usize = 1000;

#[given(regex = r"^a namespace of its own$")]
async fn a_namespace_of_its_own(w: &mut IngressWorld) -> StepResult {
    w.namespace = Some(w.driver.new_namespace().await?);
    Ok(())
}

#[given(regex = r"^the Ingress:$")]
async fn the_ingress(w: &mut IngressWorld, step: &Step) -> StepResult {
    let doc = step
        .docstring
        .as_deref()
        .ok_or("expected the Ingress as a doc string")?;
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(doc).map_err(|e| format!("the Ingress is not YAML: {e}"))?;
    let object = value
        .as_mapping_mut()
        .ok_or("the Ingress must be a YAML mapping")?;
    object
        .entry("apiVersion".into())
        .or_insert_with(|| "networking.k8s.io/v1".into());
    object
        .entry("kind".into())
        .or_insert_with(|| "Ingress".into());
    let ingress: Ingress =
        serde_yaml::from_value(value).map_err(|e| format!("not an Ingress: {e}"))?;
    w.create_ingress(ingress, false).await
}

#[given(regex = r#"^a TLS Secret "([^"]+)" with a self-signed certificate for "([^"]+)"$"#)]
async fn a_tls_secret(w: &mut IngressWorld, name: String, host: String) -> StepResult {
    let namespace = w.namespace()?;
    let cert = TestCert::self_signed(&[&host]);
    let secret = manifests::tls_secret(&namespace, &name, &cert);
    w.certificates.push((name, cert));
    w.driver.create_secret(secret).await
}

#[given(regex = r#"^the IngressClass "portcullis" is the default class$"#)]
async fn our_class_is_the_default(w: &mut IngressWorld) -> StepResult {
    w.driver.make_class_default().await
}

#[given(regex = r#"^the "([^"]+)" Service has (\d+) ready pods$"#)]
async fn the_service_has_ready_pods(
    w: &mut IngressWorld,
    service: String,
    pods: usize,
) -> StepResult {
    let namespace = w.namespace()?;
    w.driver.scale_backend(&namespace, &service, pods).await
}

/// Splits `http://host[:port]/path?query` into scheme, host (with port, as the Host header) and the
/// path with its query.
fn split_url(url: &str) -> Result<(String, String, String), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("URL {url:?}: {e}"))?;
    let scheme = uri.scheme_str().ok_or("the URL has no scheme")?.to_string();
    let host = uri.authority().ok_or("the URL has no host")?.to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    Ok((scheme, host, path))
}

#[when(regex = r"^I send an? ([A-Z]+) request for (https?://\S+)$")]
async fn i_send_a_request(w: &mut IngressWorld, method: String, url: String) -> StepResult {
    let (scheme, host, path) = split_url(&url)?;
    let target = w.driver.target().await?;
    w.exchange = Some(send(&target, &method, &scheme, &host, &path).await?);
    Ok(())
}

#[when(regex = r"^I send an? ([A-Z]+) request for (/\S*) to the controller's IP address$")]
async fn i_send_a_request_without_a_name(
    w: &mut IngressWorld,
    method: String,
    path: String,
) -> StepResult {
    let target = w.driver.target().await?;
    w.exchange = Some(send(&target, &method, "http", "", &path).await?);
    Ok(())
}

#[when(regex = r"^I follow the redirect$")]
async fn i_follow_the_redirect(w: &mut IngressWorld) -> StepResult {
    let location = location(w)?;
    let (scheme, host, path) = split_url(&location)?;
    let target = w.driver.target().await?;
    // The client resolves the name to the controller, whatever port the Location names.
    let host = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
    w.exchange = Some(send(&target, "GET", &scheme, host, &path).await?);
    Ok(())
}

#[when(
    regex = r"^I send (\d+) GET requests for (http://\S+)(, each on a new connection| over one connection)$"
)]
async fn i_send_many_requests(
    w: &mut IngressWorld,
    count: usize,
    url: String,
    how: String,
) -> StepResult {
    if count > MAX_REQUESTS {
        return Err(format!("at most {MAX_REQUESTS} requests"));
    }
    let (scheme, host, path) = split_url(&url)?;
    let target = w.driver.target().await?;
    w.exchanges.clear();
    let mut shared = None;
    for _ in 0..count {
        let exchange = if how.contains("one connection") {
            let conn = match &mut shared {
                Some(conn) => conn,
                None => shared.insert(Connection::open(&target, &scheme, &host).await?),
            };
            conn.send("GET", &path).await?
        } else {
            send(&target, "GET", &scheme, &host, &path).await?
        };
        w.exchanges.push(exchange);
    }
    Ok(())
}

#[then(regex = r#"^the "([^"]+)" service answers$"#)]
async fn the_service_answers(w: &mut IngressWorld, service: String) -> StepResult {
    let exchange = w.exchange()?;
    if exchange.status != 200 || exchange.request.service != service {
        return Err(format!(
            "expected a 200 from the {service:?} service, got {} from {:?}",
            exchange.status, exchange.request.service
        ));
    }
    Ok(())
}

#[then(regex = r"^Portcullis answers 404 itself$")]
async fn portcullis_answers_404(w: &mut IngressWorld) -> StepResult {
    let exchange = w.exchange()?;
    if exchange.status != 404 || !exchange.request.service.is_empty() {
        return Err(format!(
            "expected Portcullis's own 404, got {} from {:?}",
            exchange.status, exchange.request.service
        ));
    }
    Ok(())
}

#[then(regex = r"^the response is (HTTP/\S+) with the headers (.+)$")]
async fn the_response_has_headers(
    w: &mut IngressWorld,
    proto: String,
    headers: String,
) -> StepResult {
    let exchange = w.exchange()?;
    expect_eq("response protocol", &exchange.proto, &proto)?;
    let missing: Vec<&str> = headers
        .split(", ")
        .flat_map(|h| h.split(" and "))
        .map(str::trim)
        .filter(|h| !exchange.headers.contains_key(*h))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the response lacks {missing:?}; it has {:?}",
            exchange.headers.keys().collect::<Vec<_>>()
        ));
    }
    Ok(())
}

#[then(regex = r#"^the backend received an? ([A-Z]+) request for "([^"]*)" over (HTTP/\S+)$"#)]
async fn the_backend_received(
    w: &mut IngressWorld,
    method: String,
    path: String,
    proto: String,
) -> StepResult {
    let request = &w.exchange()?.request;
    expect_eq("request method", &request.method, &method)?;
    expect_eq("request path", &request.path, &path)?;
    expect_eq("request protocol", &request.proto, &proto)
}

#[then(regex = r#"^the backend received the Host "([^"]*)"$"#)]
async fn the_backend_received_the_host(w: &mut IngressWorld, host: String) -> StepResult {
    expect_eq("request host", &w.exchange()?.request.host, &host)
}

#[then(regex = r"^the backend received the header ([A-Za-z0-9-]+): (.+)$")]
async fn the_backend_received_the_header(
    w: &mut IngressWorld,
    name: String,
    value: String,
) -> StepResult {
    let request = &w.exchange()?.request;
    let values = request.headers.get(&name).map_or(&[][..], Vec::as_slice);
    if !values.contains(&value) {
        return Err(format!(
            "expected the backend to receive {name}: {value}, it received {values:?}"
        ));
    }
    Ok(())
}

#[then(
    regex = r#"^the certificate presented is the one of Secret "([^"]+)", valid for "([^"]+)"$"#
)]
async fn the_certificate_is_the_secrets(
    w: &mut IngressWorld,
    secret: String,
    host: String,
) -> StepResult {
    let cert = w
        .certificates
        .iter()
        .find(|(name, _)| *name == secret)
        .map(|(_, cert)| cert.trust_anchor())
        .ok_or_else(|| format!("the scenario made no Secret {secret:?}"))?;
    verify_chain(&w.exchange()?.chain, &[cert], &host)
}

/// The Location of the last response.
fn location(w: &IngressWorld) -> Result<String, String> {
    w.exchange()?
        .headers
        .get(http::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| "the response has no Location".to_string())
}

#[then(regex = r#"^the response redirects with (\d+) to "([^"]+)"$"#)]
async fn the_response_redirects(w: &mut IngressWorld, status: u16, url: String) -> StepResult {
    let exchange = w.exchange()?;
    if exchange.status != status {
        return Err(format!(
            "expected a {status} redirect, got {}",
            exchange.status
        ));
    }
    let location = location(w)?;
    // The controller names its HTTPS port when that is not 443 (a test's ephemeral port).
    let https_port = format!(":{}/", w.driver.target().await?.https_port);
    let location = location.replacen(&https_port, "/", 1);
    expect_eq("Location", &location, &url)
}

#[then(regex = r"^every response has status (\d+)$")]
async fn every_response_has_status(w: &mut IngressWorld, status: u16) -> StepResult {
    if w.exchanges.is_empty() {
        return Err("no requests were sent".into());
    }
    match w.exchanges.iter().find(|e| e.status != status) {
        Some(bad) => Err(format!("expected status {status}, one was {}", bad.status)),
        None => Ok(()),
    }
}

#[then(regex = r"^(\d+) different pods answered$")]
async fn different_pods_answered(w: &mut IngressWorld, pods: usize) -> StepResult {
    let distinct: BTreeSet<&str> = w.exchanges.iter().map(|e| e.request.pod.as_str()).collect();
    if distinct.len() != pods || distinct.contains("") {
        return Err(format!(
            "expected {pods} different pods to answer, these did: {distinct:?}"
        ));
    }
    Ok(())
}

#[then(regex = r#"^the status of Ingress "([^"]+)" shows the address (\S+)$"#)]
async fn the_status_shows(w: &mut IngressWorld, name: String, address: String) -> StepResult {
    let namespace = w.namespace()?;
    match w.driver.ingress_address(&namespace, &name).await? {
        Some(shown) => expect_eq("status address", &shown, &address),
        None => Err("Ingress status needs an API server: tag the scenario @cluster".into()),
    }
}

#[then(regex = r#"^the status of Ingress "([^"]+)" stays without an address$"#)]
async fn the_status_stays_empty(w: &mut IngressWorld, name: String) -> StepResult {
    let namespace = w.namespace()?;
    w.driver.ingress_status_stays_empty(&namespace, &name).await
}
