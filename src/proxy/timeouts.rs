//! Client-connection timeouts that hyper does not give: the idle keep-alive timeout, a header-read
//! timeout that starts with the first byte of a request (not when the previous response ended), and a
//! stall timeout for clients that stop reading their responses.
//!
//! A [`Tracker`] counts the requests in flight on one connection (the service takes a [`RequestGuard`]
//! per request and the response body holds it until hyper drops it); [`TimedIo`] wraps the
//! connection's stream and, whenever hyper waits to read while no request is in flight, arms the
//! deadline that applies:
//!
//! - **header read** (HTTP/1.1): from accept, or from the first byte of a later request, the whole
//!   request head must arrive within `limits.header-read-timeout`; after it the read fails and hyper
//!   closes the connection (slowloris).
//! - **idle** (HTTP/1.1 keep-alive and HTTP/2): with no request in flight and, for HTTP/1.1, no byte
//!   of a next request, the connection is closed after `limits.idle-timeout` (the read reports end of
//!   stream, which both hyper protocols treat as a clean close). HTTP/2 PINGs or SETTINGS do not keep a
//!   connection alive; only requests do.
//! - **stalled writes**: a write that makes no progress for `limits.idle-timeout` (a client that stopped
//!   reading its response) fails, and hyper closes the connection.
//!
//! An upgraded connection (WebSocket, after `101`) is left alone: it belongs to the tunnel from then on.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The HTTP/2 connection preface, as far as it tells the protocol apart from HTTP/1.1.
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2";

/// The deadlines of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// Which HTTP version the connection speaks, as far as the timeouts care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Not known yet (plain HTTP before the first bytes): treated as HTTP/1.1.
    Unknown,
    Http1,
    Http2,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    upgraded: bool,
    /// Counts the times the connection became idle (no request in flight).
    idle_epoch: u64,
    /// When the current idle period began (accept, or the end of the last response).
    idle_since: Instant,
    /// Whether any request has been received yet: the first one is bounded by the header-read timeout
    /// from accept.
    served: bool,
    /// The reader waiting on this connection, woken when the last request ends so it arms the idle
    /// deadline.
    reader: Option<Waker>,
}

/// Requests in flight on one connection.
#[derive(Debug)]
pub struct Tracker {
    state: Mutex<State>,
}

impl Tracker {
    pub fn new() -> Arc<Tracker> {
        Arc::new(Tracker {
            state: Mutex::new(State {
                in_flight: 0,
                upgraded: false,
                idle_epoch: 0,
                idle_since: Instant::now(),
                served: false,
                reader: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the current idle period (and the first request's header-read clock) now.
    pub fn restart_clock(&self) {
        self.lock().idle_since = Instant::now();
    }

    /// A request arrived; it counts as in flight until the guard (or the body holding it) is dropped.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        let mut s = self.lock();
        s.in_flight += 1;
        s.served = true;
        RequestGuard {
            tracker: self.clone(),
        }
    }
}

/// One request in flight.
#[derive(Debug)]
pub struct RequestGuard {
    tracker: Arc<Tracker>,
}

impl RequestGuard {
    /// Makes the response body carry the guard, so the request counts until hyper has sent it all.
    /// A `101 Switching Protocols` hands the connection to the upgrade: no more timeouts.
    pub fn attach<B>(self, resp: Response<B>) -> Response<InFlight<B>> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            self.tracker.lock().upgraded = true;
        }
        resp.map(|inner| InFlight {
            inner,
            _guard: self,
        })
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut s = self.tracker.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_epoch += 1;
            s.idle_since = Instant::now();
            if let Some(waker) = s.reader.take() {
                waker.wake();
            }
        }
    }
}

/// A response body that keeps its request counted as in flight.
pub struct InFlight<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B> Body for InFlight<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a deadline ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// Close quietly: report end of stream.
    Idle,
    /// The request head did not arrive in time.
    HeaderRead,
}

/// The connection's stream with the deadlines above.
pub struct TimedIo<T> {
    inner: T,
    tracker: Arc<Tracker>,
    timeouts: Timeouts,
    protocol: Protocol,
    /// The first bytes read, until the protocol is known.
    sniffed: Vec<u8>,
    /// When bytes of a request head were first read in an idle period, and which one.
    head_started: Option<(u64, Instant)>,
    read_timer: Pin<Box<Sleep>>,
    /// When the current write started to wait for the client; `None` while writes make progress.
    write_stalled: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
}

impl<T> TimedIo<T> {
    pub fn new(inner: T, tracker: Arc<Tracker>, timeouts: Timeouts, protocol: Protocol) -> Self {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        TimedIo {
            inner,
            tracker,
            timeouts,
            protocol,
            sniffed: Vec::new(),
            head_started: None,
            read_timer: Box::pin(tokio::time::sleep_until(far)),
            write_stalled: None,
            write_timer: Box::pin(tokio::time::sleep_until(far)),
        }
    }

    /// Learns the protocol from the first bytes of a plain connection.
    fn sniff(&mut self, bytes: &[u8]) {
        if self.protocol != Protocol::Unknown {
            return;
        }
        let want = H2_PREFACE_START.len() - self.sniffed.len();
        self.sniffed
            .extend_from_slice(&bytes[..bytes.len().min(want)]);
        let n = self.sniffed.len();
        if self.sniffed[..] != H2_PREFACE_START[..n] {
            self.protocol = Protocol::Http1;
        } else if n == H2_PREFACE_START.len() {
            self.protocol = Protocol::Http2;
        }
        if self.protocol != Protocol::Unknown {
            self.sniffed = Vec::new();
        }
    }

    /// The deadline that applies while the reader waits, if any.
    fn read_deadline(&mut self, waker: &Waker) -> Option<(Instant, Expiry)> {
        let mut s = self.tracker.lock();
        if s.upgraded {
            return None;
        }
        if s.in_flight > 0 {
            // Woken when the last request ends, to arm the idle deadline.
            s.reader = Some(waker.clone());
            return None;
        }
        if self.protocol == Protocol::Http2 {
            return Some((s.idle_since + self.timeouts.idle, Expiry::Idle));
        }
        if !s.served {
            return Some((s.idle_since + self.timeouts.header_read, Expiry::HeaderRead));
        }
        match self.head_started {
            Some((epoch, started)) if epoch == s.idle_epoch => {
                Some((started + self.timeouts.header_read, Expiry::HeaderRead))
            }
            _ => Some((s.idle_since + self.timeouts.idle, Expiry::Idle)),
        }
    }

    /// Bytes arrived: if they begin a request head on an idle HTTP/1.1 connection, its clock starts.
    fn note_read(&mut self) {
        let s = self.tracker.lock();
        if s.in_flight == 0
            && s.served
            && self
                .head_started
                .is_none_or(|(epoch, _)| epoch != s.idle_epoch)
        {
            self.head_started = Some((s.idle_epoch, Instant::now()));
        }
    }

    fn write_progress<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(result) => {
                self.write_stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if self.tracker.lock().upgraded {
                    return Poll::Pending;
                }
                let since = *self.write_stalled.get_or_insert_with(Instant::now);
                let deadline = since + self.timeouts.idle;
                if self.write_timer.deadline() != deadline {
                    self.write_timer.as_mut().reset(deadline);
                }
                match self.write_timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                if filled.len() > before {
                    this.sniff(&filled[before..]);
                    this.note_read();
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some((deadline, expiry)) = this.read_deadline(cx.waker()) else {
            return Poll::Pending;
        };
        if this.read_timer.deadline() != deadline {
            this.read_timer.as_mut().reset(deadline);
        }
        match this.read_timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => match expiry {
                // End of stream: hyper closes an idle connection without an error.
                Expiry::Idle => Poll::Ready(Ok(())),
                Expiry::HeaderRead => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request head did not arrive in time",
                ))),
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.write_progress(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.write_progress(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.write_progress(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.write_progress(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const T: Timeouts = Timeouts {
        header_read: Duration::from_millis(200),
        idle: Duration::from_millis(400),
    };

    #[tokio::test(start_paused = true)]
    async fn first_request_head_is_bounded_by_the_header_read_timeout() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = TimedIo::new(server, Tracker::new(), T, Protocol::Unknown);
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), T.header_read);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_ends_after_the_idle_timeout_and_not_while_a_request_is_in_flight() {
        let (mut client, server) = tokio::io::duplex(64);
        let tracker = Tracker::new();
        let mut io = TimedIo::new(server, tracker.clone(), T, Protocol::Unknown);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let guard = tracker.request();
        // In flight: no deadline at all.
        let waited = tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await;
        assert!(waited.is_err(), "no timeout while a request is in flight");
        drop(guard);
        let idle_from = Instant::now();
        assert_eq!(io.read(&mut buf).await.unwrap(), 0, "end of stream");
        assert_eq!(idle_from.elapsed(), T.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_head_gets_the_header_read_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let tracker = Tracker::new();
        let mut io = TimedIo::new(server, tracker.clone(), T, Protocol::Http1);
        drop(tracker.request());
        client.write_all(b"GET / HT").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let started = Instant::now();
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), T.header_read);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_is_recognised_and_only_gets_the_idle_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut io = TimedIo::new(server, Tracker::new(), T, Protocol::Unknown);
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        assert_eq!(io.protocol, Protocol::Http2);
        assert_eq!(io.read(&mut buf).await.unwrap(), 0, "idle end of stream");
    }

    #[tokio::test(start_paused = true)]
    async fn upgraded_connections_have_no_deadline() {
        let (_client, server) = tokio::io::duplex(64);
        let tracker = Tracker::new();
        let mut io = TimedIo::new(server, tracker.clone(), T, Protocol::Http1);
        let resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .body(())
            .unwrap();
        drop(tracker.request().attach(resp));
        let mut buf = [0u8; 8];
        let waited = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(waited.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_fails_the_write() {
        let (_client, server) = tokio::io::duplex(16);
        let mut io = TimedIo::new(server, Tracker::new(), T, Protocol::Http1);
        let started = Instant::now();
        let err = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), T.idle);
    }
}
