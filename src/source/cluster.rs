//! Cluster mode: kube-rs watchers and reflectors for the five kinds Portcullis reads. Every change marks
//! the stores dirty; after a short debounce the whole snapshot is published. Nothing is published until
//! every watch has completed its initial list. While the API server is unreachable the watchers retry
//! with backoff and the last snapshot (so the last configuration) stays live.
//!
//! Secrets are watched narrowly: every `kubernetes.io/tls` Secret, plus, one watch each, the Secrets
//! that Ingresses name for basic auth (by `metadata.name` field selector); no other Secret is read.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

use crate::gateway_api::gatewayclasses::GatewayClass;
use crate::gateway_api::gateways::Gateway;
use crate::gateway_api::grpcroutes::GrpcRoute;
use crate::gateway_api::httproutes::HttpRoute;
use crate::gateway_api::referencegrants::ReferenceGrant;
use crate::metrics::Metrics;
use crate::model::annotations::{basic_auth, client_cert, proxy_ssl};
use crate::model::{Kind, NamespacedName, Snapshot};
use crate::tls::certs::TLS_SECRET_TYPE;

/// Coalesces bursts of watch events (a `kubectl apply` of many objects) into one snapshot.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// `kubectl apply` keeps a full copy of every object here; for Secrets that is key material we must not
/// keep twice.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// How long the first snapshot waits for the initial list of the auth Secrets named then; a Secret
/// still unknown after that fails closed until it arrives.
const AUTH_SECRET_SYNC: Duration = Duration::from_secs(5);
/// How often the API server is asked whether the Gateway API CRDs have been installed, until they are.
const GATEWAY_API_PROBE: Duration = Duration::from_secs(30);
/// The Gateway API group and version Portcullis reads.
const GATEWAY_API: &str = "gateway.networking.k8s.io/v1";

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
    pub auth_secrets: AuthSecrets,
    /// Set once the Gateway API CRDs are found installed.
    pub gateway_api: Arc<OnceLock<GatewayStores>>,
}

/// The Gateway API kinds, and the Namespaces whose labels `allowedRoutes` selects by. GRPCRoute and
/// ReferenceGrant are watched when the installed CRDs serve them at `v1`.
#[derive(Clone)]
pub struct GatewayStores {
    pub classes: Store<GatewayClass>,
    pub gateways: Store<Gateway>,
    pub http_routes: Store<HttpRoute>,
    pub grpc_routes: Option<Store<GrpcRoute>>,
    pub grants: Option<Store<ReferenceGrant>>,
    pub namespaces: Store<Namespace>,
}

impl GatewayStores {
    fn fill(&self, snapshot: &mut Snapshot) {
        snapshot.gateway_classes = self.classes.state();
        snapshot.gateways = self.gateways.state();
        snapshot.http_routes = self.http_routes.state();
        snapshot.grpc_routes = self
            .grpc_routes
            .as_ref()
            .map_or_else(Vec::new, Store::state);
        snapshot.reference_grants = self.grants.as_ref().map_or_else(Vec::new, Store::state);
        snapshot.namespaces = self.namespaces.state();
    }

    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.classes.wait_until_ready().await?;
        self.gateways.wait_until_ready().await?;
        self.http_routes.wait_until_ready().await?;
        if let Some(s) = &self.grpc_routes {
            s.wait_until_ready().await?;
        }
        if let Some(s) = &self.grants {
            s.wait_until_ready().await?;
        }
        self.namespaces.wait_until_ready().await?;
        Ok(())
    }
}

impl Stores {
    pub fn snapshot(&self) -> Snapshot {
        let mut secrets = self.secrets.state();
        let tls: std::collections::HashSet<_> = secrets
            .iter()
            .map(|s| (s.metadata.namespace.clone(), s.metadata.name.clone()))
            .collect();
        secrets.extend(
            self.auth_secrets.state().into_iter().filter(|s| {
                !tls.contains(&(s.metadata.namespace.clone(), s.metadata.name.clone()))
            }),
        );
        let mut snapshot = Snapshot {
            ingresses: self.ingresses.state(),
            ingress_classes: self.ingress_classes.state(),
            secrets,
            services: self.services.state(),
            endpoint_slices: self.endpoint_slices.state(),
            ..Snapshot::default()
        };
        if let Some(gateway_api) = self.gateway_api.get() {
            gateway_api.fill(&mut snapshot);
        }
        snapshot
    }

    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        self.ingresses.wait_until_ready().await?;
        self.ingress_classes.wait_until_ready().await?;
        self.secrets.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.endpoint_slices.wait_until_ready().await?;
        if let Some(gateway_api) = self.gateway_api.get() {
            gateway_api.wait_until_ready().await?;
        }
        Ok(())
    }
}

/// Which Gateway API resources the API server serves at [`GATEWAY_API`]: `None` unless the CRDs of at
/// least GatewayClass, Gateway and HTTPRoute are installed and we may list them and Namespaces (not an
/// error: the Gateway API is then simply not served; a missing permission is logged).
async fn served_gateway_resources(client: &Client, namespace: Option<&str>) -> Option<Vec<String>> {
    let served: Vec<String> = match client.list_api_group_resources(GATEWAY_API).await {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
        Err(kube::Error::Api(e)) if e.code == 404 => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask the API server whether the Gateway API is installed; asking again later");
            return None;
        }
    };
    let required = ["gatewayclasses", "gateways", "httproutes"];
    if !required.iter().all(|r| served.iter().any(|s| s == r)) {
        return None;
    }
    let one = kube::api::ListParams::default().limit(1);
    let allowed = [
        Api::<GatewayClass>::all(client.clone())
            .list_metadata(&one)
            .await
            .err(),
        scoped::<Gateway>(client, namespace)
            .list_metadata(&one)
            .await
            .err(),
        scoped::<HttpRoute>(client, namespace)
            .list_metadata(&one)
            .await
            .err(),
        Api::<Namespace>::all(client.clone())
            .list_metadata(&one)
            .await
            .err(),
    ];
    if let Some(e) = allowed.into_iter().flatten().next() {
        tracing::warn!(error = %e, "the Gateway API CRDs are installed but this identity cannot read them (see the chart's RBAC); Gateway API objects are not served");
        return None;
    }
    Some(served)
}

/// Watches the Gateway API kinds once their CRDs are installed: at once when they already are (so the
/// first snapshot includes them), else from the first probe that finds them.
async fn watch_gateway_api(
    client: Client,
    namespace: Option<String>,
    slot: Arc<OnceLock<GatewayStores>>,
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
) {
    let mut logged = false;
    let served = loop {
        if let Some(served) = served_gateway_resources(&client, namespace.as_deref()).await {
            break served;
        }
        if !logged {
            tracing::info!(
                "Gateway API objects ({GATEWAY_API}) are not served until their CRDs are installed and readable; asking again every {}s",
                GATEWAY_API_PROBE.as_secs()
            );
            logged = true;
        }
        tokio::time::sleep(GATEWAY_API_PROBE).await;
    };
    let has = |r: &str| served.iter().any(|s| s == r);
    let all = watcher::Config::default();
    let ns = namespace.as_deref();
    let stores = GatewayStores {
        classes: spawn_watch(
            Api::all(client.clone()),
            all.clone(),
            Kind::GatewayClass,
            &changed,
            &metrics,
        ),
        gateways: spawn_watch(
            scoped(&client, ns),
            all.clone(),
            Kind::Gateway,
            &changed,
            &metrics,
        ),
        http_routes: spawn_watch(
            scoped(&client, ns),
            all.clone(),
            Kind::HttpRoute,
            &changed,
            &metrics,
        ),
        grpc_routes: has("grpcroutes").then(|| {
            spawn_watch(
                scoped(&client, ns),
                all.clone(),
                Kind::GrpcRoute,
                &changed,
                &metrics,
            )
        }),
        grants: has("referencegrants").then(|| {
            spawn_watch(
                scoped(&client, ns),
                all.clone(),
                Kind::ReferenceGrant,
                &changed,
                &metrics,
            )
        }),
        namespaces: spawn_watch(Api::all(client), all, Kind::Namespace, &changed, &metrics),
    };
    if logged {
        tracing::info!("the Gateway API CRDs are installed now; serving Gateway API objects");
    }
    let _ = slot.set(stores);
    changed.notify_one();
}

/// Starts the watchers; `namespace` limits everything but IngressClasses (and GatewayClasses and
/// Namespaces) to one namespace. The Gateway API kinds are watched when their CRDs are installed,
/// which is asked first, so a first snapshot includes them.
pub async fn start(
    client: Client,
    namespace: Option<&str>,
    metrics: Arc<Metrics>,
) -> (Stores, Arc<Notify>) {
    let changed = Arc::new(Notify::new());
    let all = watcher::Config::default();
    let gateway_api = Arc::new(OnceLock::new());
    let watch = watch_gateway_api(
        client.clone(),
        namespace.map(str::to_string),
        gateway_api.clone(),
        changed.clone(),
        metrics.clone(),
    );
    // Installed already: the stores exist before the first snapshot waits for them.
    if served_gateway_resources(&client, namespace).await.is_some() {
        watch.await;
    } else {
        tokio::spawn(watch);
    }
    let stores = Stores {
        gateway_api,
        auth_secrets: AuthSecrets {
            client: client.clone(),
            changed: changed.clone(),
            metrics: metrics.clone(),
            watches: Arc::default(),
        },
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
    watch_task(api, config, kind, changed, metrics).0
}

/// A reflector fed by its own task; aborting the task ends the watch.
fn watch_task<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    changed: &Arc<Notify>,
    metrics: &Arc<Metrics>,
) -> (Store<K>, tokio::task::AbortHandle)
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
    let task = tokio::spawn(async move {
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
    (reader, task.abort_handle())
}

/// The Secrets named by Ingresses for basic auth and client certificates, one watch each (field
/// selector on the name), started and stopped as Ingresses come to name them or stop naming them. Only
/// Secrets in the Ingress's own namespace are ever named (see the `referenced_secret` functions). The
/// chart's Secret access (list and watch) already covers them; nothing else of the cluster's Secrets is
/// read.
#[derive(Clone)]
pub struct AuthSecrets {
    client: Client,
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    watches: Arc<Mutex<HashMap<NamespacedName, SecretWatch>>>,
}

/// One Secret's store and the task that feeds it.
type SecretWatch = (Store<Secret>, tokio::task::AbortHandle);

impl AuthSecrets {
    fn state(&self) -> Vec<Arc<Secret>> {
        self.watches.lock().map_or_else(
            |_| Vec::new(),
            |w| w.values().flat_map(|(store, _)| store.state()).collect(),
        )
    }

    /// Watches exactly the Secrets these Ingresses name; returns the stores of watches just started.
    fn reconcile(&self, ingresses: &[Arc<Ingress>]) -> Vec<Store<Secret>> {
        let wanted: std::collections::HashSet<NamespacedName> = ingresses
            .iter()
            .flat_map(|i| {
                let ns = i.metadata.namespace.as_deref().unwrap_or("default");
                let annotations = i.metadata.annotations.as_ref();
                basic_auth::referenced_secret(annotations, ns)
                    .into_iter()
                    .chain(client_cert::referenced_secret(annotations, ns))
                    .chain(proxy_ssl::referenced_secret(annotations, ns))
            })
            .collect();
        let Ok(mut watches) = self.watches.lock() else {
            return Vec::new();
        };
        watches.retain(|id, (_, task)| {
            let keep = wanted.contains(id);
            if !keep {
                task.abort();
            }
            keep
        });
        let mut started = Vec::new();
        for id in wanted {
            if watches.contains_key(&id) {
                continue;
            }
            let config = watcher::Config::default().fields(&format!("metadata.name={}", id.name));
            let api = Api::namespaced(self.client.clone(), &id.namespace);
            let (store, task) = watch_task(api, config, Kind::Secret, &self.changed, &self.metrics);
            started.push(store.clone());
            watches.insert(id, (store, task));
        }
        started
    }
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
    let started = stores.auth_secrets.reconcile(&stores.ingresses.state());
    for store in started {
        let _ = tokio::time::timeout(AUTH_SECRET_SYNC, store.wait_until_ready()).await;
    }
    tracing::info!("initial list complete for every watched kind");
    loop {
        stores.auth_secrets.reconcile(&stores.ingresses.state());
        tx.send_replace(Some(Arc::new(stores.snapshot())));
        changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
    }
}

/// The first complete snapshot, read by the same watches (so with the same permissions) as the
/// controller's; the watches stop once it is taken. For `portcullis check`.
pub async fn snapshot_once(client: Client, namespace: Option<&str>) -> anyhow::Result<Snapshot> {
    let (stores, changed) = start(client, namespace, Arc::new(Metrics::new()?)).await;
    let (tx, mut rx) = watch::channel(None);
    let task = tokio::spawn(publish(stores, changed, tx));
    let snapshot = rx.wait_for(Option::is_some).await.map(|s| s.clone());
    task.abort();
    match snapshot {
        Ok(Some(snapshot)) => Ok(Arc::unwrap_or_clone(snapshot)),
        _ => Err(anyhow::anyhow!(
            "the watches ended before the first complete list"
        )),
    }
}
