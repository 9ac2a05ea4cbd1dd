//! `service-upstream: "true"` in `build()`: the backend is the Service's cluster IP and port instead of
//! its endpoints, so that a service mesh's proxy (or kube-proxy) balances. In manifest mode the
//! cluster IP comes from the Service's manifest.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::Builder;
use crate::model::{Backend, ObjectRef, Problem, ProblemKind};

impl Builder<'_> {
    /// `backend` itself unless `wanted`; a Service without a cluster IP (headless) or without the
    /// port keeps its endpoints, reported.
    pub(super) fn service_upstream(
        &mut self,
        object: &ObjectRef,
        backend: Arc<Backend>,
        wanted: bool,
    ) -> Arc<Backend> {
        if !wanted {
            return backend;
        }
        let id = &backend.service;
        // A missing Service or port is reported by `backend()` already.
        let Some(spec) = self.index.service(id).and_then(|s| s.spec.as_ref()) else {
            return backend;
        };
        let Some(port) = spec
            .ports
            .iter()
            .flatten()
            .find(|sp| match backend.port.parse::<i32>() {
                Ok(n) => sp.port == n,
                Err(_) => sp.name.as_deref() == Some(backend.port.as_str()),
            })
        else {
            return backend;
        };
        let ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let (Some(ip), Ok(port)) = (ip, u16::try_from(port.port)) else {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::InvalidAnnotation,
                format!(
                    "annotation service-upstream: Service {id} has no cluster IP (headless?); its endpoints are used"
                ),
            ));
            return backend;
        };
        Arc::new(Backend::new(
            id.clone(),
            backend.port.clone(),
            vec![SocketAddr::new(ip, port)],
        ))
    }
}
