//! Where the orderer keeps accounts and certificates and publishes challenge answers: files and this
//! process's own challenge table in manifest mode ([`Files`]), Kubernetes objects in cluster mode
//! (`source::acme`), so one orderer serves both.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;
use rustls::crypto::CryptoProvider;
use tokio::sync::watch;

use super::challenges::{Answers, Challenges};
use super::store::{Store, StoredAccount, StoredCertificate};
use crate::model::Snapshot;
use crate::model::acme::WantedCertificate;
use crate::vocab::NamespacedName;

pub trait Backend: Send + Sync {
    /// The issuer's stored account, if any.
    fn account<'a>(
        &'a self,
        issuer: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredAccount>, String>>;

    fn save_account<'a>(
        &'a self,
        issuer: &'a str,
        account: &'a StoredAccount,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// The certificates known at start, served before the first configuration is built.
    fn initial_certificates(&self) -> Vec<StoredCertificate>;

    /// The certificate stored for `secret` now, as others may have written (another replica) or
    /// removed it since.
    fn current_certificate(&self, secret: &NamespacedName) -> Current;

    /// Fails when the certificate could not be stored (a Secret that is not Portcullis's), before an
    /// order is placed for nothing.
    fn check_writable<'a>(
        &'a self,
        secret: &'a NamespacedName,
    ) -> BoxFuture<'a, Result<(), String>>;

    fn save_certificate<'a>(
        &'a self,
        cert: &'a StoredCertificate,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Makes `answers` the pending challenge answers wherever the CA's validation may arrive;
    /// returns once they are answered there.
    fn publish_challenges<'a>(&'a self, answers: &'a Answers) -> BoxFuture<'a, Result<(), String>>;

    /// The raw HMAC key of an issuer's external account binding, from the Secret it names (key
    /// `hmac-key`, base64url as the CA gives it).
    fn hmac_key<'a>(&'a self, secret: &'a NamespacedName)
    -> BoxFuture<'a, Result<Vec<u8>, String>>;

    /// Tells the owner of the Ingress that an order failed (a Warning Event in cluster mode).
    fn order_failed<'a>(
        &'a self,
        wanted: &'a WantedCertificate,
        message: String,
    ) -> BoxFuture<'a, ()>;
}

/// The key of an external account binding's HMAC key in its Secret.
pub const HMAC_KEY: &str = "hmac-key";

/// The HMAC key in `secret` (named `name`, for the error), under [`HMAC_KEY`].
pub fn hmac_key_of(secret: &Secret, name: &NamespacedName) -> Result<Vec<u8>, String> {
    let text = secret
        .data
        .as_ref()
        .and_then(|d| d.get(HMAC_KEY))
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .ok_or_else(|| format!("Secret {name} has no text key {HMAC_KEY:?}"))?;
    decode_hmac_key(text).map_err(|e| format!("Secret {name}: {e}"))
}

/// Decodes an HMAC key as CAs hand them out: base64url, with or without padding.
pub fn decode_hmac_key(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .map_err(|e| format!("the HMAC key is not base64url: {e}"))
}

/// What is stored for one certificate, as far as the backend can tell.
pub enum Current {
    /// Only this orderer writes: its own memory is the truth.
    Unknown,
    /// Nothing usable (no Secret, or not a readable Portcullis one).
    Absent,
    Stored(StoredCertificate),
}

/// Manifest mode: the state directory, this process's challenge table, and the manifests (for the
/// Secret holding an external account binding's HMAC key).
pub(super) struct Files {
    pub store: Store,
    pub challenges: Arc<Challenges>,
    pub provider: Arc<CryptoProvider>,
    pub manifests: watch::Receiver<Option<Arc<Snapshot>>>,
}

impl Backend for Files {
    fn account<'a>(
        &'a self,
        issuer: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredAccount>, String>> {
        Box::pin(async move { Ok(self.store.account(issuer)) })
    }

    fn save_account<'a>(
        &'a self,
        issuer: &'a str,
        account: &'a StoredAccount,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.store
                .save_account(issuer, account)
                .map_err(|e| e.to_string())
        })
    }

    fn initial_certificates(&self) -> Vec<StoredCertificate> {
        self.store.certificates().into_values().collect()
    }

    fn current_certificate(&self, _: &NamespacedName) -> Current {
        Current::Unknown
    }

    fn check_writable<'a>(&'a self, _: &'a NamespacedName) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn save_certificate<'a>(
        &'a self,
        cert: &'a StoredCertificate,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { self.store.save_certificate(cert).map_err(|e| e.to_string()) })
    }

    fn publish_challenges<'a>(&'a self, answers: &'a Answers) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.challenges.replace(answers, &self.provider);
            Ok(())
        })
    }

    fn hmac_key<'a>(
        &'a self,
        secret: &'a NamespacedName,
    ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        let snapshot = self.manifests.borrow().clone();
        Box::pin(async move {
            let found = snapshot
                .iter()
                .flat_map(|s| s.secrets.iter())
                .find(|s| {
                    s.metadata.name.as_deref() == Some(secret.name.as_str())
                        && s.metadata.namespace.as_deref().unwrap_or("default") == secret.namespace
                })
                .ok_or_else(|| format!("Secret {secret} is not in the manifests"))?;
            hmac_key_of(found, secret)
        })
    }

    fn order_failed<'a>(&'a self, _: &'a WantedCertificate, _: String) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_keys_are_read_with_or_without_padding() {
        assert_eq!(decode_hmac_key("AQID").unwrap(), [1, 2, 3]);
        assert_eq!(decode_hmac_key("AQI=\n").unwrap(), [1, 2]);
        assert_eq!(decode_hmac_key("-_8").unwrap(), [0xfb, 0xff]);
        assert!(decode_hmac_key("not base64!").is_err());
    }
}
