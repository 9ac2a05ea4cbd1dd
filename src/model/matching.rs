//! Host and path matching exactly as the Ingress specification defines it.
//!
//! Host: exact name, then `*.suffix` covering exactly one DNS label, then rules without a host; the most
//! specific host that has any rule is the only one consulted. Path, within that host: `Exact` compares the
//! whole path; `Prefix` (and `ImplementationSpecific`) compares `/`-separated elements; the longest match
//! wins and an `Exact` match always beats a `Prefix` one of the same length. Lookups are hash-map probes,
//! one per path element, so the cost does not grow with the number of rules.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use crate::vocab::hosts::normalize_host;

/// How a rule's path is compared with the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    Exact,
    /// `Prefix`, and `ImplementationSpecific`, which Portcullis treats as `Prefix`.
    Prefix,
}

/// The routes of one host (or of "any host"), indexed for lookup.
#[derive(Debug, Clone)]
pub struct PathTable<T> {
    exact: HashMap<Box<str>, T>,
    prefix: HashMap<Box<str>, T>,
    /// `use-regex` paths, longest pattern first; consulted after exact and before prefix paths.
    regex: Vec<(regex::Regex, T)>,
}

impl<T> Default for PathTable<T> {
    fn default() -> Self {
        PathTable {
            exact: HashMap::new(),
            prefix: HashMap::new(),
            regex: Vec::new(),
        }
    }
}

impl<T> PathTable<T> {
    /// Adds a rule; if the same path of the same kind is already present, the first one stays and the
    /// rejected value is returned with a reference to the winner.
    pub fn insert(&mut self, kind: PathKind, path: &str, value: T) -> Result<(), (T, &T)> {
        let (map, key) = match kind {
            PathKind::Exact => (&mut self.exact, path),
            PathKind::Prefix => (&mut self.prefix, normalize_prefix(path)),
        };
        match map.entry(key.into()) {
            Entry::Occupied(winner) => Err((value, winner.into_mut())),
            Entry::Vacant(slot) => {
                slot.insert(value);
                Ok(())
            }
        }
    }

    /// Adds a regular-expression path (already anchored); a second rule with the same pattern loses.
    pub fn insert_regex(&mut self, pattern: regex::Regex, value: T) -> Result<(), (T, &T)> {
        match self
            .regex
            .iter()
            .position(|(r, _)| r.as_str() == pattern.as_str())
        {
            Some(i) => Err((value, &self.regex[i].1)),
            None => {
                // Stable: among patterns of equal length the older rule stays first.
                let at = self
                    .regex
                    .partition_point(|(r, _)| r.as_str().len() >= pattern.as_str().len());
                self.regex.insert(at, (pattern, value));
                Ok(())
            }
        }
    }

    /// The rule with exactly this path: a `use-regex` one (by its anchored pattern), else `kind`'s.
    pub fn get_mut(&mut self, kind: PathKind, path: &str) -> Option<&mut T> {
        let anchored = format!("^{path}");
        if let Some((_, v)) = self.regex.iter_mut().find(|(r, _)| r.as_str() == anchored) {
            return Some(v);
        }
        match kind {
            PathKind::Exact => self.exact.get_mut(path),
            PathKind::Prefix => self.prefix.get_mut(normalize_prefix(path)),
        }
    }

    pub fn lookup(&self, path: &str) -> Option<&T> {
        // `/admin//x` must not escape the `/admin` rule (and its policy) for the catch-all `/` when the
        // backend reads it as `/admin/x`: runs of slashes count as one, as nginx's merge_slashes does.
        let path = merge_slashes(path);
        let path = path.as_ref();
        if let Some(found) = self.exact.get(path) {
            return Some(found);
        }
        if let Some((_, found)) = self.regex.iter().find(|(r, _)| r.is_match(path)) {
            return Some(found);
        }
        if self.prefix.is_empty() {
            return None;
        }
        // Walk the request path's element prefixes from longest to shortest.
        let mut candidate = path.trim_end_matches('/');
        loop {
            let key = if candidate.is_empty() { "/" } else { candidate };
            if let Some(found) = self.prefix.get(key) {
                return Some(found);
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = &candidate[..candidate.rfind('/')?];
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefix.is_empty() && self.regex.is_empty()
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.exact
            .values()
            .chain(self.prefix.values())
            .chain(self.regex.iter().map(|(_, v)| v))
    }
}

/// The path with every run of `/` made one; allocates only when there is such a run.
pub fn merge_slashes(path: &str) -> Cow<'_, str> {
    if !path.contains("//") {
        return Cow::Borrowed(path);
    }
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    Cow::Owned(merged)
}

/// `/foo/` behaves exactly like `/foo` for prefix matching; `/` stays `/`.
fn normalize_prefix(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

/// A rule's host, as the table stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostKey {
    /// `foo.example.com`, lower-cased.
    Exact(Box<str>),
    /// `*.example.com`, stored as `example.com`.
    Wildcard(Box<str>),
    /// A rule without `host`.
    Any,
}

impl HostKey {
    /// Parses an Ingress rule host (already validated) into its key; matching is case-insensitive.
    pub fn from_rule_host(host: Option<&str>) -> HostKey {
        match host.map(str::to_ascii_lowercase) {
            None => HostKey::Any,
            Some(h) if h.is_empty() => HostKey::Any,
            Some(h) => match h.strip_prefix("*.") {
                Some(suffix) => HostKey::Wildcard(suffix.into()),
                None => HostKey::Exact(h.into()),
            },
        }
    }
}

/// Every host's [`PathTable`], plus the fallback for requests no rule matches. Host tables are shared
/// between generations, so a configuration that changes a few hosts copies pointers, not routes.
#[derive(Debug)]
pub struct RouteTable<T> {
    exact: HashMap<Box<str>, Arc<PathTable<T>>>,
    wildcard: HashMap<Box<str>, Arc<PathTable<T>>>,
    any: Arc<PathTable<T>>,
    default: Option<T>,
}

impl<T: Clone> Clone for RouteTable<T> {
    fn clone(&self) -> Self {
        RouteTable {
            exact: self.exact.clone(),
            wildcard: self.wildcard.clone(),
            any: self.any.clone(),
            default: self.default.clone(),
        }
    }
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any: Arc::default(),
            default: None,
        }
    }
}

impl<T: Clone> RouteTable<T> {
    pub fn insert(
        &mut self,
        host: &HostKey,
        kind: PathKind,
        path: &str,
        value: T,
    ) -> Result<(), (T, &T)> {
        self.host_table_mut(host).insert(kind, path, value)
    }

    pub fn insert_regex(
        &mut self,
        host: &HostKey,
        pattern: regex::Regex,
        value: T,
    ) -> Result<(), (T, &T)> {
        self.host_table_mut(host).insert_regex(pattern, value)
    }

    fn host_table_mut(&mut self, host: &HostKey) -> &mut PathTable<T> {
        let table = match host {
            HostKey::Exact(h) => self.exact.entry(h.clone()).or_default(),
            HostKey::Wildcard(h) => self.wildcard.entry(h.clone()).or_default(),
            HostKey::Any => &mut self.any,
        };
        Arc::make_mut(table)
    }

    /// The rule of exactly this host and path (see [`PathTable::get_mut`]).
    pub fn get_mut(&mut self, host: &HostKey, kind: PathKind, path: &str) -> Option<&mut T> {
        let table = match host {
            HostKey::Exact(h) => self.exact.get_mut(h),
            HostKey::Wildcard(h) => self.wildcard.get_mut(h),
            HostKey::Any => Some(&mut self.any),
        }?;
        Arc::make_mut(table).get_mut(kind, path)
    }

    /// Serves `alias` with the routes `host` (exact, lower-case) has now: a server alias. `false`, and
    /// nothing changes, when `alias` has rules of its own or `host` has none.
    pub fn alias(&mut self, host: &str, alias: &HostKey) -> bool {
        let Some(table) = self.exact.get(host).cloned() else {
            return false;
        };
        let (map, name) = match alias {
            HostKey::Exact(name) => (&mut self.exact, name),
            HostKey::Wildcard(name) => (&mut self.wildcard, name),
            HostKey::Any => return false,
        };
        match map.entry(name.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(table);
                true
            }
        }
    }

    /// Sets the backend for unmatched requests unless one is set already (the oldest Ingress wins).
    pub fn set_default(&mut self, value: T) -> Result<(), (T, &T)> {
        match self.default {
            Some(ref winner) => Err((value, winner)),
            None => {
                self.default = Some(value);
                Ok(())
            }
        }
    }

    /// Drops everything this host has: for `HostKey::Any`, the rules without host and the default.
    pub fn remove_host(&mut self, host: &HostKey) {
        match host {
            HostKey::Exact(h) => {
                self.exact.remove(h);
            }
            HostKey::Wildcard(h) => {
                self.wildcard.remove(h);
            }
            HostKey::Any => {
                self.any = Arc::default();
                self.default = None;
            }
        }
    }

    /// Takes every host of `other`, replacing what this table has for them; the rules without host
    /// and the default only when `other` has them.
    pub fn absorb(&mut self, other: RouteTable<T>) {
        self.exact.extend(other.exact);
        self.wildcard.extend(other.wildcard);
        if !other.any.is_empty() {
            self.any = other.any;
        }
        if other.default.is_some() {
            self.default = other.default;
        }
    }
}

impl<T> RouteTable<T> {
    /// Whether any rule names exactly this (lower-case) host.
    pub fn has_exact_host(&self, host: &str) -> bool {
        self.exact.contains_key(host)
    }

    /// Every value (each rule's and the default), in no particular order; for metrics.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .chain(std::iter::once(&self.any))
            .flat_map(|t| t.values())
            .chain(self.default.as_ref())
    }

    /// What serves unmatched requests, if anything does.
    pub fn default_value(&self) -> Option<&T> {
        self.default.as_ref()
    }

    /// Finds the route for a request. `host` is the `Host` header or `:authority` as sent (any case,
    /// optional `:port`); `path` is the request path without the query.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&T> {
        let host = normalize_host(host);
        self.host_table(&host)
            .and_then(|t| t.lookup(path))
            .or(self.default.as_ref())
    }

    /// Every value a request for this host (as sent) can reach: its host table's and the default.
    pub fn host_values(&self, host: &str) -> impl Iterator<Item = &T> {
        let host = normalize_host(host);
        self.host_table(&host)
            .into_iter()
            .flat_map(|t| t.values())
            .chain(self.default.as_ref())
    }

    /// The most specific host table that exists for this (normalised) host.
    fn host_table(&self, host: &str) -> Option<&PathTable<T>> {
        if let Some(t) = self.exact.get(host) {
            return Some(t.as_ref());
        }
        // `*.example.com` covers exactly one label, and an empty one (`.example.com`) is none.
        if let Some((label, suffix)) = host.split_once('.')
            && !label.is_empty()
            && let Some(t) = self.wildcard.get(suffix)
        {
            return Some(t.as_ref());
        }
        (!self.any.is_empty()).then_some(self.any.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rules: &[(PathKind, &str)]) -> PathTable<String> {
        let mut t = PathTable::default();
        for (kind, path) in rules {
            t.insert(*kind, path, format!("{kind:?} {path}"))
                .expect("no duplicate in test rules");
        }
        t
    }

    /// One row of the examples table in the Kubernetes Ingress documentation.
    fn check(rules: &[(PathKind, &str)], request: &str, expected: Option<(PathKind, &str)>) {
        let got = table(rules).lookup(request).cloned();
        let want = expected.map(|(k, p)| format!("{k:?} {p}"));
        assert_eq!(got, want, "rules {rules:?}, request {request}");
    }

    use PathKind::{Exact, Prefix};

    #[test]
    fn a_wildcard_never_covers_an_empty_label() {
        let mut t: RouteTable<&str> = RouteTable::default();
        t.insert(
            &HostKey::from_rule_host(Some("*.example.com")),
            PathKind::Prefix,
            "/",
            "wild",
        )
        .unwrap();
        t.insert(&HostKey::Any, PathKind::Prefix, "/", "any")
            .unwrap();
        assert_eq!(t.lookup("a.example.com", "/"), Some(&"wild"));
        assert_eq!(t.lookup(".example.com", "/"), Some(&"any"));
    }

    #[test]
    fn runs_of_slashes_cannot_escape_a_rule() {
        let rules = [
            (PathKind::Prefix, "/"),
            (PathKind::Prefix, "/admin"),
            (PathKind::Exact, "/exact/x"),
        ];
        check(&rules, "//admin", Some((PathKind::Prefix, "/admin")));
        check(&rules, "/admin//x", Some((PathKind::Prefix, "/admin")));
        check(&rules, "/exact//x", Some((PathKind::Exact, "/exact/x")));
        check(&rules, "//", Some((PathKind::Prefix, "/")));
        assert_eq!(merge_slashes("/a///b//"), "/a/b/");
    }

    #[test]
    fn prefix_root_matches_all_paths() {
        for req in ["/", "/foo", "/foo/bar", "/a/b/c/", "//"] {
            check(&[(Prefix, "/")], req, Some((Prefix, "/")));
        }
    }

    #[test]
    fn exact_matches_only_the_same_path() {
        check(&[(Exact, "/foo")], "/foo", Some((Exact, "/foo")));
        check(&[(Exact, "/foo")], "/bar", None);
        check(&[(Exact, "/foo")], "/foo/", None);
        check(&[(Exact, "/foo/")], "/foo", None);
    }

    #[test]
    fn exact_is_case_sensitive() {
        check(&[(Exact, "/foo")], "/FOO", None);
        check(&[(Prefix, "/foo")], "/FOO", None);
    }

    #[test]
    fn prefix_ignores_trailing_slash_of_rule_and_request() {
        check(&[(Prefix, "/foo")], "/foo", Some((Prefix, "/foo")));
        check(&[(Prefix, "/foo")], "/foo/", Some((Prefix, "/foo")));
        check(&[(Prefix, "/foo/")], "/foo", Some((Prefix, "/foo/")));
        check(&[(Prefix, "/foo/")], "/foo/", Some((Prefix, "/foo/")));
        check(
            &[(Prefix, "/aaa/bbb/")],
            "/aaa/bbb",
            Some((Prefix, "/aaa/bbb/")),
        );
        check(
            &[(Prefix, "/aaa/bbb")],
            "/aaa/bbb/",
            Some((Prefix, "/aaa/bbb")),
        );
    }

    #[test]
    fn prefix_does_not_match_partial_segment() {
        check(&[(Prefix, "/aaa/bb")], "/aaa/bbb", None);
        check(&[(Prefix, "/aaa/bbb")], "/aaa/bbbxyz", None);
    }

    #[test]
    fn prefix_matches_exact_path_and_subpaths() {
        check(
            &[(Prefix, "/aaa/bbb")],
            "/aaa/bbb",
            Some((Prefix, "/aaa/bbb")),
        );
        check(
            &[(Prefix, "/aaa/bbb")],
            "/aaa/bbb/ccc",
            Some((Prefix, "/aaa/bbb")),
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let rules = [(Prefix, "/"), (Prefix, "/aaa")];
        check(&rules, "/aaa/ccc", Some((Prefix, "/aaa")));
        let rules = [(Prefix, "/"), (Prefix, "/aaa"), (Prefix, "/aaa/bbb")];
        check(&rules, "/aaa/bbb", Some((Prefix, "/aaa/bbb")));
        check(&rules, "/ccc", Some((Prefix, "/")));
    }

    #[test]
    fn unmatched_path_falls_through() {
        check(&[(Prefix, "/aaa")], "/ccc", None);
    }

    #[test]
    fn exact_beats_prefix_of_equal_length() {
        let rules = [(Prefix, "/foo"), (Exact, "/foo")];
        check(&rules, "/foo", Some((Exact, "/foo")));
        check(&rules, "/foo/bar", Some((Prefix, "/foo")));
    }

    #[test]
    fn longer_prefix_beats_shorter_exact_elsewhere() {
        let rules = [(Exact, "/foo"), (Prefix, "/foo/bar")];
        check(&rules, "/foo/bar/baz", Some((Prefix, "/foo/bar")));
    }

    #[test]
    fn query_string_is_never_part_of_the_path() {
        // The caller passes the path without the query; a literal '?' in a rule never matches it.
        check(&[(Exact, "/foo")], "/foo", Some((Exact, "/foo")));
    }

    #[test]
    fn duplicate_rule_keeps_the_first() {
        let mut t = PathTable::default();
        t.insert(Prefix, "/foo", 1).unwrap();
        let (rejected, winner) = t.insert(Prefix, "/foo/", 2).unwrap_err();
        assert_eq!((rejected, *winner), (2, 1));
        assert!(
            t.insert(Exact, "/foo", 3).is_ok(),
            "exact and prefix of one path are different rules"
        );
    }

    fn routes(rules: &[(Option<&str>, &str)]) -> RouteTable<String> {
        let mut t = RouteTable::default();
        for (host, path) in rules {
            let key = HostKey::from_rule_host(*host);
            t.insert(
                &key,
                Prefix,
                path,
                format!("{} {path}", host.unwrap_or("*")),
            )
            .unwrap();
        }
        t
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let t = routes(&[(Some("*.foo.com"), "/")]);
        assert_eq!(
            t.lookup("bar.foo.com", "/").map(String::as_str),
            Some("*.foo.com /")
        );
        assert_eq!(t.lookup("baz.bar.foo.com", "/"), None);
        assert_eq!(t.lookup("foo.com", "/"), None);
    }

    #[test]
    fn host_matching_ignores_case_port_and_trailing_dot() {
        let t = routes(&[(Some("Foo.Bar.com"), "/")]);
        for host in [
            "foo.bar.com",
            "FOO.BAR.COM",
            "foo.bar.com:8443",
            "foo.bar.com.",
        ] {
            assert_eq!(
                t.lookup(host, "/x").map(String::as_str),
                Some("Foo.Bar.com /"),
                "{host}"
            );
        }
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let t = routes(&[
            (None, "/"),
            (Some("*.foo.com"), "/"),
            (Some("a.foo.com"), "/"),
        ]);
        assert_eq!(
            t.lookup("a.foo.com", "/").map(String::as_str),
            Some("a.foo.com /")
        );
        assert_eq!(
            t.lookup("b.foo.com", "/").map(String::as_str),
            Some("*.foo.com /")
        );
        assert_eq!(t.lookup("other.org", "/").map(String::as_str), Some("* /"));
    }

    #[test]
    fn most_specific_host_is_the_only_one_consulted() {
        let t = routes(&[(None, "/"), (Some("a.foo.com"), "/api")]);
        assert_eq!(t.lookup("a.foo.com", "/web"), None);
    }

    #[test]
    fn default_backend_serves_unmatched_requests() {
        let mut t = routes(&[(Some("a.foo.com"), "/api")]);
        t.set_default("default".to_string()).unwrap();
        assert_eq!(
            t.lookup("a.foo.com", "/web").map(String::as_str),
            Some("default")
        );
        assert_eq!(
            t.lookup("nowhere", "/").map(String::as_str),
            Some("default")
        );
        assert!(t.set_default("second".to_string()).is_err());
    }

    #[test]
    fn regex_paths_come_after_exact_and_before_prefix_longest_first() {
        let mut t = table(&[(Exact, "/api/v1"), (Prefix, "/api")]);
        let re = |p: &str| regex::Regex::new(&format!("(?i)^{p}")).unwrap();
        t.insert_regex(re("/api(/|$)(.*)"), "short".into()).unwrap();
        t.insert_regex(re("/api/v[0-9]+/(.*)"), "long".into())
            .unwrap();
        assert!(t.insert_regex(re("/api(/|$)(.*)"), "dup".into()).is_err());
        assert_eq!(
            t.lookup("/api/v1").map(String::as_str),
            Some("Exact /api/v1")
        );
        assert_eq!(t.lookup("/api/v2/users").map(String::as_str), Some("long"));
        assert_eq!(
            t.lookup("/API/x").map(String::as_str),
            Some("short"),
            "regex paths ignore case, as in ingress-nginx"
        );
        assert_eq!(t.lookup("/apix").map(String::as_str), None);
    }
}
