//! SSL passthrough in `build()`: an Ingress annotated `ssl-passthrough: "true"` enters its hosts into
//! the passthrough table with the backend of their `/` path, as ingress-nginx does. Nothing of HTTP
//! applies to those connections, so everything else the Ingress says is reported as ignored. On the
//! plain-HTTP listener its hosts redirect to HTTPS, where their backend answers.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;

use super::Builder;
use crate::model::annotations::{IngressAnnotations, passthrough};
use crate::model::matching::{HostKey, PathKind};
use crate::model::passthrough::Passthrough;
use crate::model::validation::check_host;
use crate::model::{Backend, Kind, NamespacedName, ObjectRef, Policy, Problem, ProblemKind, Route};

impl Builder<'_> {
    /// Takes an Ingress annotated `ssl-passthrough: "true"`; `false` when passthrough is not enabled,
    /// and the Ingress is then served as any other.
    pub(super) fn passthrough(
        &mut self,
        ingress: &Ingress,
        id: &NamespacedName,
        object: &ObjectRef,
    ) -> bool {
        if !self.settings.tls.ssl_passthrough {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::InvalidAnnotation,
                "annotation ssl-passthrough needs --enable-ssl-passthrough (or tls.ssl-passthrough in --config); the Ingress is served with TLS terminated",
            ));
            return false;
        }
        let mut problem = |kind, message: String| {
            self.problems
                .push(Problem::object(object.clone(), kind, message));
        };
        for key in passthrough::ignored(ingress.metadata.annotations.as_ref()) {
            problem(
                ProblemKind::InvalidAnnotation,
                format!(
                    "annotation {key} is ignored: with ssl-passthrough the backend receives the TLS connection unread"
                ),
            );
        }
        let Some(spec) = &ingress.spec else {
            problem(ProblemKind::InvalidObject, "has no spec".into());
            return true;
        };
        if spec.tls.as_ref().is_some_and(|t| !t.is_empty()) {
            problem(
                ProblemKind::InvalidRule,
                "spec.tls is ignored: with ssl-passthrough the backend presents its own certificate"
                    .into(),
            );
        }
        if spec.default_backend.is_some() {
            problem(
                ProblemKind::InvalidRule,
                "spec.defaultBackend is ignored: ssl-passthrough chooses by the host a ClientHello names".into(),
            );
        }
        let policy = Arc::new(Policy::new(&IngressAnnotations::default(), self.settings));
        for (r, rule) in spec.rules.iter().flatten().enumerate() {
            let at = format!("spec.rules[{r}]");
            let host = match rule.host.as_deref().filter(|h| !h.is_empty()) {
                Some(h) if check_host(h).is_ok() && !h.starts_with("*.") => h.to_ascii_lowercase(),
                _ => {
                    self.problems.push(Problem::object(
                        object.clone(),
                        ProblemKind::InvalidRule,
                        format!("{at}: ssl-passthrough needs an exact host (the server name a ClientHello asks for); this rule is ignored"),
                    ));
                    continue;
                }
            };
            let mut root = None;
            for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let is_root = path
                    .path
                    .as_deref()
                    .is_none_or(|p| p.is_empty() || p == "/");
                if is_root && root.is_none() {
                    root = Some((p, &path.backend));
                } else {
                    self.problems.push(Problem::object(
                        object.clone(),
                        ProblemKind::InvalidRule,
                        format!("{at}.http.paths[{p}]: ssl-passthrough uses the path / alone (a passed-through connection has no readable path); this path is ignored"),
                    ));
                }
            }
            let Some((p, backend)) = root else {
                self.problems.push(Problem::object(
                    object.clone(),
                    ProblemKind::InvalidRule,
                    format!("{at}: ssl-passthrough needs a path / naming the backend; host {host:?} is not passed through"),
                ));
                continue;
            };
            let at = format!("{at}.http.paths[{p}]");
            let Some(backend) = self.backend(object, &id.namespace, backend, &at) else {
                continue;
            };
            let entry = Passthrough {
                ingress: id.clone(),
                backend,
            };
            if let Err(older) = self.passthrough.insert(&host, entry) {
                let message = format!(
                    "{at}: host {host:?} is already passed through to the older Ingress {}; this rule is ignored",
                    older.ingress
                );
                self.problems.push(Problem::object(
                    object.clone(),
                    ProblemKind::RuleConflict,
                    message,
                ));
                continue;
            }
            let redirect = Arc::new(Route {
                ingress: id.clone(),
                host: Some(host.as_str().into()),
                backend: Arc::new(Backend::new(
                    NamespacedName::new("", ""),
                    String::new(),
                    Vec::new(),
                )),
                fallback: None,
                https_redirect: true,
                redirect_host: None,
                path_regex: None,
                policy: policy.clone(),
                cookie_path: "/".into(),
                canary: None,
            });
            // Losing to an older Ingress's rules is reported by `passthrough_conflicts`.
            let _ = self.routes.insert(
                &HostKey::Exact(host.into()),
                PathKind::Prefix,
                "/",
                redirect,
            );
        }
        true
    }

    /// Every other Ingress with rules for a passed-through host is told that those rules only see
    /// plain HTTP: the host's TLS connections go to the passthrough backend.
    pub(super) fn passthrough_conflicts(&mut self) {
        for (host, entry) in self.passthrough.hosts() {
            let mut told = BTreeSet::new();
            let others = self
                .routes
                .host_values(host)
                .filter(|r| r.host.as_deref() == Some(host) && r.ingress != entry.ingress);
            for route in others {
                if told.insert(&route.ingress) {
                    self.problems.push(Problem::object(
                        ObjectRef::new(Kind::Ingress, &route.ingress.namespace, &route.ingress.name),
                        ProblemKind::RuleConflict,
                        format!(
                            "host {host:?} is passed through to the backend of Ingress {} (ssl-passthrough): its TLS connections never reach this Ingress's rules, which serve plain HTTP only",
                            entry.ingress
                        ),
                    ));
                }
            }
        }
    }
}
