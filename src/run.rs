//! Wiring: listeners, the object source, the builder that publishes each new configuration, and the
//! shutdown sequence.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulShutdown;
use kube::Api;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, Health};
use crate::cli::Args;
use crate::events::EventPublisher;
use crate::leader::LeaderElection;
use crate::metrics::Metrics;
use crate::model::{BuildOptions, Config, ConfigHandle, Problem, Snapshot, build};
use crate::proxy::listener::{self, Listener};
use crate::proxy::{Proxy, UpstreamTimeouts};
use crate::source::{cluster, manifests};
use crate::status::{PublishAddress, StatusWriter};
use crate::tls::{self, CertStore, CertTable, SniResolver};

/// Coalesces bursts of object changes into one build.
const BUILD_DEBOUNCE: Duration = Duration::from_millis(10);

/// Runs the controller until SIGTERM or SIGINT, then drains and returns.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // One crypto provider for the whole process: rustls, tokio-rustls and the kube client all use it.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let default_cert = tls::generate_default_cert(&provider)?;
    let config: ConfigHandle = Arc::new(ArcSwap::from_pointee(Config::empty(CertTable::new(
        default_cert.clone(),
    ))));
    let metrics = Arc::new(Metrics::new()?);
    let health = Arc::new(Health::default());

    let https = listener::bind(args.https_addr)
        .with_context(|| format!("cannot listen on {} (--https-addr)", args.https_addr))?;
    let http = listener::bind(args.http_addr)
        .with_context(|| format!("cannot listen on {} (--http-addr)", args.http_addr))?;
    let admin = listener::bind(args.admin_addr)
        .with_context(|| format!("cannot listen on {} (--admin-addr)", args.admin_addr))?;

    let (https_local, http_local, admin_local) =
        (https.local_addr()?, http.local_addr()?, admin.local_addr()?);

    let resolver = Arc::new(SniResolver::new(config.clone(), args.strict_sni));
    let acceptor = TlsAcceptor::from(tls::server_config(provider.clone(), resolver)?);
    let proxy = Arc::new(Proxy::new(config.clone(), UpstreamTimeouts::default()));

    let (snapshots_tx, snapshots) = watch::channel(None);
    let (published_tx, published) = watch::channel(config.load_full());
    let (stop_tx, stop) = watch::channel(false);
    let source = match &args.manifests {
        Some(dir) => tokio::spawn(manifests::watch_dir(dir.clone(), snapshots_tx)),
        None => {
            start_cluster_mode(
                &args,
                snapshots_tx,
                published,
                stop.clone(),
                metrics.clone(),
            )
            .await?
        }
    };
    let options = BuildOptions {
        ingress_class: args.ingress_class.clone(),
        watch_without_class: args.watch_ingress_without_class,
        default_cert,
        default_cert_secret: args.default_ssl_certificate.clone(),
    };
    let publisher = Publisher {
        options,
        certs: Arc::new(Mutex::new(CertStore::new(provider))),
        live: config.clone(),
        published: published_tx,
        metrics: metrics.clone(),
        health: health.clone(),
    };
    tokio::spawn(publisher.run(snapshots));
    tokio::spawn(admin::serve(admin, health.clone(), metrics.clone()));

    let graceful = Arc::new(GracefulShutdown::new());
    let listeners = [
        tokio::spawn(
            Listener {
                listener: https,
                tls: Some(acceptor),
                proxy: proxy.clone(),
            }
            .run(graceful.clone(), stop.clone()),
        ),
        tokio::spawn(
            Listener {
                listener: http,
                tls: None,
                proxy,
            }
            .run(graceful.clone(), stop),
        ),
    ];
    tracing::info!(https = %https_local, http = %http_local, admin = %admin_local, "listening");

    tokio::select! {
        signal = shutdown_signal() => tracing::info!(signal, "shutting down"),
        ended = source => {
            let error = match ended {
                Ok(Ok(())) => anyhow::anyhow!("object source ended"),
                Ok(Err(e)) => e,
                Err(e) => e.into(),
            };
            return Err(error.context("cannot read objects"));
        }
    }

    health.set_draining();
    tokio::time::sleep(args.shutdown_delay).await;
    let _ = stop_tx.send(true);
    for task in listeners {
        let _ = task.await;
    }
    let graceful = Arc::try_unwrap(graceful)
        .map_err(|_| anyhow::anyhow!("listeners still hold the connection tracker"))?;
    if tokio::time::timeout(args.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?args.shutdown_timeout, "in-flight requests did not finish in time; closing them");
    }
    Ok(())
}

/// Starts the watchers, leader election, the status writer and Events; returns the task that publishes
/// snapshots.
async fn start_cluster_mode(
    args: &Args,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    published: watch::Receiver<Arc<Config>>,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let client = cluster::client(args.kubeconfig.as_deref())
        .await
        .context("cannot configure the Kubernetes client")?;
    let (stores, changed) = cluster::start(
        client.clone(),
        args.watch_namespace.as_deref(),
        metrics.clone(),
    );

    let namespace = own_namespace(args);
    let identity = identity();
    let (leader_tx, leader) = watch::channel(false);
    let election = LeaderElection::new(
        Api::namespaced(client.clone(), &namespace),
        args.election_id.clone(),
        identity.clone(),
    );
    tokio::spawn(election.run(leader_tx, stop));
    tracing::info!(%namespace, lease = %args.election_id, %identity, "campaigning for leadership");

    let mut leader_metric = leader.clone();
    tokio::spawn(async move {
        loop {
            metrics.set_leader(*leader_metric.borrow_and_update());
            if leader_metric.changed().await.is_err() {
                return;
            }
        }
    });

    let publish = match (
        &args.publish_service,
        args.publish_status_address.is_empty(),
    ) {
        (Some(service), _) => Some(PublishAddress::Service(service.clone())),
        (None, false) => Some(PublishAddress::Fixed(args.publish_status_address.clone())),
        (None, true) => None,
    };
    if let Some(source) = publish {
        let writer = StatusWriter {
            client: client.clone(),
            source,
            ingresses: stores.ingresses.clone(),
        };
        tokio::spawn(writer.run(published.clone(), leader.clone()));
    }
    tokio::spawn(EventPublisher::new(client, identity, stores.clone()).run(published, leader));
    Ok(tokio::spawn(cluster::publish(stores, changed, snapshots)))
}

/// `--namespace`, else `POD_NAMESPACE`, else the service account's namespace, else `default`.
fn own_namespace(args: &Args) -> String {
    args.namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// `POD_NAME` in a cluster; the host name and process id elsewhere.
fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_else(|_| "portcullis".into());
            format!("{}-{}", host.trim(), std::process::id())
        })
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// Builds a configuration from each new snapshot and makes it live.
struct Publisher {
    options: BuildOptions,
    certs: Arc<Mutex<CertStore>>,
    live: ConfigHandle,
    /// The same configuration, for the tasks that act on changes (status, Events).
    published: watch::Sender<Arc<Config>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Publisher {
    async fn run(self, mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>) {
        let mut generation = 0;
        let mut reported: HashSet<Problem> = HashSet::new();
        while snapshots.changed().await.is_ok() {
            if generation > 0 {
                tokio::time::sleep(BUILD_DEBOUNCE).await;
            }
            let Some(snapshot) = snapshots.borrow_and_update().clone() else {
                continue;
            };
            generation += 1;
            let started = Instant::now();
            let (options, certs) = (self.options.clone(), self.certs.clone());
            let built = tokio::task::spawn_blocking(move || {
                let mut certs = certs
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                build(
                    &snapshot,
                    &options,
                    &mut certs,
                    unix_now() as i64,
                    generation,
                )
            })
            .await;
            let config = match built {
                Ok(config) => config,
                Err(e) => {
                    self.metrics.config_failed();
                    tracing::error!(error = %e, "configuration build failed; the previous configuration stays live");
                    continue;
                }
            };
            let elapsed = started.elapsed();

            let current: HashSet<Problem> = config.problems.iter().cloned().collect();
            for problem in config.problems.iter().filter(|p| !reported.contains(*p)) {
                tracing::warn!(
                    kind = problem.kind.as_str(),
                    object = problem.object.as_ref().map(ToString::to_string),
                    file = problem.file.as_deref(),
                    "{problem}"
                );
            }
            reported = current;

            tracing::info!(
                generation,
                ingresses = config.ingresses.len(),
                certificates = config.certs.len(),
                problems = config.problems.len(),
                build_ms = elapsed.as_secs_f64() * 1000.0,
                "configuration live"
            );
            self.metrics
                .config_published(&config, elapsed.as_secs_f64(), unix_now());
            let config = Arc::new(config);
            self.live.store(config.clone());
            self.published.send_replace(config);
            self.health.set_configured();
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
