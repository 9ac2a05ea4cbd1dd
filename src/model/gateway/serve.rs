//! Translated Gateway listeners to the sockets the data plane binds. Each programmed Gateway takes one
//! address of the pool (`--gateway-addresses`) and every listener port of it becomes a socket on that
//! address, so two Gateways never see each other's routes; listeners sharing a port share the socket
//! and are told apart by hostname, most specific first. A Gateway keeps the address its status
//! already names while that address stays in the pool, so restarts and replicas agree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::hostnames::Hostname;
use super::routing::HostRules;
use super::status::{Condition, GatewayState, Status};
use super::translate::{Objects, RuleAction, ServedListener, translate};
use crate::gateway_api::gateways::Gateway;
use crate::model::acme::{self, WantedCertificate};
use crate::model::annotations::{BackendProtocol, parse_acme};
use crate::model::build::{key_of, ready_endpoints, service_of_slice};
use crate::model::{
    Backend, Config, Kind, ObjectRef, Policy, Problem, ProblemKind, Route, Snapshot,
};
use crate::settings::Settings;
use crate::tls::CertStore;
use crate::tls::certs::LoadedCert;
use crate::vocab::NamespacedName;

/// The `appProtocol` of a Service port whose backends take HTTP/2 without TLS (Kubernetes' own name).
const H2C_APP_PROTOCOL: &str = "kubernetes.io/h2c";

/// The Gateway API's part of the data plane, for one generation.
#[derive(Debug, Default)]
pub struct Serving {
    pub sockets: HashMap<SocketAddr, Socket>,
    /// The address of every Gateway that has one, for `status.addresses`.
    pub addresses: BTreeMap<NamespacedName, IpAddr>,
    /// Gateways of ours that got no address, and why: they are not programmed.
    pub unassigned: BTreeMap<NamespacedName, NoAddress>,
    /// The forwarding target of every resolved backend of every rule.
    pub backends: HashMap<BackendKey, Arc<Route>>,
    pub problems: Vec<Problem>,
    /// The status every GatewayClass, Gateway and route of ours should have.
    pub status: Status,
    /// HTTPS listeners (Gateway, listener name) none of whose certificates could be loaded.
    pub unusable_certificates: BTreeSet<(NamespacedName, String)>,
}

/// Why a Gateway has no address: the reason of its `Programmed` condition, and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoAddress {
    pub reason: &'static str,
    pub message: String,
}

/// A rule's backend, as the route names it: the route is part of the key so metrics and logs name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendKey {
    pub route: NamespacedName,
    /// A GRPCRoute's (whose name an HTTPRoute may share).
    pub grpc: bool,
    pub service: NamespacedName,
    pub port: u16,
}

/// One bound address and port: plain HTTP or TLS, and the listeners served on it.
#[derive(Debug)]
pub struct Socket {
    pub tls: bool,
    /// Most specific hostname first; a listener without hostname matches every host.
    pub listeners: Vec<SocketListener>,
}

#[derive(Debug)]
pub struct SocketListener {
    pub gateway: NamespacedName,
    pub name: String,
    pub hostname: Option<Hostname>,
    /// The certificates of an HTTPS listener, in `certificateRefs` order.
    pub certificates: Vec<Arc<LoadedCert>>,
    pub rules: HostRules<Arc<RuleAction>>,
}

impl Serving {
    /// The listener of `socket` that serves `host`: the most specific hostname that matches.
    pub fn listener(&self, socket: &SocketAddr, host: &str) -> Option<&SocketListener> {
        self.sockets
            .get(socket)?
            .listeners
            .iter()
            .find(|l| l.hostname.as_ref().is_none_or(|h| h.matches(host)))
    }

    /// The certificate for a handshake on `socket`: the matching listener's first certificate that
    /// covers the name, else its first.
    pub fn certificate(&self, socket: &SocketAddr, sni: Option<&str>) -> Option<&Arc<LoadedCert>> {
        let socket = self.sockets.get(socket)?;
        let listener = match sni {
            Some(name) => socket
                .listeners
                .iter()
                .find(|l| l.hostname.as_ref().is_none_or(|h| h.matches(name))),
            None => socket.listeners.iter().find(|l| l.hostname.is_none()),
        }?;
        let certs = &listener.certificates;
        sni.and_then(|name| certs.iter().find(|c| c.covers(name)))
            .or_else(|| certs.first())
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
            && self.addresses.is_empty()
            && self.unassigned.is_empty()
            && self.status == Status::default()
    }
}

/// The core objects the sockets are built from.
pub struct Inputs<'a> {
    pub gateways: &'a [Arc<Gateway>],
    pub services: &'a [Arc<Service>],
    pub endpoint_slices: &'a [Arc<EndpointSlice>],
    pub secrets: &'a [Arc<Secret>],
    pub pool: &'a [IpAddr],
    pub settings: &'a Settings,
}

/// Assigns addresses, loads certificates and resolves backends for the translated listeners.
pub fn serve(
    listeners: Vec<ServedListener>,
    inputs: &Inputs<'_>,
    certs: &mut CertStore,
) -> Serving {
    let mut out = Serving::default();
    let gateways: BTreeSet<&NamespacedName> = listeners.iter().map(|l| &l.gateway).collect();
    let (addresses, unassigned) = assign(&gateways, inputs);
    out.addresses = addresses;
    out.unassigned = unassigned;

    let secrets: HashMap<NamespacedName, &Secret> = inputs
        .secrets
        .iter()
        .map(|s| (key_of(&s.metadata), &**s))
        .collect();
    let mut used_secrets = std::collections::HashSet::new();
    let policy = Arc::new(Policy::new(&Default::default(), inputs.settings));
    let h2c = {
        let mut p = (*policy).clone();
        p.upstream.protocol = BackendProtocol::H2c;
        Arc::new(p)
    };
    let mut endpoints = Endpoints::new(inputs);
    for listener in listeners {
        let Some(&ip) = out.addresses.get(&listener.gateway) else {
            continue;
        };
        let certificates = match listener.tls {
            false => Vec::new(),
            true => load_certificates(&listener, &secrets, certs, &mut used_secrets, &mut out),
        };
        if listener.tls && certificates.is_empty() {
            // Every reference named a Secret, but none holds a usable certificate (and none did
            // before): the listener cannot serve.
            out.unusable_certificates
                .insert((listener.gateway.clone(), listener.name.clone()));
            continue;
        }
        for action in listener.rules.values() {
            for b in action
                .backends
                .iter()
                .chain(action.mirrors.iter().map(|m| &m.backend))
            {
                let key = BackendKey {
                    route: action.route.clone(),
                    grpc: action.grpc,
                    service: b.service.clone(),
                    port: b.port,
                };
                if !b.resolved || out.backends.contains_key(&key) {
                    continue;
                }
                let backend = endpoints.backend(&b.service, b.port, &mut out.problems);
                // gRPC needs HTTP/2; so does a port that says it speaks h2c.
                let policy = match action.grpc
                    || endpoints.app_protocol(&b.service, b.port) == Some(H2C_APP_PROTOCOL)
                {
                    true => h2c.clone(),
                    false => policy.clone(),
                };
                out.backends.insert(
                    key,
                    Arc::new(Route {
                        ingress: action.route.clone(),
                        host: None,
                        backend,
                        fallback: None,
                        https_redirect: false,
                        redirect_host: None,
                        path_regex: None,
                        policy,
                        cookie_path: "/".into(),
                        canary: None,
                    }),
                );
            }
        }
        let socket = out
            .sockets
            .entry(SocketAddr::new(ip, listener.port))
            .or_insert(Socket {
                tls: listener.tls,
                listeners: Vec::new(),
            });
        if socket.tls != listener.tls {
            out.problems.push(Problem::object(
                ObjectRef::new(Kind::Gateway, &listener.gateway.namespace, &listener.gateway.name),
                ProblemKind::InvalidObject,
                format!(
                    "listener {:?}: port {} is already served with another protocol; this listener is not served",
                    listener.name, listener.port
                ),
            ));
            continue;
        }
        socket.listeners.push(SocketListener {
            gateway: listener.gateway,
            name: listener.name,
            hostname: listener.hostname,
            certificates,
            rules: listener.rules,
        });
    }
    for socket in out.sockets.values_mut() {
        // Stable: listeners of equal specificity keep the Gateway's order.
        socket.listeners.sort_by_key(|l| {
            std::cmp::Reverse(l.hostname.as_ref().map_or((0, 0), Hostname::specificity))
        });
    }
    certs.retain(&used_secrets);
    out
}

/// The certificates ACME should obtain for Gateways of ours that opt in (`portcullis.io/acme`): for
/// each HTTPS listener with a hostname, into its first `certificateRef` (a Secret of the Gateway's
/// namespace). A Secret that already exists and is not ours is never overwritten.
fn gateway_acme(
    snapshot: &Snapshot,
    status: &Status,
    settings: &crate::settings::AcmeSettings,
) -> (Vec<WantedCertificate>, Vec<Problem>) {
    let (mut wanted, mut problems) = (Vec::new(), Vec::new());
    let secrets: HashMap<NamespacedName, &Secret> = snapshot
        .secrets
        .iter()
        .map(|s| (key_of(&s.metadata), &**s))
        .collect();
    for gw in &snapshot.gateways {
        let id = key_of(&gw.metadata);
        if !status.gateways.iter().any(|g| g.gateway == id) {
            continue; // not ours
        }
        let object = ObjectRef::new(Kind::Gateway, &id.namespace, &id.name);
        let (acme, errors) = parse_acme(gw.metadata.annotations.as_ref());
        for e in errors {
            problems.push(Problem::object(
                object.clone(),
                ProblemKind::InvalidAnnotation,
                e.to_string(),
            ));
        }
        let Some(acme) = acme else { continue };
        for listener in gw.spec.listeners.iter().filter(|l| l.protocol == "HTTPS") {
            let at = format!("listener {:?}", listener.name);
            let secret = listener
                .tls
                .as_ref()
                .and_then(|t| t.certificate_refs.as_ref())
                .and_then(|refs| refs.first())
                .filter(|r| {
                    r.kind.as_deref().unwrap_or("Secret") == "Secret"
                        && r.group.as_deref().unwrap_or("").is_empty()
                        && r.namespace.as_deref().is_none_or(|ns| ns == id.namespace)
                });
            let Some(secret) = secret else {
                problems.push(Problem::object(
                    object.clone(),
                    ProblemKind::AcmeNotOrdered,
                    format!("{at}: ACME needs a certificateRef to a Secret of the Gateway's namespace to write to"),
                ));
                continue;
            };
            let hosts: Vec<String> = listener
                .hostname
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect();
            let secret = NamespacedName::new(&id.namespace, &secret.name);
            let existing = secrets.get(&secret).copied();
            match acme::resolve(&acme, settings, &object, &at, secret, &hosts, existing) {
                Ok(certificate) => wanted.push(certificate),
                Err(problem) => problems.push(problem),
            }
        }
    }
    (wanted, problems)
}

/// What the status says is wrong, as problems (so logs, Events and `portcullis_problems`): every
/// condition that is not as it should be on a Gateway, listener or route parent of ours.
fn status_problems(status: &Status) -> Vec<Problem> {
    let wrong = |c: &&Condition| match c.type_ {
        "Conflicted" => c.status,
        _ => !c.status,
    };
    let mut problems = Vec::new();
    for gw in &status.gateways {
        let object = ObjectRef::new(Kind::Gateway, &gw.gateway.namespace, &gw.gateway.name);
        for c in gw.conditions.iter().filter(wrong) {
            problems.push(Problem::object(
                object.clone(),
                ProblemKind::GatewayNotReady,
                format!("{} ({}): {}", c.type_, c.reason, c.message),
            ));
        }
        for l in &gw.listeners {
            // One problem per listener: its first wrong condition says why.
            if let Some(c) = l.conditions.iter().find(wrong) {
                problems.push(Problem::object(
                    object.clone(),
                    ProblemKind::GatewayNotReady,
                    format!(
                        "listener {:?}: {} ({}): {}",
                        l.name, c.type_, c.reason, c.message
                    ),
                ));
            }
        }
    }
    for parent in &status.routes {
        let kind = match parent.kind {
            "GRPCRoute" => Kind::GrpcRoute,
            _ => Kind::HttpRoute,
        };
        let object = ObjectRef::new(kind, &parent.route.namespace, &parent.route.name);
        for c in parent.conditions.iter().filter(wrong) {
            let kind = match c.type_ {
                "ResolvedRefs" => ProblemKind::UnresolvedReference,
                _ => ProblemKind::RouteNotAccepted,
            };
            problems.push(Problem::object(
                object.clone(),
                kind,
                format!(
                    "parent {}: {} ({}): {}",
                    parent.parent.name, c.type_, c.reason, c.message
                ),
            ));
        }
    }
    problems
}

/// A Gateway without an address serves nothing: it and each of its listeners are not programmed.
fn not_programmed(gateway: &mut GatewayState, why: &NoAddress) {
    let condition = Condition::no("Programmed", why.reason, &why.message);
    set_condition(&mut gateway.conditions, condition.clone());
    for listener in &mut gateway.listeners {
        set_condition(&mut listener.conditions, condition.clone());
    }
}

/// Replaces the condition of the same type, or adds it.
fn set_condition(conditions: &mut Vec<Condition>, condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(c) => *c = condition,
        None => conditions.push(condition),
    }
}

/// Gives each Gateway an address of the pool: first those whose requested (`spec.addresses`) or
/// current (`status.addresses`) address is free in the pool, then the others, in order, the lowest
/// free one.
fn assign(
    ours: &BTreeSet<&NamespacedName>,
    inputs: &Inputs<'_>,
) -> (
    BTreeMap<NamespacedName, IpAddr>,
    BTreeMap<NamespacedName, NoAddress>,
) {
    let by_name: HashMap<NamespacedName, &Gateway> = inputs
        .gateways
        .iter()
        .map(|g| (key_of(&g.metadata), &**g))
        .collect();
    let mut taken: BTreeMap<IpAddr, &NamespacedName> = BTreeMap::new();
    let mut addresses = BTreeMap::new();
    let mut unassigned = BTreeMap::new();
    let mut waiting = Vec::new();
    for id in ours {
        let Some(gw) = by_name.get(*id) else { continue };
        let requested: Vec<IpAddr> = gw
            .spec
            .addresses
            .iter()
            .flatten()
            .filter(|a| a.r#type.as_deref().is_none_or(|t| t == "IPAddress"))
            .filter_map(|a| a.value.as_deref()?.parse().ok())
            .collect();
        if let Some(wanted) = requested.first() {
            let unusable = |message: String| NoAddress {
                reason: "AddressNotUsable",
                message,
            };
            if !inputs.pool.contains(wanted) {
                unassigned.insert(
                    (*id).clone(),
                    unusable(format!(
                        "the requested address {wanted} is not in the Gateway address pool"
                    )),
                );
            } else if let Some(holder) = taken.get(wanted) {
                unassigned.insert(
                    (*id).clone(),
                    unusable(format!(
                        "the requested address {wanted} is taken by Gateway {holder}"
                    )),
                );
            } else {
                taken.insert(*wanted, id);
                addresses.insert((*id).clone(), *wanted);
            }
            continue;
        }
        let current = gw
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.first())
            .and_then(|a| a.value.parse::<IpAddr>().ok())
            .filter(|ip| inputs.pool.contains(ip) && !taken.contains_key(ip));
        match current {
            Some(ip) => {
                taken.insert(ip, id);
                addresses.insert((*id).clone(), ip);
            }
            None => waiting.push(*id),
        }
    }
    let mut free = inputs.pool.iter().filter(|ip| !taken.contains_key(ip));
    for id in waiting {
        match free.next() {
            Some(ip) => {
                addresses.insert(id.clone(), *ip);
            }
            None => {
                let message = match inputs.pool.is_empty() {
                    true => {
                        "no Gateway address pool is configured (--gateway-addresses)".to_string()
                    }
                    false => format!(
                        "every address of the Gateway address pool ({}) is taken",
                        inputs.pool.len()
                    ),
                };
                let reason = "AddressNotAssigned";
                unassigned.insert(id.clone(), NoAddress { reason, message });
            }
        }
    }
    (addresses, unassigned)
}

fn load_certificates(
    listener: &ServedListener,
    secrets: &HashMap<NamespacedName, &Secret>,
    certs: &mut CertStore,
    used: &mut std::collections::HashSet<NamespacedName>,
    out: &mut Serving,
) -> Vec<Arc<LoadedCert>> {
    let gateway = ObjectRef::new(
        Kind::Gateway,
        &listener.gateway.namespace,
        &listener.gateway.name,
    );
    let mut loaded = Vec::new();
    for id in &listener.certificates {
        let Some(secret) = secrets.get(id) else {
            continue; // reported in the listener's ResolvedRefs condition
        };
        used.insert(id.clone());
        let load = certs.load(id, secret);
        if let Some(error) = &load.error {
            let consequence = match load.cert.is_some() {
                true => "the last good certificate stays in use",
                false => "it is not served",
            };
            out.problems.push(Problem::object(
                gateway.clone(),
                ProblemKind::InvalidCertificate,
                format!(
                    "listener {:?}: Secret {id}: {error}; {consequence}",
                    listener.name
                ),
            ));
        }
        loaded.extend(load.cert);
    }
    loaded
}

/// Service ports to their ready endpoints, each resolved once per generation.
struct Endpoints<'a> {
    services: HashMap<NamespacedName, &'a Service>,
    slices: HashMap<NamespacedName, Vec<&'a EndpointSlice>>,
    resolved: HashMap<(NamespacedName, u16), Arc<Backend>>,
}

impl<'a> Endpoints<'a> {
    fn new(inputs: &Inputs<'a>) -> Self {
        let mut slices: HashMap<NamespacedName, Vec<&EndpointSlice>> = HashMap::new();
        for slice in inputs.endpoint_slices {
            if let Some(service) = service_of_slice(slice) {
                let ns = slice.metadata.namespace.as_deref().unwrap_or("default");
                slices
                    .entry(NamespacedName::new(ns, service))
                    .or_default()
                    .push(slice);
            }
        }
        Endpoints {
            services: inputs
                .services
                .iter()
                .map(|s| (key_of(&s.metadata), &**s))
                .collect(),
            slices,
            resolved: HashMap::new(),
        }
    }

    fn app_protocol(&self, service: &NamespacedName, port: u16) -> Option<&str> {
        self.services
            .get(service)?
            .spec
            .as_ref()?
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.port == i32::from(port))?
            .app_protocol
            .as_deref()
    }

    /// A Service port's endpoints; none (so 503) when translation saw the Service but its port
    /// has no ready endpoint yet.
    fn backend(
        &mut self,
        service: &NamespacedName,
        port: u16,
        problems: &mut Vec<Problem>,
    ) -> Arc<Backend> {
        let key = (service.clone(), port);
        if let Some(found) = self.resolved.get(&key) {
            return found.clone();
        }
        let port_name = self
            .services
            .get(service)
            .and_then(|s| s.spec.as_ref()?.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.port == i32::from(port)))
            .map(|p| p.name.clone().unwrap_or_default());
        let endpoints = match port_name {
            Some(name) => {
                let slices = self.slices.get(service).map_or(&[][..], Vec::as_slice);
                ready_endpoints(slices, &name, problems)
            }
            None => Vec::new(),
        };
        let backend = Arc::new(Backend::new(service.clone(), port.to_string(), endpoints));
        self.resolved.insert(key, backend.clone());
        backend
    }
}

/// The configuration with the Gateway API's sockets of `snapshot` added to the Ingresses' part:
/// Gateway objects translate beside the Ingress build, into the same [`Config`], each generation.
pub fn attach(
    config: Arc<Config>,
    snapshot: &Snapshot,
    pool: &[IpAddr],
    certs: &mut CertStore,
) -> Arc<Config> {
    let translation = translate(&Objects::of(snapshot));
    let inputs = Inputs {
        gateways: &snapshot.gateways,
        services: &snapshot.services,
        endpoint_slices: &snapshot.endpoint_slices,
        secrets: &snapshot.secrets,
        pool,
        settings: &config.settings,
    };
    let mut serving = serve(translation.listeners, &inputs, certs);
    serving.status = translation.status;
    for gateway in &mut serving.status.gateways {
        if let Some(why) = serving.unassigned.get(&gateway.gateway) {
            not_programmed(gateway, why);
        }
        for listener in &mut gateway.listeners {
            if serving
                .unusable_certificates
                .contains(&(gateway.gateway.clone(), listener.name.clone()))
            {
                let message = "no certificateRef holds a usable certificate and key";
                set_condition(
                    &mut listener.conditions,
                    Condition::no("ResolvedRefs", "InvalidCertificateRef", message),
                );
                set_condition(
                    &mut listener.conditions,
                    Condition::no("Programmed", "Invalid", message),
                );
            }
        }
        let assigned = !serving.unassigned.contains_key(&gateway.gateway);
        if assigned
            && !gateway.listeners.iter().any(|l| {
                l.conditions
                    .iter()
                    .any(|c| c.type_ == "Programmed" && c.status)
            })
        {
            set_condition(
                &mut gateway.conditions,
                Condition::programmed(false, "", "no listener is serving"),
            );
        }
    }
    let from_status = status_problems(&serving.status);
    serving.problems.extend(from_status);
    let (wanted, acme_problems) = gateway_acme(snapshot, &serving.status, &config.settings.acme);
    serving.problems.extend(acme_problems);
    if serving.is_empty() && config.gateway.is_empty() {
        return config;
    }
    let mut with = (*config).clone();
    with.problems.extend(serving.problems.iter().cloned());
    for certificate in wanted {
        if !with.acme.iter().any(|w| w.secret == certificate.secret) {
            with.acme.push(certificate);
        }
    }
    with.problems.sort();
    with.problems.dedup();
    with.gateway = Arc::new(serving);
    Arc::new(with)
}

#[cfg(test)]
mod tests;
