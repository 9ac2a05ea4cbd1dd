//! `build()`: every object of one moment in, one [`Config`] out.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass, IngressRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rustls::sign::CertifiedKey;

use super::acme::{self, WantedCertificate};
use super::annotations::custom_errors::ErrorPages;
use super::annotations::{self, AnnotationError};
use super::matching::{HostKey, PathKind, RouteTable};
use super::passthrough::PassthroughTable;
use super::validation::{check_host, check_path};
use super::{
    Backend, CertificateInfo, Config, Kind, NamespacedName, ObjectRef, Policy, Problem,
    ProblemKind, Route, Snapshot,
};
use crate::settings::Settings;
use crate::tls::{CertStore, CertTable, CertWarning, LoadedCert};
use crate::vocab::hosts::host_covered_by;

/// The IngressClass `spec.controller` value that names Portcullis.
pub const CONTROLLER_NAME: &str = "portcullis.io/ingress-controller";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Settings of the translation that come from the command line, not from objects.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The IngressClass name handled (`--ingress-class`).
    pub ingress_class: String,
    /// Also take Ingresses that name no class (`--watch-ingress-without-class`).
    pub watch_without_class: bool,
    /// Served for unknown server names unless `settings.tls.default_certificate` names a usable Secret.
    pub default_cert: Arc<CertifiedKey>,
    /// Global policy (`--config`, with command-line overrides applied).
    pub settings: Arc<Settings>,
}

/// Translates all objects into one configuration. `now` (seconds since the Unix epoch) is only used to
/// report expired certificates; `certs` remembers parsed certificates and the last good one per Secret.
pub fn build(
    snapshot: &Snapshot,
    options: &BuildOptions,
    certs: &mut CertStore,
    now: i64,
    generation: u64,
) -> Config {
    build_traced(snapshot, options, certs, now, generation).0
}

/// [`build`], with what each Ingress contributed, for incremental builds.
pub(super) fn build_traced(
    snapshot: &Snapshot,
    options: &BuildOptions,
    certs: &mut CertStore,
    now: i64,
    generation: u64,
) -> (Config, Selection, Part) {
    let index = Index::new(snapshot);
    let selection = Selection::new(&index, options, &snapshot.origins);
    let ours: Vec<Arc<Ingress>> = snapshot
        .ingresses
        .iter()
        .filter(|i| selection.takes(i, options))
        .cloned()
        .collect();
    let mut part = translate(&index, &snapshot.origins, ours, options, certs, now);
    let mut used: HashSet<NamespacedName> = part.global.used_secrets.clone();
    for footprint in part.footprints.values() {
        used.extend(footprint.used_secrets.iter().cloned());
    }
    certs.retain(&used);

    let mut problems = snapshot.problems.clone();
    for problem in &mut problems {
        fill_file(problem, &snapshot.origins);
    }
    problems.extend(selection.problems.iter().cloned());
    problems.extend(part.global.problems.iter().cloned());
    for footprint in part.footprints.values() {
        problems.extend(footprint.problems.iter().cloned());
    }
    problems.sort();
    problems.dedup();
    let config = Config {
        generation,
        routes: Arc::new(std::mem::take(&mut part.routes)),
        certs: Arc::new(part.cert_table.clone()),
        ingresses: part.ingresses.iter().map(|i| name_of(i)).collect(),
        certificates: part.certificates.clone().into(),
        problems,
        settings: options.settings.clone(),
        acme: part.acme.clone(),
        passthrough: Arc::new(part.passthrough.clone()),
        gateway: Arc::default(),
    };
    (config, selection, part)
}

/// Which Ingresses are ours, decided by the IngressClass objects and the command line.
#[derive(Debug, Clone)]
pub(super) struct Selection {
    class_is_ours: bool,
    take_classless: bool,
    /// About our IngressClass, when it names another controller.
    pub problems: Vec<Problem>,
}

impl Selection {
    fn new(
        index: &Index<'_>,
        options: &BuildOptions,
        origins: &HashMap<ObjectRef, Arc<str>>,
    ) -> Selection {
        let our_class = index.classes.get(options.ingress_class.as_str()).copied();
        let mut class_is_ours = true;
        let mut class_is_default = false;
        let mut problems = Vec::new();
        if let Some(class) = our_class {
            let controller = class
                .spec
                .as_ref()
                .and_then(|s| s.controller.as_deref())
                .unwrap_or("");
            if controller != CONTROLLER_NAME {
                class_is_ours = false;
                let mut problem = Problem::object(
                    ObjectRef::from_meta(Kind::IngressClass, &class.metadata),
                    ProblemKind::ForeignIngressClass,
                    format!(
                        "IngressClass {} has spec.controller {controller:?}, not {CONTROLLER_NAME:?}; its Ingresses are not served",
                        options.ingress_class
                    ),
                );
                fill_file(&mut problem, origins);
                problems.push(problem);
            }
            class_is_default = class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
        }
        Selection {
            class_is_ours,
            take_classless: class_is_ours && (options.watch_without_class || class_is_default),
            problems,
        }
    }

    /// Whether this Ingress is served by Portcullis.
    pub fn takes(&self, ingress: &Ingress, options: &BuildOptions) -> bool {
        match ingress_class(ingress) {
            Some(class) => self.class_is_ours && class == options.ingress_class,
            None => self.take_classless,
        }
    }
}

/// Ingresses are translated oldest first (creation time, then namespace/name), so that conflicts are
/// always decided the same way.
pub(super) type Age = (bool, Option<Time>, String, Option<String>);

pub(super) fn age_of(i: &Ingress) -> Age {
    (
        i.metadata.creation_timestamp.is_none(),
        i.metadata.creation_timestamp.clone(),
        namespace_of(&i.metadata).to_string(),
        i.metadata.name.clone(),
    )
}

/// A host (or the rules without one) or an ACME Secret that Ingresses compete for: Ingresses that
/// share none are translated independently, so only the ones sharing one must be translated together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Claim {
    Host(HostKey),
    AcmeSecret(NamespacedName),
}

/// An object an Ingress's translation looked up, present or not: when it changes, so may the result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Dep {
    Secret(NamespacedName),
    Service(NamespacedName),
    /// The EndpointSlices of this Service.
    Slices(NamespacedName),
}

/// What one Ingress contributed to a translation, so that it can be taken out again.
#[derive(Debug, Clone, Default)]
pub(super) struct Footprint {
    pub claims: HashSet<Claim>,
    pub deps: HashSet<Dep>,
    /// Its problems, including those about objects it uses (an EndpointSlice's bad addresses).
    pub problems: Vec<Problem>,
    pub certificates: Vec<CertificateInfo>,
    pub acme: Vec<WantedCertificate>,
    /// Secrets whose certificate it loaded.
    pub used_secrets: HashSet<NamespacedName>,
    /// Times (Unix seconds) at which a certificate it loaded becomes valid or expired, so its problems
    /// change.
    pub boundaries: Vec<i64>,
}

/// The translation of some of the Ingresses: all of them, or those sharing claims with a change.
#[derive(Debug)]
pub(super) struct Part {
    /// The Ingresses translated, oldest first.
    pub ingresses: Vec<Arc<Ingress>>,
    pub routes: RouteTable<Arc<Route>>,
    pub cert_table: CertTable,
    pub passthrough: PassthroughTable,
    /// By Secret, then host.
    pub certificates: Vec<CertificateInfo>,
    pub acme: Vec<WantedCertificate>,
    pub footprints: HashMap<NamespacedName, Footprint>,
    /// What no Ingress caused: the default certificate's Secret.
    pub global: Footprint,
}

/// Translates `ingresses` (all ours) against every other object of the index.
pub(super) fn translate(
    index: &Index<'_>,
    origins: &HashMap<ObjectRef, Arc<str>>,
    mut ingresses: Vec<Arc<Ingress>>,
    options: &BuildOptions,
    certs: &mut CertStore,
    now: i64,
) -> Part {
    ingresses.sort_by_cached_key(|i| age_of(i));
    let mut b = Builder {
        index,
        certs,
        now,
        problems: Vec::new(),
        routes: RouteTable::default(),
        cert_table: CertTable::new(options.default_cert.clone()),
        tls_owners: HashMap::new(),
        certificates: Vec::new(),
        backends: HashMap::new(),
        settings: &options.settings,
        www_aliases: Vec::new(),
        client_cert_conflicts: HashSet::new(),
        client_cert_policies: HashMap::new(),
        acme: Vec::new(),
        passthrough: PassthroughTable::default(),
        server_aliases: Vec::new(),
        footprint: Footprint::default(),
        footprints: HashMap::new(),
    };
    b.default_certificate(options);
    let mut global = std::mem::take(&mut b.footprint);
    global.problems = std::mem::take(&mut b.problems);

    // Canaries attach to the routes of primaries, so they come after all of them.
    let (canaries, primaries): (Vec<_>, Vec<_>) = ingresses
        .iter()
        .cloned()
        .partition(|i| annotations::canary::marked(i.metadata.annotations.as_ref()));
    let (conflicts, problems) = client_cert::host_conflicts(&primaries);
    b.client_cert_conflicts = conflicts;
    b.problems.extend(problems);
    for ingress in &primaries {
        let start = b.begin();
        b.ingress(ingress);
        b.end(name_of(ingress), start);
    }
    for ingress in &canaries {
        let start = b.begin();
        b.canary_ingress(ingress);
        b.end(name_of(ingress), start);
    }
    // After the canaries, so that an alias gets its host's canary too.
    b.server_aliases();
    b.www_aliases();
    b.passthrough_conflicts();

    let Builder {
        problems,
        routes,
        cert_table,
        mut certificates,
        acme: mut wanted,
        passthrough,
        mut footprints,
        ..
    } = b;
    // Two Ingresses naming the same Secret: the older one's entry is ordered.
    let mut seen = HashSet::new();
    wanted.retain(|w| seen.insert(w.secret.clone()));
    for w in &wanted {
        if let Some(f) = footprints.get_mut(&w.ingress) {
            f.acme.push(w.clone());
        }
    }
    // Problems about an Ingress are its own, whichever step found them.
    for problem in problems {
        let ingress = problem
            .object
            .as_ref()
            .filter(|o| o.kind == Kind::Ingress)
            .and_then(|o| footprints.get_mut(&NamespacedName::new(&o.namespace, &o.name)));
        match ingress {
            Some(footprint) => footprint.problems.push(problem),
            // Found outside any Ingress's step (none are today): kept, never dropped.
            None if problem
                .object
                .as_ref()
                .is_some_and(|o| o.kind == Kind::Ingress) =>
            {
                global.problems.push(problem)
            }
            // About another object, found during an Ingress's step: already that Ingress's.
            None => {}
        }
    }
    for footprint in footprints.values_mut().chain([&mut global]) {
        for problem in &mut footprint.problems {
            fill_file(problem, origins);
        }
    }
    certificates.sort_by(|a, b| (&a.secret, &a.host).cmp(&(&b.secret, &b.host)));
    Part {
        ingresses,
        routes,
        cert_table,
        passthrough,
        certificates,
        acme: wanted,
        footprints,
        global,
    }
}

/// In manifest mode, names the file of the object a problem is about.
pub(super) fn fill_file(problem: &mut Problem, origins: &HashMap<ObjectRef, Arc<str>>) {
    if problem.file.is_none() {
        problem.file = problem
            .object
            .as_ref()
            .and_then(|o| origins.get(o).cloned());
    }
}

pub(super) fn name_of(ingress: &Ingress) -> NamespacedName {
    key_of(&ingress.metadata)
}

/// Any object's `namespace/name`, its namespace as [`namespace_of`] reads it.
pub(super) fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> NamespacedName {
    NamespacedName::new(namespace_of(meta), meta.name.clone().unwrap_or_default())
}

/// Objects without a namespace (common in hand-written manifests) live in `default`, as `kubectl apply` does.
pub(super) fn namespace_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &str {
    meta.namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or("default")
}

/// Lookups by `namespace/name` over the snapshot, noting what the current Ingress looked up.
pub(super) struct Index<'a> {
    services: foldhash::HashMap<(&'a str, &'a str), &'a Service>,
    secrets: foldhash::HashMap<(&'a str, &'a str), &'a Secret>,
    /// Slices by namespace and the Service they belong to.
    slices: foldhash::HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    classes: HashMap<&'a str, &'a IngressClass>,
    looked_up: RefCell<HashSet<Dep>>,
}

impl<'a> Index<'a> {
    pub(super) fn new(s: &'a Snapshot) -> Self {
        let key = |m: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (namespace_of(m), m.name.as_deref().unwrap_or(""))
        };
        let mut slices: foldhash::HashMap<_, Vec<_>> = foldhash::HashMap::default();
        for slice in &s.endpoint_slices {
            if let Some(svc) = service_of_slice(slice) {
                slices
                    .entry((namespace_of(&slice.metadata), svc))
                    .or_default()
                    .push(slice.as_ref());
            }
        }
        Index {
            services: s
                .services
                .iter()
                .map(|o| (key(&o.metadata), o.as_ref()))
                .collect(),
            secrets: s
                .secrets
                .iter()
                .map(|o| (key(&o.metadata), o.as_ref()))
                .collect(),
            slices,
            classes: s
                .ingress_classes
                .iter()
                .filter_map(|c| Some((c.metadata.name.as_deref()?, c.as_ref())))
                .collect(),
            looked_up: RefCell::default(),
        }
    }

    fn note(&self, dep: Dep) {
        self.looked_up.borrow_mut().insert(dep);
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.note(Dep::Secret(NamespacedName::new(namespace, name)));
        self.secrets.get(&(namespace, name)).copied()
    }

    fn service(&self, id: &NamespacedName) -> Option<&'a Service> {
        self.note(Dep::Service(id.clone()));
        self.services
            .get(&(id.namespace.as_str(), id.name.as_str()))
            .copied()
    }

    fn slices(&self, service: &NamespacedName) -> Vec<&'a EndpointSlice> {
        self.note(Dep::Slices(service.clone()));
        self.slices
            .get(&(service.namespace.as_str(), service.name.as_str()))
            .cloned()
            .unwrap_or_default()
    }

    fn take_looked_up(&self) -> HashSet<Dep> {
        std::mem::take(&mut self.looked_up.borrow_mut())
    }
}

/// The Service an EndpointSlice belongs to (its `kubernetes.io/service-name` label).
pub(super) fn service_of_slice(slice: &EndpointSlice) -> Option<&str> {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .map(String::as_str)
}

struct Builder<'a> {
    index: &'a Index<'a>,
    certs: &'a mut CertStore,
    now: i64,
    problems: Vec<Problem>,
    routes: RouteTable<Arc<Route>>,
    cert_table: CertTable,
    /// TLS host → the Secret whose certificate serves it, to report conflicts.
    tls_owners: HashMap<String, NamespacedName>,
    certificates: Vec<CertificateInfo>,
    /// Backends by Service and port, with the problems about EndpointSlices found making each.
    backends: HashMap<(NamespacedName, String), (Arc<Backend>, Vec<Problem>)>,
    settings: &'a Settings,
    /// Hosts of `from-to-www-redirect` Ingresses, with what their alias route needs.
    www_aliases: Vec<(Box<str>, NamespacedName, Arc<Policy>, bool)>,
    /// Hosts whose Ingresses disagree on client certificates (see `client_cert`).
    client_cert_conflicts: HashSet<HostKey>,
    /// Resolved client-certificate settings of this build, so Ingresses sharing a CA parse it once.
    client_cert_policies: client_cert::Resolved,
    acme: Vec<WantedCertificate>,
    passthrough: PassthroughTable,
    server_aliases: Vec<server_alias::PendingAliases>,
    /// What the Ingress being translated contributes.
    footprint: Footprint,
    footprints: HashMap<NamespacedName, Footprint>,
}

impl Builder<'_> {
    fn default_certificate(&mut self, options: &BuildOptions) {
        let Some(id) = &options.settings.tls.default_certificate else {
            return;
        };
        let object = ObjectRef::new(Kind::Secret, &id.namespace, &id.name);
        // Problems with the Secret are reported by `load_secret`; the generated certificate stays otherwise.
        if let Some(cert) = self.load_secret(id, &object) {
            self.cert_table = CertTable::new(cert.key.clone());
        }
    }

    /// Starts an Ingress's step: what is looked up and found from here on is its own.
    fn begin(&mut self) -> usize {
        self.index.take_looked_up();
        self.problems.len()
    }

    fn end(&mut self, id: NamespacedName, start: usize) {
        let mut footprint = std::mem::take(&mut self.footprint);
        footprint.deps = self.index.take_looked_up();
        let about_others = self.problems[start..]
            .iter()
            .filter(|p| p.object.as_ref().is_none_or(|o| o.kind != Kind::Ingress));
        footprint.problems.extend(about_others.cloned());
        self.footprints.insert(id, footprint);
    }

    fn claim(&mut self, host: HostKey) {
        self.footprint.claims.insert(Claim::Host(host));
    }

    /// Every rule's host as written, valid or not (client-certificate settings are compared across
    /// them all), and the rules without host for a default backend.
    fn claim_rule_hosts(&mut self, ingress: &Ingress) {
        let spec = ingress.spec.as_ref();
        for rule in spec.and_then(|s| s.rules.as_ref()).into_iter().flatten() {
            self.claim(HostKey::from_rule_host(rule.host.as_deref()));
        }
        if spec.is_some_and(|s| s.default_backend.is_some()) {
            self.claim(HostKey::Any);
        }
    }

    fn ingress(&mut self, ingress: &Ingress) {
        let id = name_of(ingress);
        let object = ObjectRef::new(Kind::Ingress, &id.namespace, &id.name);
        self.claim_rule_hosts(ingress);
        let (annotations, errors) = annotations::parse(ingress.metadata.annotations.as_ref());
        if annotations.ssl_passthrough && self.passthrough(ingress, &id, &object) {
            return;
        }
        self.report_annotation_errors(&object, errors);
        let Some(spec) = &ingress.spec else {
            self.problems.push(Problem::object(
                object,
                ProblemKind::InvalidObject,
                "has no spec",
            ));
            return;
        };
        let mut policy = Policy::new(&annotations, self.settings);
        if let Some(auth) = &annotations.basic_auth {
            policy.basic_auth = Some(self.basic_auth(&object, &id.namespace, auth));
        }
        if let Some(tls) = &annotations.client_cert {
            policy.client_cert = Some(self.client_cert(&object, &id.namespace, tls));
        }
        if let Some(ssl) = &annotations.proxy_ssl {
            policy.upstream.backend_tls = self.proxy_ssl(&object, &id.namespace, ssl);
        }
        let fallback = annotations
            .default_backend
            .as_deref()
            .and_then(|service| self.first_port_backend(&object, &id.namespace, service));
        policy.error_pages = annotations.custom_errors.as_ref().map(|e| ErrorPages {
            codes: e.codes.clone(),
            backend: fallback.clone(),
        });
        let policy = Arc::new(policy);

        if let Some(aliases) = &annotations.server_alias {
            for alias in aliases {
                self.claim(HostKey::from_rule_host(Some(alias)));
            }
            let rules = spec.rules.iter().flatten();
            self.server_aliases.push(server_alias::PendingAliases {
                object: object.clone(),
                host: rules
                    .filter_map(|r| r.host.as_deref())
                    .find(|h| !h.is_empty() && !h.starts_with("*.") && check_host(h).is_ok())
                    .map(|h| h.to_ascii_lowercase().into()),
                aliases: aliases.clone(),
            });
        }
        // TLS hosts first: they decide which rules redirect to HTTPS.
        let mut tls_hosts: Vec<String> = Vec::new();
        for (i, tls) in spec.tls.iter().flatten().enumerate() {
            let mut hosts = Vec::new();
            for host in tls.hosts.iter().flatten() {
                match check_host(host) {
                    Ok(()) => {
                        self.claim(HostKey::from_rule_host(Some(host)));
                        hosts.push(host.to_ascii_lowercase());
                    }
                    Err(e) => self.problems.push(Problem::object(
                        object.clone(),
                        ProblemKind::InvalidRule,
                        format!("spec.tls[{i}]: {e}"),
                    )),
                }
            }
            if let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) {
                // Until ACME has issued it, the entry's hosts get the default certificate, unreported.
                let awaiting_acme = annotations.acme.as_ref().is_some_and(|a| {
                    let existing = self.index.secret(&id.namespace, secret);
                    let secret = NamespacedName::new(&id.namespace, secret);
                    let settings = &self.settings.acme;
                    let at = format!("spec.tls[{i}]");
                    match acme::resolve(a, settings, &object, &at, secret, &hosts, existing) {
                        Ok(wanted) => {
                            self.footprint
                                .claims
                                .insert(Claim::AcmeSecret(wanted.secret.clone()));
                            self.acme.push(wanted);
                            existing.is_none()
                        }
                        Err(problem) => {
                            self.problems.push(problem);
                            false
                        }
                    }
                });
                if !awaiting_acme {
                    self.tls_certificate(&object, &id.namespace, secret, &hosts);
                }
            }
            tls_hosts.extend(hosts);
        }
        let covered_by_tls = |host: &HostKey| match host {
            HostKey::Exact(h) => tls_hosts.iter().any(|t| host_covered_by(h, t)),
            HostKey::Wildcard(suffix) => tls_hosts
                .iter()
                .any(|t| t.strip_prefix("*.") == Some(suffix.as_ref())),
            HostKey::Any => false,
        };

        for (r, rule) in spec.rules.iter().flatten().enumerate() {
            let Some(rule_host) = self.rule_host(&object, r, rule) else {
                continue;
            };
            let host = HostKey::from_rule_host(rule_host);
            let https_redirect = annotations.force_ssl_redirect
                || (annotations.ssl_redirect && covered_by_tls(&host));
            let host_label: Option<Box<str>> = rule_host.map(|h| h.to_ascii_lowercase().into());
            if annotations.from_to_www_redirect
                && let HostKey::Exact(h) = &host
            {
                self.claim(HostKey::Exact(www_alias_of(h).into()));
                self.www_aliases
                    .push((h.clone(), id.clone(), policy.clone(), https_redirect));
            }
            for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let at = format!("spec.rules[{r}].http.paths[{p}]");
                let kind = match path.path_type.as_str() {
                    "Exact" => PathKind::Exact,
                    "Prefix" | "ImplementationSpecific" => PathKind::Prefix,
                    other => {
                        self.problems.push(Problem::object(
                            object.clone(),
                            ProblemKind::InvalidRule,
                            format!("{at}: pathType {other:?} is not Exact, Prefix or ImplementationSpecific"),
                        ));
                        continue;
                    }
                };
                // As the API server: only ImplementationSpecific may leave the path out.
                let path_str = match path.path.as_deref().filter(|p| !p.is_empty()) {
                    Some(p) => p,
                    None if path.path_type == "ImplementationSpecific" => "/",
                    None => {
                        self.problems.push(Problem::object(
                            object.clone(),
                            ProblemKind::InvalidRule,
                            format!("{at}: path is required for pathType {}", path.path_type),
                        ));
                        continue;
                    }
                };
                let regex = kind == PathKind::Prefix && annotations.use_regex;
                let checked = if regex {
                    compile_path_regex(path_str).map(Some)
                } else {
                    check_path(path_str).map(|()| None)
                };
                let path_regex = match checked {
                    Ok(r) => r,
                    Err(e) => {
                        self.problems.push(Problem::object(
                            object.clone(),
                            ProblemKind::InvalidRule,
                            format!("{at}: {e}"),
                        ));
                        continue;
                    }
                };
                let Some(backend) = self.backend(&object, &id.namespace, &path.backend, &at) else {
                    continue;
                };
                let backend = self.service_upstream(&object, backend, annotations.service_upstream);
                let route = Arc::new(Route {
                    ingress: id.clone(),
                    host: host_label.clone(),
                    backend,
                    fallback: fallback.clone(),
                    https_redirect,
                    redirect_host: None,
                    path_regex: path_regex.clone(),
                    policy: self.policy_for(&host, &policy),
                    // Regex paths are no cookie paths; ingress-nginx wants session-cookie-path there.
                    cookie_path: if regex { "/" } else { path_str }.into(),
                    canary: None,
                });
                let inserted = match path_regex {
                    Some(re) => self.routes.insert_regex(&host, re, route),
                    None => self.routes.insert(&host, kind, path_str, route),
                };
                if let Err((_, winner)) = inserted {
                    let message = format!(
                        "{at}: host {:?} path {path_str:?} ({}) is already served by the older Ingress {}; this rule is ignored",
                        rule_host.unwrap_or("*"),
                        path.path_type,
                        winner.ingress
                    );
                    self.problems.push(Problem::object(
                        object.clone(),
                        ProblemKind::RuleConflict,
                        message,
                    ));
                }
            }
        }

        if let Some(default) = &spec.default_backend
            && let Some(backend) =
                self.backend(&object, &id.namespace, default, "spec.defaultBackend")
        {
            let backend = self.service_upstream(&object, backend, annotations.service_upstream);
            let route = Arc::new(Route {
                ingress: id.clone(),
                host: None,
                backend,
                fallback,
                https_redirect: annotations.force_ssl_redirect,
                redirect_host: None,
                path_regex: None,
                policy: self.policy_for(&HostKey::Any, &policy),
                cookie_path: "/".into(),
                canary: None,
            });
            if let Err((_, winner)) = self.routes.set_default(route) {
                let message = format!(
                    "spec.defaultBackend is ignored: the older Ingress {} already provides the default backend",
                    winner.ingress
                );
                self.problems
                    .push(Problem::object(object, ProblemKind::RuleConflict, message));
            }
        }
    }

    /// The Ingress's annotations, with what cannot be honoured reported.
    fn annotations(
        &mut self,
        object: &ObjectRef,
        raw: Option<&BTreeMap<String, String>>,
    ) -> annotations::IngressAnnotations {
        let (annotations, errors) = annotations::parse(raw);
        self.report_annotation_errors(object, errors);
        annotations
    }

    /// The host of `spec.rules[r]` (`Some(None)` for a rule without one); `None`, reported, when it is
    /// not a valid host name.
    fn rule_host<'r>(
        &mut self,
        object: &ObjectRef,
        r: usize,
        rule: &'r IngressRule,
    ) -> Option<Option<&'r str>> {
        let rule_host = rule.host.as_deref().filter(|h| !h.is_empty());
        if let Some(host) = rule_host
            && let Err(e) = check_host(host)
        {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::InvalidRule,
                format!("spec.rules[{r}]: {e}"),
            ));
            return None;
        }
        Some(rule_host)
    }

    fn report_annotation_errors(&mut self, object: &ObjectRef, errors: Vec<AnnotationError>) {
        for e in errors {
            let kind = match e {
                AnnotationError::Invalid { .. } => ProblemKind::InvalidAnnotation,
                AnnotationError::Unsupported { .. } => ProblemKind::UnsupportedAnnotation,
            };
            self.problems
                .push(Problem::object(object.clone(), kind, e.to_string()));
        }
    }

    /// `from-to-www-redirect`: `www.example.com` redirects to `example.com` (or the other way round)
    /// unless some Ingress has rules for it. Done after every Ingress, so real rules always win.
    fn www_aliases(&mut self) {
        for (host, ingress, policy, https_redirect) in std::mem::take(&mut self.www_aliases) {
            let alias = www_alias_of(&host);
            if self.routes.has_exact_host(&alias) {
                continue;
            }
            let route = Arc::new(Route {
                ingress,
                host: Some(alias.clone().into()),
                backend: Arc::new(Backend::new(
                    NamespacedName::new("", ""),
                    String::new(),
                    Vec::new(),
                )),
                fallback: None,
                https_redirect,
                redirect_host: Some(host),
                path_regex: None,
                policy,
                cookie_path: "/".into(),
                canary: None,
            });
            // A second Ingress asking for the same alias keeps the first one; nothing to report.
            let _ = self
                .routes
                .insert(&HostKey::Exact(alias.into()), PathKind::Prefix, "/", route);
        }
    }

    /// Basic auth resolved against its Secret; every problem is reported and fails closed.
    fn basic_auth(
        &mut self,
        object: &ObjectRef,
        namespace: &str,
        auth: &annotations::basic_auth::BasicAuthAnnotation,
    ) -> annotations::basic_auth::BasicAuthPolicy {
        use annotations::basic_auth::{ResolveError, resolve};
        let index = self.index;
        let (policy, result) = resolve(auth, namespace, |ns, name| index.secret(ns, name));
        let problems = match result {
            Ok(warnings) => warnings
                .into_iter()
                .map(|w| (ProblemKind::InvalidAuthSecret, w))
                .collect(),
            Err(e @ ResolveError::Missing(_)) => vec![(ProblemKind::MissingSecret, e.to_string())],
            Err(e @ (ResolveError::Invalid(..) | ResolveError::OtherNamespace(_))) => {
                vec![(ProblemKind::InvalidAuthSecret, e.to_string())]
            }
        };
        for (kind, message) in problems {
            self.problems
                .push(Problem::object(object.clone(), kind, message));
        }
        policy
    }

    /// The `default-backend` annotation: a Service in the Ingress's namespace, on its first port.
    fn first_port_backend(
        &mut self,
        object: &ObjectRef,
        namespace: &str,
        service: &str,
    ) -> Option<Arc<Backend>> {
        let at = "annotation default-backend";
        let Some(svc) = self.index.service(&NamespacedName::new(namespace, service)) else {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::MissingService,
                format!("{at}: Service {namespace}/{service} does not exist"),
            ));
            return None;
        };
        let Some(port) = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.first())
            .map(|p| p.port)
        else {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::MissingServicePort,
                format!("{at}: Service {namespace}/{service} has no ports"),
            ));
            return None;
        };
        let backend = IngressBackend {
            service: Some(k8s_openapi::api::networking::v1::IngressServiceBackend {
                name: service.to_string(),
                port: Some(k8s_openapi::api::networking::v1::ServiceBackendPort {
                    number: Some(port),
                    name: None,
                }),
            }),
            resource: None,
        };
        self.backend(object, namespace, &backend, at)
    }

    /// Loads the Secret of one `spec.tls` entry and enters its certificate for each host it covers.
    fn tls_certificate(
        &mut self,
        object: &ObjectRef,
        namespace: &str,
        secret: &str,
        hosts: &[String],
    ) {
        let id = NamespacedName::new(namespace, secret);
        let Some(cert) = self.load_secret(&id, object) else {
            return;
        };
        // Without hosts, the certificate serves the names it was issued for.
        let names: Vec<String> = if hosts.is_empty() {
            cert.dns_names.clone()
        } else {
            hosts.to_vec()
        };
        for host in names {
            self.claim(HostKey::from_rule_host(Some(&host)));
            // Served anyway: the client's name-mismatch error then names the real problem.
            if !cert.covers(&host) {
                self.problems.push(Problem::object(
                    object.clone(),
                    ProblemKind::CertificateHostMismatch,
                    format!(
                        "the certificate in Secret {id} is not valid for TLS host {host:?} (it covers {:?}); it is served for it anyway, and clients will refuse it",
                        cert.dns_names
                    ),
                ));
            }
            match self.tls_owners.get(&host) {
                Some(owner) if owner != &id => self.problems.push(Problem::object(
                    object.clone(),
                    ProblemKind::TlsHostConflict,
                    format!("TLS host {host:?} is already served with Secret {owner} by an older Ingress; Secret {id} is not used for it"),
                )),
                Some(_) => {}
                None => {
                    self.cert_table.insert(&host, cert.key.clone());
                    self.tls_owners.insert(host.clone(), id.clone());
                    let info = CertificateInfo {
                        secret: id.clone(),
                        host,
                        not_before: cert.not_before,
                        not_after: cert.not_after,
                        fingerprint: cert.fingerprint.clone(),
                    };
                    self.footprint.certificates.push(info.clone());
                    self.certificates.push(info);
                }
            }
        }
    }

    /// The certificate of a Secret (its last good one if the current content is bad), reporting problems
    /// against `object`, the object that needs it.
    fn load_secret(&mut self, id: &NamespacedName, object: &ObjectRef) -> Option<Arc<LoadedCert>> {
        let Some(secret) = self.index.secret(&id.namespace, &id.name) else {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::MissingSecret,
                format!("Secret {id} does not exist; the default certificate is served instead"),
            ));
            return None;
        };
        self.footprint.used_secrets.insert(id.clone());
        let load = self.certs.load(id, secret);
        if let Some(error) = &load.error {
            let kind = match error {
                crate::tls::CertError::KeyMismatch => ProblemKind::KeyMismatch,
                _ => ProblemKind::InvalidCertificate,
            };
            let consequence = if load.cert.is_some() {
                "the last good certificate stays in use"
            } else {
                "the default certificate is served instead"
            };
            self.problems.push(Problem::object(
                object.clone(),
                kind,
                format!("Secret {id}: {error}; {consequence}"),
            ));
        }
        let cert = load.cert?;
        self.footprint
            .boundaries
            .extend([cert.not_before, cert.not_after.saturating_add(1)]);
        for warning in &cert.warnings {
            let kind = match warning {
                CertWarning::CaCertificate => ProblemKind::CertificateIsCa,
                CertWarning::NoSubjectAltName => ProblemKind::CertificateWithoutSan,
                CertWarning::ChainOrder => ProblemKind::CertificateChainOrder,
                CertWarning::UnrelatedCertificates(_) => ProblemKind::CertificateChainUnrelated,
                CertWarning::NoServerAuth | CertWarning::NoDigitalSignature => {
                    ProblemKind::CertificateKeyUsage
                }
                CertWarning::Ed25519Key => ProblemKind::CertificateKeyType,
            };
            self.problems.push(Problem::object(
                object.clone(),
                kind,
                format!("Secret {id}: {warning}; the certificate is served"),
            ));
        }
        if self.now > cert.not_after {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::CertificateExpired,
                format!(
                    "the certificate in Secret {id} expired at {} (Unix time); it is served anyway",
                    cert.not_after
                ),
            ));
        } else if self.now < cert.not_before {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::CertificateNotYetValid,
                format!(
                    "the certificate in Secret {id} is not valid before {} (Unix time); it is served anyway",
                    cert.not_before
                ),
            ));
        }
        Some(cert)
    }

    /// Resolves an Ingress backend to a Service port and its ready endpoints. A missing Service or port
    /// still yields a backend (with no endpoints, so requests get 503) plus a problem; a backend that
    /// can never work (a resource backend, no port) yields `None` and the rule is skipped.
    fn backend(
        &mut self,
        object: &ObjectRef,
        namespace: &str,
        backend: &IngressBackend,
        at: &str,
    ) -> Option<Arc<Backend>> {
        let Some(svc) = &backend.service else {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::UnsupportedBackend,
                format!("{at}: only Service backends are supported (resource backends are not)"),
            ));
            return None;
        };
        let port = svc.port.as_ref();
        let port_label = match (
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_deref()),
        ) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) if !name.is_empty() => name.to_string(),
            _ => {
                self.problems.push(Problem::object(
                    object.clone(),
                    ProblemKind::InvalidRule,
                    format!("{at}: service {:?} needs a port number or name", svc.name),
                ));
                return None;
            }
        };
        let id = NamespacedName::new(namespace, &svc.name);
        let cache_key = (id.clone(), port_label.clone());
        if let Some((found, about_slices)) = self.backends.get(&cache_key) {
            let (found, about_slices) = (found.clone(), about_slices.clone());
            if found.endpoints.is_empty() {
                // Re-derive the reason for this Ingress too, so each Ingress gets its own problem.
                self.endpoints(object, &id, &port_label, at);
            } else {
                // This Ingress depends on the same objects, and is told the same about them.
                self.index.service(&id);
                self.index.slices(&id);
                self.problems.extend(about_slices);
            }
            return Some(found);
        }
        let start = self.problems.len();
        let endpoints = self.endpoints(object, &id, &port_label, at);
        let about_slices = self.problems[start..]
            .iter()
            .filter(|p| {
                p.object
                    .as_ref()
                    .is_some_and(|o| o.kind == Kind::EndpointSlice)
            })
            .cloned()
            .collect();
        let uid = self.index.service(&id).and_then(|s| s.metadata.uid.clone());
        let backend = Backend::new(id, port_label, endpoints);
        let backend = Arc::new(match uid {
            Some(uid) => backend.keyed(uid.as_bytes()),
            None => backend,
        });
        self.backends
            .insert(cache_key, (backend.clone(), about_slices));
        Some(backend)
    }

    fn endpoints(
        &mut self,
        object: &ObjectRef,
        id: &NamespacedName,
        port: &str,
        at: &str,
    ) -> Vec<SocketAddr> {
        let Some(service) = self.index.service(id) else {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::MissingService,
                format!("{at}: Service {id} does not exist; requests get 503"),
            ));
            return Vec::new();
        };
        let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
        let service_port = ports
            .into_iter()
            .flatten()
            .find(|sp| match port.parse::<i32>() {
                Ok(n) => sp.port == n,
                Err(_) => sp.name.as_deref() == Some(port),
            });
        let Some(service_port) = service_port else {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::MissingServicePort,
                format!("{at}: Service {id} has no port {port:?}; requests get 503"),
            ));
            return Vec::new();
        };
        let port_name = service_port.name.as_deref().unwrap_or("");
        ready_endpoints(&self.index.slices(id), port_name, &mut self.problems)
    }
}

/// The ready addresses of a Service port's EndpointSlices, by the port's name (empty for an unnamed
/// port), deduplicated and sorted; slices and addresses that cannot be used are reported and skipped.
pub(super) fn ready_endpoints(
    slices: &[&EndpointSlice],
    port_name: &str,
    problems: &mut Vec<Problem>,
) -> Vec<SocketAddr> {
    let mut addrs = BTreeMap::new();
    for slice in slices {
        let slice_ref = ObjectRef::from_meta(Kind::EndpointSlice, &slice.metadata);
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            problems.push(Problem::object(
                slice_ref,
                ProblemKind::InvalidObject,
                format!(
                    "addressType {:?} is not supported (IPv4 or IPv6); its endpoints are not used",
                    slice.address_type
                ),
            ));
            continue;
        }
        let Some(slice_port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        let Some(target) = u16::try_from(slice_port).ok().filter(|p| *p > 0) else {
            problems.push(Problem::object(
                slice_ref,
                ProblemKind::InvalidObject,
                format!("port {slice_port} is not a TCP port; its endpoints are not used"),
            ));
            continue;
        };
        // One problem per slice however many addresses are bad.
        let mut bad: Option<(&str, usize)> = None;
        for endpoint in slice.endpoints.iter().flatten() {
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                match address.parse::<IpAddr>() {
                    Ok(ip) => {
                        addrs.insert(SocketAddr::new(ip, target), ());
                    }
                    Err(_) => {
                        let (_, n) = bad.get_or_insert((address.as_str(), 0));
                        *n += 1;
                    }
                }
            }
        }
        if let Some((first, n)) = bad {
            problems.push(Problem::object(
                slice_ref,
                ProblemKind::InvalidObject,
                format!(
                    "{n} address(es) are not IP addresses and are skipped (the first: {:?})",
                    first.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    addrs.into_keys().collect()
}

/// The other name of a `from-to-www-redirect` host: with `www.` taken off, or put on.
fn www_alias_of(host: &str) -> String {
    match host.strip_prefix("www.") {
        Some(bare) => bare.to_string(),
        None => format!("www.{host}"),
    }
}

/// A `use-regex` path: anchored at the start and case-insensitive as in ingress-nginx, and bounded in
/// size (the regex engine runs in linear time, so no pattern can stall a request).
fn compile_path_regex(path: &str) -> Result<regex::Regex, String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must begin with '/'"));
    }
    regex::RegexBuilder::new(&format!("^{path}"))
        .case_insensitive(true)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| {
            format!(
                "path {path:?} is not a valid regular expression: {}",
                e.to_string().replace('\n', " ")
            )
        })
}

/// The class an Ingress asks for: `spec.ingressClassName`, else the legacy annotation.
pub fn ingress_class(ingress: &Ingress) -> Option<&str> {
    ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ingress
                .metadata
                .annotations
                .as_ref()?
                .get(LEGACY_CLASS_ANNOTATION)
                .map(String::as_str)
        })
        .filter(|c| !c.is_empty())
}

mod canary;
mod client_cert;
mod passthrough;
mod proxy_ssl;
mod server_alias;
mod service_upstream;

#[cfg(test)]
mod tests;
