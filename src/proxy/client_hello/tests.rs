use std::sync::Arc;

use super::{Hello, MAX_HELLO_BYTES, peek};

/// A ClientHello `openssl s_client -servername Pass.Example.COM -alpn h2,http/1.1` sent (OpenSSL 3.0).
const OPENSSL: &[u8] = include_bytes!("openssl-3.0.bin");

/// The first flight of a rustls client for `server_name`, as it goes on the wire.
fn rustls_hello(server_name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write");
    }
    out
}

fn named(name: &str) -> Hello {
    Hello::Complete {
        server_name: Some(name.to_string()),
    }
}

/// The same handshake message cut into records of at most `size` bytes each.
fn refragment(hello: &[u8], size: usize) -> Vec<u8> {
    let message = &hello[5..];
    let mut out = Vec::new();
    for chunk in message.chunks(size) {
        out.extend([22, 3, 1]);
        out.extend((chunk.len() as u16).to_be_bytes());
        out.extend(chunk);
    }
    out
}

#[test]
fn reads_the_server_name_openssl_sends_in_lower_case() {
    assert_eq!(peek(OPENSSL), named("pass.example.com"));
}

#[test]
fn reads_the_server_name_rustls_sends() {
    assert_eq!(
        peek(&rustls_hello("app.example.com")),
        named("app.example.com")
    );
}

#[test]
fn a_hello_without_server_name_is_complete_and_unnamed() {
    // rustls sends no SNI for an IP address.
    assert_eq!(
        peek(&rustls_hello("127.0.0.1")),
        Hello::Complete { server_name: None }
    );
}

#[test]
fn every_prefix_of_a_hello_is_incomplete() {
    for cut in 0..OPENSSL.len() {
        assert_eq!(peek(&OPENSSL[..cut]), Hello::Incomplete, "cut at {cut}");
    }
}

#[test]
fn bytes_after_the_hello_do_not_change_the_answer() {
    let mut more = OPENSSL.to_vec();
    more.extend(b"\x14\x03\x03\x00\x01\x01garbage");
    assert_eq!(peek(&more), named("pass.example.com"));
}

#[test]
fn a_hello_fragmented_over_many_records_is_reassembled() {
    for size in [1, 2, 7, 64, 200] {
        let fragmented = refragment(OPENSSL, size);
        assert_eq!(
            peek(&fragmented),
            named("pass.example.com"),
            "records of {size}"
        );
        for cut in 0..fragmented.len() {
            assert_eq!(
                peek(&fragmented[..cut]),
                Hello::Incomplete,
                "{size}: cut {cut}"
            );
        }
    }
}

#[test]
fn plain_http_and_other_records_are_invalid_at_once() {
    assert_eq!(peek(b"GET / HTTP/1.1\r\n"), Hello::Invalid);
    assert_eq!(peek(b"G"), Hello::Invalid);
    // An alert record, an SSLv2-style hello, a record of length 0 and one above 2^14.
    assert_eq!(peek(b"\x15\x03\x03\x00\x02\x02\x28"), Hello::Invalid);
    assert_eq!(peek(b"\x80\x2e\x01\x00\x02"), Hello::Invalid);
    assert_eq!(peek(b"\x16\x03\x01\x00\x00"), Hello::Invalid);
    assert_eq!(peek(b"\x16\x03\x01\x40\x01"), Hello::Invalid);
}

#[test]
fn a_handshake_that_is_not_a_client_hello_is_invalid() {
    let mut server_hello = OPENSSL.to_vec();
    server_hello[5] = 2;
    assert_eq!(peek(&server_hello), Hello::Invalid);
}

#[test]
fn a_hello_longer_than_the_limit_is_invalid() {
    let len = MAX_HELLO_BYTES as u32;
    let bytes = [
        0x16,
        3,
        1,
        0,
        4,
        1,
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
    ];
    assert_eq!(peek(&bytes), Hello::Invalid);
}

#[test]
fn lengths_that_overrun_their_container_are_invalid() {
    // Every single-byte change in the body either still parses or is refused; none panics, and a
    // change inside the server name entry's lengths is refused.
    for i in 9..OPENSSL.len() {
        for delta in [1u8, 0x7f, 0xff] {
            let mut bytes = OPENSSL.to_vec();
            bytes[i] = bytes[i].wrapping_add(delta);
            let _ = peek(&bytes);
        }
    }
    let sni = OPENSSL
        .windows(16)
        .position(|w| w == b"Pass.Example.COM")
        .expect("name in fixture");
    let mut bytes = OPENSSL.to_vec();
    // The host_name entry's length (the two bytes before the name) says one byte more.
    bytes[sni - 1] += 1;
    assert_eq!(peek(&bytes), Hello::Invalid);
}

#[test]
fn a_non_ascii_server_name_is_invalid() {
    let sni = OPENSSL
        .windows(16)
        .position(|w| w == b"Pass.Example.COM")
        .expect("name in fixture");
    let mut bytes = OPENSSL.to_vec();
    bytes[sni] = 0xc3;
    assert_eq!(peek(&bytes), Hello::Invalid);
}
