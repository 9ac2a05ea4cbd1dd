//! Whether a failed attempt is sent on to another endpoint (`proxy-next-upstream`), which endpoint
//! that is, and the passive health check that skips endpoints refusing connections. Only the
//! decisions live here; the forwarding step makes the attempts.
//!
//! As nginx does:
//! - only failures before any response byte went to the client are retried;
//! - a request the endpoint never received (connecting failed or timed out) is retried whatever its
//!   method; one it may have received is retried only for idempotent methods (all but POST, PATCH,
//!   LOCK) unless `non_idempotent` is set;
//! - each retry goes to an endpoint the request has not tried yet, and `tries` counts all attempts;
//! - a request written onto a pooled keep-alive connection that the endpoint had just closed is sent
//!   once more on a new connection to the same endpoint, without counting as a try.
//!
//! Request bodies are kept for a replay only up to [`REPLAY_LIMIT`] bytes with a known length;
//! larger or chunked bodies are streamed and their requests get one attempt (besides those whose
//! connection failed before a byte of the body was read).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::time::Instant;

use super::upstream_error::UpstreamError;
use crate::model::annotations::next_upstream::{Condition, NextUpstream};

/// The largest request body kept in memory so that the request can be sent again.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

/// Connection failures in a row after which an endpoint is skipped.
pub const FAILS_TO_SKIP: u32 = 3;
/// How long an endpoint is skipped; the next request after that tries it again, and one more failed
/// connection skips it again.
pub const SKIP_FOR: Duration = Duration::from_secs(10);
/// Failure records older than this are forgotten (endpoints that went away).
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub condition: Condition,
    /// Whether the endpoint may have received the request.
    pub sent: bool,
}

impl Failure {
    /// The retryable failure an error is, if any: the client's own errors (body too large, too slow,
    /// malformed) never are.
    pub fn of_error(e: &UpstreamError) -> Option<Failure> {
        let (condition, sent) = match e {
            UpstreamError::Connect(_) => (Condition::Error, false),
            UpstreamError::ConnectTimeout => (Condition::Timeout, false),
            UpstreamError::ResponseTimeout(_) => (Condition::Timeout, true),
            UpstreamError::Exchange(_) | UpstreamError::StaleConnection(_) => {
                (Condition::Error, true)
            }
            UpstreamError::BodyTooLarge(_)
            | UpstreamError::ClientIdle(_)
            | UpstreamError::BadRequest(_)
            | UpstreamError::BackendTlsUnavailable => return None,
        };
        Some(Failure { condition, sent })
    }

    /// The failure a response status is under `policy`, if it retries on that status.
    pub fn of_status(policy: &NextUpstream, status: StatusCode) -> Option<Failure> {
        let condition = Condition::Status(status.as_u16());
        (policy.retries_on_status()
            && matches!(status.as_u16(), 500 | 502 | 503 | 504)
            && policy.retries_on(condition))
        .then_some(Failure {
            condition,
            sent: true,
        })
    }
}

/// nginx never sends POST, PATCH or LOCK twice unless told to (`non_idempotent`).
pub fn idempotent(method: &Method) -> bool {
    !matches!(method.as_str(), "POST" | "PATCH" | "LOCK")
}

/// Whether the request may get another attempt after `attempts` (counted tries) failed, the last one
/// with `failure`, `elapsed` after the first began.
pub fn may_retry(
    policy: &NextUpstream,
    method: &Method,
    failure: Failure,
    attempts: u32,
    elapsed: Duration,
) -> bool {
    !policy.is_off()
        && policy.retries_on(failure.condition)
        && (!failure.sent || policy.non_idempotent || idempotent(method))
        && (policy.tries == 0 || attempts < policy.tries)
        && policy.timeout.is_none_or(|limit| elapsed < limit)
}

/// The next endpoint to try after the ones in `tried` (in the order tried): the first untried one
/// after the last, in the backend's order, preferring endpoints that are not being skipped.
pub fn next_endpoint(
    endpoints: &[SocketAddr],
    tried: &[SocketAddr],
    skipped: impl Fn(SocketAddr) -> bool,
) -> Option<SocketAddr> {
    let start = tried
        .last()
        .and_then(|last| endpoints.iter().position(|e| e == last))
        .map_or(0, |i| i + 1);
    let untried = (0..endpoints.len())
        .map(|i| endpoints[(start + i) % endpoints.len()])
        .filter(|e| !tried.contains(e));
    let mut fallback = None;
    for e in untried {
        if !skipped(e) {
            return Some(e);
        }
        fallback.get_or_insert(e);
    }
    fallback
}

/// Endpoints whose connections keep failing, shared by all routes (an address is one endpoint
/// whichever Ingress reaches it). Costs one atomic load per request while no endpoint has failed.
#[derive(Default)]
pub struct Health {
    /// How many endpoints have a failure record; 0 spares the lock.
    recorded: AtomicUsize,
    records: Mutex<HashMap<SocketAddr, Record>>,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    in_a_row: u32,
    last: Instant,
    skip_until: Option<Instant>,
}

impl Health {
    /// `first`, unless it is being skipped and another endpoint is not: never all endpoints are
    /// skipped.
    pub fn avoid_failing(&self, first: SocketAddr, endpoints: &[SocketAddr]) -> SocketAddr {
        if self.recorded.load(Ordering::Relaxed) == 0 {
            return first;
        }
        let now = Instant::now();
        if !self.skipped_at(first, now) {
            return first;
        }
        next_endpoint(endpoints, &[first], |e| self.skipped_at(e, now))
            .filter(|e| !self.skipped_at(*e, now))
            .unwrap_or(first)
    }

    pub fn is_skipped(&self, endpoint: SocketAddr) -> bool {
        self.recorded.load(Ordering::Relaxed) != 0 && self.skipped_at(endpoint, Instant::now())
    }

    fn skipped_at(&self, endpoint: SocketAddr, now: Instant) -> bool {
        self.lock()
            .get(&endpoint)
            .and_then(|r| r.skip_until)
            .is_some_and(|until| now < until)
    }

    /// Counts a failed connection; returns true when this failure starts skipping the endpoint.
    pub fn connection_failed(&self, endpoint: SocketAddr) -> bool {
        self.connection_failed_at(endpoint, Instant::now())
    }

    fn connection_failed_at(&self, endpoint: SocketAddr, now: Instant) -> bool {
        let mut records = self.lock();
        if records.len() >= 1024 {
            records.retain(|_, r| now.saturating_duration_since(r.last) < FORGET_AFTER);
        }
        let r = records.entry(endpoint).or_insert(Record {
            in_a_row: 0,
            last: now,
            skip_until: None,
        });
        r.in_a_row = r.in_a_row.saturating_add(1);
        r.last = now;
        let skipping = r.skip_until.is_some_and(|until| now < until);
        let starts = r.in_a_row >= FAILS_TO_SKIP && !skipping;
        if starts {
            r.skip_until = Some(now + SKIP_FOR);
        }
        self.recorded.store(records.len(), Ordering::Relaxed);
        starts
    }

    /// The endpoint answered: its failures are forgotten.
    pub fn answered(&self, endpoint: SocketAddr) {
        if self.recorded.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut records = self.lock();
        records.remove(&endpoint);
        self.recorded.store(records.len(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Record>> {
        // A panic while the lock was held leaves at worst one failure miscounted.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, 1], 8000 + i)))
            .collect()
    }

    const ERROR_SENT: Failure = Failure {
        condition: Condition::Error,
        sent: true,
    };
    const REFUSED: Failure = Failure {
        condition: Condition::Error,
        sent: false,
    };

    #[test]
    fn defaults_retry_errors_and_timeouts_of_idempotent_requests_up_to_three_tries() {
        let p = NextUpstream::default();
        let timeout = Failure {
            condition: Condition::Timeout,
            sent: true,
        };
        for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            assert!(may_retry(&p, &method, ERROR_SENT, 1, Duration::ZERO));
            assert!(may_retry(&p, &method, timeout, 2, Duration::ZERO));
            assert!(!may_retry(&p, &method, ERROR_SENT, 3, Duration::ZERO));
        }
        let status = Failure::of_status(&p, StatusCode::BAD_GATEWAY);
        assert_eq!(status, None, "statuses are not retried by default");
    }

    #[test]
    fn non_idempotent_requests_are_retried_only_when_never_sent_or_allowed() {
        let p = NextUpstream::default();
        for method in [
            Method::POST,
            Method::PATCH,
            Method::from_bytes(b"LOCK").unwrap(),
        ] {
            assert!(!may_retry(&p, &method, ERROR_SENT, 1, Duration::ZERO));
            assert!(
                may_retry(&p, &method, REFUSED, 1, Duration::ZERO),
                "the endpoint never saw it"
            );
        }
        let mut allowed = p;
        allowed.non_idempotent = true;
        assert!(may_retry(
            &allowed,
            &Method::POST,
            ERROR_SENT,
            1,
            Duration::ZERO
        ));
    }

    #[test]
    fn off_one_try_and_the_time_limit_stop_retries() {
        let off = NextUpstream::on(&[]);
        assert!(!may_retry(&off, &Method::GET, REFUSED, 1, Duration::ZERO));
        let mut one = NextUpstream::default();
        one.tries = 1;
        assert!(!may_retry(&one, &Method::GET, REFUSED, 1, Duration::ZERO));
        let mut unlimited = NextUpstream::default();
        unlimited.tries = 0;
        assert!(may_retry(
            &unlimited,
            &Method::GET,
            REFUSED,
            1000,
            Duration::ZERO
        ));
        let mut timed = NextUpstream::default();
        timed.timeout = Some(Duration::from_secs(2));
        assert!(may_retry(
            &timed,
            &Method::GET,
            REFUSED,
            1,
            Duration::from_millis(1999)
        ));
        assert!(!may_retry(
            &timed,
            &Method::GET,
            REFUSED,
            1,
            Duration::from_secs(2)
        ));
    }

    #[test]
    fn only_the_listed_statuses_and_conditions_retry() {
        let p = NextUpstream::on(&[Condition::Status(502), Condition::Status(504)]);
        assert!(Failure::of_status(&p, StatusCode::BAD_GATEWAY).is_some());
        assert!(Failure::of_status(&p, StatusCode::GATEWAY_TIMEOUT).is_some());
        for other in [500, 503, 200, 404, 501] {
            let status = StatusCode::from_u16(other).unwrap();
            assert_eq!(Failure::of_status(&p, status), None, "{other}");
        }
        assert!(!may_retry(&p, &Method::GET, REFUSED, 1, Duration::ZERO));
        let timeout = Failure::of_error(&UpstreamError::ConnectTimeout).unwrap();
        assert!(!may_retry(&p, &Method::GET, timeout, 1, Duration::ZERO));
    }

    #[test]
    fn client_errors_are_never_retried() {
        assert_eq!(Failure::of_error(&UpstreamError::BodyTooLarge(1)), None);
        assert_eq!(
            Failure::of_error(&UpstreamError::ClientIdle(Duration::ZERO)),
            None
        );
        assert_eq!(
            Failure::of_error(&UpstreamError::BadRequest("x".into())),
            None
        );
        assert_eq!(
            Failure::of_error(&UpstreamError::Connect("refused".into())),
            Some(REFUSED)
        );
    }

    #[test]
    fn retries_visit_every_endpoint_once_starting_after_the_failed_one() {
        let e = addrs(4);
        let mut tried = vec![e[2]];
        while let Some(next) = next_endpoint(&e, &tried, |_| false) {
            tried.push(next);
        }
        assert_eq!(tried, vec![e[2], e[3], e[0], e[1]]);
        assert_eq!(next_endpoint(&e[..1], &e[..1], |_| false), None);
    }

    #[test]
    fn skipped_endpoints_come_last() {
        let e = addrs(4);
        let next = next_endpoint(&e, &[e[0]], |a| a == e[1] || a == e[2]);
        assert_eq!(next, Some(e[3]));
        let next = next_endpoint(&e, &[e[0], e[3]], |a| a == e[1] || a == e[2]);
        assert_eq!(next, Some(e[1]), "a skipped endpoint rather than none");
    }

    #[test]
    fn an_endpoint_is_skipped_after_three_failed_connections_for_ten_seconds() {
        let e = addrs(3);
        let h = Health::default();
        let now = Instant::now();
        assert!(!h.connection_failed_at(e[0], now));
        assert!(!h.connection_failed_at(e[0], now));
        assert_eq!(h.avoid_failing(e[0], &e), e[0], "two failures: still used");
        assert!(
            h.connection_failed_at(e[0], now),
            "the third starts skipping"
        );
        assert!(!h.connection_failed_at(e[0], now), "already skipped");
        assert!(h.skipped_at(e[0], now + SKIP_FOR - Duration::from_millis(1)));
        assert!(
            !h.skipped_at(e[0], now + SKIP_FOR),
            "tried again afterwards"
        );
        assert!(
            h.connection_failed_at(e[0], now + SKIP_FOR),
            "one more failure skips it again"
        );
        h.answered(e[0]);
        assert!(!h.skipped_at(e[0], now));
        assert_eq!(h.recorded.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn never_every_endpoint_is_skipped() {
        let e = addrs(2);
        let h = Health::default();
        for _ in 0..FAILS_TO_SKIP {
            h.connection_failed(e[0]);
        }
        assert_eq!(h.avoid_failing(e[0], &e), e[1]);
        assert_eq!(h.avoid_failing(e[1], &e), e[1]);
        for _ in 0..FAILS_TO_SKIP {
            h.connection_failed(e[1]);
        }
        assert_eq!(h.avoid_failing(e[0], &e), e[0], "all failing: as chosen");
        assert_eq!(h.avoid_failing(e[1], &e), e[1]);
    }
}
