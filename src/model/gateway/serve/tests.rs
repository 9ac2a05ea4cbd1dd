use super::*;
use crate::model::gateway::routing::RequestParts;
use crate::settings::Settings;
use crate::source::manifests::parse_documents;

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec: {controllerName: portcullis.io/gateway-controller}
";

fn snapshot(yaml: &str) -> Snapshot {
    let (objects, problems) = parse_documents(&format!("{CLASS}---\n{yaml}"), &Arc::from("test"));
    assert!(problems.is_empty(), "{problems:?}");
    let mut snapshot = Snapshot::default();
    for object in objects {
        snapshot.push(object);
    }
    snapshot
}

fn gateway(name: &str, created: &str, extra: &str, listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: infra, creationTimestamp: '{created}'}}
spec:
  gatewayClassName: portcullis
  listeners: {listeners}
{extra}---
"
    )
}

const HTTP: &str = "[{name: http, protocol: HTTP, port: 80}]";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn serving(snapshot: &Snapshot, pool: &[IpAddr]) -> Arc<Config> {
    serving_with(snapshot, pool, Settings::default())
}

fn serving_with(snapshot: &Snapshot, pool: &[IpAddr], settings: Settings) -> Arc<Config> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let default = crate::tls::generate_default_cert(&provider).expect("default certificate");
    let empty = Arc::new(Config::empty(
        crate::tls::CertTable::new(default),
        Arc::new(settings),
    ));
    attach(empty, snapshot, pool, &mut CertStore::new(provider))
}

fn programmed(config: &Config, gateway: &str) -> (bool, &'static str) {
    let state = config
        .gateway
        .status
        .gateways
        .iter()
        .find(|g| g.gateway.name == gateway)
        .expect("gateway status");
    let c = state
        .conditions
        .iter()
        .find(|c| c.type_ == "Programmed")
        .expect("Programmed");
    (c.status, c.reason)
}

#[test]
fn each_gateway_gets_its_own_address_and_keeps_the_one_its_status_names() {
    let keeps = "status: {addresses: [{type: IPAddress, value: 10.0.0.1}]}\n";
    let s = snapshot(&format!(
        "{}{}",
        gateway("older", "2026-01-01T00:00:00Z", "", HTTP),
        gateway("newer", "2026-01-02T00:00:00Z", keeps, HTTP)
    ));
    let config = serving(&s, &[ip("10.0.0.1"), ip("10.0.0.2")]);
    let at = |name: &str| config.gateway.addresses[&NamespacedName::new("infra", name)];
    assert_eq!(at("newer"), ip("10.0.0.1"), "the address its status names");
    assert_eq!(at("older"), ip("10.0.0.2"), "the free one");
    let sockets: BTreeSet<SocketAddr> = config.gateway.sockets.keys().copied().collect();
    assert_eq!(
        sockets,
        BTreeSet::from([
            "10.0.0.1:80".parse().expect("addr"),
            "10.0.0.2:80".parse().expect("addr")
        ]),
        "one socket per Gateway and port"
    );
}

#[test]
fn a_gateway_without_an_address_is_not_programmed() {
    let requested = "  addresses: [{type: IPAddress, value: 192.0.2.9}]\n";
    let s = snapshot(&format!(
        "{}{}{}",
        gateway("first", "2026-01-01T00:00:00Z", "", HTTP),
        gateway("second", "2026-01-02T00:00:00Z", "", HTTP),
        gateway("wants", "2026-01-03T00:00:00Z", requested, HTTP),
    ));
    let config = serving(&s, &[ip("10.0.0.1")]);
    assert_eq!(programmed(&config, "first"), (true, "Programmed"));
    assert_eq!(programmed(&config, "second"), (false, "AddressNotAssigned"));
    assert_eq!(programmed(&config, "wants"), (false, "AddressNotUsable"));
    assert_eq!(config.gateway.sockets.len(), 1, "only the first is served");
    let problem = config
        .problems
        .iter()
        .find(|p| p.object.as_ref().is_some_and(|o| o.name == "second"))
        .expect("a problem for the Gateway without an address");
    assert_eq!(problem.kind, ProblemKind::GatewayNotReady);
    assert!(
        problem.message.contains("AddressNotAssigned"),
        "{}",
        problem.message
    );
    let none = serving(&s, &[]);
    assert!(none.gateway.sockets.is_empty());
    assert!(
        none.gateway.unassigned[&NamespacedName::new("infra", "first")]
            .message
            .contains("--gateway-addresses")
    );
}

#[test]
fn listeners_sharing_a_port_are_chosen_by_the_most_specific_hostname() {
    let listeners = "
  - {name: any, protocol: HTTP, port: 80}
  - {name: wild, protocol: HTTP, port: 80, hostname: '*.example.com'}
  - {name: exact, protocol: HTTP, port: 80, hostname: a.example.com}";
    let s = snapshot(&gateway("gw", "2026-01-01T00:00:00Z", "", listeners));
    let config = serving(&s, &[ip("10.0.0.1")]);
    let socket: SocketAddr = "10.0.0.1:80".parse().expect("addr");
    let name = |host: &str| {
        config
            .gateway
            .listener(&socket, host)
            .map(|l| l.name.as_str())
    };
    assert_eq!(name("a.example.com"), Some("exact"));
    assert_eq!(name("b.example.com"), Some("wild"));
    assert_eq!(name("example.org"), Some("any"));
    let elsewhere: SocketAddr = "10.0.0.1:8080".parse().expect("addr");
    assert!(
        config
            .gateway
            .listener(&elsewhere, "a.example.com")
            .is_none()
    );
}

#[test]
fn one_port_with_two_protocols_serves_the_first_and_reports_the_other() {
    let listeners = "
  - {name: http, protocol: HTTP, port: 8000, hostname: a.example.com}
  - {name: https, protocol: HTTPS, port: 8000, hostname: b.example.com, tls: {certificateRefs: [{name: b}]}}";
    let s = snapshot(&format!(
        "{}{}",
        tls_secret("b", "b.example.com"),
        gateway("gw", "2026-01-01T00:00:00Z", "", listeners)
    ));
    let config = serving(&s, &[ip("10.0.0.1")]);
    let socket = &config.gateway.sockets[&"10.0.0.1:8000".parse().expect("addr")];
    assert!(!socket.tls);
    assert_eq!(socket.listeners.len(), 1);
    assert!(
        config
            .problems
            .iter()
            .any(|p| p.message.contains("already served with another protocol")),
        "{:?}",
        config.problems
    );
}

fn tls_secret(name: &str, host: &str) -> String {
    let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("rcgen");
    let pem = |s: &str| s.replace('\n', "\\n");
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: infra}}\ntype: kubernetes.io/tls\n\
         stringData: {{tls.crt: \"{}\", tls.key: \"{}\"}}\n---\n",
        pem(&ck.cert.pem()),
        pem(&ck.signing_key.serialize_pem())
    )
}

#[test]
fn an_https_listener_serves_the_certificate_that_covers_the_name() {
    let listeners = "
  - name: https
    protocol: HTTPS
    port: 443
    tls: {mode: Terminate, certificateRefs: [{name: a}, {name: b}]}";
    let s = snapshot(&format!(
        "{}{}{}",
        tls_secret("a", "a.example.com"),
        tls_secret("b", "b.example.com"),
        gateway("gw", "2026-01-01T00:00:00Z", "", listeners)
    ));
    let config = serving(&s, &[ip("10.0.0.1")]);
    let socket: SocketAddr = "10.0.0.1:443".parse().expect("addr");
    let names = |sni: Option<&str>| {
        config
            .gateway
            .certificate(&socket, sni)
            .map(|c| c.dns_names.clone())
    };
    assert_eq!(
        names(Some("b.example.com")),
        Some(vec!["b.example.com".into()])
    );
    assert_eq!(
        names(Some("a.example.com")),
        Some(vec!["a.example.com".into()])
    );
    assert_eq!(
        names(None),
        Some(vec!["a.example.com".into()]),
        "without SNI: the first"
    );
}

#[test]
fn backends_resolve_to_the_ready_endpoints_of_the_service_port() {
    let s = snapshot(&format!(
        "{}\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: infra}}
spec: {{ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: infra, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
- {{addresses: [10.1.0.1], conditions: {{ready: true}}}}
- {{addresses: [10.1.0.2], conditions: {{ready: false}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: infra}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
",
        gateway("gw", "2026-01-01T00:00:00Z", "", HTTP)
    ));
    let config = serving(&s, &[ip("10.0.0.1")]);
    let socket: SocketAddr = "10.0.0.1:80".parse().expect("addr");
    let headers = http::HeaderMap::new();
    let req = RequestParts {
        path: "/",
        query: None,
        method: &http::Method::GET,
        headers: &headers,
    };
    let listener = config
        .gateway
        .listener(&socket, "x.test")
        .expect("listener");
    let action = listener.rules.lookup("x.test", &req).expect("rule");
    let backend = action.pick(|_| 1).expect("a backend");
    let route = &config.gateway.backends[&BackendKey {
        route: NamespacedName::new("infra", "r"),
        grpc: false,
        service: backend.service.clone(),
        port: backend.port,
    }];
    assert_eq!(
        &route.backend.endpoints[..],
        &["10.1.0.1:8080".parse::<SocketAddr>().expect("addr")],
        "the ready endpoint, at the target port"
    );
}

#[test]
fn a_gateway_that_opts_in_gets_acme_certificates_for_its_https_listeners() {
    let listeners = "
  - {name: a, protocol: HTTPS, port: 443, hostname: A.example.com, tls: {certificateRefs: [{name: a-cert}]}}
  - {name: wild, protocol: HTTPS, port: 443, hostname: '*.example.com', tls: {certificateRefs: [{name: w-cert}]}}
  - {name: http, protocol: HTTP, port: 80}";
    let gw = gateway("gw", "2026-01-01T00:00:00Z", "", listeners).replace(
        "namespace: infra,",
        "namespace: infra, annotations: {portcullis.io/acme: 'true'},",
    );
    let settings = Settings::from_yaml(
        "acme:\n  default-issuer: le\n  issuers:\n    le: {directory: https://ca.example/dir}\n",
    )
    .expect("settings");
    let config = serving_with(&snapshot(&gw), &[ip("10.0.0.1")], settings);
    let wanted: Vec<(String, Vec<String>)> = config
        .acme
        .iter()
        .map(|w| (w.secret.to_string(), w.hosts.clone()))
        .collect();
    assert_eq!(
        wanted,
        [(
            "infra/a-cert".to_string(),
            vec!["a.example.com".to_string()]
        )]
    );
    assert!(
        config
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::AcmeNotOrdered && p.message.contains("wildcard")),
        "a wildcard cannot be validated: {:?}",
        config.problems
    );
}

#[test]
fn an_https_listener_whose_secret_holds_no_certificate_is_not_programmed() {
    let listeners = "
  - {name: https, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: broken}]}}";
    let broken = "apiVersion: v1\nkind: Secret\nmetadata: {name: broken, namespace: infra}\ntype: kubernetes.io/tls\n\
         stringData: {tls.crt: not a certificate, tls.key: not a key}\n---\n";
    let s = snapshot(&format!(
        "{broken}{}",
        gateway("gw", "2026-01-01T00:00:00Z", "", listeners)
    ));
    let config = serving(&s, &[ip("10.0.0.1")]);
    assert!(config.gateway.sockets.is_empty(), "nothing to serve with");
    let listener = &config.gateway.status.gateways[0].listeners[0];
    let refs = listener
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .expect("ResolvedRefs");
    assert_eq!((refs.status, refs.reason), (false, "InvalidCertificateRef"));
    assert_eq!(programmed(&config, "gw"), (false, "Invalid"));
}
