//! Client certificates in `build()`: each Ingress's `auth-tls-*` settings resolved against their
//! Secret, and the per-host rule. ingress-nginx applies client-certificate settings to a whole host
//! (nginx `server`), so when the Ingresses with rules for one host disagree (different settings, or
//! one has none) no single reading is safe: that host's routes answer 503 and each Ingress involved is
//! told why, while the Ingresses' other hosts keep serving.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;

use super::{Builder, Dep, name_of, namespace_of};
use crate::model::annotations::client_cert::{
    self, ClientCertAnnotation, ClientCertPolicy, ClientCertSettings, ResolveError,
};
use crate::model::matching::HostKey;
use crate::model::{Kind, ObjectRef, Policy, Problem, ProblemKind};

/// Resolutions by the Ingress's namespace and its settings, within one build.
/// With the Secrets each resolution looked up, which every Ingress using it depends on.
pub(super) type Resolved = HashMap<
    (String, ClientCertAnnotation),
    (
        Result<ClientCertPolicy, (ProblemKind, String)>,
        HashSet<Dep>,
    ),
>;

/// One Ingress's client-certificate settings as compared across a host: the Secret's namespace made
/// explicit, so `ca` and `ns/ca` written by two Ingresses of `ns` agree.
type Setting = Option<ClientCertAnnotation>;

/// The hosts (rule hosts; `Any` for rules without one and default backends) whose Ingresses disagree
/// on client certificates, with a problem for every Ingress involved.
pub(super) fn host_conflicts(ingresses: &[Arc<Ingress>]) -> (HashSet<HostKey>, Vec<Problem>) {
    let mentions_tls = |i: &Ingress| {
        i.metadata
            .annotations
            .iter()
            .flatten()
            .any(|(k, _)| k.contains("/auth-tls-"))
    };
    if !ingresses.iter().any(|i| mentions_tls(i)) {
        return (HashSet::new(), Vec::new());
    }
    let mut by_host: HashMap<HostKey, Vec<(usize, Setting)>> = HashMap::new();
    for (n, ingress) in ingresses.iter().enumerate() {
        let setting = setting_of(ingress);
        let spec = ingress.spec.as_ref();
        let mut hosts: HashSet<HostKey> = spec
            .and_then(|s| s.rules.as_ref())
            .into_iter()
            .flatten()
            .map(|r| HostKey::from_rule_host(r.host.as_deref()))
            .collect();
        if spec.is_some_and(|s| s.default_backend.is_some()) {
            hosts.insert(HostKey::Any);
        }
        for host in hosts {
            by_host.entry(host).or_default().push((n, setting.clone()));
        }
    }
    let mut conflicts = HashSet::new();
    let mut problems = Vec::new();
    for (host, settings) in by_host {
        if settings.iter().all(|(_, s)| *s == settings[0].1) {
            continue;
        }
        let label = match &host {
            HostKey::Exact(h) => h.to_string(),
            HostKey::Wildcard(s) => format!("*.{s}"),
            HostKey::Any => "(rules without host)".to_string(),
        };
        let names: Vec<String> = settings
            .iter()
            .map(|(n, _)| name_of(&ingresses[*n]).to_string())
            .collect();
        for (n, _) in &settings {
            let id = name_of(&ingresses[*n]);
            problems.push(Problem::object(
                ObjectRef::new(Kind::Ingress, &id.namespace, &id.name),
                ProblemKind::RuleConflict,
                format!(
                    "host {label}: the Ingresses {} have different auth-tls-* settings, which apply to the whole host; its routes answer 503",
                    names.join(", ")
                ),
            ));
        }
        conflicts.insert(host);
    }
    (conflicts, problems)
}

fn setting_of(ingress: &Ingress) -> Setting {
    let (annotations, _) = crate::model::annotations::parse(ingress.metadata.annotations.as_ref());
    annotations.client_cert.map(|a| match a {
        ClientCertAnnotation::Verify(s) => ClientCertAnnotation::Verify(ClientCertSettings {
            secret_namespace: Some(
                s.secret_namespace
                    .clone()
                    .unwrap_or_else(|| namespace_of(&ingress.metadata).to_string()),
            ),
            ..s
        }),
        invalid => invalid,
    })
}

impl Builder<'_> {
    /// The Ingress's policy for a rule of `host`: unavailable client certificates where the host's
    /// Ingresses disagree on them.
    pub(super) fn policy_for(&self, host: &HostKey, policy: &Arc<Policy>) -> Arc<Policy> {
        if !self.client_cert_conflicts.contains(host) {
            return policy.clone();
        }
        Arc::new(Policy {
            client_cert: Some(ClientCertPolicy::Unavailable),
            ..Policy::clone(policy)
        })
    }

    /// Client-certificate settings resolved against their Secret; every problem is reported and fails
    /// closed.
    pub(super) fn client_cert(
        &mut self,
        object: &ObjectRef,
        namespace: &str,
        annotation: &ClientCertAnnotation,
    ) -> ClientCertPolicy {
        let index = self.index;
        let key = (namespace.to_string(), annotation.clone());
        let resolved = match self.client_cert_policies.entry(key) {
            Entry::Occupied(found) => {
                // Resolved for another Ingress: this one depends on the same Secrets.
                for dep in &found.get().1 {
                    index.note(dep.clone());
                }
                &found.into_mut().0
            }
            Entry::Vacant(slot) => {
                let earlier = index.take_looked_up();
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let result = client_cert::resolve(annotation, namespace, &provider, |ns, name| {
                    index.secret(ns, name)
                })
                .map_err(|e| match e {
                    ResolveError::Missing(_) => (ProblemKind::MissingSecret, e.to_string()),
                    ResolveError::Invalid(..) | ResolveError::OtherNamespace(_) => {
                        (ProblemKind::InvalidAuthSecret, e.to_string())
                    }
                });
                let deps = index.take_looked_up();
                for dep in earlier.into_iter().chain(deps.iter().cloned()) {
                    index.note(dep);
                }
                &slot.insert((result, deps)).0
            }
        };
        match resolved {
            Ok(policy) => policy.clone(),
            Err((kind, message)) => {
                let problem = Problem::object(object.clone(), *kind, message.clone());
                self.problems.push(problem);
                ClientCertPolicy::Unavailable
            }
        }
    }
}
