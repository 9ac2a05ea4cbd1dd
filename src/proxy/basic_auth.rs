//! The basic-auth step: a request on a route with basic auth passes only with a user and password the
//! route's Secret accepts; otherwise 401 with the realm (or 503 when the Secret is unusable).
//!
//! bcrypt costs milliseconds per check, so successful checks are remembered in a bounded set, keyed by
//! an HMAC (with a key made at start) of the Secret's content version, the user and the password: no
//! password is stored, and any change of the Secret makes old entries useless. Failed checks are not
//! remembered. Checks run on the blocking pool, a few at a time, so a flood of wrong passwords cannot
//! stall the connections being served.

use std::collections::HashSet;
use std::sync::Mutex;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use tokio::sync::Semaphore;

use super::response::{self, Body};
use crate::model::annotations::basic_auth::BasicAuthPolicy;
use crate::model::htpasswd::Credentials;
use crate::vocab::request::basic_credentials;

/// How many successful verifications are remembered.
const CACHE_CAPACITY: usize = 4096;

/// Checks credentials against a route's basic-auth policy.
pub struct BasicAuth {
    cache: VerifiedCache,
    /// Bounds the password checks running at once (each occupies a blocking thread).
    checks: Semaphore,
}

impl Default for BasicAuth {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BasicAuth {
            cache: VerifiedCache::new(CACHE_CAPACITY),
            checks: Semaphore::new(cores * 2),
        }
    }
}

impl BasicAuth {
    /// `None` when the request may go on; otherwise the answer.
    pub async fn check(
        &self,
        policy: &BasicAuthPolicy,
        headers: &HeaderMap,
    ) -> Option<Response<Body>> {
        let (credentials, challenge) = match policy {
            BasicAuthPolicy::Enforce {
                credentials,
                challenge,
            } => (credentials, challenge),
            BasicAuthPolicy::Unavailable => {
                return Some(response::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authentication for this site is not configured correctly",
                ));
            }
        };
        match basic_credentials(headers) {
            Some((user, password)) if self.verify(credentials, &user, &password).await => None,
            _ => Some(unauthorized(challenge)),
        }
    }

    async fn verify(
        &self,
        credentials: &std::sync::Arc<Credentials>,
        user: &str,
        password: &str,
    ) -> bool {
        let Some(hash) = credentials.user(user) else {
            return false;
        };
        let key = self.cache.key(credentials.version(), user, password);
        if self.cache.contains(&key) {
            return true;
        }
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        let hash = hash.clone();
        let password = password.as_bytes().to_vec();
        let ok = tokio::task::spawn_blocking(move || hash.verify(&password))
            .await
            .unwrap_or(false);
        if ok {
            self.cache.insert(key);
        }
        ok
    }
}

fn unauthorized(challenge: &HeaderValue) -> Response<Body> {
    let mut resp = response::error(StatusCode::UNAUTHORIZED, "authentication required");
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge.clone());
    resp
}

/// Successful verifications, bounded: two generations of keys, the older dropped whole when the newer
/// is full, so the set never holds more than `capacity` keys and recently used ones survive.
struct VerifiedCache {
    hmac: aws_lc_rs::hmac::Key,
    capacity: usize,
    generations: Mutex<Generations>,
}

/// The newer and the older generation of keys.
type Generations = (HashSet<[u8; 32]>, HashSet<[u8; 32]>);

impl VerifiedCache {
    fn new(capacity: usize) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let hmac = aws_lc_rs::hmac::Key::generate(aws_lc_rs::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[]));
        VerifiedCache {
            hmac,
            capacity: capacity.max(2),
            generations: Mutex::new((HashSet::new(), HashSet::new())),
        }
    }

    fn key(&self, version: &[u8; 32], user: &str, password: &str) -> [u8; 32] {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.hmac);
        ctx.update(version);
        ctx.update(&(user.len() as u64).to_be_bytes());
        ctx.update(user.as_bytes());
        ctx.update(password.as_bytes());
        let mut key = [0; 32];
        key.copy_from_slice(ctx.sign().as_ref());
        key
    }

    fn contains(&self, key: &[u8; 32]) -> bool {
        let Ok(mut g) = self.generations.lock() else {
            return false;
        };
        if g.0.contains(key) {
            return true;
        }
        if g.1.remove(key) {
            // Still in use: keep it when the older generation goes.
            self.insert_locked(&mut g, *key);
            return true;
        }
        false
    }

    fn insert(&self, key: [u8; 32]) {
        if let Ok(mut g) = self.generations.lock() {
            self.insert_locked(&mut g, key);
        }
    }

    fn insert_locked(&self, g: &mut Generations, key: [u8; 32]) {
        if g.0.len() >= self.capacity / 2 {
            g.1 = std::mem::take(&mut g.0);
        }
        g.0.insert(key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.generations.lock().map_or(0, |g| g.0.len() + g.1.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use std::sync::Arc;

    const APR1: &str = "$apr1$aWkGiNqZ$ORm1UUd/s7T9p/PzgAj171";

    fn policy() -> BasicAuthPolicy {
        let (credentials, _) = Credentials::from_htpasswd(&format!("alice:{APR1}\n")).unwrap();
        BasicAuthPolicy::Enforce {
            credentials: Arc::new(credentials),
            challenge: HeaderValue::from_static("Basic realm=\"r\""),
        }
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(authorization).unwrap(),
        );
        h
    }

    fn basic(user_password: &str) -> HeaderMap {
        headers(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        ))
    }

    #[tokio::test]
    async fn right_password_passes_wrong_ones_get_the_challenge() {
        let auth = BasicAuth::default();
        let p = policy();
        assert!(auth.check(&p, &basic("alice:open sesame")).await.is_none());
        assert!(
            auth.check(
                &p,
                &headers(&format!(
                    "bAsIc  {}",
                    base64::engine::general_purpose::STANDARD.encode("alice:open sesame")
                ))
            )
            .await
            .is_none()
        );
        for bad in [
            basic("alice:wrong"),
            basic("bob:open sesame"),
            basic("alice"),
            headers("Bearer abc"),
            headers("Basic !!!"),
            HeaderMap::new(),
        ] {
            let resp = auth.check(&p, &bad).await.expect("refused");
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(
                resp.headers()[header::WWW_AUTHENTICATE],
                "Basic realm=\"r\""
            );
        }
        assert_eq!(auth.cache.len(), 1, "only the success is remembered");
    }

    #[tokio::test]
    async fn unavailable_policy_answers_503() {
        let resp = BasicAuth::default()
            .check(&BasicAuthPolicy::Unavailable, &basic("alice:open sesame"))
            .await
            .expect("refused");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn cache_is_bounded_and_keeps_recent_keys() {
        let cache = VerifiedCache::new(100);
        let version = [7; 32];
        for i in 0..10_000 {
            cache.insert(cache.key(&version, "u", &i.to_string()));
            assert!(cache.len() <= 100);
        }
        let recent = cache.key(&version, "u", "9999");
        assert!(cache.contains(&recent));
        assert!(!cache.contains(&cache.key(&version, "u", "0")));
    }

    #[test]
    fn cache_keys_depend_on_version_user_and_password() {
        let cache = VerifiedCache::new(10);
        let k = cache.key(&[1; 32], "alice", "pw");
        assert_ne!(k, cache.key(&[2; 32], "alice", "pw"));
        assert_ne!(k, cache.key(&[1; 32], "alice", "pw2"));
        assert_ne!(k, cache.key(&[1; 32], "alic", "epw"));
        assert_eq!(k, cache.key(&[1; 32], "alice", "pw"));
    }
}
