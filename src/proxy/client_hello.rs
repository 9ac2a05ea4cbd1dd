//! The server name (SNI) of a TLS ClientHello, read from the bytes a connection starts with, so that
//! SSL passthrough can choose where the connection goes before anything answers it. The bytes are only
//! looked at: the caller keeps them and replays them to whoever handles the connection (the backend,
//! or rustls for terminated hosts), so nothing here needs to be as strict as a TLS stack. Anything
//! that is not a well-formed ClientHello is `Invalid`, and the terminating path then refuses it as it
//! always has.

/// The largest ClientHello looked at: one is a few hundred bytes (a couple of KiB with post-quantum
/// key shares); a longer one is `Invalid`, so it is never passed through.
pub const MAX_HELLO_BYTES: usize = 32 * 1024;

/// TLS record content type `handshake`.
const HANDSHAKE: u8 = 22;
/// Handshake message type `client_hello`.
const CLIENT_HELLO: u8 = 1;
/// Extension `server_name` (RFC 6066 §3).
const SERVER_NAME: u16 = 0;
/// `NameType` `host_name`.
const HOST_NAME: u8 = 0;
/// The largest record payload (RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;

/// What the bytes read so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello may still follow: more bytes are needed to tell.
    Incomplete,
    /// A whole ClientHello, and the server name it asks for (lower-case, without a trailing dot).
    Complete { server_name: Option<String> },
    /// Not a TLS ClientHello, or one no further byte can make valid.
    Invalid,
}

/// Looks at the first bytes of a connection. Pure and total: any input gives an answer, and a longer
/// input that starts with the same bytes never changes a final one (`Complete`, `Invalid`). The
/// ClientHello may span several records (RFC 8446 §5.1 allows any fragmentation).
pub fn peek(buf: &[u8]) -> Hello {
    // The handshake message, reassembled from the records' payloads.
    let mut message: Vec<u8> = Vec::new();
    let mut rest = buf;
    loop {
        let Some(header) = rest.get(..5) else {
            return match header_is_plausible(rest) {
                true => Hello::Incomplete,
                false => Hello::Invalid,
            };
        };
        if !header_is_plausible(header) {
            return Hello::Invalid;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let body = &rest[5..];
        let payload = &body[..body.len().min(len)];
        message.extend_from_slice(payload);
        if let Some(answer) = message_so_far(&message) {
            return answer;
        }
        if payload.len() < len {
            return Hello::Incomplete;
        }
        rest = &body[len..];
    }
}

/// Whether the record header bytes seen (up to 5) can start a handshake record: content type 22,
/// version 3.x, a non-empty payload of at most 2^14 bytes.
fn header_is_plausible(header: &[u8]) -> bool {
    let fits = |i: usize, ok: &dyn Fn(u8) -> bool| header.get(i).is_none_or(|&b| ok(b));
    fits(0, &|b| b == HANDSHAKE)
        && fits(1, &|b| b == 3)
        && match header.get(3..5) {
            Some(len) => {
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                (1..=MAX_RECORD).contains(&len)
            }
            None => true,
        }
}

/// The answer once the handshake bytes decide it; `None` while more are needed.
fn message_so_far(message: &[u8]) -> Option<Hello> {
    let kind = *message.first()?;
    if kind != CLIENT_HELLO {
        return Some(Hello::Invalid);
    }
    let len = message.get(1..4)?;
    let len = usize::from(len[0]) << 16 | usize::from(len[1]) << 8 | usize::from(len[2]);
    if len + 4 > MAX_HELLO_BYTES {
        return Some(Hello::Invalid);
    }
    let body = message.get(4..4 + len)?;
    Some(match server_name(body) {
        Some(server_name) => Hello::Complete { server_name },
        None => Hello::Invalid,
    })
}

/// The `host_name` of a ClientHello body (RFC 8446 §4.1.2); `None` when the body is malformed.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vector(1)?; // legacy_session_id
    r.vector(2)?; // cipher_suites
    r.vector(1)?; // legacy_compression_methods
    if r.0.is_empty() {
        // A TLS 1.2 ClientHello may end here, without extensions.
        return Some(None);
    }
    let mut extensions = Reader(r.vector(2)?);
    if !r.0.is_empty() {
        return None;
    }
    let mut found = None;
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vector(2)?;
        if kind == SERVER_NAME && found.is_none() {
            found = Some(host_name(data)?);
        }
    }
    Some(found.flatten())
}

/// The `host_name` entry of a `server_name` extension.
fn host_name(data: &[u8]) -> Option<Option<String>> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vector(2)?);
    if !outer.0.is_empty() {
        return None;
    }
    let mut name = None;
    while !list.0.is_empty() {
        let kind = list.take(1)?[0];
        let entry = list.vector(2)?;
        if kind == HOST_NAME && name.is_none() {
            let text = std::str::from_utf8(entry).ok()?;
            if text.is_empty() || !text.is_ascii() {
                return None;
            }
            name = Some(text.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    Some(name)
}

/// Reads big-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a length prefix of `width` bytes (1 or 2).
    fn vector(&mut self, width: usize) -> Option<&'a [u8]> {
        let len = match width {
            1 => usize::from(self.take(1)?[0]),
            _ => usize::from(self.u16()?),
        };
        self.take(len)
    }
}

#[cfg(test)]
mod tests;
