use super::super::tests::{one_error, parse_map, parse_nginx_map};
use super::*;

const URL: &str = "http://auth.example:4180/oauth2/auth";

fn auth(pairs: &[(&str, &str)]) -> (Option<ExternalAuth>, Vec<AnnotationError>) {
    let (a, errors) = parse_nginx_map(pairs);
    (a.external_auth, errors)
}

fn valid(pairs: &[(&str, &str)]) -> Arc<AuthService> {
    let (a, errors) = auth(pairs);
    assert!(errors.is_empty(), "{errors:?}");
    match a {
        Some(ExternalAuth::Enforce(s)) => s,
        other => panic!("not enforced: {other:?}"),
    }
}

/// Fails closed with one error naming `needle`.
fn invalid(pairs: &[(&str, &str)], needle: &str) {
    let (a, errors) = auth(pairs);
    assert_eq!(a, Some(ExternalAuth::Invalid), "{pairs:?}");
    one_error(&errors, needle);
    assert!(errors[0].to_string().contains("503"), "{}", errors[0]);
}

fn vars<'a>(
    headers: &'a http::HeaderMap,
    host: &'a str,
    query: Option<&'a str>,
) -> RequestVars<'a> {
    RequestVars {
        scheme: "https",
        host,
        http_host: "App.Example:8443",
        path: "/app/page",
        query,
        method: "POST",
        remote_addr: "203.0.113.7".parse().unwrap(),
        server_port: 8443,
        headers,
    }
}

#[test]
fn no_annotations_no_auth() {
    assert_eq!(auth(&[]), (None, vec![]));
}

#[test]
fn defaults_follow_ingress_nginx() {
    let s = valid(&[("auth-url", URL)]);
    assert_eq!(s.method, None, "GET");
    assert_eq!(s.redirect_param, "rd");
    assert!(s.signin.is_none() && s.cache.is_none() && !s.always_set_cookie);
    assert!(s.response_headers.is_empty());
}

#[test]
fn every_annotation_of_the_family_is_read() {
    let s = valid(&[
        ("auth-url", "https://$host/oauth2/auth"),
        ("auth-method", "POST"),
        (
            "auth-signin",
            "https://$host/oauth2/start?rd=$escaped_request_uri",
        ),
        ("auth-signin-redirect-param", "return_to"),
        (
            "auth-response-headers",
            "X-Auth-Request-User, x-auth-request-email,",
        ),
        ("auth-request-redirect", "https://app.example/after"),
        ("auth-always-set-cookie", "true"),
        ("auth-cache-key", "$remote_user$http_authorization"),
        ("auth-cache-duration", "200 202 10m, 401 30s, any 1d"),
    ]);
    assert_eq!(s.method, Some(Method::POST));
    assert_eq!(s.redirect_param, "return_to");
    assert_eq!(
        s.response_headers,
        vec![
            HeaderName::from_static("x-auth-request-user"),
            HeaderName::from_static("x-auth-request-email")
        ]
    );
    assert!(s.always_set_cookie);
    let cache = s.cache.as_ref().unwrap();
    assert_eq!(cache.ttl(202), Some(Duration::from_secs(600)));
    assert_eq!(cache.ttl(401), Some(Duration::from_secs(30)));
    assert_eq!(cache.ttl(500), Some(Duration::from_secs(86_400)), "any");
    let h = http::HeaderMap::new();
    assert_eq!(
        s.signin
            .as_ref()
            .unwrap()
            .render(&vars(&h, "app.example", Some("x=1&y=2")))
            .unwrap(),
        "https://app.example/oauth2/start?rd=%2Fapp%2Fpage%3Fx%3D1%26y%3D2"
    );
}

#[test]
fn cache_duration_defaults_and_forms() {
    let s = valid(&[("auth-url", URL), ("auth-cache-key", "$http_cookie")]);
    let cache = s.cache.as_ref().unwrap();
    for code in [200, 202, 401] {
        assert_eq!(cache.ttl(code), Some(Duration::from_secs(300)), "{code}");
    }
    assert_eq!(cache.ttl(403), None);
    let s = valid(&[
        ("auth-url", URL),
        ("auth-cache-key", "k"),
        ("auth-cache-duration", "90"),
    ]);
    let cache = s.cache.as_ref().unwrap();
    assert_eq!(
        cache.ttl(200),
        Some(Duration::from_secs(90)),
        "a time alone: 200 301 302"
    );
    assert_eq!(cache.ttl(401), None);
}

#[test]
fn templates_fill_in_request_facts_and_escape_what_the_client_controls() {
    let t = Template::parse(
        "http://a/$scheme/${host}/$http_host/$request_uri|$uri|$args|$is_args|$request_method|$remote_addr|$server_port|$http_x_team|$cookie_sid|$arg_y|cost$",
    )
    .unwrap();
    let mut h = http::HeaderMap::new();
    h.insert("x-team", "blue&red=1".parse().unwrap());
    h.insert(http::header::COOKIE, "a=1; sid=s/1".parse().unwrap());
    assert_eq!(
        t.render(&vars(&h, "app.example", Some("x=1&y=2"))).unwrap(),
        "http://a/https/app.example/App.Example:8443//app/page?x=1&y=2|/app/page|x=1&y=2|?|POST|203.0.113.7|8443|blue%26red%3D1|s%2F1|2|cost$"
    );
    assert_eq!(
        t.render(&vars(&h, "evil.example/x?", None)),
        Err(UnsafeHost("evil.example/x?".into())),
        "a Host that would change the URL is refused"
    );
    let mut basic = http::HeaderMap::new();
    // "bob:pw"
    basic.insert(
        http::header::AUTHORIZATION,
        "Basic Ym9iOnB3".parse().unwrap(),
    );
    let user = Template::parse("$remote_user/${http_authorization}").unwrap();
    assert_eq!(
        user.render(&vars(&basic, "x", None)).unwrap(),
        "bob/Basic%20Ym9iOnB3"
    );
    let empty = http::HeaderMap::new();
    assert!(
        t.render(&vars(&empty, "[::1]:8080", None))
            .unwrap()
            .contains("/[::1]:8080/")
    );
}

#[test]
fn invalid_values_fail_closed() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("auth-url", "/oauth2/auth")], "absolute http"),
        (&[("auth-url", "ftp://auth/x")], "absolute http"),
        (&[("auth-url", "$scheme://auth/x")], "absolute http"),
        (
            &[("auth-url", "http://auth/$nope")],
            "$nope is not a variable",
        ),
        (&[("auth-url", "http://auth/${host")], "unclosed"),
        (&[("auth-url", "http:// bad/")], "is not a URL"),
        (
            &[("auth-url", URL), ("auth-method", "get")],
            "is not one of GET",
        ),
        (
            &[("auth-url", URL), ("auth-method", "CONNECT")],
            "is not one of GET",
        ),
        (
            &[("auth-url", URL), ("auth-signin", "/start")],
            "absolute http",
        ),
        (
            &[("auth-url", URL), ("auth-signin-redirect-param", "r d")],
            "query parameter",
        ),
        (
            &[
                ("auth-url", URL),
                ("auth-response-headers", "X-Ok, Bad Header"),
            ],
            "not a header name",
        ),
        (
            &[("auth-url", URL), ("auth-response-headers", " , ")],
            "lists no header",
        ),
        (
            &[("auth-url", URL), ("auth-always-set-cookie", "yes")],
            "not a boolean",
        ),
        (
            &[("auth-url", URL), ("auth-request-redirect", "a\u{7f}b")],
            "header",
        ),
        (
            &[
                ("auth-url", URL),
                ("auth-cache-key", "k"),
                ("auth-cache-duration", "200 5x"),
            ],
            "unknown unit",
        ),
        (
            &[
                ("auth-url", URL),
                ("auth-cache-key", "k"),
                ("auth-cache-duration", "999 5m"),
            ],
            "status code",
        ),
        (
            &[
                ("auth-url", URL),
                ("auth-cache-key", "k"),
                ("auth-cache-duration", "200 0s"),
            ],
            "greater than zero",
        ),
        (
            &[
                ("auth-url", URL),
                ("auth-cache-key", "k"),
                ("auth-cache-duration", "200 5m,"),
            ],
            "empty entry",
        ),
        (
            &[("auth-url", URL), ("auth-cache-duration", "200 5m")],
            "without auth-cache-key",
        ),
        (&[("auth-signin", "https://x/start")], "without auth-url"),
        (&[("auth-response-headers", "X-User")], "without auth-url"),
    ];
    for (pairs, needle) in cases {
        invalid(pairs, needle);
    }
}

#[test]
fn proxy_set_headers_is_unsupported_and_fails_closed() {
    let (a, errors) = auth(&[
        ("auth-url", URL),
        ("auth-proxy-set-headers", "auth/headers"),
    ]);
    assert_eq!(a, Some(ExternalAuth::Invalid));
    one_error(&errors, "ConfigMap");
    assert!(matches!(errors[0], AnnotationError::Unsupported { .. }));
}

#[test]
fn our_prefix_wins_and_names_are_not_reported_unknown() {
    let (a, errors) = parse_map(&[
        ("portcullis.io/auth-url", "http://ours/auth"),
        ("nginx.ingress.kubernetes.io/auth-url", "http://theirs/auth"),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    let Some(ExternalAuth::Enforce(s)) = a.external_auth else {
        panic!("enforced");
    };
    let h = http::HeaderMap::new();
    assert_eq!(
        s.url.render(&vars(&h, "x", None)).unwrap(),
        "http://ours/auth"
    );
}
