//! Host and path matching against a plain reference written from the Ingress specification.
//!
//! Input, one item per line: `E host path` or `P host path` adds an Exact or Prefix rule (`-` for no
//! host), `? host path` is a request. Rules are validated as the API server does; the route table's
//! answer for each request must equal the reference's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::model::matching::{HostKey, PathKind, RouteTable};
use portcullis::vocab::hosts::{host_covered_by, normalize_host};
use portcullis::model::validation::{check_host, check_path};

struct Rule {
    host: Option<String>,
    kind: PathKind,
    path: String,
}

/// The spec, naively: the most specific host that has any rule (exact, then a wildcard covering
/// exactly one label, then rules without host); within it an Exact path equal to the request path,
/// else the longest Prefix rule whose `/`-separated elements are a prefix of the request path's.
fn reference(rules: &[Rule], host: &str, path: &str) -> Option<usize> {
    let host = normalize_host(host).into_owned();
    let exact: Vec<usize> = (0..rules.len())
        .filter(|&i| {
            rules[i]
                .host
                .as_ref()
                .is_some_and(|h| !h.starts_with("*.") && h.to_ascii_lowercase() == host)
        })
        .collect();
    let wildcard: Vec<usize> = (0..rules.len())
        .filter(|&i| {
            rules[i].host.as_ref().is_some_and(|h| {
                h.starts_with("*.") && host_covered_by(&host, &h.to_ascii_lowercase())
            })
        })
        .collect();
    let any: Vec<usize> = (0..rules.len())
        .filter(|&i| rules[i].host.is_none())
        .collect();
    let candidates = [exact, wildcard, any].into_iter().find(|c| !c.is_empty())?;
    // Runs of slashes count as one (as nginx's merge_slashes), so `//admin` cannot escape `/admin`.
    let mut merged = String::new();
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    // Exact: the first rule with this path (later duplicates are rejected).
    if let Some(&i) = candidates
        .iter()
        .find(|&&i| rules[i].kind == PathKind::Exact && rules[i].path == merged)
    {
        return Some(i);
    }
    let elements = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let request = elements(path);
    let mut best: Option<(usize, usize)> = None;
    for &i in &candidates {
        if rules[i].kind != PathKind::Prefix {
            continue;
        }
        let rule = elements(&rules[i].path);
        let matches = rule.len() <= request.len() && rule[..] == request[..rule.len()];
        let len = rule.iter().map(|e| e.len() + 1).sum::<usize>();
        if matches && best.is_none_or(|(_, l)| len > l) {
            best = Some((i, len));
        }
    }
    best.map(|(i, _)| i)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut rules: Vec<Rule> = Vec::new();
    let mut table: RouteTable<usize> = RouteTable::default();
    let mut requests = Vec::new();
    for line in text.lines().take(64) {
        let mut parts = line.splitn(3, ' ');
        let (Some(op), Some(host), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let host = (host != "-").then(|| host.to_string());
        match op {
            "E" | "P" => {
                if host.as_deref().is_some_and(|h| check_host(h).is_err())
                    || check_path(path).is_err()
                {
                    continue;
                }
                let kind = if op == "E" {
                    PathKind::Exact
                } else {
                    PathKind::Prefix
                };
                let key = HostKey::from_rule_host(host.as_deref());
                // A duplicate host+path+kind is rejected and the first rule stays: only accepted
                // rules go into the reference, so indices stay aligned.
                if table.insert(&key, kind, path, rules.len()).is_ok() {
                    rules.push(Rule {
                        host,
                        kind,
                        path: path.to_string(),
                    });
                }
            }
            "?" if path.starts_with('/') => {
                requests.push((host.unwrap_or_default(), path.to_string()))
            }
            _ => {}
        }
    }
    for (host, path) in &requests {
        let got = table.lookup(host, path).copied();
        let want = reference(&rules, host, path);
        assert_eq!(got, want, "request host {host:?} path {path:?}");
    }
});
