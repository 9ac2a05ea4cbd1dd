//! The source-range step, first of the request-path checks: the deny list, then the allowlist, both on
//! the client address the rest of the proxy uses (the peer, or what a trusted proxy reports).

use std::net::IpAddr;

use http::{Response, StatusCode};

use super::response::{self, Body};
use crate::model::Policy;
use crate::model::annotations::{DenyRange, SourceRange};

/// The refusal for this client, if the Ingress's source ranges refuse it. Deny wins over allow.
pub(super) fn check(client: IpAddr, policy: &Policy) -> Option<Response<Body>> {
    let denied = match &policy.deny_range {
        Some(DenyRange::Invalid) => {
            return Some(response::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the Ingress's deny list is invalid",
            ));
        }
        Some(DenyRange::Deny(list)) => list.iter().any(|c| c.0.contains(&client)),
        None => false,
    };
    let allowed = match &policy.source_range {
        Some(SourceRange::Allow(list)) => list.iter().any(|c| c.0.contains(&client)),
        Some(SourceRange::DenyAll) => false,
        None => true,
    };
    (denied || !allowed)
        .then(|| response::error(StatusCode::FORBIDDEN, "your address is not allowed"))
}
