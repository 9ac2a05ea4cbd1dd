//! Gateway API objects to listeners, rules and status: which Gateways and listeners are ours, which
//! routes attach to which listener (parent references, `allowedRoutes`, hostname intersection), which
//! references resolve (Services, Secrets, ReferenceGrants), and the conditions the spec asks for.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};

use super::filters::{HeaderEdits, PathChange, Redirect, Rewrite, gateway_duration};
use super::grpc;
use super::hostnames::{self, Hostname};
use super::routing::{Candidate, HostRules, PathMatch, RequestMatch, RuleOrder, ValueMatch};
use super::status::{Condition, GatewayState, ListenerState, ParentState, Status};
use super::{CONTROLLER_NAME, GROUP};
use crate::gateway_api::gatewayclasses::GatewayClass;
use crate::gateway_api::gateways::{Gateway, GatewayListeners};
use crate::gateway_api::grpcroutes::GrpcRoute;
use crate::gateway_api::httproutes::{self as hr, HttpRoute};
use crate::gateway_api::referencegrants::ReferenceGrant;
use crate::model::build::{key_of, namespace_of};
use crate::vocab::NamespacedName;

/// The route kinds HTTP and HTTPS listeners take.
const ROUTE_KINDS: [&str; 2] = ["HTTPRoute", "GRPCRoute"];

/// Every Gateway API object of one moment, plus the core objects they refer to.
#[derive(Default)]
pub struct Objects<'a> {
    pub classes: &'a [Arc<GatewayClass>],
    pub gateways: &'a [Arc<Gateway>],
    pub http_routes: &'a [Arc<HttpRoute>],
    pub grpc_routes: &'a [Arc<GrpcRoute>],
    pub grants: &'a [Arc<ReferenceGrant>],
    pub namespaces: &'a [Arc<Namespace>],
    pub services: &'a [Arc<Service>],
    pub secrets: &'a [Arc<Secret>],
}

impl<'a> Objects<'a> {
    /// The Gateway API objects of a snapshot.
    pub fn of(snapshot: &'a crate::model::Snapshot) -> Objects<'a> {
        Objects {
            classes: &snapshot.gateway_classes,
            gateways: &snapshot.gateways,
            http_routes: &snapshot.http_routes,
            grpc_routes: &snapshot.grpc_routes,
            grants: &snapshot.reference_grants,
            namespaces: &snapshot.namespaces,
            services: &snapshot.services,
            secrets: &snapshot.secrets,
        }
    }
}

/// One backend of a rule, with its share of the requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedBackend {
    pub service: NamespacedName,
    pub port: u16,
    pub weight: u32,
    /// A reference that does not resolve still takes its share, answered with 500 as the spec asks.
    pub resolved: bool,
    /// The backend's own `RequestHeaderModifier` and `ResponseHeaderModifier`, after the rule's.
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
}

/// A `RequestMirror`: where, and the share of requests mirrored, in millionths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub backend: WeightedBackend,
    pub per_million: u32,
}

/// What a matched rule does.
#[derive(Debug, Clone)]
pub struct RuleAction {
    pub route: NamespacedName,
    pub backends: Vec<WeightedBackend>,
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
    pub mirrors: Vec<Mirror>,
    /// The rule's `PathPrefix`, for `ReplacePrefixMatch` (empty for `/`).
    pub matched_prefix: String,
    /// A GRPCRoute's rule: its backends speak HTTP/2 (h2c).
    pub grpc: bool,
    /// `timeouts`: the shorter of `request` and `backendRequest` (one attempt is made, so they bound
    /// the same wait), for the response to begin; `None` for none.
    pub timeout: Option<std::time::Duration>,
}

impl RuleAction {
    /// The backend for one request, by weight: `roll` returns a number from 1 to the total weight.
    /// `None` when every weight is zero (the spec's 500).
    pub fn pick(&self, roll: impl FnOnce(u32) -> u32) -> Option<&WeightedBackend> {
        let total: u32 = self.backends.iter().map(|b| b.weight).sum();
        if total == 0 {
            return None;
        }
        let mut at = roll(total);
        self.backends.iter().find(|b| {
            if at <= b.weight {
                return true;
            }
            at -= b.weight;
            false
        })
    }
}

/// HTTP or HTTPS listener of a programmed Gateway.
#[derive(Debug)]
pub struct ServedListener {
    pub gateway: NamespacedName,
    pub name: String,
    pub port: u16,
    pub tls: bool,
    pub hostname: Option<Hostname>,
    /// `certificateRefs` that resolved, in order.
    pub certificates: Vec<NamespacedName>,
    pub rules: HostRules<Arc<RuleAction>>,
}

#[derive(Debug, Default)]
pub struct Translation {
    pub listeners: Vec<ServedListener>,
    pub status: Status,
}

fn created(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

/// Whether a ReferenceGrant in `to_ns` lets a `from_kind` in `from_ns` refer to `to_kind` `to_name`.
fn granted(
    o: &Objects<'_>,
    from_kind: &str,
    from_ns: &str,
    to_group: &str,
    to_kind: &str,
    to_ns: &str,
    to_name: &str,
) -> bool {
    from_ns == to_ns
        || o.grants.iter().any(|g| {
            namespace_of(&g.metadata) == to_ns
                && g.spec
                    .from
                    .iter()
                    .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group == to_group
                        && t.kind == to_kind
                        && t.name.as_deref().is_none_or(|n| n == to_name)
                })
        })
}

/// Builds the listeners and status of every Gateway of a class whose controller is Portcullis.
pub fn translate(o: &Objects<'_>) -> Translation {
    let mut out = Translation::default();
    let ours: BTreeMap<&str, &GatewayClass> = o
        .classes
        .iter()
        .filter(|c| c.spec.controller_name == CONTROLLER_NAME)
        .map(|c| (c.metadata.name.as_deref().unwrap_or_default(), &**c))
        .collect();
    for class in ours.values() {
        out.status.classes.push((
            class.metadata.name.clone().unwrap_or_default(),
            class.metadata.generation.unwrap_or(0),
            vec![
                Condition::yes("Accepted", "Accepted", "Portcullis serves this class"),
                Condition::yes(
                    "SupportedVersion",
                    "SupportedVersion",
                    "the installed CRDs are a supported version",
                ),
            ],
        ));
    }
    let mut gateways: Vec<&Gateway> = o
        .gateways
        .iter()
        .map(|g| &**g)
        .filter(|g| ours.contains_key(g.spec.gateway_class_name.as_str()))
        .collect();
    gateways.sort_by_key(|g| (created(&g.metadata), key_of(&g.metadata)));
    let secrets: HashMap<NamespacedName, &Secret> = o
        .secrets
        .iter()
        .map(|s| (key_of(&s.metadata), &**s))
        .collect();
    let services: HashMap<NamespacedName, &Service> = o
        .services
        .iter()
        .map(|s| (key_of(&s.metadata), &**s))
        .collect();
    let labels: HashMap<&str, BTreeMap<String, String>> = o
        .namespaces
        .iter()
        .map(|n| {
            (
                n.metadata.name.as_deref().unwrap_or_default(),
                n.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .collect();

    // Per Gateway listener: its state, and the candidates of routes attached to it.
    let mut listeners: Vec<Attaching> = Vec::new();
    let mut states: Vec<GatewayState> = Vec::new();
    for gw in &gateways {
        let gid = key_of(&gw.metadata);
        let mut state = GatewayState {
            gateway: gid.clone(),
            generation: gw.metadata.generation.unwrap_or(0),
            conditions: Vec::new(),
            listeners: Vec::new(),
        };
        let mut seen: HashMap<(i32, Option<String>), &str> = HashMap::new();
        for l in &gw.spec.listeners {
            let mut ls = ListenerState {
                name: l.name.clone(),
                ..Default::default()
            };
            let tls = match l.protocol.as_str() {
                "HTTP" => Some(false),
                "HTTPS" => Some(true),
                _ => None,
            };
            ls.supported_kinds = ROUTE_KINDS.iter().map(|k| k.to_string()).collect();
            let Some(tls) = tls else {
                ls.supported_kinds.clear();
                ls.conditions = vec![
                    Condition::no(
                        "Accepted",
                        "UnsupportedProtocol",
                        &format!("protocol {} is not supported", l.protocol),
                    ),
                    Condition::no("Programmed", "Invalid", "the listener is not accepted"),
                    Condition::yes("ResolvedRefs", "ResolvedRefs", "no references"),
                    Condition::no("Conflicted", "NoConflicts", "no conflicts"),
                ];
                state.listeners.push(ls);
                continue;
            };
            let key = (l.port, l.hostname.as_ref().map(|h| h.to_ascii_lowercase()));
            if let Some(first) = seen.get(&key) {
                ls.conditions = vec![
                    Condition::no(
                        "Accepted",
                        "HostnameConflict",
                        &format!("listener {first} has the same port and hostname"),
                    ),
                    Condition::no(
                        "Programmed",
                        "Invalid",
                        "the listener conflicts with another",
                    ),
                    Condition::yes("ResolvedRefs", "ResolvedRefs", "references resolved"),
                    Condition::yes(
                        "Conflicted",
                        "HostnameConflict",
                        &format!("listener {first} has the same port and hostname"),
                    ),
                ];
                state.listeners.push(ls);
                continue;
            }
            seen.insert(key, &l.name);
            let mut resolved =
                Condition::yes("ResolvedRefs", "ResolvedRefs", "every reference resolved");
            if let Some(kinds) = l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
                let supported: Vec<String> = kinds
                    .iter()
                    .filter(|k| {
                        k.group.as_deref().unwrap_or(GROUP) == GROUP
                            && ROUTE_KINDS.contains(&k.kind.as_str())
                    })
                    .map(|k| k.kind.clone())
                    .collect();
                if supported.len() != kinds.len() {
                    resolved = Condition::no(
                        "ResolvedRefs",
                        "InvalidRouteKinds",
                        "only HTTPRoute and GRPCRoute are supported on HTTP and HTTPS listeners",
                    );
                }
                ls.supported_kinds = supported;
            }
            let mut certificates = Vec::new();
            if tls {
                let refs = l
                    .tls
                    .as_ref()
                    .and_then(|t| t.certificate_refs.as_deref())
                    .unwrap_or_default();
                if refs.is_empty() {
                    resolved = Condition::no(
                        "ResolvedRefs",
                        "InvalidCertificateRef",
                        "an HTTPS listener needs certificateRefs",
                    );
                }
                for r in refs {
                    let ns = r.namespace.as_deref().unwrap_or(&gid.namespace);
                    let target = NamespacedName::new(ns, &r.name);
                    let kind_ok = r.group.as_deref().unwrap_or("").is_empty()
                        && r.kind.as_deref().unwrap_or("Secret") == "Secret";
                    if !kind_ok {
                        resolved = Condition::no(
                            "ResolvedRefs",
                            "InvalidCertificateRef",
                            &format!("certificateRef {} is not a Secret", r.name),
                        );
                    } else if !granted(o, "Gateway", &gid.namespace, "", "Secret", ns, &r.name) {
                        resolved = Condition::no(
                            "ResolvedRefs",
                            "RefNotPermitted",
                            &format!("no ReferenceGrant in {ns} allows Secret {}", r.name),
                        );
                    } else if secrets
                        .get(&target)
                        .is_none_or(|s| s.type_.as_deref() != Some("kubernetes.io/tls"))
                    {
                        resolved = Condition::no(
                            "ResolvedRefs",
                            "InvalidCertificateRef",
                            &format!("Secret {target} is missing or not of type kubernetes.io/tls"),
                        );
                    } else {
                        certificates.push(target);
                    }
                }
            }
            let programmed = resolved.status || !certificates.is_empty();
            ls.conditions = vec![
                Condition::yes("Accepted", "Accepted", "listener accepted"),
                Condition::programmed(programmed, "listener serving", "no usable certificate"),
                resolved,
                Condition::no("Conflicted", "NoConflicts", "no conflicts"),
            ];
            // Routes attach to an accepted listener (and count in its `attachedRoutes`) even
            // while it cannot serve; it is served once programmed.
            let served = ServedListener {
                gateway: gid.clone(),
                name: l.name.clone(),
                port: u16::try_from(l.port).unwrap_or(0),
                tls,
                hostname: l.hostname.as_deref().map(Hostname::parse),
                certificates,
                rules: HostRules::default(),
            };
            listeners.push((served, ls, Vec::new()));
        }
        states.push(state);
    }

    let grpc: Vec<HttpRoute> = o
        .grpc_routes
        .iter()
        .filter_map(|r| grpc::as_http_route(r))
        .collect();
    let mut routes: Vec<(&'static str, &HttpRoute)> = o
        .http_routes
        .iter()
        .map(|r| ("HTTPRoute", &**r))
        .chain(grpc.iter().map(|r| ("GRPCRoute", r)))
        .collect();
    routes.sort_by_key(|(kind, r)| (created(&r.metadata), key_of(&r.metadata), *kind));
    for (kind, route) in routes {
        let rid = key_of(&route.metadata);
        let hostnames: Vec<Hostname> = route
            .spec
            .hostnames
            .iter()
            .flatten()
            .map(|h| Hostname::parse(h))
            .collect();
        let (action_parts, resolved) = rule_actions(o, &services, kind, route, &rid);
        for parent in route.spec.parent_refs.iter().flatten() {
            if parent.group.as_deref().unwrap_or(GROUP) != GROUP
                || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway"
            {
                continue;
            }
            let gns = parent.namespace.as_deref().unwrap_or(&rid.namespace);
            let gid = NamespacedName::new(gns, &parent.name);
            let Some(gw) = gateways.iter().find(|g| key_of(&g.metadata) == gid) else {
                continue;
            };
            let mut attached = 0;
            let mut reason = (
                "NoMatchingParent",
                format!("Gateway {gid} has no listener named by this parentRef"),
            );
            for (served, ls, candidates) in
                listeners.iter_mut().filter(|(s, _, _)| s.gateway == gid)
            {
                let Some(spec) = gw.spec.listeners.iter().find(|l| l.name == served.name) else {
                    continue;
                };
                if parent
                    .section_name
                    .as_deref()
                    .is_some_and(|s| s != served.name)
                    || parent.port.is_some_and(|p| p != spec.port)
                {
                    continue;
                }
                if !allows(spec, &gid.namespace, &rid.namespace, &labels)
                    || !ls.supported_kinds.iter().any(|k| k == kind)
                {
                    reason = (
                        "NotAllowedByListeners",
                        format!(
                            "no listener of Gateway {gid} allows routes from namespace {}",
                            rid.namespace
                        ),
                    );
                    continue;
                }
                let effective = hostnames::effective(served.hostname.as_ref(), &hostnames);
                if effective.is_empty() {
                    if reason.0 == "NoMatchingParent" {
                        reason = (
                            "NoMatchingListenerHostname",
                            format!(
                                "no hostname of this route matches a listener of Gateway {gid}"
                            ),
                        );
                    }
                    continue;
                }
                attached += 1;
                ls.attached_routes += 1;
                for host in effective {
                    for (rule, (matchers, action)) in action_parts.iter().enumerate() {
                        for (i, m) in matchers.iter().enumerate() {
                            candidates.push(Candidate {
                                hostname: host.clone(),
                                matcher: m.clone(),
                                order: RuleOrder {
                                    created: created(&route.metadata),
                                    namespace: rid.namespace.clone(),
                                    name: rid.name.clone(),
                                    rule,
                                    matched: i,
                                },
                                value: action.clone(),
                            });
                        }
                    }
                }
            }
            let accepted = if attached > 0 {
                Condition::yes("Accepted", "Accepted", "accepted")
            } else {
                Condition::no("Accepted", reason.0, &reason.1)
            };
            out.status.routes.push(ParentState {
                kind,
                route: rid.clone(),
                generation: route.metadata.generation.unwrap_or(0),
                parent: parent.clone(),
                conditions: vec![accepted, resolved.clone()],
            });
        }
    }

    for (mut served, ls, candidates) in listeners {
        let programmed = ls
            .conditions
            .iter()
            .any(|c| c.type_ == "Programmed" && c.status);
        if let Some(state) = states.iter_mut().find(|s| s.gateway == served.gateway) {
            state.listeners.push(ls);
        }
        if programmed {
            served.rules = HostRules::new(candidates);
            out.listeners.push(served);
        }
    }
    for mut state in states {
        if let Some(gw) = gateways
            .iter()
            .find(|g| key_of(&g.metadata) == state.gateway)
        {
            let order: Vec<&str> = gw.spec.listeners.iter().map(|l| l.name.as_str()).collect();
            state
                .listeners
                .sort_by_key(|l| order.iter().position(|n| *n == l.name));
        }
        let programmed = state.listeners.iter().any(|l| {
            l.conditions
                .iter()
                .any(|c| c.type_ == "Programmed" && c.status)
        });
        let invalid = state
            .listeners
            .iter()
            .filter(|l| {
                l.conditions
                    .iter()
                    .any(|c| c.type_ == "Accepted" && !c.status)
            })
            .count();
        let accepted = match invalid {
            0 => Condition::yes("Accepted", "Accepted", "Gateway accepted"),
            n if n == state.listeners.len() => {
                Condition::no("Accepted", "ListenersNotValid", "no listener is valid")
            }
            n => Condition::yes(
                "Accepted",
                "ListenersNotValid",
                &format!("{n} listener(s) are not valid; the others are served"),
            ),
        };
        state.conditions = vec![
            accepted,
            Condition::programmed(programmed, "Gateway serving", "no listener is serving"),
        ];
        out.status.gateways.push(state);
    }
    out
}

/// `allowedRoutes.namespaces`: `Same` by default, `All`, or a label `Selector`.
fn allows(
    listener: &GatewayListeners,
    gw_ns: &str,
    route_ns: &str,
    labels: &HashMap<&str, BTreeMap<String, String>>,
) -> bool {
    use crate::gateway_api::gateways::GatewayListenersAllowedRoutesNamespacesFrom as From;
    let namespaces = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match namespaces.and_then(|n| n.from.as_ref()) {
        None | Some(From::Same) => gw_ns == route_ns,
        Some(From::All) => true,
        Some(From::Selector) => {
            let Some(selector) = namespaces.and_then(|n| n.selector.as_ref()) else {
                return false;
            };
            let Some(have) = labels.get(route_ns) else {
                return false;
            };
            let by_labels = selector
                .match_labels
                .iter()
                .flatten()
                .all(|(k, v)| have.get(k) == Some(v));
            let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
                let values = e.values.as_deref().unwrap_or_default();
                match e.operator.as_str() {
                    "In" => have.get(&e.key).is_some_and(|v| values.contains(v)),
                    "NotIn" => have.get(&e.key).is_none_or(|v| !values.contains(v)),
                    "Exists" => have.contains_key(&e.key),
                    "DoesNotExist" => !have.contains_key(&e.key),
                    _ => false,
                }
            });
            by_labels && by_expressions
        }
    }
}

/// A listener being built: what it serves, its status, and the rules of the routes attached so far.
type Attaching = (
    ServedListener,
    ListenerState,
    Vec<Candidate<Arc<RuleAction>>>,
);

type RuleParts = Vec<(Vec<RequestMatch>, Arc<RuleAction>)>;

/// Every rule's matches and action, and the route's `ResolvedRefs` condition.
fn rule_actions(
    o: &Objects<'_>,
    services: &HashMap<NamespacedName, &Service>,
    route_kind: &str,
    route: &HttpRoute,
    rid: &NamespacedName,
) -> (RuleParts, Condition) {
    let mut resolved = Condition::yes("ResolvedRefs", "ResolvedRefs", "every reference resolved");
    let mut parts = Vec::new();
    for rule in route.spec.rules.iter().flatten() {
        let matchers: Vec<RequestMatch> = match rule.matches.as_deref() {
            None | Some([]) => vec![RequestMatch::any()],
            Some(ms) => ms.iter().filter_map(request_match).collect(),
        };
        let mut action = RuleAction {
            route: rid.clone(),
            backends: Vec::new(),
            request_headers: None,
            response_headers: None,
            redirect: None,
            rewrite: None,
            mirrors: Vec::new(),
            matched_prefix: String::new(),
            grpc: route_kind == "GRPCRoute",
            timeout: None,
        };
        if let Some(t) = &rule.timeouts {
            let parsed = [&t.request, &t.backend_request]
                .into_iter()
                .flatten()
                .filter_map(|d| gateway_duration(d))
                .filter(|d| !d.is_zero())
                .min();
            action.timeout = parsed;
        }
        if let Some(PathMatch::Prefix(p)) = matchers.first().map(|m| &m.path) {
            action.matched_prefix = p.to_string();
        }
        let mut backend = |r: &str,
                           ns: Option<&str>,
                           group: Option<&str>,
                           kind: Option<&str>,
                           port: Option<i32>,
                           weight: u32| {
            let ns = ns.unwrap_or(&rid.namespace);
            let service = NamespacedName::new(ns, r);
            let ok = if !group.unwrap_or("").is_empty() || kind.unwrap_or("Service") != "Service" {
                resolved = Condition::no(
                    "ResolvedRefs",
                    "InvalidKind",
                    &format!("backend {r} is not a Service"),
                );
                false
            } else if !granted(o, route_kind, &rid.namespace, "", "Service", ns, r) {
                resolved = Condition::no(
                    "ResolvedRefs",
                    "RefNotPermitted",
                    &format!("no ReferenceGrant in {ns} allows Service {r}"),
                );
                false
            } else if !services.contains_key(&service) || port.is_none() {
                resolved = Condition::no(
                    "ResolvedRefs",
                    "BackendNotFound",
                    &format!("Service {service} (port {port:?}) does not exist"),
                );
                false
            } else {
                true
            };
            WeightedBackend {
                service,
                port: port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                weight,
                resolved: ok,
                request_headers: None,
                response_headers: None,
            }
        };
        for b in rule.backend_refs.iter().flatten() {
            let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
            let mut target = backend(
                &b.name,
                b.namespace.as_deref(),
                b.group.as_deref(),
                b.kind.as_deref(),
                b.port,
                weight,
            );
            // The modifiers' generated types differ per place but share their fields.
            macro_rules! header_edits {
                ($modifier:expr) => {
                    $modifier.as_ref().map(|m| {
                        edits(
                            &m.set,
                            &m.add,
                            &m.remove,
                            |s| (&s.name, &s.value),
                            |a| (&a.name, &a.value),
                        )
                    })
                };
            }
            for f in b.filters.iter().flatten() {
                use hr::HttpRouteRulesBackendRefsFiltersType as T;
                match f.r#type {
                    T::RequestHeaderModifier => {
                        target.request_headers = header_edits!(f.request_header_modifier)
                    }
                    T::ResponseHeaderModifier => {
                        target.response_headers = header_edits!(f.response_header_modifier)
                    }
                    // Not supported on a backend: left out (the rule's filters still apply).
                    T::RequestMirror
                    | T::RequestRedirect
                    | T::UrlRewrite
                    | T::ExtensionRef
                    | T::Cors => {}
                }
            }
            action.backends.push(target);
        }
        for f in rule.filters.iter().flatten() {
            use hr::HttpRouteRulesFiltersType as T;
            match f.r#type {
                T::RequestHeaderModifier => action.request_headers = f.request_header_modifier.as_ref().map(|m| edits(&m.set, &m.add, &m.remove, |s| (&s.name, &s.value), |a| (&a.name, &a.value))),
                T::ResponseHeaderModifier => action.response_headers = f.response_header_modifier.as_ref().map(|m| edits(&m.set, &m.add, &m.remove, |s| (&s.name, &s.value), |a| (&a.name, &a.value))),
                T::RequestRedirect => action.redirect = f.request_redirect.as_ref().map(|r| Redirect {
                    scheme: r.scheme.as_ref().map(|s| match s {
                        hr::HttpRouteRulesFiltersRequestRedirectScheme::Http => "http",
                        hr::HttpRouteRulesFiltersRequestRedirectScheme::Https => "https",
                    }),
                    hostname: r.hostname.clone(),
                    port: r.port.and_then(|p| u16::try_from(p).ok()),
                    path: r.path.as_ref().and_then(|p| path_change(p.r#type == hr::HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath, &p.replace_full_path, &p.replace_prefix_match)),
                    status: r.status_code.and_then(|c| u16::try_from(c).ok()).and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::FOUND),
                }),
                T::UrlRewrite => action.rewrite = f.url_rewrite.as_ref().map(|r| Rewrite {
                    hostname: r.hostname.clone(),
                    path: r.path.as_ref().and_then(|p| path_change(p.r#type == hr::HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath, &p.replace_full_path, &p.replace_prefix_match)),
                }),
                T::RequestMirror => {
                    if let Some(m) = &f.request_mirror {
                        let b = &m.backend_ref;
                        let per_million = match (&m.fraction, m.percent) {
                            (Some(f), _) => {
                                let d = i64::from(f.denominator.unwrap_or(100).max(1));
                                (i64::from(f.numerator.max(0)) * 1_000_000 / d).min(1_000_000)
                            }
                            (None, Some(p)) => i64::from(p.clamp(0, 100)) * 10_000,
                            (None, None) => 1_000_000,
                        };
                        action.mirrors.push(Mirror {
                            backend: backend(&b.name, b.namespace.as_deref(), b.group.as_deref(), b.kind.as_deref(), b.port, 1),
                            per_million: u32::try_from(per_million).unwrap_or(1_000_000),
                        });
                    }
                }
                T::ExtensionRef | T::Cors => {}
            }
        }
        parts.push((matchers, Arc::new(action)));
    }
    (parts, resolved)
}

fn path_change(
    full: bool,
    replace_full: &Option<String>,
    replace_prefix: &Option<String>,
) -> Option<PathChange> {
    if full {
        replace_full.clone().map(PathChange::ReplaceFullPath)
    } else {
        replace_prefix.clone().map(PathChange::ReplacePrefixMatch)
    }
}

/// Header edits from a modifier's lists; names and values the API server validated, anything else
/// left out.
fn edits<S, A>(
    set: &Option<Vec<S>>,
    add: &Option<Vec<A>>,
    remove: &Option<Vec<String>>,
    s: impl Fn(&S) -> (&String, &String),
    a: impl Fn(&A) -> (&String, &String),
) -> HeaderEdits {
    let pair = |(n, v): (&String, &String)| {
        Some((
            HeaderName::from_bytes(n.as_bytes()).ok()?,
            HeaderValue::from_str(v).ok()?,
        ))
    };
    HeaderEdits {
        set: set.iter().flatten().filter_map(|x| pair(s(x))).collect(),
        add: add.iter().flatten().filter_map(|x| pair(a(x))).collect(),
        remove: remove
            .iter()
            .flatten()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect(),
    }
}

/// One `matches[]` entry; an unparsable pattern leaves the entry out (so it matches nothing).
fn request_match(m: &hr::HttpRouteRulesMatches) -> Option<RequestMatch> {
    use hr::HttpRouteRulesMatchesPathType as P;
    let anchored = |p: &str| regex::Regex::new(&format!("^(?:{p})$")).ok();
    let path = match &m.path {
        None => PathMatch::prefix("/"),
        Some(p) => {
            let value = p.value.as_deref().unwrap_or("/");
            match p.r#type.as_ref().unwrap_or(&P::PathPrefix) {
                P::Exact => PathMatch::Exact(value.into()),
                P::PathPrefix => PathMatch::prefix(value),
                P::RegularExpression => PathMatch::Regex(anchored(value)?),
            }
        }
    };
    let value = |regex: bool, v: &str| -> Option<ValueMatch> {
        Some(if regex {
            ValueMatch::Regex(anchored(v)?)
        } else {
            ValueMatch::Exact(v.into())
        })
    };
    let mut headers = Vec::new();
    for h in m.headers.iter().flatten() {
        let regex = h.r#type == Some(hr::HttpRouteRulesMatchesHeadersType::RegularExpression);
        headers.push((
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            value(regex, &h.value)?,
        ));
    }
    let mut query = Vec::new();
    for q in m.query_params.iter().flatten() {
        let regex = q.r#type == Some(hr::HttpRouteRulesMatchesQueryParamsType::RegularExpression);
        query.push((q.name.as_str().into(), value(regex, &q.value)?));
    }
    // The API's method names are HTTP's own (`GET`, …): the serialized enum is the method.
    let method = match &m.method {
        None => None,
        Some(method) => {
            let name = serde_json::to_value(method).ok()?;
            Some(Method::from_bytes(name.as_str()?.as_bytes()).ok()?)
        }
    };
    Some(RequestMatch {
        path,
        method,
        headers,
        query,
    })
}

#[cfg(test)]
mod tests;
