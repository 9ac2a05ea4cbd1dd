//! The conformance [`Driver`] for manifest mode: each scenario gets its own manifest directory, echo
//! backends on loopback, and a controller of its own, started when the first request is sent (so
//! everything the scenario set up is in the first configuration, with nothing to wait for).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture as BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use super::world::{BackendPort, Driver, Target};
use crate::support::manifests::{self, ErasedObject};
use crate::support::{Controller, EchoIdentity, EchoServer, ManifestDir};

/// The Service port upstream's echo Service gets when the Ingress names the port only by name.
const DEFAULT_SERVICE_PORT: i32 = 8080;

pub struct ManifestDriver {
    dir: ManifestDir,
    /// Backends by namespace and Service name, kept running for the scenario.
    backends: HashMap<(String, String), Backend>,
    controller: Option<Controller>,
}

/// One Service's pods.
struct Backend {
    ingress: String,
    port: BackendPort,
    pods: Vec<EchoServer>,
}

const INGRESS_CLASS_FILE: &str = "ingress-class.yaml";

impl ManifestDriver {
    pub fn boxed() -> Box<dyn Driver> {
        let dir = ManifestDir::new();
        dir.write(INGRESS_CLASS_FILE, &[&manifests::ingress_class()]);
        Box::new(ManifestDriver {
            dir,
            backends: HashMap::new(),
            controller: None,
        })
    }

    /// Starts pods until the backend has `replicas`, and writes its Service and EndpointSlices.
    async fn ensure_pods(
        &mut self,
        namespace: &str,
        service: &str,
        replicas: usize,
    ) -> Result<(), String> {
        let key = (namespace.to_string(), service.to_string());
        let backend = self
            .backends
            .get_mut(&key)
            .ok_or_else(|| format!("no Ingress names the Service {service:?}"))?;
        while backend.pods.len() < replicas {
            // The index keeps pod names apart even if two random suffixes collide.
            let pod = format!(
                "{}-{service}-{}{}",
                backend.ingress,
                random_suffix(),
                backend.pods.len()
            );
            backend.pods.push(
                EchoServer::start(EchoIdentity {
                    namespace: namespace.into(),
                    ingress: backend.ingress.clone(),
                    service: service.into(),
                    pod,
                })
                .await,
            );
        }
        let addrs: Vec<_> = backend.pods.iter().map(EchoServer::addr).collect();
        let objects = manifests::service_with_endpoints(
            namespace,
            service,
            backend.port.number.unwrap_or(DEFAULT_SERVICE_PORT),
            backend.port.name.as_deref(),
            &addrs,
            true,
        );
        self.write(
            &format!("service-{namespace}-{service}.yaml"),
            &objects.objects(),
        )
        .await;
        Ok(())
    }

    /// Writes objects; once the controller runs, waits until they are live.
    async fn write(&self, file: &str, objects: &[&dyn ErasedObject]) {
        let before = self.controller.as_ref().map(Controller::generation);
        self.dir.write(file, objects);
        if let (Some(controller), Some(before)) = (&self.controller, before) {
            controller.wait_for_generation(before + 1).await;
        }
    }
}

/// Like upstream's namespaces: `ingress-conformance-` and five random characters.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut n = RandomState::new().hash_one(std::time::SystemTime::now());
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

impl Driver for ManifestDriver {
    fn new_namespace(&mut self) -> BoxFuture<'_, Result<String, String>> {
        async { Ok(format!("ingress-conformance-{}", random_suffix())) }.boxed_local()
    }

    fn deploy_backend<'a>(
        &'a mut self,
        namespace: &'a str,
        ingress: &'a str,
        service: &'a str,
        port: &'a BackendPort,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let key = (namespace.to_string(), service.to_string());
            if self.backends.contains_key(&key) {
                return Ok(());
            }
            let backend = Backend {
                ingress: ingress.to_string(),
                port: port.clone(),
                pods: Vec::new(),
            };
            self.backends.insert(key, backend);
            self.ensure_pods(namespace, service, 1).await
        }
        .boxed_local()
    }

    fn scale_backend<'a>(
        &'a mut self,
        namespace: &'a str,
        service: &'a str,
        replicas: usize,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.ensure_pods(namespace, service, replicas).boxed_local()
    }

    fn make_class_default(&mut self) -> BoxFuture<'_, Result<(), String>> {
        async {
            let mut class: IngressClass = manifests::ingress_class();
            class.metadata.annotations = Some(
                [(
                    "ingressclass.kubernetes.io/is-default-class".to_string(),
                    "true".to_string(),
                )]
                .into(),
            );
            self.write(INGRESS_CLASS_FILE, &[&class]).await;
            Ok(())
        }
        .boxed_local()
    }

    fn create_secret(&mut self, secret: Secret) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let name = secret.metadata.name.clone().unwrap_or_default();
            self.write(&format!("secret-{name}.yaml"), &[&secret]).await;
            Ok(())
        }
        .boxed_local()
    }

    fn create_ingress(&mut self, ingress: Ingress) -> BoxFuture<'_, Result<(), String>> {
        async move {
            let name = ingress.metadata.name.clone().unwrap_or_default();
            self.write(&format!("ingress-{name}.yaml"), &[&ingress])
                .await;
            Ok(())
        }
        .boxed_local()
    }

    fn ingress_address<'a>(
        &'a mut self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        // No API server, so no status: the cluster suite checks this step.
        async { Ok(None) }.boxed_local()
    }

    /// No private key written for the scenario may appear in the controller's log.
    fn after_scenario(&mut self) -> Result<(), String> {
        match &self.controller {
            Some(controller) => match controller.find_key_material(&self.dir.private_keys()) {
                Some(leak) => Err(leak),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    fn target(&mut self) -> BoxFuture<'_, Result<Target, String>> {
        async move {
            if self.controller.is_none() {
                self.controller = Some(Controller::start(self.dir.path(), &[]).await);
            }
            let addrs = self.controller.as_ref().expect("just started").addrs;
            Ok(Target {
                ip: addrs.ip.into(),
                http_port: addrs.http.port(),
                https_port: addrs.https.port(),
            })
        }
        .boxed_local()
    }
}
