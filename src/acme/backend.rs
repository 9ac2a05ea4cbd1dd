//! Where the orderer keeps accounts and certificates and publishes challenge answers: files and this
//! process's own challenge table in manifest mode ([`Files`]), Kubernetes objects in cluster mode
//! (`source::acme`), so one orderer serves both.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use rustls::crypto::CryptoProvider;

use super::challenges::{Answers, Challenges};
use super::store::{Store, StoredAccount, StoredCertificate};
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

    /// Tells the owner of the Ingress that an order failed (a Warning Event in cluster mode).
    fn order_failed<'a>(
        &'a self,
        wanted: &'a WantedCertificate,
        message: String,
    ) -> BoxFuture<'a, ()>;
}

/// What is stored for one certificate, as far as the backend can tell.
pub enum Current {
    /// Only this orderer writes: its own memory is the truth.
    Unknown,
    /// Nothing usable (no Secret, or not a readable Portcullis one).
    Absent,
    Stored(StoredCertificate),
}

/// Manifest mode: the state directory and this process's challenge table.
pub(super) struct Files {
    pub store: Store,
    pub challenges: Arc<Challenges>,
    pub provider: Arc<CryptoProvider>,
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

    fn order_failed<'a>(&'a self, _: &'a WantedCertificate, _: String) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}
