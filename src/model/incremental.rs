//! Builds a new configuration from the previous one by translating again only the Ingresses a change
//! can affect, so one changed object among 10,000 costs about as much as one among ten.
//!
//! Every translation records, per Ingress, the objects it looked up (present or not) and what it
//! competes for with other Ingresses: hosts and ACME Secrets ([`Claim`]). A change re-translates the
//! Ingresses that changed or looked up a changed object, together with every Ingress sharing a claim
//! with them (old claims and new ones, until no claim is shared with one left out). What those
//! Ingresses held is taken out of the previous tables and their new translation put in. Changes whose
//! reach is global (IngressClasses, settings, the default certificate's Secret, a certificate's
//! validity boundary passing) fall back to [`build`](super::build), which this must always equal.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::Metadata;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::acme::WantedCertificate;
use super::build::{
    Age, Claim, Dep, Footprint, Index, Part, Selection, age_of, build_traced, fill_file, key_of,
    name_of, namespace_of, service_of_slice, translate,
};
use super::matching::HostKey;
use super::{BuildOptions, CertificateInfo, Config, NamespacedName, Problem, Snapshot};
use crate::tls::CertStore;

/// How a configuration was made, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuilt {
    All,
    /// This many Ingresses were translated again.
    Some(usize),
}

/// The previous translation and what each Ingress contributed to it.
#[derive(Default)]
pub struct Incremental {
    state: Option<State>,
}

struct State {
    snapshot: Arc<Snapshot>,
    options: BuildOptions,
    selection: Selection,
    config: Arc<Config>,
    /// Our Ingresses, with what each contributed.
    records: HashMap<NamespacedName, Record>,
    by_claim: HashMap<Claim, HashSet<NamespacedName>>,
    by_dep: HashMap<Dep, HashSet<NamespacedName>>,
    /// What no Ingress caused (the default certificate's Secret).
    global: Footprint,
    /// Every Ingress's problems, counted, since several can report the same one.
    problems: BTreeMap<Problem, usize>,
    certificates: BTreeMap<(NamespacedName, String), CertificateInfo>,
    acme: BTreeMap<(Age, usize), WantedCertificate>,
    ingresses: BTreeMap<Age, NamespacedName>,
    /// How many Ingresses (or the default certificate) use each Secret's certificate.
    cert_users: BTreeMap<NamespacedName, usize>,
    /// When a loaded certificate becomes valid or expires, counted.
    boundaries: BTreeMap<i64, usize>,
    /// The `now` of the last full build; certificates' validity was judged then or later.
    judged_at: i64,
}

struct Record {
    ingress: Arc<Ingress>,
    age: Age,
    footprint: Footprint,
}

impl Incremental {
    /// The configuration of `snapshot`: equal to `build(snapshot, ..)`, built from the previous one.
    pub fn apply(
        &mut self,
        snapshot: &Arc<Snapshot>,
        options: &BuildOptions,
        certs: &mut CertStore,
        now: i64,
        generation: u64,
    ) -> (Arc<Config>, Rebuilt) {
        if let Some(state) = self.state.as_mut()
            && same_options(&state.options, options)
            && let Some(done) = state.update(snapshot, certs, now, generation)
        {
            return done;
        }
        let (config, selection, part) = build_traced(snapshot, options, certs, now, generation);
        let config = Arc::new(config);
        self.state = Some(State::new(
            snapshot.clone(),
            options.clone(),
            selection,
            config.clone(),
            part,
            now,
        ));
        (config, Rebuilt::All)
    }
}

fn same_options(a: &BuildOptions, b: &BuildOptions) -> bool {
    a.ingress_class == b.ingress_class
        && a.watch_without_class == b.watch_without_class
        && Arc::ptr_eq(&a.default_cert, &b.default_cert)
        && (Arc::ptr_eq(&a.settings, &b.settings) || a.settings == b.settings)
}

impl State {
    fn new(
        snapshot: Arc<Snapshot>,
        options: BuildOptions,
        selection: Selection,
        config: Arc<Config>,
        mut part: Part,
        now: i64,
    ) -> State {
        let mut state = State {
            snapshot,
            options,
            selection,
            config,
            records: HashMap::new(),
            by_claim: HashMap::new(),
            by_dep: HashMap::new(),
            global: Footprint::default(),
            problems: BTreeMap::new(),
            certificates: BTreeMap::new(),
            acme: BTreeMap::new(),
            ingresses: BTreeMap::new(),
            cert_users: BTreeMap::new(),
            boundaries: BTreeMap::new(),
            judged_at: now,
        };
        let global = std::mem::take(&mut part.global);
        for id in &global.used_secrets {
            *state.cert_users.entry(id.clone()).or_default() += 1;
        }
        for b in &global.boundaries {
            *state.boundaries.entry(*b).or_default() += 1;
        }
        state.global = global;
        for ingress in std::mem::take(&mut part.ingresses) {
            let id = name_of(&ingress);
            let footprint = part.footprints.remove(&id).unwrap_or_default();
            state.insert(id, ingress, footprint);
        }
        state
    }

    /// `None` when the change reaches too far, and everything must be built again.
    fn update(
        &mut self,
        snapshot: &Arc<Snapshot>,
        certs: &mut CertStore,
        now: i64,
        generation: u64,
    ) -> Option<(Arc<Config>, Rebuilt)> {
        let old = self.snapshot.clone();
        if !changes(&old.ingress_classes, &snapshot.ingress_classes).is_empty() {
            return None;
        }
        // A certificate became valid or expired since its problems were judged.
        if now > self.judged_at
            && self
                .boundaries
                .range(self.judged_at + 1..=now)
                .next()
                .is_some()
        {
            return None;
        }
        let default_secret = self.options.settings.tls.default_certificate.as_ref();

        let mut seeds: BTreeSet<NamespacedName> = BTreeSet::new();
        let mut changed_ingresses: HashMap<NamespacedName, Option<Arc<Ingress>>> = HashMap::new();
        for (before, after) in changes(&old.ingresses, &snapshot.ingresses) {
            let Some(id) = after.or(before).map(|i| name_of(i)) else {
                continue;
            };
            let ours_now = after.filter(|i| self.selection.takes(i, &self.options));
            if self.records.contains_key(&id) || ours_now.is_some() {
                seeds.insert(id.clone());
            }
            changed_ingresses.insert(id, ours_now.cloned());
        }
        for (before, after) in changes(&old.secrets, &snapshot.secrets) {
            let id = key_of(after.or(before)?.metadata());
            if default_secret.is_some_and(|d| d.namespace == id.namespace && d.name == id.name) {
                return None;
            }
            self.seed(&mut seeds, &Dep::Secret(id));
        }
        for (before, after) in changes(&old.services, &snapshot.services) {
            let id = key_of(after.or(before)?.metadata());
            self.seed(&mut seeds, &Dep::Service(id));
        }
        for (before, after) in changes(&old.endpoint_slices, &snapshot.endpoint_slices) {
            for slice in before.into_iter().chain(after) {
                if let Some(service) = service_of_slice(slice) {
                    let id = NamespacedName::new(namespace_of(&slice.metadata), service);
                    self.seed(&mut seeds, &Dep::Slices(id));
                }
            }
        }
        // Past this, translating everything again is as quick.
        if seeds.len() > self.records.len() / 2 + 16 {
            return None;
        }

        let index = Index::new(snapshot);
        let current = |id: &NamespacedName| match changed_ingresses.get(id) {
            Some(now) => now.clone(),
            None => self.records.get(id).map(|r| r.ingress.clone()),
        };
        let mut group: BTreeSet<NamespacedName> = BTreeSet::new();
        let mut pending: Vec<NamespacedName> = seeds.into_iter().collect();
        let part = loop {
            while let Some(id) = pending.pop() {
                if !group.insert(id.clone()) {
                    continue;
                }
                if let Some(record) = self.records.get(&id) {
                    self.sharing(&record.footprint, &group, &mut pending);
                }
            }
            let ingresses = group.iter().filter_map(&current).collect();
            let part = translate(
                &index,
                &snapshot.origins,
                ingresses,
                &self.options,
                certs,
                now,
            );
            // A new claim shared with an Ingress left out: translate that one (and its own) too.
            for footprint in part.footprints.values() {
                self.sharing(footprint, &group, &mut pending);
            }
            if pending.is_empty() {
                break part;
            }
        };

        let mut routes = (*self.config.routes).clone();
        let mut cert_table = (*self.config.certs).clone();
        let mut passthrough = (*self.config.passthrough).clone();
        let mut unused = Vec::new();
        // What the group had, to tell whether the lists of Ingresses and certificates changed.
        let mut before = (Vec::new(), Vec::new());
        for id in &group {
            let Some(record) = self.remove(id, &mut unused) else {
                continue;
            };
            before.0.push((record.age.clone(), id.clone()));
            before
                .1
                .extend(record.footprint.certificates.iter().cloned());
            for claim in &record.footprint.claims {
                if let Claim::Host(host) = claim {
                    routes.remove_host(host);
                    match host {
                        HostKey::Exact(h) => {
                            cert_table.remove(h);
                            passthrough.remove(h);
                        }
                        HostKey::Wildcard(suffix) => cert_table.remove(&format!("*.{suffix}")),
                        HostKey::Any => {}
                    }
                }
            }
        }
        let Part {
            ingresses,
            routes: new_routes,
            cert_table: new_certs,
            passthrough: new_passthrough,
            mut footprints,
            ..
        } = part;
        routes.absorb(new_routes);
        cert_table.absorb(new_certs);
        passthrough.absorb(new_passthrough);
        let translated = ingresses.len();
        let mut after = (Vec::new(), Vec::new());
        for ingress in ingresses {
            let id = name_of(&ingress);
            let footprint = footprints.remove(&id).unwrap_or_default();
            after.0.push((age_of(&ingress), id.clone()));
            after.1.extend(footprint.certificates.iter().cloned());
            self.insert(id, ingress, footprint);
        }
        for list in [&mut before.0, &mut after.0] {
            list.sort();
        }
        for list in [&mut before.1, &mut after.1] {
            list.sort_by(|a, b| (&a.secret, &a.host).cmp(&(&b.secret, &b.host)));
        }
        let ingresses_list = match before.0 == after.0 {
            true => self.config.ingresses.clone(),
            false => self.ingresses.values().cloned().collect(),
        };
        let certificates_list = match before.1 == after.1 {
            true => self.config.certificates.clone(),
            false => self.certificates.values().cloned().collect(),
        };
        for id in unused {
            if !self.cert_users.contains_key(&id) {
                certs.forget(&id);
            }
        }

        let mut problems = snapshot.problems.clone();
        for problem in &mut problems {
            fill_file(problem, &snapshot.origins);
        }
        problems.extend(self.selection.problems.iter().cloned());
        problems.extend(self.global.problems.iter().cloned());
        problems.extend(self.problems.keys().cloned());
        problems.sort();
        problems.dedup();
        let config = Arc::new(Config {
            generation,
            routes: Arc::new(routes),
            certs: Arc::new(cert_table),
            ingresses: ingresses_list,
            certificates: certificates_list,
            problems,
            settings: self.options.settings.clone(),
            acme: self.acme.values().cloned().collect(),
            passthrough: Arc::new(passthrough),
            gateway: Arc::default(),
        });
        self.snapshot = snapshot.clone();
        self.config = config.clone();
        Some((config, Rebuilt::Some(translated)))
    }

    /// Adds the Ingresses that looked up `dep`.
    fn seed(&self, seeds: &mut BTreeSet<NamespacedName>, dep: &Dep) {
        if let Some(users) = self.by_dep.get(dep) {
            seeds.extend(users.iter().cloned());
        }
    }

    /// Queues the Ingresses outside `group` that share a claim of `footprint`.
    fn sharing(
        &self,
        footprint: &Footprint,
        group: &BTreeSet<NamespacedName>,
        pending: &mut Vec<NamespacedName>,
    ) {
        for claim in &footprint.claims {
            for other in self.by_claim.get(claim).into_iter().flatten() {
                if !group.contains(other) {
                    pending.push(other.clone());
                }
            }
        }
    }

    fn insert(&mut self, id: NamespacedName, ingress: Arc<Ingress>, footprint: Footprint) {
        let age = age_of(&ingress);
        for claim in &footprint.claims {
            self.by_claim
                .entry(claim.clone())
                .or_default()
                .insert(id.clone());
        }
        for dep in &footprint.deps {
            self.by_dep
                .entry(dep.clone())
                .or_default()
                .insert(id.clone());
        }
        for problem in &footprint.problems {
            *self.problems.entry(problem.clone()).or_default() += 1;
        }
        for cert in &footprint.certificates {
            self.certificates
                .insert((cert.secret.clone(), cert.host.clone()), cert.clone());
        }
        for (n, wanted) in footprint.acme.iter().enumerate() {
            self.acme.insert((age.clone(), n), wanted.clone());
        }
        for secret in &footprint.used_secrets {
            *self.cert_users.entry(secret.clone()).or_default() += 1;
        }
        for b in &footprint.boundaries {
            *self.boundaries.entry(*b).or_default() += 1;
        }
        self.ingresses.insert(age.clone(), id.clone());
        self.records.insert(
            id,
            Record {
                ingress,
                age,
                footprint,
            },
        );
    }

    /// Takes an Ingress's record out of every index; Secrets it was the last to use go to `unused`.
    fn remove(&mut self, id: &NamespacedName, unused: &mut Vec<NamespacedName>) -> Option<Record> {
        let record = self.records.remove(id)?;
        let f = &record.footprint;
        for claim in &f.claims {
            remove_from(&mut self.by_claim, claim, id);
        }
        for dep in &f.deps {
            remove_from(&mut self.by_dep, dep, id);
        }
        for problem in &f.problems {
            self.problems.decrement(problem);
        }
        for cert in &f.certificates {
            self.certificates
                .remove(&(cert.secret.clone(), cert.host.clone()));
        }
        for n in 0..f.acme.len() {
            self.acme.remove(&(record.age.clone(), n));
        }
        for secret in &f.used_secrets {
            if self.cert_users.decrement(secret) {
                unused.push(secret.clone());
            }
        }
        for b in &f.boundaries {
            self.boundaries.decrement(b);
        }
        self.ingresses.remove(&record.age);
        Some(record)
    }
}

fn remove_from<K: std::hash::Hash + Eq>(
    index: &mut HashMap<K, HashSet<NamespacedName>>,
    key: &K,
    id: &NamespacedName,
) {
    if let Some(set) = index.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// A multiset: counts one down, true when that was the last.
trait Counts<K> {
    fn decrement(&mut self, key: &K) -> bool;
}

impl<K: Ord + Clone> Counts<K> for BTreeMap<K, usize> {
    fn decrement(&mut self, key: &K) -> bool {
        match self.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.remove(key);
                true
            }
            None => false,
        }
    }
}

/// One object's versions before and after a change; `None` where it did not exist.
type Change<'a, T> = (Option<&'a Arc<T>>, Option<&'a Arc<T>>);

/// The objects that were added, changed (a new `Arc`) or removed.
fn changes<'a, T: Metadata<Ty = ObjectMeta>>(
    old: &'a [Arc<T>],
    new: &'a [Arc<T>],
) -> Vec<Change<'a, T>> {
    let key = |o: &'a Arc<T>| {
        let meta = o.metadata();
        (namespace_of(meta), meta.name.as_deref().unwrap_or(""))
    };
    let before: foldhash::HashMap<_, &Arc<T>> = old.iter().map(|o| (key(o), o)).collect();
    let mut after: foldhash::HashSet<(&str, &str)> = foldhash::HashSet::default();
    after.reserve(new.len());
    let mut out = Vec::new();
    for object in new {
        let k = key(object);
        after.insert(k);
        match before.get(&k) {
            Some(b) if Arc::ptr_eq(b, object) => {}
            b => out.push((b.copied(), Some(object))),
        }
    }
    for object in old {
        if !after.contains(&key(object)) {
            out.push((Some(object), None));
        }
    }
    out
}

#[cfg(test)]
mod tests;
