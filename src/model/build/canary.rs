//! Canary Ingresses in `build()`: after every primary Ingress is in the route table, each canary rule
//! attaches its Service to the primary's route of the same host and path. As in ingress-nginx, a
//! canary adds no routes, takes only its canary and balancing annotations (the rest are reported as
//! ignored), and a host and path has at most one canary; a canary without a primary is reported.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;

use super::{Builder, name_of};
use crate::model::annotations::canary::{self, CanaryRoute};
use crate::model::matching::{HostKey, PathKind};
use crate::model::{Kind, ObjectRef, Problem, ProblemKind, Route};

impl Builder<'_> {
    pub(super) fn canary_ingress(&mut self, ingress: &Ingress) {
        let id = name_of(ingress);
        let object = ObjectRef::new(Kind::Ingress, &id.namespace, &id.name);
        self.claim_rule_hosts(ingress);
        let raw = ingress.metadata.annotations.as_ref();
        let ignored = canary::ignored(raw);
        // What is ignored is reported once, as ignored, whatever its value.
        let kept: BTreeMap<String, String> = raw
            .into_iter()
            .flatten()
            .filter(|(k, _)| !ignored.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let annotations = self.annotations(&object, Some(&kept));
        for key in ignored {
            self.problems.push(Problem::object(
                object.clone(),
                ProblemKind::InvalidAnnotation,
                format!("annotation {key} is ignored on a canary Ingress: the primary Ingress's setting applies"),
            ));
        }
        let (Some(rule), Some(spec)) = (annotations.canary, &ingress.spec) else {
            return;
        };
        for (r, ingress_rule) in spec.rules.iter().flatten().enumerate() {
            let Some(rule_host) = self.rule_host(&object, r, ingress_rule) else {
                continue;
            };
            let host = HostKey::from_rule_host(rule_host);
            let paths = ingress_rule.http.iter().flat_map(|h| h.paths.iter());
            for (p, path) in paths.enumerate() {
                let at = format!("spec.rules[{r}].http.paths[{p}]");
                let kind = match path.path_type.as_str() {
                    "Exact" => PathKind::Exact,
                    _ => PathKind::Prefix,
                };
                let path_str = path
                    .path
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .unwrap_or("/");
                let Some(backend) = self.backend(&object, &id.namespace, &path.backend, &at) else {
                    continue;
                };
                let shown = format!("host {:?} path {path_str:?}", rule_host.unwrap_or("*"));
                let problem = match self.routes.get_mut(&host, kind, path_str) {
                    None => Some((
                        ProblemKind::InvalidRule,
                        format!(
                            "{at}: no primary Ingress serves {shown}, so this canary rule is ignored"
                        ),
                    )),
                    Some(route) => match &route.canary {
                        Some(other) => Some((
                            ProblemKind::RuleConflict,
                            format!(
                                "{at}: {shown} already has the canary Ingress {}; this rule is ignored",
                                other.ingress
                            ),
                        )),
                        None => {
                            let canary = CanaryRoute {
                                ingress: id.clone(),
                                rule: rule.clone(),
                                backend,
                                balancing: annotations.balancing.clone(),
                            };
                            *route = Arc::new(Route {
                                canary: Some(Arc::new(canary)),
                                ..Route::clone(route)
                            });
                            None
                        }
                    },
                };
                if let Some((kind, message)) = problem {
                    self.problems
                        .push(Problem::object(object.clone(), kind, message));
                }
            }
        }
    }
}
