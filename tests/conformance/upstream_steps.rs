//! The step phrasing of the upstream Ingress conformance features (kubernetes-sigs/
//! ingress-controller-conformance, `test/conformance/*/feature.go`, `test/state`, `test/http`), so
//! that their `.feature` files run unchanged as an external check: the same requests (redirects
//! followed), the same assertions.

use cucumber::gherkin::Step;
use cucumber::{given, then, when};
use k8s_openapi::api::networking::v1::{Ingress, IngressSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::pki_types::CertificateDer;

use super::world::{IngressWorld, StepResult, expect_eq, send, verify_chain};
use crate::support::{TestCert, manifests};

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
    w.create_ingress(ingress, true).await
}

#[given(regex = r"^an Ingress resource$")]
async fn an_ingress_resource(w: &mut IngressWorld, step: &Step) -> StepResult {
    let doc = step.docstring.as_deref().ok_or("expected a doc string")?;
    let ingress: Ingress = serde_yaml::from_str(doc)
        .map_err(|e| format!("deserializing Ingress from manifest: {e}"))?;
    w.create_ingress(ingress, true).await
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
    w.certificates.push((name, cert));
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
    let roots: Vec<CertificateDer<'static>> = w
        .certificates
        .iter()
        .map(|(_, c)| c.trust_anchor())
        .collect();
    verify_chain(&exchange.chain, &roots, &hostname)
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
