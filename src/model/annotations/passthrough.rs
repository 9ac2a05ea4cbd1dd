//! `ssl-passthrough`: the Ingress's hosts receive their TLS connections unterminated. Nothing about
//! HTTP can apply to such a connection, so the Ingress's other annotations are reported as ignored
//! (ingress-nginx documents the same and says nothing when it happens).

use std::collections::BTreeMap;

use super::{NGINX_PREFIX, OWN_PREFIX, Reader};

pub const NAMES: &[&str] = &["ssl-passthrough"];

pub(super) fn parse(r: &mut Reader) -> bool {
    r.bool("ssl-passthrough").unwrap_or(false)
}

/// The Ingress's annotations, under either prefix, that a passthrough Ingress ignores.
pub fn ignored(annotations: Option<&BTreeMap<String, String>>) -> impl Iterator<Item = &str> {
    annotations.into_iter().flatten().filter_map(|(key, _)| {
        let name = [OWN_PREFIX, NGINX_PREFIX]
            .iter()
            .find_map(|p| key.strip_prefix(p))?;
        (!NAMES.contains(&name)).then_some(key.as_str())
    })
}
