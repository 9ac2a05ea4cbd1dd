//! The status Portcullis wants on Gateway API objects, as plain data: conditions per GatewayClass,
//! Gateway, listener and route parent, each with the generation it was computed for.

use crate::gateway_api::httproutes::HttpRouteParentRefs;
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
