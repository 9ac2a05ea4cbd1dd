use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header: command (0x20 LOCAL, 0x21 PROXY), family/protocol byte, address bytes, TLV bytes.
fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(command);
    out.push(family);
    let len = u16::try_from(addresses.len() + tlvs.len()).unwrap();
    out.extend(len.to_be_bytes());
    out.extend(addresses);
    out.extend(tlvs);
    out
}

fn v2_tcp4(tlvs: &[u8]) -> Vec<u8> {
    // 203.0.113.9:4711 → 10.0.0.1:443
    v2(
        0x21,
        0x11,
        &[203, 0, 113, 9, 10, 0, 0, 1, 0x12, 0x67, 0x01, 0xbb],
        tlvs,
    )
}

fn v2_tcp6() -> Vec<u8> {
    let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
    let dst: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut addresses = src.octets().to_vec();
    addresses.extend(dst.octets());
    addresses.extend(4711u16.to_be_bytes());
    addresses.extend(443u16.to_be_bytes());
    v2(0x21, 0x21, &addresses, &[])
}

fn header(parsed: Parsed) -> Header {
    match parsed {
        Parsed::Header(h) => h,
        other => panic!("not a header: {other:?}"),
    }
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn v1_headers_name_the_client() {
    let line = b"PROXY TCP4 203.0.113.9 10.0.0.1 4711 80\r\nGET / HTTP/1.1\r\n";
    let h = header(parse(line));
    assert_eq!(h.len, 41);
    assert_eq!(h.version, Version::V1);
    assert_eq!(h.source, addr("203.0.113.9:4711"));
    let h = header(parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n"));
    assert_eq!(h.source, addr("[2001:db8::7]:4711"));
    let h = header(parse(b"PROXY UNKNOWN\r\n"));
    assert_eq!((h.len, h.source), (15, None));
}

#[test]
fn v2_headers_name_the_client_and_skip_tlvs() {
    let h = header(parse(&v2_tcp4(&[])));
    assert_eq!((h.len, h.version), (28, Version::V2));
    assert_eq!(h.source, addr("203.0.113.9:4711"));
    assert_eq!(header(parse(&v2_tcp6())).source, addr("[2001:db8::7]:4711"));
    // ALPN "h2" and a NOOP TLV, then the client's bytes.
    let mut with_tlvs = v2_tcp4(&[0x01, 0, 2, b'h', b'2', 0x04, 0, 1, 0]);
    let len = with_tlvs.len();
    with_tlvs.extend(b"\x16\x03\x01");
    let h = header(parse(&with_tlvs));
    assert_eq!(h.len, len);
    assert_eq!(h.source, addr("203.0.113.9:4711"));
}

#[test]
fn local_commands_and_other_families_have_no_address() {
    let local = v2(0x20, 0x11, &[127, 0, 0, 1, 127, 0, 0, 1, 0, 1, 0, 2], &[]);
    assert_eq!(header(parse(&local)).source, None);
    assert_eq!(header(parse(&v2(0x20, 0x00, &[], &[]))).source, None);
    let udp = v2(0x21, 0x12, &[203, 0, 113, 9, 10, 0, 0, 1, 0, 1, 0, 2], &[]);
    assert_eq!(header(parse(&udp)).source, None);
    let unix = v2(0x21, 0x31, &[0; 216], &[]);
    assert_eq!(header(parse(&unix)).source, None);
}

#[test]
fn client_bytes_are_not_headers() {
    for start in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01",
        b"\r\nGET / HTTP/1.1\r\n",
        b"PROXZ",
    ] {
        assert_eq!(parse(start), Parsed::Absent, "{start:?}");
    }
}

#[test]
fn every_prefix_of_a_header_is_incomplete() {
    let v1 = b"PROXY TCP4 203.0.113.9 10.0.0.1 4711 80\r\n".to_vec();
    let v1_6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n".to_vec();
    for whole in [v1, v1_6, v2_tcp4(&[0x04, 0, 3, 1, 2, 3]), v2_tcp6()] {
        for cut in 0..whole.len() {
            assert_eq!(
                parse(&whole[..cut]),
                Parsed::Incomplete,
                "{:?}",
                String::from_utf8_lossy(&whole[..cut])
            );
        }
        assert!(matches!(parse(&whole), Parsed::Header(_)));
    }
}

#[test]
fn broken_headers_are_refused_with_their_reason() {
    for bad in [
        &b"PROXY TCP4 203.0.113.999 10.0.0.1 4711 80\r\n"[..],
        b"PROXY TCP4 203.0.113.9 10.0.0.1 99999 80\r\n",
        b"PROXY TCP5 203.0.113.9 10.0.0.1 1 80\r\n",
        b"PROXY TCP4 203.0.113.9 10.0.0.1 4711 80\n",
        b"PROXY \xff\r\n",
    ] {
        assert_eq!(
            parse(bad),
            Parsed::Invalid(Refusal::Malformed),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let mut long = b"PROXY TCP4 ".to_vec();
    long.resize(200, b'1');
    assert_eq!(parse(&long), Parsed::Invalid(Refusal::TooLarge));
    // A TLV that claims more bytes than the header has.
    let bad_tlv = v2_tcp4(&[0x04, 0, 9, 1]);
    assert_eq!(parse(&bad_tlv), Parsed::Invalid(Refusal::Malformed));
    let mut version_3 = v2_tcp4(&[]);
    version_3[12] = 0x31;
    assert_eq!(parse(&version_3), Parsed::Invalid(Refusal::Malformed));
    // Refused from the length field alone, before the bytes arrive.
    let mut huge = v2_tcp4(&[]);
    huge[14..16].copy_from_slice(&(MAX_HEADER_BYTES as u16).to_be_bytes());
    assert_eq!(parse(&huge[..16]), Parsed::Invalid(Refusal::TooLarge));
}

/// Writes `chunks` to one end of a pipe, with a pause between them, and reads the start at the other.
async fn read_in_chunks(chunks: Vec<Vec<u8>>, required: bool) -> (Result<Start, Refusal>, Vec<u8>) {
    let (mut client, mut server) = tokio::io::duplex(64 << 10);
    let writer = tokio::spawn(async move {
        for chunk in chunks {
            client.write_all(&chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        client.shutdown().await.unwrap();
    });
    let start = read_start(&mut server, required, Duration::from_secs(5)).await;
    let mut rest = Vec::new();
    if start.is_ok() {
        server.read_to_end(&mut rest).await.unwrap();
    }
    writer.await.unwrap();
    (start, rest)
}

#[tokio::test(start_paused = true)]
async fn a_header_dribbled_byte_by_byte_is_read_and_the_rest_kept() {
    let mut bytes = v2_tcp6();
    bytes.extend(b"GET / HTTP/1.1\r\n\r\n");
    let chunks = bytes.iter().map(|b| vec![*b]).collect();
    let (start, rest) = read_in_chunks(chunks, true).await;
    let Ok(Start::Header(header, read_ahead)) = start else {
        panic!("{start:?}");
    };
    assert_eq!(header.source, addr("[2001:db8::7]:4711"));
    let mut client_bytes = read_ahead;
    client_bytes.extend(rest);
    assert_eq!(client_bytes, b"GET / HTTP/1.1\r\n\r\n");
}

#[tokio::test(start_paused = true)]
async fn optional_hands_back_the_clients_first_bytes() {
    let (start, rest) =
        read_in_chunks(vec![b"GE".to_vec(), b"T / HTTP/1.1\r\n".to_vec()], false).await;
    let Ok(Start::Absent(read)) = start else {
        panic!("{start:?}");
    };
    assert_eq!([read, rest].concat(), b"GET / HTTP/1.1\r\n");
}

#[tokio::test(start_paused = true)]
async fn required_refuses_missing_truncated_and_slow_headers() {
    let (start, _) = read_in_chunks(vec![b"GET / HTTP/1.1\r\n".to_vec()], true).await;
    assert_eq!(start.unwrap_err(), Refusal::Missing);
    let (start, _) = read_in_chunks(vec![b"PROXY TCP4 203.0.113.9".to_vec()], true).await;
    assert_eq!(start.unwrap_err(), Refusal::Truncated);
    let (start, _) = read_in_chunks(vec![v2_tcp4(&[])[..20].to_vec()], false).await;
    assert_eq!(start.unwrap_err(), Refusal::Truncated);
    let (start, _) = read_in_chunks(vec![], true).await;
    assert!(matches!(start, Ok(Start::Closed)), "{start:?}");

    let (_client, mut server) = tokio::io::duplex(1024);
    let start = read_start(&mut server, false, Duration::from_secs(1)).await;
    assert_eq!(start.unwrap_err(), Refusal::Timeout);
}

#[tokio::test]
async fn prefixed_streams_replay_then_read_on() {
    let (mut client, server) = tokio::io::duplex(1024);
    client.write_all(b" world").await.unwrap();
    drop(client);
    let mut stream = Prefixed::new(b"hello".to_vec(), server);
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "hello world");
}

#[tokio::test]
async fn a_recording_stream_replays_what_it_yielded_then_the_rest() {
    let (mut client, server) = tokio::io::duplex(1024);
    client.write_all(b"lo, client").await.unwrap();
    let mut stream = Prefixed::new(b"hel".to_vec(), server);
    stream.record();
    let mut first = [0u8; 2];
    stream.read_exact(&mut first).await.unwrap();
    let mut next = [0u8; 4];
    stream.read_exact(&mut next).await.unwrap();
    assert_eq!((&first, &next), (b"he", b"llo,"));
    client.write_all(b"!").await.unwrap();
    drop(client);
    let mut replayed = String::new();
    stream
        .into_replay()
        .read_to_string(&mut replayed)
        .await
        .unwrap();
    assert_eq!(replayed, "hello, client!");
}

#[tokio::test]
async fn a_stream_no_longer_recording_keeps_nothing() {
    let (mut client, server) = tokio::io::duplex(1024);
    client.write_all(b"abc").await.unwrap();
    drop(client);
    let mut stream = Prefixed::new(Vec::new(), server);
    stream.record();
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await.unwrap();
    stream.stop_recording();
    let mut rest = String::new();
    stream
        .into_replay()
        .read_to_string(&mut rest)
        .await
        .unwrap();
    assert_eq!(rest, "bc");
}
