//! The Ingress conformance scenarios in cluster mode: the project's own (`tests/conformance/
//! features/`, `@cluster` ones included) and, when `PORTCULLIS_UPSTREAM_CONFORMANCE` names their
//! directory, the upstream kubernetes-sigs/ingress-controller-conformance features, unchanged.
//! Objects go through the real API server, backends are echo servers on 10.244.x.y behind real
//! EndpointSlices, status is written by the controller, and the step definitions are the same as
//! the manifest-mode runner's (tests/conformance/).

// The steps and the World of the manifest-mode runner, shared unchanged.
#[path = "../conformance/features.rs"]
mod features;
#[path = "../conformance/steps.rs"]
mod steps;
#[path = "../conformance/upstream_steps.rs"]
mod upstream_steps;
#[path = "../conformance/world.rs"]
mod world;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Result, anyhow};
use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture as BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;

use crate::harness::{ControlPlane, Controller, eventually};
use crate::support::manifests::{self, ErasedObject};
use crate::support::{EchoIdentity, EchoServer};
use features::Mode;
use world::{BackendPort, Driver, Target, use_driver};

pub const NAME: &str = "conformance_scenarios_pass_in_cluster_mode";

/// The Service port upstream's echo Service gets when the Ingress names the port only by name.
const DEFAULT_SERVICE_PORT: i32 = 8080;
/// Where the controller says it is exposed.
const STATUS_ADDRESS: &str = "192.0.2.80";

static CONTROL_PLANE: OnceLock<Arc<ControlPlane>> = OnceLock::new();
/// Each scenario gets its own controller address 127.99.N.1 and backends 10.244.(100+N).x.
static NEXT_SCENARIO: AtomicU8 = AtomicU8::new(0);

pub async fn run(cp: Arc<ControlPlane>) -> Result<()> {
    let _ = CONTROL_PLANE.set(cp);
    use_driver(ClusterDriver::boxed);
    features::run(Mode::Cluster, Vec::new())
        .await
        .map_err(|e| anyhow!(e))
}

/// One scenario's objects in the real API server, and a controller of its own watching only the
/// scenario's namespace.
struct ClusterDriver {
    cp: Arc<ControlPlane>,
    slot: u8,
    namespace: Option<String>,
    kubeconfig: Option<PathBuf>,
    controller: Option<Controller>,
    /// Backends by Service: the port the Ingress names and one echo server per pod.
    backends: HashMap<String, (BackendPort, String, Vec<EchoServer>)>,
    next_backend_ip: u8,
}

impl ClusterDriver {
    fn boxed() -> Box<dyn Driver> {
        let cp = CONTROL_PLANE
            .get()
            .expect("the control plane is set before the run")
            .clone();
        let slot = NEXT_SCENARIO.fetch_add(1, Ordering::Relaxed);
        Box::new(ClusterDriver {
            cp,
            slot,
            namespace: None,
            kubeconfig: None,
            controller: None,
            backends: HashMap::new(),
            next_backend_ip: 1,
        })
    }

    fn apply(&self, objects: &[&dyn ErasedObject]) -> Result<(), String> {
        self.cp
            .apply(&manifests::to_yaml(objects))
            .map_err(|e| format!("{e:#}"))
    }

    /// The scenario's controller, started on first use (after the objects of the scenario's Given
    /// steps exist, so its first configuration already holds them).
    async fn controller(&mut self) -> Result<&Controller, String> {
        if self.controller.is_none() {
            let namespace = self.namespace.clone().ok_or("no namespace yet")?;
            let kubeconfig = self.kubeconfig.clone().ok_or("no identity yet")?;
            let ip = IpAddr::V4(Ipv4Addr::new(127, 99, self.slot, 1));
            let controller = Controller::start(
                &kubeconfig,
                &namespace,
                ip,
                &["--publish-status-address", STATUS_ADDRESS],
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
            self.controller = Some(controller);
        }
        self.controller
            .as_ref()
            .ok_or_else(|| "no controller".to_string())
    }

    fn status(&self, namespace: &str, name: &str) -> Result<String, String> {
        self.cp
            .kubectl(&[
                "-n",
                namespace,
                "get",
                "ingress",
                name,
                "-o",
                "jsonpath={.status.loadBalancer.ingress[*].ip}",
            ])
            .map_err(|e| format!("{e:#}"))
    }

    /// Starts pods until `service` has `replicas`, and publishes them as ready endpoints.
    async fn ensure_pods(
        &mut self,
        namespace: &str,
        service: &str,
        replicas: usize,
    ) -> Result<(), String> {
        let (port, ingress, mut servers) = self
            .backends
            .remove(service)
            .ok_or_else(|| format!("no backend {service}"))?;
        while servers.len() < replicas {
            let net = 100u8
                .checked_add(self.slot)
                .ok_or("more scenarios than backend networks 10.244.100-255.x")?;
            let ip = IpAddr::V4(Ipv4Addr::new(10, 244, net, self.next_backend_ip));
            self.next_backend_ip += 1;
            let pod = format!("{ingress}-{service}-{}", servers.len());
            servers.push(
                EchoServer::start_on(
                    ip,
                    EchoIdentity {
                        namespace: namespace.into(),
                        ingress: ingress.clone(),
                        service: service.into(),
                        pod,
                    },
                )
                .await,
            );
        }
        let addrs: Vec<_> = servers.iter().map(EchoServer::addr).collect();
        let objects = manifests::service_with_endpoints(
            namespace,
            service,
            port.number.unwrap_or(DEFAULT_SERVICE_PORT),
            port.name.as_deref(),
            &addrs,
            true,
        );
        let result = self.apply(&objects.objects());
        self.backends
            .insert(service.to_string(), (port, ingress, servers));
        result
    }

    /// The controller's configuration generation, from its metrics.
    async fn generation(&self) -> Option<u64> {
        let controller = self.controller.as_ref()?;
        let (_, body) = crate::harness::http_get(
            std::net::SocketAddr::new(controller.ip, 10254),
            "admin",
            "/metrics",
        )
        .await
        .ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix("portcullis_config_generation "))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Driver for ClusterDriver {
    fn new_namespace(&mut self) -> BoxFuture<'_, Result<String, String>> {
        async {
            let namespace = self
                .cp
                .namespace("ingress-conformance")
                .map_err(|e| format!("{e:#}"))?;
            self.kubeconfig = Some(
                self.cp
                    .controller_identity(&namespace)
                    .map_err(|e| format!("{e:#}"))?,
            );
            self.namespace = Some(namespace.clone());
            Ok(namespace)
        }
        .boxed_local()
    }

    fn deploy_backend<'a>(
        &'a mut self,
        namespace: &'a str,
        ingress: &'a str,
        service: &'a str,
        port: &'a BackendPort,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            if self.backends.contains_key(service) {
                return Ok(());
            }
            self.backends.insert(
                service.to_string(),
                (port.clone(), ingress.to_string(), Vec::new()),
            );
            self.ensure_pods(namespace, service, 1).await
        }
        .boxed_local()
    }

    fn create_secret(&mut self, secret: Secret) -> BoxFuture<'_, Result<(), String>> {
        async move { self.apply(&[&secret]) }.boxed_local()
    }

    fn create_ingress(&mut self, ingress: Ingress) -> BoxFuture<'_, Result<(), String>> {
        async move { self.apply(&[&ingress]) }.boxed_local()
    }

    fn ingress_address<'a>(
        &'a mut self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, String>> {
        async move {
            self.controller().await?;
            let address = eventually(
                "the Ingress status to show the address",
                Duration::from_secs(30),
                || async { self.status(namespace, name).ok().filter(|s| !s.is_empty()) },
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
            if address != STATUS_ADDRESS {
                return Err(format!(
                    "status shows {address:?}, expected {STATUS_ADDRESS}"
                ));
            }
            Ok(Some(address))
        }
        .boxed_local()
    }

    /// Stops the controller, then deletes the scenario's Services: the cluster's Service IP range
    /// (a /24) is far smaller than all the scenarios' Services together.
    fn after_scenario(&mut self) -> Result<(), String> {
        self.controller = None;
        match &self.namespace {
            Some(namespace) => self
                .cp
                .kubectl(&[
                    "-n",
                    namespace,
                    "delete",
                    "services",
                    "--all",
                    "--wait=false",
                ])
                .map(|_| ())
                .map_err(|e| format!("{e:#}")),
            None => Ok(()),
        }
    }

    /// The IngressClass is cluster-wide and shared by every test, so it is not changed here: the
    /// suite creates it as the default class (main.rs), and this checks that it still is.
    fn make_class_default(&mut self) -> BoxFuture<'_, Result<(), String>> {
        async {
            let default = self
                .cp
                .kubectl(&[
                    "get",
                    "ingressclass",
                    "portcullis",
                    "-o",
                    r"jsonpath={.metadata.annotations.ingressclass\.kubernetes\.io/is-default-class}",
                ])
                .map_err(|e| format!("{e:#}"))?;
            match default.trim() {
                "true" => Ok(()),
                other => Err(format!(
                    "the IngressClass portcullis is not the default (is-default-class {other:?})"
                )),
            }
        }
        .boxed_local()
    }

    fn ingress_status_stays_empty<'a>(
        &'a mut self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            self.controller().await?;
            // Long enough for a status writer that (wrongly) took the Ingress to have written it.
            tokio::time::sleep(Duration::from_secs(3)).await;
            match self.status(namespace, name)? {
                s if s.is_empty() => Ok(()),
                s => Err(format!(
                    "the Ingress status shows {s:?}; it belongs to no class we handle"
                )),
            }
        }
        .boxed_local()
    }

    fn scale_backend<'a>(
        &'a mut self,
        namespace: &'a str,
        service: &'a str,
        replicas: usize,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            let before = self.generation().await;
            self.ensure_pods(namespace, service, replicas).await?;
            if let Some(before) = before {
                // The controller watches only this namespace: the next generation holds the new slices.
                eventually(
                    "the scaled backend to be live",
                    Duration::from_secs(15),
                    || async {
                        let now = self.generation().await?;
                        (now > before).then_some(())
                    },
                )
                .await
                .map_err(|e| format!("{e:#}"))?;
            }
            Ok(())
        }
        .boxed_local()
    }

    fn target(&mut self) -> BoxFuture<'_, Result<Target, String>> {
        async {
            let controller = self.controller().await?;
            Ok(Target {
                ip: controller.ip,
                http_port: 80,
                https_port: 443,
            })
        }
        .boxed_local()
    }
}
