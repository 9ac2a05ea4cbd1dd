//! HTTPRoute filters as plain data, and the pure functions the data plane applies: header edits,
//! redirects (`RequestRedirect`, the Gateway API's HTTP→HTTPS redirect) and `URLRewrite` paths.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// `RequestHeaderModifier` / `ResponseHeaderModifier`: set replaces, add appends, remove deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// How a redirect or rewrite changes the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathChange {
    ReplaceFullPath(String),
    /// Replaces the part the rule's `PathPrefix` matched, element-wise.
    ReplacePrefixMatch(String),
}

impl PathChange {
    /// The new path; `matched` is the rule's prefix (without trailing `/`), empty for `/`.
    pub fn apply(&self, path: &str, matched: &str) -> String {
        match self {
            PathChange::ReplaceFullPath(p) => p.clone(),
            PathChange::ReplacePrefixMatch(replacement) => {
                let rest = path.strip_prefix(matched).unwrap_or(path);
                let replacement = replacement.trim_end_matches('/');
                let joined = format!("{replacement}{rest}");
                if joined.is_empty() {
                    "/".into()
                } else if !joined.starts_with('/') {
                    format!("/{joined}")
                } else {
                    joined
                }
            }
        }
    }
}

/// `RequestRedirect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub scheme: Option<&'static str>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathChange>,
    pub status: StatusCode,
}

/// What a redirect needs to know about the request it answers.
pub struct Origin<'a> {
    pub scheme: &'static str,
    /// Without port.
    pub host: &'a str,
    /// The listener's port.
    pub port: u16,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The rule's matched prefix, for `ReplacePrefixMatch`.
    pub matched_prefix: &'a str,
}

impl Redirect {
    /// The `Location`: a changed scheme without a port takes the scheme's well-known port, otherwise
    /// the listener's; the well-known port of the scheme is left out.
    pub fn location(&self, origin: &Origin<'_>) -> String {
        let scheme = self.scheme.unwrap_or(origin.scheme);
        let port = match (self.port, self.scheme) {
            (Some(p), _) => p,
            (None, Some(s)) => well_known_port(s),
            (None, None) => origin.port,
        };
        let host = self.hostname.as_deref().unwrap_or(origin.host);
        let path = match &self.path {
            Some(change) => change.apply(origin.path, origin.matched_prefix),
            None => origin.path.to_string(),
        };
        let mut location = format!("{scheme}://{host}");
        if port != well_known_port(scheme) {
            location.push_str(&format!(":{port}"));
        }
        location.push_str(&path);
        if let Some(q) = origin.query {
            location.push('?');
            location.push_str(q);
        }
        location
    }
}

fn well_known_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// `URLRewrite`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    pub hostname: Option<String>,
    pub path: Option<PathChange>,
}

/// A Gateway API duration (`1h`, `500ms`, `1m30s`: up to four number-unit pairs, units `h`, `m`,
/// `s`, `ms`); zero means no timeout. `None` when the text is not one.
pub fn gateway_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text;
    let mut total = std::time::Duration::ZERO;
    let mut pairs = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (std::time::Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (std::time::Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (std::time::Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (std::time::Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += unit * u32::try_from(n).ok()?;
        pairs += 1;
    }
    (pairs > 0 && pairs <= 4).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_durations_are_read_as_the_spec_writes_them() {
        use std::time::Duration;
        assert_eq!(gateway_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(gateway_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(
            gateway_duration("1h1m1s1ms"),
            Some(Duration::from_millis(3_661_001))
        );
        assert_eq!(gateway_duration("0s"), Some(Duration::ZERO));
        for bad in ["", "10", "s", "1.5s", "1d", "123456s", "1h1m1s1ms1s", "-1s"] {
            assert_eq!(gateway_duration(bad), None, "{bad:?}");
        }
    }

    fn origin<'a>(path: &'a str, matched: &'a str) -> Origin<'a> {
        Origin {
            scheme: "http",
            host: "example.org",
            port: 80,
            path,
            query: Some("a=1"),
            matched_prefix: matched,
        }
    }

    fn redirect(scheme: Option<&'static str>, port: Option<u16>) -> Redirect {
        Redirect {
            scheme,
            hostname: None,
            port,
            path: None,
            status: StatusCode::FOUND,
        }
    }

    #[test]
    fn scheme_redirects_use_the_schemes_port_and_leave_it_out() {
        let o = origin("/x", "");
        assert_eq!(
            redirect(Some("https"), None).location(&o),
            "https://example.org/x?a=1"
        );
        assert_eq!(
            redirect(Some("https"), Some(8443)).location(&o),
            "https://example.org:8443/x?a=1"
        );
        assert_eq!(
            redirect(None, Some(443)).location(&o),
            "http://example.org:443/x?a=1"
        );
        let on_8080 = Origin {
            port: 8080,
            ..origin("/x", "")
        };
        assert_eq!(
            redirect(None, None).location(&on_8080),
            "http://example.org:8080/x?a=1"
        );
        let host = Redirect {
            hostname: Some("other.org".into()),
            ..redirect(None, None)
        };
        assert_eq!(host.location(&o), "http://other.org/x?a=1");
    }

    #[test]
    fn prefix_replacement_keeps_the_rest_of_the_path() {
        let prefix = |r: &str| PathChange::ReplacePrefixMatch(r.into());
        assert_eq!(prefix("/bar").apply("/foo/baz", "/foo"), "/bar/baz");
        assert_eq!(prefix("/").apply("/foo/baz", "/foo"), "/baz");
        assert_eq!(prefix("/").apply("/foo", "/foo"), "/");
        assert_eq!(prefix("/bar/").apply("/foo/", "/foo"), "/bar/");
        assert_eq!(prefix("/bar").apply("/x", ""), "/bar/x");
        assert_eq!(
            PathChange::ReplaceFullPath("/one".into()).apply("/foo/baz", "/foo"),
            "/one"
        );
    }

    #[test]
    fn header_edits_set_add_then_remove() {
        let edits = HeaderEdits {
            set: vec![(
                HeaderName::from_static("x-set"),
                HeaderValue::from_static("new"),
            )],
            add: vec![(
                HeaderName::from_static("x-add"),
                HeaderValue::from_static("two"),
            )],
            remove: vec![HeaderName::from_static("x-gone")],
        };
        let mut h = HeaderMap::new();
        h.insert("x-set", HeaderValue::from_static("old"));
        h.insert("x-add", HeaderValue::from_static("one"));
        h.insert("x-gone", HeaderValue::from_static("bye"));
        edits.apply(&mut h);
        assert_eq!(h.get_all("x-set").iter().collect::<Vec<_>>(), ["new"]);
        assert_eq!(
            h.get_all("x-add").iter().collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert!(h.get("x-gone").is_none());
    }
}
