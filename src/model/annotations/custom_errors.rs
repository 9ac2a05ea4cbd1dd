//! `custom-http-errors`: responses with these status codes are replaced by the answer of the error
//! backend (the `default-backend` annotation's Service, else the cluster's default backend), as
//! ingress-nginx does, so error-page services written for it work unchanged.

use std::sync::Arc;

use super::Reader;
use crate::model::Backend;

pub const NAMES: &[&str] = &["custom-http-errors"];

/// The status codes an Ingress asks to have replaced, sorted, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomErrors {
    pub codes: Vec<u16>,
}

pub(super) fn parse(r: &mut Reader) -> Option<CustomErrors> {
    r.parse("custom-http-errors", |v| {
        let mut codes = Vec::new();
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let code = part
                .parse::<u16>()
                .ok()
                .filter(|c| (400..=599).contains(c))
                .ok_or_else(|| format!("{part:?} is not an error status code (400 to 599)"))?;
            codes.push(code);
        }
        codes.sort_unstable();
        codes.dedup();
        match codes.is_empty() {
            true => Err("lists no status code".into()),
            false => Ok(CustomErrors { codes }),
        }
    })
}

/// The error pages of one Ingress, resolved by `build()`.
#[derive(Debug, Clone)]
pub struct ErrorPages {
    pub codes: Vec<u16>,
    /// The `default-backend` annotation's Service; `None`: the cluster's default backend (the oldest
    /// Ingress's `spec.defaultBackend`), looked up when an error happens.
    pub backend: Option<Arc<Backend>>,
}

impl ErrorPages {
    pub fn covers(&self, status: u16) -> bool {
        self.codes.binary_search(&status).is_ok()
    }
}

impl PartialEq for ErrorPages {
    fn eq(&self, other: &Self) -> bool {
        let same_backend = match (&self.backend, &other.backend) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        self.codes == other.codes && same_backend
    }
}

impl Eq for ErrorPages {}
