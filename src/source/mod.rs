//! Where objects come from: a directory of manifests, or the cluster's API server. Each source publishes
//! whole [`Snapshot`](crate::model::Snapshot)s on a watch channel; the builder turns the latest one into
//! the live configuration.

pub mod acme;
pub mod cluster;
pub mod manifests;
