//! Writing `status.loadBalancer.ingress` of the Ingresses we serve (leader only), and clearing it from
//! Ingresses that left our class.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::model::{Config, NamespacedName};

/// Where the address written into Ingress status comes from.
#[derive(Debug, Clone)]
pub enum PublishAddress {
    /// `--publish-service`: that Service's load-balancer addresses, else external IPs, else cluster IP.
    Service(NamespacedName),
    /// `--publish-status-address`: fixed IPs or host names.
    Fixed(Vec<String>),
}

/// Re-checks status this often even without configuration changes (the published Service may change).
const RESYNC: Duration = Duration::from_secs(30);

pub struct StatusWriter {
    pub client: Client,
    pub source: PublishAddress,
    pub ingresses: Store<Ingress>,
}

/// Runs `sync` with the live configuration after every change, every change of leadership and every
/// [`RESYNC`], while this replica leads and a configuration was built; a failure is logged (`what`
/// names the status) and retried with the next round.
pub async fn while_leading<F>(
    mut configs: watch::Receiver<Arc<Config>>,
    mut leader: watch::Receiver<bool>,
    what: &str,
    mut sync: impl FnMut(Arc<Config>) -> F,
) where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            changed = configs.changed() => if changed.is_err() { return },
            changed = leader.changed() => if changed.is_err() { return },
            _ = resync.tick() => {}
        }
        if !*leader.borrow() {
            continue;
        }
        let config = configs.borrow().clone();
        if config.generation == 0 {
            continue;
        }
        if let Err(e) = sync(config).await {
            tracing::warn!(error = %e, "cannot update {what} status; will retry");
        }
    }
}

impl StatusWriter {
    pub async fn run(self, configs: watch::Receiver<Arc<Config>>, leader: watch::Receiver<bool>) {
        let this = &self;
        while_leading(configs, leader, "Ingress", |config| async move {
            this.sync(&config).await
        })
        .await;
    }

    async fn sync(&self, config: &Config) -> anyhow::Result<()> {
        let desired = self.addresses().await?;
        let ours: HashSet<&NamespacedName> = config.ingresses.iter().collect();
        for ingress in self.ingresses.state() {
            let id =
                NamespacedName::new(ingress.namespace().unwrap_or_default(), ingress.name_any());
            let current = current_status(&ingress);
            let target = if ours.contains(&id) {
                desired.clone()
            } else if !current.is_empty() && current == desired {
                // It carries our address but is no longer ours: it left our class.
                Vec::new()
            } else {
                continue;
            };
            if current == target {
                continue;
            }
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &id.namespace);
            let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": target } } });
            api.patch_status(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(ingress = %id, addresses = ?target.iter().map(address_of).collect::<Vec<_>>(), "status updated");
        }
        Ok(())
    }

    async fn addresses(&self) -> anyhow::Result<Vec<IngressLoadBalancerIngress>> {
        let names: Vec<String> = match &self.source {
            PublishAddress::Fixed(list) => list.clone(),
            PublishAddress::Service(id) => {
                let api: Api<Service> = Api::namespaced(self.client.clone(), &id.namespace);
                service_addresses(&api.get(&id.name).await?)
            }
        };
        let mut out: Vec<IngressLoadBalancerIngress> = names
            .into_iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(_) => IngressLoadBalancerIngress {
                    ip: Some(name),
                    ..Default::default()
                },
                Err(_) => IngressLoadBalancerIngress {
                    hostname: Some(name),
                    ..Default::default()
                },
            })
            .collect();
        out.sort_by_key(address_of);
        out.dedup();
        Ok(out)
    }
}

fn address_of(entry: &IngressLoadBalancerIngress) -> String {
    entry
        .ip
        .clone()
        .or_else(|| entry.hostname.clone())
        .unwrap_or_default()
}

fn current_status(ingress: &Ingress) -> Vec<IngressLoadBalancerIngress> {
    let mut list = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    list.sort_by_key(address_of);
    list
}

/// A Service's reachable addresses: load-balancer ingress, else external IPs, else the cluster IP.
pub fn service_addresses(service: &Service) -> Vec<String> {
    let lb: Vec<String> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .collect();
    if !lb.is_empty() {
        return lb;
    }
    let spec = service.spec.as_ref();
    let external: Vec<String> = spec
        .and_then(|s| s.external_ips.clone())
        .unwrap_or_default();
    if !external.is_empty() {
        return external;
    }
    spec.and_then(|s| s.cluster_ip.clone())
        .filter(|ip| !ip.is_empty() && ip != "None")
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };

    #[test]
    fn service_address_precedence() {
        let mut svc = Service {
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.0.0.7".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(service_addresses(&svc), ["10.0.0.7"]);
        svc.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.1".into()]);
        assert_eq!(service_addresses(&svc), ["192.0.2.1"]);
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    hostname: Some("lb.example.com".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        assert_eq!(service_addresses(&svc), ["lb.example.com"]);
    }
}
