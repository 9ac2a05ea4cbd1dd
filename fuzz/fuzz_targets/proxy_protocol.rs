//! The PROXY protocol reader over any bytes, as a connection's first bytes.
//!
//! - `parse` never panics, and once it has decided (a header, no header, or invalid) no further byte
//!   changes the answer: every prefix of the input is either `Incomplete` or the same answer as the
//!   whole, which is what lets the listener decide on the bytes that have arrived.
//! - A header's bytes alone parse to the same header, within `MAX_HEADER_BYTES`.
//! - v1 and v2 headers built from the input's addresses, ports, TLVs and trailing bytes parse back to
//!   that address, with the length written.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use portcullis::proxy::proxy_protocol::{MAX_HEADER_BYTES, Parsed, Version, parse};

fn check_prefixes(data: &[u8]) -> Parsed {
    let whole = parse(data);
    if let Parsed::Header(h) = whole {
        assert!(h.len <= data.len() && h.len <= MAX_HEADER_BYTES, "{h:?}");
        assert_eq!(parse(&data[..h.len]), whole);
    }
    for cut in 0..data.len() {
        let early = parse(&data[..cut]);
        assert!(
            early == Parsed::Incomplete || early == whole,
            "prefix of {cut} bytes: {early:?}, whole: {whole:?}"
        );
    }
    whole
}

/// Addresses, ports and TLVs taken from the input.
struct Taken<'a>(&'a [u8]);

impl Taken<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let n = self.0.len().min(N);
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
}

fn check_built(data: &[u8]) {
    let mut t = Taken(data);
    let [flags] = t.bytes::<1>();
    let v6 = flags & 1 == 1;
    let (src, dst) = if v6 {
        (
            IpAddr::V6(Ipv6Addr::from(t.bytes::<16>())),
            IpAddr::V6(Ipv6Addr::from(t.bytes::<16>())),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::from(t.bytes::<4>())),
            IpAddr::V4(Ipv4Addr::from(t.bytes::<4>())),
        )
    };
    let sport = u16::from_be_bytes(t.bytes::<2>());
    let dport = u16::from_be_bytes(t.bytes::<2>());
    let [tlv_count] = t.bytes::<1>();
    let mut tlvs = Vec::new();
    for _ in 0..tlv_count % 8 {
        let [kind, len] = t.bytes::<2>();
        let value = &t.0[..t.0.len().min(usize::from(len))];
        t.0 = &t.0[value.len()..];
        tlvs.push(kind);
        tlvs.extend((value.len() as u16).to_be_bytes());
        tlvs.extend(value);
    }
    let rest = t.0;
    let source = Some(SocketAddr::new(src, sport));

    let family = if v6 { "TCP6" } else { "TCP4" };
    let mut v1 = format!("PROXY {family} {src} {dst} {sport} {dport}\r\n").into_bytes();
    let v1_len = v1.len();
    v1.extend(rest);
    match check_prefixes(&v1) {
        Parsed::Header(h) => {
            assert_eq!((h.len, h.version, h.source), (v1_len, Version::V1, source))
        }
        other => panic!("v1 {:?}: {other:?}", String::from_utf8_lossy(&v1[..v1_len])),
    }

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21".to_vec();
    let mut addresses = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            v2.push(0x11);
            addresses.extend(s.octets());
            addresses.extend(d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            v2.push(0x21);
            addresses.extend(s.octets());
            addresses.extend(d.octets());
        }
        _ => unreachable!("both of one family"),
    }
    addresses.extend(sport.to_be_bytes());
    addresses.extend(dport.to_be_bytes());
    let payload = addresses.len() + tlvs.len();
    v2.extend((payload as u16).to_be_bytes());
    v2.extend(addresses);
    v2.extend(&tlvs);
    let v2_len = v2.len();
    v2.extend(rest);
    match check_prefixes(&v2) {
        Parsed::Header(h) => {
            assert_eq!((h.len, h.version, h.source), (v2_len, Version::V2, source))
        }
        other => panic!("v2 of {v2_len} bytes: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // Inputs past a few KiB only repeat the prefix walk.
    let data = &data[..data.len().min(MAX_HEADER_BYTES + 64)];
    check_prefixes(data);
    check_built(data);
});
