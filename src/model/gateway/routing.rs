//! HTTPRoute matching as the Gateway API specifies it, over plain data. A listener's rules are grouped
//! by the hostname they serve (route hostnames intersected with the listener's): exact names first, then
//! wildcards from the longest suffix, then rules for any host. Within a group the first rule that
//! matches the request wins, in the spec's precedence order: an `Exact` path, then the longest path
//! (`PathPrefix` before `RegularExpression` of the same length), a method match, more header
//! matches, more query-parameter matches, then the oldest route, its namespace/name, and the order of
//! rules and matches in it.

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, Method};

use super::hostnames::{self, Hostname};
use crate::model::matching::merge_slashes;

/// How one request field is compared.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(Box<str>),
    /// Anchored at both ends.
    Regex(regex::Regex),
}

impl ValueMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(v) => **v == *value,
            ValueMatch::Regex(r) => r.is_match(value),
        }
    }
}

/// `matches[].path`.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(Box<str>),
    /// Element-wise: `/a` matches `/a`, `/a/` and `/a/b`, never `/ab`. Stored without a trailing `/`.
    Prefix(Box<str>),
    /// Anchored at both ends.
    Regex(regex::Regex),
}

impl PathMatch {
    pub fn prefix(value: &str) -> PathMatch {
        let trimmed = value.trim_end_matches('/');
        PathMatch::Prefix(trimmed.into())
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => **p == *path,
            PathMatch::Prefix(p) => {
                path.starts_with(&**p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }

    /// Exact before everything, then longer paths; a prefix before a pattern of the same length.
    fn precedence(&self) -> (bool, usize, bool) {
        match self {
            PathMatch::Exact(p) => (true, p.len(), true),
            // `/` is stored empty; it is the shortest prefix.
            PathMatch::Prefix(p) => (false, p.len().max(1), true),
            PathMatch::Regex(r) => (false, r.as_str().len(), false),
        }
    }
}

/// One entry of `matches[]`: every condition must hold.
#[derive(Debug, Clone)]
pub struct RequestMatch {
    pub path: PathMatch,
    pub method: Option<Method>,
    pub headers: Vec<(HeaderName, ValueMatch)>,
    pub query: Vec<(Box<str>, ValueMatch)>,
}

impl RequestMatch {
    /// The spec's default: `PathPrefix /`.
    pub fn any() -> RequestMatch {
        RequestMatch {
            path: PathMatch::prefix("/"),
            method: None,
            headers: Vec::new(),
            query: Vec::new(),
        }
    }

    pub fn matches(&self, req: &RequestParts<'_>) -> bool {
        self.path.matches(req.path)
            && self.method.as_ref().is_none_or(|m| m == req.method)
            && self.headers.iter().all(|(name, value)| {
                req.headers
                    .get_all(name)
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| value.matches(v)))
            })
            && self.query.iter().all(|(name, value)| {
                first_query_value(req.query, name).is_some_and(|v| value.matches(v))
            })
    }
}

/// The parts of a request that matching reads.
pub struct RequestParts<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// A repeated parameter is matched by its first value, as the spec asks.
fn first_query_value<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Where a rule comes from, for the tie-breaks after the match itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleOrder {
    /// The route's creation time (Unix seconds).
    pub created: i64,
    pub namespace: String,
    pub name: String,
    pub rule: usize,
    pub matched: usize,
}

/// One match of one rule, with the hostname it serves and what it leads to.
#[derive(Debug, Clone)]
pub struct Candidate<T> {
    pub hostname: Option<Hostname>,
    pub matcher: RequestMatch,
    pub order: RuleOrder,
    pub value: T,
}

type Entries<T> = Vec<(RequestMatch, T)>;

/// The rules one listener (or several listeners sharing a hostname-isolated port) serves.
#[derive(Debug)]
pub struct HostRules<T> {
    exact: HashMap<Box<str>, Entries<T>>,
    /// Longest suffix first.
    wildcard: Vec<(Box<str>, Entries<T>)>,
    any: Entries<T>,
}

impl<T> Default for HostRules<T> {
    fn default() -> Self {
        HostRules {
            exact: HashMap::new(),
            wildcard: Vec::new(),
            any: Vec::new(),
        }
    }
}

impl<T> HostRules<T> {
    pub fn new(mut candidates: Vec<Candidate<T>>) -> HostRules<T> {
        candidates.sort_by(|a, b| {
            let key = |c: &Candidate<T>| {
                let (exact, len, prefix) = c.matcher.path.precedence();
                std::cmp::Reverse((
                    exact,
                    len,
                    prefix,
                    c.matcher.method.is_some(),
                    c.matcher.headers.len(),
                    c.matcher.query.len(),
                ))
            };
            key(a).cmp(&key(b)).then_with(|| a.order.cmp(&b.order))
        });
        let mut rules = HostRules::default();
        for c in candidates {
            let entry = (c.matcher, c.value);
            match c.hostname {
                None => rules.any.push(entry),
                Some(Hostname::Exact(h)) => rules.exact.entry(h).or_default().push(entry),
                Some(Hostname::Wildcard(s)) => {
                    match rules.wildcard.iter_mut().find(|(w, _)| *w == s) {
                        Some((_, entries)) => entries.push(entry),
                        None => rules.wildcard.push((s, vec![entry])),
                    }
                }
            }
        }
        rules
            .wildcard
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        rules
    }

    /// The value of the first rule matching a request for `host` (lower-case, without port).
    pub fn lookup(&self, host: &str, req: &RequestParts<'_>) -> Option<&T> {
        let path = merge_slashes(req.path);
        let req = RequestParts {
            path: &path,
            ..*req
        };
        let first = |entries: &'_ Entries<T>| -> Option<usize> {
            entries.iter().position(|(m, _)| m.matches(&req))
        };
        if let Some(entries) = self.exact.get(host)
            && let Some(i) = first(entries)
        {
            return Some(&entries[i].1);
        }
        for (suffix, entries) in &self.wildcard {
            if hostnames::covers(suffix, host)
                && let Some(i) = first(entries)
            {
                return Some(&entries[i].1);
            }
        }
        first(&self.any).map(|i| &self.any[i].1)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.is_empty()
    }

    /// Every rule's value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        let hosts = self
            .exact
            .values()
            .chain(self.wildcard.iter().map(|(_, e)| e));
        hosts.chain([&self.any]).flatten().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(name: &str, created: i64, rule: usize) -> RuleOrder {
        RuleOrder {
            created,
            namespace: "ns".into(),
            name: name.into(),
            rule,
            matched: 0,
        }
    }

    fn path(m: PathMatch) -> RequestMatch {
        RequestMatch {
            path: m,
            ..RequestMatch::any()
        }
    }

    fn candidate(
        host: Option<&str>,
        matcher: RequestMatch,
        value: &'static str,
    ) -> Candidate<&'static str> {
        Candidate {
            hostname: host.map(Hostname::parse),
            matcher,
            order: order(value, 0, 0),
            value,
        }
    }

    fn get<'a>(
        rules: &'a HostRules<&'static str>,
        host: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Option<&'a str> {
        let (p, q) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let req = RequestParts {
            path: p,
            query: q,
            method: &Method::GET,
            headers: &map,
        };
        rules.lookup(host, &req).copied()
    }

    #[test]
    fn prefixes_match_whole_path_elements() {
        let m = PathMatch::prefix("/foo/");
        assert!(m.matches("/foo") && m.matches("/foo/") && m.matches("/foo/bar"));
        assert!(!m.matches("/foobar"));
        let root = PathMatch::prefix("/");
        assert!(root.matches("/") && root.matches("/x"));
    }

    #[test]
    fn exact_beats_longer_prefix_and_longer_prefix_beats_shorter() {
        let rules = HostRules::new(vec![
            candidate(None, path(PathMatch::prefix("/")), "root"),
            candidate(None, path(PathMatch::prefix("/a/b")), "ab"),
            candidate(None, path(PathMatch::Exact("/a".into())), "exact"),
            candidate(None, path(PathMatch::prefix("/a")), "a"),
        ]);
        assert_eq!(get(&rules, "x", "/a", &[]), Some("exact"));
        assert_eq!(get(&rules, "x", "/a/", &[]), Some("a"));
        assert_eq!(get(&rules, "x", "/a/b/c", &[]), Some("ab"));
        assert_eq!(get(&rules, "x", "/z", &[]), Some("root"));
        assert_eq!(get(&rules, "x", "/a//b", &[]), Some("ab"), "slashes merged");
    }

    #[test]
    fn more_header_and_query_matches_win_among_equal_paths() {
        let header = |v: &str| {
            (
                HeaderName::from_static("version"),
                ValueMatch::Exact(v.into()),
            )
        };
        let rules = HostRules::new(vec![
            candidate(None, RequestMatch::any(), "plain"),
            candidate(
                None,
                RequestMatch {
                    headers: vec![header("two")],
                    ..RequestMatch::any()
                },
                "v2",
            ),
            candidate(
                None,
                RequestMatch {
                    headers: vec![
                        header("two"),
                        (
                            HeaderName::from_static("color"),
                            ValueMatch::Exact("red".into()),
                        ),
                    ],
                    ..RequestMatch::any()
                },
                "v2-red",
            ),
            candidate(
                None,
                RequestMatch {
                    query: vec![("animal".into(), ValueMatch::Exact("whale".into()))],
                    ..RequestMatch::any()
                },
                "whale",
            ),
        ]);
        assert_eq!(get(&rules, "h", "/", &[]), Some("plain"));
        assert_eq!(get(&rules, "h", "/", &[("Version", "two")]), Some("v2"));
        assert_eq!(
            get(&rules, "h", "/", &[("version", "two"), ("color", "red")]),
            Some("v2-red")
        );
        assert_eq!(get(&rules, "h", "/?animal=whale", &[]), Some("whale"));
        assert_eq!(
            get(&rules, "h", "/?animal=dolphin&animal=whale", &[]),
            Some("plain"),
            "first value counts"
        );
    }

    #[test]
    fn a_method_match_beats_header_matches() {
        let post = RequestMatch {
            method: Some(Method::POST),
            ..RequestMatch::any()
        };
        let get_only = RequestMatch {
            method: Some(Method::GET),
            ..RequestMatch::any()
        };
        let header = RequestMatch {
            headers: vec![(HeaderName::from_static("x"), ValueMatch::Exact("1".into()))],
            ..RequestMatch::any()
        };
        let rules = HostRules::new(vec![
            candidate(None, header, "header"),
            candidate(None, post, "post"),
            candidate(None, get_only, "get"),
        ]);
        assert_eq!(get(&rules, "h", "/", &[("x", "1")]), Some("get"));
    }

    #[test]
    fn the_oldest_route_wins_a_tie() {
        let mut young = candidate(None, RequestMatch::any(), "young");
        young.order = order("a", 20, 0);
        let mut old = candidate(None, RequestMatch::any(), "old");
        old.order = order("z", 10, 0);
        let rules = HostRules::new(vec![young, old]);
        assert_eq!(get(&rules, "h", "/", &[]), Some("old"));
    }

    #[test]
    fn a_request_falls_from_its_exact_host_to_wildcards_to_any_host() {
        let rules = HostRules::new(vec![
            candidate(
                Some("foo.example.com"),
                path(PathMatch::prefix("/only")),
                "foo",
            ),
            candidate(Some("*.example.com"), path(PathMatch::prefix("/")), "wild"),
            candidate(
                Some("*.b.example.com"),
                path(PathMatch::prefix("/")),
                "wild-b",
            ),
            candidate(None, path(PathMatch::prefix("/")), "any"),
        ]);
        assert_eq!(get(&rules, "foo.example.com", "/only/x", &[]), Some("foo"));
        assert_eq!(get(&rules, "foo.example.com", "/", &[]), Some("wild"));
        assert_eq!(get(&rules, "a.b.example.com", "/", &[]), Some("wild-b"));
        assert_eq!(get(&rules, "example.com", "/", &[]), Some("any"));
    }

    #[test]
    fn regular_expressions_are_anchored() {
        let re = |p: &str| PathMatch::Regex(regex::Regex::new(&format!("^(?:{p})$")).unwrap());
        let rules = HostRules::new(vec![candidate(None, path(re("/v[0-9]+/.*")), "re")]);
        assert_eq!(get(&rules, "h", "/v2/x", &[]), Some("re"));
        assert_eq!(get(&rules, "h", "/api/v2/x", &[]), None);
    }
}
