//! ACME: certificates for the Ingresses annotated `portcullis.io/acme`, ordered, stored, served and
//! renewed by Portcullis itself (docs/acme.md). The model says which certificates are wanted
//! ([`crate::model::acme`]); this module orders them; the :80 handler and the TLS resolver only look
//! up pending challenge answers in [`Challenges`]. Issued certificates are served as Secrets, through
//! the same path as every other certificate.
//!
//! Manifest mode keeps accounts and certificates in `--state-dir`; cluster mode in Secrets, with one
//! orderer among the replicas and the challenge answers shared through an object all of them watch
//! (the [`Backend`] of `source::acme`).

pub mod backend;
pub mod challenges;
mod http;
mod orderer;
mod store;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use instant_acme::CertificateIdentifier;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::watch;

pub use backend::Backend;
pub use challenges::{Answers, Challenges};
pub use orderer::Orderer;
pub use store::{StoredAccount, StoredCertificate};

use crate::metrics::Metrics;
use crate::model::Snapshot;
use crate::model::acme::{
    ARI_ID_ANNOTATION, ISSUER_ANNOTATION, MANAGED_BY, MANAGED_BY_LABEL, NAMES_ANNOTATION,
    NOT_AFTER_ANNOTATION, is_managed,
};

/// The Secrets an orderer has issued, for manifest mode to serve.
pub type Issued = watch::Receiver<Arc<Vec<Arc<Secret>>>>;

/// The manifest-mode orderer and the channel of the Secrets it has issued. With a state directory it
/// orders; otherwise it only says, once per change, why it does not.
pub fn file_orderer(
    provider: Arc<rustls::crypto::CryptoProvider>,
    challenges: Arc<Challenges>,
    state_dir: Result<&Path, &'static str>,
    manifests: watch::Receiver<Option<Arc<Snapshot>>>,
    metrics: Arc<Metrics>,
) -> (Orderer, Issued) {
    let backend = state_dir.map_err(str::to_string).and_then(|dir| {
        store::Store::open(dir)
            .map(|store| {
                Box::new(backend::Files {
                    store,
                    challenges,
                    provider: provider.clone(),
                    manifests,
                }) as Box<dyn Backend>
            })
            .map_err(|e| {
                format!(
                    "cannot use the ACME state directory {}: {e}; no certificate is ordered",
                    dir.display()
                )
            })
    });
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    (Orderer::new(backend, tx, metrics), rx)
}

/// The cluster-mode orderer: certificates in Secrets, through `backend`.
pub fn cluster_orderer(backend: Box<dyn Backend>, metrics: Arc<Metrics>) -> Orderer {
    let (tx, _) = watch::channel(Arc::new(Vec::new()));
    Orderer::new(Ok(backend), tx, metrics)
}

/// Forwards each snapshot with the issued Secrets added, so they are served like any other Secret. A
/// Secret of the same name in the snapshot wins (and the model reports that it is not ours).
pub async fn add_issued_secrets(
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    mut issued: Issued,
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
pub fn issued_secret(cert: &StoredCertificate) -> Secret {
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
    let mut annotations = BTreeMap::from([
        (ISSUER_ANNOTATION.to_string(), cert.issuer.clone()),
        (NAMES_ANNOTATION.to_string(), cert.hosts.join(",")),
        (NOT_AFTER_ANNOTATION.to_string(), cert.not_after.to_string()),
    ]);
    if let Some(id) = ari_identifier(&cert.chain) {
        annotations.insert(ARI_ID_ANNOTATION.to_string(), id);
    }
    Secret {
        metadata: ObjectMeta {
            namespace: Some(cert.namespace.clone()),
            name: Some(cert.name.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY.to_string(),
            )])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The certificate in a Secret Portcullis wrote (see [`issued_secret`]); `None` for any other Secret
/// or one whose content cannot be read (it is then ordered again).
pub fn stored_certificate(secret: &Secret) -> Option<StoredCertificate> {
    if !is_managed(secret) {
        return None;
    }
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let chain = text("tls.crt")?;
    let key = text("tls.key")?;
    let annotations = secret.metadata.annotations.as_ref()?;
    let (not_before, not_after) = orderer::validity(&chain).ok()?;
    Some(StoredCertificate {
        namespace: secret.metadata.namespace.clone()?,
        name: secret.metadata.name.clone()?,
        issuer: annotations.get(ISSUER_ANNOTATION)?.clone(),
        hosts: annotations
            .get(NAMES_ANNOTATION)?
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect(),
        chain,
        key,
        not_before,
        not_after,
    })
}

/// The RFC 9773 identifier of the chain's leaf (`keyIdentifier.serial`, base64url).
fn ari_identifier(chain: &str) -> Option<String> {
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()?
        .ok()?;
    CertificateIdentifier::try_from(&leaf)
        .ok()
        .map(|id| id.to_string())
}
