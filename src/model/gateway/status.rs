//! The status Portcullis wants on Gateway API objects, as plain data: conditions per GatewayClass,
//! Gateway, listener and route parent, each with the generation it was computed for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use super::CONTROLLER_NAME;
use crate::gateway_api::gateways::{
    GatewayStatus, GatewayStatusListeners, GatewayStatusListenersSupportedKinds,
};
use crate::gateway_api::httproutes::HttpRouteParentRefs;
use crate::gateway_api::httproutes::{
    HttpRouteStatus, HttpRouteStatusParents, HttpRouteStatusParentsParentRef,
};
use crate::vocab::NamespacedName;

/// One condition; `lastTransitionTime` is the writer's business (kept when nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Condition {
    pub fn yes(type_: &'static str, reason: &'static str, message: &str) -> Condition {
        Condition {
            type_,
            status: true,
            reason,
            message: message.into(),
        }
    }

    /// `Programmed`: `Programmed` when serving, else `Invalid` with why not.
    pub fn programmed(serving: bool, yes: &str, no: &str) -> Condition {
        match serving {
            true => Condition::yes("Programmed", "Programmed", yes),
            false => Condition::no("Programmed", "Invalid", no),
        }
    }

    pub fn no(type_: &'static str, reason: &'static str, message: &str) -> Condition {
        Condition {
            type_,
            status: false,
            reason,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerState {
    pub name: String,
    pub attached_routes: i32,
    pub supported_kinds: Vec<String>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayState {
    pub gateway: NamespacedName,
    pub generation: i64,
    pub conditions: Vec<Condition>,
    /// In the Gateway's listener order.
    pub listeners: Vec<ListenerState>,
}

/// A route's status for one of its parent references to a Gateway of ours.
#[derive(Debug, Clone, PartialEq)]
pub struct ParentState {
    /// `HTTPRoute` or `GRPCRoute`.
    pub kind: &'static str,
    pub route: NamespacedName,
    pub generation: i64,
    pub parent: HttpRouteParentRefs,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// GatewayClass name, generation, conditions.
    pub classes: Vec<(String, i64, Vec<Condition>)>,
    pub gateways: Vec<GatewayState>,
    pub routes: Vec<ParentState>,
}

/// The API conditions for `wanted`: a condition whose status did not change keeps its
/// `lastTransitionTime`, so an unchanged status compares equal and is not written again.
pub fn api_conditions(
    wanted: &[Condition],
    generation: i64,
    current: &[meta::Condition],
    now: &meta::Time,
) -> Vec<meta::Condition> {
    wanted
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let since = current
                .iter()
                .find(|old| old.type_ == c.type_ && old.status == status)
                .map_or_else(|| now.clone(), |old| old.last_transition_time.clone());
            meta::Condition {
                type_: c.type_.into(),
                status: status.into(),
                reason: c.reason.into(),
                message: c.message.clone(),
                observed_generation: Some(generation),
                last_transition_time: since,
            }
        })
        .collect()
}

/// A Gateway's whole status, with the addresses it is reachable at.
pub fn gateway_status(
    state: &GatewayState,
    addresses: &[String],
    current: Option<&GatewayStatus>,
    now: &meta::Time,
) -> GatewayStatus {
    let listeners = state
        .listeners
        .iter()
        .map(|l| {
            let old = current
                .and_then(|c| c.listeners.as_ref())
                .and_then(|ls| ls.iter().find(|o| o.name == l.name))
                .map_or(&[][..], |o| &o.conditions[..]);
            GatewayStatusListeners {
                name: l.name.clone(),
                attached_routes: l.attached_routes,
                conditions: api_conditions(&l.conditions, state.generation, old, now),
                supported_kinds: Some(
                    l.supported_kinds
                        .iter()
                        .map(|k| GatewayStatusListenersSupportedKinds {
                            group: Some(super::GROUP.into()),
                            kind: k.clone(),
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    let old = current
        .and_then(|c| c.conditions.as_deref())
        .unwrap_or_default();
    GatewayStatus {
        addresses: Some(
            addresses
                .iter()
                .map(|a| crate::gateway_api::gateways::GatewayStatusAddresses {
                    r#type: Some(
                        if a.parse::<std::net::IpAddr>().is_ok() {
                            "IPAddress"
                        } else {
                            "Hostname"
                        }
                        .into(),
                    ),
                    value: a.clone(),
                })
                .collect(),
        ),
        attached_listener_sets: current.and_then(|c| c.attached_listener_sets),
        conditions: Some(api_conditions(
            &state.conditions,
            state.generation,
            old,
            now,
        )),
        listeners: Some(listeners),
    }
}

/// A route's status: our parents as computed, other controllers' parents as they are.
pub fn route_status(
    ours: &[&ParentState],
    current: Option<&HttpRouteStatus>,
    now: &meta::Time,
) -> HttpRouteStatus {
    let theirs = current.map_or(&[][..], |c| &c.parents[..]);
    let mut parents: Vec<HttpRouteStatusParents> = theirs
        .iter()
        .filter(|p| p.controller_name != CONTROLLER_NAME)
        .cloned()
        .collect();
    for p in ours {
        let parent_ref = HttpRouteStatusParentsParentRef {
            group: p.parent.group.clone(),
            kind: p.parent.kind.clone(),
            name: p.parent.name.clone(),
            namespace: p.parent.namespace.clone(),
            port: p.parent.port,
            section_name: p.parent.section_name.clone(),
        };
        let old = theirs
            .iter()
            .find(|o| o.controller_name == CONTROLLER_NAME && o.parent_ref == parent_ref)
            .map_or(&[][..], |o| &o.conditions[..]);
        parents.push(HttpRouteStatusParents {
            conditions: api_conditions(&p.conditions, p.generation, old, now),
            controller_name: CONTROLLER_NAME.into(),
            parent_ref,
        });
    }
    HttpRouteStatus { parents }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> meta::Time {
        meta::Time(k8s_openapi::jiff::Timestamp::from_second(second).expect("valid"))
    }

    #[test]
    fn an_unchanged_condition_keeps_its_transition_time_so_nothing_is_rewritten() {
        let wanted = [Condition::yes("Accepted", "Accepted", "ok")];
        let first = api_conditions(&wanted, 1, &[], &at(100));
        assert_eq!(first[0].last_transition_time, at(100));
        assert_eq!(first[0].observed_generation, Some(1));
        assert_eq!(
            api_conditions(&wanted, 1, &first, &at(200)),
            first,
            "same status: nothing to write"
        );
        let flipped = api_conditions(
            &[Condition::no("Accepted", "NotAllowedByListeners", "no")],
            2,
            &first,
            &at(300),
        );
        assert_eq!(
            (flipped[0].status.as_str(), &flipped[0].last_transition_time),
            ("False", &at(300))
        );
    }

    #[test]
    fn other_controllers_parents_are_kept() {
        let foreign = HttpRouteStatusParents {
            controller_name: "example.com/other".into(),
            ..Default::default()
        };
        let current = HttpRouteStatus {
            parents: vec![foreign.clone()],
        };
        let ours = ParentState {
            kind: "HTTPRoute",
            route: NamespacedName::new("ns", "r"),
            generation: 4,
            parent: HttpRouteParentRefs {
                name: "gw".into(),
                ..Default::default()
            },
            conditions: vec![Condition::yes("Accepted", "Accepted", "ok")],
        };
        let status = route_status(&[&ours], Some(&current), &at(1));
        assert_eq!(status.parents.len(), 2);
        assert_eq!(status.parents[0], foreign);
        assert_eq!(status.parents[1].parent_ref.name, "gw");
        assert_eq!(status.parents[1].conditions[0].observed_generation, Some(4));
    }

    #[test]
    fn gateway_addresses_are_typed() {
        let state = GatewayState {
            gateway: NamespacedName::new("ns", "gw"),
            generation: 1,
            conditions: vec![],
            listeners: vec![],
        };
        let status = gateway_status(
            &state,
            &["10.245.0.3".into(), "lb.example.com".into()],
            None,
            &at(1),
        );
        let types: Vec<_> = status
            .addresses
            .iter()
            .flatten()
            .map(|a| a.r#type.as_deref())
            .collect();
        assert_eq!(types, [Some("IPAddress"), Some("Hostname")]);
    }
}
