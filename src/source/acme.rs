//! ACME in cluster mode: the Kubernetes objects behind the orderer ([`crate::acme::Backend`]).
//!
//! - Issued certificates go into each entry's `secretName` (`kubernetes.io/tls`): created, or replaced
//!   only when it carries Portcullis's label; a foreign Secret is never written. The watched TLS
//!   Secrets say what is stored, so a restarted or new orderer re-orders nothing valid.
//! - One Secret per issuer in the controller's namespace, `ELECTION-ID-acme-ISSUER`, holds the account
//!   (key and URL), created once and read by whichever replica orders.
//! - One ConfigMap in the controller's namespace, `ELECTION-ID-acme-challenges`, holds the answers of
//!   the order in progress (key authorizations and TLS-ALPN-01 digests, never a key); every replica
//!   watches it into its own challenge table, so the CA may reach any of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use rustls::crypto::CryptoProvider;
use tokio::sync::watch;

use super::cluster::Stores;
use crate::acme::backend::{Current, hmac_key_of};
use crate::acme::{
    Answers, Backend, Challenges, StoredAccount, StoredCertificate, issued_secret,
    stored_certificate,
};
use crate::model::Config;
use crate::model::acme::{MANAGED_BY, MANAGED_BY_LABEL, WantedCertificate, is_managed};
use crate::model::build::CONTROLLER_NAME;
use crate::vocab::NamespacedName;

/// The account's key in its Secret.
const ACCOUNT_KEY: &str = "account.json";
const HTTP01_PREFIX: &str = "http-01.";
const TLS_ALPN01_PREFIX: &str = "tls-alpn-01.";
/// How long the orderer waits for published answers to come back through its own watch.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// Then how long it gives the other replicas' watches, which see the same change about as fast.
const PROPAGATION: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct AcmeObjects {
    client: Client,
    namespace: String,
    /// `ELECTION-ID-acme`: the prefix of the account Secrets and the challenge ConfigMap.
    prefix: String,
    secrets: Store<Secret>,
    ingresses: Store<Ingress>,
    challenges: Arc<Challenges>,
    provider: Arc<CryptoProvider>,
    recorder: Recorder,
}

impl AcmeObjects {
    pub fn new(
        client: Client,
        namespace: &str,
        election_id: &str,
        identity: &str,
        stores: &Stores,
        challenges: Arc<Challenges>,
        provider: Arc<CryptoProvider>,
    ) -> AcmeObjects {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: Some(identity.to_string()),
        };
        AcmeObjects {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace: namespace.to_string(),
            prefix: format!("{election_id}-acme"),
            secrets: stores.secrets.clone(),
            ingresses: stores.ingresses.clone(),
            challenges,
            provider,
        }
    }

    fn challenges_name(&self) -> String {
        format!("{}-challenges", self.prefix)
    }

    fn account_name(&self, issuer: &str) -> String {
        format!("{}-{issuer}", self.prefix)
    }

    /// Once a configuration names ACME issuers, watches the challenge ConfigMap into this replica's
    /// challenge table, for as long as the process runs. Without issuers nothing is watched, so the
    /// chart's RBAC without ACME is enough.
    pub async fn answer_when_configured(self, mut configs: watch::Receiver<Arc<Config>>) {
        if configs
            .wait_for(|c| !c.settings.acme.issuers.is_empty())
            .await
            .is_err()
        {
            return;
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("metadata.name={}", self.challenges_name());
        let stream = watcher(api, watcher::Config::default().fields(&selector))
            .default_backoff()
            .applied_objects();
        let mut stream = std::pin::pin!(stream);
        tracing::info!(configmap = %self.challenges_name(), "answering the ACME challenges of whichever replica orders");
        while let Some(event) = stream.next().await {
            match event {
                Ok(map) => self.challenges.replace(&answers_of(&map), &self.provider),
                Err(e) => {
                    tracing::warn!(configmap = %self.challenges_name(), error = %e, "cannot watch the ACME challenges; retrying")
                }
            }
        }
    }

    async fn write_challenges(&self, answers: &Answers) -> Result<(), kube::Error> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let name = self.challenges_name();
        let data = data_of(answers);
        match api.get_opt(&name).await? {
            Some(mut map) => {
                if map.data.as_ref().unwrap_or(&BTreeMap::new()) == &data {
                    return Ok(());
                }
                map.data = Some(data);
                api.replace(&name, &PostParams::default(), &map).await?;
            }
            None => {
                let map = ConfigMap {
                    metadata: owned_metadata(&self.namespace, &name),
                    data: Some(data),
                    ..ConfigMap::default()
                };
                api.create(&PostParams::default(), &map).await?;
            }
        }
        Ok(())
    }

    async fn event(&self, ingress: &NamespacedName, reason: &str, note: String) {
        let key = ObjectRef::<Ingress>::new(&ingress.name).within(&ingress.namespace);
        let Some(reference) = self.ingresses.get(&key).map(|i| i.object_ref(&())) else {
            return;
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(truncate(note)),
            action: "Order".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(%ingress, error = %e, "cannot publish Event");
        }
    }
}

impl Backend for AcmeObjects {
    fn account<'a>(
        &'a self,
        issuer: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredAccount>, String>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let name = self.account_name(issuer);
            let secret = api
                .get_opt(&name)
                .await
                .map_err(|e| format!("cannot read Secret {}/{name}: {e}", self.namespace))?;
            let Some(bytes) = secret
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get(ACCOUNT_KEY))
            else {
                return Ok(None);
            };
            match serde_json::from_slice(&bytes.0) {
                Ok(account) => Ok(Some(account)),
                Err(e) => {
                    tracing::warn!(secret = %format!("{}/{name}", self.namespace), error = %e, "unreadable ACME account; a new account is created");
                    Ok(None)
                }
            }
        })
    }

    fn save_account<'a>(
        &'a self,
        issuer: &'a str,
        account: &'a StoredAccount,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let name = self.account_name(issuer);
            let json = serde_json::to_vec(account).map_err(|e| e.to_string())?;
            let data = BTreeMap::from([(ACCOUNT_KEY.to_string(), ByteString(json))]);
            let written = match api.get_opt(&name).await {
                Ok(Some(mut secret)) => {
                    secret.data = Some(data);
                    api.replace(&name, &PostParams::default(), &secret).await
                }
                Ok(None) => {
                    let secret = Secret {
                        metadata: owned_metadata(&self.namespace, &name),
                        type_: Some("Opaque".into()),
                        data: Some(data),
                        ..Secret::default()
                    };
                    api.create(&PostParams::default(), &secret).await
                }
                Err(e) => Err(e),
            };
            written
                .map(|_| ())
                .map_err(|e| format!("Secret {}/{name}: {e}", self.namespace))
        })
    }

    fn initial_certificates(&self) -> Vec<StoredCertificate> {
        Vec::new()
    }

    fn current_certificate(&self, secret: &NamespacedName) -> Current {
        let key = ObjectRef::<Secret>::new(&secret.name).within(&secret.namespace);
        match self.secrets.get(&key).and_then(|s| stored_certificate(&s)) {
            Some(cert) => Current::Stored(cert),
            None => Current::Absent,
        }
    }

    fn check_writable<'a>(
        &'a self,
        secret: &'a NamespacedName,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
            match api.get_opt(&secret.name).await {
                Ok(Some(existing)) if !is_managed(&existing) => Err(foreign(secret)),
                Ok(_) => Ok(()),
                Err(e) => Err(format!("cannot read Secret {secret}: {e}")),
            }
        })
    }

    fn save_certificate<'a>(
        &'a self,
        cert: &'a StoredCertificate,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let id = cert.secret();
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &cert.namespace);
            let issued = issued_secret(cert);
            // `replace` carries the resourceVersion read: a Secret changed in between conflicts
            // rather than being overwritten unseen.
            let written = match api.get_opt(&cert.name).await {
                Ok(Some(existing)) if !is_managed(&existing) => return Err(foreign(&id)),
                Ok(Some(mut existing)) => {
                    let meta = &mut existing.metadata;
                    meta.labels
                        .get_or_insert_default()
                        .extend(issued.metadata.labels.clone().unwrap_or_default());
                    let annotations = meta.annotations.get_or_insert_default();
                    annotations.retain(|k, _| !k.starts_with("portcullis.io/acme-"));
                    annotations.extend(issued.metadata.annotations.clone().unwrap_or_default());
                    existing.data = issued.data.clone();
                    existing.string_data = None;
                    api.replace(&cert.name, &PostParams::default(), &existing)
                        .await
                }
                Ok(None) => api.create(&PostParams::default(), &issued).await,
                Err(e) => Err(e),
            };
            written
                .map(|_| ())
                .map_err(|e| format!("cannot write Secret {id}: {e}"))
        })
    }

    fn publish_challenges<'a>(&'a self, answers: &'a Answers) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.write_challenges(answers).await.map_err(|e| {
                format!(
                    "cannot write ConfigMap {}/{}: {e}",
                    self.namespace,
                    self.challenges_name()
                )
            })?;
            if answers.is_empty() {
                return Ok(());
            }
            let deadline = Instant::now() + PUBLISH_TIMEOUT;
            while !self.challenges.answers_all(answers) {
                if Instant::now() > deadline {
                    return Err(format!(
                        "the answers written to ConfigMap {}/{} did not come back through its watch within {PUBLISH_TIMEOUT:?}",
                        self.namespace,
                        self.challenges_name()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(PROPAGATION).await;
            Ok(())
        })
    }

    fn hmac_key<'a>(
        &'a self,
        secret: &'a NamespacedName,
    ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.namespace);
            let found = api
                .get_opt(&secret.name)
                .await
                .map_err(|e| format!("cannot read Secret {secret}: {e}"))?
                .ok_or_else(|| format!("Secret {secret} does not exist"))?;
            hmac_key_of(&found, secret)
        })
    }

    fn order_failed<'a>(
        &'a self,
        wanted: &'a WantedCertificate,
        message: String,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.event(&wanted.ingress, "AcmeOrderFailed", message))
    }
}

fn foreign(secret: &NamespacedName) -> String {
    format!(
        "Secret {secret} exists and was not created by Portcullis; it is not overwritten and keeps serving"
    )
}

fn owned_metadata(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(namespace.to_string()),
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([(
            MANAGED_BY_LABEL.to_string(),
            MANAGED_BY.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

/// The ConfigMap's data for `answers`: `http-01.TOKEN` → key authorization, `tls-alpn-01.HOST` →
/// base64 of the digest (tokens are base64url and hosts DNS names, both valid ConfigMap keys).
fn data_of(answers: &Answers) -> BTreeMap<String, String> {
    answers
        .http01
        .iter()
        .map(|(t, k)| (format!("{HTTP01_PREFIX}{t}"), k.clone()))
        .chain(
            answers
                .tls_alpn01
                .iter()
                .map(|(h, d)| (format!("{TLS_ALPN01_PREFIX}{h}"), STANDARD.encode(d))),
        )
        .collect()
}

/// The answers in a ConfigMap; anything else in it is ignored.
fn answers_of(map: &ConfigMap) -> Answers {
    let mut answers = Answers::default();
    for (key, value) in map.data.iter().flatten() {
        if let Some(token) = key.strip_prefix(HTTP01_PREFIX) {
            answers.http01.insert(token.to_string(), value.clone());
        } else if let Some(host) = key.strip_prefix(TLS_ALPN01_PREFIX)
            && let Ok(digest) = STANDARD.decode(value)
        {
            answers.tls_alpn01.insert(host.to_string(), digest);
        }
    }
    answers
}

/// Event notes are limited to 1 kB.
fn truncate(mut note: String) -> String {
    if note.len() > 1000 {
        let mut end = 1000;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_survive_the_configmap() {
        let answers = Answers {
            http01: BTreeMap::from([("tok-en_1".into(), "tok-en_1.thumb".into())]),
            tls_alpn01: BTreeMap::from([("a.example".into(), vec![9u8; 32])]),
        };
        let map = ConfigMap {
            data: Some(data_of(&answers)),
            ..ConfigMap::default()
        };
        assert_eq!(answers_of(&map), answers);
    }
}
