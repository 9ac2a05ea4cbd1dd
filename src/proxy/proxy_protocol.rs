//! The PROXY protocol (HAProxy's v1 text and v2 binary headers) that TCP load balancers send ahead of
//! the client's bytes, read on the HTTP and HTTPS listeners before HTTP or TLS. The bytes are parsed by
//! the `ppp` crate; this module decides how much to read and for how long, what a header says about
//! the client, and why a connection is refused. A header's address replaces the TCP peer's only when
//! the listener found that peer in `trusted-proxies`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ppp::PartialResult;
use ppp::{v1, v2};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::metrics::Metrics;
use crate::settings::ProxyProtocol;

/// The largest header accepted, TLVs included. A v1 header is at most 107 bytes; a v2 header from a
/// cloud load balancer carries a few small TLVs (a VPC endpoint or link id, ALPN, authority), well
/// under this.
pub const MAX_HEADER_BYTES: usize = 4096;

/// The longest wait for a header (shortened to `header-read-timeout` when that is shorter): a load
/// balancer sends it together with the connection, so only a broken or hostile sender takes long.
pub const MAX_WAIT: Duration = Duration::from_secs(3);

/// The v2 signature; a connection whose first bytes could start it is read as a v2 header.
const V2_SIGNATURE: &[u8] = v2::PROTOCOL_PREFIX;
/// What every v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included.
const V1_MAX_BYTES: usize = 107;
/// Signature, version/command, family/protocol and the two length bytes.
const V2_FIXED_BYTES: usize = 16;
/// Enough for every v1 header and a v2 header with IPv6 addresses and no TLV, in one read.
const FIRST_READ_BYTES: usize = 128;

/// Which version a header was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A complete, valid header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Its length in bytes, all of which belong to it; the client's bytes follow.
    pub len: usize,
    pub version: Version,
    /// The client's address and port, for a v1 `TCP4`/`TCP6` or a v2 `PROXY` header of TCP over IPv4
    /// or IPv6; `None` for v1 `UNKNOWN`, v2 `LOCAL` (the load balancer's own health check) and the
    /// families that have no TCP address (UNIX sockets, UDP, unspecified).
    pub source: Option<SocketAddr>,
}

/// Why a connection was closed while its header was read (a label of
/// `portcullis_proxy_protocol_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `required`, and the connection did not start with a header.
    #[error("the connection does not start with a PROXY protocol header")]
    Missing,
    /// The header is not valid (bad signature tail, version, command, address, port, line end, TLV).
    #[error("malformed PROXY protocol header")]
    Malformed,
    /// The connection ended (or failed) in the middle of the header.
    #[error("the connection ended inside its PROXY protocol header")]
    Truncated,
    /// Longer than a v1 line may be, or than [`MAX_HEADER_BYTES`].
    #[error("PROXY protocol header too large")]
    TooLarge,
    /// The header did not arrive in time.
    #[error("the PROXY protocol header did not arrive in time")]
    Timeout,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::Missing,
        Refusal::Malformed,
        Refusal::Truncated,
        Refusal::TooLarge,
        Refusal::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Truncated => "truncated",
            Refusal::TooLarge => "too_large",
            Refusal::Timeout => "timeout",
        }
    }
}

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    Header(Header),
    /// Not a PROXY header: the client's own first bytes (an HTTP request, a TLS ClientHello).
    Absent,
    /// A header may still follow: more bytes are needed to tell.
    Incomplete,
    /// A header, but one that no further byte can make valid.
    Invalid(Refusal),
}

/// Looks at the bytes read so far. Pure and total: any input gives an answer, and a longer input
/// that starts with the same bytes never changes a final one (`Header`, `Absent`, `Invalid`).
pub fn parse(buf: &[u8]) -> Parsed {
    if starts_like(buf, V2_SIGNATURE) {
        parse_v2(buf)
    } else if starts_like(buf, V1_PREFIX) {
        parse_v1(buf)
    } else {
        Parsed::Absent
    }
}

/// Whether `buf` and `prefix` agree on the bytes both have.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

fn parse_v1(buf: &[u8]) -> Parsed {
    // The header is the first line, and the answer depends on it alone: the parser is given that
    // line only once it is complete (cut after `… 80 ` it would call the missing port invalid).
    let window = &buf[..buf.len().min(V1_MAX_BYTES)];
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX_BYTES {
            Parsed::Invalid(Refusal::TooLarge)
        } else {
            Parsed::Incomplete
        };
    };
    let line = &buf[..=end];
    if !line.ends_with(b"\r\n") {
        return Parsed::Invalid(Refusal::Malformed);
    }
    let header = match v1::Header::try_from(line) {
        Ok(header) if header.header.len() == line.len() => header,
        _ => return Parsed::Invalid(Refusal::Malformed),
    };
    let source = match header.addresses {
        v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        v1::Addresses::Tcp6(a) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        v1::Addresses::Unknown => None,
    };
    Parsed::Header(Header {
        len: line.len(),
        version: Version::V1,
        source,
    })
}

fn parse_v2(buf: &[u8]) -> Parsed {
    // The length is known from the fixed part: refuse an oversized header before reading it.
    if let Some(len) = buf.get(V2_FIXED_BYTES - 2..V2_FIXED_BYTES) {
        let total = V2_FIXED_BYTES + usize::from(u16::from_be_bytes([len[0], len[1]]));
        if total > MAX_HEADER_BYTES {
            return Parsed::Invalid(Refusal::TooLarge);
        }
    }
    let header = match v2::Header::try_from(buf) {
        Ok(header) => header,
        Err(e) if e.is_incomplete() => return Parsed::Incomplete,
        Err(_) => return Parsed::Invalid(Refusal::Malformed),
    };
    // TLVs are skipped, but they must tile the rest of the header exactly.
    if header.tlvs().any(|tlv| tlv.is_err()) {
        return Parsed::Invalid(Refusal::Malformed);
    }
    let source = match (header.command, header.protocol, header.addresses) {
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        _ => None,
    };
    Parsed::Header(Header {
        len: header.len(),
        version: Version::V2,
        source,
    })
}

/// What reading the start of a connection gave.
#[derive(Debug)]
pub enum Start {
    /// A valid header, and the bytes read after it.
    Header(Header, Vec<u8>),
    /// No header (`optional`): every byte read belongs to the client.
    Absent(Vec<u8>),
    /// The connection closed before sending anything (a health check's connect and close).
    Closed,
}

/// Reads a header from the start of `io`. With `required`, a connection that does not start with one
/// is refused; otherwise its first bytes are handed back for HTTP or TLS. Reads at most what decides,
/// plus whatever else the first reads return.
pub async fn read_start<S: AsyncRead + Unpin>(
    io: &mut S,
    required: bool,
    wait: Duration,
) -> Result<Start, Refusal> {
    let read = async {
        let mut buf = Vec::with_capacity(FIRST_READ_BYTES);
        loop {
            match parse(&buf) {
                Parsed::Header(header) => {
                    let rest = buf.split_off(header.len);
                    return Ok(Start::Header(header, rest));
                }
                Parsed::Absent if required => return Err(Refusal::Missing),
                Parsed::Absent => return Ok(Start::Absent(buf)),
                Parsed::Invalid(refusal) => return Err(refusal),
                Parsed::Incomplete => {}
            }
            if buf.len() == buf.capacity() {
                buf.reserve(want(&buf).saturating_sub(buf.len()).max(1));
            }
            match io.read_buf(&mut buf).await {
                Ok(0) if buf.is_empty() => return Ok(Start::Closed),
                Ok(0) | Err(_) => return Err(Refusal::Truncated),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(wait, read)
        .await
        .unwrap_or(Err(Refusal::Timeout))
}

/// How many bytes the header being read has, as far as is known: a v2 header says; a v1 header is
/// found by its line end.
fn want(buf: &[u8]) -> usize {
    match buf.get(V2_FIXED_BYTES - 2..V2_FIXED_BYTES) {
        Some(len) if starts_like(buf, V2_SIGNATURE) => {
            V2_FIXED_BYTES + usize::from(u16::from_be_bytes([len[0], len[1]]))
        }
        _ => FIRST_READ_BYTES,
    }
}

/// How the listener reads headers on the connections it accepts now (the mode is live-reloadable).
pub struct Reading {
    pub mode: ProxyProtocol,
    /// Whether the TCP peer is in `trusted-proxies`: only then is a header's address believed.
    pub peer_trusted: bool,
    pub wait: Duration,
    pub counters: Arc<Counters>,
}

/// Who is at the other end of a connection, after its PROXY header (if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The client: the TCP peer, or the source a trusted header reports.
    pub peer: SocketAddr,
    /// The TCP peer when a trusted header replaced it (the load balancer).
    pub proxied_by: Option<SocketAddr>,
}

/// Reads the connection's PROXY header as `reading` says and tells who the client is; `None` when the
/// connection is refused (counted and logged) or closed before sending anything.
pub async fn accept(
    mut tcp: TcpStream,
    peer: SocketAddr,
    reading: &Reading,
) -> Option<(Prefixed<TcpStream>, Origin)> {
    let direct = Origin {
        peer,
        proxied_by: None,
    };
    let required = match reading.mode {
        ProxyProtocol::Off => return Some((Prefixed::new(Vec::new(), tcp), direct)),
        ProxyProtocol::Optional => false,
        ProxyProtocol::Required => true,
    };
    match read_start(&mut tcp, required, reading.wait).await {
        Ok(Start::Header(header, rest)) => {
            let origin = match header.source {
                Some(source) if reading.peer_trusted => Origin {
                    peer: source,
                    proxied_by: Some(peer),
                },
                _ => direct,
            };
            let trust = match (reading.peer_trusted, header.source) {
                (false, _) => Trust::Untrusted,
                (true, Some(_)) => Trust::Accepted,
                (true, None) => Trust::Local,
            };
            reading.counters.header(header.version, trust);
            if trust == Trust::Untrusted {
                tracing::debug!(%peer, "PROXY protocol header from a peer outside trusted-proxies; ignored");
            }
            Some((Prefixed::new(rest, tcp), origin))
        }
        Ok(Start::Absent(read)) => Some((Prefixed::new(read, tcp), direct)),
        Ok(Start::Closed) => None,
        Err(refusal) => {
            reading.counters.refused(refusal);
            tracing::debug!(%peer, reason = refusal.as_str(), "connection refused: {refusal}");
            None
        }
    }
}

/// What was made of a valid header (the `result` label of `portcullis_proxy_protocol_headers_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// From a trusted peer, with a client address: the address is used.
    Accepted,
    /// From a trusted peer, without an address (`LOCAL`, `UNKNOWN`): the peer's is used.
    Local,
    /// From a peer outside `trusted-proxies`: consumed and ignored.
    Untrusted,
}

impl Trust {
    const ALL: [Trust; 3] = [Trust::Accepted, Trust::Local, Trust::Untrusted];

    fn as_str(self) -> &'static str {
        match self {
            Trust::Accepted => "accepted",
            Trust::Local => "local",
            Trust::Untrusted => "untrusted",
        }
    }
}

/// The PROXY protocol series of one listener, resolved when it starts (so every one shows, at 0).
pub struct Counters {
    /// By version (1, 2), then by [`Trust`].
    headers: [[IntCounter; 3]; 2],
    /// By [`Refusal`].
    refused: [IntCounter; 5],
}

impl Counters {
    pub fn new(metrics: &Metrics, listener: &str) -> Counters {
        Counters {
            headers: ["1", "2"].map(|version| {
                Trust::ALL.map(|t| metrics.proxy_protocol_header(listener, version, t.as_str()))
            }),
            refused: Refusal::ALL.map(|r| metrics.proxy_protocol_refused(listener, r.as_str())),
        }
    }

    fn header(&self, version: Version, trust: Trust) {
        let by_version = match version {
            Version::V1 => &self.headers[0],
            Version::V2 => &self.headers[1],
        };
        by_version[trust as usize].inc();
    }

    fn refused(&self, refusal: Refusal) {
        self.refused[refusal as usize].inc();
    }
}

/// A stream that first yields bytes already read from it (those after a PROXY header, or the
/// client's first bytes when there was none), then reads on. While recording, it also keeps a copy
/// of every byte it yields, so they can be replayed: SSL passthrough lets rustls read the
/// ClientHello, then hands the recorded bytes to the backend.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    offset: usize,
    recorded: Option<Vec<u8>>,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            offset: 0,
            recorded: None,
            inner,
        }
    }

    /// Keeps a copy of the bytes yielded from now on, until `stop_recording` or `into_replay`.
    pub fn record(&mut self) {
        self.recorded = Some(Vec::new());
    }

    pub fn stop_recording(&mut self) {
        self.recorded = None;
    }

    /// A stream that yields the recorded bytes again, then the rest.
    pub fn into_replay(self) -> Prefixed<S> {
        let mut replay = self.recorded.unwrap_or_default();
        replay.extend_from_slice(&self.prefix[self.offset..]);
        Prefixed::new(replay, self.inner)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if this.offset < this.prefix.len() {
            let rest = &this.prefix[this.offset..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.offset += n;
            if this.offset == this.prefix.len() {
                this.prefix = Vec::new();
                this.offset = 0;
            }
        } else {
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        }
        if let Some(recorded) = &mut this.recorded {
            recorded.extend_from_slice(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
