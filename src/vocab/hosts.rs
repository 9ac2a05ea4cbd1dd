//! Host names as requests, rules and certificates spell them: one normal form, and wildcard coverage.

use std::borrow::Cow;

/// Lower-cases a request host and strips a `:port` and a trailing dot; allocates only when needed.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = strip_port(host);
    let trimmed = without_port.strip_suffix('.').unwrap_or(without_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether `name` is covered by `pattern`, a certificate or TLS-section name that may be `*.suffix`.
pub fn host_covered_by(name: &str, pattern: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_host_port_is_stripped() {
        assert_eq!(normalize_host("[::1]:8443"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
    }

    #[test]
    fn certificate_wildcards_cover_one_label() {
        assert!(host_covered_by("a.foo.com", "*.foo.com"));
        assert!(!host_covered_by("a.b.foo.com", "*.foo.com"));
        assert!(!host_covered_by("foo.com", "*.foo.com"));
        assert!(host_covered_by("foo.com", "foo.com"));
    }
}
