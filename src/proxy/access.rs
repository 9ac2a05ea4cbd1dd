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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::annotations::IngressAnnotations;
    use crate::settings::{Cidr, Settings};

    fn policy(allow: Option<SourceRange>, deny: Option<DenyRange>) -> Policy {
        let a = IngressAnnotations {
            source_range: allow,
            deny_range: deny,
            ..Default::default()
        };
        Policy::new(&a, &Settings::default())
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
    }

    fn status(ip: &str, p: &Policy) -> u16 {
        check(ip.parse().unwrap(), p).map_or(200, |r| r.status().as_u16())
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = policy(
            Some(SourceRange::Allow(cidrs(&["10.0.0.0/8"]))),
            Some(DenyRange::Deny(cidrs(&["10.1.0.0/16", "2001:db8::/32"]))),
        );
        assert_eq!(status("10.2.3.4", &p), 200);
        assert_eq!(status("10.1.3.4", &p), 403);
        assert_eq!(status("192.0.2.1", &p), 403);
        let deny_only = policy(None, Some(DenyRange::Deny(cidrs(&["2001:db8::/32"]))));
        assert_eq!(status("2001:db8::1", &deny_only), 403);
        assert_eq!(status("2001:db9::1", &deny_only), 200);
        assert_eq!(status("192.0.2.1", &policy(None, None)), 200);
    }

    #[test]
    fn an_invalid_deny_list_serves_nobody() {
        let p = policy(
            Some(SourceRange::Allow(cidrs(&["0.0.0.0/0"]))),
            Some(DenyRange::Invalid),
        );
        assert_eq!(status("192.0.2.1", &p), 503);
    }
}
