//! The ClientHello reader of SSL passthrough over any bytes, as a connection's first bytes.
//!
//! - `peek` never panics, and once it has decided (a ClientHello, or invalid) no further byte changes
//!   the answer: every prefix of the input is either `Incomplete` or the same answer as the whole,
//!   which is what lets the listener decide on the bytes that have arrived.
//! - The same bytes cut into records of any size (as RFC 8446 allows) give the same answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::proxy::client_hello::{Hello, MAX_HELLO_BYTES, peek};

fn check_prefixes(data: &[u8]) -> Hello {
    let whole = peek(data);
    for cut in 0..data.len() {
        let early = peek(&data[..cut]);
        assert!(
            early == Hello::Incomplete || early == whole,
            "prefix of {cut} bytes: {early:?}, whole: {whole:?}"
        );
    }
    whole
}

/// The handshake bytes of `data` (after its first record header) in records of `size` bytes.
fn refragment(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.get(5..).unwrap_or_default().chunks(size) {
        out.extend([22, 3, 1]);
        out.extend((chunk.len() as u16).to_be_bytes());
        out.extend(chunk);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // Inputs past the largest ClientHello only repeat the prefix walk.
    let data = &data[..data.len().min(MAX_HELLO_BYTES + 64)];
    let whole = check_prefixes(data);
    // A single record whose payload is the whole rest: refragmenting it keeps the answer.
    let single =
        data.len() > 5 && usize::from(u16::from_be_bytes([data[3], data[4]])) == data.len() - 5;
    if single && data.len() < 4096 {
        let size = usize::from(data[5..].first().copied().unwrap_or(1)).max(1);
        let again = peek(&refragment(data, size));
        if let Hello::Complete { .. } = whole {
            assert_eq!(again, whole, "records of {size}");
        }
    }
});
