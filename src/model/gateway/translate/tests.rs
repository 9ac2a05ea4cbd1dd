use super::*;
use crate::model::gateway::routing::RequestParts;

fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> Arc<T> {
    Arc::new(serde_yaml::from_str(yaml).expect("test object"))
}

const CLASS: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portcullis}
spec: {controllerName: portcullis.io/gateway-controller}";

fn gateway(listeners: &str) -> Arc<Gateway> {
    parse(&format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra, generation: 3}}
spec:
  gatewayClassName: portcullis
  listeners: {listeners}"
    ))
}

fn route(ns: &str, name: &str, spec: &str) -> Arc<HttpRoute> {
    parse(&format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}, generation: 2}}
spec: {spec}"
    ))
}

fn service(ns: &str, name: &str) -> Arc<Service> {
    parse(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{port: 8080}}]}}"
    ))
}

fn namespace(name: &str, labels: &str) -> Arc<Namespace> {
    parse(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}"
    ))
}

struct World {
    classes: Vec<Arc<GatewayClass>>,
    gateways: Vec<Arc<Gateway>>,
    routes: Vec<Arc<HttpRoute>>,
    grants: Vec<Arc<ReferenceGrant>>,
    grpc_routes: Vec<Arc<GrpcRoute>>,
    namespaces: Vec<Arc<Namespace>>,
    services: Vec<Arc<Service>>,
}

impl World {
    fn new(listeners: &str, routes: Vec<Arc<HttpRoute>>) -> World {
        World {
            classes: vec![parse(CLASS)],
            gateways: vec![gateway(listeners)],
            routes,
            grants: vec![],
            grpc_routes: vec![],
            namespaces: vec![
                namespace("infra", ""),
                namespace("apps", "team: a"),
                namespace("other", ""),
            ],
            services: vec![
                service("infra", "web"),
                service("apps", "web"),
                service("other", "web"),
            ],
        }
    }

    fn translate(&self) -> Translation {
        translate(&Objects {
            classes: &self.classes,
            gateways: &self.gateways,
            http_routes: &self.routes,
            grpc_routes: &self.grpc_routes,
            grants: &self.grants,
            namespaces: &self.namespaces,
            services: &self.services,
            secrets: &[],
        })
    }
}

fn served<'a>(
    t: &'a Translation,
    listener: &str,
    host: &str,
    path: &str,
) -> Option<&'a RuleAction> {
    let l = t.listeners.iter().find(|l| l.name == listener)?;
    let headers = http::HeaderMap::new();
    let req = RequestParts {
        path,
        query: None,
        method: &Method::GET,
        headers: &headers,
    };
    l.rules.lookup(host, &req).map(|a| &**a)
}

fn parent<'a>(t: &'a Translation, route: &str) -> &'a [Condition] {
    &t.status
        .routes
        .iter()
        .find(|p| p.route.name == route)
        .expect("route status")
        .conditions
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition present")
}

const HTTP: &str =
    "[{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]";

#[test]
fn a_route_attaches_and_serves_its_backend() {
    let w = World::new(
        HTTP,
        vec![route(
            "infra",
            "r",
            "{parentRefs: [{name: gw}], rules: [{backendRefs: [{name: web, port: 8080}]}]}",
        )],
    );
    let t = w.translate();
    let action = served(&t, "http", "any.example", "/x").expect("routed");
    assert_eq!(
        action.backends,
        vec![WeightedBackend {
            service: NamespacedName::new("infra", "web"),
            port: 8080,
            weight: 1,
            resolved: true,
            request_headers: None,
            response_headers: None,
        }]
    );
    let parent = &t.status.routes[0];
    assert!(condition(&parent.conditions, "Accepted").status);
    assert!(condition(&parent.conditions, "ResolvedRefs").status);
    assert_eq!(t.status.gateways[0].listeners[0].attached_routes, 1);
    assert!(condition(&t.status.gateways[0].conditions, "Programmed").status);
}

#[test]
fn gateways_of_other_controllers_are_not_ours() {
    let mut w = World::new(HTTP, vec![]);
    w.classes = vec![parse(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portcullis}\nspec: {controllerName: example.com/other}",
    )];
    let t = w.translate();
    assert!(t.listeners.is_empty() && t.status.gateways.is_empty() && t.status.classes.is_empty());
}

#[test]
fn a_cross_namespace_backend_needs_a_reference_grant() {
    let r = route(
        "apps",
        "r",
        "{parentRefs: [{name: gw, namespace: infra}], rules: [{backendRefs: [{name: web, namespace: other, port: 8080}]}]}",
    );
    let mut w = World::new(HTTP, vec![r]);
    let t = w.translate();
    let refs = condition(&t.status.routes[0].conditions, "ResolvedRefs");
    assert_eq!((refs.status, refs.reason), (false, "RefNotPermitted"));
    assert!(
        !served(&t, "http", "h", "/")
            .expect("still routed, to a 500")
            .backends[0]
            .resolved
    );

    w.grants = vec![parse(
        "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: '', kind: Service}]",
    )];
    let t = w.translate();
    assert!(condition(&t.status.routes[0].conditions, "ResolvedRefs").status);
    assert!(served(&t, "http", "h", "/").expect("routed").backends[0].resolved);
}

#[test]
fn missing_services_and_foreign_kinds_have_their_reasons() {
    let missing = route(
        "infra",
        "a",
        "{parentRefs: [{name: gw}], rules: [{backendRefs: [{name: nope, port: 80}]}]}",
    );
    let kind = route(
        "infra",
        "b",
        "{parentRefs: [{name: gw}], rules: [{backendRefs: [{name: x, group: example.com, kind: Bucket}]}]}",
    );
    let t = World::new(HTTP, vec![missing, kind]).translate();
    let reasons: Vec<_> = t
        .status
        .routes
        .iter()
        .map(|p| condition(&p.conditions, "ResolvedRefs").reason)
        .collect();
    assert_eq!(reasons, ["BackendNotFound", "InvalidKind"]);
}

#[test]
fn allowed_routes_limit_namespaces() {
    let same = "[{name: http, port: 80, protocol: HTTP}]";
    let selector = "[{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}}]";
    let r = || {
        route(
            "other",
            "r",
            "{parentRefs: [{name: gw, namespace: infra}], rules: [{backendRefs: [{name: web, port: 8080}]}]}",
        )
    };
    let t = World::new(same, vec![r()]).translate();
    let accepted = condition(&t.status.routes[0].conditions, "Accepted");
    assert_eq!(
        (accepted.status, accepted.reason),
        (false, "NotAllowedByListeners")
    );
    assert!(served(&t, "http", "h", "/").is_none());

    let t = World::new(selector, vec![r()]).translate();
    assert!(!condition(&t.status.routes[0].conditions, "Accepted").status);
    let from_a = route(
        "apps",
        "r",
        "{parentRefs: [{name: gw, namespace: infra}], rules: [{backendRefs: [{name: web, port: 8080}]}]}",
    );
    let t = World::new(selector, vec![from_a]).translate();
    assert!(condition(&t.status.routes[0].conditions, "Accepted").status);
}

#[test]
fn listener_and_route_hostnames_intersect() {
    let listeners = "[{name: foo, port: 80, protocol: HTTP, hostname: '*.example.com'}, {name: bar, port: 80, protocol: HTTP, hostname: bar.example.net}]";
    let r = route(
        "infra",
        "r",
        "{parentRefs: [{name: gw}], hostnames: [a.example.com, bar.example.net, b.other.org], rules: [{backendRefs: [{name: web, port: 8080}]}]}",
    );
    let none = route(
        "infra",
        "none",
        "{parentRefs: [{name: gw}], hostnames: [nothing.org], rules: [{backendRefs: [{name: web, port: 8080}]}]}",
    );
    let t = World::new(listeners, vec![r, none]).translate();
    assert!(served(&t, "foo", "a.example.com", "/").is_some());
    assert!(served(&t, "foo", "z.example.com", "/").is_none());
    assert!(served(&t, "bar", "bar.example.net", "/").is_some());
    assert!(served(&t, "foo", "b.other.org", "/").is_none());
    let accepted = condition(parent(&t, "none"), "Accepted");
    assert_eq!(
        (accepted.status, accepted.reason),
        (false, "NoMatchingListenerHostname")
    );
}

#[test]
fn a_section_name_picks_one_listener() {
    let listeners = "[{name: a, port: 80, protocol: HTTP}, {name: b, port: 8080, protocol: HTTP}, {name: c, port: 9, protocol: TCP}]";
    let r = route(
        "infra",
        "r",
        "{parentRefs: [{name: gw, sectionName: b}], rules: [{backendRefs: [{name: web, port: 8080}]}]}",
    );
    let missing = route("infra", "m", "{parentRefs: [{name: gw, sectionName: zz}]}");
    let t = World::new(listeners, vec![r, missing]).translate();
    assert!(served(&t, "a", "h", "/").is_none());
    assert!(served(&t, "b", "h", "/").is_some());
    let listeners = &t.status.gateways[0].listeners;
    assert_eq!(
        listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(
        condition(&listeners[2].conditions, "Accepted").reason,
        "UnsupportedProtocol"
    );
    assert_eq!(
        condition(parent(&t, "m"), "Accepted").reason,
        "NoMatchingParent"
    );
}

#[test]
fn conflicting_listeners_are_flagged() {
    let listeners = "[{name: a, port: 80, protocol: HTTP, hostname: x.io}, {name: b, port: 80, protocol: HTTP, hostname: X.io}]";
    let t = World::new(listeners, vec![]).translate();
    let b = &t.status.gateways[0].listeners[1];
    assert!(condition(&b.conditions, "Conflicted").status);
    assert_eq!(t.listeners.len(), 1);
}

#[test]
fn https_listeners_need_a_tls_secret() {
    let listeners =
        "[{name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: cert}]}}]";
    let t = World::new(listeners, vec![]).translate();
    let l = &t.status.gateways[0].listeners[0];
    assert_eq!(
        condition(&l.conditions, "ResolvedRefs").reason,
        "InvalidCertificateRef"
    );
    assert!(!condition(&l.conditions, "Programmed").status);
    assert!(t.listeners.is_empty());
}

#[test]
fn filters_and_weights_come_through() {
    let spec = "{parentRefs: [{name: gw}], rules: [
      {matches: [{path: {type: PathPrefix, value: /old}}],
       filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}}]},
      {matches: [{path: {type: PathPrefix, value: /split}, method: POST}],
       filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-A, value: '1'}], remove: [X-B]}}],
       backendRefs: [{name: web, port: 8080, weight: 90}, {name: web, port: 8080, weight: 10}]}]}";
    let t = World::new(HTTP, vec![route("infra", "r", spec)]).translate();
    let redirect = served(&t, "http", "h", "/old/x")
        .and_then(|a| a.redirect.clone())
        .expect("redirect");
    assert_eq!(
        (redirect.scheme, redirect.status),
        (Some("https"), StatusCode::MOVED_PERMANENTLY)
    );
    assert_eq!(
        redirect.path,
        Some(PathChange::ReplacePrefixMatch("/new".into()))
    );
    assert!(
        served(&t, "http", "h", "/split").is_none(),
        "GET does not match a POST rule"
    );
    let l = &t.listeners[0];
    let headers = http::HeaderMap::new();
    let post = RequestParts {
        path: "/split",
        query: None,
        method: &Method::POST,
        headers: &headers,
    };
    let action = l.rules.lookup("h", &post).expect("POST matches");
    assert_eq!(
        action.backends.iter().map(|b| b.weight).collect::<Vec<_>>(),
        [90, 10]
    );
    let edits = action.request_headers.as_ref().expect("edits");
    assert_eq!(edits.set[0].0, "x-a");
    assert_eq!(edits.remove[0], "x-b");
    assert_eq!(action.matched_prefix, "/split");
}

#[test]
fn weights_split_requests_and_zero_weights_get_none() {
    let spec = "{parentRefs: [{name: gw}], rules: [{backendRefs: [{name: web, port: 8080, weight: 3}, {name: web, namespace: apps, port: 8080, weight: 0}, {name: web, namespace: other, port: 8080, weight: 1}]}]}";
    let t = World::new(HTTP, vec![route("infra", "r", spec)]).translate();
    let action = served(&t, "http", "h", "/").expect("routed");
    let picked: Vec<_> = (1..=4)
        .map(|n| {
            action
                .pick(|total| {
                    assert_eq!(total, 4);
                    n
                })
                .map(|b| b.service.namespace.as_str())
        })
        .collect();
    assert_eq!(
        picked,
        [Some("infra"), Some("infra"), Some("infra"), Some("other")]
    );
    let zero =
        "{parentRefs: [{name: gw}], rules: [{backendRefs: [{name: web, port: 8080, weight: 0}]}]}";
    let t = World::new(HTTP, vec![route("infra", "z", zero)]).translate();
    assert!(
        served(&t, "http", "h", "/")
            .expect("routed")
            .pick(|_| 1)
            .is_none()
    );
}

#[test]
fn a_grpc_route_attaches_as_its_own_kind_and_needs_a_grant_for_its_own_kind() {
    let mut w = World::new(HTTP, vec![]);
    w.grpc_routes = vec![parse(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: apps, generation: 5}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules: [{matches: [{method: {service: pkg.Echo}}], backendRefs: [{name: web, namespace: other, port: 8080}]}]",
    )];
    let grant = |kind: &str| -> Arc<ReferenceGrant> {
        parse(&format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: g, namespace: other}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: {kind}, namespace: apps}}]
  to: [{{group: '', kind: Service}}]"
        ))
    };
    w.grants = vec![grant("HTTPRoute")];
    let t = w.translate();
    let parent = &t.status.routes[0];
    assert_eq!((parent.kind, parent.generation), ("GRPCRoute", 5));
    assert!(condition(&parent.conditions, "Accepted").status);
    let refs = condition(&parent.conditions, "ResolvedRefs");
    assert_eq!(
        (refs.status, refs.reason),
        (false, "RefNotPermitted"),
        "a grant for HTTPRoutes is not one for GRPCRoutes"
    );
    w.grants = vec![grant("GRPCRoute")];
    let t = w.translate();
    assert!(condition(&t.status.routes[0].conditions, "ResolvedRefs").status);
    let action = served(&t, "http", "h", "/pkg.Echo/Say").expect("the service's methods");
    assert!(action.grpc && action.backends[0].resolved);
    assert!(served(&t, "http", "h", "/pkg.Other/Say").is_none());
}

#[test]
fn listeners_that_cannot_serve_still_count_routes_and_invalid_ones_mark_the_gateway() {
    let listeners = "[{name: tls, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: missing}]}}, {name: odd, protocol: INVALID, port: 9}]";
    let r = route(
        "infra",
        "r",
        "{parentRefs: [{name: gw, sectionName: tls}], rules: [{backendRefs: [{name: web, port: 8080}]}]}",
    );
    let t = World::new(listeners, vec![r]).translate();
    let gw = &t.status.gateways[0];
    let tls = &gw.listeners[0];
    assert_eq!(tls.attached_routes, 1, "attached though not programmed");
    assert!(!condition(&tls.conditions, "Programmed").status);
    assert!(t.listeners.is_empty(), "nothing served");
    let accepted = condition(&gw.conditions, "Accepted");
    assert_eq!(
        (accepted.status, accepted.reason),
        (true, "ListenersNotValid")
    );

    let only_invalid = World::new("[{name: odd, protocol: INVALID, port: 9}]", vec![]).translate();
    let accepted = condition(&only_invalid.status.gateways[0].conditions, "Accepted");
    assert_eq!(
        (accepted.status, accepted.reason),
        (false, "ListenersNotValid")
    );
}

#[test]
fn backend_filters_and_mirror_fractions_are_kept() {
    let r = route(
        "infra",
        "r",
        "{parentRefs: [{name: gw}], rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: web, port: 8080}, percent: 20}}, {type: RequestMirror, requestMirror: {backendRef: {name: web, port: 8080}, fraction: {numerator: 1, denominator: 3}}}], backendRefs: [{name: web, port: 8080, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: backend, value: v1}]}}]}]}]}",
    );
    let t = World::new(HTTP, vec![r]).translate();
    let action = served(&t, "http", "h", "/").expect("routed");
    let edits = action.backends[0]
        .request_headers
        .as_ref()
        .expect("the backend's filter");
    assert_eq!(edits.set[0].0.as_str(), "backend");
    let shares: Vec<u32> = action.mirrors.iter().map(|m| m.per_million).collect();
    assert_eq!(shares, [200_000, 333_333]);
}
