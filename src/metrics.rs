//! Prometheus metrics in an owned registry (no globals), rendered on the admin listener.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::model::{Config, ProblemKind};

pub struct Metrics {
    registry: Registry,
    config_generation: IntGauge,
    config_builds: IntCounterVec,
    config_build_duration: Histogram,
    config_last_build: Gauge,
    problems: IntGaugeVec,
    watch_events: IntCounterVec,
    leader: IntGauge,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let m = Metrics {
            config_generation: IntGauge::new(
                "portcullis_config_generation",
                "Generation of the live configuration",
            )?,
            config_builds: IntCounterVec::new(
                Opts::new(
                    "portcullis_config_builds_total",
                    "Configuration builds, by result",
                ),
                &["result"],
            )?,
            config_build_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "portcullis_config_build_duration_seconds",
                    "Time to build a configuration from all objects",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            )?,
            config_last_build: Gauge::new(
                "portcullis_config_last_build_timestamp_seconds",
                "Unix time of the last configuration that went live",
            )?,
            problems: IntGaugeVec::new(
                Opts::new(
                    "portcullis_problems",
                    "Problems in the live configuration, by kind",
                ),
                &["kind"],
            )?,
            watch_events: IntCounterVec::new(
                Opts::new(
                    "portcullis_watch_events_total",
                    "Events received from Kubernetes watches, by kind of object and event type",
                ),
                &["kind", "type"],
            )?,
            leader: IntGauge::new(
                "portcullis_leader",
                "1 while this replica holds the leader Lease",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.leader.clone()))?;
        m.registry.register(Box::new(m.watch_events.clone()))?;
        m.registry.register(Box::new(m.config_generation.clone()))?;
        m.registry.register(Box::new(m.config_builds.clone()))?;
        m.registry
            .register(Box::new(m.config_build_duration.clone()))?;
        m.registry.register(Box::new(m.config_last_build.clone()))?;
        m.registry.register(Box::new(m.problems.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "portcullis_build_info",
                "Version of the running controller; always 1",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m.registry.register(Box::new(build_info))?;
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        for kind in ProblemKind::ALL {
            m.problems.with_label_values(&[kind.as_str()]).set(0);
        }
        Ok(m)
    }

    /// Records a configuration that just went live.
    pub fn config_published(&self, config: &Config, build_seconds: f64, unix_now: f64) {
        self.config_builds.with_label_values(&["success"]).inc();
        self.config_build_duration.observe(build_seconds);
        self.config_generation
            .set(i64::try_from(config.generation).unwrap_or(i64::MAX));
        self.config_last_build.set(unix_now);
        for kind in ProblemKind::ALL {
            let count = config.problems.iter().filter(|p| p.kind == kind).count();
            self.problems
                .with_label_values(&[kind.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Records a build that could not produce a configuration (the previous one stays live).
    pub fn config_failed(&self) {
        self.config_builds.with_label_values(&["failure"]).inc();
    }

    pub fn watch_event(&self, kind: &str, event: &str) {
        self.watch_events.with_label_values(&[kind, event]).inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
