//! Gateway API types (`gateway.networking.k8s.io/v1`, standard channel v1.6.3), generated from the CRDs
//! in `charts/portcullis/files/gateway-api` by `src/gateway_api/regenerate`; k8s-openapi has none.

pub mod gatewayclasses;
pub mod gateways;
pub mod grpcroutes;
pub mod httproutes;
pub mod referencegrants;
