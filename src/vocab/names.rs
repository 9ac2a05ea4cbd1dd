//! Object names as users write them.

use std::fmt;

/// `namespace/name`, the form users write in flags like `--default-ssl-certificate`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl NamespacedName {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        NamespacedName {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for NamespacedName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(NamespacedName::new(ns, name))
            }
            _ => Err(format!("expected NAMESPACE/NAME, got {s:?}")),
        }
    }
}

/// An annotation's reference to an object, `NAME` or `NAMESPACE/NAME` (a namespace is a DNS label, an
/// object name a DNS subdomain): the namespace if given, and the name.
pub fn parse_reference(value: &str) -> Option<(Option<String>, String)> {
    let (namespace, name) = match value.split_once('/') {
        None => (None, value),
        Some((ns, name)) => (Some(ns), name),
    };
    let dns = |s: &str, dots: bool| {
        (1..=253).contains(&s.len())
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
            })
    };
    let namespace_ok = namespace.is_none_or(|ns| ns.len() <= 63 && dns(ns, false));
    (namespace_ok && dns(name, true)).then(|| (namespace.map(str::to_string), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_name_or_namespace_slash_name() {
        assert_eq!(parse_reference("users"), Some((None, "users".into())));
        assert_eq!(
            parse_reference("auth/users.v2"),
            Some((Some("auth".into()), "users.v2".into()))
        );
        for bad in [
            "",
            "/users",
            "auth/",
            "a/b/c",
            "Users",
            "a.b/users",
            "us_ers",
        ] {
            assert_eq!(parse_reference(bad), None, "{bad:?}");
        }
        let long_namespace = format!("{}/users", "a".repeat(64));
        assert_eq!(
            parse_reference(&long_namespace),
            None,
            "a namespace is a DNS label"
        );
    }
}
