//! Keep-alive HTTP/1.1 connections to plain-HTTP endpoints, pooled per endpoint address, on
//! `hyper::client::conn::http1`.
//!
//! This replaces hyper-util's legacy client for `BackendProtocol::Http`, the common case, because its
//! pool costs about 15 % of the instructions of a proxied request: checkout and return hash a
//! `(Scheme, Authority)` key with SipHash behind one mutex, and every request takes extra hops
//! through its dispatch machinery. Here an endpoint is found by its `SocketAddr` (a cheap fixed hash)
//! in one of a few shards, each behind a lock held only to push or pop.
//!
//! - Reuse is last in, first out: the warmest connection serves, the others age out.
//! - A connection is idle (and may be pooled) only once hyper's connection task says it is ready for
//!   the next request, which is when the previous response has been read to its end. Upgraded
//!   connections, responses that said `Connection: close` and failed connections never come back.
//! - At most [`MAX_IDLE_PER_ENDPOINT`] idle connections are kept per endpoint (the oldest goes), and
//!   an idle connection is closed after [`POOL_IDLE_TIMEOUT`]; a background sweep closes expired ones
//!   and forgets endpoints without idle connections, so nothing grows as endpoints come and go.
//! - A pooled connection the backend closed while idle is not an error for the client: the request is
//!   sent again on another connection, but only when hyper gives it back unsent.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::RequestBody;
use super::upstream_error::{UpstreamError, classify};
use crate::vocab::request::connection_tokens;

/// Idle upstream connections are closed after this long (backends often close at 60-120 s).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Idle connections kept per endpoint; more than this many at once means a burst that has passed.
pub const MAX_IDLE_PER_ENDPOINT: usize = 128;
/// How often expired idle connections are closed, so they outlive [`POOL_IDLE_TIMEOUT`] by at most
/// this much.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Shards of the endpoint map: enough that worker threads seldom meet on one lock.
const SHARDS: usize = 16;

/// `SocketAddr`s come from the cluster's EndpointSlices, not from clients, so a fast fixed hash is
/// safe here (no flooding by chosen keys).
type AddrHash = foldhash::fast::FixedState;

struct Idle {
    tx: SendRequest<RequestBody>,
    since: Instant,
}

/// Idle connections by endpoint, newest at the back.
type Shard = HashMap<SocketAddr, VecDeque<Idle>, AddrHash>;

pub struct Http1Pool {
    shards: Box<[Mutex<Shard>]>,
    hash: AddrHash,
    builder: http1::Builder,
    /// Whether the sweeping task was started (on the first return, from inside the runtime).
    sweeping: AtomicBool,
}

impl Http1Pool {
    pub fn new() -> Arc<Http1Pool> {
        Arc::new(Http1Pool {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(AddrHash::default())))
                .collect(),
            hash: AddrHash::default(),
            builder: http1::Builder::new(),
            sweeping: AtomicBool::new(false),
        })
    }

    fn shard(&self, addr: &SocketAddr) -> MutexGuard<'_, Shard> {
        let i = (self.hash.hash_one(addr) as usize) % SHARDS;
        // A panic while the lock was held leaves at worst a connection too many or too few.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `req` to `endpoint` on an idle connection, or a new one if none is usable, and returns
    /// the response head; the connection comes back to the pool once the response body is read.
    /// `fresh`: on a new connection, for a request sent again after a reused one broke.
    pub async fn send(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        connect_timeout: Duration,
        mut req: Request<RequestBody>,
        fresh: bool,
    ) -> Result<Response<Incoming>, UpstreamError> {
        loop {
            let (mut tx, reused) = match self.checkout(endpoint).filter(|_| !fresh) {
                Some(tx) => (tx, true),
                None => (self.connect(endpoint, connect_timeout).await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    self.release(endpoint, tx, &resp);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // Not a byte of it was written: the idle connection was closed under us (the
                    // backend's keep-alive timeout), so another connection may have it. Each retry
                    // uses up a pooled connection, and a new one is never retried, so this ends.
                    Some(unsent) if reused => req = unsent,
                    // Written, then the connection broke with no response: if it was a reused one,
                    // the endpoint probably closed it as idle just then (see `retry`).
                    _ => {
                        return Err(match classify(&e.into_error(), false) {
                            UpstreamError::Exchange(detail) if reused => {
                                UpstreamError::StaleConnection(detail)
                            }
                            other => other,
                        });
                    }
                },
            }
        }
    }

    /// The newest idle connection to `endpoint` that is still open and fresh; older ones stay for
    /// the sweep.
    fn checkout(&self, endpoint: SocketAddr) -> Option<SendRequest<RequestBody>> {
        self.checkout_at(endpoint, Instant::now())
    }

    fn checkout_at(&self, endpoint: SocketAddr, now: Instant) -> Option<SendRequest<RequestBody>> {
        let mut shard = self.shard(&endpoint);
        let idle = shard.get_mut(&endpoint)?;
        while let Some(c) = idle.pop_back() {
            if c.tx.is_ready() && now.saturating_duration_since(c.since) < POOL_IDLE_TIMEOUT {
                return Some(c.tx);
            }
        }
        None
    }

    async fn connect(
        &self,
        endpoint: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<SendRequest<RequestBody>, UpstreamError> {
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(endpoint)).await
        {
            Err(_) => return Err(UpstreamError::ConnectTimeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Err(UpstreamError::ConnectTimeout);
            }
            Ok(Err(e)) => return Err(UpstreamError::Connect(format!("tcp connect error: {e}"))),
            Ok(Ok(stream)) => stream,
        };
        stream
            .set_nodelay(true)
            .map_err(|e| UpstreamError::Connect(format!("tcp set_nodelay error: {e}")))?;
        let (tx, conn) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Connect(format!("http1 handshake: {e}")))?;
        tokio::spawn(async move {
            // With upgrades: after a `101` the connection is handed to the WebSocket tunnel.
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection failed");
            }
        });
        Ok(tx)
    }

    /// Returns the connection to the pool if it can serve another request: now if hyper has already
    /// read the whole response (the usual case for short bodies), else once it has.
    fn release(
        self: &Arc<Self>,
        endpoint: SocketAddr,
        mut tx: SendRequest<RequestBody>,
        resp: &Response<Incoming>,
    ) {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            || !keeps_alive(resp.version(), resp.headers())
        {
            return;
        }
        if tx.is_ready() {
            self.put(endpoint, tx);
            return;
        }
        // `ready` completes when the response body has been read to its end, and fails if the
        // connection closes first (a body dropped half-read, a broken exchange). Weak: a pool being
        // dropped (a reload in tests) takes its connections with it.
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            if tx.ready().await.is_ok()
                && let Some(pool) = pool.upgrade()
            {
                pool.put(endpoint, tx);
            }
        });
    }

    fn put(self: &Arc<Self>, endpoint: SocketAddr, tx: SendRequest<RequestBody>) {
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(self)));
        }
        let idle = Idle {
            tx,
            since: Instant::now(),
        };
        let mut shard = self.shard(&endpoint);
        let conns = shard.entry(endpoint).or_default();
        if conns.len() >= MAX_IDLE_PER_ENDPOINT {
            conns.pop_front();
        }
        conns.push_back(idle);
    }

    /// Closes expired and dead idle connections and forgets endpoints that have none left.
    fn sweep(&self, now: Instant) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            shard.retain(|_, conns| {
                conns.retain(|c| {
                    c.tx.is_ready() && now.saturating_duration_since(c.since) < POOL_IDLE_TIMEOUT
                });
                !conns.is_empty()
            });
            if shard.capacity() > 64 && shard.capacity() > 4 * shard.len() {
                shard.shrink_to_fit();
            }
        }
    }

    #[cfg(test)]
    fn idle_count(&self, endpoint: SocketAddr) -> usize {
        self.shard(&endpoint)
            .get(&endpoint)
            .map_or(0, VecDeque::len)
    }

    #[cfg(test)]
    fn endpoints(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

async fn sweep(pool: Weak<Http1Pool>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.sweep(Instant::now()),
            None => return,
        }
    }
}

/// Whether the backend lets the connection serve another request after this response (RFC 9112
/// §9.3): HTTP/1.1 unless it says `close`, HTTP/1.0 only if it says `keep-alive`. hyper closes such
/// connections itself; checking here spares a waiting task.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let says = |token: &str| connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token));
    match version {
        Version::HTTP_11 => !says("close"),
        Version::HTTP_10 => says("keep-alive"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::body::Guarded;
    use bytes::Bytes;
    use http::header;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A hyper HTTP/1.1 backend answering `ok`, counting the connections it accepted.
    async fn backend() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    /// A request with an empty body, as the proxy would send it.
    async fn request() -> Request<RequestBody> {
        let body = empty_incoming().await;
        Request::builder()
            .uri("/")
            .header(header::HOST, "backend")
            .body(Guarded::new(
                http_body_util::Either::Left(body),
                Duration::from_secs(5),
                None,
            ))
            .unwrap()
    }

    /// An `Incoming` can only come from hyper: take the empty body of a loopback request.
    async fn empty_incoming() -> Incoming {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = service_fn(move |req: Request<Incoming>| {
                let tx = tx.clone();
                async move {
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send(req.into_body());
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let body = rx.await.unwrap();
        drop(s);
        body
    }

    async fn get(pool: &Arc<Http1Pool>, addr: SocketAddr) -> Result<Bytes, UpstreamError> {
        let resp = pool
            .send(addr, Duration::from_secs(1), request().await, false)
            .await?;
        Ok(resp.into_body().collect().await.unwrap().to_bytes())
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn reuses_one_connection_for_sequential_requests() {
        let (addr, accepted) = backend().await;
        let pool = Http1Pool::new();
        for _ in 0..5 {
            assert_eq!(get(&pool, addr).await.unwrap(), "ok");
            settle().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(addr), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_without_an_error() {
        // A backend that answers one request per connection and then closes it, without saying so.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                });
            }
        });
        let pool = Http1Pool::new();
        assert_eq!(get(&pool, addr).await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get(&pool, addr).await.unwrap(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_given_back_unsent_is_retried_on_a_new_connection() {
        // An idle, ready connection whose connection task ends after the request was queued on it
        // but before it was written (as when the backend's close is noticed first): hyper gives the
        // request back, and it goes out on a new connection.
        let (addr, accepted) = backend().await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (tx, conn) = http1::handshake::<_, RequestBody>(TokioIo::new(stream))
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        settle().await;
        assert!(tx.is_ready());
        let pool = Http1Pool::new();
        pool.put(addr, tx);

        let send = pool.send(addr, Duration::from_secs(1), request().await, false);
        tokio::pin!(send);
        tokio::select! {
            biased;
            _ = &mut send => panic!("answered before the connection task ran"),
            _ = std::future::ready(()) => {}
        }
        task.abort();
        let resp = send.await.unwrap();
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connection_close_and_half_read_bodies_are_not_pooled() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        let pool = Http1Pool::new();
        assert_eq!(get(&pool, addr).await.unwrap(), "ok");
        settle().await;
        assert_eq!(pool.idle_count(addr), 0);

        // A body far larger than hyper reads ahead, dropped after the head: hyper closes the
        // connection, which must not come back.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4194304\r\n\r\n")
                .await;
            let chunk = vec![b'x'; 65536];
            for _ in 0..64 {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        let resp = pool
            .send(addr, Duration::from_secs(1), request().await, false)
            .await
            .unwrap();
        drop(resp);
        settle().await;
        assert_eq!(pool.idle_count(addr), 0);
    }

    #[tokio::test]
    async fn refused_and_unroutable_endpoints_map_to_connect_errors() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = Http1Pool::new();
        let err = get(&pool, addr).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn idle_connections_are_bounded_and_swept() {
        let (addr, _) = backend().await;
        let pool = Http1Pool::new();
        let mut held = Vec::new();
        for _ in 0..(MAX_IDLE_PER_ENDPOINT + 5) {
            held.push(pool.connect(addr, Duration::from_secs(1)).await.unwrap());
        }
        settle().await;
        for tx in held {
            assert!(tx.is_ready());
            pool.put(addr, tx);
        }
        assert_eq!(pool.idle_count(addr), MAX_IDLE_PER_ENDPOINT);
        let later = Instant::now() + POOL_IDLE_TIMEOUT;
        pool.sweep(Instant::now());
        assert_eq!(
            pool.idle_count(addr),
            MAX_IDLE_PER_ENDPOINT,
            "none expired yet"
        );
        assert!(
            pool.checkout_at(addr, later).is_none(),
            "expired connections are not used"
        );
        pool.sweep(later);
        assert_eq!(pool.endpoints(), 0, "the endpoint is forgotten");
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let mut h = HeaderMap::new();
        assert!(keeps_alive(Version::HTTP_11, &h));
        assert!(!keeps_alive(Version::HTTP_10, &h));
        h.insert(header::CONNECTION, "Keep-Alive".parse().unwrap());
        assert!(keeps_alive(Version::HTTP_10, &h));
        h.insert(header::CONNECTION, "foo, Close".parse().unwrap());
        assert!(!keeps_alive(Version::HTTP_11, &h));
    }
}
