//! `server-alias` in `build()`: after every Ingress's rules are in, each alias is served exactly like
//! its Ingress's first host — all of that host's routes, from every Ingress, as an nginx
//! `server_name` alias is — and gets that host's certificate. Real rules always win: an alias that is
//! some Ingress's host, or an older Ingress's alias, is reported and left alone.

use super::Builder;
use crate::model::matching::HostKey;
use crate::model::{ObjectRef, Problem, ProblemKind};

/// One Ingress's aliases, waiting for every rule to be in.
pub(super) struct PendingAliases {
    pub object: ObjectRef,
    /// The Ingress's first exact rule host; `None` when it has none.
    pub host: Option<Box<str>>,
    pub aliases: Vec<String>,
}

impl Builder<'_> {
    pub(super) fn server_aliases(&mut self) {
        for pending in std::mem::take(&mut self.server_aliases) {
            let Some(host) = pending.host else {
                self.problems.push(Problem::object(
                    pending.object,
                    ProblemKind::InvalidAnnotation,
                    "annotation server-alias needs a rule with an exact host to be an alias of; it is ignored",
                ));
                continue;
            };
            if !self.routes.has_exact_host(&host) {
                // Its rules were all refused, and reported.
                continue;
            }
            for alias in pending.aliases {
                let key = HostKey::from_rule_host(Some(&alias));
                if !self.routes.alias(&host, &key) {
                    // The first by name of the Ingresses with rules there, so every build says the same.
                    let owner = self
                        .routes
                        .host_values(&alias)
                        .filter(|r| r.host.is_some())
                        .map(|r| &r.ingress)
                        .min()
                        .map(ToString::to_string)
                        .unwrap_or_else(|| "another Ingress".into());
                    self.problems.push(Problem::object(
                        pending.object.clone(),
                        ProblemKind::RuleConflict,
                        format!("server-alias {alias:?} is ignored: host {alias:?} already has rules (of {owner})"),
                    ));
                    continue;
                }
                if self.tls_owners.contains_key(host.as_ref())
                    && let Some(cert) = self.cert_table.find(&host).cloned()
                {
                    self.cert_table.insert(&alias, cert);
                }
            }
        }
    }
}
