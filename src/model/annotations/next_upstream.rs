//! `proxy-next-upstream`, `proxy-next-upstream-tries` and `proxy-next-upstream-timeout`: which failures
//! of a request send it on to another endpoint, how many attempts it gets and for how long. Defaults
//! as ingress-nginx: `error timeout`, 3 tries, no time limit. An invalid value is reported and its
//! default applies (retrying less or more never exposes a route).

use std::time::Duration;

use super::{AnnotationError, Reader};

/// The names of this family (without prefix).
pub const NAMES: &[&str] = &[
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-next-upstream-timeout",
];

/// Conditions ingress-nginx accepts that Portcullis does not act on (reported, the rest applies).
const NOT_SUPPORTED: &[&str] = &["invalid_header", "http_403", "http_404", "http_429"];

/// One failure that may send a request on to another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The connection could not be made or broke before a response head arrived.
    Error,
    /// Connecting or waiting for the response head took too long.
    Timeout,
    /// The endpoint answered with this status (500, 502, 503 or 504).
    Status(u16),
}

impl Condition {
    fn bit(self) -> u8 {
        match self {
            Condition::Error => 1,
            Condition::Timeout => 2,
            Condition::Status(500) => 4,
            Condition::Status(502) => 8,
            Condition::Status(503) => 16,
            Condition::Status(504) => 32,
            Condition::Status(_) => 0,
        }
    }

    /// ingress-nginx's name for it, also the `reason` label of the retry metric.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Error => "error",
            Condition::Timeout => "timeout",
            Condition::Status(500) => "http_500",
            Condition::Status(502) => "http_502",
            Condition::Status(503) => "http_503",
            Condition::Status(504) => "http_504",
            Condition::Status(_) => "http_other",
        }
    }

    fn parse(token: &str) -> Option<Condition> {
        Some(match token {
            "error" => Condition::Error,
            "timeout" => Condition::Timeout,
            "http_500" => Condition::Status(500),
            "http_502" => Condition::Status(502),
            "http_503" => Condition::Status(503),
            "http_504" => Condition::Status(504),
            _ => return None,
        })
    }
}

/// When and how often a failed request is sent on to another endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextUpstream {
    /// The conditions that retry, as bits of [`Condition::bit`]; 0 is `off`.
    conditions: u8,
    /// `non_idempotent`: also retry POST, PATCH, LOCK (nginx never does otherwise).
    pub non_idempotent: bool,
    /// Attempts in all, the first included; 0: one per endpoint.
    pub tries: u32,
    /// No new attempt starts this long after the first; `None`: no limit.
    pub timeout: Option<Duration>,
}

impl Default for NextUpstream {
    fn default() -> Self {
        NextUpstream {
            conditions: Condition::Error.bit() | Condition::Timeout.bit(),
            non_idempotent: false,
            tries: 3,
            timeout: None,
        }
    }
}

impl NextUpstream {
    pub fn retries_on(&self, condition: Condition) -> bool {
        self.conditions & condition.bit() != 0
    }

    /// `proxy-next-upstream: off`, or a single try: every request gets one attempt.
    pub fn is_off(&self) -> bool {
        self.conditions == 0 || self.tries == 1
    }

    /// Whether any response status retries, so responses must be looked at before they are passed on.
    pub fn retries_on_status(&self) -> bool {
        self.conditions & !(Condition::Error.bit() | Condition::Timeout.bit()) != 0
    }

    /// Only these conditions (for tests and callers building a policy by hand).
    pub fn on(conditions: &[Condition]) -> NextUpstream {
        NextUpstream {
            conditions: conditions.iter().fold(0, |bits, c| bits | c.bit()),
            ..NextUpstream::default()
        }
    }
}

impl Reader<'_> {
    pub(super) fn next_upstream(&mut self) -> NextUpstream {
        let mut n = NextUpstream::default();
        if let Some((key, value)) = self.get("proxy-next-upstream") {
            match parse_conditions(value) {
                Ok((conditions, non_idempotent, ignored)) => {
                    n.conditions = conditions;
                    n.non_idempotent = non_idempotent;
                    if !ignored.is_empty() {
                        self.errors.push(AnnotationError::Invalid {
                            key,
                            reason: format!(
                                "{} not supported by Portcullis and ignored; the other conditions apply",
                                ignored.join(", ")
                            ),
                        });
                    }
                }
                Err(reason) => self.errors.push(AnnotationError::Invalid { key, reason }),
            }
        }
        if let Some(tries) = self.parse("proxy-next-upstream-tries", |v| {
            v.parse::<u32>()
                .map_err(|_| format!("{v:?} is not a whole number of tries (0: one per endpoint)"))
        }) {
            n.tries = tries;
        }
        if let Some(timeout) = self.parse("proxy-next-upstream-timeout", |v| {
            crate::vocab::parse_duration(v)
        }) {
            n.timeout = (!timeout.is_zero()).then_some(timeout);
        }
        n
    }
}

/// The condition bits, `non_idempotent`, and the recognised but unsupported tokens; an unknown
/// token makes the whole value invalid.
fn parse_conditions(value: &str) -> Result<(u8, bool, Vec<&str>), String> {
    let tokens: Vec<&str> = value.split_whitespace().collect();
    if tokens.is_empty() {
        return Err("is empty (use for example \"error timeout\", or \"off\")".into());
    }
    let (mut bits, mut non_idempotent, mut ignored, mut off) = (0, false, Vec::new(), false);
    for token in tokens {
        match (token, Condition::parse(token)) {
            (_, Some(c)) => bits |= c.bit(),
            ("non_idempotent", None) => non_idempotent = true,
            ("off", None) => off = true,
            (t, None) if NOT_SUPPORTED.contains(&t) => ignored.push(t),
            (t, None) => {
                return Err(format!(
                    "{t:?} is not one of error, timeout, http_500, http_502, http_503, http_504, non_idempotent, off; the default (error timeout) applies"
                ));
            }
        }
    }
    // As in nginx, `off` turns retries off whatever else is listed.
    Ok((if off { 0 } else { bits }, non_idempotent, ignored))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{nginx, one_error, ours, parse_map, parse_nginx_map};
    use super::*;

    #[test]
    fn defaults_are_ingress_nginx_ones() {
        let (a, errors) = parse_map(&[]);
        assert!(errors.is_empty());
        let n = a.next_upstream;
        assert!(n.retries_on(Condition::Error) && n.retries_on(Condition::Timeout));
        assert!(!n.retries_on(Condition::Status(502)) && !n.retries_on_status());
        assert_eq!((n.tries, n.timeout, n.non_idempotent), (3, None, false));
        assert!(!n.is_off());
    }

    #[test]
    fn conditions_are_read() {
        let (a, errors) = nginx(
            "proxy-next-upstream",
            "error http_502  http_503 non_idempotent",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let n = a.next_upstream;
        assert!(n.retries_on(Condition::Error) && !n.retries_on(Condition::Timeout));
        assert!(n.retries_on(Condition::Status(502)) && n.retries_on(Condition::Status(503)));
        assert!(!n.retries_on(Condition::Status(500)) && !n.retries_on(Condition::Status(504)));
        assert!(n.non_idempotent && n.retries_on_status());
        let (a, _) = ours("proxy-next-upstream", "http_500 http_504");
        assert!(a.next_upstream.retries_on(Condition::Status(500)));
        assert!(!a.next_upstream.retries_on(Condition::Error));
    }

    #[test]
    fn off_turns_every_condition_off() {
        for v in ["off", "error off", "off timeout"] {
            let (a, errors) = nginx("proxy-next-upstream", v);
            assert!(errors.is_empty() && a.next_upstream.is_off(), "{v}");
        }
        assert!(
            nginx("proxy-next-upstream-tries", "1")
                .0
                .next_upstream
                .is_off()
        );
    }

    #[test]
    fn unknown_conditions_are_invalid_and_the_default_applies() {
        let (a, errors) = nginx("proxy-next-upstream", "error sometimes");
        one_error(&errors, "\"sometimes\" is not one of");
        assert_eq!(a.next_upstream, NextUpstream::default());
        let (_, errors) = nginx("proxy-next-upstream", " ");
        one_error(&errors, "is empty");
    }

    #[test]
    fn unsupported_conditions_are_reported_and_the_rest_applies() {
        let (a, errors) = nginx("proxy-next-upstream", "error http_404 http_502");
        one_error(&errors, "http_404 not supported");
        assert!(a.next_upstream.retries_on(Condition::Status(502)));
        assert!(!a.next_upstream.retries_on(Condition::Timeout));
    }

    #[test]
    fn tries_and_timeout() {
        let (a, errors) = parse_nginx_map(&[
            ("proxy-next-upstream-tries", "5"),
            ("proxy-next-upstream-timeout", "2"),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(a.next_upstream.tries, 5);
        assert_eq!(a.next_upstream.timeout, Some(Duration::from_secs(2)));
        let (a, _) = nginx("proxy-next-upstream-timeout", "0");
        assert_eq!(a.next_upstream.timeout, None, "0: no limit, as nginx");
        let (a, _) = nginx("proxy-next-upstream-tries", "0");
        assert_eq!(a.next_upstream.tries, 0);
        let (a, errors) = nginx("proxy-next-upstream-tries", "-1");
        one_error(&errors, "whole number of tries");
        assert_eq!(a.next_upstream.tries, 3);
        one_error(&nginx("proxy-next-upstream-timeout", "soon").1, "duration");
    }
}
