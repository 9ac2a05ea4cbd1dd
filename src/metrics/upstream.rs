//! The metrics of sending requests to endpoints: retries on another endpoint and endpoints skipped
//! by the passive health check.

use prometheus::IntCounterVec;

use super::Builder;
use crate::vocab::NamespacedName;

pub struct UpstreamMetrics {
    retries: IntCounterVec,
    skipped: IntCounterVec,
}

impl UpstreamMetrics {
    pub(super) fn new(b: &mut Builder) -> prometheus::Result<UpstreamMetrics> {
        Ok(UpstreamMetrics {
            retries: b.counter_vec(
                "portcullis_upstream_retries_total",
                "Requests sent again after a failed attempt, by Ingress and the failure (error, timeout, http_5xx, stale_connection)",
                &["namespace", "ingress", "reason"],
            )?,
            skipped: b.counter_vec(
                "portcullis_upstream_endpoints_skipped_total",
                "Times an endpoint was marked failing (its connections kept failing) and skipped for a while, by Service",
                &["namespace", "service"],
            )?,
        })
    }

    /// A request is sent again after a failure of kind `reason`.
    pub fn retry(&self, ingress: &NamespacedName, reason: &str) {
        self.retries
            .with_label_values(&[ingress.namespace.as_str(), ingress.name.as_str(), reason])
            .inc();
    }

    /// An endpoint of `service` starts being skipped.
    pub fn endpoint_skipped(&self, service: &NamespacedName) {
        self.skipped
            .with_label_values(&[service.namespace.as_str(), service.name.as_str()])
            .inc();
    }
}
