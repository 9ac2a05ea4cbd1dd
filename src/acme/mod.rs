//! ACME: certificates for the Ingresses annotated `portcullis.io/acme`, ordered, stored, served and
//! renewed by Portcullis itself (docs/acme.md). The model says which certificates are wanted
//! ([`crate::model::acme`]); this module orders them; the :80 handler and the TLS resolver only look
//! up pending challenge answers in [`Challenges`]. Issued certificates are served as Secrets, through
//! the same path as every other certificate.
//!
//! Manifest mode only so far: `--state-dir` holds the accounts and certificates. Cluster mode (Secrets,
//! one orderer among the replicas, challenges shared between them) is not built yet.

pub mod challenges;
mod orderer;
mod store;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::watch;

pub use challenges::Challenges;
pub use orderer::Orderer;
use store::{Store, StoredCertificate};

use crate::metrics::Metrics;
use crate::model::Snapshot;
use crate::model::acme::{
    ISSUER_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, NAMES_ANNOTATION, NOT_AFTER_ANNOTATION,
};

/// The orderer for this process and the channel of the Secrets it has issued. In manifest mode with a
/// state directory it orders; otherwise it only says, once per change, why it does not.
pub fn orderer(
    provider: Arc<rustls::crypto::CryptoProvider>,
    challenges: Arc<Challenges>,
    state_dir: Result<&Path, &'static str>,
    metrics: Arc<Metrics>,
) -> (Orderer, watch::Receiver<Arc<Vec<Arc<Secret>>>>) {
    let store = state_dir.map_err(str::to_string).and_then(|dir| {
        Store::open(dir).map_err(|e| {
            format!(
                "cannot use the ACME state directory {}: {e}; no certificate is ordered",
                dir.display()
            )
        })
    });
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    (Orderer::new(provider, challenges, store, tx, metrics), rx)
}

/// Forwards each snapshot with the issued Secrets added, so they are served like any other Secret. A
/// Secret of the same name in the snapshot wins (and the model reports that it is not ours).
pub async fn add_issued_secrets(
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    mut issued: watch::Receiver<Arc<Vec<Arc<Secret>>>>,
    out: watch::Sender<Option<Arc<Snapshot>>>,
) {
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let secrets = issued.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            let merged = if secrets.is_empty() {
                snapshot
            } else {
                let mut merged = Snapshot::clone(&snapshot);
                for secret in secrets.iter() {
                    let name = |s: &Secret| {
                        (
                            s.metadata
                                .namespace
                                .clone()
                                .unwrap_or_else(|| "default".into()),
                            s.metadata.name.clone(),
                        )
                    };
                    if !merged.secrets.iter().any(|s| name(s) == name(secret)) {
                        merged.secrets.push(secret.clone());
                    }
                }
                Arc::new(merged)
            };
            out.send_replace(Some(merged));
        }
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            changed = issued.changed() => if changed.is_err() { return },
        }
    }
}

/// The `kubernetes.io/tls` Secret an issued certificate is served from, marked as Portcullis's.
fn issued_secret(cert: &StoredCertificate) -> Secret {
    let data = BTreeMap::from([
        (
            "tls.crt".to_string(),
            ByteString(cert.chain.as_bytes().to_vec()),
        ),
        (
            "tls.key".to_string(),
            ByteString(cert.key.as_bytes().to_vec()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            namespace: Some(cert.namespace.clone()),
            name: Some(cert.name.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY.to_string(),
            )])),
            annotations: Some(BTreeMap::from([
                (ISSUER_ANNOTATION.to_string(), cert.issuer.clone()),
                (NAMES_ANNOTATION.to_string(), cert.hosts.join(",")),
                (NOT_AFTER_ANNOTATION.to_string(), cert.not_after.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}
