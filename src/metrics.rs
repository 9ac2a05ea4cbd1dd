//! Prometheus metrics in an owned registry (no globals), rendered on the admin listener.
//!
//! [`Metrics`] owns every metric family. The data plane records through pre-resolved handles:
//! per-request series come from the per-generation table in [`traffic`], listener and TLS series are
//! resolved once when a listener starts. Everything derived from a configuration (routes, certificates,
//! endpoints, problems) is refreshed in [`Metrics::config_published`], which also removes the series of
//! objects that are gone. `docs/metrics.md` lists every metric.

mod acme;
pub mod traffic;
mod upstream;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::StatusCode;
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use rustls::ProtocolVersion;

use crate::model::{CertificateInfo, Config, NamespacedName, ProblemKind};
pub use acme::AcmeMetrics;
pub use traffic::{Exchange, Measured};
use traffic::{Families, Requests};
pub use upstream::UpstreamMetrics;

/// Buckets for durations of work the controller does itself (TLS handshakes, configuration builds).
const FAST_SECONDS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The kinds of series a metric family exposes, to list the names a scrape can contain.
#[derive(Clone, Copy)]
enum Shape {
    Single,
    Histogram,
}

/// The label value of a TLS handshake that did not complete (its version is not known).
pub const UNKNOWN_TLS_VERSION: &str = "unknown";

/// Every metric of the process, and the per-generation route table requests record through. One is
/// made at start and shared (`Arc`) by the proxy, the listeners, the admin listener and the publisher.
pub struct Metrics {
    registry: Registry,
    /// Every family name a scrape can contain, including `_bucket`/`_sum`/`_count`.
    names: BTreeSet<String>,
    config_generation: IntGauge,
    config_builds: IntCounterVec,
    config_build_duration: Histogram,
    config_last_build: Gauge,
    problems: IntGaugeVec,
    watch_events: IntCounterVec,
    leader: IntGauge,
    open_connections: IntGaugeVec,
    accepted_connections: IntCounterVec,
    proxy_protocol_headers: IntCounterVec,
    proxy_protocol_refused: IntCounterVec,
    passthrough_connections: IntCounterVec,
    rate_limit_entries: IntGauge,
    tls: TlsHandles,
    redirects: IntCounterVec,
    acme: AcmeMetrics,
    upstream: UpstreamMetrics,
    /// Redirect counters for 300..=308, resolved on first use.
    redirect_codes: [OnceLock<IntCounter>; 9],
    certificate_expiry: GaugeVec,
    certificate_not_before: GaugeVec,
    certificate_info: IntGaugeVec,
    backend_endpoints: IntGaugeVec,
    external_auth: HistogramVec,
    requests: Requests,
    /// Label sets of the series derived from the live configuration, to remove the ones that go away.
    published: Mutex<Published>,
}

/// TLS handshake series, resolved at start: there are only three.
struct TlsHandles {
    tls13: IntCounter,
    tls12: IntCounter,
    failed: IntCounter,
    other_versions: IntCounterVec,
    succeeded_seconds: Histogram,
    failed_seconds: Histogram,
}

#[derive(Default)]
struct Published {
    /// As the last configuration listed them (sorted by Secret and host).
    certificates: Arc<[CertificateInfo]>,
    /// Sorted, with their ready-endpoint count.
    backends: Vec<([String; 3], usize)>,
    /// Ingresses with `auth-url`.
    external_auth: HashSet<[String; 2]>,
}

/// The open-connection gauge and accepted counter of one listener.
#[derive(Clone)]
pub struct ListenerMetrics {
    open: IntGauge,
    accepted: IntCounter,
}

impl ListenerMetrics {
    /// Counts a newly accepted connection; it stays open until the returned guard is dropped.
    pub fn accepted(&self) -> OpenConnection {
        self.accepted.inc();
        self.open.inc();
        OpenConnection(self.open.clone())
    }
}

/// Held for as long as a connection is open.
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Builder {
    registry: Registry,
    names: BTreeSet<String>,
}

impl Builder {
    fn add<C: Collector + Clone + 'static>(
        &mut self,
        collector: C,
        shape: Shape,
    ) -> prometheus::Result<C> {
        self.register(Box::new(collector.clone()), shape)?;
        Ok(collector)
    }

    fn register(&mut self, collector: Box<dyn Collector>, shape: Shape) -> prometheus::Result<()> {
        for desc in collector.desc() {
            match shape {
                Shape::Single => {
                    self.names.insert(desc.fq_name.clone());
                }
                Shape::Histogram => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        self.names.insert(format!("{}{suffix}", desc.fq_name));
                    }
                }
            }
        }
        self.registry.register(collector)
    }

    fn counter_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntCounterVec> {
        self.add(
            IntCounterVec::new(Opts::new(name, help), labels)?,
            Shape::Single,
        )
    }

    fn gauge_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> prometheus::Result<IntGaugeVec> {
        self.add(
            IntGaugeVec::new(Opts::new(name, help), labels)?,
            Shape::Single,
        )
    }

    fn histogram_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> prometheus::Result<HistogramVec> {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels)?, Shape::Histogram)
    }
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let mut b = Builder {
            registry: Registry::new(),
            names: BTreeSet::new(),
        };
        let config_generation = b.add(
            IntGauge::new(
                "portcullis_config_generation",
                "Generation of the live configuration",
            )?,
            Shape::Single,
        )?;
        let config_builds = b.counter_vec(
            "portcullis_config_builds_total",
            "Configuration builds, by result (success: it went live; failure: the previous one stays)",
            &["result"],
        )?;
        let config_build_duration = b.add(
            Histogram::with_opts(
                HistogramOpts::new(
                    "portcullis_config_build_duration_seconds",
                    "Time to build a configuration from all objects",
                )
                .buckets(FAST_SECONDS.to_vec()),
            )?,
            Shape::Histogram,
        )?;
        let config_last_build = b.add(
            Gauge::new(
                "portcullis_config_last_build_timestamp_seconds",
                "Unix time of the last configuration that went live",
            )?,
            Shape::Single,
        )?;
        let problems = b.gauge_vec(
            "portcullis_problems",
            "Problems in the live configuration, by kind",
            &["kind"],
        )?;
        let watch_events = b.counter_vec(
            "portcullis_watch_events_total",
            "Events received from Kubernetes watches, by kind of object and event type",
            &["kind", "type"],
        )?;
        let leader = b.add(
            IntGauge::new(
                "portcullis_leader",
                "1 while this replica holds the leader Lease",
            )?,
            Shape::Single,
        )?;
        let build_info = b.gauge_vec(
            "portcullis_build_info",
            "Version of the running controller and the compiler that built it; always 1",
            &["version", "rustc"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("PORTCULLIS_RUSTC_VERSION")])
            .set(1);
        let open_connections = b.gauge_vec(
            "portcullis_open_connections",
            "Client connections open now, by listener (http, https)",
            &["listener"],
        )?;
        let accepted_connections = b.counter_vec(
            "portcullis_connections_accepted_total",
            "Client connections accepted, by listener (http, https)",
            &["listener"],
        )?;
        let proxy_protocol_headers = b.counter_vec(
            "portcullis_proxy_protocol_headers_total",
            "PROXY protocol headers read, by listener, version (1, 2) and result (accepted: its client \
             address is used; local: it has none; untrusted: sent by a peer outside trusted-proxies, ignored)",
            &["listener", "version", "result"],
        )?;
        let proxy_protocol_refused = b.counter_vec(
            "portcullis_proxy_protocol_refused_total",
            "Connections closed while reading a PROXY protocol header, by listener and reason",
            &["listener", "reason"],
        )?;
        let passthrough_connections = b.counter_vec(
            "portcullis_passthrough_connections_total",
            "SSL passthrough connections, by result (passed: spliced to an endpoint; no_endpoint: the \
             backend has no ready endpoint; connect_failed: no endpoint could be reached)",
            &["result"],
        )?;
        let rate_limit_entries = b.add(
            IntGauge::new(
                "portcullis_rate_limit_entries",
                "Per-client entries the rate limits hold, counted when idle clients are forgotten",
            )?,
            Shape::Single,
        )?;
        let handshakes = b.counter_vec(
            "portcullis_tls_handshakes_total",
            "TLS handshakes on the HTTPS listener, by result and negotiated protocol version",
            &["result", "version"],
        )?;
        let handshake_seconds = b.histogram_vec(
            "portcullis_tls_handshake_duration_seconds",
            "Time from accepting a connection to the end of its TLS handshake, by result",
            &["result"],
            &FAST_SECONDS,
        )?;
        let tls = TlsHandles {
            tls13: handshakes.with_label_values(&["success", "TLSv1.3"]),
            tls12: handshakes.with_label_values(&["success", "TLSv1.2"]),
            failed: handshakes.with_label_values(&["failure", UNKNOWN_TLS_VERSION]),
            other_versions: handshakes,
            succeeded_seconds: handshake_seconds.with_label_values(&["success"]),
            failed_seconds: handshake_seconds.with_label_values(&["failure"]),
        };
        let redirects = b.counter_vec(
            "portcullis_redirects_total",
            "Redirects Portcullis answered itself (HTTPS, www, app-root, permanent/temporal-redirect), by status code",
            &["code"],
        )?;
        let certificate_expiry = b.add(
            GaugeVec::new(
                Opts::new(
                    "portcullis_certificate_expiry_timestamp_seconds",
                    "Unix time at which a live certificate expires (notAfter), by Secret and TLS host",
                ),
                &["namespace", "secret", "host"],
            )?,
            Shape::Single,
        )?;
        let certificate_not_before = b.add(
            GaugeVec::new(
                Opts::new(
                    "portcullis_certificate_not_before_timestamp_seconds",
                    "Unix time from which a live certificate is valid (notBefore), by Secret and TLS host",
                ),
                &["namespace", "secret", "host"],
            )?,
            Shape::Single,
        )?;
        let certificate_info = b.gauge_vec(
            "portcullis_certificate_info",
            "A live certificate and the SHA-256 fingerprint of its leaf; always 1",
            &["namespace", "secret", "host", "fingerprint_sha256"],
        )?;
        let backend_endpoints = b.gauge_vec(
            "portcullis_backend_endpoints",
            "Ready endpoints of each Service an Ingress routes to (the fewest over its ports)",
            &["namespace", "ingress", "service"],
        )?;
        let external_auth = b.histogram_vec(
            "portcullis_external_auth_duration_seconds",
            "Time from sending an auth-url subrequest to receiving its answer's head, by result",
            &["namespace", "ingress", "result"],
            &traffic::REQUEST_SECONDS,
        )?;
        let acme = AcmeMetrics::new(&mut b)?;
        let upstream = UpstreamMetrics::new(&mut b)?;
        let families = Families {
            requests: b.counter_vec(
                "portcullis_requests_total",
                "Requests answered, by route (namespace, ingress, service, host), method and status class",
                &traffic::OUTCOME_LABELS,
            )?,
            duration: b.histogram_vec(
                "portcullis_request_duration_seconds",
                "Time from receiving a request to sending the last byte of its response",
                &traffic::OUTCOME_LABELS,
                &traffic::REQUEST_SECONDS,
            )?,
            upstream: b.histogram_vec(
                "portcullis_upstream_duration_seconds",
                "Time from sending a request to a backend to receiving its response head",
                &traffic::ROUTE_LABELS,
                &traffic::REQUEST_SECONDS,
            )?,
            request_size: b.histogram_vec(
                "portcullis_request_size_bytes",
                "Request body sizes (Content-Length, else the bytes read)",
                &traffic::ROUTE_LABELS,
                &traffic::SIZE_BYTES,
            )?,
            response_size: b.histogram_vec(
                "portcullis_response_size_bytes",
                "Response body bytes sent to clients",
                &traffic::ROUTE_LABELS,
                &traffic::SIZE_BYTES,
            )?,
        };
        b.register(
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
            Shape::Single,
        )?;
        for kind in ProblemKind::ALL {
            problems.with_label_values(&[kind.as_str()]).set(0);
        }
        for result in ["success", "failure"] {
            config_builds.with_label_values(&[result]);
        }
        Ok(Metrics {
            registry: b.registry,
            names: b.names,
            config_generation,
            config_builds,
            config_build_duration,
            config_last_build,
            problems,
            watch_events,
            leader,
            open_connections,
            accepted_connections,
            proxy_protocol_headers,
            proxy_protocol_refused,
            passthrough_connections,
            rate_limit_entries,
            tls,
            redirects,
            acme,
            upstream,
            redirect_codes: std::array::from_fn(|_| OnceLock::new()),
            certificate_expiry,
            certificate_not_before,
            certificate_info,
            backend_endpoints,
            external_auth,
            requests: Requests::new(families),
            published: Mutex::new(Published::default()),
        })
    }

    /// Writes one access-log line per request (target `portcullis::access`) from now on.
    pub fn with_access_log(mut self, enabled: bool) -> Self {
        self.requests.set_access_log(enabled);
        self
    }

    /// Records a configuration that just went live. Call it before the configuration is stored, so
    /// requests routed by it find their series already resolved.
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
        self.requests.publish(config);
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.publish_certificates(config, &mut published);
        self.publish_backends(config, &mut published);
        self.publish_external_auth(config, &mut published);
    }

    /// Removes the subrequest series of Ingresses that no longer use `auth-url`.
    fn publish_external_auth(&self, config: &Config, published: &mut Published) {
        let live: HashSet<[String; 2]> = config
            .routes
            .values()
            .filter(|r| r.policy.external_auth.is_some())
            .map(|r| [r.ingress.namespace.clone(), r.ingress.name.clone()])
            .collect();
        for [namespace, ingress] in published.external_auth.difference(&live) {
            for result in ["allowed", "denied", "error"] {
                let _ = self
                    .external_auth
                    .remove_label_values(&[namespace, ingress, result]);
            }
        }
        published.external_auth = live;
    }

    /// Sets the series of certificates that are new or changed and removes those of certificates gone;
    /// both lists are sorted by Secret and host, so unchanged ones cost a comparison each.
    fn publish_certificates(&self, config: &Config, published: &mut Published) {
        fn order(c: &CertificateInfo) -> (&NamespacedName, &str) {
            (&c.secret, &c.host)
        }
        let key = |c: &CertificateInfo| {
            [
                c.secret.namespace.clone(),
                c.secret.name.clone(),
                c.host.clone(),
            ]
        };
        let info_key = |c: &CertificateInfo| {
            let [namespace, secret, host] = key(c);
            [namespace, secret, host, c.fingerprint.clone()]
        };
        if Arc::ptr_eq(&published.certificates, &config.certificates) {
            return;
        }
        let (old, new) = (&published.certificates, &config.certificates);
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            let (gone, added) = match (old.get(i), new.get(j)) {
                (Some(o), Some(n)) if order(o) == order(n) => (Some(o), Some(n)),
                (Some(o), Some(n)) if order(o) < order(n) => (Some(o), None),
                (Some(o), None) => (Some(o), None),
                (_, n) => (None, n),
            };
            i += usize::from(gone.is_some());
            j += usize::from(added.is_some());
            if let (Some(o), Some(n)) = (gone, added)
                && o == n
            {
                continue;
            }
            if let Some(o) = gone {
                if added.is_none() {
                    let _ = self.certificate_expiry.remove_label_values(&key(o));
                    let _ = self.certificate_not_before.remove_label_values(&key(o));
                }
                if added.is_none_or(|n| n.fingerprint != o.fingerprint) {
                    let _ = self.certificate_info.remove_label_values(&info_key(o));
                }
            }
            if let Some(n) = added {
                self.certificate_expiry
                    .with_label_values(&key(n))
                    .set(n.not_after as f64);
                self.certificate_not_before
                    .with_label_values(&key(n))
                    .set(n.not_before as f64);
                self.certificate_info.with_label_values(&info_key(n)).set(1);
            }
        }
        published.certificates = config.certificates.clone();
    }

    /// The ready-endpoint gauge of every Ingress and Service, set only where the count changed.
    fn publish_backends(&self, config: &Config, published: &mut Published) {
        let mut endpoints: BTreeMap<[&str; 3], usize> = BTreeMap::new();
        for route in config.routes.values() {
            if route.redirect_host.is_some() {
                continue; // a www alias: redirects only, no backend
            }
            for backend in std::iter::once(&route.backend).chain(&route.fallback) {
                let key = [
                    route.ingress.namespace.as_str(),
                    route.ingress.name.as_str(),
                    backend.service.name.as_str(),
                ];
                let count = endpoints.entry(key).or_insert(usize::MAX);
                *count = (*count).min(backend.endpoints.len());
            }
        }
        let mut old = std::mem::take(&mut published.backends)
            .into_iter()
            .peekable();
        let mut kept = Vec::with_capacity(endpoints.len());
        for (key, count) in endpoints {
            // Series before this key are gone.
            while let Some((gone, _)) = old.next_if(|(k, _)| k.each_ref().map(String::as_str) < key)
            {
                let _ = self.backend_endpoints.remove_label_values(&gone);
            }
            let same = old
                .next_if(|(k, _)| k.each_ref().map(String::as_str) == key)
                .is_some_and(|(_, before)| before == count);
            if !same {
                self.backend_endpoints
                    .with_label_values(&key)
                    .set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            kept.push((key.map(str::to_string), count));
        }
        for (gone, _) in old {
            let _ = self.backend_endpoints.remove_label_values(&gone);
        }
        published.backends = kept;
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

    /// The connection series of one listener (`http` or `https`), resolved once when it starts.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            open: self.open_connections.with_label_values(&[name]),
            accepted: self.accepted_connections.with_label_values(&[name]),
        }
    }

    /// The series counting PROXY protocol headers of one listener with this version and result.
    pub fn proxy_protocol_header(&self, listener: &str, version: &str, result: &str) -> IntCounter {
        self.proxy_protocol_headers
            .with_label_values(&[listener, version, result])
    }

    /// The series counting connections of one listener refused for this reason while reading a PROXY
    /// protocol header.
    pub fn proxy_protocol_refused(&self, listener: &str, reason: &str) -> IntCounter {
        self.proxy_protocol_refused
            .with_label_values(&[listener, reason])
    }

    /// Counts an SSL passthrough connection by what became of it.
    pub fn passthrough_connection(&self, result: &str) {
        self.passthrough_connections
            .with_label_values(&[result])
            .inc();
    }

    /// The gauge of the rate limits' per-client entries, which their pruning sets.
    pub fn rate_limit_entries(&self) -> IntGauge {
        self.rate_limit_entries.clone()
    }

    /// Records a completed TLS handshake and the protocol version it negotiated.
    pub fn tls_handshake_succeeded(&self, version: Option<ProtocolVersion>, took: Duration) {
        match version {
            Some(ProtocolVersion::TLSv1_3) => self.tls.tls13.inc(),
            Some(ProtocolVersion::TLSv1_2) => self.tls.tls12.inc(),
            other => self
                .tls
                .other_versions
                .with_label_values(&["success", &tls_version_label(other)])
                .inc(),
        }
        self.tls.succeeded_seconds.observe(took.as_secs_f64());
    }

    /// Records a TLS handshake that failed or timed out.
    pub fn tls_handshake_failed(&self, took: Duration) {
        self.tls.failed.inc();
        self.tls.failed_seconds.observe(took.as_secs_f64());
    }

    /// Records a redirect Portcullis answered itself.
    pub fn redirect(&self, status: StatusCode) {
        let code = status.as_u16();
        match code
            .checked_sub(300)
            .and_then(|i| self.redirect_codes.get(usize::from(i)))
        {
            Some(slot) => slot
                .get_or_init(|| self.redirects.with_label_values(&[status.as_str()]))
                .inc(),
            None => self.redirects.with_label_values(&[status.as_str()]).inc(),
        }
    }

    /// Records one `auth-url` subrequest: `result` is `allowed` (2xx), `denied` (401, 403) or `error`
    /// (another status, or no answer).
    pub fn external_auth(
        &self,
        ingress: &crate::vocab::NamespacedName,
        result: &str,
        took: Duration,
    ) {
        self.external_auth
            .with_label_values(&[ingress.namespace.as_str(), ingress.name.as_str(), result])
            .observe(took.as_secs_f64());
    }

    /// Starts recording one request; see [`traffic`].
    pub fn exchange<B>(
        &self,
        req: &http::Request<B>,
        peer: std::net::SocketAddr,
        proxied_by: Option<std::net::SocketAddr>,
    ) -> Exchange<'_>
    where
        B: hyper::body::Body,
    {
        self.requests.exchange(req, peer, proxied_by)
    }

    /// Every metric name a scrape can contain (histograms with their `_bucket`, `_sum` and `_count`
    /// series), whether or not it has a series yet.
    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    pub fn acme(&self) -> &AcmeMetrics {
        &self.acme
    }

    pub fn upstream(&self) -> &UpstreamMetrics {
        &self.upstream
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `TLSv1.3`, `TLSv1.2`…, as OpenSSL and most dashboards spell them.
fn tls_version_label(version: Option<ProtocolVersion>) -> String {
    match version {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
        Some(ProtocolVersion::TLSv1_1) => "TLSv1.1".into(),
        Some(ProtocolVersion::TLSv1_0) => "TLSv1".into(),
        Some(other) => format!("{other:?}"),
        None => UNKNOWN_TLS_VERSION.into(),
    }
}

#[cfg(test)]
mod tests;
