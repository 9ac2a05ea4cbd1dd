//! Writing the status of the Gateway API objects we serve (leader only): GatewayClass, Gateway (with
//! its address and listeners) and each route's parents of ours. Each object is written only when what
//! it should say differs from what it says, and unchanged conditions keep their transition time, so a
//! steady state causes no writes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use tokio::sync::watch;

use crate::gateway_api::gatewayclasses::{
    GatewayClass, GatewayClassStatus, GatewayClassStatusSupportedFeatures,
};
use crate::gateway_api::gateways::Gateway;
use crate::gateway_api::grpcroutes::GrpcRoute;
use crate::gateway_api::httproutes::{HttpRoute, HttpRouteStatus};
use crate::model::Config;
use crate::model::gateway::SUPPORTED_FEATURES;
use crate::model::gateway::status::{ParentState, api_conditions, gateway_status, route_status};
use crate::source::cluster::GatewayStores;
use crate::status::while_leading;
use crate::vocab::NamespacedName;

pub struct GatewayStatusWriter {
    pub client: Client,
    pub stores: Arc<OnceLock<GatewayStores>>,
}

impl GatewayStatusWriter {
    pub async fn run(self, configs: watch::Receiver<Arc<Config>>, leader: watch::Receiver<bool>) {
        let this = &self;
        while_leading(configs, leader, "Gateway API", |config| async move {
            match this.stores.get() {
                Some(stores) => this.sync(stores, &config).await,
                None => Ok(()), // the CRDs are not installed (yet)
            }
        })
        .await;
    }

    async fn sync(&self, stores: &GatewayStores, config: &Config) -> anyhow::Result<()> {
        let wanted = &config.gateway.status;
        let now = meta::Time(k8s_openapi::jiff::Timestamp::now());
        for (name, generation, conditions) in &wanted.classes {
            let Some(class) = stores.classes.get(&ObjectRef::new(name)) else {
                continue;
            };
            let current = class.status.as_ref();
            let old = current
                .and_then(|s| s.conditions.as_deref())
                .unwrap_or_default();
            let status = GatewayClassStatus {
                conditions: Some(api_conditions(conditions, *generation, old, &now)),
                supported_features: Some(
                    SUPPORTED_FEATURES
                        .iter()
                        .map(|name| GatewayClassStatusSupportedFeatures {
                            name: name.to_string(),
                        })
                        .collect(),
                ),
            };
            if current != Some(&status) {
                let api: Api<GatewayClass> = Api::all(self.client.clone());
                write(&api, name, &status).await?;
                tracing::info!(gateway_class = %name, "status updated");
            }
        }
        for state in &wanted.gateways {
            let id = &state.gateway;
            let Some(gateway) = stores
                .gateways
                .get(&ObjectRef::new(&id.name).within(&id.namespace))
            else {
                continue;
            };
            let addresses: Vec<String> = config
                .gateway
                .addresses
                .get(id)
                .map(ToString::to_string)
                .into_iter()
                .collect();
            let current = gateway.status.as_ref();
            let status = gateway_status(state, &addresses, current, &now);
            if current != Some(&status) {
                let api: Api<Gateway> = Api::namespaced(self.client.clone(), &id.namespace);
                write(&api, &id.name, &status).await?;
                tracing::info!(gateway = %id, "status updated");
            }
        }
        let mut parents: HashMap<(&str, &NamespacedName), Vec<&ParentState>> = HashMap::new();
        for parent in &wanted.routes {
            parents
                .entry((parent.kind, &parent.route))
                .or_default()
                .push(parent);
        }
        let ours = |kind: &'static str, id: &NamespacedName| {
            parents
                .get(&(kind, id))
                .map_or_else(Vec::new, |p| p.clone())
        };
        for route in stores.http_routes.state() {
            let id = NamespacedName::new(route.namespace().unwrap_or_default(), route.name_any());
            let current = route.status.clone().unwrap_or_default();
            let status = route_status(&ours("HTTPRoute", &id), Some(&current), &now);
            if status != current {
                let api: Api<HttpRoute> = Api::namespaced(self.client.clone(), &id.namespace);
                write(&api, &id.name, &status).await?;
                tracing::info!(route = %id, "status updated");
            }
        }
        for route in stores.grpc_routes.iter().flat_map(|s| s.state()) {
            let id = NamespacedName::new(route.namespace().unwrap_or_default(), route.name_any());
            // The two kinds' route status has one shape.
            let current: HttpRouteStatus = route
                .status
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default();
            let status = route_status(&ours("GRPCRoute", &id), Some(&current), &now);
            if status != current {
                let api: Api<GrpcRoute> = Api::namespaced(self.client.clone(), &id.namespace);
                write(&api, &id.name, &status).await?;
                tracing::info!(route = %id, kind = "GRPCRoute", "status updated");
            }
        }
        Ok(())
    }
}

/// Replaces the object's status with a merge patch of its `status` subresource.
async fn write<K, S>(api: &Api<K>, name: &str, status: &S) -> anyhow::Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
