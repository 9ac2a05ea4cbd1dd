//! The Gateway API (GatewayClass, Gateway, HTTPRoute, GRPCRoute, ReferenceGrant) translated, as pure functions, into
//! listeners with HTTPRoute rules and the status the spec asks for, and those listeners into the sockets
//! the data plane serves.

pub mod filters;
pub mod grpc;
pub mod hostnames;
pub mod routing;
pub mod serve;
pub mod status;
pub mod translate;

/// `spec.controllerName` of the GatewayClasses Portcullis serves.
pub const CONTROLLER_NAME: &str = "portcullis.io/gateway-controller";

/// The Gateway API group, for references and supported kinds.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// The features Portcullis claims in its GatewayClasses' `status.supportedFeatures` (the conformance
/// suite's names), in name order: each one passes the upstream suite (docs/conformance/).
pub const SUPPORTED_FEATURES: &[&str] = &[
    "GRPCRoute",
    "Gateway",
    "GatewayHTTPListenerIsolation",
    "GatewayPort8080",
    "HTTPRoute",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

#[cfg(test)]
mod tests {
    #[test]
    fn supported_features_are_listed_once_in_name_order() {
        let mut sorted = super::SUPPORTED_FEATURES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, super::SUPPORTED_FEATURES);
    }
}
