//! What applies to the requests of one Ingress: its annotations resolved against the global settings.

use std::time::Duration;

use http::HeaderValue;

use super::annotations::balancing::Balancing;
use super::annotations::basic_auth::BasicAuthPolicy;
use super::annotations::client_cert::ClientCertPolicy;
use super::annotations::custom_errors::ErrorPages;
use super::annotations::external_auth::ExternalAuth;
use super::annotations::next_upstream::NextUpstream;
use super::annotations::proxy_ssl::BackendTlsPolicy;
use super::annotations::{
    BackendProtocol, Cors, DenyRange, FixedRedirect, IngressAnnotations, LimitRate, RateLimit,
    SourceRange,
};
use crate::settings::{RedirectCode, Settings};

/// Per-Ingress policy, shared by all its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Status of HTTP to HTTPS redirects (global setting).
    pub redirect_code: RedirectCode,
    pub fixed_redirect: Option<FixedRedirect>,
    pub app_root: Option<String>,
    pub preserve_trailing_slash: bool,
    pub use_port_in_redirects: bool,
    /// The `Strict-Transport-Security` value, if HSTS is on for this Ingress.
    pub hsts: Option<HeaderValue>,
    pub source_range: Option<SourceRange>,
    pub deny_range: Option<DenyRange>,
    pub cors: Option<Cors>,
    /// Resolved by `build()` against the named Secret.
    pub basic_auth: Option<BasicAuthPolicy>,
    /// `auth-url`: the auth service asked about every request.
    pub external_auth: Option<ExternalAuth>,
    pub rate_limit: Option<RateLimitPolicy>,
    /// `limit-rate`: the bandwidth of each backend response.
    pub limit_rate: Option<LimitRate>,
    /// Resolved by `build()` against the named Secret and the host's other Ingresses.
    pub client_cert: Option<ClientCertPolicy>,
    /// `custom-http-errors`, resolved by `build()` against `default-backend`.
    pub error_pages: Option<ErrorPages>,
    pub upstream: UpstreamPolicy,
    pub balancing: Balancing,
}

/// The Ingress's request-rate limits and the status of a refusal (global setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitPolicy {
    pub limit: RateLimit,
    pub status: http::StatusCode,
}

/// How requests of one Ingress are sent to its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPolicy {
    pub protocol: BackendProtocol,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    /// `None`: no limit.
    pub max_body_size: Option<u64>,
    /// Replaces the `Host` header sent upstream (`upstream-vhost`).
    pub host: Option<HeaderValue>,
    /// `X-Forwarded-Prefix` sent upstream.
    pub forwarded_prefix: Option<HeaderValue>,
    /// `rewrite-target`: the path sent upstream, with `$1`… replaced by the path regex's captures.
    pub rewrite_target: Option<String>,
    /// `proxy-next-upstream`: which failures send the request to another endpoint.
    pub next_upstream: NextUpstream,
    /// `proxy-ssl-*`, resolved by `build()` against the named Secret.
    pub backend_tls: Option<BackendTlsPolicy>,
}

impl Policy {
    pub fn new(a: &IngressAnnotations, settings: &Settings) -> Policy {
        let hsts = a.hsts.unwrap_or(settings.hsts.enabled).then(|| {
            let mut value = format!(
                "max-age={}",
                a.hsts_max_age.unwrap_or(settings.hsts.max_age)
            );
            if a.hsts_include_subdomains
                .unwrap_or(settings.hsts.include_subdomains)
            {
                value.push_str("; includeSubDomains");
            }
            if a.hsts_preload.unwrap_or(settings.hsts.preload) {
                value.push_str("; preload");
            }
            HeaderValue::from_str(&value)
                .unwrap_or_else(|_| HeaderValue::from_static("max-age=31536000"))
        });
        let u = &settings.upstream;
        Policy {
            redirect_code: settings.redirect.code,
            fixed_redirect: a.fixed_redirect.clone(),
            app_root: a.app_root.clone(),
            preserve_trailing_slash: a.preserve_trailing_slash,
            use_port_in_redirects: a.use_port_in_redirects,
            hsts,
            source_range: a.source_range.clone(),
            deny_range: a.deny_range.clone(),
            cors: a.cors.clone(),
            basic_auth: None,
            external_auth: a.external_auth.clone(),
            client_cert: None,
            error_pages: None,
            rate_limit: a.rate_limit.clone().map(|limit| RateLimitPolicy {
                limit,
                status: settings.limits.rate_limit_status.status(),
            }),
            limit_rate: a.limit_rate,
            balancing: a.balancing.clone(),
            upstream: UpstreamPolicy {
                protocol: a.backend_protocol,
                connect_timeout: a.proxy_connect_timeout.unwrap_or(u.connect_timeout.0),
                read_timeout: a.proxy_read_timeout.unwrap_or(u.read_timeout.0),
                send_timeout: a.proxy_send_timeout.unwrap_or(u.send_timeout.0),
                max_body_size: a.proxy_body_size.unwrap_or(u.max_body_size).limit(),
                host: a
                    .upstream_vhost
                    .as_deref()
                    .and_then(|h| HeaderValue::from_str(h).ok()),
                forwarded_prefix: a
                    .x_forwarded_prefix
                    .as_deref()
                    .and_then(|p| HeaderValue::from_str(p).ok()),
                rewrite_target: a.rewrite_target.clone(),
                next_upstream: a.next_upstream,
                backend_tls: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ByteSize;

    #[test]
    fn hsts_defaults_and_overrides() {
        let settings = Settings::default();
        let p = Policy::new(&IngressAnnotations::default(), &settings);
        assert_eq!(p.hsts.unwrap(), "max-age=31536000; includeSubDomains");

        let a = IngressAnnotations {
            hsts_max_age: Some(60),
            hsts_include_subdomains: Some(false),
            hsts_preload: Some(true),
            ..Default::default()
        };
        assert_eq!(
            Policy::new(&a, &settings).hsts.unwrap(),
            "max-age=60; preload"
        );

        let off = IngressAnnotations {
            hsts: Some(false),
            ..Default::default()
        };
        assert!(Policy::new(&off, &settings).hsts.is_none());

        let mut global_off = Settings::default();
        global_off.hsts.enabled = false;
        assert!(
            Policy::new(&IngressAnnotations::default(), &global_off)
                .hsts
                .is_none()
        );
        let on = IngressAnnotations {
            hsts: Some(true),
            ..Default::default()
        };
        assert!(
            Policy::new(&on, &global_off).hsts.is_some(),
            "an Ingress can turn HSTS on when it is off globally"
        );
    }

    #[test]
    fn upstream_defaults_come_from_settings_and_annotations_override() {
        let mut settings = Settings::default();
        settings.upstream.max_body_size = ByteSize(1024);
        let p = Policy::new(&IngressAnnotations::default(), &settings);
        assert_eq!(p.upstream.connect_timeout, Duration::from_secs(5));
        assert_eq!(p.upstream.max_body_size, Some(1024));
        let a = IngressAnnotations {
            proxy_read_timeout: Some(Duration::from_secs(1)),
            proxy_body_size: Some(ByteSize(0)),
            ..Default::default()
        };
        let p = Policy::new(&a, &settings);
        assert_eq!(p.upstream.read_timeout, Duration::from_secs(1));
        assert_eq!(p.upstream.max_body_size, None, "0 lifts the limit");
    }
}
