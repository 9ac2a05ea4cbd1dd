//! Who the client is and how it reached us. Only peers in `trusted-proxies` may tell us through
//! `X-Forwarded-*` or `Forwarded` headers; from anyone else those headers are ignored and replaced.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::HeaderName;

use super::connection::{Connection, Scheme};
use crate::settings::Cidr;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The client as far as we can trust what we are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientView {
    /// The scheme the client used: ours, or what a trusted proxy says it received.
    pub scheme: Scheme,
    /// The client's address: the peer, or the nearest untrusted address a trusted proxy reports.
    pub ip: IpAddr,
    /// Whether the peer is a trusted proxy, whose forwarding headers are kept and extended.
    pub trusted_peer: bool,
}

impl ClientView {
    pub fn new(conn: &Connection, headers: &HeaderMap, trusted: &[Cidr]) -> ClientView {
        let peer = conn.peer.ip().to_canonical();
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|c| c.0.contains(ip));
        let own = ClientView {
            scheme: conn.scheme,
            ip: peer,
            trusted_peer: false,
        };
        if trusted.is_empty() || !is_trusted(&peer) {
            return own;
        }
        let forwarded = last_forwarded_element(headers);
        let scheme = first_value(headers, &X_FORWARDED_PROTO)
            .or_else(|| forwarded.as_ref().and_then(|f| f.proto.clone()))
            .map(|p| {
                if p.eq_ignore_ascii_case("https") {
                    Scheme::Https
                } else {
                    Scheme::Http
                }
            })
            .unwrap_or(conn.scheme);
        // The chain reads client, proxy1, proxy2…; walk back from our peer past trusted hops.
        let mut chain: Vec<IpAddr> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .collect();
        if chain.is_empty()
            && let Some(ip) = forwarded.and_then(|f| f.for_ip)
        {
            chain.push(ip);
        }
        let ip = chain
            .iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .or(chain.first())
            .copied()
            .unwrap_or(peer);
        ClientView {
            scheme,
            ip,
            trusted_peer: true,
        }
    }
}

/// The first comma-separated value of a header.
pub fn first_value(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    let first = value.split(',').next()?.trim();
    (!first.is_empty()).then(|| first.to_string())
}

struct ForwardedElement {
    proto: Option<String>,
    for_ip: Option<IpAddr>,
}

/// The element the nearest proxy added to an RFC 7239 `Forwarded` header.
fn last_forwarded_element(headers: &HeaderMap) -> Option<ForwardedElement> {
    let last_header = headers
        .get_all(&FORWARDED)
        .iter()
        .next_back()?
        .to_str()
        .ok()?;
    let element = last_header.rsplit(',').next()?;
    let mut out = ForwardedElement {
        proto: None,
        for_ip: None,
    };
    for pair in element.split(';') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "proto" => out.proto = Some(value.to_string()),
            "for" => {
                // for=192.0.2.1, for="[2001:db8::1]:4711", for=192.0.2.1:80
                let host = value
                    .strip_prefix('[')
                    .and_then(|v| v.split(']').next())
                    .unwrap_or(value);
                let host = if host.matches(':').count() == 1 {
                    host.split(':').next().unwrap_or(host)
                } else {
                    host
                };
                out.for_ip = host.parse().ok();
            }
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn conn(peer: &str, scheme: Scheme) -> Connection {
        Connection {
            peer: SocketAddr::new(peer.parse().unwrap(), 5555),
            proxied_by: None,
            local: "127.0.0.1:80".parse().unwrap(),
            scheme,
            client_cert: crate::proxy::connection::ClientCertificate::not_requested(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn trusted() -> Vec<Cidr> {
        vec![Cidr::parse("10.0.0.0/8").unwrap()]
    }

    #[test]
    fn untrusted_peers_cannot_claim_https_or_another_address() {
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        let v = ClientView::new(&conn("198.51.100.1", Scheme::Http), &h, &trusted());
        assert_eq!(
            v,
            ClientView {
                scheme: Scheme::Http,
                ip: "198.51.100.1".parse().unwrap(),
                trusted_peer: false
            }
        );
        let v = ClientView::new(&conn("10.1.1.1", Scheme::Http), &h, &[]);
        assert!(!v.trusted_peer, "nobody is trusted without trusted-proxies");
    }

    #[test]
    fn trusted_proxy_reports_scheme_and_client() {
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "203.0.113.9, 10.2.2.2"),
        ]);
        let v = ClientView::new(&conn("10.1.1.1", Scheme::Http), &h, &trusted());
        assert_eq!(
            v,
            ClientView {
                scheme: Scheme::Https,
                ip: "203.0.113.9".parse().unwrap(),
                trusted_peer: true
            }
        );
    }

    #[test]
    fn spoofed_entries_left_of_the_first_untrusted_hop_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.9"),
            ("x-forwarded-for", "10.3.3.3"),
        ]);
        let v = ClientView::new(&conn("10.1.1.1", Scheme::Https), &h, &trusted());
        assert_eq!(v.ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(v.scheme, Scheme::Https, "no header: the listener's scheme");
    }

    #[test]
    fn rfc7239_forwarded_is_understood() {
        let h = headers(&[(
            "forwarded",
            "for=198.51.100.1;proto=http, for=\"[2001:db8::1]:4711\";proto=https",
        )]);
        let v = ClientView::new(&conn("10.1.1.1", Scheme::Http), &h, &trusted());
        assert_eq!(v.scheme, Scheme::Https);
        assert_eq!(v.ip, "2001:db8::1".parse::<IpAddr>().unwrap());
    }
}
