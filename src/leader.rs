//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does it: the holder renews the
//! Lease every few seconds; another replica takes over once it has seen no renewal for a full lease
//! duration, measured on its own clock, so clock skew between nodes does not matter. Only the leader
//! writes Ingress status and Events; every replica serves traffic.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader that could not renew for this long stops acting as leader, before others may take over.
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The part of a Lease that shows whether its holder is alive: holder and renew time.
type LeaseRecord = (Option<String>, Option<MicroTime>);

pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The holder record last seen, and when we saw it change.
    observed: Option<(LeaseRecord, Instant)>,
    last_renewed: Option<Instant>,
}

impl LeaderElection {
    pub fn new(api: Api<Lease>, name: String, identity: String) -> Self {
        LeaderElection {
            api,
            name,
            identity,
            observed: None,
            last_renewed: None,
        }
    }

    /// Campaigns and renews until `stop` turns true, reporting leadership on `leader`; releases the Lease
    /// on the way out so a successor does not wait for it to expire.
    pub async fn run(mut self, leader: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        loop {
            let leading = match self.try_acquire_or_renew().await {
                Ok(leading) => {
                    if leading {
                        self.last_renewed = Some(Instant::now());
                    }
                    leading
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "cannot read or renew the leader Lease");
                    *leader.borrow()
                        && self
                            .last_renewed
                            .is_some_and(|t| t.elapsed() < RENEW_DEADLINE)
                }
            };
            leader.send_if_modified(|current| {
                if *current != leading {
                    tracing::info!(lease = %self.name, identity = %self.identity, leading, "leadership changed");
                    *current = leading;
                    true
                } else {
                    false
                }
            });
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PERIOD) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        if *leader.borrow() {
            if let Err(e) = self.release().await {
                tracing::warn!(lease = %self.name, error = %e, "cannot release the leader Lease");
            }
            leader.send_replace(false);
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| seen != &record);
        if changed {
            self.observed = Some((record, Instant::now()));
        }
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let duration = spec
            .lease_duration_seconds
            .map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(1) as u64));
        let expired = holder.is_none()
            || self
                .observed
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() > duration);
        match holder {
            Some(h) if h == self.identity => {}
            _ if expired => {
                spec.holder_identity = Some(self.identity.clone());
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            _ => return Ok(false),
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        // `replace` carries the resourceVersion we read: if someone else wrote in between, it conflicts.
        conflict_is_false(
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
