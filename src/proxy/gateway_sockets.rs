//! Binds and closes the Gateways' sockets as configurations are published: a socket appears when a
//! programmed Gateway's listener needs it and closes when none does; its open connections drain as on
//! shutdown. A socket that cannot be bound (the address is not local, the port is taken) is logged and
//! tried again with the next configuration; the other sockets serve meanwhile.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Proxy;
use super::listener::{self, Listener};
use super::termination::{self, ServerConfigs, SniResolver};
use crate::acme::Challenges;
use crate::model::{Config, ConfigHandle};
use crate::settings::TlsSettings;

/// What every Gateway socket is built from.
pub struct GatewaySockets {
    pub provider: Arc<rustls::crypto::CryptoProvider>,
    pub challenges: Arc<Challenges>,
    pub proxy: Arc<Proxy>,
    pub config: ConfigHandle,
}

struct Bound {
    /// The TLS configurations and the settings they were built with; `None` for plain HTTP.
    tls: Option<(Arc<ArcSwap<ServerConfigs>>, TlsSettings)>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl GatewaySockets {
    /// Follows `published` until `stop` turns true, then stops every socket and waits for their
    /// accept loops to end.
    pub async fn run(
        self,
        mut published: watch::Receiver<Arc<Config>>,
        graceful: Arc<GracefulShutdown>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut bound: HashMap<SocketAddr, Bound> = HashMap::new();
        // Accept loops told to stop, awaited before returning so shutdown can count their connections.
        let mut closing: Vec<JoinHandle<()>> = Vec::new();
        // Failed binds, so one that keeps failing is logged once per change of its reason.
        let mut failed: HashMap<SocketAddr, String> = HashMap::new();
        loop {
            let config = published.borrow_and_update().clone();
            closing.retain(|task| !task.is_finished());
            self.reconcile(&config, &mut bound, &mut closing, &mut failed, &graceful);
            tokio::select! {
                changed = published.changed() => if changed.is_err() { break },
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        for (_, b) in bound.drain() {
            let _ = b.stop.send(true);
            closing.push(b.task);
        }
        for task in closing {
            let _ = task.await;
        }
    }

    fn reconcile(
        &self,
        config: &Config,
        bound: &mut HashMap<SocketAddr, Bound>,
        closing: &mut Vec<JoinHandle<()>>,
        failed: &mut HashMap<SocketAddr, String>,
        graceful: &Arc<GracefulShutdown>,
    ) {
        let wanted = &config.gateway.sockets;
        let closed: Vec<SocketAddr> = bound
            .iter()
            .filter(|(addr, b)| wanted.get(*addr).is_none_or(|s| s.tls != b.tls.is_some()))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in closed {
            if let Some(b) = bound.remove(&addr) {
                tracing::info!(%addr, "no Gateway listener needs this socket any more; closing it");
                let _ = b.stop.send(true);
                closing.push(b.task);
            }
        }
        for (addr, b) in bound.iter_mut() {
            let Some((configs, built_with)) = &mut b.tls else {
                continue;
            };
            if *built_with == config.settings.tls {
                continue;
            }
            match self.server_configs(*addr, &config.settings.tls) {
                Ok(new) => {
                    configs.store(Arc::new(new));
                    *built_with = config.settings.tls.clone();
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "cannot apply the new TLS settings to a Gateway socket; keeping the previous ones");
                }
            }
        }
        failed.retain(|addr, _| wanted.contains_key(addr));
        for (addr, socket) in wanted {
            if bound.contains_key(addr) {
                continue;
            }
            match self.open(*addr, socket.tls, config, graceful) {
                Ok(b) => {
                    failed.remove(addr);
                    tracing::info!(%addr, tls = socket.tls, "serving a Gateway socket");
                    bound.insert(*addr, b);
                }
                Err(e) => {
                    let reason = e.to_string();
                    if failed.get(addr) != Some(&reason) {
                        tracing::warn!(%addr, error = %reason, "cannot bind a Gateway socket; its listeners are not served");
                        failed.insert(*addr, reason);
                    }
                }
            }
        }
    }

    fn open(
        &self,
        addr: SocketAddr,
        tls: bool,
        config: &Config,
        graceful: &Arc<GracefulShutdown>,
    ) -> anyhow::Result<Bound> {
        let tls = match tls {
            false => None,
            true => {
                let configs = self.server_configs(addr, &config.settings.tls)?;
                let configs = Arc::new(ArcSwap::from_pointee(configs));
                Some((configs, config.settings.tls.clone()))
            }
        };
        let socket = listener::bind(addr)?;
        let (stop, stopped) = watch::channel(false);
        let listener = Listener {
            listener: socket,
            tls: tls.as_ref().map(|(configs, _)| configs.clone()),
            proxy: self.proxy.clone(),
            config: self.config.clone(),
        };
        let task = tokio::spawn(listener.run(graceful.clone(), stopped));
        Ok(Bound { tls, stop, task })
    }

    fn server_configs(
        &self,
        addr: SocketAddr,
        settings: &TlsSettings,
    ) -> anyhow::Result<ServerConfigs> {
        let resolver = Arc::new(SniResolver::for_gateway(
            self.config.clone(),
            self.challenges.clone(),
            addr,
        ));
        Ok(termination::server_configs(
            self.provider.clone(),
            resolver,
            settings,
        )?)
    }
}
