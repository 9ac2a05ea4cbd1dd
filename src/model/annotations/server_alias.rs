//! `server-alias`: more host names served exactly like the Ingress's host, as nginx `server_name`
//! aliases are in ingress-nginx.

use super::Reader;
use crate::model::validation::check_host;

pub const NAMES: &[&str] = &["server-alias"];

/// The names, lower-case, in the order given; every one valid (an invalid list applies none).
pub(super) fn parse(r: &mut Reader) -> Option<Vec<String>> {
    r.parse("server-alias", |v| {
        let mut names: Vec<String> = Vec::new();
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            check_host(name)?;
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        match names.is_empty() {
            true => Err("lists no host name".into()),
            false => Ok(names),
        }
    })
}
