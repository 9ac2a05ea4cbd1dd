//! Kubernetes objects for tests, built as k8s-openapi types (so a cluster suite can apply the very same
//! objects through the API), and a manifest directory that receives them as YAML files written
//! atomically, the way a ConfigMap volume or `mv` replaces them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressClass, IngressClassSpec,
    IngressRule, IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::pki::TestCert;

/// The class every test Ingress names, and the controller's default.
pub const CLASS: &str = "portcullis";
pub const CONTROLLER_NAME: &str = "portcullis.io/ingress-controller";

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        ..Default::default()
    }
}

/// Our IngressClass, as the Helm chart installs it.
pub fn ingress_class() -> IngressClass {
    IngressClass {
        metadata: meta(None, CLASS),
        spec: Some(IngressClassSpec {
            controller: Some(CONTROLLER_NAME.into()),
            ..Default::default()
        }),
    }
}

/// How an Ingress or a Service names a Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    Number(i32),
    Name(String),
}

impl Port {
    pub fn name(name: &str) -> Port {
        Port::Name(name.into())
    }

    fn backend_port(&self) -> ServiceBackendPort {
        match self {
            Port::Number(n) => ServiceBackendPort {
                number: Some(*n),
                name: None,
            },
            Port::Name(name) => ServiceBackendPort {
                number: None,
                name: Some(name.clone()),
            },
        }
    }
}

/// A Service and the EndpointSlices that make its endpoints known.
#[derive(Debug, Clone)]
pub struct ServiceObjects {
    pub service: Service,
    pub slices: Vec<EndpointSlice>,
}

impl ServiceObjects {
    /// The objects to write or apply: the Service, then its slices.
    pub fn objects(&self) -> Vec<&dyn ErasedObject> {
        let mut all: Vec<&dyn ErasedObject> = vec![&self.service];
        all.extend(self.slices.iter().map(|s| s as &dyn ErasedObject));
        all
    }
}

/// A Service with one port (`port`, named `port_name`) whose endpoints are `endpoints`, and the
/// EndpointSlices the EndpointSlice controller would write for it: one per distinct endpoint port
/// (a slice has one port list for all its endpoints), the slice port named like the Service port.
pub fn service_with_endpoints(
    namespace: &str,
    name: &str,
    port: i32,
    port_name: Option<&str>,
    endpoints: &[SocketAddr],
    ready: bool,
) -> ServiceObjects {
    let first_port = endpoints.first().map_or(1, |e| i32::from(e.port()));
    let target_port = match port_name {
        // Pods name their container port; each may use a different number.
        Some(name) => IntOrString::String(name.into()),
        None => IntOrString::Int(first_port),
    };
    let service = Service {
        metadata: meta(Some(namespace), name),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: port_name.map(str::to_string),
                port,
                target_port: Some(target_port),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut by_port: BTreeMap<(bool, u16), Vec<SocketAddr>> = BTreeMap::new();
    for e in endpoints {
        by_port.entry((e.is_ipv6(), e.port())).or_default().push(*e);
    }
    let slices = by_port
        .into_iter()
        .enumerate()
        .map(|(i, ((ipv6, target), addrs))| {
            let mut slice_meta = meta(Some(namespace), &format!("{name}-{i}"));
            slice_meta.labels = Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                name.to_string(),
            )]));
            EndpointSlice {
                metadata: slice_meta,
                address_type: if ipv6 { "IPv6" } else { "IPv4" }.into(),
                ports: Some(vec![EndpointPort {
                    name: Some(port_name.unwrap_or("").into()),
                    port: Some(i32::from(target)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                endpoints: Some(
                    addrs
                        .iter()
                        .map(|e| Endpoint {
                            addresses: vec![e.ip().to_string()],
                            conditions: Some(EndpointConditions {
                                ready: Some(ready),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    ServiceObjects { service, slices }
}

/// An `Opaque` Secret with these `data` entries (as text), like the ones auth annotations name.
pub fn opaque_secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: meta(Some(namespace), name),
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A `kubernetes.io/tls` Secret holding `cert`.
pub fn tls_secret(namespace: &str, name: &str, cert: &TestCert) -> Secret {
    tls_secret_raw(namespace, name, &cert.chain_pem, &cert.key_pem)
}

/// A `kubernetes.io/tls` Secret with arbitrary `tls.crt` and `tls.key` contents (`data`, base64).
pub fn tls_secret_raw(namespace: &str, name: &str, crt: &str, key: &str) -> Secret {
    Secret {
        metadata: meta(Some(namespace), name),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_string(), ByteString(crt.as_bytes().to_vec())),
            ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
        ])),
        ..Default::default()
    }
}

/// Builds an Ingress of our class without the ceremony of the full k8s-openapi types.
#[derive(Debug, Clone)]
pub struct IngressBuilder {
    ingress: Ingress,
}

/// `pathType` of a rule path.
#[derive(Debug, Clone, Copy)]
pub enum PathType {
    Exact,
    Prefix,
    ImplementationSpecific,
}

impl IngressBuilder {
    pub fn new(namespace: &str, name: &str) -> IngressBuilder {
        IngressBuilder {
            ingress: Ingress {
                metadata: meta(Some(namespace), name),
                spec: Some(IngressSpec {
                    ingress_class_name: Some(CLASS.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    fn spec(&mut self) -> &mut IngressSpec {
        self.ingress.spec.get_or_insert_with(Default::default)
    }

    /// Sets `spec.ingressClassName`; `None` removes it.
    pub fn class(mut self, class: Option<&str>) -> Self {
        self.spec().ingress_class_name = class.map(str::to_string);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.ingress
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        self
    }

    /// `nginx.ingress.kubernetes.io/` annotations, given without their prefix, as Ingresses moving off
    /// ingress-nginx carry them.
    pub fn nginx_annotations(self, annotations: &[(&str, &str)]) -> Self {
        annotations.iter().fold(self, |b, (k, v)| {
            b.annotation(&format!("nginx.ingress.kubernetes.io/{k}"), v)
        })
    }

    /// `metadata.creationTimestamp`, which decides conflicts (the oldest Ingress wins).
    pub fn created(mut self, rfc3339: &str) -> Self {
        let time = rfc3339.parse().expect("an RFC 3339 timestamp");
        self.ingress.metadata.creation_timestamp = Some(Time(time));
        self
    }

    pub fn tls(mut self, hosts: &[&str], secret: &str) -> Self {
        self.spec()
            .tls
            .get_or_insert_with(Vec::new)
            .push(IngressTLS {
                hosts: Some(hosts.iter().map(|h| h.to_string()).collect()),
                secret_name: Some(secret.into()),
            });
        self
    }

    /// Adds one path to the rule for `host` (`None`: a rule without host), creating the rule if needed.
    pub fn path(
        mut self,
        host: Option<&str>,
        path: &str,
        path_type: PathType,
        service: &str,
        port: Port,
    ) -> Self {
        let rules = self.spec().rules.get_or_insert_with(Vec::new);
        let position = rules.iter().position(|r| r.host.as_deref() == host);
        let rule = match position {
            Some(i) => &mut rules[i],
            None => {
                rules.push(IngressRule {
                    host: host.map(str::to_string),
                    http: Some(HTTPIngressRuleValue { paths: Vec::new() }),
                });
                rules.last_mut().expect("just pushed")
            }
        };
        let path_type = match path_type {
            PathType::Exact => "Exact",
            PathType::Prefix => "Prefix",
            PathType::ImplementationSpecific => "ImplementationSpecific",
        };
        rule.http
            .get_or_insert_with(|| HTTPIngressRuleValue { paths: Vec::new() })
            .paths
            .push(HTTPIngressPath {
                path: Some(path.into()),
                path_type: path_type.into(),
                backend: backend(service, &port),
            });
        self
    }

    /// A `Prefix` path for `host` to `service` port 80.
    pub fn prefix(self, host: Option<&str>, path: &str, service: &str) -> Self {
        self.path(host, path, PathType::Prefix, service, Port::Number(80))
    }

    /// An `Exact` path for `host` to `service` port 80.
    pub fn exact(self, host: Option<&str>, path: &str, service: &str) -> Self {
        self.path(host, path, PathType::Exact, service, Port::Number(80))
    }

    /// A `Prefix /` rule for `host` to `service` port 80.
    pub fn route(self, host: Option<&str>, service: &str) -> Self {
        self.path(host, "/", PathType::Prefix, service, Port::Number(80))
    }

    pub fn default_backend(mut self, service: &str, port: Port) -> Self {
        self.spec().default_backend = Some(backend(service, &port));
        self
    }

    pub fn build(self) -> Ingress {
        self.ingress
    }
}

fn backend(service: &str, port: &Port) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: service.into(),
            port: Some(port.backend_port()),
        }),
        resource: None,
    }
}

/// Serialises objects as one multi-document YAML stream.
pub fn to_yaml(objects: &[&dyn ErasedObject]) -> String {
    objects
        .iter()
        .map(|o| o.yaml())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Any k8s-openapi object that can be written to a manifest (k8s-openapi's `Serialize` includes
/// `apiVersion` and `kind`).
pub trait ErasedObject: Sync {
    fn yaml(&self) -> String;
    /// `tls.key` of a Secret, so tests can check that keys never reach the log.
    fn private_key(&self) -> Option<String> {
        None
    }
}

macro_rules! erased {
    ($($t:ty),*) => {$(
        impl ErasedObject for $t {
            fn yaml(&self) -> String {
                serde_yaml::to_string(self).expect("serialise to YAML")
            }
        }
    )*};
}
erased!(Ingress, IngressClass, Service, EndpointSlice);

impl ErasedObject for Secret {
    fn yaml(&self) -> String {
        serde_yaml::to_string(self).expect("serialise to YAML")
    }

    fn private_key(&self) -> Option<String> {
        let data = self.data.as_ref()?.get("tls.key")?;
        Some(String::from_utf8_lossy(&data.0).into_owned())
    }
}

/// A temporary directory the controller reads with `--manifests`.
pub struct ManifestDir {
    dir: tempfile::TempDir,
    keys: Mutex<Vec<String>>,
}

impl Default for ManifestDir {
    fn default() -> Self {
        ManifestDir::new()
    }
}

impl ManifestDir {
    pub fn new() -> ManifestDir {
        ManifestDir {
            dir: tempfile::tempdir().expect("manifest dir"),
            keys: Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `objects` to `name` (replacing it atomically).
    pub fn write(&self, name: &str, objects: &[&dyn ErasedObject]) {
        let mut keys = self.keys.lock().expect("keys lock");
        keys.extend(objects.iter().filter_map(|o| o.private_key()));
        drop(keys);
        self.write_raw(name, &to_yaml(objects));
    }

    /// Writes `text` to `name`: first to a hidden temporary file the controller ignores, then renamed
    /// over the target, so the controller never reads half a file.
    pub fn write_raw(&self, name: &str, text: &str) {
        let temp = self.file(&format!(".{name}.tmp"));
        std::fs::write(&temp, text).expect("write the manifest");
        std::fs::rename(&temp, self.file(name)).expect("rename the manifest into place");
    }

    /// Overwrites `name` in place (truncate and write), as an editor without atomic save does.
    pub fn edit_in_place(&self, name: &str, text: &str) {
        std::fs::write(self.file(name), text).expect("edit the manifest in place");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.file(name)).expect("remove the manifest");
    }

    /// Every private key written through this directory.
    pub fn private_keys(&self) -> Vec<String> {
        self.keys.lock().expect("keys lock").clone()
    }

    /// Remembers a key written by other means (e.g. [`Self::write_raw`]) for the log check.
    pub fn remember_key(&self, key_pem: &str) {
        self.keys.lock().expect("keys lock").push(key_pem.into());
    }
}

/// Serialises any serde value to YAML (for hand-made objects a test wants to get slightly wrong).
pub fn yaml_of(value: &impl Serialize) -> String {
    serde_yaml::to_string(value).expect("serialise to YAML")
}

/// An echo backend for `service` in `namespace`, with its Service (port 80, named `http`) and
/// EndpointSlice written to `svc-<service>.yaml`.
pub async fn echo_service(
    dir: &ManifestDir,
    namespace: &str,
    service: &str,
) -> crate::support::EchoServer {
    let echo = crate::support::EchoServer::start(crate::support::EchoIdentity {
        namespace: namespace.into(),
        service: service.into(),
        pod: format!("{service}-pod"),
        ..Default::default()
    })
    .await;
    let svc = service_with_endpoints(namespace, service, 80, Some("http"), &[echo.addr()], true);
    dir.write(&format!("svc-{service}.yaml"), &svc.objects());
    echo
}

/// A self-signed certificate for `hosts`, in the TLS Secret `name` written to `secret-<name>.yaml`.
pub fn certificate_file(
    dir: &ManifestDir,
    namespace: &str,
    name: &str,
    hosts: &[&str],
) -> crate::support::TestCert {
    let cert = crate::support::TestCert::self_signed(hosts);
    dir.write(
        &format!("secret-{name}.yaml"),
        &[&tls_secret(namespace, name, &cert)],
    );
    cert
}
