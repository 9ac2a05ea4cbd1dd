//! Backend TLS in `build()`: each Ingress's `proxy-ssl-*` settings resolved against their Secret.
//! With `proxy-ssl-verify: on` every problem fails closed (the routes answer 503); without it a
//! problem is reported and the backends are reached as before, unverified and without a client
//! certificate.

use std::sync::Arc;

use super::Builder;
use crate::model::annotations::proxy_ssl::{
    self, BackendTlsPolicy, ProxySslAnnotation, ResolveError,
};
use crate::model::{ObjectRef, Problem, ProblemKind};

impl Builder<'_> {
    pub(super) fn proxy_ssl(
        &mut self,
        object: &ObjectRef,
        namespace: &str,
        annotation: &ProxySslAnnotation,
    ) -> Option<BackendTlsPolicy> {
        let settings = match annotation {
            ProxySslAnnotation::Invalid => return Some(BackendTlsPolicy::Unavailable),
            ProxySslAnnotation::Settings(s) => s,
        };
        let index = self.index;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let resolved = proxy_ssl::resolve(settings, namespace, &provider, |ns, name| {
            index.secret(ns, name)
        });
        match resolved {
            Ok(tls) => Some(BackendTlsPolicy::Use(tls)),
            Err(e) => {
                let kind = match e {
                    ResolveError::Missing(_) => ProblemKind::MissingSecret,
                    _ => ProblemKind::InvalidAnnotation,
                };
                let consequence = match settings.verify {
                    true => "; the Ingress's routes answer 503",
                    false => "; backends are reached without it, unverified",
                };
                self.problems.push(Problem::object(
                    object.clone(),
                    kind,
                    format!("{e}{consequence}"),
                ));
                settings.verify.then_some(BackendTlsPolicy::Unavailable)
            }
        }
    }
}
