//! Plain references to Kubernetes objects, used in problems, routes and log lines.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Problem;
use crate::gateway_api::gatewayclasses::GatewayClass;
use crate::gateway_api::gateways::Gateway;
use crate::gateway_api::grpcroutes::GrpcRoute;
use crate::gateway_api::httproutes::HttpRoute;
use crate::gateway_api::referencegrants::ReferenceGrant;

/// Every kind Portcullis reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Ingress,
    IngressClass,
    Secret,
    Service,
    EndpointSlice,
    Namespace,
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    ReferenceGrant,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
        }
    }
}

/// `Kind namespace/name` of one object. Cluster-scoped objects have an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectRef {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn from_meta(kind: Kind, meta: &ObjectMeta) -> Self {
        ObjectRef::new(
            kind,
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind.as_str(), self.name)
        } else {
            write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
        }
    }
}

/// One object of a kind Portcullis reads.
#[derive(Debug, Clone)]
pub enum Object {
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    Secret(Arc<Secret>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Namespace(Arc<Namespace>),
    GatewayClass(Arc<GatewayClass>),
    Gateway(Arc<Gateway>),
    HttpRoute(Arc<HttpRoute>),
    GrpcRoute(Arc<GrpcRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
}

impl Object {
    pub fn object_ref(&self) -> ObjectRef {
        match self {
            Object::Ingress(o) => ObjectRef::from_meta(Kind::Ingress, &o.metadata),
            Object::IngressClass(o) => ObjectRef::from_meta(Kind::IngressClass, &o.metadata),
            Object::Secret(o) => ObjectRef::from_meta(Kind::Secret, &o.metadata),
            Object::Service(o) => ObjectRef::from_meta(Kind::Service, &o.metadata),
            Object::EndpointSlice(o) => ObjectRef::from_meta(Kind::EndpointSlice, &o.metadata),
            Object::Namespace(o) => ObjectRef::from_meta(Kind::Namespace, &o.metadata),
            Object::GatewayClass(o) => ObjectRef::from_meta(Kind::GatewayClass, &o.metadata),
            Object::Gateway(o) => ObjectRef::from_meta(Kind::Gateway, &o.metadata),
            Object::HttpRoute(o) => ObjectRef::from_meta(Kind::HttpRoute, &o.metadata),
            Object::GrpcRoute(o) => ObjectRef::from_meta(Kind::GrpcRoute, &o.metadata),
            Object::ReferenceGrant(o) => ObjectRef::from_meta(Kind::ReferenceGrant, &o.metadata),
        }
    }
}

/// All objects of one moment, as read from the cluster or from files. The only input of [`super::build`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ingresses: Vec<Arc<Ingress>>,
    pub ingress_classes: Vec<Arc<IngressClass>>,
    pub secrets: Vec<Arc<Secret>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// Namespaces, for the labels a Gateway's `allowedRoutes` selects by; read only with the Gateway
    /// API.
    pub namespaces: Vec<Arc<Namespace>>,
    pub gateway_classes: Vec<Arc<GatewayClass>>,
    pub gateways: Vec<Arc<Gateway>>,
    pub http_routes: Vec<Arc<HttpRoute>>,
    pub grpc_routes: Vec<Arc<GrpcRoute>>,
    pub reference_grants: Vec<Arc<ReferenceGrant>>,
    /// In manifest mode, the file each object came from, so problems can name it.
    pub origins: HashMap<ObjectRef, Arc<str>>,
    /// Problems found while reading the objects (unparsable files, duplicates).
    pub problems: Vec<Problem>,
}

impl Snapshot {
    pub fn push(&mut self, object: Object) {
        match object {
            Object::Ingress(o) => self.ingresses.push(o),
            Object::IngressClass(o) => self.ingress_classes.push(o),
            Object::Secret(o) => self.secrets.push(o),
            Object::Service(o) => self.services.push(o),
            Object::EndpointSlice(o) => self.endpoint_slices.push(o),
            Object::Namespace(o) => self.namespaces.push(o),
            Object::GatewayClass(o) => self.gateway_classes.push(o),
            Object::Gateway(o) => self.gateways.push(o),
            Object::HttpRoute(o) => self.http_routes.push(o),
            Object::GrpcRoute(o) => self.grpc_routes.push(o),
            Object::ReferenceGrant(o) => self.reference_grants.push(o),
        }
    }
}
