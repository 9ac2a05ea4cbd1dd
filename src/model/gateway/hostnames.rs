//! Gateway API hostnames: a listener's `hostname` and a route's `hostnames` each restrict which request
//! hosts reach a route; the route serves the intersection. A leading `*.` matches one or more labels
//! (`*.example.com` matches `a.example.com` and `a.b.example.com`, never `example.com`).

/// One hostname pattern, lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hostname {
    Exact(Box<str>),
    /// `*.example.com`, stored as `example.com`.
    Wildcard(Box<str>),
}

impl Hostname {
    pub fn parse(name: &str) -> Hostname {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(suffix) => Hostname::Wildcard(suffix.into()),
            None => Hostname::Exact(name.into()),
        }
    }

    /// Whether a request for `host` (lower-case, without port) matches this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Hostname::Exact(h) => **h == *host,
            Hostname::Wildcard(suffix) => covers(suffix, host),
        }
    }

    /// How specific a match is: exact names before wildcards, longer wildcards first.
    pub fn specificity(&self) -> (u8, usize) {
        match self {
            Hostname::Exact(h) => (2, h.len()),
            Hostname::Wildcard(s) => (1, s.len()),
        }
    }
}

impl std::fmt::Display for Hostname {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hostname::Exact(h) => f.write_str(h),
            Hostname::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// `host` ends with `.suffix` and has at least one label before it: `*.suffix` matches it.
pub fn covers(suffix: &str, host: &str) -> bool {
    host.len() > suffix.len() + 1
        && host.ends_with(suffix)
        && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
}

/// The hosts both patterns accept, as one pattern; `None` when they share none. `None` for a side means
/// "any host".
pub fn intersect(
    listener: Option<&Hostname>,
    route: Option<&Hostname>,
) -> Option<Option<Hostname>> {
    match (listener, route) {
        (None, r) => Some(r.cloned()),
        (l, None) => Some(l.cloned()),
        (Some(l), Some(r)) => match (l, r) {
            (Hostname::Exact(a), Hostname::Exact(b)) => (a == b).then(|| Some(l.clone())),
            (Hostname::Wildcard(_), Hostname::Exact(h)) => l.matches(h).then(|| Some(r.clone())),
            (Hostname::Exact(h), Hostname::Wildcard(_)) => r.matches(h).then(|| Some(l.clone())),
            (Hostname::Wildcard(a), Hostname::Wildcard(b)) => {
                if a == b || covers(a, b) {
                    Some(Some(r.clone()))
                } else if covers(b, a) {
                    Some(Some(l.clone()))
                } else {
                    None
                }
            }
        },
    }
}

/// The hostnames a route serves on a listener: each route hostname intersected with the listener's;
/// a route without hostnames takes the listener's. Empty when they share no host (the route is then
/// not accepted by that listener).
pub fn effective(listener: Option<&Hostname>, route: &[Hostname]) -> Vec<Option<Hostname>> {
    if route.is_empty() {
        return vec![listener.cloned()];
    }
    let mut out: Vec<Option<Hostname>> = route
        .iter()
        .filter_map(|r| intersect(listener, Some(r)))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hostname {
        Hostname::parse(s)
    }

    #[test]
    fn wildcards_match_one_or_more_labels_but_not_the_suffix_itself() {
        let w = h("*.example.com");
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
        assert!(h("Foo.Example.com").matches("foo.example.com"));
    }

    #[test]
    fn intersection_keeps_the_narrower_side() {
        let cases = [
            (
                Some("*.example.com"),
                Some("foo.example.com"),
                Some(Some("foo.example.com")),
            ),
            (
                Some("foo.example.com"),
                Some("*.example.com"),
                Some(Some("foo.example.com")),
            ),
            (
                Some("*.example.com"),
                Some("*.foo.example.com"),
                Some(Some("*.foo.example.com")),
            ),
            (
                Some("*.foo.example.com"),
                Some("*.example.com"),
                Some(Some("*.foo.example.com")),
            ),
            (
                Some("*.example.com"),
                Some("*.example.com"),
                Some(Some("*.example.com")),
            ),
            (Some("a.example.com"), Some("b.example.com"), None),
            (Some("*.example.com"), Some("example.com"), None),
            (Some("*.example.com"), Some("*.example.net"), None),
            (None, Some("*.example.net"), Some(Some("*.example.net"))),
            (Some("x.example.net"), None, Some(Some("x.example.net"))),
            (None, None, Some(None)),
        ];
        for (l, r, want) in cases {
            let got = intersect(l.map(h).as_ref(), r.map(h).as_ref());
            let want = want.map(|w| w.map(h));
            assert_eq!(got, want, "{l:?} ∩ {r:?}");
        }
    }

    #[test]
    fn a_route_without_hostnames_takes_the_listeners() {
        assert_eq!(effective(Some(&h("a.io")), &[]), vec![Some(h("a.io"))]);
        assert_eq!(effective(None, &[]), vec![None]);
        assert!(effective(Some(&h("a.io")), &[h("b.io")]).is_empty());
        assert_eq!(
            effective(Some(&h("*.a.io")), &[h("x.a.io"), h("b.io"), h("*.y.a.io")]),
            vec![Some(h("x.a.io")), Some(h("*.y.a.io"))]
        );
    }
}
