//! A GRPCRoute is served as the HTTPRoute it is equivalent to: gRPC calls are HTTP/2 POSTs to
//! `/<service>/<method>`, so a method match is a path match, and its header matches, filters and
//! backends have the HTTPRoute's shape. One translation then serves both kinds.

use crate::gateway_api::grpcroutes::{
    GrpcRoute, GrpcRouteRulesMatches, GrpcRouteRulesMatchesMethodType,
};
use crate::gateway_api::httproutes::HttpRoute;

/// The equivalent HTTPRoute; `None` only if the route's shape is not an HTTPRoute's, which the
/// CRD schema rules out.
pub fn as_http_route(route: &GrpcRoute) -> Option<HttpRoute> {
    let mut spec = serde_json::to_value(&route.spec).ok()?;
    if let Some(rules) = spec.get_mut("rules").and_then(|r| r.as_array_mut()) {
        for (rule, grpc_rule) in rules.iter_mut().zip(route.spec.rules.iter().flatten()) {
            let matches: Vec<serde_json::Value> =
                grpc_rule.matches.iter().flatten().map(http_match).collect();
            if let Some(rule) = rule.as_object_mut() {
                rule.remove("name");
                if matches.is_empty() {
                    rule.remove("matches");
                } else {
                    rule.insert("matches".into(), matches.into());
                }
            }
        }
    }
    let value = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": route.metadata,
        "spec": spec,
    });
    serde_json::from_value(value).ok()
}

/// The path a method match amounts to: exact `/service/method`, a `/service` prefix, or a regular
/// expression over both parts (a missing part matches any).
fn http_match(m: &GrpcRouteRulesMatches) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(method) = &m.method {
        let regex = method.r#type == Some(GrpcRouteRulesMatchesMethodType::RegularExpression);
        let (service, name) = (method.service.as_deref(), method.method.as_deref());
        let (kind, value) = match (regex, service, name) {
            (false, Some(s), Some(m)) => ("Exact", format!("/{s}/{m}")),
            (false, Some(s), None) => ("PathPrefix", format!("/{s}")),
            (false, None, Some(m)) => ("RegularExpression", format!("/[^/]+/{}", regex::escape(m))),
            (false, None, None) => ("PathPrefix", "/".into()),
            (true, s, m) => (
                "RegularExpression",
                format!("/(?:{})/(?:{})", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
            ),
        };
        out.insert(
            "path".into(),
            serde_json::json!({ "type": kind, "value": value }),
        );
    }
    if let Some(headers) = &m.headers
        && let Ok(headers) = serde_json::to_value(headers)
    {
        out.insert("headers".into(), headers);
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway_api::httproutes::HttpRouteRulesMatchesPathType as P;

    fn grpc(matches: &str) -> GrpcRoute {
        serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: g, namespace: ns}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [grpc.example.com]\n  rules:\n\
             \x20 - matches: {matches}\n\
             \x20   filters: [{{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-a, value: b}}]}}}}]\n\
             \x20   backendRefs: [{{name: svc, port: 50051, weight: 2}}]\n"
        ))
        .expect("test GRPCRoute")
    }

    fn paths(route: &HttpRoute) -> Vec<(Option<P>, Option<String>)> {
        let rule = &route.spec.rules.as_ref().expect("rules")[0];
        rule.matches
            .iter()
            .flatten()
            .map(|m| {
                let p = m.path.as_ref().expect("a path");
                (p.r#type.clone(), p.value.clone())
            })
            .collect()
    }

    #[test]
    fn method_matches_become_path_matches() {
        let route = as_http_route(&grpc(
            "[{method: {service: pkg.Echo, method: Say}}, {method: {service: pkg.Echo}}, \
             {method: {method: Say.v2}}, {method: {type: RegularExpression, service: 'pkg\\..*'}}]",
        ))
        .expect("equivalent");
        assert_eq!(
            paths(&route),
            [
                (Some(P::Exact), Some("/pkg.Echo/Say".into())),
                (Some(P::PathPrefix), Some("/pkg.Echo".into())),
                (Some(P::RegularExpression), Some("/[^/]+/Say\\.v2".into())),
                (
                    Some(P::RegularExpression),
                    Some("/(?:pkg\\..*)/(?:[^/]+)".into())
                ),
            ]
        );
    }

    #[test]
    fn hostnames_parents_filters_headers_and_backends_carry_over() {
        let route = as_http_route(&grpc(
            "[{headers: [{name: x-version, value: '2'}], method: {service: pkg.Echo}}]",
        ))
        .expect("equivalent");
        assert_eq!(route.metadata.name.as_deref(), Some("g"));
        assert_eq!(route.spec.hostnames, Some(vec!["grpc.example.com".into()]));
        assert_eq!(
            route.spec.parent_refs.as_ref().expect("parents")[0].name,
            "gw"
        );
        let rule = &route.spec.rules.as_ref().expect("rules")[0];
        let m = &rule.matches.as_ref().expect("matches")[0];
        assert_eq!(m.headers.as_ref().expect("headers")[0].name, "x-version");
        let backend = &rule.backend_refs.as_ref().expect("backends")[0];
        assert_eq!((backend.port, backend.weight), (Some(50051), Some(2)));
        assert!(rule.filters.as_ref().is_some_and(|f| f.len() == 1));
        let everything = as_http_route(&grpc("[]")).expect("equivalent");
        let rule = &everything.spec.rules.as_ref().expect("rules")[0];
        assert!(rule.matches.is_none(), "no matches: every call");
    }
}
