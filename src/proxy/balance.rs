//! Choosing the endpoint of one request (the "choose backend" step): round robin, `ewma`,
//! `upstream-hash-by`, or the affinity cookie, which pins a client to an endpoint. The cookie's value
//! is `<key>.<tag>`: the tag (a keyed hash of the backend) says which backend set it, the key is a
//! random ring key (`balanced`) or the endpoint's keyed hash (`persistent`), so no value reveals an
//! address, and a forged, foreign or stale one is balanced as if there were none.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderValue, header};

use super::ClientView;
use crate::model::Backend;
use crate::model::annotations::balancing::{AffinityMode, Balancing, SameSite, SessionCookie};
use crate::model::annotations::external_auth::RequestVars;
use crate::model::balancer::{Token, ring_hash};
use crate::vocab::hosts::normalize_host;

/// The request facts the choice may depend on.
pub struct Facts<'a> {
    pub headers: &'a HeaderMap,
    pub uri: &'a http::Uri,
    pub method: &'a http::Method,
    pub client: &'a ClientView,
    pub host: &'a str,
    pub local_port: u16,
    /// The rule's path, for a cookie without `session-cookie-path`.
    pub cookie_path: &'a str,
}

/// The endpoint chosen, and what the response must carry or report.
pub struct Choice<'a> {
    pub endpoint: SocketAddr,
    /// An affinity cookie to set: a new endpoint was chosen for the session.
    pub set_cookie: Option<HeaderValue>,
    pub in_flight: Option<InFlight<'a>>,
    /// How to move the session when another endpoint answered (`session-cookie-change-on-failure`).
    pub moved: Option<MovedSession<'a>>,
}

/// A sticky session's cookie, ready to name another endpoint: `proxy-next-upstream` may send the
/// request elsewhere than chosen, and with `session-cookie-change-on-failure` the session follows.
pub struct MovedSession<'a> {
    backend: &'a Backend,
    cookie: &'a SessionCookie,
    /// Everything after the key: `.<tag>; Path=…` and the attributes.
    tail: String,
}

impl MovedSession<'_> {
    /// The `Set-Cookie` pinning the session to `endpoint`.
    pub fn cookie_for(&self, endpoint: SocketAddr) -> Option<HeaderValue> {
        let index = self.backend.endpoints.iter().position(|e| *e == endpoint)?;
        let key = match self.cookie.mode {
            AffinityMode::Persistent => *self.backend.tokens().get(index)?,
            // A ring key that lands on that endpoint; each try hits it with probability 1/n.
            AffinityMode::Balanced => {
                let mut rng = fastrand::Rng::new();
                std::iter::repeat_with(|| random_token(&mut rng))
                    .take(64 * self.backend.endpoints.len())
                    .find(|key| self.backend.ring().lookup(ring_hash(key)) == Some(index))?
            }
        };
        let value = format!(
            "{}={}{}",
            self.cookie.name,
            String::from_utf8_lossy(&key),
            self.tail
        );
        HeaderValue::from_str(&value).ok()
    }
}

/// One request counted against an `ewma` endpoint until it ends.
pub struct InFlight<'a> {
    backend: &'a Backend,
    index: usize,
    started: Instant,
    answered: Option<Duration>,
}

impl InFlight<'_> {
    /// The response head arrived: its latency feeds the endpoint's average.
    pub fn answered(&mut self) {
        self.answered = Some(self.started.elapsed());
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let latency = self
            .answered
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.backend.loads()[self.index].finish(self.backend.clock_us(), latency);
    }
}

/// The endpoint for this request; `None` when the backend has no ready endpoint.
pub fn choose<'a>(
    backend: &'a Backend,
    balancing: &'a Balancing,
    f: &Facts<'_>,
) -> Option<Choice<'a>> {
    let n = backend.endpoints.len();
    if n == 0 {
        return None;
    }
    let plain = |index: usize| Choice {
        endpoint: backend.endpoints[index],
        set_cookie: None,
        in_flight: None,
        moved: None,
    };
    match balancing {
        Balancing::RoundRobin => backend.pick().map(|endpoint| Choice {
            endpoint,
            set_cookie: None,
            in_flight: None,
            moved: None,
        }),
        Balancing::Ewma => {
            let index = two_choices(n, |i| backend.loads()[i].score(), &mut fastrand::Rng::new());
            backend.loads()[index].start();
            Some(Choice {
                endpoint: backend.endpoints[index],
                set_cookie: None,
                in_flight: Some(InFlight {
                    backend,
                    index,
                    started: Instant::now(),
                    answered: None,
                }),
                moved: None,
            })
        }
        Balancing::Hash(template) => {
            let host = normalize_host(f.host);
            let vars = RequestVars {
                scheme: f.client.scheme.as_str(),
                host: &host,
                http_host: f.host,
                path: f.uri.path(),
                query: f.uri.query(),
                method: f.method.as_str(),
                remote_addr: f.client.ip,
                server_port: f.local_port,
                headers: f.headers,
            };
            // A Host that is no host name still hashes: it is only a key here.
            let key = template.render(&vars).unwrap_or_else(|e| e.0);
            backend.ring().lookup(ring_hash(key.as_bytes())).map(plain)
        }
        Balancing::Sticky(cookie) => {
            let (index, key) = sticky(backend, cookie, f.headers, &mut fastrand::Rng::new())?;
            let mut choice = plain(index);
            if let Some(key) = key {
                choice.set_cookie = set_cookie(cookie, &key, backend.tag(), f);
            }
            if cookie.change_on_failure {
                choice.moved = Some(MovedSession {
                    backend,
                    cookie,
                    tail: cookie_tail(cookie, backend.tag(), f),
                });
            }
            Some(choice)
        }
    }
}

/// Of two different random endpoints, the one with the lower score (power of two choices).
pub fn two_choices(n: usize, score: impl Fn(usize) -> f64, rng: &mut fastrand::Rng) -> usize {
    if n < 2 {
        return 0;
    }
    let a = rng.usize(..n);
    let b = (a + 1 + rng.usize(..n - 1)) % n;
    if score(b) < score(a) { b } else { a }
}

/// Whether the request carries an affinity cookie set for this backend (so it is pinned here).
pub fn pinned(backend: &Backend, cookie: &SessionCookie, headers: &HeaderMap) -> bool {
    cookie_value(headers, &cookie.name)
        .and_then(split_value)
        .is_some_and(|(_, tag)| &tag == backend.tag())
}

/// The endpoint for a sticky session, and the cookie key to set when it is a new one.
pub fn sticky(
    backend: &Backend,
    cookie: &SessionCookie,
    headers: &HeaderMap,
    rng: &mut fastrand::Rng,
) -> Option<(usize, Option<Token>)> {
    let ours = cookie_value(headers, &cookie.name)
        .and_then(split_value)
        .filter(|(_, tag)| tag == backend.tag());
    match cookie.mode {
        AffinityMode::Persistent => {
            if let Some((key, _)) = ours
                && let Some(i) = backend.tokens().iter().position(|t| *t == key)
            {
                return Some((i, None));
            }
            let endpoint = backend.pick()?;
            let i = backend.endpoints.iter().position(|e| *e == endpoint)?;
            Some((i, Some(backend.tokens()[i])))
        }
        AffinityMode::Balanced => {
            let (key, new) = match ours {
                Some((key, _)) => (key, false),
                None => (random_token(rng), true),
            };
            let i = backend.ring().lookup(ring_hash(&key))?;
            Some((i, new.then_some(key)))
        }
    }
}

fn random_token(rng: &mut fastrand::Rng) -> Token {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for b in &mut out {
        *b = HEX[rng.usize(..16)];
    }
    out
}

/// `<key>.<tag>`, each 16 lower-case hex digits; anything else is no cookie of ours.
fn split_value(v: &str) -> Option<(Token, Token)> {
    let (key, tag) = v.split_once('.')?;
    let hex = |s: &str| -> Option<Token> {
        let bytes: Token = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            .then_some(bytes)
    };
    Some((hex(key)?, hex(tag)?))
}

/// The value of the first cookie of this name.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The `Set-Cookie` of a new session, with the attributes ingress-nginx gives it.
fn set_cookie(
    cookie: &SessionCookie,
    key: &Token,
    tag: &Token,
    f: &Facts<'_>,
) -> Option<HeaderValue> {
    let value = format!(
        "{}={}{}",
        cookie.name,
        String::from_utf8_lossy(key),
        cookie_tail(cookie, tag, f)
    );
    HeaderValue::from_str(&value).ok()
}

/// The cookie after its key: `.<tag>; Path=…` and the attributes.
fn cookie_tail(cookie: &SessionCookie, tag: &Token, f: &Facts<'_>) -> String {
    let mut v = format!(
        ".{}; Path={}",
        String::from_utf8_lossy(tag),
        cookie.path.as_deref().unwrap_or(f.cookie_path)
    );
    if let Some(domain) = &cookie.domain {
        v.push_str("; Domain=");
        v.push_str(domain);
    }
    if let Some(s) = cookie.expires {
        let at = SystemTime::now() + Duration::from_secs(s.min(1 << 32));
        v.push_str("; Expires=");
        v.push_str(&httpdate::fmt_http_date(at));
    }
    if let Some(s) = cookie.max_age {
        v.push_str(&format!("; Max-Age={s}"));
    }
    if cookie.secure || f.client.scheme == super::Scheme::Https {
        v.push_str("; Secure");
    }
    v.push_str("; HttpOnly");
    let samesite = match cookie.samesite {
        Some(SameSite::None)
            if cookie.conditional_samesite_none && !samesite_none_compatible(f.headers) =>
        {
            None
        }
        other => other,
    };
    if let Some(s) = samesite {
        v.push_str(match s {
            SameSite::None => "; SameSite=None",
            SameSite::Lax => "; SameSite=Lax",
            SameSite::Strict => "; SameSite=Strict",
        });
    }
    v
}

/// Whether the browser handles `SameSite=None` (the user agents the Chromium project lists as
/// rejecting it, which ingress-nginx also checks: iOS 12, macOS 10.14 Safari, Chrome 51 to 66, UC
/// Browser before 12.13.2).
fn samesite_none_compatible(headers: &HeaderMap) -> bool {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let version_after = |marker: &str| -> Option<u32> {
        let rest = &ua[ua.find(marker)? + marker.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let ios12 = ua.contains("iPhone OS 12_") || ua.contains("iPad; CPU OS 12_");
    let mac_safari = ua.contains("Macintosh; Intel Mac OS X 10_14")
        && ua.contains("Version/")
        && ua.contains("Safari")
        && !ua.contains("Chrome");
    let old_chrome = version_after("Chrome/")
        .or_else(|| version_after("Chromium/"))
        .is_some_and(|v| (51..=66).contains(&v));
    let old_uc = ua.contains("UCBrowser/") && {
        let rest = ua.split("UCBrowser/").nth(1).unwrap_or("");
        let parts: Vec<u32> = rest
            .split(|c: char| c != '.' && !c.is_ascii_digit())
            .next()
            .unwrap_or("")
            .split('.')
            .filter_map(|p| p.parse().ok())
            .collect();
        parts.as_slice() < [12, 13, 2].as_slice()
    };
    !(ios12 || mac_safari || old_chrome || old_uc)
}

#[cfg(test)]
pub(super) mod tests;
