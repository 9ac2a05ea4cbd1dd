//! Plain references to Kubernetes objects, used in problems, routes and log lines.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Problem;

/// Every kind Portcullis reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Ingress,
    IngressClass,
    Secret,
    Service,
    EndpointSlice,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
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
}

impl Object {
    pub fn object_ref(&self) -> ObjectRef {
        match self {
            Object::Ingress(o) => ObjectRef::from_meta(Kind::Ingress, &o.metadata),
            Object::IngressClass(o) => ObjectRef::from_meta(Kind::IngressClass, &o.metadata),
            Object::Secret(o) => ObjectRef::from_meta(Kind::Secret, &o.metadata),
            Object::Service(o) => ObjectRef::from_meta(Kind::Service, &o.metadata),
            Object::EndpointSlice(o) => ObjectRef::from_meta(Kind::EndpointSlice, &o.metadata),
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
        }
    }
}
