//! Per-request metrics (and the access log), recorded without a lock shared by all requests.
//!
//! # Design
//!
//! Resolving a labelled series with `with_label_values` hashes every label value and takes the
//! family's lock; doing that per request would put one process-wide lock and half a dozen string hashes
//! on the hot path. Instead, labels are resolved once per configuration generation:
//!
//! * When a configuration is published, [`Requests::publish`] builds a [`RouteMetrics`] table for it:
//!   for every route, keyed by the address of its `Arc<Route>` (the table holds a clone, so an address
//!   cannot be reused while the table is live), the [`Series`] of its labels — namespace, ingress,
//!   service, host — and one `Series` per configured host for requests that match no route. The table
//!   is swapped in with `ArcSwap` *before* the configuration itself, so requests routed by the new
//!   configuration find their routes in it.
//! * A request loads the table (lock-free), finds its route with one integer-keyed hash probe and
//!   clones the `Series`' `Arc`. A `Series` holds one `OnceLock` per (method, status class) pair and per
//!   histogram: the first request of a pair resolves its handles through the family, so only
//!   combinations that happen appear in a scrape; every later request pays an atomic load, then the
//!   counter's and histogram's own atomic adds.
//! * `Series` are cached across generations by their label values, so a reload never resets a counter
//!   and routes whose labels did not change keep their resolved handles. Series whose labels are gone
//!   from the configuration are removed from the families (and marked retired, so a request still
//!   holding one cannot bring them back).
//! * A request whose configuration was replaced between its route lookup and its table lookup (a
//!   reload race) misses the table and resolves its `Series` through the cache's mutex: the only lock,
//!   taken only in that window.
//!
//! Everything is recorded once, when the response body ends or is dropped ([`Measured`]): the request
//! counter and duration (to the last byte), request and response sizes, upstream latency, and the
//! access-log line.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Buf;
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

use crate::access_log::{self, RequestFacts};
use crate::model::{Backend, Config, Route};
use crate::vocab::hosts::normalize_host;
use crate::vocab::request::content_length;

/// Labels of the size and upstream histograms: the route.
pub const ROUTE_LABELS: [&str; 4] = ["namespace", "ingress", "service", "host"];
/// Labels of the request counter and duration histogram: the route, the method and the status class.
pub const OUTCOME_LABELS: [&str; 6] = [
    "namespace",
    "ingress",
    "service",
    "host",
    "method",
    "status",
];
/// Request and upstream duration buckets, 1 ms to 60 s.
pub const REQUEST_SECONDS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Body size buckets, 64 B to 64 MiB by powers of four.
pub const SIZE_BYTES: [f64; 11] = [
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// The `method` label: the standard methods, anything else is `other`.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
];
/// The `status` label; `other` is for codes from 600 up, which no standard defines.
pub const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
/// The `host` label of routes from rules without a host, and of default backends.
pub const ANY_HOST: &str = "*";
/// The `host` label of requests that match no route and name a host no rule has.
pub const OTHER_HOST: &str = "_other";

const OUTCOMES: usize = METHODS.len() * STATUS_CLASSES.len();

pub fn method_index(method: &Method) -> usize {
    match method.as_str() {
        "GET" => 0,
        "HEAD" => 1,
        "POST" => 2,
        "PUT" => 3,
        "DELETE" => 4,
        "PATCH" => 5,
        "OPTIONS" => 6,
        "CONNECT" => 7,
        "TRACE" => 8,
        _ => 9,
    }
}

pub fn status_class_index(status: StatusCode) -> usize {
    match status.as_u16() / 100 {
        class @ 1..=5 => usize::from(class) - 1,
        _ => 5,
    }
}

/// The request metric families, shared by every [`Series`].
pub(super) struct Families {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream: HistogramVec,
    pub request_size: HistogramVec,
    pub response_size: HistogramVec,
}

/// Label values of one [`Series`]: namespace, ingress, service, host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey([Box<str>; 4]);

impl SeriesKey {
    fn route(route: &Route, backend: &Backend) -> SeriesKey {
        SeriesKey([
            route.ingress.namespace.as_str().into(),
            route.ingress.name.as_str().into(),
            backend.service.name.as_str().into(),
            route.host.as_deref().unwrap_or(ANY_HOST).into(),
        ])
    }

    /// Requests that match no route: no namespace, ingress or service.
    fn unmatched(host: &str) -> SeriesKey {
        SeriesKey(["".into(), "".into(), "".into(), host.into()])
    }
}

/// The handles of one label set (a route, or unmatched requests for one host), resolved on first use.
pub struct Series {
    key: SeriesKey,
    families: Arc<Families>,
    /// Counter and duration histogram by `method_index * STATUS_CLASSES.len() + status_class_index`.
    outcomes: [OnceLock<(IntCounter, Histogram)>; OUTCOMES],
    upstream: OnceLock<Histogram>,
    request_size: OnceLock<Histogram>,
    response_size: OnceLock<Histogram>,
    retired: AtomicBool,
    /// The last generation of the live table that used it; older ones are retired.
    published: AtomicU64,
}

impl Series {
    fn new(key: SeriesKey, families: Arc<Families>) -> Series {
        Series {
            key,
            families,
            outcomes: std::array::from_fn(|_| OnceLock::new()),
            upstream: OnceLock::new(),
            request_size: OnceLock::new(),
            response_size: OnceLock::new(),
            retired: AtomicBool::new(false),
            published: AtomicU64::new(0),
        }
    }

    fn labels(&self) -> [&str; 4] {
        let [namespace, ingress, service, host] = &self.key.0;
        [namespace, ingress, service, host]
    }

    fn outcome_labels(&self, outcome: usize) -> [&str; 6] {
        let [namespace, ingress, service, host] = self.labels();
        let method = METHODS[outcome / STATUS_CLASSES.len()];
        let status = STATUS_CLASSES[outcome % STATUS_CLASSES.len()];
        [namespace, ingress, service, host, method, status]
    }

    /// The resolved handle, resolving it now unless the series is retired.
    fn resolve<'s, T>(&'s self, slot: &'s OnceLock<T>, init: impl FnOnce() -> T) -> Option<&'s T> {
        if let Some(handle) = slot.get() {
            return Some(handle);
        }
        if self.retired.load(Ordering::Acquire) {
            return None;
        }
        Some(slot.get_or_init(init))
    }

    fn outcome(&self, method: usize, status: usize) -> Option<&(IntCounter, Histogram)> {
        let index = method * STATUS_CLASSES.len() + status;
        self.resolve(&self.outcomes[index], || {
            let labels = self.outcome_labels(index);
            (
                self.families.requests.with_label_values(&labels),
                self.families.duration.with_label_values(&labels),
            )
        })
    }

    fn histogram<'s>(
        &'s self,
        slot: &'s OnceLock<Histogram>,
        family: &HistogramVec,
    ) -> Option<&'s Histogram> {
        self.resolve(slot, || family.with_label_values(&self.labels()))
    }

    fn record(&self, record: &Record, status: StatusCode, seconds: f64, received: u64, sent: u64) {
        let f = &self.families;
        if let Some((requests, duration)) = self.outcome(record.method, status_class_index(status))
        {
            requests.inc();
            duration.observe(seconds);
        }
        if let Some(h) = self.histogram(&self.request_size, &f.request_size) {
            h.observe(received as f64);
        }
        if let Some(h) = self.histogram(&self.response_size, &f.response_size) {
            h.observe(sent as f64);
        }
        if let Some(upstream) = record.upstream_seconds
            && let Some(h) = self.histogram(&self.upstream, &f.upstream)
        {
            h.observe(upstream);
        }
    }

    /// Removes this label set's series from the families; requests still holding this `Series` record
    /// into detached handles from now on.
    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        let f = &self.families;
        for (index, slot) in self.outcomes.iter().enumerate() {
            if slot.get().is_some() {
                let labels = self.outcome_labels(index);
                let _ = f.requests.remove_label_values(&labels);
                let _ = f.duration.remove_label_values(&labels);
            }
        }
        for (slot, family) in [
            (&self.upstream, &f.upstream),
            (&self.request_size, &f.request_size),
            (&self.response_size, &f.response_size),
        ] {
            if slot.get().is_some() {
                let _ = family.remove_label_values(&self.labels());
            }
        }
    }
}

/// A route's series: its own backend's and, with a `default-backend` annotation, the fallback's.
struct RouteSeries {
    /// Keeps the route, and so its address (the table's key), alive as long as the table.
    _route: Arc<Route>,
    primary: Arc<Series>,
    fallback: Option<Arc<Series>>,
}

/// Hashes a route address: the address is already unique, it only needs spreading over the buckets.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, n: usize) {
        let h = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

fn address(route: &Arc<Route>) -> usize {
    Arc::as_ptr(route) as usize
}

/// The series of every route and configured host of one configuration generation.
pub struct RouteMetrics {
    /// Counts publications, to tell the series still in use from those to retire.
    generation: u64,
    routes: HashMap<usize, RouteSeries, BuildHasherDefault<AddressHasher>>,
    exact_hosts: HashMap<Box<str>, Arc<Series>>,
    /// `*.example.com` under `example.com`.
    wildcard_hosts: HashMap<Box<str>, Arc<Series>>,
    other_host: Arc<Series>,
}

impl RouteMetrics {
    /// The series of a request that matched no route: its host if some rule names it, else `_other`.
    fn unmatched(&self, host: &str) -> &Arc<Series> {
        let host = normalize_host(host);
        self.exact_hosts
            .get(host.as_ref())
            .or_else(|| {
                host.split_once('.')
                    .and_then(|(_, suffix)| self.wildcard_hosts.get(suffix))
            })
            .unwrap_or(&self.other_host)
    }
}

/// Series by label values, kept across generations.
type SeriesCache = HashMap<SeriesKey, Arc<Series>>;

/// The request-side metrics: the families, the live [`RouteMetrics`] and the cache it is built from.
pub(super) struct Requests {
    pub(super) families: Arc<Families>,
    table: ArcSwap<RouteMetrics>,
    cache: Mutex<SeriesCache>,
    access_log: bool,
}

impl Requests {
    pub(super) fn new(families: Families) -> Requests {
        let families = Arc::new(families);
        let mut cache = SeriesCache::new();
        let empty = RouteMetrics {
            generation: 0,
            routes: HashMap::default(),
            exact_hosts: HashMap::new(),
            wildcard_hosts: HashMap::new(),
            other_host: Arc::new(Series::new(
                SeriesKey::unmatched(OTHER_HOST),
                families.clone(),
            )),
        };
        let table = build_table(None, &empty, 0, &families, &mut cache);
        Requests {
            families,
            table: ArcSwap::from_pointee(table),
            cache: Mutex::new(cache),
            access_log: false,
        }
    }

    pub(super) fn set_access_log(&mut self, enabled: bool) {
        self.access_log = enabled;
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, SeriesCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Builds and swaps in the table of a configuration about to go live; retires the series of labels
    /// it no longer has.
    pub(super) fn publish(&self, config: &Config) {
        let mut cache = self.lock_cache();
        let previous = self.table.load_full();
        let generation = previous.generation + 1;
        let table = build_table(
            Some(config),
            &previous,
            generation,
            &self.families,
            &mut cache,
        );
        cache.retain(|_, series| {
            let used = series.published.load(Ordering::Relaxed) == generation;
            if !used {
                series.retire();
            }
            used
        });
        self.table.store(Arc::new(table));
    }

    /// The slow path, for a route missing from the live table (see the module documentation).
    fn resolve(&self, key: SeriesKey) -> Arc<Series> {
        self.lock_cache()
            .entry(key)
            .or_insert_with_key(|key| Arc::new(Series::new(key.clone(), self.families.clone())))
            .clone()
    }

    pub(super) fn exchange<B: Body>(
        &self,
        req: &Request<B>,
        peer: SocketAddr,
        proxied_by: Option<SocketAddr>,
    ) -> Exchange<'_> {
        let request_bytes = match content_length(req) {
            Some(length) => RequestBytes::Known(length),
            None if req.body().is_end_stream() => RequestBytes::Known(0),
            None => RequestBytes::Counted(Arc::new(AtomicU64::new(0))),
        };
        Exchange {
            requests: self,
            record: Record {
                started: Instant::now(),
                method: method_index(req.method()),
                request_bytes,
                series: None,
                upstream: None,
                upstream_seconds: None,
                log: self
                    .access_log
                    .then(|| Box::new(RequestFacts::new(req, peer, proxied_by))),
                held: None,
            },
        }
    }
}

/// Takes the series for `key` from this generation's cache, the previous generation's, or makes it.
/// The cached series of `key`, marked as used by `generation`.
fn take_series(
    key: SeriesKey,
    generation: u64,
    families: &Arc<Families>,
    cache: &mut SeriesCache,
) -> Arc<Series> {
    let series = match cache.entry(key) {
        Entry::Occupied(found) => found.get().clone(),
        Entry::Vacant(slot) => {
            let series = Arc::new(Series::new(slot.key().clone(), families.clone()));
            slot.insert(series).clone()
        }
    };
    series.published.store(generation, Ordering::Relaxed);
    series
}

/// Marks a series taken over from the previous table as used by `generation`.
fn keep(series: &Arc<Series>, generation: u64) -> Arc<Series> {
    series.published.store(generation, Ordering::Relaxed);
    series.clone()
}

/// The table of `config`. Routes and hosts the previous table has (a configuration shares unchanged
/// hosts' routes with the one before it) keep their series without building label values again.
fn build_table(
    config: Option<&Config>,
    previous: &RouteMetrics,
    generation: u64,
    families: &Arc<Families>,
    cache: &mut SeriesCache,
) -> RouteMetrics {
    let mut take = |key| take_series(key, generation, families, cache);
    let mut table = RouteMetrics {
        generation,
        routes: HashMap::default(),
        exact_hosts: HashMap::new(),
        wildcard_hosts: HashMap::new(),
        other_host: take(SeriesKey::unmatched(OTHER_HOST)),
    };
    for route in config.into_iter().flat_map(|c| c.routes.values()) {
        let series = match previous.routes.get(&address(route)) {
            Some(known) => RouteSeries {
                _route: route.clone(),
                primary: keep(&known.primary, generation),
                fallback: known.fallback.as_ref().map(|s| keep(s, generation)),
            },
            None => RouteSeries {
                _route: route.clone(),
                primary: take(SeriesKey::route(route, &route.backend)),
                fallback: route
                    .fallback
                    .as_ref()
                    .map(|backend| take(SeriesKey::route(route, backend))),
            },
        };
        table.routes.insert(address(route), series);
        if let Some(host) = &route.host {
            let (map, known, name) = match host.strip_prefix("*.") {
                Some(suffix) => (&mut table.wildcard_hosts, &previous.wildcard_hosts, suffix),
                None => (&mut table.exact_hosts, &previous.exact_hosts, host.as_ref()),
            };
            if !map.contains_key(name) {
                let series = match known.get(name) {
                    Some(series) => keep(series, generation),
                    None => take(SeriesKey::unmatched(host)),
                };
                map.insert(name.into(), series);
            }
        }
    }
    table
}

/// The request body size: its `Content-Length`, or the bytes read while streaming it to the backend.
enum RequestBytes {
    Known(u64),
    Counted(Arc<AtomicU64>),
}

impl RequestBytes {
    fn get(&self) -> u64 {
        match self {
            RequestBytes::Known(n) => *n,
            RequestBytes::Counted(tally) => tally.load(Ordering::Relaxed),
        }
    }
}

/// One request on its way through the proxy. The proxy reports what it learns (the route, the
/// upstream), then [`Exchange::respond`] hands the record to the response body, which records it when
/// it ends.
pub struct Exchange<'a> {
    requests: &'a Requests,
    record: Record,
}

impl Exchange<'_> {
    /// The request matched this route (and is answered by its own backend, unless
    /// [`Exchange::served_by_fallback`] follows).
    pub fn matched(&mut self, route: &Arc<Route>) {
        let table = self.requests.table.load();
        self.record.series = Some(match table.routes.get(&address(route)) {
            Some(found) => found.primary.clone(),
            None => self
                .requests
                .resolve(SeriesKey::route(route, &route.backend)),
        });
    }

    /// The route's `default-backend` fallback answers instead of its backend.
    pub fn served_by_fallback(&mut self, route: &Arc<Route>) {
        let Some(fallback) = &route.fallback else {
            return;
        };
        let table = self.requests.table.load();
        let found = table
            .routes
            .get(&address(route))
            .and_then(|r| r.fallback.clone());
        self.record.series = Some(match found {
            Some(series) => series,
            None => self.requests.resolve(SeriesKey::route(route, fallback)),
        });
    }

    /// No route matched; `host` is the request's host as sent.
    pub fn unmatched(&mut self, host: &str) {
        self.record.series = Some(self.requests.table.load().unmatched(host).clone());
    }

    /// The client's address as far as trusted proxies say (for the access log).
    pub fn client(&mut self, ip: IpAddr) {
        if let Some(log) = &mut self.record.log {
            log.client = ip;
        }
    }

    /// The endpoint the request is being sent to.
    /// The route's canary answers: the request counts for the canary's Service.
    pub fn served_by_canary(&mut self, route: &Route, canary: &Backend) {
        self.record.series = Some(self.requests.resolve(SeriesKey::route(route, canary)));
    }

    pub fn upstream(&mut self, endpoint: SocketAddr) {
        self.record.upstream = Some(endpoint);
    }

    /// The endpoint answered with a response head after `took`.
    pub fn upstream_responded(&mut self, took: Duration) {
        self.record.upstream_seconds = Some(took.as_secs_f64());
    }

    /// Where the request body's bytes should be counted while streaming, when it has no
    /// `Content-Length`.
    pub fn request_tally(&self) -> Option<Arc<AtomicU64>> {
        match &self.record.request_bytes {
            RequestBytes::Counted(tally) => Some(tally.clone()),
            RequestBytes::Known(_) => None,
        }
    }

    /// Wraps the response body so the request is recorded when the body ends.
    /// Keeps `value` until the response has been sent or abandoned.
    pub fn hold_until_done(&mut self, value: impl Send + Sync + 'static) {
        self.record.held = Some(Box::new(value));
    }

    pub fn respond<B>(self, resp: Response<B>) -> Response<Measured<B>> {
        let status = resp.status();
        let record = self.record;
        resp.map(|inner| Measured {
            inner,
            sent: 0,
            status,
            record,
        })
    }
}

/// Everything recorded about one request.
struct Record {
    started: Instant,
    method: usize,
    request_bytes: RequestBytes,
    series: Option<Arc<Series>>,
    upstream: Option<SocketAddr>,
    upstream_seconds: Option<f64>,
    /// Only with the access log on.
    log: Option<Box<RequestFacts>>,
    /// Kept until the response ends (a request counted against a concurrency limit, say).
    held: Option<Box<dyn Send + Sync>>,
}

impl Record {
    fn finish(&mut self, status: StatusCode, sent: u64) {
        let seconds = self.started.elapsed().as_secs_f64();
        let received = self.request_bytes.get();
        if let Some(series) = &self.series {
            series.record(self, status, seconds, received, sent);
        }
        if let Some(facts) = self.log.take() {
            let route = self
                .series
                .as_ref()
                .map_or(["", "", "", ""], |s| s.labels());
            access_log::write(
                &facts,
                &access_log::Outcome {
                    route,
                    status,
                    upstream: self.upstream,
                    request_bytes: received,
                    response_bytes: sent,
                    seconds,
                    upstream_seconds: self.upstream_seconds,
                },
            );
        }
    }
}

/// A response body that counts the bytes it yields and records its request when it ends or is dropped
/// (a client that goes away mid-body is still counted, with the bytes sent so far).
pub struct Measured<B> {
    inner: B,
    sent: u64,
    status: StatusCode,
    record: Record,
}

impl<B> Body for Measured<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.sent += data.remaining() as u64;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Measured<B> {
    fn drop(&mut self) {
        self.record.finish(self.status, self.sent);
    }
}
