//! The Helm chart (charts/portcullis) against the real API server: lint, rendering with default and
//! non-default values, schema validation, a controller run from an installed release with its
//! ServiceAccount's token and the release's own flags, least privilege, upgrades and uninstalls without
//! orphans, the static manifest and the README's install commands.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use portcullis::settings::Settings;
use serde_json::Value;

use crate::harness::*;

pub const NAMES: &[&str] = &[
    "chart_lints_and_every_rendering_is_accepted_by_the_api_server",
    "chart_pods_meet_the_restricted_pod_security_standard",
    "chart_rejects_wrong_values_with_a_clear_message_and_checks_config_like_the_controller",
    "chart_release_runs_the_controller_with_its_service_account_and_rendered_flags",
    "chart_rbac_grants_nothing_the_controller_does_not_use",
    "chart_upgrade_and_uninstall_leave_no_orphans",
    "chart_static_manifest_is_up_to_date_and_accepted",
    "chart_installs_the_gateway_api_crds_keeps_them_and_creates_the_gateway_class_after",
    "readme_install_commands_run_as_written",
];

pub async fn run(name: &str, cp: &ControlPlane, slot: u8) -> Result<()> {
    let t = ChartTest { cp, slot };
    match name {
        "chart_lints_and_every_rendering_is_accepted_by_the_api_server" => t.renderings(),
        "chart_pods_meet_the_restricted_pod_security_standard" => t.pod_security(),
        "chart_rejects_wrong_values_with_a_clear_message_and_checks_config_like_the_controller" => {
            t.wrong_values()
        }
        "chart_release_runs_the_controller_with_its_service_account_and_rendered_flags" => {
            t.installed_controller().await
        }
        "chart_rbac_grants_nothing_the_controller_does_not_use" => t.least_privilege(),
        "chart_upgrade_and_uninstall_leave_no_orphans" => t.upgrade_and_uninstall(),
        "chart_static_manifest_is_up_to_date_and_accepted" => t.static_manifest(),
        "chart_installs_the_gateway_api_crds_keeps_them_and_creates_the_gateway_class_after" => {
            gateway_crds_release()
        }
        "readme_install_commands_run_as_written" => readme_commands(),
        other => bail!("unknown chart scenario {other}"),
    }
}

const CHART: &str = "charts/portcullis";
const WAIT: Duration = Duration::from_secs(20);

/// The Gateway API CRDs the chart carries, by plural
/// (`files/gateway-api/gateway.networking.k8s.io_PLURAL.yaml`).
const GATEWAY_CRDS: &[&str] = &[
    "gatewayclasses",
    "gateways",
    "grpcroutes",
    "httproutes",
    "referencegrants",
];

/// The cluster-scoped rules `gatewayAPI.enabled` adds, as [`rules_of`] prints them.
const GATEWAY_CLUSTER_RULES: &[&str] = &[
    "gateway.networking.k8s.io/gatewayclasses [get list watch]",
    "gateway.networking.k8s.io/gatewayclasses/status [patch]",
    "/namespaces [get list watch]",
];

/// The namespaced rules `gatewayAPI.enabled` adds (cluster-wide, or in `controller.watchNamespace`).
const GATEWAY_NAMESPACED_RULES: &[&str] = &[
    "gateway.networking.k8s.io/gateways [get list watch]",
    "gateway.networking.k8s.io/httproutes [get list watch]",
    "gateway.networking.k8s.io/grpcroutes [get list watch]",
    "gateway.networking.k8s.io/referencegrants [get list watch]",
    "gateway.networking.k8s.io/gateways/status [patch]",
    "gateway.networking.k8s.io/httproutes/status [patch]",
    "gateway.networking.k8s.io/grpcroutes/status [patch]",
];

/// Values that turn on everything optional and change most defaults (a DaemonSet watching one
/// namespace). `WATCHED` is replaced by a namespace; the monitoring files are enabled only when the
/// chart has them.
const EVERYTHING: &str = r#"
kind: DaemonSet
commonLabels: {team: platform}
image: {repository: registry.example.com/portcullis, tag: "0.1.0-rc1", pullPolicy: Always}
imagePullSecrets: [{name: registry-credentials}]
ingressClass: {name: CLASS, default: true, annotations: {example.com/owner: platform}}
gatewayAPI:
  addresses: [10.245.0.0/24, "2001:db8::7"]
  gatewayClass: {create: true, name: CLASS-gateways, annotations: {example.com/owner: platform}}
controller:
  watchNamespace: WATCHED
  watchIngressWithoutClass: true
  electionId: everything-leader
  logLevel: info,portcullis=debug
  extraArgs: {access-log: true, strict-sni: true, log-format: text, publish-service: null}
  extraEnv: [{name: RUST_BACKTRACE, value: "1"}]
config:
  redirect: {code: 301}
  hsts: {max-age: 600, preload: true}
  tls: {min-version: "1.3", session-tickets: false}
  trusted-proxies: [10.0.0.0/8, 192.0.2.7]
  upstream: {read-timeout: 90s, connect-timeout: 2, max-body-size: 8m}
  limits: {max-headers: 50, max-header-bytes: 16k}
shutdown: {preStopSleepSeconds: 10, delaySeconds: 10, timeoutSeconds: 60}
terminationGracePeriodSeconds: 90
updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}
service:
  type: NodePort
  externalTrafficPolicy: Local
  annotations: {example.com/lb: internal}
  nodePorts: {http: 30080, https: 30443}
podAnnotations: {example.com/scrape: "true"}
podLabels: {tier: edge}
resources: {requests: {cpu: 1, memory: 64Mi}, limits: {memory: 256Mi}}
tolerations: [{key: dedicated, operator: Equal, value: ingress, effect: NoSchedule}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: node-role.example.com/ingress, operator: Exists}]}]
topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway}]
extraVolumes: [{name: scratch, emptyDir: {}}]
extraVolumeMounts: [{name: scratch, mountPath: /scratch}]
podDisruptionBudget: {minAvailable: 1}
metrics:
  serviceMonitor: {enabled: true, labels: {release: prometheus}, interval: 15s, scrapeTimeout: 10s}
  prometheusRule: {enabled: RULES, labels: {release: prometheus}}
  grafanaDashboard: {enabled: DASHBOARD, annotations: {grafana_folder: Ingress}}
"#;

/// An autoscaled Deployment with fixed status addresses, an image digest, its own ServiceAccount name
/// and no RBAC from the chart.
const AUTOSCALED: &str = r#"
image: {digest: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}
ingressClass: {create: false}
controller:
  publishStatusAddress: [192.0.2.10, lb.example.com]
  bindAddress: "[::]"
serviceAccount: {name: edge-controller, annotations: {example.com/role: ingress}}
rbac: {create: false}
autoscaling:
  enabled: true
  minReplicas: 3
  maxReplicas: 12
  targetCPUUtilizationPercentage: 70
  targetMemoryUtilizationPercentage: 80
  behavior: {scaleDown: {stabilizationWindowSeconds: 300}}
podDisruptionBudget: {maxUnavailable: 50%}
service: {type: ClusterIP, ipFamilyPolicy: PreferDualStack}
metrics: {service: {enabled: true}}
"#;

struct ChartTest<'a> {
    cp: &'a ControlPlane,
    slot: u8,
}

fn chart_file_exists(path: &str) -> bool {
    std::path::Path::new(&format!("{REPO}/{CHART}/{path}")).exists()
}

fn kinds(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|o| o["kind"].as_str().map(String::from))
        .collect()
}

fn find<'v>(objects: &'v [Value], kind: &str) -> Result<&'v Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .with_context(|| format!("no {kind} rendered"))
}

fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

fn args_of(workload: &Value) -> Vec<String> {
    container(workload)["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The rules of a Role or ClusterRole, one line per resource: `GROUP/RESOURCE [VERBS]`, with
/// ` NAMES` when the rule names its objects.
fn rules_of(role: &Value) -> BTreeSet<String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut lines = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        let verbs = strings(&rule["verbs"]).join(" ");
        let names = strings(&rule["resourceNames"]).join(",");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                let mut line = format!("{group}/{resource} [{verbs}]");
                if !names.is_empty() {
                    line.push(' ');
                    line.push_str(&names);
                }
                lines.insert(line);
            }
        }
    }
    lines
}

fn set_of(lines: &[&str]) -> BTreeSet<String> {
    lines.iter().map(|l| l.to_string()).collect()
}

/// `kind/namespace/name` of rendered objects (namespace empty for cluster-scoped ones).
fn identities(objects: &[Value]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

impl ChartTest<'_> {
    fn values_file(&self, name: &str, yaml: &str) -> Result<std::path::PathBuf> {
        let path = std::env::temp_dir().join(format!(
            "portcullis-values-{}-{name}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, yaml)?;
        Ok(path)
    }

    fn template(&self, namespace: &str, release: &str, extra: &[&str]) -> Result<String> {
        let mut args = vec!["template", release, CHART, "--namespace", namespace];
        args.extend_from_slice(extra);
        self.cp.helm(&args)
    }

    fn dry_run_apply(&self, yaml: &str) -> Result<String> {
        self.cp
            .kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(yaml))
    }

    fn monitoring_crds(&self) -> Result<()> {
        let crds = std::fs::read_to_string(format!("{REPO}/tests/cluster/monitoring-crds.yaml"))?;
        self.cp.apply(&crds)?;
        self.cp.kubectl(&[
            "wait",
            "--for=condition=established",
            "--timeout=30s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ])?;
        Ok(())
    }

    /// The Gateway API CRDs the chart carries, applied server-side (the HTTPRoute CRD is too large for
    /// the annotation of a client-side apply): `kubectl auth can-i` only resolves a resource the API
    /// server serves, and a GatewayClass is only accepted once its CRD exists.
    fn gateway_crds(&self) -> Result<()> {
        let mut names = Vec::new();
        for plural in GATEWAY_CRDS {
            let file =
                format!("{REPO}/{CHART}/files/gateway-api/gateway.networking.k8s.io_{plural}.yaml");
            self.cp
                .kubectl(&["apply", "--server-side", "--force-conflicts", "-f", &file])?;
            names.push(format!("crd/{plural}.gateway.networking.k8s.io"));
        }
        let mut args = vec!["wait", "--for=condition=established", "--timeout=30s"];
        args.extend(names.iter().map(String::as_str));
        self.cp.kubectl(&args)?;
        Ok(())
    }

    /// `helm lint --strict`, then `helm template` with default and non-default values, each rendering
    /// applied with `--dry-run=server` (strict field validation, admission) and its key parts checked.
    fn renderings(&self) -> Result<()> {
        self.monitoring_crds()?;
        self.gateway_crds()?;
        let ns = self.cp.namespace("chart-render")?;
        let watched = self.cp.namespace("chart-render-watched")?;
        let rules = chart_file_exists("files/prometheus-rules.yaml");
        let dashboard = chart_file_exists("files/grafana-dashboard.json");
        let everything = self.values_file(
            &ns,
            &EVERYTHING
                .replace("WATCHED", &watched)
                .replace("CLASS", &format!("{ns}-class"))
                .replace("RULES", &rules.to_string())
                .replace("DASHBOARD", &dashboard.to_string()),
        )?;
        let autoscaled = self.values_file(&format!("{ns}-hpa"), AUTOSCALED)?;
        let everything = everything.display().to_string();
        let autoscaled = autoscaled.display().to_string();

        for values in [None, Some(&everything), Some(&autoscaled)] {
            let mut args = vec!["lint", CHART, "--strict"];
            if let Some(file) = values {
                args.extend(["--values", file]);
            }
            let out = self.cp.helm(&args)?;
            ensure!(
                !out.contains("[WARNING]") && !out.contains("[ERROR]"),
                "helm lint: {out}"
            );
        }

        // Defaults.
        let rendered = self.template(&ns, "defaults", &[])?;
        self.dry_run_apply(&rendered)?;
        let objects = yaml_documents(&rendered)?;
        let expected: BTreeSet<String> = [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "IngressClass",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
        .map(String::from)
        .into();
        ensure!(kinds(&objects) == expected, "{:?}", kinds(&objects));
        let deployment = find(&objects, "Deployment")?;
        ensure!(deployment["spec"]["replicas"] == 2);
        let args = args_of(deployment);
        for flag in [
            format!("--publish-service={ns}/defaults-portcullis"),
            "--ingress-class=portcullis".into(),
            "--election-id=defaults-portcullis-leader".into(),
            "--config=/etc/portcullis/config.yaml".into(),
            "--shutdown-delay=5s".into(),
        ] {
            ensure!(args.contains(&flag), "{flag} missing from {args:?}");
        }
        let pod = &deployment["spec"]["template"]["spec"];
        ensure!(pod["terminationGracePeriodSeconds"] == 45);
        ensure!(container(deployment)["lifecycle"]["preStop"]["sleep"]["seconds"] == 5);
        let security = &container(deployment)["securityContext"];
        ensure!(security["readOnlyRootFilesystem"] == true);
        ensure!(security["allowPrivilegeEscalation"] == false);
        ensure!(security["capabilities"]["drop"] == serde_json::json!(["ALL"]));
        ensure!(security["capabilities"]["add"] == serde_json::json!(["NET_BIND_SERVICE"]));
        ensure!(pod["securityContext"]["runAsNonRoot"] == true);
        ensure!(pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault");
        let service = find(&objects, "Service")?;
        ensure!(service["spec"]["type"] == "LoadBalancer");
        let ports: Vec<&Value> = service["spec"]["ports"]
            .as_array()
            .context("ports")?
            .iter()
            .map(|p| &p["port"])
            .collect();
        ensure!(ports == [80, 443], "service ports {ports:?}");
        ensure!(
            find(&objects, "IngressClass")?["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"]
                == "false"
        );
        // The Gateway API's rules are there by default (harmless without its CRDs), no pool, no class.
        let granted = rules_of(find(&objects, "ClusterRole")?);
        for rule in GATEWAY_CLUSTER_RULES.iter().chain(GATEWAY_NAMESPACED_RULES) {
            ensure!(granted.contains(*rule), "{rule} missing from {granted:?}");
        }
        ensure!(
            !args.iter().any(|a| a.starts_with("--gateway-addresses")),
            "{args:?}"
        );

        // Everything optional on, as a DaemonSet watching one namespace.
        let rendered = self.template(&ns, "everything", &["--values", &everything])?;
        self.dry_run_apply(&rendered)?;
        let objects = yaml_documents(&rendered)?;
        let found = kinds(&objects);
        for kind in ["DaemonSet", "ServiceMonitor", "IngressClass", "Role"] {
            ensure!(found.contains(kind), "{kind} missing: {found:?}");
        }
        ensure!(!found.contains("Deployment") && !found.contains("HorizontalPodAutoscaler"));
        ensure!(found.contains("PrometheusRule") == rules, "{found:?}");
        ensure!(
            objects
                .iter()
                .any(|o| o["kind"] == "ConfigMap"
                    && o["metadata"]["labels"]["grafana_dashboard"] == "1")
                == dashboard
        );
        let daemonset = find(&objects, "DaemonSet")?;
        let args = args_of(daemonset);
        for flag in [
            "--access-log".to_string(),
            "--strict-sni".into(),
            "--log-format=text".into(),
            format!("--watch-namespace={watched}"),
            "--watch-ingress-without-class".into(),
            "--election-id=everything-leader".into(),
            "--shutdown-timeout=60s".into(),
        ] {
            ensure!(args.contains(&flag), "{flag} missing from {args:?}");
        }
        ensure!(
            !args.iter().any(|a| a.starts_with("--publish-service")),
            "extraArgs null removes a flag: {args:?}"
        );
        ensure!(
            args.iter()
                .filter(|a| a.starts_with("--log-format"))
                .count()
                == 1,
            "{args:?}"
        );
        let spread = &daemonset["spec"]["template"]["spec"]["topologySpreadConstraints"][0];
        ensure!(
            spread["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "everything"
        );
        // The config value is the controller's file, key for key.
        let config = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["data"]["config.yaml"].is_string())
            .context("config ConfigMap")?;
        let settings = Settings::from_yaml(config["data"]["config.yaml"].as_str().unwrap_or(""))
            .map_err(anyhow::Error::msg)?;
        let expected = Settings::from_yaml(
            "redirect: {code: 301}\nhsts: {max-age: 600, preload: true}\n\
             tls: {min-version: \"1.3\", session-tickets: false}\ntrusted-proxies: [10.0.0.0/8, 192.0.2.7]\n\
             upstream: {read-timeout: 90s, connect-timeout: 2, max-body-size: 8m}\n\
             limits: {max-headers: 50, max-header-bytes: 16k}\n",
        )
        .map_err(anyhow::Error::msg)?;
        ensure!(settings == expected, "{settings:?}");
        // Namespaced permissions only in the watched namespace; GatewayClasses and Namespaces are
        // cluster-scoped, so cluster-wide.
        let mut cluster_wide = set_of(GATEWAY_CLUSTER_RULES);
        cluster_wide.insert("networking.k8s.io/ingressclasses [get list watch]".into());
        let granted = rules_of(find(&objects, "ClusterRole")?);
        ensure!(granted == cluster_wide, "{granted:?}");
        let watch_role = objects
            .iter()
            .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == watched.as_str())
            .context("no Role in the watched namespace")?;
        let granted = rules_of(watch_role);
        ensure!(
            granted.is_superset(&set_of(GATEWAY_NAMESPACED_RULES)),
            "{granted:?}"
        );
        // The Gateway address pool and the GatewayClass.
        ensure!(
            args.contains(&"--gateway-addresses=10.245.0.0/24,2001:db8::7".to_string()),
            "{args:?}"
        );
        let class = find(&objects, "GatewayClass")?;
        ensure!(class["metadata"]["name"] == format!("{ns}-class-gateways").as_str());
        ensure!(class["spec"]["controllerName"] == "portcullis.io/gateway-controller");
        ensure!(class["metadata"]["annotations"]["example.com/owner"] == "platform");

        // Autoscaled, fixed status addresses, no RBAC from the chart.
        let rendered = self.template(&ns, "autoscaled", &["--values", &autoscaled])?;
        self.dry_run_apply(&rendered)?;
        let objects = yaml_documents(&rendered)?;
        let found = kinds(&objects);
        ensure!(found.contains("HorizontalPodAutoscaler"), "{found:?}");
        for kind in ["ClusterRole", "Role", "RoleBinding", "IngressClass"] {
            ensure!(!found.contains(kind), "{kind} rendered: {found:?}");
        }
        let deployment = find(&objects, "Deployment")?;
        ensure!(deployment["spec"]["replicas"].is_null());
        let args = args_of(deployment);
        ensure!(
            args.contains(&"--publish-status-address=192.0.2.10,lb.example.com".to_string())
                && args.contains(&"--http-addr=[::]:80".to_string())
                && !args.iter().any(|a| a.starts_with("--publish-service")),
            "{args:?}"
        );
        ensure!(
            container(deployment)["image"]
                == "ghcr.io/portcullis-io/portcullis:0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        );
        ensure!(deployment["spec"]["template"]["spec"]["serviceAccountName"] == "edge-controller");
        let hpa = find(&objects, "HorizontalPodAutoscaler")?;
        ensure!(hpa["spec"]["metrics"].as_array().map(Vec::len) == Some(2));
        ensure!(find(&objects, "PodDisruptionBudget")?["spec"]["maxUnavailable"] == "50%");

        self.gateway_renderings(&ns)
    }

    /// `gatewayAPI`: turned off, nothing of the Gateway API is granted; `installCRDs` renders the
    /// chart's CRDs unchanged but for labels and the keep policy; a GatewayClass in the same release
    /// operation as its CRD is refused with the way round it.
    fn gateway_renderings(&self, ns: &str) -> Result<()> {
        let rendered = self.template(ns, "no-gateway", &["--set", "gatewayAPI.enabled=false"])?;
        self.dry_run_apply(&rendered)?;
        let objects = yaml_documents(&rendered)?;
        for role in objects
            .iter()
            .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        {
            let granted = rules_of(role);
            ensure!(
                !granted
                    .iter()
                    .any(|r| r.starts_with("gateway.networking.k8s.io/")
                        || r.starts_with("/namespaces ")),
                "gatewayAPI.enabled=false still grants {granted:?}"
            );
        }
        ensure!(!kinds(&objects).contains("GatewayClass"));

        let rendered = self.template(ns, "crds", &["--set", "gatewayAPI.installCRDs=true"])?;
        self.cp.kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--dry-run=server",
                "-f",
                "-",
            ],
            Some(&rendered),
        )?;
        let objects = yaml_documents(&rendered)?;
        let crds: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .collect();
        let names: BTreeSet<String> = crds
            .iter()
            .filter_map(|c| c["metadata"]["name"].as_str().map(String::from))
            .collect();
        let expected: BTreeSet<String> = GATEWAY_CRDS
            .iter()
            .map(|p| format!("{p}.gateway.networking.k8s.io"))
            .collect();
        ensure!(names == expected, "CRDs rendered: {names:?}");
        for plural in GATEWAY_CRDS {
            let file = std::fs::read_to_string(format!(
                "{REPO}/{CHART}/files/gateway-api/gateway.networking.k8s.io_{plural}.yaml"
            ))?;
            let vendored = yaml_documents(&file)?;
            let vendored = vendored.first().context("empty CRD file")?;
            let crd = crds
                .iter()
                .find(|c| c["metadata"]["name"] == vendored["metadata"]["name"])
                .with_context(|| format!("{plural} not rendered"))?;
            ensure!(
                crd["spec"] == vendored["spec"],
                "{plural}: spec changed by rendering"
            );
            let annotations = &crd["metadata"]["annotations"];
            ensure!(
                annotations["helm.sh/resource-policy"] == "keep",
                "{annotations}"
            );
            ensure!(
                annotations["gateway.networking.k8s.io/bundle-version"]
                    == vendored["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"]
            );
            ensure!(crd["metadata"]["labels"]["app.kubernetes.io/instance"] == "crds");
        }

        let both = [
            "--set",
            "gatewayAPI.installCRDs=true",
            "--set",
            "gatewayAPI.gatewayClass.create=true",
        ];
        match self.template(ns, "both", &both) {
            Ok(_) => bail!("a GatewayClass was rendered with its CRD in one release operation"),
            Err(e) => ensure!(
                format!("{e:#}")
                    .contains("install with gatewayAPI.installCRDs=true first, then helm upgrade"),
                "{e:#}"
            ),
        }
        // Once the cluster serves GatewayClasses (a later `helm upgrade`), both are rendered.
        let mut later = both.to_vec();
        later.extend([
            "--api-versions",
            "gateway.networking.k8s.io/v1/GatewayClass",
        ]);
        let found = kinds(&yaml_documents(&self.template(ns, "both", &later)?)?);
        ensure!(
            found.contains("GatewayClass") && found.contains("CustomResourceDefinition"),
            "{found:?}"
        );
        Ok(())
    }

    /// The rendered pod, created as a Pod in a namespace that enforces the restricted Pod Security
    /// Standard, is admitted; the same pod with a privilege added is not (so the admission check is
    /// really there).
    fn pod_security(&self) -> Result<()> {
        let ns = self.cp.namespace("chart-restricted")?;
        self.cp.kubectl(&[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ])?;
        for (release, values) in [
            ("deployment", "kind=Deployment"),
            ("daemonset", "kind=DaemonSet"),
        ] {
            let rendered = self.template(&ns, release, &["--set", values])?;
            let objects = yaml_documents(&rendered)?;
            let workload = objects
                .iter()
                .find(|o| o["kind"] == "Deployment" || o["kind"] == "DaemonSet")
                .context("workload")?;
            let template = &workload["spec"]["template"];
            if let Some(account) = template["spec"]["serviceAccountName"].as_str() {
                self.cp
                    .kubectl(&["-n", &ns, "create", "serviceaccount", account])?;
            }
            let mut pod = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": format!("{release}-pod"), "namespace": ns, "labels": template["metadata"]["labels"]},
                "spec": template["spec"],
            });
            self.cp
                .kubectl_stdin(
                    &["create", "--dry-run=server", "-f", "-"],
                    Some(&pod.to_string()),
                )
                .context("the chart's pod is not admitted under the restricted standard")?;
            pod["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] =
                serde_json::json!(["NET_BIND_SERVICE", "NET_ADMIN"]);
            let refused = self.cp.kubectl_stdin(
                &["create", "--dry-run=server", "-f", "-"],
                Some(&pod.to_string()),
            );
            match refused {
                Err(e) if format!("{e:#}").contains("restricted") => {}
                other => bail!("a pod with NET_ADMIN was not refused: {other:?}"),
            }
        }
        Ok(())
    }

    /// Wrong values fail `helm install` naming the value, and nothing is installed; every `config`
    /// the controller accepts passes the chart's schema and every one it refuses fails it.
    fn wrong_values(&self) -> Result<()> {
        let ns = self.cp.namespace("chart-values")?;
        let cases: &[(&[&str], &[&str])] = &[
            (&["replicaCount=two"], &["/replicaCount", "want integer"]),
            (&["kind=StatefulSet"], &["/kind", "Deployment", "DaemonSet"]),
            (
                &["servce.type=NodePort"],
                &["additional properties 'servce' not allowed"],
            ),
            (&["service.type=External"], &["/service/type"]),
            (
                &["config.hsts.max-age=soon"],
                &["/config/hsts/max-age", "want integer"],
            ),
            (
                &["config.hsts.enable=false"],
                &["/config/hsts", "'enable' not allowed"],
            ),
            (
                &["config.upstream.read-timeout=soon"],
                &["/config/upstream/read-timeout"],
            ),
            (
                &["config.tls.min-version=1.1"],
                &["/config/tls/min-version"],
            ),
            (
                &["controller.containerPorts.http=70000"],
                &["/controller/containerPorts/http"],
            ),
            (&["resources.requests=lots"], &["/resources/requests"]),
            (
                &["terminationGracePeriodSeconds=10"],
                &["terminationGracePeriodSeconds (10) must be at least"],
            ),
            (
                &["kind=DaemonSet", "autoscaling.enabled=true"],
                &["autoscaling.enabled needs kind: Deployment"],
            ),
            (
                &["gatewayAPI.addresses={gateway.example.com}"],
                &["/gatewayAPI/addresses/0"],
            ),
            (
                &["gatewayAPI.gatewayClass.name=Not_A_Name"],
                &["/gatewayAPI/gatewayClass/name"],
            ),
            (
                &["gatewayAPI.installCrds=true"],
                &["/gatewayAPI", "'installCrds' not allowed"],
            ),
            (
                &[
                    "gatewayAPI.enabled=false",
                    "gatewayAPI.addresses={10.245.0.1}",
                ],
                &["gatewayAPI.addresses needs gatewayAPI.enabled"],
            ),
            (
                &[
                    "gatewayAPI.enabled=false",
                    "gatewayAPI.gatewayClass.create=true",
                ],
                &["gatewayAPI.gatewayClass.create needs gatewayAPI.enabled"],
            ),
            (
                &["gatewayAPI.enabled=false", "gatewayAPI.installCRDs=true"],
                &["gatewayAPI.installCRDs needs gatewayAPI.enabled"],
            ),
        ];
        for (n, (values, expected)) in cases.iter().enumerate() {
            let release = format!("wrong-{n}");
            let mut args = vec!["install", &release, CHART, "--namespace", &ns];
            for v in *values {
                args.extend(["--set", v]);
            }
            match self.cp.helm(&args) {
                Ok(_) => bail!("helm install accepted {values:?}"),
                Err(e) => {
                    let message = format!("{e:#}");
                    for part in *expected {
                        ensure!(
                            message.contains(part),
                            "{values:?}: {part:?} missing from: {message}"
                        );
                    }
                }
            }
        }
        let left = self
            .cp
            .helm(&["list", "--namespace", &ns, "--all", "--short"])?;
        ensure!(left.trim().is_empty(), "releases left: {left}");

        // The same verdict as the controller's own parser.
        let configs = [
            ("{}", true),
            ("{upstream: {read-timeout: 90}}", true),
            ("{upstream: {read-timeout: 1.5s, max-body-size: 0}}", true),
            ("{upstream: {max-body-size: 8m, send-timeout: 500ms}}", true),
            ("{limits: {max-header-bytes: 16k, max-headers: 10}}", true),
            ("{redirect: {code: 303}}", true),
            (
                "{tls: {default-certificate: ns/name, min-version: \"1.3\"}}",
                true,
            ),
            ("{trusted-proxies: [10.0.0.0/8, \"::1\"]}", true),
            ("{hsts: {enabled: false, max-age: 0}}", true),
            ("{redirect: {code: 200}}", false),
            ("{tls: {min-version: \"1.1\"}}", false),
            ("{tls: {min-version: 1.3}}", true),
            ("{tls: {min-version: 1.1}}", false),
            ("{upstream: {read-timeout: 1.5}}", false),
            ("{upstream: {read-timeout: \".5\"}}", true),
            ("{tls: {default-certificate: just-a-name}}", false),
            ("{upstream: {read-timeout: 5 s}}", false),
            ("{upstream: {read-timeout: -1}}", false),
            ("{upstream: {read-timeout: 2d}}", false),
            ("{upstream: {max-body-size: 1.5m}}", false),
            ("{upstream: {max-body-size: 8t}}", false),
            ("{hsts: {max-age: -1}}", false),
            ("{hsts: {preload: \"yes\"}}", false),
            ("{limits: {max-headers: many}}", false),
            ("{unknown: 1}", false),
            ("[]", false),
        ];
        for (n, (config, valid)) in configs.iter().enumerate() {
            let controller = Settings::from_yaml(config).is_ok();
            ensure!(
                controller == *valid,
                "the controller's verdict on {config} changed"
            );
            let file =
                self.values_file(&format!("{ns}-config-{n}"), &format!("config: {config}\n"))?;
            let chart = self
                .template(&ns, "config", &["--values", &file.display().to_string()])
                .is_ok();
            ensure!(
                chart == controller,
                "config {config}: the chart says {chart}, the controller says {controller}"
            );
        }
        Ok(())
    }

    /// `helm install`, then the real binary with the token of the release's ServiceAccount and the
    /// flags, environment, configuration file and probes of the rendered Deployment (only listen
    /// addresses, the config path and the kubeconfig replaced): it becomes ready with the Gateway API
    /// watched, serves TLS, applies the chart's `config`, writes the chart Service's address into
    /// Ingress status and holds its Lease.
    async fn installed_controller(&self) -> Result<()> {
        // With the Gateway API CRDs installed the controller watches those kinds too, and only becomes
        // ready if the release's RBAC lets it.
        self.gateway_crds()?;
        let ns = self.cp.namespace("chart-release")?;
        let release = ns.clone();
        let class = format!("{ns}-class");
        self.cp.install_chart(
            &ns,
            &release,
            &[
                &format!("ingressClass.name={class}"),
                "config.redirect.code=301",
                "controller.logLevel=portcullis=debug",
                // Loopback addresses of this test's own: the rendered flag must be one the
                // controller accepts.
                &format!("gatewayAPI.addresses={{127.0.{}.8/30}}", self.slot),
            ],
        )?;
        let objects = self.cp.release_objects(&ns, &release)?;
        let deployment = find(&objects, "Deployment")?;
        let pod = &deployment["spec"]["template"]["spec"];
        let account = pod["serviceAccountName"]
            .as_str()
            .context("serviceAccountName")?;
        let kubeconfig = self.cp.service_account_kubeconfig(&ns, account)?;

        // The mounted configuration file.
        let mount = container(deployment)["volumeMounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "config"))
            .context("config mount")?;
        let mount_path = mount["mountPath"].as_str().context("mountPath")?;
        let config_map = pod["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == "config"))
            .and_then(|v| v["configMap"]["name"].as_str())
            .context("config volume")?;
        let config = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == config_map)
            .context("config ConfigMap")?;
        let dir = std::env::temp_dir().join(format!("portcullis-{ns}-config"));
        std::fs::create_dir_all(&dir)?;
        if let Some(files) = config["data"].as_object() {
            for (name, text) in files {
                std::fs::write(dir.join(name), text.as_str().unwrap_or(""))?;
            }
        }

        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, self.slot, 1));
        let port_of = |name: &str| -> Result<u16> {
            container(deployment)["ports"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == name))
                .and_then(|p| p["containerPort"].as_u64())
                .map(|p| p as u16)
                .with_context(|| format!("container port {name}"))
        };
        let mut args = Vec::new();
        for arg in args_of(deployment) {
            let (flag, value) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
            let replaced = match flag {
                "--http-addr" | "--https-addr" | "--admin-addr" => {
                    let port = value.rsplit(':').next().context("port")?;
                    format!("{flag}={ip}:{port}")
                }
                "--config" => {
                    let file = value
                        .strip_prefix(mount_path)
                        .context("--config outside the config mount")?;
                    format!(
                        "{flag}={}",
                        dir.join(file.trim_start_matches('/')).display()
                    )
                }
                _ => arg.clone(),
            };
            args.push(replaced);
        }
        let pool = format!("--gateway-addresses=127.0.{}.8/30", self.slot);
        ensure!(args.contains(&pool), "{pool} missing from {args:?}");
        args.push(format!("--kubeconfig={}", kubeconfig.display()));
        let pod_name = format!("{release}-7d9f8b6c5-x2x4q");
        let mut env = Vec::new();
        for var in container(deployment)["env"].as_array().context("env")? {
            let name = var["name"].as_str().context("env name")?.to_string();
            let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.namespace") => ns.clone(),
                Some("metadata.name") => pod_name.clone(),
                Some(other) => bail!("unexpected fieldRef {other}"),
                None => var["value"].as_str().unwrap_or("").to_string(),
            };
            env.push((name, value));
        }
        let admin = SocketAddr::new(ip, port_of("admin")?);
        let controller = Controller::launch(&args, &env, ip, admin, &ns).await?;

        // The probes of the Deployment answer on the ports it names.
        for probe in ["livenessProbe", "readinessProbe"] {
            let get = &container(deployment)[probe]["httpGet"];
            let port = match &get["port"] {
                Value::String(name) => port_of(name)?,
                other => other.as_u64().context("probe port")? as u16,
            };
            let path = get["path"].as_str().context("probe path")?;
            let (status, _) = http_get(SocketAddr::new(ip, port), "probe", path).await?;
            ensure!(status == 200, "{probe} {path} on {port}: {status}");
        }

        // Traffic for the release's class, TLS from a Secret.
        let backend = Backend::start(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, self.slot, 1)), 8080),
            "web",
            "web-1",
        )
        .await?;
        let (secret, fingerprint) = tls_secret(&ns, "web-tls", &["chart.example.com"]);
        self.cp.apply(
            &[
                service_with_endpoints(&ns, "web", &[backend.addr]),
                secret,
                ingress(&ns, "web", "chart.example.com", "web", Some("web-tls")).replace(
                    "ingressClassName: portcullis",
                    &format!("ingressClassName: {class}"),
                ),
                ingress(
                    &ns,
                    "broken",
                    "broken.example.com",
                    "web",
                    Some("missing-tls"),
                )
                .replace(
                    "ingressClassName: portcullis",
                    &format!("ingressClassName: {class}"),
                ),
            ]
            .join("---\n"),
        )?;
        let https = controller.https();
        eventually("the route over HTTPS", WAIT, || async {
            https_get(https, "chart.example.com", "/")
                .await
                .ok()
                .filter(|(status, _, served)| *status == 200 && *served == fingerprint)
        })
        .await?;
        // `config.redirect.code=301` reached the controller (its default is 308).
        let (status, _) = http_get(controller.http(), "chart.example.com", "/x").await?;
        ensure!(status == 301, "redirect status {status}");

        // Status: the address of the chart's own Service (--publish-service), written by the leader.
        let service = find(&objects, "Service")?["metadata"]["name"]
            .as_str()
            .context("service name")?
            .to_string();
        let cluster_ip = self.cp.kubectl(&[
            "-n",
            &ns,
            "get",
            "service",
            &service,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])?;
        ensure!(!cluster_ip.is_empty());
        eventually("status from the chart's Service", WAIT, || async {
            self.cp
                .kubectl(&[
                    "-n",
                    &ns,
                    "get",
                    "ingress",
                    "web",
                    "-o",
                    "jsonpath={.status.loadBalancer.ingress[*].ip}",
                ])
                .ok()
                .filter(|s| *s == cluster_ip)
        })
        .await?;
        let election = args
            .iter()
            .find_map(|a| a.strip_prefix("--election-id="))
            .context("--election-id")?;
        let holder = self.cp.kubectl(&[
            "-n",
            &ns,
            "get",
            "lease",
            election,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?;
        ensure!(holder == pod_name, "lease holder {holder}");
        // Events are allowed too: the Ingress whose Secret is missing gets a Warning.
        eventually("a Warning Event for the missing Secret", WAIT, || async {
            self.cp
                .kubectl(&[
                    "-n",
                    &ns,
                    "get",
                    "events",
                    "--field-selector",
                    "type=Warning,involvedObject.name=broken",
                    "-o",
                    "name",
                ])
                .ok()
                .filter(|s| !s.trim().is_empty())
        })
        .await
        .with_context(|| format!("controller log: {}", controller.log.display()))?;
        drop(backend);
        Ok(())
    }

    fn can_i(&self, who: &str, verb: &str, what: &str, scope: &[&str]) -> Result<bool> {
        let out = Command::new(self.cp.bin("kubectl"))
            .args(["auth", "can-i", verb, what, "--as", who])
            .args(scope)
            .env("KUBECONFIG", &self.cp.kubeconfig)
            .output()?;
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => Ok(true),
            "no" => Ok(false),
            other => bail!(
                "kubectl auth can-i {verb} {what}: {other} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// `kubectl auth can-i` as the release's ServiceAccount: everything the controller does is
    /// allowed, and nothing else, both with cluster-wide and with single-namespace RBAC.
    fn least_privilege(&self) -> Result<()> {
        self.gateway_crds()?;
        let ns = self.cp.namespace("chart-rbac")?;
        let elsewhere = self.cp.namespace("chart-rbac-other")?;
        let watched = self.cp.namespace("chart-rbac-watched")?;

        // Cluster-wide.
        self.cp
            .install_chart(&ns, "wide", &["ingressClass.create=false"])?;
        let sa = format!("system:serviceaccount:{ns}:wide-portcullis");
        let all: &[&str] = &["--all-namespaces"];
        let there: &[&str] = &["-n", &elsewhere];
        let home: &[&str] = &["-n", &ns];
        let there_status: &[&str] = &["-n", &elsewhere, "--subresource=status"];
        let home_token: &[&str] = &["-n", &ns, "--subresource=token"];
        let home_exec: &[&str] = &["-n", &ns, "--subresource=exec"];
        let status: &[&str] = &["--subresource=status"];
        let allowed: &[(&str, &str, &[&str])] = &[
            ("list", "ingresses.networking.k8s.io", all),
            ("watch", "ingresses.networking.k8s.io", all),
            ("patch", "ingresses.networking.k8s.io", there_status),
            ("list", "ingressclasses.networking.k8s.io", &[]),
            ("watch", "ingressclasses.networking.k8s.io", &[]),
            ("list", "services", all),
            ("watch", "services", all),
            ("list", "secrets", all),
            ("watch", "secrets", all),
            ("list", "endpointslices.discovery.k8s.io", all),
            ("watch", "endpointslices.discovery.k8s.io", all),
            ("create", "events.events.k8s.io", there),
            ("patch", "events.events.k8s.io", there),
            ("create", "leases.coordination.k8s.io", home),
            (
                "get",
                "leases.coordination.k8s.io/wide-portcullis-leader",
                home,
            ),
            (
                "update",
                "leases.coordination.k8s.io/wide-portcullis-leader",
                home,
            ),
            ("list", "gateways.gateway.networking.k8s.io", all),
            ("watch", "gateways.gateway.networking.k8s.io", all),
            ("list", "httproutes.gateway.networking.k8s.io", all),
            ("watch", "httproutes.gateway.networking.k8s.io", all),
            ("list", "grpcroutes.gateway.networking.k8s.io", all),
            ("watch", "referencegrants.gateway.networking.k8s.io", all),
            ("patch", "gateways.gateway.networking.k8s.io", there_status),
            (
                "patch",
                "httproutes.gateway.networking.k8s.io",
                there_status,
            ),
            (
                "patch",
                "grpcroutes.gateway.networking.k8s.io",
                there_status,
            ),
            ("list", "gatewayclasses.gateway.networking.k8s.io", &[]),
            ("watch", "gatewayclasses.gateway.networking.k8s.io", &[]),
            ("patch", "gatewayclasses.gateway.networking.k8s.io", status),
            ("list", "namespaces", &[]),
            ("watch", "namespaces", &[]),
        ];
        let denied: &[(&str, &str, &[&str])] = &[
            ("update", "gateways.gateway.networking.k8s.io", there),
            ("patch", "gateways.gateway.networking.k8s.io", there),
            ("delete", "gateways.gateway.networking.k8s.io", there),
            ("create", "gateways.gateway.networking.k8s.io", there),
            ("update", "gateways.gateway.networking.k8s.io", there_status),
            ("patch", "httproutes.gateway.networking.k8s.io", there),
            ("update", "httproutes.gateway.networking.k8s.io", there),
            ("delete", "httproutes.gateway.networking.k8s.io", there),
            (
                "update",
                "httproutes.gateway.networking.k8s.io",
                there_status,
            ),
            ("patch", "referencegrants.gateway.networking.k8s.io", there),
            ("create", "referencegrants.gateway.networking.k8s.io", there),
            ("patch", "gatewayclasses.gateway.networking.k8s.io", &[]),
            ("create", "gatewayclasses.gateway.networking.k8s.io", &[]),
            ("delete", "gatewayclasses.gateway.networking.k8s.io", &[]),
            ("update", "gatewayclasses.gateway.networking.k8s.io", status),
            ("create", "namespaces", &[]),
            ("patch", "namespaces", &[]),
            ("delete", "namespaces", &[]),
            ("create", "secrets", there),
            ("update", "secrets", there),
            ("patch", "secrets", there),
            ("delete", "secrets", there),
            ("deletecollection", "secrets", there),
            ("create", "ingresses.networking.k8s.io", there),
            ("update", "ingresses.networking.k8s.io", there),
            ("patch", "ingresses.networking.k8s.io", there),
            ("delete", "ingresses.networking.k8s.io", there),
            ("update", "ingresses.networking.k8s.io", there_status),
            ("create", "services", there),
            ("update", "services", there),
            ("patch", "services", there),
            ("delete", "services", there),
            ("create", "endpointslices.discovery.k8s.io", there),
            ("create", "ingressclasses.networking.k8s.io", &[]),
            ("delete", "ingressclasses.networking.k8s.io", &[]),
            ("list", "pods", all),
            ("list", "configmaps", all),
            ("get", "configmaps", home),
            ("list", "nodes", &[]),
            ("list", "serviceaccounts", all),
            ("create", "serviceaccounts", home_token),
            ("list", "endpoints", all),
            ("list", "events", all),
            ("list", "events.events.k8s.io", all),
            ("delete", "events.events.k8s.io", there),
            ("list", "leases.coordination.k8s.io", home),
            (
                "delete",
                "leases.coordination.k8s.io/wide-portcullis-leader",
                home,
            ),
            ("get", "leases.coordination.k8s.io/kube-scheduler", home),
            ("update", "leases.coordination.k8s.io/another-leader", home),
            ("create", "leases.coordination.k8s.io", there),
            ("list", "roles.rbac.authorization.k8s.io", all),
            ("escalate", "clusterroles.rbac.authorization.k8s.io", &[]),
            ("bind", "clusterroles.rbac.authorization.k8s.io", &[]),
            ("impersonate", "users", &[]),
            ("create", "pods", home_exec),
            (
                "list",
                "customresourcedefinitions.apiextensions.k8s.io",
                &[],
            ),
            ("*", "*", all),
        ];
        let check = |sa: &str,
                     allowed: &[(&str, &str, &[&str])],
                     denied: &[(&str, &str, &[&str])]|
         -> Result<()> {
            for (verb, what, scope) in allowed {
                ensure!(
                    self.can_i(sa, verb, what, scope)?,
                    "{sa} cannot {verb} {what} {scope:?}"
                );
            }
            for (verb, what, scope) in denied {
                ensure!(
                    !self.can_i(sa, verb, what, scope)?,
                    "{sa} can {verb} {what} {scope:?}"
                );
            }
            Ok(())
        };
        check(&sa, allowed, denied)?;

        // Everything it may do in another namespace, listed: exactly the controller's rules next to
        // what every authenticated user may do (self reviews, discovery).
        let listed = self
            .cp
            .kubectl(&["auth", "can-i", "--list", "--as", &sa, "-n", &elsewhere])?;
        let mut rules = BTreeSet::new();
        for line in listed.lines().skip(1) {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let Some(resource) = columns.first() else {
                continue;
            };
            if resource.starts_with("self") || resource.starts_with('[') {
                continue; // selfsubject*reviews, and non-resource URLs
            }
            let verbs = line[line.rfind('[').unwrap_or(0)..].to_string();
            rules.insert(format!("{resource} {verbs}"));
        }
        let expected: BTreeSet<String> = [
            "endpointslices.discovery.k8s.io [get list watch]",
            "events.events.k8s.io [create patch]",
            "ingressclasses.networking.k8s.io [get list watch]",
            "ingresses.networking.k8s.io/status [patch]",
            "ingresses.networking.k8s.io [get list watch]",
            "secrets [get list watch]",
            "services [get list watch]",
            "namespaces [get list watch]",
            "gatewayclasses.gateway.networking.k8s.io [get list watch]",
            "gatewayclasses.gateway.networking.k8s.io/status [patch]",
            "gateways.gateway.networking.k8s.io [get list watch]",
            "gateways.gateway.networking.k8s.io/status [patch]",
            "grpcroutes.gateway.networking.k8s.io [get list watch]",
            "grpcroutes.gateway.networking.k8s.io/status [patch]",
            "httproutes.gateway.networking.k8s.io [get list watch]",
            "httproutes.gateway.networking.k8s.io/status [patch]",
            "referencegrants.gateway.networking.k8s.io [get list watch]",
        ]
        .map(String::from)
        .into();
        ensure!(
            rules == expected,
            "permissions in another namespace:\n{listed}"
        );

        // One namespace: nothing namespaced outside it.
        self.cp.install_chart(
            &ns,
            "narrow",
            &[
                "ingressClass.create=false",
                &format!("controller.watchNamespace={watched}"),
            ],
        )?;
        let sa = format!("system:serviceaccount:{ns}:narrow-portcullis");
        let inside: &[&str] = &["-n", &watched];
        let inside_status: &[&str] = &["-n", &watched, "--subresource=status"];
        let allowed: &[(&str, &str, &[&str])] = &[
            ("list", "ingresses.networking.k8s.io", inside),
            ("watch", "secrets", inside),
            ("list", "services", inside),
            ("list", "endpointslices.discovery.k8s.io", inside),
            ("patch", "ingresses.networking.k8s.io", inside_status),
            ("create", "events.events.k8s.io", inside),
            ("list", "ingressclasses.networking.k8s.io", &[]),
            ("get", "services/narrow-portcullis", home),
            (
                "update",
                "leases.coordination.k8s.io/narrow-portcullis-leader",
                home,
            ),
            ("list", "gateways.gateway.networking.k8s.io", inside),
            ("watch", "httproutes.gateway.networking.k8s.io", inside),
            ("patch", "gateways.gateway.networking.k8s.io", inside_status),
            (
                "patch",
                "httproutes.gateway.networking.k8s.io",
                inside_status,
            ),
            ("list", "gatewayclasses.gateway.networking.k8s.io", &[]),
            ("list", "namespaces", &[]),
        ];
        let denied: &[(&str, &str, &[&str])] = &[
            ("list", "ingresses.networking.k8s.io", all),
            ("list", "secrets", all),
            ("list", "secrets", there),
            ("list", "secrets", home),
            ("get", "services/wide-portcullis", home),
            ("list", "services", home),
            ("patch", "ingresses.networking.k8s.io", there_status),
            ("create", "events.events.k8s.io", there),
            ("create", "secrets", inside),
            ("delete", "ingresses.networking.k8s.io", inside),
            ("list", "gateways.gateway.networking.k8s.io", all),
            ("list", "httproutes.gateway.networking.k8s.io", there),
            ("patch", "gateways.gateway.networking.k8s.io", there_status),
            ("patch", "httproutes.gateway.networking.k8s.io", inside),
            ("delete", "gateways.gateway.networking.k8s.io", inside),
        ];
        check(&sa, allowed, denied)?;

        // gatewayAPI.enabled=false: nothing of the Gateway API, and no Namespaces.
        self.cp.install_chart(
            &ns,
            "nogateway",
            &["ingressClass.create=false", "gatewayAPI.enabled=false"],
        )?;
        let sa = format!("system:serviceaccount:{ns}:nogateway-portcullis");
        let allowed: &[(&str, &str, &[&str])] = &[("list", "ingresses.networking.k8s.io", all)];
        let denied: &[(&str, &str, &[&str])] = &[
            ("list", "gateways.gateway.networking.k8s.io", all),
            ("list", "httproutes.gateway.networking.k8s.io", all),
            ("list", "referencegrants.gateway.networking.k8s.io", all),
            ("patch", "gateways.gateway.networking.k8s.io", there_status),
            ("list", "gatewayclasses.gateway.networking.k8s.io", &[]),
            ("patch", "gatewayclasses.gateway.networking.k8s.io", status),
            ("list", "namespaces", &[]),
        ];
        check(&sa, allowed, denied)?;

        // ACME on (issuers in config.acme): Secrets may be created and updated where Ingresses are
        // watched, never deleted; in its own namespace, the challenge ConfigMap and the issuers'
        // account Secrets by name.
        self.cp.install_chart(
            &ns,
            "acme",
            &[
                "ingressClass.create=false",
                &format!("controller.watchNamespace={watched}"),
                "config.acme.issuers.le.directory=https://acme.example/directory",
            ],
        )?;
        let sa = format!("system:serviceaccount:{ns}:acme-portcullis");
        let allowed: &[(&str, &str, &[&str])] = &[
            ("create", "secrets", inside),
            ("update", "secrets", inside),
            ("get", "secrets", inside),
            ("create", "secrets", home),
            ("get", "secrets/acme-portcullis-leader-acme-le", home),
            ("update", "secrets/acme-portcullis-leader-acme-le", home),
            ("create", "configmaps", home),
            (
                "get",
                "configmaps/acme-portcullis-leader-acme-challenges",
                home,
            ),
            (
                "watch",
                "configmaps/acme-portcullis-leader-acme-challenges",
                home,
            ),
            (
                "update",
                "configmaps/acme-portcullis-leader-acme-challenges",
                home,
            ),
        ];
        let denied: &[(&str, &str, &[&str])] = &[
            ("delete", "secrets", inside),
            ("patch", "secrets", inside),
            ("create", "secrets", there),
            ("update", "secrets", there),
            ("get", "secrets/wide-portcullis-leader-acme-le", home),
            ("update", "secrets/other", home),
            ("list", "secrets", home),
            ("get", "configmaps/other", home),
            ("update", "configmaps/acme-portcullis", home),
            (
                "delete",
                "configmaps/acme-portcullis-leader-acme-challenges",
                home,
            ),
            ("create", "configmaps", inside),
        ];
        check(&sa, allowed, denied)
    }

    /// Everything labelled with the release's instance label, in every namespace and cluster-wide, as
    /// `kind/namespace/name`.
    fn labelled(&self, release: &str) -> Result<BTreeSet<String>> {
        let types = self
            .cp
            .kubectl(&["api-resources", "--verbs=list", "-o", "name"])?;
        let types: Vec<&str> = types.lines().filter(|t| !t.is_empty()).collect();
        let out = self.cp.kubectl(&[
            "get",
            &types.join(","),
            "--all-namespaces",
            "-l",
            &format!("app.kubernetes.io/instance={release}"),
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name}{\"\\n\"}{end}",
        ])?;
        Ok(out.lines().map(String::from).collect())
    }

    /// `helm upgrade` with very different values removes what the new values no longer render
    /// (cluster-scoped objects and other namespaces included), and `helm uninstall` removes everything.
    fn upgrade_and_uninstall(&self) -> Result<()> {
        self.monitoring_crds()?;
        let ns = self.cp.namespace("chart-upgrade")?;
        let watched = self.cp.namespace("chart-upgrade-watched")?;
        let release = ns.clone();
        let first = self.values_file(
            &ns,
            &format!(
                "ingressClass: {{name: {ns}-first}}\ncontroller: {{watchNamespace: {watched}}}\n\
                 autoscaling: {{enabled: true}}\nmetrics: {{serviceMonitor: {{enabled: true}}}}\n\
                 config: {{redirect: {{code: 302}}}}\n"
            ),
        )?;
        let first = first.display().to_string();
        self.cp.helm(&[
            "install",
            &release,
            CHART,
            "--namespace",
            &ns,
            "--values",
            &first,
        ])?;
        let installed = identities(&self.cp.release_objects(&ns, &release)?);
        for object in [
            format!("Role/{watched}/{release}-portcullis-watch"),
            format!("IngressClass//{ns}-first"),
            format!("HorizontalPodAutoscaler/{ns}/{release}-portcullis"),
            format!("ServiceMonitor/{ns}/{release}-portcullis"),
            format!("Service/{ns}/{release}-portcullis-metrics"),
        ] {
            ensure!(
                installed.contains(&object),
                "{object} not installed: {installed:?}"
            );
        }
        ensure!(
            self.labelled(&release)? == installed,
            "objects in the cluster differ from the release"
        );

        let second = self.values_file(
            &format!("{ns}-second"),
            &format!(
                "kind: DaemonSet\ningressClass: {{name: {ns}-second}}\npodDisruptionBudget: {{enabled: false}}\n\
                 service: {{type: ClusterIP}}\nconfig: {{hsts: {{max-age: 60}}}}\n"
            ),
        )?;
        self.cp.helm(&[
            "upgrade",
            &release,
            CHART,
            "--namespace",
            &ns,
            "--values",
            &second.display().to_string(),
        ])?;
        let upgraded = identities(&self.cp.release_objects(&ns, &release)?);
        ensure!(upgraded.contains(&format!("DaemonSet/{ns}/{release}-portcullis")));
        let present = self.labelled(&release)?;
        ensure!(
            present == upgraded,
            "after the upgrade, left over: {:?}, missing: {:?}",
            present.difference(&upgraded).collect::<Vec<_>>(),
            upgraded.difference(&present).collect::<Vec<_>>()
        );
        let config = self.cp.kubectl(&[
            "-n",
            &ns,
            "get",
            "configmap",
            &format!("{release}-portcullis"),
            "-o",
            "jsonpath={.data.config\\.yaml}",
        ])?;
        ensure!(
            Settings::from_yaml(&config)
                .map_err(anyhow::Error::msg)?
                .hsts
                .max_age
                == 60,
            "{config}"
        );

        self.cp.helm(&["uninstall", &release, "--namespace", &ns])?;
        let left = self.labelled(&release)?;
        ensure!(left.is_empty(), "left after uninstall: {left:?}");
        let history = self.cp.kubectl(&[
            "-n",
            &ns,
            "get",
            "secrets",
            "-l",
            &format!("owner=helm,name={release}"),
            "-o",
            "name",
        ])?;
        ensure!(history.trim().is_empty(), "release records left: {history}");
        Ok(())
    }

    /// manifests/portcullis.yaml is what manifests/render prints today, and the API server accepts it
    /// (the namespace enforcing the restricted Pod Security Standard, with no warning).
    fn static_manifest(&self) -> Result<()> {
        let rendered = {
            let out = Command::new(format!("{REPO}/manifests/render"))
                .env("HELM", self.cp.bin("helm"))
                .env(
                    "HELM_CACHE_HOME",
                    std::env::temp_dir().join("portcullis-helm-cache"),
                )
                .output()?;
            ensure!(
                out.status.success(),
                "manifests/render: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout)?
        };
        let committed = std::fs::read_to_string(format!("{REPO}/manifests/portcullis.yaml"))
            .unwrap_or_default();
        ensure!(
            committed == rendered,
            "manifests/portcullis.yaml is out of date with charts/portcullis; regenerate it with\n\n    \
             HELM=$(tests/e2e/control-plane bin-dir)/helm manifests/render > manifests/portcullis.yaml\n"
        );

        let objects = yaml_documents(&committed)?;
        let namespace = objects.first().context("empty manifest")?;
        ensure!(namespace["kind"] == "Namespace" && namespace["metadata"]["name"] == "portcullis");
        // The namespace for real (objects in it cannot be dry-run without it), the rest dry-run.
        self.cp.apply(&serde_json::to_string(namespace)?)?;
        let out = Command::new(self.cp.bin("kubectl"))
            .args([
                "apply",
                "--dry-run=server",
                "-f",
                "manifests/portcullis.yaml",
            ])
            .current_dir(REPO)
            .env("KUBECONFIG", &self.cp.kubeconfig)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "kubectl apply --dry-run=server: {stderr}"
        );
        ensure!(!stderr.contains("PodSecurity"), "{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            stdout.contains("deployment.apps/portcullis created (server dry run)"),
            "{stdout}"
        );
        Ok(())
    }
}

/// Runs every `helm` and `kubectl` command of README.md's "Install with Helm" section, verbatim, in a
/// control plane of its own (they install cluster-wide objects named `portcullis`).
fn readme_commands() -> Result<()> {
    let readme = std::fs::read_to_string(format!("{REPO}/README.md"))?;
    let section = readme
        .split("\n## Install with Helm")
        .nth(1)
        .context("README.md has no \"Install with Helm\" section")?;
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block && line.trim() == "```sh";
            continue;
        }
        let line = line.trim();
        if in_block && (line.starts_with("helm ") || line.starts_with("kubectl ")) {
            commands.push(line.to_string());
        }
    }
    ensure!(
        commands.iter().any(|c| c.starts_with("helm install"))
            && commands.iter().any(|c| c.starts_with("helm uninstall")),
        "{commands:?}"
    );
    let cp = ControlPlane::up("readme")?;
    let result = (|| -> Result<()> {
        let path = format!(
            "{}:{}",
            cp.bin("helm").parent().context("bin dir")?.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let home =
            std::env::temp_dir().join(format!("portcullis-readme-helm-{}", std::process::id()));
        for command in &commands {
            let out = Command::new("sh")
                .args(["-c", command])
                .current_dir(REPO)
                .env("PATH", &path)
                .env("KUBECONFIG", &cp.kubeconfig)
                .env("HELM_CACHE_HOME", home.join("cache"))
                .env("HELM_CONFIG_HOME", home.join("config"))
                .env("HELM_DATA_HOME", home.join("data"))
                .output()?;
            ensure!(
                out.status.success(),
                "README command failed: {command}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    })();
    cp.down();
    result
}

/// `gatewayAPI.installCRDs` for real, in a control plane of its own (the CRDs are cluster-wide, and a
/// release can only install them where nobody else did): the release installs the CRDs, a later
/// upgrade adds the GatewayClass (Helm cannot create both in one operation), and `helm uninstall`
/// removes the class but keeps the CRDs, and so every Gateway API object in the cluster.
fn gateway_crds_release() -> Result<()> {
    let cp = ControlPlane::up("gateway-crds")?;
    let result = (|| -> Result<()> {
        let ns = cp.namespace("chart-crds")?;
        let crds: Vec<String> = GATEWAY_CRDS
            .iter()
            .map(|p| format!("crd/{p}.gateway.networking.k8s.io"))
            .collect();
        let install = |verb: &str, values: &[&str]| -> Result<String> {
            let mut args = vec![verb, "gateways", CHART, "--namespace", &ns];
            for value in values {
                args.extend(["--set", value]);
            }
            cp.helm(&args)
        };
        install("install", &["gatewayAPI.installCRDs=true"])?;
        let mut wait = vec!["wait", "--for=condition=established", "--timeout=30s"];
        wait.extend(crds.iter().map(String::as_str));
        cp.kubectl(&wait)?;
        ensure!(
            cp.kubectl(&["get", "gatewayclasses", "-o", "name"])?
                .trim()
                .is_empty(),
            "a GatewayClass without gatewayAPI.gatewayClass.create"
        );

        install(
            "upgrade",
            &[
                "gatewayAPI.installCRDs=true",
                "gatewayAPI.gatewayClass.create=true",
                "gatewayAPI.gatewayClass.name=edge",
            ],
        )?;
        let controller = cp.kubectl(&[
            "get",
            "gatewayclass",
            "edge",
            "-o",
            "jsonpath={.spec.controllerName}",
        ])?;
        ensure!(
            controller == "portcullis.io/gateway-controller",
            "{controller}"
        );

        cp.helm(&["uninstall", "gateways", "--namespace", &ns])?;
        let classes = cp.kubectl(&["get", "gatewayclasses", "-o", "name"])?;
        ensure!(classes.trim().is_empty(), "left after uninstall: {classes}");
        let mut get = vec!["get", "-o", "name"];
        get.extend(crds.iter().map(String::as_str));
        let kept = cp.kubectl(&get)?;
        ensure!(
            kept.lines().count() == GATEWAY_CRDS.len(),
            "CRDs after uninstall: {kept}"
        );
        Ok(())
    })();
    cp.down();
    result
}
