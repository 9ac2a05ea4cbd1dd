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
