//! Typed Ingress annotations, read under `portcullis.io/` and, for the same meaning, under
//! `nginx.ingress.kubernetes.io/` (ours wins when both are set). Each annotation is parsed in one place
//! into one type; an invalid value is reported and its default applies, except for the source-range
//! lists and rate limits, which fail closed (an invalid allowlist denies every client, an invalid deny
//! list or rate limit serves nobody), and CORS, which an invalid value turns off.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::settings::{ByteSize, Cidr, RedirectCode};

pub mod acme;
pub mod balancing;
pub mod canary;
pub mod catalog;
mod cors;
mod denylist;
mod limit_rate;
pub mod next_upstream;
pub mod proxy_ssl;
mod ratelimit;
pub use cors::Cors;
pub use denylist::DenyRange;
pub mod basic_auth;
use basic_auth::BasicAuthAnnotation;
pub mod external_auth;
use external_auth::ExternalAuth;
pub use limit_rate::{LimitRate, ResponseRate};
pub mod client_cert;
pub mod custom_errors;
pub mod passthrough;
pub mod server_alias;
use client_cert::ClientCertAnnotation;
pub use ratelimit::{RateLimit, RateLimits, Rates};

pub const OWN_PREFIX: &str = "portcullis.io/";
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Annotation names (without prefix) Portcullis implements, besides the families that list their own
/// (`basic_auth`, `client_cert`, `external_auth`, `passthrough`, `custom_errors`,
/// `server_alias`, `acme`, `balancing`, `canary`).
pub const SUPPORTED: &[&str] = &[
    "ssl-redirect",
    "force-ssl-redirect",
    "permanent-redirect",
    "permanent-redirect-code",
    "temporal-redirect",
    "temporal-redirect-code",
    "app-root",
    "from-to-www-redirect",
    "preserve-trailing-slash",
    "use-port-in-redirects",
    "hsts",
    "hsts-max-age",
    "hsts-include-subdomains",
    "hsts-preload",
    "backend-protocol",
    "proxy-connect-timeout",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "proxy-body-size",
    "upstream-vhost",
    "x-forwarded-prefix",
    "rewrite-target",
    "use-regex",
    "allowlist-source-range",
    "whitelist-source-range",
    "denylist-source-range",
    "default-backend",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "limit-rps",
    "limit-rpm",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-whitelist",
    "limit-allowlist",
    "limit-rate",
    "limit-rate-after",
    "service-upstream",
];

/// How Portcullis talks to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendProtocol {
    /// HTTP/1.1 over TCP.
    #[default]
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 over TLS (gRPC over TLS is the same on the wire).
    Grpcs,
    /// HTTP/2 without TLS, prior knowledge (`GRPC` and `H2C`).
    H2c,
}

/// A redirect that answers every request of the Ingress (`permanent-redirect`, `temporal-redirect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedRedirect {
    pub url: String,
    pub code: RedirectCode,
}

/// Which clients may use the Ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRange {
    Allow(Vec<Cidr>),
    /// The annotation was invalid: nobody is allowed rather than everybody.
    DenyAll,
}

/// The policy an Ingress's annotations ask for. `None` means "the global default".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressAnnotations {
    pub ssl_redirect: bool,
    pub force_ssl_redirect: bool,
    pub fixed_redirect: Option<FixedRedirect>,
    pub app_root: Option<String>,
    pub from_to_www_redirect: bool,
    pub preserve_trailing_slash: bool,
    pub use_port_in_redirects: bool,
    pub hsts: Option<bool>,
    pub hsts_max_age: Option<u64>,
    pub hsts_include_subdomains: Option<bool>,
    pub hsts_preload: Option<bool>,
    pub backend_protocol: BackendProtocol,
    pub proxy_connect_timeout: Option<Duration>,
    pub proxy_read_timeout: Option<Duration>,
    pub proxy_send_timeout: Option<Duration>,
    pub proxy_body_size: Option<ByteSize>,
    pub upstream_vhost: Option<String>,
    pub x_forwarded_prefix: Option<String>,
    pub rewrite_target: Option<String>,
    /// Paths of this Ingress (other than `Exact`) are regular expressions; implied by `rewrite-target`.
    pub use_regex: bool,
    pub source_range: Option<SourceRange>,
    pub deny_range: Option<DenyRange>,
    pub default_backend: Option<String>,
    pub cors: Option<Cors>,
    pub basic_auth: Option<BasicAuthAnnotation>,
    pub external_auth: Option<ExternalAuth>,
    pub rate_limit: Option<RateLimit>,
    pub limit_rate: Option<LimitRate>,
    pub client_cert: Option<ClientCertAnnotation>,
    pub acme: Option<acme::AcmeAnnotation>,
    pub balancing: balancing::Balancing,
    pub canary: Option<canary::Canary>,
    pub next_upstream: next_upstream::NextUpstream,
    pub proxy_ssl: Option<proxy_ssl::ProxySslAnnotation>,
    /// Send to the Service's cluster IP instead of its endpoints.
    pub service_upstream: bool,
    pub ssl_passthrough: bool,
    pub custom_errors: Option<custom_errors::CustomErrors>,
    pub server_alias: Option<Vec<String>>,
}

impl Default for IngressAnnotations {
    fn default() -> Self {
        IngressAnnotations {
            ssl_redirect: true,
            force_ssl_redirect: false,
            fixed_redirect: None,
            app_root: None,
            from_to_www_redirect: false,
            preserve_trailing_slash: false,
            use_port_in_redirects: false,
            hsts: None,
            hsts_max_age: None,
            hsts_include_subdomains: None,
            hsts_preload: None,
            backend_protocol: BackendProtocol::Http,
            proxy_connect_timeout: None,
            proxy_read_timeout: None,
            proxy_send_timeout: None,
            proxy_body_size: None,
            upstream_vhost: None,
            x_forwarded_prefix: None,
            rewrite_target: None,
            use_regex: false,
            source_range: None,
            deny_range: None,
            default_backend: None,
            cors: None,
            basic_auth: None,
            external_auth: None,
            rate_limit: None,
            limit_rate: None,
            client_cert: None,
            acme: None,
            balancing: balancing::Balancing::RoundRobin,
            canary: None,
            next_upstream: Default::default(),
            proxy_ssl: None,
            service_upstream: false,
            ssl_passthrough: false,
            custom_errors: None,
            server_alias: None,
        }
    }
}

/// One annotation Portcullis cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("annotation {key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("annotation {key} is not supported by Portcullis and is ignored: {hint}")]
    Unsupported { key: String, hint: &'static str },
}

/// The ACME opt-in alone, for objects that carry no other Ingress annotation (Gateways).
pub fn parse_acme(
    annotations: Option<&BTreeMap<String, String>>,
) -> (Option<acme::AcmeAnnotation>, Vec<AnnotationError>) {
    let empty = BTreeMap::new();
    let mut r = Reader {
        all: annotations.unwrap_or(&empty),
        errors: Vec::new(),
    };
    let parsed = acme::parse(&mut r);
    (parsed, r.errors)
}

/// Reads every annotation Portcullis understands and reports the ones it cannot honour.
pub fn parse(
    annotations: Option<&BTreeMap<String, String>>,
) -> (IngressAnnotations, Vec<AnnotationError>) {
    let empty = BTreeMap::new();
    let all = annotations.unwrap_or(&empty);
    let mut r = Reader {
        all,
        errors: Vec::new(),
    };
    let d = IngressAnnotations::default();

    let temporal = r.fixed_redirect("temporal-redirect", "temporal-redirect-code", 302);
    let permanent = r.fixed_redirect("permanent-redirect", "permanent-redirect-code", 301);
    let rewrite_target = r.string("rewrite-target");
    let parsed = IngressAnnotations {
        ssl_redirect: r.bool("ssl-redirect").unwrap_or(d.ssl_redirect),
        force_ssl_redirect: r.bool("force-ssl-redirect").unwrap_or(d.force_ssl_redirect),
        // ingress-nginx checks the temporal redirect first.
        fixed_redirect: temporal.or(permanent),
        app_root: r.parse("app-root", |v| {
            match v.starts_with('/') && !v.contains(char::is_whitespace) {
                true => Ok(v.to_string()),
                false => Err(format!("{v:?} must be an absolute path like /app")),
            }
        }),
        from_to_www_redirect: r.bool("from-to-www-redirect").unwrap_or(false),
        preserve_trailing_slash: r.bool("preserve-trailing-slash").unwrap_or(false),
        use_port_in_redirects: r.bool("use-port-in-redirects").unwrap_or(false),
        hsts: r.bool("hsts"),
        hsts_max_age: r.parse("hsts-max-age", |v| {
            v.parse::<u64>()
                .map_err(|_| format!("{v:?} is not a number of seconds"))
        }),
        hsts_include_subdomains: r.bool("hsts-include-subdomains"),
        hsts_preload: r.bool("hsts-preload"),
        backend_protocol: r
            .parse("backend-protocol", |v| {
                match v.to_ascii_uppercase().as_str() {
                    "HTTP" => Ok(BackendProtocol::Http),
                    "HTTPS" => Ok(BackendProtocol::Https),
                    "GRPCS" => Ok(BackendProtocol::Grpcs),
                    "GRPC" | "H2C" => Ok(BackendProtocol::H2c),
                    _ => Err(format!("{v:?} is not one of HTTP, HTTPS, GRPC, GRPCS, H2C")),
                }
            })
            .unwrap_or_default(),
        proxy_connect_timeout: r.duration("proxy-connect-timeout"),
        proxy_read_timeout: r.duration("proxy-read-timeout"),
        proxy_send_timeout: r.duration("proxy-send-timeout"),
        proxy_body_size: r.parse("proxy-body-size", ByteSize::parse),
        upstream_vhost: r.parse("upstream-vhost", |v| match http::HeaderValue::from_str(v) {
            Ok(_) if !v.is_empty() && !v.contains(['/', ' ']) => Ok(v.to_string()),
            _ => Err(format!("{v:?} is not a host name")),
        }),
        x_forwarded_prefix: r.parse(
            "x-forwarded-prefix",
            |v| match http::HeaderValue::from_str(v) {
                Ok(_) => Ok(v.to_string()),
                Err(_) => Err(format!("{v:?} cannot be sent as a header value")),
            },
        ),
        use_regex: r.bool("use-regex").unwrap_or(false) || rewrite_target.is_some(),
        rewrite_target,
        source_range: r.source_range(),
        deny_range: r.denylist(),
        default_backend: r.parse("default-backend", |v| {
            match super::validation::check_host(v) {
                Ok(()) if !v.contains('.') => Ok(v.to_string()),
                _ => Err(format!(
                    "{v:?} is not the name of a Service in the Ingress's namespace"
                )),
            }
        }),
        cors: r.cors(),
        basic_auth: basic_auth::parse(&mut r),
        external_auth: external_auth::parse(&mut r),
        rate_limit: r.rate_limit(),
        limit_rate: r.limit_rate(),
        client_cert: client_cert::parse(&mut r),
        acme: acme::parse(&mut r),
        balancing: balancing::parse(&mut r),
        canary: canary::parse(&mut r),
        next_upstream: r.next_upstream(),
        proxy_ssl: proxy_ssl::parse(&mut r),
        service_upstream: r.bool("service-upstream").unwrap_or(false),
        ssl_passthrough: passthrough::parse(&mut r),
        custom_errors: custom_errors::parse(&mut r),
        server_alias: server_alias::parse(&mut r),
    };
    r.report_unknown();
    (parsed, r.errors)
}

/// The forms Go's strconv.ParseBool accepts, which ingress-nginx users have written for years.
fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" | "True" | "TRUE" | "t" | "T" | "1" => Ok(true),
        "false" | "False" | "FALSE" | "f" | "F" | "0" => Ok(false),
        other => Err(format!(
            "{other:?} is not a boolean (use \"true\" or \"false\")"
        )),
    }
}

struct Reader<'a> {
    all: &'a BTreeMap<String, String>,
    errors: Vec<AnnotationError>,
}

impl Reader<'_> {
    /// The value under our prefix, else under the ingress-nginx prefix, with the full key it came from.
    fn get(&self, name: &str) -> Option<(String, &str)> {
        [OWN_PREFIX, NGINX_PREFIX].iter().find_map(|prefix| {
            let key = format!("{prefix}{name}");
            self.all.get(&key).map(|v| (key, v.trim()))
        })
    }

    fn parse<T>(&mut self, name: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let (key, value) = self.get(name)?;
        match f(value) {
            Ok(v) => Some(v),
            Err(reason) => {
                self.errors.push(AnnotationError::Invalid { key, reason });
                None
            }
        }
    }

    fn string(&mut self, name: &str) -> Option<String> {
        self.parse(name, |v| match v.is_empty() {
            true => Err("must not be empty".into()),
            false => Ok(v.to_string()),
        })
    }

    fn bool(&mut self, name: &str) -> Option<bool> {
        self.parse(name, parse_bool)
    }

    /// ingress-nginx writes timeouts as whole seconds; `500ms`, `30s`, `2m` work too.
    fn duration(&mut self, name: &str) -> Option<Duration> {
        self.parse(name, |v| {
            let d = crate::vocab::parse_duration(v)?;
            if d.is_zero() {
                Err("must be greater than zero".into())
            } else {
                Ok(d)
            }
        })
    }

    fn fixed_redirect(
        &mut self,
        url_name: &str,
        code_name: &str,
        default_code: u16,
    ) -> Option<FixedRedirect> {
        let code = self
            .parse(code_name, |v| {
                v.parse::<u16>()
                    .map_err(|_| format!("{v:?} is not a status code"))
                    .and_then(RedirectCode::parse)
            })
            .unwrap_or(RedirectCode(default_code));
        let url = self.parse(url_name, |v| {
            let uri: http::Uri = v.parse().map_err(|_| format!("{v:?} is not a URL"))?;
            match (uri.scheme_str(), uri.authority()) {
                (Some("http" | "https"), Some(_)) => Ok(v.to_string()),
                _ => Err(format!("{v:?} must be an absolute http:// or https:// URL")),
            }
        })?;
        Some(FixedRedirect { url, code })
    }

    /// `allowlist-source-range`, or its older name `whitelist-source-range`.
    fn source_range(&mut self) -> Option<SourceRange> {
        let name = if self.get("allowlist-source-range").is_some() {
            "allowlist-source-range"
        } else {
            "whitelist-source-range"
        };
        let (key, value) = self.get(name)?;
        let parsed = Cidr::parse_list(value);
        match parsed {
            Ok(list) if !list.is_empty() => Some(SourceRange::Allow(list)),
            Ok(_) => {
                self.errors.push(AnnotationError::Invalid {
                    key,
                    reason: "is empty; every client is denied".into(),
                });
                Some(SourceRange::DenyAll)
            }
            Err(reason) => {
                self.errors.push(AnnotationError::Invalid {
                    key,
                    reason: format!("{reason}; every client is denied"),
                });
                Some(SourceRange::DenyAll)
            }
        }
    }

    /// Every other annotation under either prefix is reported: nothing is silently ignored.
    fn report_unknown(&mut self) {
        for key in self.all.keys() {
            let Some((prefix, name)) = [OWN_PREFIX, NGINX_PREFIX]
                .iter()
                .find_map(|p| key.strip_prefix(p).map(|n| (*p, n)))
            else {
                continue;
            };
            if SUPPORTED.contains(&name)
                || basic_auth::NAMES.contains(&name)
                || client_cert::NAMES.contains(&name)
                || external_auth::NAMES.contains(&name)
                || canary::kept_on_canary(name)
                || next_upstream::NAMES.contains(&name)
                || proxy_ssl::NAMES.contains(&name)
                || passthrough::NAMES.contains(&name)
                || custom_errors::NAMES.contains(&name)
                || server_alias::NAMES.contains(&name)
                || (prefix == OWN_PREFIX && acme::NAMES.contains(&name))
            {
                continue;
            }
            let error = if prefix == OWN_PREFIX {
                AnnotationError::Invalid {
                    key: key.clone(),
                    reason: "is not a Portcullis annotation (see docs/annotations.md)".into(),
                }
            } else {
                AnnotationError::Unsupported {
                    key: key.clone(),
                    hint: catalog::advice(name),
                }
            };
            self.errors.push(error);
        }
    }
}

#[cfg(test)]
mod tests;
