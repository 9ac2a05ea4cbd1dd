//! `portcullis check`: what Portcullis would make of Ingresses written for ingress-nginx, before they
//! move. The objects go through the controller's own annotation parsers and [`build`], so the report
//! says what the controller would serve; the verdict and advice per annotation come from the
//! [`catalog`] that the migration guide is checked against.

mod render;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;

use crate::cli::{CheckArgs, CheckOutput};
use crate::model::annotations::{self, AnnotationError, NGINX_PREFIX, OWN_PREFIX, catalog};
use crate::model::build::{DEFAULT_CLASS_ANNOTATION, ingress_class};
use crate::model::gateway::status::Condition;
use crate::model::gateway::translate::{Objects, translate};
use crate::model::{
    BuildOptions, Config, Kind, ObjectRef, PathKind, Problem, ProblemKind, Snapshot, build,
};
use crate::settings::Settings;
use crate::source::{cluster, manifests};
use crate::tls::{self, CertStore};

/// How long reading a cluster may take before the check gives up (exit code 2).
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the check and prints the report; the exit code is the report's verdict.
pub fn main(args: &CheckArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis check: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            let text = match args.output {
                CheckOutput::Text => render::text(&report),
                CheckOutput::Json => {
                    serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
                }
            };
            print!("{text}");
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("portcullis check: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Reads the objects (files or cluster) and the ConfigMap, and checks them.
pub async fn run(args: &CheckArgs) -> anyhow::Result<Report> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let snapshot = match &args.manifests {
        Some(dir) => {
            let mut files = manifests::ManifestDir::new(dir);
            files
                .rescan()
                .with_context(|| format!("cannot read --manifests {}", dir.display()))?;
            files.snapshot()
        }
        None => {
            let client = cluster::client(args.kubeconfig.as_deref())
                .await
                .context("cannot connect to the cluster")?;
            let read = cluster::snapshot_once(client, args.namespace.as_deref());
            tokio::time::timeout(CLUSTER_TIMEOUT, read)
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "could not list Ingresses, IngressClasses, Services, EndpointSlices and TLS Secrets within {} s (is the API server reachable, and may this identity list them?)",
                        CLUSTER_TIMEOUT.as_secs()
                    )
                })??
        }
    };
    let configmap = match &args.configmap {
        Some(path) => Some(read_configmap(path)?),
        None => None,
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let base = args.manifests.as_deref();
    check(&snapshot, args, configmap.as_ref(), base, now)
}

/// The first ConfigMap of a YAML file (`kubectl get configmap -o yaml` output, or a manifest).
fn read_configmap(path: &Path) -> anyhow::Result<ConfigMap> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --configmap {}", path.display()))?;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(document)
            .with_context(|| format!("--configmap {} is not YAML", path.display()))?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap") {
            return serde_yaml::from_value(value).with_context(|| {
                format!("--configmap {} is not a valid ConfigMap", path.display())
            });
        }
    }
    anyhow::bail!("--configmap {} is not a ConfigMap", path.display())
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub ingress_class: String,
    /// `same` (exit code 0), `differs` (1) or `bad-input` (2).
    pub result: &'static str,
    pub ingresses: Vec<IngressReport>,
    /// Ingresses of other classes, left out.
    pub other_classes: usize,
    pub configmap: Vec<SettingReport>,
    /// Files or objects that could not be read: the report is incomplete.
    pub input_problems: Vec<String>,
    /// Problems of objects the checked Ingresses use (EndpointSlices, the default certificate).
    pub other_problems: Vec<ProblemReport>,
    /// Gateway API objects of Portcullis's GatewayClasses, with the conditions their status would
    /// have (addresses aside, which only the running controller assigns).
    pub gateway_api: Vec<GatewayApiReport>,
}

/// One GatewayClass, Gateway (with its listeners) or route parent, and its conditions.
#[derive(Debug, Serialize)]
pub struct GatewayApiReport {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    /// The listener or parent Gateway the conditions are about, if not the object itself.
    pub part: Option<String>,
    pub conditions: Vec<ConditionReport>,
}

#[derive(Debug, Serialize)]
pub struct ConditionReport {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Report {
    pub fn exit_code(&self) -> u8 {
        match self.result {
            "same" => 0,
            "differs" => 1,
            _ => 2,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct IngressReport {
    pub namespace: String,
    pub name: String,
    /// In manifest mode, the file it came from (relative to the directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// `same` or `differs`.
    pub result: &'static str,
    pub routes: Vec<RouteReport>,
    pub tls: Vec<TlsReport>,
    pub annotations: Vec<AnnotationReport>,
    /// Problems not tied to one route or TLS entry.
    pub problems: Vec<ProblemReport>,
}

/// One path of a rule, or the Ingress's default backend.
#[derive(Debug, Serialize)]
pub struct RouteReport {
    /// `*` for a rule without host.
    pub host: String,
    /// The path, or `(default backend)`.
    pub path: String,
    pub path_type: String,
    /// `namespace/service:port`, or what else the backend is.
    pub backend: String,
    /// Plain HTTP answers with a redirect to HTTPS; `None` when the route is not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirects_to_https: Option<bool>,
    pub problems: Vec<ProblemReport>,
}

#[derive(Debug, Serialize)]
pub struct TlsReport {
    pub secret: Option<String>,
    pub hosts: Vec<String>,
    /// The hosts the Secret's certificate is served for, with its expiry (UTC date).
    pub certificates: Vec<CertificateReport>,
    pub problems: Vec<ProblemReport>,
}

#[derive(Debug, Serialize)]
pub struct CertificateReport {
    pub host: String,
    pub not_after: String,
}

#[derive(Debug, Serialize)]
pub struct AnnotationReport {
    pub key: String,
    pub value: String,
    /// `same`, `differs`, `unsupported` or `invalid`.
    pub verdict: &'static str,
    /// How it differs, what to do instead, or why the value is invalid.
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct SettingReport {
    pub key: String,
    pub value: String,
    /// `differs` (set elsewhere in Portcullis) or `unsupported`.
    pub verdict: &'static str,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProblemReport {
    pub kind: &'static str,
    pub message: String,
    /// Whether this makes Portcullis behave unlike ingress-nginx. Missing Services and Secrets and
    /// certificate warnings behave the same in both.
    #[serde(skip)]
    differs: bool,
}

impl ProblemReport {
    fn new(problem: &Problem, message: &str) -> ProblemReport {
        use ProblemKind::*;
        let same_in_nginx = matches!(
            problem.kind,
            MissingService
                | MissingServicePort
                | MissingSecret
                | InvalidCertificate
                | KeyMismatch
                | CertificateHostMismatch
                | CertificateExpired
                | CertificateNotYetValid
                | CertificateIsCa
                | CertificateWithoutSan
                | CertificateChainOrder
                | CertificateChainUnrelated
                | CertificateKeyUsage
                | CertificateKeyType
        );
        ProblemReport {
            kind: problem.kind.as_str(),
            message: message.to_string(),
            differs: !same_in_nginx,
        }
    }
}

/// Checks the Ingresses of `args.ingress_class` in `snapshot`. `base` is the manifest directory, left
/// out of file names.
pub fn check(
    snapshot: &Snapshot,
    args: &CheckArgs,
    configmap: Option<&ConfigMap>,
    base: Option<&Path>,
    now: i64,
) -> anyhow::Result<Report> {
    let class = args.ingress_class.as_str();
    let default_class = snapshot.ingress_classes.iter().any(|c| {
        c.metadata.name.as_deref() == Some(class)
            && c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
    });
    // The Ingresses to migrate, handed to the translation as if they were already of its class.
    let mut selected = snapshot.clone();
    selected.ingress_classes.clear();
    selected.ingresses.retain(|i| {
        args.namespace
            .as_deref()
            .is_none_or(|ns| i.metadata.namespace.as_deref() == Some(ns))
    });
    let in_namespace = selected.ingresses.len();
    selected.ingresses.retain(|i| match ingress_class(i) {
        Some(c) => c == class,
        None => default_class,
    });
    let other_classes = in_namespace - selected.ingresses.len();
    for ingress in &mut selected.ingresses {
        Arc::make_mut(ingress)
            .spec
            .get_or_insert_with(Default::default)
            .ingress_class_name = Some(class.to_string());
    }

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let options = BuildOptions {
        ingress_class: class.to_string(),
        watch_without_class: false,
        default_cert: tls::generate_default_cert(&provider)?,
        settings: Arc::new(Settings::default()),
    };
    let config = build(&selected, &options, &mut CertStore::new(provider), now, 1);

    let relative = |file: &str| -> String {
        base.and_then(|b| Path::new(file).strip_prefix(b).ok())
            .map_or_else(|| file.to_string(), |p| p.display().to_string())
    };
    let input_problems: Vec<String> = snapshot
        .problems
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.file = p.file.as_deref().map(|f| relative(f).into());
            p.to_string()
        })
        .collect();

    let mut by_ingress: BTreeMap<ObjectRef, Vec<&Problem>> = BTreeMap::new();
    let mut other_problems = Vec::new();
    for p in config
        .problems
        .iter()
        .filter(|p| !snapshot.problems.contains(p))
    {
        match &p.object {
            Some(o) if o.kind == Kind::Ingress => by_ingress.entry(o.clone()).or_default().push(p),
            _ => other_problems.push(ProblemReport::new(p, &p.to_string())),
        }
    }

    let mut ingresses: Vec<IngressReport> = selected
        .ingresses
        .iter()
        .map(|ingress| {
            let object = ObjectRef::from_meta(Kind::Ingress, &ingress.metadata);
            let problems = by_ingress.remove(&object).unwrap_or_default();
            let file = snapshot.origins.get(&object).map(|f| relative(f));
            ingress_report(ingress, &object, file, problems, &config)
        })
        .collect();
    ingresses.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

    let configmap = configmap.map(settings_report).unwrap_or_default();
    let differs = ingresses.iter().any(|i| i.result != "same")
        || other_problems.iter().any(|p| p.differs)
        || configmap.iter().any(|s| s.verdict != "same");
    let result = match (input_problems.is_empty(), differs) {
        (false, _) => "bad-input",
        (true, true) => "differs",
        (true, false) => "same",
    };
    Ok(Report {
        ingress_class: class.to_string(),
        result,
        ingresses,
        other_classes,
        configmap,
        input_problems,
        other_problems,
        gateway_api: gateway_api_report(snapshot),
    })
}

/// The Gateway API objects of Portcullis's classes, through the controller's own translation.
fn gateway_api_report(snapshot: &Snapshot) -> Vec<GatewayApiReport> {
    let translation = translate(&Objects::of(snapshot));
    let conditions = |list: &[Condition]| -> Vec<ConditionReport> {
        list.iter()
            .map(|c| ConditionReport {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message.clone(),
            })
            .collect()
    };
    let status = &translation.status;
    let mut out = Vec::new();
    for (name, _, list) in &status.classes {
        out.push(GatewayApiReport {
            kind: "GatewayClass",
            namespace: String::new(),
            name: name.clone(),
            part: None,
            conditions: conditions(list),
        });
    }
    for gw in &status.gateways {
        let report = |part: Option<String>, list: &[Condition]| GatewayApiReport {
            kind: "Gateway",
            namespace: gw.gateway.namespace.clone(),
            name: gw.gateway.name.clone(),
            part,
            conditions: conditions(list),
        };
        out.push(report(None, &gw.conditions));
        for l in &gw.listeners {
            out.push(report(Some(format!("listener {}", l.name)), &l.conditions));
        }
    }
    for parent in &status.routes {
        let gateway = &parent.parent;
        let ns = gateway
            .namespace
            .as_deref()
            .unwrap_or(&parent.route.namespace);
        out.push(GatewayApiReport {
            kind: parent.kind,
            namespace: parent.route.namespace.clone(),
            name: parent.route.name.clone(),
            part: Some(format!("parent Gateway {ns}/{}", gateway.name)),
            conditions: conditions(&parent.conditions),
        });
    }
    out
}

fn ingress_report(
    ingress: &Ingress,
    object: &ObjectRef,
    file: Option<String>,
    problems: Vec<&Problem>,
    config: &Config,
) -> IngressReport {
    // Annotation problems are reported per annotation below, from the same parser.
    let mut rest: Vec<(&Problem, &str)> = problems
        .into_iter()
        .filter(|p| {
            !matches!(
                p.kind,
                ProblemKind::InvalidAnnotation | ProblemKind::UnsupportedAnnotation
            )
        })
        .map(|p| (p, p.message.as_str()))
        .collect();
    let (parsed, errors) = annotations::parse(ingress.metadata.annotations.as_ref());
    let spec = ingress.spec.as_ref();
    // Problems of rules that have no paths to show them on.
    let mut unplaced = Vec::new();
    let mut routes = Vec::new();
    for (r, rule) in spec
        .and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let host = rule.host.as_deref().filter(|h| !h.is_empty());
        let rule_problems = take(&mut rest, &format!("spec.rules[{r}]"));
        if rule.http.as_ref().is_none_or(|h| h.paths.is_empty()) {
            unplaced.extend(rule_problems.iter().cloned());
        }
        for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let mut problems = rule_problems.clone();
            problems.extend(take(&mut rest, &format!("spec.rules[{r}].http.paths[{p}]")));
            let path_str = path.path.clone().unwrap_or_else(|| "/".into());
            let served = problems.iter().all(|p| {
                p.kind != "invalid-rule"
                    && p.kind != "rule-conflict"
                    && p.kind != "unsupported-backend"
            });
            let regex = parsed.use_regex && path.path_type != "Exact";
            let redirects = (served && !regex)
                .then(|| redirect_of(config, object, host, &path.path_type, &path_str))
                .flatten();
            routes.push(RouteReport {
                host: host.unwrap_or("*").to_string(),
                path: path_str,
                path_type: path.path_type.clone(),
                backend: backend_label(&path.backend, &object.namespace),
                redirects_to_https: redirects,
                problems,
            });
        }
    }
    if let Some(default) = spec.and_then(|s| s.default_backend.as_ref()) {
        let problems = take(&mut rest, "spec.defaultBackend");
        let redirects = config
            .routes
            .lookup("default-backend.invalid", "/")
            .filter(|route| {
                route.ingress.namespace == object.namespace && route.ingress.name == object.name
            })
            .map(|route| route.https_redirect);
        routes.push(RouteReport {
            host: "*".into(),
            path: "(default backend)".into(),
            path_type: String::new(),
            backend: backend_label(default, &object.namespace),
            redirects_to_https: redirects,
            problems,
        });
    }

    let mut tls = Vec::new();
    for (i, entry) in spec
        .and_then(|s| s.tls.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut problems = take(&mut rest, &format!("spec.tls[{i}]"));
        let secret = entry
            .secret_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| format!("{}/{s}", object.namespace));
        let mut certificates = Vec::new();
        if let Some(secret) = &secret {
            let needle = format!("Secret {secret}");
            rest.retain(|(p, m)| {
                let mine = m.contains(&needle);
                if mine {
                    problems.push(ProblemReport::new(p, m));
                }
                !mine
            });
            let hosts: Vec<&str> = entry.hosts.iter().flatten().map(String::as_str).collect();
            for c in config.certificates.iter() {
                let for_entry =
                    hosts.is_empty() || hosts.iter().any(|h| h.eq_ignore_ascii_case(&c.host));
                if c.secret.to_string() == *secret && for_entry {
                    certificates.push(CertificateReport {
                        host: c.host.clone(),
                        not_after: date(c.not_after),
                    });
                }
            }
        }
        tls.push(TlsReport {
            secret,
            hosts: entry.hosts.clone().unwrap_or_default(),
            certificates,
            problems,
        });
    }

    let annotations = annotation_reports(ingress, &errors);
    let mut problems: Vec<ProblemReport> =
        rest.iter().map(|(p, m)| ProblemReport::new(p, m)).collect();
    problems.extend(unplaced);
    let differs = annotations.iter().any(|a| a.verdict != "same")
        || problems.iter().any(|p| p.differs)
        || routes.iter().flat_map(|r| &r.problems).any(|p| p.differs)
        || tls.iter().flat_map(|t| &t.problems).any(|p| p.differs);
    IngressReport {
        namespace: object.namespace.clone(),
        name: object.name.clone(),
        file,
        result: if differs { "differs" } else { "same" },
        routes,
        tls,
        annotations,
        problems,
    }
}

/// Takes the problems whose message starts with `at` (and `: `), without that prefix.
fn take(rest: &mut Vec<(&Problem, &str)>, at: &str) -> Vec<ProblemReport> {
    let mut taken = Vec::new();
    rest.retain(
        |(p, m)| match m.strip_prefix(at).and_then(|r| r.strip_prefix(": ")) {
            Some(message) => {
                taken.push(ProblemReport::new(p, message));
                false
            }
            None => true,
        },
    );
    taken
}

/// Whether the live route for this rule path (if this Ingress's) redirects plain HTTP to HTTPS.
fn redirect_of(
    config: &Config,
    object: &ObjectRef,
    host: Option<&str>,
    path_type: &str,
    path: &str,
) -> Option<bool> {
    let probe_host = match host {
        Some(h) => match h.strip_prefix("*.") {
            Some(suffix) => format!("wildcard-probe.{suffix}"),
            None => h.to_string(),
        },
        None => "any-host.invalid".to_string(),
    };
    let kind = if path_type == "Exact" {
        PathKind::Exact
    } else {
        PathKind::Prefix
    };
    let probe_path = match kind {
        PathKind::Prefix => path.trim_end_matches('/').to_string() + "/",
        PathKind::Exact => path.to_string(),
    };
    let route = config.routes.lookup(&probe_host, &probe_path)?;
    (route.ingress.namespace == object.namespace && route.ingress.name == object.name)
        .then_some(route.https_redirect)
}

fn backend_label(
    backend: &k8s_openapi::api::networking::v1::IngressBackend,
    namespace: &str,
) -> String {
    match (&backend.service, &backend.resource) {
        (Some(svc), _) => {
            let port = svc.port.as_ref();
            let port = port
                .and_then(|p| p.number.map(|n| n.to_string()))
                .or_else(|| port.and_then(|p| p.name.clone()))
                .unwrap_or_default();
            format!("{namespace}/{}:{port}", svc.name)
        }
        (None, Some(resource)) => format!("resource {} {}", resource.kind, resource.name),
        (None, None) => "none".into(),
    }
}

/// Every annotation under either prefix, in key order, with its verdict.
fn annotation_reports(ingress: &Ingress, errors: &[AnnotationError]) -> Vec<AnnotationReport> {
    let all = ingress.metadata.annotations.as_ref();
    let mut reports = Vec::new();
    for (key, value) in all.into_iter().flatten() {
        let (own, name) = match (key.strip_prefix(OWN_PREFIX), key.strip_prefix(NGINX_PREFIX)) {
            (Some(name), _) => (true, name),
            (None, Some(name)) => (false, name),
            (None, None) => continue,
        };
        let mut invalid = Vec::new();
        let mut unsupported = Vec::new();
        for e in errors {
            match e {
                AnnotationError::Invalid { key: k, reason } if k == key => {
                    invalid.push(reason.clone())
                }
                AnnotationError::Unsupported { key: k, hint } if k == key => {
                    unsupported.push(hint.to_string())
                }
                _ => {}
            }
        }
        let shadowed = !own && all.is_some_and(|a| a.contains_key(&format!("{OWN_PREFIX}{name}")));
        let entry = catalog::annotation(name);
        let (verdict, note) = if !invalid.is_empty() {
            ("invalid", invalid.join("; "))
        } else if !unsupported.is_empty() {
            ("unsupported", unsupported.join("; "))
        } else if shadowed {
            ("differs", format!("{OWN_PREFIX}{name} is set too and wins"))
        } else {
            match entry {
                Some(e) if e.verdict == catalog::Verdict::Same && !own => {
                    ("same", e.note.to_string())
                }
                Some(e) if !own => ("differs", e.note.to_string()),
                _ => (
                    "differs",
                    "a Portcullis annotation, which ingress-nginx ignores".to_string(),
                ),
            }
        };
        reports.push(AnnotationReport {
            key: key.clone(),
            value: value.clone(),
            verdict,
            note,
        });
    }
    reports
}

/// Every key of an ingress-nginx ConfigMap, with where it lives in Portcullis.
fn settings_report(configmap: &ConfigMap) -> Vec<SettingReport> {
    configmap
        .data
        .iter()
        .flatten()
        .map(|(key, value)| {
            let (verdict, note) = match catalog::configmap_key(key) {
                Some(setting) => ("differs", format!("in Portcullis: {}", setting.here)),
                None => (
                    "unsupported",
                    "no equivalent in Portcullis (see docs/migrating-from-ingress-nginx.md)".into(),
                ),
            };
            SettingReport {
                key: key.clone(),
                value: value.clone(),
                verdict,
                note,
            }
        })
        .collect()
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
fn date(unix: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix)
        .map_or_else(|_| unix.to_string(), |t| t.strftime("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: ProblemKind, message: &str) -> Problem {
        Problem::object(ObjectRef::new(Kind::Ingress, "web", "app"), kind, message)
    }

    #[test]
    fn problems_go_to_the_rule_or_path_they_name() {
        let problems = [
            problem(ProblemKind::InvalidRule, "spec.rules[1]: host is invalid"),
            problem(ProblemKind::InvalidRule, "spec.rules[10]: host is invalid"),
            problem(
                ProblemKind::MissingService,
                "spec.rules[1].http.paths[0]: Service web/x does not exist; requests get 503",
            ),
        ];
        let mut rest: Vec<(&Problem, &str)> =
            problems.iter().map(|p| (p, p.message.as_str())).collect();
        let rule = take(&mut rest, "spec.rules[1]");
        assert_eq!(rule.len(), 1);
        assert_eq!(rule[0].message, "host is invalid");
        let path = take(&mut rest, "spec.rules[1].http.paths[0]");
        assert_eq!(path[0].kind, "missing-service");
        assert!(
            !path[0].differs,
            "a missing Service answers 503 under ingress-nginx too"
        );
        assert_eq!(rest.len(), 1);
        assert!(take(&mut rest, "spec.rules[10]")[0].differs);
    }
}
