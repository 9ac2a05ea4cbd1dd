//! Global policy from `--config FILE` (YAML, strict: unknown keys are errors), with a JSON Schema
//! generated from these types. Everything has a safe default, so an empty file (or none) is valid.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::vocab::NamespacedName;

mod acme;
pub use acme::{AcmeSettings, Challenge, ExternalAccountBinding, Issuer};

/// Everything `--config` can set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Plain-HTTP to HTTPS redirects.
    pub redirect: RedirectSettings,
    /// `Strict-Transport-Security` on HTTPS responses for hosts with a certificate; Ingresses can
    /// override it with the `portcullis.io/hsts*` annotations.
    pub hsts: HstsSettings,
    pub tls: TlsSettings,
    /// Peers (CIDRs, e.g. your cloud load balancer) whose `X-Forwarded-For`, `X-Forwarded-Proto`,
    /// `X-Forwarded-Port` and `Forwarded` headers are believed. With `X-Forwarded-Proto: https` from a
    /// trusted peer, a request counts as secure: no redirect, so no loop behind a TLS-terminating load
    /// balancer. Headers from anyone else are replaced. The same list decides whose PROXY protocol
    /// headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The PROXY protocol (v1 or v2) on the HTTP and HTTPS listeners, as a TCP load balancer sends it
    /// ahead of the client's bytes: `off`, `optional` (used when present) or `required` (connections
    /// without a valid header are closed). The address in a header is believed only from a peer in
    /// `trusted-proxies`. Applies to connections accepted after a change.
    pub proxy_protocol: ProxyProtocol,
    /// Defaults for talking to backends; Ingresses can override them with annotations.
    pub upstream: UpstreamSettings,
    /// Limits that protect the proxy from hostile or broken clients.
    pub limits: Limits,
    /// ACME certificate authorities for Ingresses annotated `portcullis.io/acme` (docs/acme.md).
    pub acme: AcmeSettings,
}

/// Whether connections start with a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyProtocol {
    /// No header is expected; a connection that sends one gets `400` (or a failed handshake).
    #[default]
    Off,
    /// A header is read when the connection starts with one; other connections are served as usual.
    Optional,
    /// Every connection must start with a valid header; others are closed before anything is read.
    Required,
}

impl ProxyProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyProtocol::Off => "off",
            ProxyProtocol::Optional => "optional",
            ProxyProtocol::Required => "required",
        }
    }
}

impl JsonSchema for ProxyProtocol {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProxyProtocol".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // YAML 1.1 readers (Helm's among them) turn an unquoted `off` into `false`; booleans are
        // accepted as ingress-nginx's `use-proxy-protocol` means them.
        schemars::json_schema!({ "enum": ["off", "optional", "required", false, true] })
    }
}

impl<'de> Deserialize<'de> for ProxyProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = ProxyProtocol;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("off, optional or required")
            }

            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ProxyProtocol, E> {
                Ok(if v {
                    ProxyProtocol::Required
                } else {
                    ProxyProtocol::Off
                })
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProxyProtocol, E> {
                match v {
                    "off" => Ok(ProxyProtocol::Off),
                    "optional" => Ok(ProxyProtocol::Optional),
                    "required" => Ok(ProxyProtocol::Required),
                    other => Err(E::custom(format!(
                        "{other:?} is not a PROXY protocol mode (use off, optional or required)"
                    ))),
                }
            }
        }
        d.deserialize_any(Visit)
    }
}

impl Serialize for ProxyProtocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RedirectSettings {
    /// Status code of HTTP to HTTPS redirects: 301, 302, 307 or 308.
    pub code: RedirectCode,
}

impl Default for RedirectSettings {
    fn default() -> Self {
        RedirectSettings {
            code: RedirectCode(308),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct HstsSettings {
    pub enabled: bool,
    /// `max-age`, in seconds.
    pub max_age: u64,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Default for HstsSettings {
    fn default() -> Self {
        HstsSettings {
            enabled: true,
            max_age: 31_536_000,
            include_subdomains: true,
            preload: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsSettings {
    /// Oldest TLS version accepted: `"1.2"` or `"1.3"`.
    pub min_version: TlsVersion,
    /// Issue TLS session tickets (stateless resumption).
    pub session_tickets: bool,
    /// Server-side session cache entries (stateful resumption); 0 turns it off.
    pub session_cache_size: usize,
    /// Refuse handshakes whose server name matches no certificate instead of serving the default one.
    pub strict_sni: bool,
    /// Honour `ssl-passthrough: "true"`: the connections of those Ingresses' hosts go to their backend
    /// with TLS unterminated, chosen by the ClientHello's server name. Off, the annotation is reported
    /// and those Ingresses are served terminated, as ingress-nginx without `--enable-ssl-passthrough`.
    pub ssl_passthrough: bool,
    /// Secret served for unknown server names instead of a generated certificate (`NAMESPACE/NAME`).
    #[schemars(with = "Option<String>", regex(pattern = r"^[^/]+/[^/]+$"))]
    pub default_certificate: Option<NamespacedName>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            min_version: TlsVersion::V1_2,
            session_tickets: true,
            session_cache_size: 16_384,
            strict_sni: false,
            ssl_passthrough: false,
            default_certificate: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

impl JsonSchema for TlsVersion {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TlsVersion".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // YAML reads an unquoted 1.3 as a number; the file parser takes it as "1.3" all the same.
        schemars::json_schema!({ "enum": ["1.2", "1.3", 1.2, 1.3] })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct UpstreamSettings {
    /// Time to establish a connection to an endpoint (504 when exceeded).
    pub connect_timeout: HumanDuration,
    /// Time to wait for the response head, and between two reads of the response body (504).
    pub read_timeout: HumanDuration,
    /// Time allowed between two writes of the request body to the endpoint.
    pub send_timeout: HumanDuration,
    /// Largest request body accepted (413 above it); `0` means no limit.
    pub max_body_size: ByteSize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout: HumanDuration(Duration::from_secs(5)),
            read_timeout: HumanDuration(Duration::from_secs(60)),
            send_timeout: HumanDuration(Duration::from_secs(60)),
            max_body_size: ByteSize(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Limits {
    /// A client must send a complete request head within this time.
    pub header_read_timeout: HumanDuration,
    /// A keep-alive connection with no request in flight is closed after this time.
    pub idle_timeout: HumanDuration,
    /// A client must keep sending the request body: at most this long between two reads.
    pub request_body_timeout: HumanDuration,
    /// A TLS handshake must complete within this time.
    pub handshake_timeout: HumanDuration,
    /// Largest request head (request line and headers); 431 above it.
    pub max_header_bytes: ByteSize,
    /// Most header fields in one request; 431 above it.
    pub max_headers: usize,
    /// Most client connections open at once per listener; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Most concurrent HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// Most HTTP/2 streams a client may reset in a short time before the connection is closed
    /// (rapid-reset protection).
    pub http2_max_pending_reset_streams: usize,
    /// The status of requests refused by an Ingress's `limit-rps`/`limit-rpm`/`limit-connections`: 503 as in
    /// ingress-nginx, or 429 (Too Many Requests), which tells well-behaved clients to back off.
    pub rate_limit_status: RateLimitStatus,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: HumanDuration(Duration::from_secs(10)),
            idle_timeout: HumanDuration(Duration::from_secs(75)),
            request_body_timeout: HumanDuration(Duration::from_secs(60)),
            handshake_timeout: HumanDuration(Duration::from_secs(10)),
            max_header_bytes: ByteSize(64 * 1024),
            max_headers: 100,
            max_connections: 16_384,
            http2_max_concurrent_streams: 128,
            http2_max_pending_reset_streams: 32,
            rate_limit_status: RateLimitStatus(503),
        }
    }
}

/// The status of a rate-limited request: 429 or 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimitStatus(u16);

impl JsonSchema for RateLimitStatus {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RateLimitStatus".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "enum": [429, 503] })
    }
}

impl RateLimitStatus {
    pub fn status(self) -> http::StatusCode {
        match self.0 {
            429 => http::StatusCode::TOO_MANY_REQUESTS,
            _ => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl<'de> Deserialize<'de> for RateLimitStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u16::deserialize(d)? {
            code @ (429 | 503) => Ok(RateLimitStatus(code)),
            other => Err(serde::de::Error::custom(format!(
                "{other} is not a rate-limit status (use 429 or 503)"
            ))),
        }
    }
}

/// A redirect status code (301, 302, 307 or 308).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RedirectCode(pub u16);

impl JsonSchema for RedirectCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RedirectCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "enum": [301, 302, 303, 307, 308] })
    }
}

impl RedirectCode {
    pub fn parse(code: u16) -> Result<Self, String> {
        match code {
            301 | 302 | 303 | 307 | 308 => Ok(RedirectCode(code)),
            other => Err(format!(
                "{other} is not a redirect status (use 301, 302, 303, 307 or 308)"
            )),
        }
    }

    pub fn status(self) -> http::StatusCode {
        http::StatusCode::from_u16(self.0).unwrap_or(http::StatusCode::PERMANENT_REDIRECT)
    }
}

impl<'de> Deserialize<'de> for RedirectCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RedirectCode::parse(u16::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A duration written `500ms`, `30s`, `5m` or as a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

// The schemas accept exactly what the parsers below accept (the Helm chart validates its `config`
// value with them).
impl JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`500ms`, `30s`, `2m`, `1h`, or a whole number of seconds.",
            "type": ["string", "integer"],
            "minimum": 0,
            "pattern": r"^\s*([0-9]+\.?[0-9]*|\.[0-9]+)(ms|s|m|h)?\s*$"
        })
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number_or_text(
            d,
            "a duration like 500ms, 30s or 2m, or a number of seconds",
            |s| HumanDuration(Duration::from_secs(s)),
            |t| crate::vocab::parse_duration(t).map(HumanDuration),
        )
    }
}

/// Reads a YAML number or string in place (not through an untagged enum, which would lose the field
/// path that error messages show, e.g. `upstream.read-timeout`).
fn number_or_text<'de, D: Deserializer<'de>, T>(
    d: D,
    expecting: &'static str,
    from_number: fn(u64) -> T,
    from_text: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct Visit<T> {
        expecting: &'static str,
        from_number: fn(u64) -> T,
        from_text: fn(&str) -> Result<T, String>,
    }
    impl<T> serde::de::Visitor<'_> for Visit<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
            Ok((self.from_number)(v))
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
            u64::try_from(v)
                .map(self.from_number)
                .map_err(|_| E::custom(format!("{v} is negative; expected {}", self.expecting)))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            (self.from_text)(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Visit {
        expecting,
        from_number,
        from_text,
    })
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

/// A size written like nginx does: `512`, `64k`, `8m`, `1g` (binary multiples); `0` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Bytes, or with a binary multiple: `512`, `64k`, `8m`, `1g`.",
            "type": ["string", "integer"],
            "minimum": 0,
            "pattern": r"^\s*\+?[0-9]+[kKmMgG]?\s*$"
        })
    }
}

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let (digits, multiplier) = match t.char_indices().last() {
            Some((i, 'k' | 'K')) => (&t[..i], 1u64 << 10),
            Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
            Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
            _ => (t, 1),
        };
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is not a size like 512, 64k, 8m or 1g"))
    }

    /// `None` for "no limit".
    pub fn limit(self) -> Option<u64> {
        (self.0 > 0).then_some(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        number_or_text(
            d,
            "a size like 512, 64k, 8m or 1g",
            ByteSize,
            ByteSize::parse,
        )
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// An IP network (`10.0.0.0/8`) or a single address (`192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(with = "String")]
pub struct Cidr(pub IpNet);

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        t.parse::<IpNet>()
            .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
            .map(|n| Cidr(n.trunc()))
            .map_err(|_| format!("{t:?} is not an IP address or CIDR"))
    }

    /// A comma-separated list, as the source-range and limit annotations write it; empty items are
    /// skipped, so an empty result is the caller's to judge.
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Cidr::parse)
            .collect()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Cidr::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for NamespacedName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NamespacedName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Settings {
    pub fn from_yaml(text: &str) -> Result<Settings, String> {
        if text.trim().is_empty() {
            return Ok(Settings::default());
        }
        let settings: Settings = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        settings.acme.validate()?;
        Ok(settings)
    }

    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let settings = Settings::from_yaml(&text).map_err(|message| SettingsError::Invalid {
            path: path.display().to_string(),
            message,
        })?;
        settings.warn_if_inconsistent();
        Ok(settings)
    }

    /// Logs settings that are valid but almost certainly not what was meant.
    fn warn_if_inconsistent(&self) {
        if self.proxy_protocol != ProxyProtocol::Off && self.trusted_proxies.is_empty() {
            tracing::warn!(
                proxy_protocol = self.proxy_protocol.as_str(),
                "proxy-protocol is on but trusted-proxies is empty: every PROXY header is ignored"
            );
        }
    }

    /// The JSON Schema of the configuration file.
    pub fn schema() -> schemars::Schema {
        schemars::schema_for!(Settings)
    }
}

/// Re-reads `path` every second and publishes each valid new version (after `adjust`); an invalid
/// one is logged and the previous settings stay.
pub async fn watch_file(
    path: std::path::PathBuf,
    adjust: impl Fn(&mut Settings),
    tx: tokio::sync::watch::Sender<std::sync::Arc<Settings>>,
) {
    let mut last_text = std::fs::read_to_string(&path).ok();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                if last_text.take().is_some() {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read the configuration file; keeping the current settings");
                }
                continue;
            }
        };
        if last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        last_text = Some(text.clone());
        match Settings::from_yaml(&text) {
            Ok(mut settings) => {
                adjust(&mut settings);
                if **tx.borrow() != settings {
                    tracing::info!(file = %path.display(), "configuration file changed; applying it");
                    settings.warn_if_inconsistent();
                    tx.send_replace(std::sync::Arc::new(settings));
                }
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "invalid configuration file; keeping the previous settings")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(Settings::from_yaml("").unwrap(), Settings::default());
        assert_eq!(Settings::from_yaml("{}\n").unwrap(), Settings::default());
        let d = Settings::default();
        assert_eq!(d.redirect.code, RedirectCode(308));
        assert!(d.hsts.enabled && d.hsts.include_subdomains && !d.hsts.preload);
        assert_eq!(d.hsts.max_age, 31_536_000);
        assert_eq!(d.tls.min_version, TlsVersion::V1_2);
        assert_eq!(d.proxy_protocol, ProxyProtocol::Off);
    }

    #[test]
    fn reads_every_section() {
        let s = Settings::from_yaml(
            "redirect: {code: 301}\nhsts: {enabled: false, max-age: 60, preload: true}\n\
             tls: {min-version: \"1.3\", strict-sni: true, default-certificate: ns/cert, session-tickets: false}\n\
             trusted-proxies: [10.0.0.0/8, 192.0.2.7]\n\
             proxy-protocol: required\n\
             upstream: {connect-timeout: 2s, read-timeout: 90, max-body-size: 8m}\n\
             limits: {header-read-timeout: 500ms, max-headers: 50, max-header-bytes: 16k}\n",
        )
        .unwrap();
        assert_eq!(s.redirect.code, RedirectCode(301));
        assert!(!s.hsts.enabled && s.hsts.preload && s.hsts.max_age == 60);
        assert_eq!(s.tls.min_version, TlsVersion::V1_3);
        assert_eq!(
            s.tls.default_certificate,
            Some(NamespacedName::new("ns", "cert"))
        );
        assert_eq!(s.trusted_proxies.len(), 2);
        assert_eq!(s.trusted_proxies[1].to_string(), "192.0.2.7/32");
        assert_eq!(s.proxy_protocol, ProxyProtocol::Required);
        for (yaml, mode) in [
            ("off", ProxyProtocol::Off),
            ("false", ProxyProtocol::Off),
            ("optional", ProxyProtocol::Optional),
            ("true", ProxyProtocol::Required),
        ] {
            let s = Settings::from_yaml(&format!("proxy-protocol: {yaml}\n")).unwrap();
            assert_eq!(s.proxy_protocol, mode, "{yaml}");
        }
        assert_eq!(s.upstream.connect_timeout.0, Duration::from_secs(2));
        assert_eq!(s.upstream.read_timeout.0, Duration::from_secs(90));
        assert_eq!(s.upstream.max_body_size, ByteSize(8 << 20));
        assert_eq!(s.limits.header_read_timeout.0, Duration::from_millis(500));
        assert_eq!(s.limits.max_header_bytes, ByteSize(16 << 10));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_the_field() {
        let e = Settings::from_yaml("hsts: {enable: true}\n").unwrap_err();
        assert!(e.contains("unknown field `enable`"), "{e}");
        let e = Settings::from_yaml("redirect: {code: 200}\n").unwrap_err();
        assert!(e.contains("not a redirect status"), "{e}");
        let e = Settings::from_yaml("trusted-proxies: [10.0.0.0/33]\n").unwrap_err();
        assert!(e.contains("not an IP address or CIDR"), "{e}");
        let e = Settings::from_yaml("proxy-protocol: always\n").unwrap_err();
        assert!(e.contains("not a PROXY protocol mode"), "{e}");
        let e = Settings::from_yaml("upstream: {read-timeout: soon}\n").unwrap_err();
        assert!(e.contains("duration"), "{e}");
        let e = Settings::from_yaml("tls: {min-version: \"1.1\"}\n").unwrap_err();
        assert!(
            e.contains("min-version") || e.contains("unknown variant"),
            "{e}"
        );
        assert!(Settings::from_yaml("- a list\n").is_err());
    }

    #[test]
    fn the_rate_limit_status_is_503_or_429() {
        let status =
            |yaml: &str| Settings::from_yaml(yaml).map(|s| s.limits.rate_limit_status.status());
        assert_eq!(status(""), Ok(http::StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(
            status("limits: {rate-limit-status: 429}\n"),
            Ok(http::StatusCode::TOO_MANY_REQUESTS)
        );
        let e = status("limits: {rate-limit-status: 418}\n").unwrap_err();
        assert!(e.contains("use 429 or 503"), "{e}");
    }

    #[test]
    fn sizes_use_binary_multiples() {
        assert_eq!(ByteSize::parse("0").unwrap().limit(), None);
        assert_eq!(ByteSize::parse("512").unwrap(), ByteSize(512));
        assert_eq!(ByteSize::parse("64k").unwrap(), ByteSize(65_536));
        assert_eq!(ByteSize::parse("8M").unwrap(), ByteSize(8 << 20));
        assert_eq!(ByteSize::parse("1g").unwrap(), ByteSize(1 << 30));
        for bad in ["", "m", "-1", "1.5m", "1t", "99999999999999g"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schema_names_every_section() {
        let schema = serde_json::to_string(&Settings::schema()).unwrap();
        for key in [
            "redirect",
            "hsts",
            "tls",
            "trusted-proxies",
            "proxy-protocol",
            "upstream",
            "limits",
            "max-body-size",
        ] {
            assert!(schema.contains(key), "{key}");
        }
    }
}
