//! Ingress annotations: one `key=value` per line. A key without `/` is put under `portcullis.io/`,
//! or under `nginx.ingress.kubernetes.io/` when it starts with `!`. Parsing must never panic, and the
//! policy built from any parsed set must be usable.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use portcullis::model::Policy;
use portcullis::model::annotations::{self, NGINX_PREFIX, OWN_PREFIX};
use portcullis::settings::Settings;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let key = match key.strip_prefix('!') {
            Some(name) => format!("{NGINX_PREFIX}{name}"),
            None if key.contains('/') => key.to_string(),
            None => format!("{OWN_PREFIX}{key}"),
        };
        map.insert(key, value.to_string());
    }
    let (parsed, errors) = annotations::parse(Some(&map));
    for e in &errors {
        let _ = e.to_string();
    }
    let _ = Policy::new(&parsed, &Settings::default());
});
