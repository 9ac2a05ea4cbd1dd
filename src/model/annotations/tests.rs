use super::*;

pub(super) fn parse_map(pairs: &[(&str, &str)]) -> (IngressAnnotations, Vec<AnnotationError>) {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    parse(Some(&map))
}

/// `parse_map` with every key under `nginx.ingress.kubernetes.io/`.
pub(super) fn parse_nginx_map(
    pairs: &[(&str, &str)],
) -> (IngressAnnotations, Vec<AnnotationError>) {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (format!("{NGINX_PREFIX}{k}"), v.to_string()))
        .collect();
    parse(Some(&map))
}

pub(super) fn ours(name: &str, value: &str) -> (IngressAnnotations, Vec<AnnotationError>) {
    parse_map(&[(&format!("portcullis.io/{name}"), value)])
}

pub(super) fn nginx(name: &str, value: &str) -> (IngressAnnotations, Vec<AnnotationError>) {
    parse_map(&[(&format!("nginx.ingress.kubernetes.io/{name}"), value)])
}

/// Asserts exactly one error, about `key`, whose message contains `needle`.
pub(super) fn one_error(errors: &[AnnotationError], needle: &str) {
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].to_string().contains(needle),
        "{} does not mention {needle:?}",
        errors[0]
    );
}

#[test]
fn defaults_without_annotations() {
    let (a, errors) = parse(None);
    assert!(errors.is_empty());
    assert_eq!(a, IngressAnnotations::default());
    assert!(a.ssl_redirect && !a.force_ssl_redirect && !a.use_regex);
    assert_eq!(a.backend_protocol, BackendProtocol::Http);
}

#[test]
fn both_prefixes_are_read_and_ours_wins() {
    assert!(!nginx("ssl-redirect", "false").0.ssl_redirect);
    let (a, errors) = parse_map(&[
        ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
        ("portcullis.io/ssl-redirect", "true"),
    ]);
    assert!(a.ssl_redirect && errors.is_empty());
}

#[test]
fn booleans_accept_go_forms_and_reject_others() {
    for t in ["true", "True", "TRUE", "t", "1", " true "] {
        assert!(ours("force-ssl-redirect", t).0.force_ssl_redirect, "{t}");
    }
    for f in ["false", "F", "0"] {
        assert!(!ours("ssl-redirect", f).0.ssl_redirect, "{f}");
    }
    let (a, errors) = ours("ssl-redirect", "yes");
    assert!(a.ssl_redirect, "the default applies");
    one_error(&errors, "not a boolean");
    for name in [
        "from-to-www-redirect",
        "preserve-trailing-slash",
        "use-port-in-redirects",
        "use-regex",
    ] {
        assert!(!ours(name, "maybe").1.is_empty(), "{name}");
    }
}

#[test]
fn permanent_and_temporal_redirects() {
    let (a, _) = nginx("permanent-redirect", "https://example.com/new");
    assert_eq!(
        a.fixed_redirect,
        Some(FixedRedirect {
            url: "https://example.com/new".into(),
            code: RedirectCode(301)
        })
    );
    let (a, _) = parse_map(&[
        ("portcullis.io/permanent-redirect", "https://e.com"),
        ("portcullis.io/permanent-redirect-code", "308"),
    ]);
    assert_eq!(a.fixed_redirect.unwrap().code, RedirectCode(308));
    let (a, _) = ours("temporal-redirect", "http://e.com/x");
    assert_eq!(a.fixed_redirect.unwrap().code, RedirectCode(302));
    let (a, _) = parse_map(&[
        ("portcullis.io/temporal-redirect", "http://t.com"),
        ("portcullis.io/permanent-redirect", "http://p.com"),
    ]);
    assert_eq!(
        a.fixed_redirect.unwrap().url,
        "http://t.com",
        "temporal wins, as in ingress-nginx"
    );

    let (a, errors) = ours("permanent-redirect", "/relative");
    assert!(a.fixed_redirect.is_none());
    one_error(&errors, "absolute");
    let (a, errors) = parse_map(&[
        ("portcullis.io/permanent-redirect", "https://e.com"),
        ("portcullis.io/permanent-redirect-code", "200"),
    ]);
    assert_eq!(
        a.fixed_redirect.unwrap().code,
        RedirectCode(301),
        "invalid code falls back to the default"
    );
    one_error(&errors, "not a redirect status");
    one_error(
        &ours("temporal-redirect-code", "abc").1,
        "not a status code",
    );
}

#[test]
fn app_root_must_be_absolute() {
    assert_eq!(ours("app-root", "/app").0.app_root.as_deref(), Some("/app"));
    one_error(&ours("app-root", "app").1, "absolute path");
    one_error(&ours("app-root", "/a b").1, "absolute path");
}

#[test]
fn hsts_overrides() {
    let (a, errors) = parse_map(&[
        ("portcullis.io/hsts", "false"),
        ("portcullis.io/hsts-max-age", "600"),
        ("portcullis.io/hsts-include-subdomains", "false"),
        ("portcullis.io/hsts-preload", "true"),
    ]);
    assert!(errors.is_empty());
    assert_eq!(
        (
            a.hsts,
            a.hsts_max_age,
            a.hsts_include_subdomains,
            a.hsts_preload
        ),
        (Some(false), Some(600), Some(false), Some(true))
    );
    one_error(&ours("hsts-max-age", "-1").1, "number of seconds");
    one_error(&ours("hsts-max-age", "1y").1, "number of seconds");
}

#[test]
fn backend_protocols() {
    for (v, p) in [
        ("HTTP", BackendProtocol::Http),
        ("https", BackendProtocol::Https),
        ("GRPC", BackendProtocol::H2c),
        ("H2C", BackendProtocol::H2c),
        ("GRPCS", BackendProtocol::Grpcs),
    ] {
        assert_eq!(nginx("backend-protocol", v).0.backend_protocol, p, "{v}");
    }
    let (a, errors) = nginx("backend-protocol", "FCGI");
    assert_eq!(a.backend_protocol, BackendProtocol::Http);
    one_error(&errors, "not one of");
}

#[test]
fn timeouts_are_seconds_or_durations() {
    assert_eq!(
        nginx("proxy-read-timeout", "120").0.proxy_read_timeout,
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        ours("proxy-connect-timeout", "500ms")
            .0
            .proxy_connect_timeout,
        Some(Duration::from_millis(500))
    );
    assert_eq!(
        ours("proxy-send-timeout", "2m").0.proxy_send_timeout,
        Some(Duration::from_secs(120))
    );
    one_error(&ours("proxy-read-timeout", "0").1, "greater than zero");
    one_error(&ours("proxy-read-timeout", "soon").1, "duration");
}

#[test]
fn body_size_uses_nginx_units() {
    assert_eq!(
        nginx("proxy-body-size", "8m").0.proxy_body_size,
        Some(ByteSize(8 << 20))
    );
    assert_eq!(
        nginx("proxy-body-size", "0").0.proxy_body_size,
        Some(ByteSize(0))
    );
    one_error(&nginx("proxy-body-size", "big").1, "size");
}

#[test]
fn upstream_vhost_and_forwarded_prefix() {
    assert_eq!(
        ours("upstream-vhost", "internal.svc")
            .0
            .upstream_vhost
            .as_deref(),
        Some("internal.svc")
    );
    one_error(&ours("upstream-vhost", "a/b").1, "host name");
    assert_eq!(
        ours("x-forwarded-prefix", "/api")
            .0
            .x_forwarded_prefix
            .as_deref(),
        Some("/api")
    );
    one_error(&ours("x-forwarded-prefix", "bad\u{7f}").1, "header value");
}

#[test]
fn rewrite_target_implies_regex() {
    let (a, _) = nginx("rewrite-target", "/$2");
    assert_eq!(a.rewrite_target.as_deref(), Some("/$2"));
    assert!(a.use_regex);
    assert!(nginx("use-regex", "true").0.use_regex);
    one_error(&nginx("rewrite-target", "").1, "empty");
}

#[test]
fn source_ranges_fail_closed() {
    let (a, errors) = nginx("whitelist-source-range", "10.0.0.0/8, 192.0.2.1");
    assert!(errors.is_empty());
    assert_eq!(
        a.source_range,
        Some(SourceRange::Allow(vec![
            Cidr::parse("10.0.0.0/8").unwrap(),
            Cidr::parse("192.0.2.1").unwrap()
        ]))
    );
    let (a, errors) = nginx("allowlist-source-range", "10.0.0.0/8,not-an-ip");
    assert_eq!(a.source_range, Some(SourceRange::DenyAll));
    one_error(&errors, "every client is denied");
    let (a, _) = ours("allowlist-source-range", " , ");
    assert_eq!(a.source_range, Some(SourceRange::DenyAll));
    let (a, _) = parse_map(&[
        (
            "nginx.ingress.kubernetes.io/allowlist-source-range",
            "10.0.0.0/8",
        ),
        (
            "nginx.ingress.kubernetes.io/whitelist-source-range",
            "garbage",
        ),
    ]);
    assert!(
        matches!(a.source_range, Some(SourceRange::Allow(_))),
        "the newer name wins"
    );
}

#[test]
fn default_backend_names_a_service() {
    assert_eq!(
        nginx("default-backend", "fallback")
            .0
            .default_backend
            .as_deref(),
        Some("fallback")
    );
    one_error(
        &nginx("default-backend", "other-ns/svc").1,
        "name of a Service",
    );
}

#[test]
fn unknown_and_snippet_annotations_are_reported() {
    let (_, errors) = parse_map(&[
        ("nginx.ingress.kubernetes.io/enable-modsecurity", "true"),
        (
            "nginx.ingress.kubernetes.io/configuration-snippet",
            "more_set_headers x;",
        ),
        ("portcullis.io/ssl-redirects", "false"),
        ("kubernetes.io/ingress.class", "portcullis"),
        ("example.com/other", "x"),
    ]);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(
        messages[0].contains("configuration-snippet")
            && messages[0].contains("Raw configuration injection")
    );
    // With the migration guide's advice.
    assert!(messages[1].contains("enable-modsecurity") && messages[1].ends_with("No WAF."));
    assert!(
        messages[2].contains("ssl-redirects")
            && messages[2].contains("not a Portcullis annotation")
    );
}

#[test]
fn custom_http_errors_are_sorted_error_codes() {
    let (a, errors) = nginx("custom-http-errors", " 503,404 ,404, 502");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(a.custom_errors.unwrap().codes, [404, 502, 503]);
    for bad in ["404,abc", "200", "", "600", "404;503"] {
        let (a, errors) = nginx("custom-http-errors", bad);
        assert!(a.custom_errors.is_none(), "{bad:?}");
        assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
    }
}

#[test]
fn ssl_passthrough_is_a_boolean() {
    assert!(nginx("ssl-passthrough", "true").0.ssl_passthrough);
    assert!(!nginx("ssl-passthrough", "false").0.ssl_passthrough);
    let (a, errors) = nginx("ssl-passthrough", "yes");
    assert!(!a.ssl_passthrough);
    one_error(&errors, "not a boolean");
}

#[test]
fn server_alias_is_a_list_of_host_names() {
    let (a, errors) = nginx(
        "server-alias",
        "WWW.example.com, *.example.org,www.example.com",
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        a.server_alias.unwrap(),
        ["www.example.com", "*.example.org"]
    );
    for bad in ["", "a b.example.com", "example.com, http://x"] {
        let (a, errors) = nginx("server-alias", bad);
        assert!(a.server_alias.is_none(), "{bad:?}");
        assert_eq!(errors.len(), 1, "{bad:?}: {errors:?}");
    }
}
