//! The metrics of built-in ACME: orders and their failures, the next planned order per certificate,
//! and validation requests answered.

use prometheus::{IntCounterVec, IntGaugeVec};

use super::Builder;

pub struct AcmeMetrics {
    orders: IntCounterVec,
    failures: IntCounterVec,
    next_renewal: IntGaugeVec,
    challenges_answered: IntCounterVec,
}

impl AcmeMetrics {
    pub(super) fn new(b: &mut Builder) -> prometheus::Result<AcmeMetrics> {
        Ok(AcmeMetrics {
            orders: b.counter_vec(
                "portcullis_acme_orders_total",
                "ACME orders (first issuance and renewal) by issuer and result (success, failure)",
                &["issuer", "result"],
            )?,
            failures: b.counter_vec(
                "portcullis_acme_order_failures_total",
                "Failed ACME orders by issuer and the step that failed",
                &["issuer", "step"],
            )?,
            next_renewal: b.gauge_vec(
                "portcullis_acme_next_renewal_timestamp_seconds",
                "When the next order of each ACME-managed certificate is planned (renewal, or retry after a failure), Unix time",
                &["namespace", "secret"],
            )?,
            challenges_answered: b.counter_vec(
                "portcullis_acme_challenges_answered_total",
                "ACME validation requests answered, by challenge type",
                &["challenge"],
            )?,
        })
    }

    /// An order ended: `success` or `failure` (then also counted by `step`).
    pub fn order(&self, issuer: &str, failed_step: Option<&str>) {
        let result = if failed_step.is_some() {
            "failure"
        } else {
            "success"
        };
        self.orders.with_label_values(&[issuer, result]).inc();
        if let Some(step) = failed_step {
            self.failures.with_label_values(&[issuer, step]).inc();
        }
    }

    /// Forgets every planned order, before the orderer sets those of the certificates still wanted.
    pub fn clear_next_renewals(&self) {
        self.next_renewal.reset();
    }

    pub fn next_renewal(&self, namespace: &str, secret: &str, at: i64) {
        self.next_renewal
            .with_label_values(&[namespace, secret])
            .set(at);
    }

    /// A validation request was answered (`http-01`, `tls-alpn-01`).
    pub fn challenge_answered(&self, challenge: &str) {
        self.challenges_answered
            .with_label_values(&[challenge])
            .inc();
    }
}
