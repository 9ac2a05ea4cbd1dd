//! The checks the API server applies to Ingress hosts and paths, so manifest mode accepts exactly what a
//! cluster would.

/// A rule host: a lower- or mixed-case DNS-1123 subdomain, optionally `*.` followed by one; no IP address.
pub fn check_host(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("host {host:?} must be 1 to 253 characters"));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "host {host:?} must be a DNS name, not an IP address"
        ));
    }
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !valid {
            return Err(format!(
                "host {host:?} is not a valid DNS name (labels of letters, digits and '-', optionally starting with '*.')"
            ));
        }
    }
    Ok(())
}

/// A path of an `Exact` or `Prefix` rule: absolute, without `//`, `.` or `..` segments or encoded slashes.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must begin with '/'"));
    }
    for bad in ["//", "/./", "/../", "%2f", "%2F"] {
        if path.contains(bad) {
            return Err(format!("path {path:?} must not contain {bad:?}"));
        }
    }
    if path.ends_with("/..") || path.ends_with("/.") {
        return Err(format!(
            "path {path:?} must not end with a '.' or '..' segment"
        ));
    }
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "path {path:?} must not contain spaces or control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in [
            "foo.bar.com",
            "*.foo.com",
            "a",
            "x-1.example",
            "Foo.Example.COM",
        ] {
            assert!(check_host(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "*.",
            "1.2.3.4",
            "foo..com",
            "-a.com",
            "a-.com",
            "a_b.com",
            "*.*.com",
            "foo.com:80",
            "*",
        ] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
        assert!(check_host(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn paths() {
        for ok in ["/", "/foo", "/foo/", "/a.b/c..d", "/%20"] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "foo", "//", "/a//b", "/a/./b", "/a/../b", "/a%2fb", "/a/..", "/a/.", "/a b",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
