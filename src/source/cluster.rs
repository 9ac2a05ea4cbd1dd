//! Cluster mode: kube-rs watchers and reflectors for the five kinds Portcullis reads. Every change marks
//! the stores dirty; after a short debounce the whole snapshot is published. Nothing is published until
//! every watch has completed its initial list. While the API server is unreachable the watchers retry
//! with backoff and the last snapshot (so the last configuration) stays live.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use crate::metrics::Metrics;
use crate::model::{Kind, Snapshot};
use crate::tls::certs::TLS_SECRET_TYPE;

/// Coalesces bursts of watch events (a `kubectl apply` of many objects) into one snapshot.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// `kubectl apply` keeps a full copy of every object here; for Secrets that is key material we must not
/// keep twice.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Connects with `--kubeconfig`, else the in-cluster service account, else `KUBECONFIG`/`~/.kube/config`.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => match kube::Config::incluster() {
            Ok(config) => config,
            Err(_) => kube::Config::infer().await?,
        },
    };
    Ok(Client::try_from(config)?)
}

/// Read access to the watched objects, shared by the snapshot publisher, the status writer and Events.
#[derive(Clone)]
pub struct Stores {
    pub ingresses: Store<Ingress>,
    pub ingress_classes: Store<IngressClass>,
    pub secrets: Store<Secret>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
}

impl Stores {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            ingresses: self.ingresses.state(),
            ingress_classes: self.ingress_classes.state(),
            secrets: self.secrets.state(),
            services: self.services.state(),
            endpoint_slices: self.endpoint_slices.state(),
            ..Snapshot::default()
        }
    }

    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.ingresses.wait_until_ready().await?;
        self.ingress_classes.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.endpoint_slices.wait_until_ready().await?;
        Ok(())
    }
}

/// Starts the watchers; `namespace` limits everything but IngressClasses to one namespace.
pub fn start(
    client: Client,
    namespace: Option<&str>,
    metrics: Arc<Metrics>,
) -> (Stores, Arc<Notify>) {
    let changed = Arc::new(Notify::new());
    let all = watcher::Config::default();
    let stores = Stores {
        ingresses: spawn_watch(
            scoped(&client, namespace),
            all.clone(),
            Kind::Ingress,
            &changed,
            &metrics,
        ),
        ingress_classes: spawn_watch(
            Api::all(client.clone()),
            all.clone(),
            Kind::IngressClass,
            &changed,
            &metrics,
        ),
        // Only TLS Secrets: never cache every Secret of the cluster.
        secrets: spawn_watch(
            scoped(&client, namespace),
            all.clone().fields(&format!("type={TLS_SECRET_TYPE}")),
            Kind::Secret,
            &changed,
            &metrics,
        ),
        services: spawn_watch(
            scoped(&client, namespace),
            all.clone(),
            Kind::Service,
            &changed,
            &metrics,
        ),
        endpoint_slices: spawn_watch(
            scoped(&client, namespace),
            all,
            Kind::EndpointSlice,
            &changed,
            &metrics,
        ),
    };
    (stores, changed)
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    changed: &Arc<Notify>,
    metrics: &Arc<Metrics>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let changed = changed.clone();
    let metrics = metrics.clone();
    let stream = watcher(api, config)
        .backoff(WatchBackoff::default())
        .modify(|object: &mut K| {
            object.managed_fields_mut().clear();
            object.annotations_mut().remove(LAST_APPLIED);
        })
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    let kind_of_event = match event {
                        watcher::Event::Apply(_) => "apply",
                        watcher::Event::Delete(_) => "delete",
                        watcher::Event::Init => "init",
                        watcher::Event::InitApply(_) => "init-apply",
                        watcher::Event::InitDone => "init-done",
                    };
                    metrics.watch_event(kind.as_str(), kind_of_event);
                    changed.notify_one();
                }
                Err(e) => {
                    metrics.watch_event(kind.as_str(), "error");
                    tracing::warn!(kind = kind.as_str(), error = %e, "watch failed; retrying with backoff, the last configuration stays live");
                }
            }
        }
    });
    reader
}

/// Retry delays for failed watches: 0.5 s doubling up to 5 s, with jitter so replicas do not retry in
/// step. kube-rs's default goes up to 30 s, which after an API outage would leave changes unapplied for
/// that long; watches are cheap for the API server to re-establish.
struct WatchBackoff {
    next: Duration,
}

const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(500);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff {
            next: WATCH_BACKOFF_MIN,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.next;
        self.next = (self.next * 2).min(WATCH_BACKOFF_MAX);
        // Up to 25% less, from the clock's sub-second noise.
        let noise = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Some(delay - delay.mul_f64(f64::from(noise % 1000) / 4000.0))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_BACKOFF_MIN;
    }
}

/// Publishes a snapshot once every watch has listed its objects, then after every change.
pub async fn publish(
    stores: Stores,
    changed: Arc<Notify>,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
) -> anyhow::Result<()> {
    stores.wait_until_ready().await?;
    tracing::info!("initial list complete for every watched kind");
    loop {
        tx.send_replace(Some(Arc::new(stores.snapshot())));
        changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
    }
}
