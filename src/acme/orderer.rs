//! The orderer: for each wanted certificate that has none, or whose certificate is due, it places an
//! ACME order, answers the challenges through [`Challenges`], and stores and publishes the result.
//! A certificate is due when one third of its lifetime remains, or earlier at a random point of the
//! renewal window its CA suggests through ARI (RFC 9773), asked again when the CA's `Retry-After`
//! says; a renewal names the certificate it `replaces`. Orders run one at a time, and only while this
//! process is the orderer (the leader, in cluster mode); a failure backs off per certificate with
//! jitter (1 minute, doubling, to 6 hours) and is logged, counted and reported with the failed step and
//! the CA's detail.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::sync::watch;

use super::backend::{Backend, Current};
use super::challenges::Answers;
use super::http::{self, RetryAfter};
use super::issued_secret;
use super::store::{StoredAccount, StoredCertificate};
use crate::metrics::Metrics;
use crate::model::Config;
use crate::model::acme::WantedCertificate;
use crate::settings::{Challenge, Issuer};
use crate::vocab::NamespacedName;

const FIRST_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// The least wait after a `rateLimited` answer: the CA's limits count in hours.
const RATE_LIMITED_BACKOFF: Duration = Duration::from_secs(3600);
/// The longest a CA's `Retry-After` on an error can delay the next attempt.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// An order that takes longer is abandoned and retried after the backoff.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a certificate this orderer has just written may be missing from what the backend
/// reports (a watch delivers it within milliseconds to seconds).
const WATCH_GRACE: Duration = Duration::from_secs(30);
/// The longest sleep between two looks at the wanted certificates, so clock changes cannot strand one.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Why an order failed: the step, for logs and the metric's label, and the CA's or the system's words.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {detail}")]
pub struct OrderError {
    pub step: &'static str,
    pub detail: String,
    /// The CA said `rateLimited`: retrying soon only makes it worse.
    pub rate_limited: bool,
}

impl OrderError {
    fn new(step: &'static str, detail: impl Into<String>) -> OrderError {
        OrderError {
            step,
            detail: detail.into(),
            rate_limited: false,
        }
    }
}

fn at(step: &'static str) -> impl FnOnce(instant_acme::Error) -> OrderError {
    move |e| OrderError {
        rate_limited: matches!(&e, instant_acme::Error::Api(p)
            if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:rateLimited")),
        step,
        detail: error_chain(&e),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

struct Failure {
    count: u32,
    retry_at: Instant,
}

/// What the CA's renewal information said about one certificate.
struct AriPlan {
    /// The certificate it is for (a renewed one is asked about afresh).
    not_after: i64,
    /// The chosen point of the suggested window, Unix seconds; `None` when the CA has no ARI.
    renew_at: Option<i64>,
    /// The certificate's ARI identifier, sent as `replaces` when renewing it.
    id: Option<CertificateIdentifier<'static>>,
    /// When to ask again (the CA's `Retry-After`).
    ask_again: Instant,
}

/// Bounds on how often renewal information is asked for, whatever `Retry-After` says.
const ARI_MIN_INTERVAL: Duration = Duration::from_secs(60);
const ARI_MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

pub struct Orderer {
    /// `Err`: why nothing can be ordered in this mode (said once per set of wanted certificates).
    backend: Result<Box<dyn Backend>, String>,
    issued: watch::Sender<Arc<Vec<Arc<Secret>>>>,
    metrics: Arc<Metrics>,
    /// Per issuer: its directory, the account, and the last `Retry-After` of its CA's errors.
    accounts: HashMap<String, (String, Account, RetryAfter)>,
    certs: BTreeMap<NamespacedName, StoredCertificate>,
    failures: HashMap<NamespacedName, Failure>,
    ari: HashMap<NamespacedName, AriPlan>,
    /// When this orderer last wrote each certificate.
    written: HashMap<NamespacedName, Instant>,
}

impl Orderer {
    pub(super) fn new(
        backend: Result<Box<dyn Backend>, String>,
        issued: watch::Sender<Arc<Vec<Arc<Secret>>>>,
        metrics: Arc<Metrics>,
    ) -> Orderer {
        let certs = backend
            .as_ref()
            .map(|b| {
                b.initial_certificates()
                    .into_iter()
                    .map(|c| (c.secret(), c))
                    .collect()
            })
            .unwrap_or_default();
        let orderer = Orderer {
            backend,
            issued,
            metrics,
            accounts: HashMap::new(),
            certs,
            failures: HashMap::new(),
            ari: HashMap::new(),
            written: HashMap::new(),
        };
        // Before the first configuration is built: a restart never serves the default certificate
        // for a stored one, not even briefly.
        orderer.publish();
        orderer
    }

    /// Orders what each published configuration wants while `orderer` says this process is the one
    /// that orders, until the configuration channel closes. Losing that role abandons the order in
    /// progress: the next orderer places it afresh.
    pub async fn run(
        mut self,
        mut config: watch::Receiver<Arc<Config>>,
        mut orderer: watch::Receiver<bool>,
    ) {
        let mut refused: Option<Vec<WantedCertificate>> = None;
        loop {
            let current = config.borrow_and_update().clone();
            let ordering = *orderer.borrow_and_update();
            let next = match &self.backend {
                Ok(_) if !ordering => Instant::now() + MAX_SLEEP,
                Ok(_) => {
                    let mut lost = orderer.clone();
                    tokio::select! {
                        next = self.work(&current) => next,
                        _ = lost.wait_for(|o| !*o) => {
                            tracing::info!("no longer the ACME orderer; the order in progress is left to the next one");
                            Instant::now()
                        }
                    }
                }
                Err(reason) => {
                    if !current.acme.is_empty() && refused.as_ref() != Some(&current.acme) {
                        tracing::warn!(certificates = current.acme.len(), "{reason}");
                        refused = Some(current.acme.clone());
                    }
                    Instant::now() + MAX_SLEEP
                }
            };
            tokio::select! {
                changed = config.changed() => if changed.is_err() { return },
                changed = orderer.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }

    /// Orders every wanted certificate that is missing or due and not backing off; returns when to
    /// look again.
    async fn work(&mut self, config: &Config) -> Instant {
        let mut next = Instant::now() + MAX_SLEEP;
        self.metrics.acme().clear_next_renewals();
        for wanted in &config.acme {
            let Some(issuer) = config.settings.acme.issuers.get(&wanted.issuer) else {
                continue;
            };
            let renewal =
                |at: i64| Instant::now() + Duration::from_secs((at - unix_now()).max(0) as u64);
            let mut replaces = None;
            self.refresh(&wanted.secret).await;
            if let Some(cert) = self.certs.get(&wanted.secret).cloned()
                && cert.issuer == wanted.issuer
                && same_names(&cert.hosts, &wanted.hosts)
            {
                // ARI may move the renewal earlier (an incident, a revocation), never later than
                // the lifetime rule, so a window reaching up to expiry cannot outlive the certificate.
                let plan = self.ari_plan(wanted, issuer, &cert).await;
                let due = plan
                    .and_then(|p| p.renew_at)
                    .map_or(cert.renew_at(), |ari| ari.min(cert.renew_at()));
                if unix_now() < due {
                    self.set_next_renewal(&wanted.secret, due);
                    next = next.min(renewal(due));
                    if let Some(p) = self.ari.get(&wanted.secret) {
                        next = next.min(p.ask_again);
                    }
                    continue;
                }
                replaces = self.ari.get(&wanted.secret).and_then(|p| p.id.clone());
            }
            if let Some(failure) = self.failures.get(&wanted.secret)
                && Instant::now() < failure.retry_at
            {
                let wait = failure.retry_at - Instant::now();
                self.set_next_renewal(&wanted.secret, unix_now() + wait.as_secs() as i64);
                next = next.min(failure.retry_at);
                continue;
            }
            let started = Instant::now();
            // Only a `Retry-After` of this order's answers counts for its backoff.
            if let Some((_, _, retry_after)) = self.accounts.get(&wanted.issuer) {
                retry_after.take();
            }
            let ordered = self.order(wanted, issuer, replaces);
            let result = match tokio::time::timeout(ORDER_TIMEOUT, ordered).await {
                Ok(result) => result,
                Err(_) => Err(OrderError::new(
                    "order",
                    format!("no certificate within {ORDER_TIMEOUT:?}"),
                )),
            };
            // However the order ended, its answers are withdrawn.
            if let Ok(backend) = &self.backend
                && let Err(e) = backend.publish_challenges(&Answers::default()).await
            {
                tracing::debug!(error = e, "cannot withdraw the challenge answers");
            }
            match result {
                Ok(cert) => {
                    tracing::info!(
                        secret = %wanted.secret,
                        ingress = %wanted.ingress,
                        issuer = wanted.issuer,
                        hosts = ?wanted.hosts,
                        not_after = cert.not_after,
                        seconds = started.elapsed().as_secs_f64(),
                        "ACME certificate issued"
                    );
                    self.metrics.acme().order(&wanted.issuer, None);
                    self.set_next_renewal(&wanted.secret, cert.renew_at());
                    next = next.min(renewal(cert.renew_at()));
                    self.failures.remove(&wanted.secret);
                    self.written.insert(wanted.secret.clone(), Instant::now());
                    self.certs.insert(wanted.secret.clone(), cert);
                    self.publish();
                }
                Err(e) => {
                    let failure = self
                        .failures
                        .entry(wanted.secret.clone())
                        .or_insert(Failure {
                            count: 0,
                            retry_at: Instant::now(),
                        });
                    failure.count += 1;
                    let retry_after = self
                        .accounts
                        .get(&wanted.issuer)
                        .and_then(|(_, _, r)| r.take());
                    let wait = failure_wait(
                        backoff(failure.count),
                        e.rate_limited,
                        retry_after,
                        SystemTime::now(),
                    );
                    failure.retry_at = Instant::now() + wait;
                    tracing::warn!(
                        secret = %wanted.secret,
                        ingress = %wanted.ingress,
                        issuer = wanted.issuer,
                        step = e.step,
                        failures = failure.count,
                        retry_in_s = wait.as_secs(),
                        "ACME order failed: {e}; the current certificate (if any) keeps serving"
                    );
                    self.metrics.acme().order(&wanted.issuer, Some(e.step));
                    let retry_at = failure.retry_at;
                    if let Ok(backend) = &self.backend {
                        backend
                            .order_failed(
                                wanted,
                                format!("ACME order for Secret {} failed at {e}", wanted.secret),
                            )
                            .await;
                    }
                    self.set_next_renewal(&wanted.secret, unix_now() + wait.as_secs() as i64);
                    next = next.min(retry_at);
                }
            }
        }
        next
    }

    /// Takes in a certificate stored by someone else since (another replica, before it stopped being
    /// the orderer), when it is newer than the one known here; writes a known one again when its
    /// Secret is gone (deleted by hand), rather than ordering a new one.
    async fn refresh(&mut self, secret: &NamespacedName) {
        let Ok(backend) = &self.backend else {
            return;
        };
        match backend.current_certificate(secret) {
            Current::Unknown => {}
            Current::Stored(current) => {
                if self
                    .certs
                    .get(secret)
                    .is_none_or(|known| known.not_after < current.not_after)
                {
                    self.certs.insert(secret.clone(), current);
                }
            }
            Current::Absent => {
                // Just written by this orderer: the watch has not delivered it yet.
                if self
                    .written
                    .get(secret)
                    .is_some_and(|at| at.elapsed() < WATCH_GRACE)
                {
                    return;
                }
                let Some(known) = self.certs.get(secret) else {
                    return;
                };
                match backend.save_certificate(known).await {
                    Ok(()) => {
                        tracing::info!(%secret, "the Secret of an ACME certificate was gone; written again");
                        self.written.insert(secret.clone(), Instant::now());
                    }
                    Err(e) => {
                        tracing::warn!(%secret, error = e, "the Secret of an ACME certificate is gone and cannot be written again; ordering anew");
                        self.certs.remove(secret);
                    }
                }
            }
        }
    }

    fn set_next_renewal(&self, secret: &NamespacedName, at: i64) {
        self.metrics
            .acme()
            .next_renewal(&secret.namespace, &secret.name, at);
    }

    /// Every stored certificate, as the Secret the configuration serves it from.
    fn publish(&self) {
        let secrets = self
            .certs
            .values()
            .map(|c| Arc::new(issued_secret(c)))
            .collect();
        self.issued.send_replace(Arc::new(secrets));
    }

    /// The renewal information of a valid certificate: asked of the CA when none is known for it or
    /// the CA's `Retry-After` has passed, else remembered.
    async fn ari_plan(
        &mut self,
        wanted: &WantedCertificate,
        issuer: &Issuer,
        cert: &StoredCertificate,
    ) -> Option<&AriPlan> {
        let fresh = self
            .ari
            .get(&wanted.secret)
            .is_some_and(|p| p.not_after == cert.not_after && Instant::now() < p.ask_again);
        if !fresh {
            let plan = self.ask_ari(&wanted.issuer, issuer, cert).await;
            self.ari.insert(wanted.secret.clone(), plan);
        }
        self.ari.get(&wanted.secret)
    }

    async fn ask_ari(&mut self, name: &str, issuer: &Issuer, cert: &StoredCertificate) -> AriPlan {
        let mut plan = AriPlan {
            not_after: cert.not_after,
            renew_at: None,
            id: None,
            ask_again: Instant::now() + ARI_MAX_INTERVAL,
        };
        let Some(Ok(leaf)) = CertificateDer::pem_slice_iter(cert.chain.as_bytes()).next() else {
            return plan;
        };
        let id = match CertificateIdentifier::try_from(&leaf) {
            Ok(id) => id.into_owned(),
            Err(e) => {
                tracing::debug!(
                    issuer = name,
                    error = e,
                    "no renewal information for this certificate"
                );
                return plan;
            }
        };
        let account = match self.account(name, issuer).await {
            Ok(account) => account,
            Err(e) => {
                tracing::debug!(issuer = name, error = %e, "no renewal information without the account");
                plan.ask_again = Instant::now() + ARI_MIN_INTERVAL;
                return plan;
            }
        };
        match account.renewal_info(&id).await {
            Ok((info, retry_after)) => {
                let start = info.suggested_window.start.unix_timestamp();
                let end = info.suggested_window.end.unix_timestamp();
                let offset = random_fraction() * (end - start).max(0) as f64;
                plan.renew_at = Some(start + offset as i64);
                plan.id = Some(id);
                plan.ask_again =
                    Instant::now() + retry_after.clamp(ARI_MIN_INTERVAL, ARI_MAX_INTERVAL);
            }
            // The directory offers no renewal information: the lifetime rule alone applies.
            Err(instant_acme::Error::Unsupported(_)) => {
                tracing::debug!(issuer = name, "the CA offers no renewal information");
            }
            Err(e) => {
                tracing::warn!(issuer = name, error = %error_chain(&e), "cannot read the CA's renewal information; renewing at one third of the lifetime remaining");
                plan.ask_again = Instant::now() + ARI_MIN_INTERVAL * 60;
            }
        }
        tracing::debug!(
            issuer = name,
            renew_at = plan.renew_at,
            "renewal information"
        );
        plan
    }

    async fn order(
        &mut self,
        wanted: &WantedCertificate,
        issuer: &Issuer,
        replaces: Option<CertificateIdentifier<'static>>,
    ) -> Result<StoredCertificate, OrderError> {
        let account = self.account(&wanted.issuer, issuer).await?;
        let backend = self
            .backend
            .as_ref()
            .map_err(|reason| OrderError::new("store", reason.clone()))?;
        backend
            .check_writable(&wanted.secret)
            .await
            .map_err(|detail| OrderError::new("store", detail))?;
        let ids: Vec<Identifier> = wanted.hosts.iter().cloned().map(Identifier::Dns).collect();
        let mut new = NewOrder::new(&ids);
        if let Some(profile) = &issuer.profile {
            new = new.profile(profile);
        }
        if let Some(replaced) = replaces {
            new = new.replaces(replaced);
        }
        let mut order = account.new_order(&new).await.map_err(at("new-order"))?;
        let kind = match issuer.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        // All answers are published (to every replica) before the CA is told to validate any.
        let mut answers = Answers::default();
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(at("authorization"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(OrderError::new(
                        "authorization",
                        format!("authorization is {other:?}"),
                    ));
                }
            }
            let Identifier::Dns(host) = authz.identifier().identifier.clone() else {
                return Err(OrderError::new(
                    "authorization",
                    "the CA asks to authorize something other than a DNS name",
                ));
            };
            let challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                OrderError::new(
                    "challenge",
                    format!(
                        "the CA offers no {} challenge for {host}",
                        issuer.challenge.as_str()
                    ),
                )
            })?;
            let key_authorization = challenge.key_authorization();
            match issuer.challenge {
                Challenge::Http01 => {
                    answers.http01.insert(
                        challenge.token.clone(),
                        key_authorization.as_str().to_string(),
                    );
                }
                Challenge::TlsAlpn01 => {
                    answers
                        .tls_alpn01
                        .insert(host, key_authorization.digest().as_ref().to_vec());
                }
            }
        }
        backend
            .publish_challenges(&answers)
            .await
            .map_err(|detail| OrderError::new("challenge", detail))?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(at("authorization"))?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            if let Some(mut challenge) = authz.challenge(kind.clone()) {
                challenge.set_ready().await.map_err(at("challenge"))?;
            }
        }
        let status = order
            .poll_ready(&RetryPolicy::default())
            .await
            .map_err(at("validation"))?;
        if status != OrderStatus::Ready {
            return Err(OrderError::new(
                "validation",
                validation_errors(&mut order, status).await,
            ));
        }
        let key =
            rcgen::KeyPair::generate().map_err(|e| OrderError::new("finalize", e.to_string()))?;
        let csr = rcgen::CertificateParams::new(wanted.hosts.clone())
            .and_then(|mut params| {
                params.distinguished_name = rcgen::DistinguishedName::new();
                params.serialize_request(&key)
            })
            .map_err(|e| {
                OrderError::new(
                    "finalize",
                    format!("cannot make the certificate request: {e}"),
                )
            })?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(at("finalize"))?;
        let chain = order
            .poll_certificate(&RetryPolicy::default())
            .await
            .map_err(at("certificate"))?;
        let (not_before, not_after) =
            validity(&chain).map_err(|detail| OrderError::new("certificate", detail))?;
        let cert = StoredCertificate {
            namespace: wanted.secret.namespace.clone(),
            name: wanted.secret.name.clone(),
            issuer: wanted.issuer.clone(),
            hosts: wanted.hosts.clone(),
            chain,
            key: key.serialize_pem(),
            not_before,
            not_after,
        };
        backend
            .save_certificate(&cert)
            .await
            .map_err(|detail| OrderError::new("store", detail))?;
        Ok(cert)
    }

    /// The issuer's account: from memory, else from the state directory, else created (and stored).
    async fn account(&mut self, name: &str, issuer: &Issuer) -> Result<Account, OrderError> {
        if let Some((directory, account, _)) = self.accounts.get(name)
            && *directory == issuer.directory
        {
            return Ok(account.clone());
        }
        let (client, retry_after) = http::client(issuer.directory_ca_file.as_deref())
            .map_err(|detail| OrderError::new("account", detail))?;
        let builder = Account::builder_with_http(client);
        let backend = self
            .backend
            .as_ref()
            .map_err(|reason| OrderError::new("account", reason.clone()))?;
        let stored = backend
            .account(name)
            .await
            .map_err(|detail| OrderError::new("account", detail))?;
        let account = match stored.filter(|a| a.directory == issuer.directory) {
            Some(stored) => builder
                .from_credentials(stored.credentials)
                .await
                .map_err(at("account"))?,
            None => {
                let binding = match &issuer.external_account_binding {
                    Some(eab) => {
                        let key = backend
                            .hmac_key(&eab.hmac_key_secret)
                            .await
                            .map_err(|detail| OrderError::new("account", detail))?;
                        Some(ExternalAccountKey::new(eab.key_id.clone(), &key))
                    }
                    None => None,
                };
                let contact = issuer.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        issuer.directory.clone(),
                        binding.as_ref(),
                    )
                    .await
                    .map_err(at("account"))?;
                let stored = StoredAccount {
                    directory: issuer.directory.clone(),
                    credentials,
                };
                backend.save_account(name, &stored).await.map_err(|e| {
                    OrderError::new("account", format!("cannot store the account: {e}"))
                })?;
                tracing::info!(issuer = name, id = account.id(), "ACME account created");
                account
            }
        };
        self.accounts.insert(
            name.to_string(),
            (issuer.directory.clone(), account.clone(), retry_after),
        );
        Ok(account)
    }
}

/// What the CA said about a failed validation: the order's error and each challenge's.
async fn validation_errors(order: &mut instant_acme::Order, status: OrderStatus) -> String {
    let mut details = Vec::new();
    if let Some(problem) = &order.state().error {
        details.push(problem.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for challenge in &authz.challenges {
            if let Some(problem) = &challenge.error {
                details.push(problem.to_string());
            }
        }
    }
    if details.is_empty() {
        details.push(format!("the order is {status:?}"));
    }
    details.join("; ")
}

/// `notBefore` and `notAfter` of the chain's first certificate, Unix seconds.
pub(super) fn validity(chain: &str) -> Result<(i64, i64), String> {
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .ok_or("the CA sent no certificate")?
        .map_err(|e| format!("the CA sent an unreadable certificate: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| format!("the CA sent an unreadable certificate: {e}"))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

fn same_names(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// How long to wait after a failed order: the backoff, at least an hour after `rateLimited`, and at
/// least until the CA's `Retry-After` (at most a day, so a wrong date cannot strand a certificate).
fn failure_wait(
    backoff: Duration,
    rate_limited: bool,
    retry_after: Option<SystemTime>,
    now: SystemTime,
) -> Duration {
    let floor = if rate_limited {
        RATE_LIMITED_BACKOFF
    } else {
        Duration::ZERO
    };
    let asked = retry_after
        .and_then(|at| at.duration_since(now).ok())
        .unwrap_or(Duration::ZERO)
        .min(MAX_RETRY_AFTER);
    backoff.max(floor).max(asked)
}

/// 1 minute, doubling per failure, at most 6 hours; ±20% jitter so many certificates spread out.
fn backoff(failures: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    base.mul_f64(0.8 + 0.4 * random_fraction())
}

/// A random number in [0, 1].
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 2];
    match aws_lc_rs::rand::fill(&mut bytes) {
        Ok(()) => f64::from(u16::from_le_bytes(bytes)) / f64::from(u16::MAX),
        Err(_) => 0.5,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_a_minute_doubles_and_stops_at_six_hours() {
        let within = |d: Duration, base: u64| {
            let s = d.as_secs_f64();
            s >= base as f64 * 0.8 - 0.01 && s <= base as f64 * 1.2 + 0.01
        };
        assert!(within(backoff(1), 60));
        assert!(within(backoff(2), 120));
        assert!(within(backoff(5), 960));
        assert!(within(backoff(40), 6 * 3600));
    }

    #[test]
    fn a_failed_order_waits_for_the_cas_retry_after_and_rate_limits() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let minute = Duration::from_secs(60);
        assert_eq!(failure_wait(minute, false, None, now), minute);
        assert_eq!(
            failure_wait(minute, true, None, now),
            RATE_LIMITED_BACKOFF,
            "rateLimited waits at least an hour"
        );
        let later = now + Duration::from_secs(7200);
        assert_eq!(
            failure_wait(minute, true, Some(later), now),
            Duration::from_secs(7200),
            "Retry-After beyond the backoff wins"
        );
        assert_eq!(
            failure_wait(minute, false, Some(now + Duration::from_secs(10)), now),
            minute,
            "a shorter Retry-After does not shorten the backoff"
        );
        assert_eq!(
            failure_wait(minute, false, Some(now - Duration::from_secs(10)), now),
            minute
        );
        assert_eq!(
            failure_wait(
                minute,
                false,
                Some(now + Duration::from_secs(365 * 86400)),
                now
            ),
            MAX_RETRY_AFTER
        );
    }
}
