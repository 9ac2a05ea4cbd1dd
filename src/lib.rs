//! Portcullis: a Kubernetes ingress controller.
//!
//! Objects come in from a [`source`] (cluster watchers or manifest files), are translated by the pure
//! [`model::build`] into one immutable [`model::Config`], which the [`proxy`] data plane and the
//! [`tls`] SNI resolver read without locks. [`run`] wires these together.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod chart;
pub mod check;
pub mod cli;
pub mod events;
pub mod gateway_api;
pub mod gateway_status;
pub mod leader;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod run;
pub mod settings;
pub mod source;
pub mod status;
pub mod tls;
pub mod vocab;
