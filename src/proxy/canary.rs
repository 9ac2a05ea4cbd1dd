//! Whether a request goes to the route's canary, in ingress-nginx's order: a session pinned by
//! affinity stays on its side, then `canary-by-header`, then `canary-by-cookie`, then the weight.

use http::HeaderMap;

use super::balance::{cookie_value, pinned};
use crate::model::Backend;
use crate::model::annotations::balancing::Balancing;
use crate::model::annotations::canary::{CanaryRoute, HeaderRule};

/// `roll(total)` is a uniformly random number from 1 to `total`.
pub fn takes(
    canary: &CanaryRoute,
    primary: &Backend,
    primary_balancing: &Balancing,
    headers: &HeaderMap,
    roll: impl FnOnce(u32) -> u32,
) -> bool {
    // ingress-nginx skips a canary without endpoints.
    if canary.backend.endpoints.is_empty() {
        return false;
    }
    if let Balancing::Sticky(cookie) = primary_balancing
        && pinned(primary, cookie, headers)
    {
        return false;
    }
    if let Balancing::Sticky(cookie) = &canary.balancing
        && pinned(&canary.backend, cookie, headers)
    {
        return true;
    }
    let rule = &canary.rule;
    if let Some((name, header_rule)) = &rule.header
        && let Some(value) = headers.get(name)
    {
        let value = value.to_str().unwrap_or("");
        match header_rule {
            HeaderRule::Value(wanted) if value == wanted => return true,
            HeaderRule::Pattern(re) if re.is_match(value) => return true,
            HeaderRule::InvalidPattern => return false,
            HeaderRule::AlwaysNever if value == "always" => return true,
            HeaderRule::AlwaysNever if value == "never" => return false,
            _ => {}
        }
    }
    if let Some(name) = &rule.cookie {
        match cookie_value(headers, name) {
            Some("always") => return true,
            Some("never") => return false,
            _ => {}
        }
    }
    rule.weight > 0 && roll(rule.weight_total) <= rule.weight
}

#[cfg(test)]
mod tests;
