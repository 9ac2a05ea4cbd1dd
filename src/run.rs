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

use crate::acme;
use crate::admin::{self, Health};
use crate::cli::Args;
use crate::events::EventPublisher;
use crate::gateway_status::GatewayStatusWriter;
use crate::leader::LeaderElection;
use crate::metrics::Metrics;
use crate::model::gateway;
use crate::model::incremental::{Incremental, Rebuilt};
use crate::model::{BuildOptions, Config, ConfigHandle, Problem, Snapshot};
use crate::proxy::gateway_sockets::GatewaySockets;
use crate::proxy::listener::{self, Listener};
use crate::proxy::termination::{self, SniResolver};
use crate::proxy::{Proxy, Tunnels, Upstream};
use crate::settings::Settings;
use crate::source::{self, cluster, manifests};
use crate::status::{PublishAddress, StatusWriter};
use crate::tls::{self, CertStore, CertTable};

/// Coalesces bursts of object changes into one build.
const BUILD_DEBOUNCE: Duration = Duration::from_millis(10);

/// A configuration file that cannot be used at start (the process exits with code 2).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConfigFileError(#[from] crate::settings::SettingsError);

/// Runs the controller until SIGTERM or SIGINT, then drains and returns.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // Handle SIGTERM from the first instant: a signal during start-up still drains rather than kills.
    let mut signals = ShutdownSignals::install()?;
    let mut settings = match &args.config {
        Some(path) => Settings::load(path).map_err(ConfigFileError)?,
        None => Settings::default(),
    };
    args.override_settings(&mut settings);
    let settings = Arc::new(settings);

    // One crypto provider for the whole process: rustls, tokio-rustls and the kube client all use it.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let default_cert = tls::generate_default_cert(&provider)?;
    let config: ConfigHandle = Arc::new(ArcSwap::from_pointee(Config::empty(
        CertTable::new(default_cert.clone()),
        settings.clone(),
    )));
    let metrics = Arc::new(Metrics::new()?.with_access_log(args.access_log));
    let health = Arc::new(Health::default());

    let https = listener::bind(args.https_addr)
        .with_context(|| format!("cannot listen on {} (--https-addr)", args.https_addr))?;
    let http = listener::bind(args.http_addr)
        .with_context(|| format!("cannot listen on {} (--http-addr)", args.http_addr))?;
    let admin = listener::bind(args.admin_addr)
        .with_context(|| format!("cannot listen on {} (--admin-addr)", args.admin_addr))?;
    let (https_local, http_local, admin_local) =
        (https.local_addr()?, http.local_addr()?, admin.local_addr()?);

    let challenges = Arc::new(acme::Challenges::default());
    let resolver = Arc::new(SniResolver::new(config.clone(), challenges.clone()));
    let server_config = Arc::new(ArcSwap::from_pointee(termination::server_configs(
        provider.clone(),
        resolver.clone(),
        &settings.tls,
    )?));
    let tunnels = Tunnels::default();
    let upstream = Upstream::new(provider.clone(), tunnels.clone())?;
    let proxy = Arc::new(
        Proxy::new(
            config.clone(),
            upstream,
            https_local.port(),
            metrics.clone(),
        )
        .with_acme_challenges(challenges.clone()),
    );

    let (settings_tx, settings_rx) = watch::channel(settings.clone());
    if let Some(path) = &args.config {
        let overrides = args.clone();
        tokio::spawn(crate::settings::watch_file(
            path.clone(),
            move |s| overrides.override_settings(s),
            settings_tx,
        ));
    }
    let (snapshots_tx, snapshots) = watch::channel(None);
    let (published_tx, published) = watch::channel(config.load_full());
    let (stop_tx, stop) = watch::channel(false);
    let gateway_sockets = GatewaySockets {
        provider: provider.clone(),
        challenges: challenges.clone(),
        proxy: proxy.clone(),
        config: config.clone(),
    };
    let gateway_published = published.clone();
    let source = match &args.manifests {
        Some(dir) => {
            let state_dir = args.state_dir.as_deref().ok_or(
                "Ingresses ask for ACME certificates but --state-dir is not set; none is ordered",
            );
            let (read_tx, read) = watch::channel(None);
            let (orderer, issued) = acme::file_orderer(
                provider.clone(),
                challenges,
                state_dir,
                read.clone(),
                metrics.clone(),
            );
            // The only process: always the orderer.
            let (_always, ordering) = watch::channel(true);
            tokio::spawn(async move {
                let _always = _always;
                orderer.run(published, ordering).await
            });
            tokio::spawn(acme::add_issued_secrets(read, issued, snapshots_tx));
            tokio::spawn(manifests::watch_dir(dir.clone(), read_tx))
        }
        None => {
            let acme = ClusterAcme {
                provider: provider.clone(),
                challenges,
            };
            start_cluster_mode(
                &args,
                snapshots_tx,
                published,
                stop.clone(),
                metrics.clone(),
                acme,
            )
            .await?
        }
    };
    let publisher = Publisher {
        ingress_class: args.ingress_class.clone(),
        watch_without_class: args.watch_ingress_without_class,
        default_cert,
        certs: Arc::new(Mutex::new((
            Incremental::default(),
            CertStore::new(provider.clone()),
            CertStore::new(provider.clone()),
        ))),
        gateway_pool: args.gateway_pool().into(),
        live: config.clone(),
        published: published_tx,
        tls: TlsReloader {
            provider,
            resolver,
            current: server_config.clone(),
        },
        metrics: metrics.clone(),
        health: health.clone(),
    };
    tokio::spawn(publisher.run(snapshots, settings_rx));
    tokio::spawn(admin::serve(admin, health.clone(), metrics.clone()));

    let graceful = Arc::new(GracefulShutdown::new());
    let listeners = [
        Listener {
            listener: https,
            tls: Some(server_config),
            proxy: proxy.clone(),
            config: config.clone(),
        },
        Listener {
            listener: http,
            tls: None,
            proxy,
            config,
        },
    ]
    .map(|l| tokio::spawn(l.run(graceful.clone(), stop.clone())));
    let gateway_sockets =
        tokio::spawn(gateway_sockets.run(gateway_published, graceful.clone(), stop.clone()));
    tracing::info!(https = %https_local, http = %http_local, admin = %admin_local, "listening");

    tokio::select! {
        signal = signals.recv() => tracing::info!(signal, "shutting down"),
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
    for task in listeners.into_iter().chain([gateway_sockets]) {
        let _ = task.await;
    }
    let graceful = Arc::try_unwrap(graceful)
        .map_err(|_| anyhow::anyhow!("listeners still hold the connection tracker"))?;
    tracing::info!(
        connections = graceful.count(),
        tunnels = tunnels.open(),
        "draining"
    );
    let drained = async { tokio::join!(graceful.shutdown(), tunnels.idle()) };
    if tokio::time::timeout(args.shutdown_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?args.shutdown_timeout, tunnels = tunnels.open(), "in-flight requests did not finish in time; closing them");
        tunnels.close().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// What cluster mode's ACME shares with the serving side.
struct ClusterAcme {
    provider: Arc<rustls::crypto::CryptoProvider>,
    challenges: Arc<acme::Challenges>,
}

/// Starts the watchers, leader election, the status writer, Events and the ACME orderer (the leader
/// orders); returns the task that publishes snapshots.
async fn start_cluster_mode(
    args: &Args,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    published: watch::Receiver<Arc<Config>>,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    acme: ClusterAcme,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let client = cluster::client(args.kubeconfig.as_deref())
        .await
        .context("cannot configure the Kubernetes client")?;
    let (stores, changed) = cluster::start(
        client.clone(),
        args.watch_namespace.as_deref(),
        metrics.clone(),
    )
    .await;

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

    let objects = source::acme::AcmeObjects::new(
        client.clone(),
        &namespace,
        &args.election_id,
        &identity,
        &stores,
        acme.challenges,
        acme.provider,
    );
    tokio::spawn(objects.clone().answer_when_configured(published.clone()));
    let orderer = crate::acme::cluster_orderer(Box::new(objects), metrics.clone());
    tokio::spawn(orderer.run(published.clone(), leader.clone()));

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
    let gateway_status = GatewayStatusWriter {
        client: client.clone(),
        stores: stores.gateway_api.clone(),
    };
    tokio::spawn(gateway_status.run(published.clone(), leader.clone()));
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

/// SIGTERM and SIGINT, both meaning "drain and exit".
struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Rebuilds the TLS server configuration when the TLS settings change.
struct TlsReloader {
    provider: Arc<rustls::crypto::CryptoProvider>,
    resolver: Arc<SniResolver>,
    current: Arc<ArcSwap<termination::ServerConfigs>>,
}

/// Builds a configuration from each new snapshot (or new settings) and makes it live.
struct Publisher {
    ingress_class: String,
    watch_without_class: bool,
    default_cert: Arc<rustls::sign::CertifiedKey>,
    /// The previous translation (so a change rebuilds only what it affects) and the parsed certificates
    /// of the Ingresses, then of the Gateways.
    certs: Arc<Mutex<(Incremental, CertStore, CertStore)>>,
    /// `--gateway-addresses`.
    gateway_pool: Arc<[std::net::IpAddr]>,
    live: ConfigHandle,
    /// The same configuration, for the tasks that act on changes (status, Events).
    published: watch::Sender<Arc<Config>>,
    tls: TlsReloader,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl Publisher {
    async fn run(
        self,
        mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
        mut settings: watch::Receiver<Arc<Settings>>,
    ) {
        let mut generation = 0;
        let mut reported: HashSet<Problem> = HashSet::new();
        let mut tls_settings = settings.borrow().tls.clone();
        loop {
            tokio::select! {
                changed = snapshots.changed() => if changed.is_err() { return },
                changed = settings.changed() => if changed.is_err() { return },
            }
            if generation > 0 {
                tokio::time::sleep(BUILD_DEBOUNCE).await;
            }
            let Some(snapshot) = snapshots.borrow_and_update().clone() else {
                continue;
            };
            let current_settings = settings.borrow_and_update().clone();
            if current_settings.tls != tls_settings {
                match termination::server_configs(
                    self.tls.provider.clone(),
                    self.tls.resolver.clone(),
                    &current_settings.tls,
                ) {
                    Ok(config) => {
                        self.tls.current.store(Arc::new(config));
                        tls_settings = current_settings.tls.clone();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot apply the new TLS settings; keeping the previous ones")
                    }
                }
            }
            generation += 1;
            let started = Instant::now();
            let options = BuildOptions {
                ingress_class: self.ingress_class.clone(),
                watch_without_class: self.watch_without_class,
                default_cert: self.default_cert.clone(),
                settings: current_settings,
            };
            let certs = self.certs.clone();
            let pool = self.gateway_pool.clone();
            // The build (a tenth of a second at 10,000 Ingresses when everything is translated) runs on
            // the blocking pool, never on a thread that serves traffic.
            let built = tokio::task::spawn_blocking(move || {
                let mut guard = certs.lock().unwrap_or_else(|poisoned| {
                    // A build that panicked may have left the previous translation half updated.
                    let mut guard = poisoned.into_inner();
                    guard.0 = Incremental::default();
                    certs.clear_poison();
                    guard
                });
                let (incremental, certs, gateway_certs) = &mut *guard;
                let (config, rebuilt) =
                    incremental.apply(&snapshot, &options, certs, unix_now() as i64, generation);
                let config = gateway::serve::attach(config, &snapshot, &pool, gateway_certs);
                (config, rebuilt, started.elapsed())
            })
            .await;
            let (config, rebuilt, elapsed) = match built {
                Ok(built) => built,
                Err(e) => {
                    self.metrics.config_failed();
                    tracing::error!(error = %e, "configuration build failed; the previous configuration stays live");
                    continue;
                }
            };
            // Live first: requests of routes the metrics do not know yet are counted by a slower path.
            let previous = self.live.swap(config.clone());
            let previous_published = self.published.send_replace(config.clone());
            self.health.set_configured();

            for problem in config.problems.iter().filter(|p| !reported.contains(*p)) {
                tracing::warn!(
                    kind = problem.kind.as_str(),
                    object = problem.object.as_ref().map(ToString::to_string),
                    file = problem.file.as_deref(),
                    "{problem}"
                );
            }
            reported = config.problems.iter().cloned().collect();

            let metrics = self.metrics.clone();
            let published = config.clone();
            let metrics_elapsed = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                metrics.config_published(&published, elapsed.as_secs_f64(), unix_now());
                // Freeing the previous generation is long with many hosts too.
                drop((previous, previous_published));
                started.elapsed()
            })
            .await
            .unwrap_or_default();
            tracing::info!(
                generation,
                ingresses = config.ingresses.len(),
                certificates = config.certs.len(),
                problems = config.problems.len(),
                build_ms = elapsed.as_secs_f64() * 1000.0,
                metrics_ms = metrics_elapsed.as_secs_f64() * 1000.0,
                translated = match rebuilt {
                    Rebuilt::All => config.ingresses.len(),
                    Rebuilt::Some(n) => n,
                },
                "configuration live"
            );
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
