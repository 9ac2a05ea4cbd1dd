//! Finds HTTP/1.1 requests whose head carries both `Content-Length` and `Transfer-Encoding`.
//!
//! Nothing legitimate sends both, and a front proxy that frames such a request by `Content-Length` while
//! the next hop frames it by `Transfer-Encoding` is the classic request-smuggling vector. hyper hides the
//! case from its service: it frames the request by `Transfer-Encoding`, drops the `Content-Length`
//! header and closes the connection afterwards. So [`Framing`] follows the connection's bytes as hyper
//! reads them, with hyper's framing rules (a head, then a body of `Content-Length` bytes or chunks), and
//! records which request on the connection was ambiguous; the service asks [`Heads::next_is_ambiguous`]
//! for each request, in order, and marks that one with [`AmbiguousFraming`] so it is answered `400`.
//!
//! Anything it cannot follow (HTTP/2 prior knowledge, a malformed message, which hyper refuses too, the
//! bytes of an upgraded connection) ends the following for that connection; it never changes a byte.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A request extension: this request's head had both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousFraming;

/// The longest chunk-size or trailer line followed; hyper refuses far shorter chunk extensions.
const MAX_LINE: usize = 16 * 1024;

/// What the reader found and the service asks about, for one connection.
#[derive(Debug, Default)]
pub struct Heads {
    /// The position (1-based) of the ambiguous request on the connection; 0 for none.
    ambiguous: AtomicU64,
    /// How many requests the service has asked about.
    asked: AtomicU64,
}

impl Heads {
    /// Whether the next request the service sees is the ambiguous one. HTTP/1.1 requests of one
    /// connection reach the service one after another, in the order their heads were read.
    pub fn next_is_ambiguous(&self) -> bool {
        let n = self.asked.fetch_add(1, Ordering::AcqRel) + 1;
        self.ambiguous.load(Ordering::Acquire) == n
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head into `Framing::buf`.
    Head,
    /// Skipping this many bytes of a `Content-Length` body.
    Body(u64),
    /// Reading a chunk-size line into `Framing::buf`.
    ChunkSize,
    /// Skipping chunk data, then its CRLF: the bytes left, CRLF included.
    ChunkData(u64),
    /// Reading the trailer lines after the last chunk, up to the empty line.
    Trailers,
    /// Following no more.
    Done,
}

/// A client connection's stream, followed request by request as it is read.
pub struct Framing<T> {
    inner: T,
    heads: Arc<Heads>,
    state: State,
    /// The head or line being read.
    buf: Vec<u8>,
    /// Request heads read so far.
    count: u64,
    /// hyper's limits: a larger head or more headers is refused by hyper itself.
    max_head: usize,
    max_headers: usize,
}

impl<T> Framing<T> {
    pub fn new(inner: T, heads: Arc<Heads>, max_head: usize, max_headers: usize) -> Self {
        Framing {
            inner,
            heads,
            state: State::Head,
            buf: Vec::new(),
            count: 0,
            max_head,
            max_headers,
        }
    }

    /// Follows `bytes`, the next bytes read from the client.
    fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.state != State::Done {
            bytes = match self.state {
                State::Done => &[],
                State::Head => self.head(bytes),
                State::Body(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.state = if n == left {
                        State::Head
                    } else {
                        State::Body(left - n)
                    };
                    &bytes[n as usize..]
                }
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    // The chunk's last two bytes, its CRLF, are `left - i` = 2 and 1 bytes from its end.
                    let crlf = (left.saturating_sub(2)..n)
                        .all(|i| bytes[i as usize] == if left - i == 2 { b'\r' } else { b'\n' });
                    self.state = match left - n {
                        _ if !crlf => State::Done,
                        0 => State::ChunkSize,
                        more => State::ChunkData(more),
                    };
                    &bytes[n as usize..]
                }
                State::ChunkSize | State::Trailers => self.line(bytes),
            };
        }
        if self.state == State::Done {
            self.buf = Vec::new();
        }
    }

    /// Reads head bytes; at the end of the head, decides how its body is framed.
    fn head<'a>(&mut self, mut bytes: &'a [u8]) -> &'a [u8] {
        if self.buf.is_empty() {
            // The empty lines httparse skips before a request line.
            let skip = bytes
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            bytes = &bytes[skip..];
            match bytes.first() {
                None => return bytes,
                // Not a request method (the bytes of an upgraded connection, say): stop at once
                // rather than buffer a head that never ends.
                Some(&b) if !is_token(b) => {
                    self.state = State::Done;
                    return &[];
                }
                Some(_) => {}
            }
        }
        let old = self.buf.len();
        let room = (self.max_head + 1).saturating_sub(old);
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let from = old.saturating_sub(2);
        let Some(end) = head_end(&self.buf[from..]).map(|e| from + e) else {
            if self.buf.len() > self.max_head {
                self.state = State::Done;
            }
            return &[];
        };
        self.buf.truncate(end);
        self.state = self.frame_head();
        self.buf.clear();
        &bytes[end.saturating_sub(old)..]
    }

    /// The body framing of the complete head in `buf`, as hyper decides it.
    fn frame_head(&mut self) -> State {
        let mut headers = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(req.parse(&self.buf), Ok(httparse::Status::Complete(_))) {
            return State::Done;
        }
        self.count += 1;
        let (mut length, mut has_length, mut valid_length) = (None, false, true);
        let mut chunked = None;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                has_length = true;
                match content_length(h.value) {
                    Some(n) if length.is_none_or(|m| m == n) => length = Some(n),
                    // Refused by hyper unless `Transfer-Encoding` is also present.
                    _ => valid_length = false,
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = Some(last_coding_is_chunked(h.value));
            }
        }
        match (chunked, has_length) {
            (Some(_), true) => {
                self.heads.ambiguous.store(self.count, Ordering::Release);
                // hyper closes the connection after this request.
                State::Done
            }
            (Some(true), false) => State::ChunkSize,
            (Some(false), false) => State::Done,
            (None, _) if !valid_length => State::Done,
            (None, _) => match length {
                None | Some(0) => State::Head,
                Some(n) => State::Body(n),
            },
        }
    }

    /// Reads a chunk-size or trailer line.
    fn line<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        let (take, complete) = match bytes.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (bytes.len(), false),
        };
        self.buf.extend_from_slice(&bytes[..take]);
        if !complete {
            if self.buf.len() > MAX_LINE {
                self.state = State::Done;
            }
            return &[];
        }
        let Some(line) = self.buf.strip_suffix(b"\r\n") else {
            // hyper refuses a bare LF in chunked framing.
            self.state = State::Done;
            return &[];
        };
        self.state = match (self.state, chunk_size(line)) {
            (State::Trailers, _) if line.is_empty() => State::Head,
            (State::Trailers, _) => State::Trailers,
            (_, Some(0)) => State::Trailers,
            (_, Some(size)) => size.checked_add(2).map_or(State::Done, State::ChunkData),
            (_, None) => State::Done,
        };
        self.buf.clear();
        &bytes[take..]
    }
}

/// Where a head ends in `buf`: just after its empty line (CRLF or, as httparse accepts, bare LF).
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find_map(|i| match &buf[i..] {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

/// A `tchar` of RFC 9110 §5.6.2, which a method is made of.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A `Content-Length` value as hyper reads it: decimal digits only.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn last_coding_is_chunked(value: &[u8]) -> bool {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

/// A chunk-size line (without CRLF): hex digits, then optional whitespace and `;extensions`.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count()..];
    if !rest.is_empty() && rest[0] != b';' {
        return None;
    }
    line[..digits].iter().try_fold(0u64, |n, &b| {
        let d = char::from(b).to_digit(16)?;
        n.checked_mul(16)?.checked_add(u64::from(d))
    })
}

impl<T: AsyncRead + Unpin> AsyncRead for Framing<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.state != State::Done {
            this.follow(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Framing<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step` and returns which request (1-based) was ambiguous, if any.
    fn ambiguous_request(bytes: &[u8], step: usize) -> Option<u64> {
        let heads = Arc::new(Heads::default());
        let mut f = Framing::new((), heads.clone(), 8192, 100);
        for piece in bytes.chunks(step) {
            f.follow(piece);
        }
        (1..=8).find(|_| heads.next_is_ambiguous())
    }

    fn each_step(bytes: &str, want: Option<u64>) {
        for step in [1, 2, 3, 7, bytes.len()] {
            assert_eq!(
                ambiguous_request(bytes.as_bytes(), step),
                want,
                "{bytes:?} in pieces of {step}"
            );
        }
    }

    #[test]
    fn both_headers_in_either_order_are_found() {
        each_step(
            "POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Some(1),
        );
        each_step(
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: x\r\n\r\n",
            Some(1),
        );
    }

    #[test]
    fn pipelined_requests_are_followed_through_their_bodies() {
        // A body that looks like an ambiguous head is a body.
        let lookalike =
            "POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let bytes = format!(
            "\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
             POST /2 HTTP/1.1\r\nContent-Length: {}\r\n\r\n{lookalike}\
             POST /3 HTTP/1.1\nTransfer-Encoding: gzip, chunked\n\n\
             5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n\
             POST /4 HTTP/1.1\r\nContent-Length: 0\r\n\r\n\
             POST /5 HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            lookalike.len()
        );
        each_step(&bytes, Some(5));
    }

    #[test]
    fn honest_requests_are_not_ambiguous() {
        each_step(
            "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n\r\n",
            None,
        );
        each_step(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            None,
        );
    }

    #[test]
    fn what_hyper_refuses_ends_the_following() {
        // HTTP/2 prior knowledge, a bare LF in chunked framing, bad chunk data: nothing after is read.
        let after = "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for first in [
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokay\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ] {
            each_step(&format!("{first}{after}"), None);
        }
    }

    #[test]
    fn bytes_that_cannot_start_a_request_end_the_following_at_once() {
        // A WebSocket frame after `101`: nothing is buffered.
        let mut f = Framing::new((), Arc::new(Heads::default()), 8192, 100);
        f.follow(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x85");
        f.follow(&[b'x'; 4000]);
        assert_eq!(f.state, State::Done);
        assert_eq!(f.buf.capacity(), 0);
    }

    #[test]
    fn chunk_sizes_are_read_as_hyper_reads_them() {
        assert_eq!(chunk_size(b"1f"), Some(31));
        assert_eq!(chunk_size(b"A ;x=y"), Some(10));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"zz"), None);
        assert_eq!(chunk_size(b"5 x"), None);
        assert_eq!(chunk_size(b"fffffffffffffffffffff"), None);
        assert_eq!(content_length(b"12"), Some(12));
        assert_eq!(content_length(b"+1"), None);
        assert_eq!(content_length(b""), None);
    }
}
