//! The Helm chart's values (`charts/portcullis/values.yaml`) as Rust types, so that
//! `charts/portcullis/values.schema.json` is generated (`portcullis schema`) rather than written by
//! hand, and the chart's `config` key is checked by the very schema of the controller's `--config` file
//! ([`Settings`]). Helm validates every `helm install`, `upgrade` and `template` against it.
//!
//! Kubernetes objects passed through to the pod (resources, affinity, tolerations, …) use the
//! `k8s-openapi` types, whose schemas are the API server's own.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, PodSecurityContext, Probe, ResourceRequirements,
    SecurityContext, Toleration, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::Deserialize;

use crate::settings::Settings;

/// Where the committed schema lives, relative to the repository root.
pub const SCHEMA_PATH: &str = "charts/portcullis/values.schema.json";

/// Values of the `portcullis` Helm chart. Unknown keys are errors, so a typo fails `helm install`
/// instead of being silently ignored.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Values of the portcullis Helm chart")]
pub struct Values {
    /// Replaces the chart name in object names.
    pub name_override: String,
    /// Replaces the whole `RELEASE-portcullis` object name prefix.
    pub fullname_override: String,
    /// Labels added to every object the chart creates.
    pub common_labels: BTreeMap<String, String>,
    /// Run the controller as a `Deployment` (with `replicaCount`, or autoscaled) or as a `DaemonSet`
    /// (one pod per selected node).
    pub kind: WorkloadKind,
    /// Pods of the Deployment when autoscaling is off. Every replica serves traffic; one (elected with a
    /// Lease) writes Ingress status.
    #[schemars(range(min = 0))]
    pub replica_count: u32,
    pub image: Image,
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub ingress_class: IngressClassValues,
    #[serde(rename = "gatewayAPI")]
    pub gateway_api: GatewayApiValues,
    pub controller: ControllerValues,
    /// The controller's configuration file (`--config`), exactly as documented in README.md
    /// ("Configuration file"); rendered into a ConfigMap and re-read by the controller when it
    /// changes, without a restart.
    pub config: Settings,
    /// The PROXY protocol on the HTTP and HTTPS listeners (`proxy-protocol` in `config`, which wins
    /// when it sets that key itself). Turn it on together with the load balancer's own setting, usually
    /// a Service annotation (listed in `values.yaml`), and list the load balancer's addresses in
    /// `config.trusted-proxies`.
    pub proxy_protocol: ProxyProtocolValue,
    pub shutdown: Shutdown,
    /// Must cover `shutdown.preStopSleepSeconds + shutdown.delaySeconds + shutdown.timeoutSeconds`;
    /// computed from them (plus 5 s) when not set.
    #[schemars(range(min = 1))]
    pub termination_grace_period_seconds: Option<u32>,
    /// Rolling update of the pods: a `DeploymentStrategy` or a `DaemonSetUpdateStrategy` (by `kind`).
    /// Empty means a surge of one new pod before an old one goes (nothing unavailable).
    pub update_strategy: serde_json::Map<String, serde_json::Value>,
    #[schemars(range(min = 0))]
    pub min_ready_seconds: u32,
    pub service: ServiceValues,
    pub service_account: ServiceAccountValues,
    pub rbac: RbacValues,
    pub pod_annotations: BTreeMap<String, String>,
    pub pod_labels: BTreeMap<String, String>,
    /// The pod's security context. The default runs as a non-root numeric user with the
    /// `RuntimeDefault` seccomp profile and lets it bind ports 80 and 443 without any privilege
    /// (`net.ipv4.ip_unprivileged_port_start=0`, a namespaced "safe" sysctl).
    pub pod_security_context: PodSecurityContext,
    /// The container's security context: read-only root file system, no privilege escalation, every
    /// capability dropped except `NET_BIND_SERVICE`.
    pub security_context: SecurityContext,
    pub resources: ResourceRequirements,
    pub liveness_probe: Probe,
    pub readiness_probe: Probe,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Affinity,
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    pub priority_class_name: String,
    pub extra_volumes: Vec<Volume>,
    pub extra_volume_mounts: Vec<VolumeMount>,
    pub pod_disruption_budget: PodDisruptionBudgetValues,
    pub autoscaling: Autoscaling,
    pub metrics: MetricsValues,
    /// Values shared with a parent chart; not used by this chart.
    pub global: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `proxyProtocol`: a string only, so that an unquoted `off` (which Helm reads as `false`) fails the
/// install with a clear message instead of meaning something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocolValue {
    Off,
    Optional,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    Deployment,
    DaemonSet,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    pub repository: String,
    /// Defaults to the chart's `appVersion`.
    pub tag: String,
    /// `sha256:…`; when set, the image is pulled by digest (the tag is then informative only).
    #[schemars(regex(pattern = r"^(sha256:[0-9a-f]{64})?$"))]
    pub digest: String,
    pub pull_policy: PullPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressClassValues {
    /// Create the IngressClass. Turn off when another release of this chart (or you) manages it, e.g.
    /// several controllers for the same class.
    pub create: bool,
    /// The class this controller handles (`--ingress-class`) and the name of the IngressClass
    /// created (`spec.controller: portcullis.io/ingress-controller`).
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub name: String,
    /// Make it the cluster's default IngressClass
    /// (`ingressclass.kubernetes.io/is-default-class: "true"`): Ingresses without a class are then
    /// given this one, and served.
    pub default: bool,
    pub annotations: BTreeMap<String, String>,
}

/// The Gateway API (`gateway.networking.k8s.io/v1`: GatewayClass, Gateway, HTTPRoute, GRPCRoute,
/// ReferenceGrant). The controller watches these kinds whenever their CRDs are installed, so the chart
/// grants reading them (and writing their status) by default: without the CRDs the permissions name
/// nothing and are harmless, and installing the CRDs later then needs no `helm upgrade`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayApiValues {
    /// Grant the RBAC for the Gateway API kinds, and Namespaces (read cluster-wide, for the label
    /// selectors of `allowedRoutes`). Off, the controller finds that it may not read them and serves
    /// no Gateway API object (with a warning in its log where the CRDs are installed).
    pub enabled: bool,
    /// The address pool Gateways are served on (`--gateway-addresses`, joined with commas): IPs or
    /// CIDR blocks, each programmed Gateway taking one. Empty: no Gateway is programmed. The pattern
    /// only catches the obvious mistakes (a host name, a stray character): the controller parses each
    /// entry, and refuses a malformed one or a block of more than 4096 addresses, at start-up.
    #[schemars(inner(regex(pattern = r"^[0-9A-Fa-f.:]+(/[0-9]{1,3})?$")))]
    pub addresses: Vec<String>,
    pub gateway_class: GatewayClassValues,
    /// Render the Gateway API CRDs (standard channel, the version the controller's types are generated
    /// from) that the chart carries in `files/gateway-api/`. A convenience: CRDs are cluster-wide and
    /// shared by every Gateway API implementation, so they are normally installed once with the
    /// upstream `standard-install.yaml`. They are kept on `helm uninstall` (deleting a CRD deletes
    /// every object of its kind). Helm cannot create a GatewayClass in the operation that creates its
    /// CRD, so `gatewayClass.create` has to follow in a later `helm upgrade`.
    #[serde(rename = "installCRDs")]
    pub install_crds: bool,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GatewayClassValues {
    /// Create a GatewayClass with `controllerName: portcullis.io/gateway-controller`, which this
    /// controller accepts. Off by default: a GatewayClass is cluster-wide and often managed with the
    /// platform, and its CRD must exist before the release is installed.
    pub create: bool,
    /// The name of the GatewayClass created, what Gateways put in `spec.gatewayClassName`.
    #[schemars(
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
        length(max = 253)
    )]
    pub name: String,
    pub annotations: BTreeMap<String, String>,
}

/// Flags of the controller (see README.md, "Command line").
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerValues {
    /// Watch one namespace only (`--watch-namespace`). The namespaced permissions are then granted in
    /// that namespace only (a Role instead of a ClusterRole); empty means all namespaces.
    pub watch_namespace: String,
    /// Also serve Ingresses that name no class (`--watch-ingress-without-class`).
    pub watch_ingress_without_class: bool,
    /// The Lease for leader election (`--election-id`); empty means `FULLNAME-leader`.
    pub election_id: String,
    pub publish_service: PublishService,
    /// Write these addresses into Ingress status instead of the Service's
    /// (`--publish-status-address`).
    pub publish_status_address: Vec<String>,
    /// Listen on this address (`0.0.0.0`, or `[::]` for IPv6 and dual stack).
    pub bind_address: String,
    pub container_ports: ContainerPorts,
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `portcullis=debug` (`--log-level`); empty means `info`.
    pub log_level: String,
    /// More flags, without the leading `--`: `{access-log: true, strict-sni: true}`. `true` passes a
    /// bare flag, `false` or `null` leaves it out, a list is joined with commas. A flag set here
    /// replaces the one the chart would render.
    #[schemars(schema_with = "extra_args_schema")]
    pub extra_args: BTreeMap<String, ArgValue>,
    pub extra_env: Vec<EnvVar>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublishService {
    /// Write the address of the chart's Service (`--publish-service`) into the status of every Ingress
    /// served.
    pub enabled: bool,
    /// Another Service to publish instead (`NAMESPACE/NAME`).
    #[schemars(regex(pattern = r"^([^/]+/[^/]+)?$"))]
    pub path_override: String,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerPorts {
    #[schemars(range(min = 1, max = 65535))]
    pub http: u16,
    #[schemars(range(min = 1, max = 65535))]
    pub https: u16,
    /// `/healthz`, `/readyz` and `/metrics`.
    #[schemars(range(min = 1, max = 65535))]
    pub admin: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The value of one extra flag.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ArgValue {
    Bool(bool),
    Integer(i64),
    Text(String),
    List(Vec<String>),
}

fn extra_args_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let _ = generator;
    schemars::json_schema!({
        "type": "object",
        "propertyNames": { "pattern": "^[a-z0-9][a-z0-9-]*$" },
        "additionalProperties": {
            "type": ["boolean", "integer", "string", "array", "null"],
            "items": { "type": "string" }
        }
    })
}

/// The shutdown sequence of a pod, so that rolling updates and evictions drop no request: Kubernetes
/// takes the pod out of the Service's endpoints while the pre-stop sleep runs; after SIGTERM the
/// controller keeps accepting with `/readyz` failing, then stops accepting and lets in-flight requests
/// finish.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Shutdown {
    /// `preStop` sleep (the container image has no shell: the `sleep` lifecycle action is used).
    #[schemars(range(min = 0))]
    pub pre_stop_sleep_seconds: u32,
    /// `--shutdown-delay`: accepting with `/readyz` failing, for load balancers that probe pods.
    #[schemars(range(min = 0))]
    pub delay_seconds: u32,
    /// `--shutdown-timeout`: how long in-flight requests get to finish.
    #[schemars(range(min = 0))]
    pub timeout_seconds: u32,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceValues {
    /// Create the Service in front of the controller.
    pub enabled: bool,
    #[serde(rename = "type")]
    pub type_: ServiceType,
    /// `Local` keeps the client's source address (and avoids a second hop) but only nodes running a
    /// controller pod receive traffic; `Cluster` spreads evenly but hides the client address. Only
    /// for `LoadBalancer` and `NodePort`.
    pub external_traffic_policy: ExternalTrafficPolicy,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub load_balancer_class: String,
    pub load_balancer_source_ranges: Vec<String>,
    #[serde(rename = "externalIPs")]
    pub external_ips: Vec<String>,
    pub ports: ServicePorts,
    pub node_ports: NodePorts,
    /// `SingleStack`, `PreferDualStack` or `RequireDualStack`; empty means the cluster's default.
    #[schemars(regex(pattern = r"^(SingleStack|PreferDualStack|RequireDualStack)?$"))]
    pub ip_family_policy: String,
    pub ip_families: Vec<IpFamily>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum ServiceType {
    LoadBalancer,
    NodePort,
    ClusterIP,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum ExternalTrafficPolicy {
    Cluster,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum IpFamily {
    IPv4,
    IPv6,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePorts {
    #[schemars(range(min = 1, max = 65535))]
    pub http: u16,
    #[schemars(range(min = 1, max = 65535))]
    pub https: u16,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodePorts {
    #[schemars(range(min = 1, max = 65535))]
    pub http: Option<u16>,
    #[schemars(range(min = 1, max = 65535))]
    pub https: Option<u16>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceAccountValues {
    pub create: bool,
    /// Defaults to the full name when created, and to `default` otherwise.
    pub name: String,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RbacValues {
    /// Create the (Cluster)Roles and bindings the controller needs, and nothing more.
    pub create: bool,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodDisruptionBudgetValues {
    pub enabled: bool,
    /// Used unless `minAvailable` is set.
    pub max_unavailable: Option<IntOrString>,
    pub min_available: Option<IntOrString>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Autoscaling {
    /// A HorizontalPodAutoscaler for the Deployment (needs the metrics API in the cluster).
    pub enabled: bool,
    #[schemars(range(min = 1))]
    pub min_replicas: u32,
    #[schemars(range(min = 1))]
    pub max_replicas: u32,
    #[schemars(range(min = 1, max = 1000))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: Option<u32>,
    #[schemars(range(min = 1, max = 1000))]
    pub target_memory_utilization_percentage: Option<u32>,
    pub behavior: HorizontalPodAutoscalerBehavior,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsValues {
    pub service: MetricsService,
    pub service_monitor: ServiceMonitorValues,
    pub prometheus_rule: PrometheusRuleValues,
    pub grafana_dashboard: GrafanaDashboard,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsService {
    /// A ClusterIP Service for the admin port (`/metrics`); always created with the ServiceMonitor.
    /// The main Service never exposes the admin port.
    pub enabled: bool,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitorValues {
    /// A Prometheus Operator `ServiceMonitor` (needs its CRD).
    pub enabled: bool,
    /// Defaults to the release namespace.
    pub namespace: String,
    /// E.g. the `release` label your Prometheus selects ServiceMonitors by.
    pub labels: BTreeMap<String, String>,
    #[schemars(regex(
        pattern = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
    ))]
    pub interval: String,
    #[schemars(regex(
        pattern = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
    ))]
    pub scrape_timeout: String,
    pub relabelings: Vec<serde_json::Map<String, serde_json::Value>>,
    pub metric_relabelings: Vec<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusRuleValues {
    /// A Prometheus Operator `PrometheusRule` with the alerts of `files/prometheus-rules.yaml` (needs
    /// its CRD).
    pub enabled: bool,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrafanaDashboard {
    /// A ConfigMap with the dashboard of `files/grafana-dashboard.json`, labelled for Grafana's
    /// dashboard sidecar.
    pub enabled: bool,
    pub namespace: String,
    /// The label the sidecar looks for (`grafana_dashboard: "1"` in kube-prometheus-stack).
    pub labels: BTreeMap<String, String>,
    /// E.g. `grafana_folder` for the sidecar's folder annotation.
    pub annotations: BTreeMap<String, String>,
}

/// The JSON Schema of the chart's values, as committed in [`SCHEMA_PATH`].
pub fn values_schema() -> schemars::Schema {
    schemars::schema_for!(Values)
}

/// [`values_schema`] as the committed file's text.
pub fn values_schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&values_schema()).expect("a schema is JSON");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = env!("CARGO_MANIFEST_DIR");

    #[test]
    fn committed_values_schema_is_up_to_date() {
        let committed =
            std::fs::read_to_string(format!("{ROOT}/{SCHEMA_PATH}")).unwrap_or_default();
        assert!(
            committed == values_schema_json(),
            "{SCHEMA_PATH} is out of date with src/chart.rs and src/settings.rs; regenerate it with\n\n    \
             cargo run -- schema > {SCHEMA_PATH}\n"
        );
    }

    #[test]
    fn default_values_match_the_types() {
        let text =
            std::fs::read_to_string(format!("{ROOT}/charts/portcullis/values.yaml")).unwrap();
        let values: Values = serde_yaml::from_str(&text).unwrap();
        assert_eq!(values.kind, WorkloadKind::Deployment);
        assert_eq!(values.config, Settings::default());
        assert_eq!(values.proxy_protocol, ProxyProtocolValue::Off);
        assert_eq!(values.ingress_class.name, "portcullis");
        assert!(values.gateway_api.enabled && !values.gateway_api.install_crds);
        assert!(values.gateway_api.addresses.is_empty());
        assert!(!values.gateway_api.gateway_class.create);
        assert_eq!(values.gateway_api.gateway_class.name, "portcullis");
        let ports = &values.controller.container_ports;
        assert_eq!((ports.http, ports.https, ports.admin), (80, 443, 10254));
    }

    #[test]
    fn config_is_the_controller_settings_schema() {
        let schema = serde_json::to_value(values_schema()).unwrap();
        let config = &schema["properties"]["config"]["$ref"];
        assert_eq!(config, "#/$defs/Settings", "{schema:#}");
        assert_eq!(schema["additionalProperties"], false);
    }
}
