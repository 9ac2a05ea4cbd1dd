use super::super::tests::{one_error, parse_map};
use super::*;

const P: &str = "nginx.ingress.kubernetes.io/";

fn cors(pairs: &[(&str, &str)]) -> (Option<Cors>, Vec<AnnotationError>) {
    let mut all: Vec<(String, String)> = vec![(format!("{P}enable-cors"), "true".into())];
    all.extend(
        pairs
            .iter()
            .map(|(k, v)| (format!("{P}{k}"), v.to_string())),
    );
    let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (a, errors) = parse_map(&refs);
    (a.cors, errors)
}

fn valid(pairs: &[(&str, &str)]) -> Cors {
    let (c, errors) = cors(pairs);
    assert!(errors.is_empty(), "{errors:?}");
    c.expect("CORS is on")
}

fn header<'a>(c: &'a Cors, name: &HeaderName) -> Option<&'a str> {
    c.headers()
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.to_str().ok())
}

fn admits(c: &Cors, origin: &str) -> bool {
    c.allow_origin(Some(&HeaderValue::from_str(origin).unwrap()))
        .is_some()
}

#[test]
fn off_unless_enabled() {
    let (a, errors) = parse_map(&[(&format!("{P}cors-allow-origin"), "https://a.test")]);
    assert!(errors.is_empty() && a.cors.is_none());
    let (a, _) = parse_map(&[(&format!("{P}enable-cors"), "false")]);
    assert!(a.cors.is_none());
    let (a, errors) = parse_map(&[(&format!("{P}enable-cors"), "yes")]);
    assert!(a.cors.is_none());
    one_error(&errors, "not a boolean");
}

#[test]
fn defaults_are_ingress_nginx_s_without_credentials_for_every_origin() {
    let c = valid(&[]);
    assert!(!c.varies_by_origin());
    assert_eq!(c.allow_origin(None).unwrap(), "*");
    assert_eq!(
        header(&c, &header::ACCESS_CONTROL_ALLOW_METHODS),
        Some("GET, PUT, POST, DELETE, PATCH, OPTIONS")
    );
    assert_eq!(
        header(&c, &header::ACCESS_CONTROL_ALLOW_HEADERS),
        Some(DEFAULT_HEADERS)
    );
    assert_eq!(header(&c, &header::ACCESS_CONTROL_MAX_AGE), Some("1728000"));
    assert_eq!(header(&c, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
    assert_eq!(header(&c, &header::ACCESS_CONTROL_EXPOSE_HEADERS), None);
}

#[test]
fn credentials_with_every_origin_are_refused_and_reported() {
    let (c, errors) = cors(&[("cors-allow-credentials", "true")]);
    one_error(&errors, "browsers refuse credentials");
    let c = c.expect("CORS stays on, without credentials");
    assert_eq!(c.allow_origin(None).unwrap(), "*");
    assert_eq!(header(&c, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS), None);
}

#[test]
fn listed_origins_get_credentials_by_default_and_vary() {
    let c = valid(&[(
        "cors-allow-origin",
        "https://app.test, http://localhost:3000",
    )]);
    assert!(c.varies_by_origin());
    assert_eq!(
        header(&c, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
        Some("true")
    );
    assert!(admits(&c, "https://app.test"));
    assert!(admits(&c, "HTTPS://App.Test"), "case-insensitive");
    assert!(admits(&c, "http://localhost:3000"));
    assert!(!admits(&c, "http://app.test"), "scheme counts");
    assert!(!admits(&c, "https://app.test:8443"), "port counts");
    assert!(
        !admits(&c, "https://app.test.evil.test"),
        "anchored at the end"
    );
    assert!(
        !admits(&c, "https://evil-app.test"),
        "anchored at the start"
    );
    assert!(!admits(&c, "null"));
    assert!(c.allow_origin(None).is_none());
    let echoed = c.allow_origin(Some(&HeaderValue::from_static("https://APP.test")));
    assert_eq!(echoed.unwrap(), "https://APP.test", "the origin is echoed");

    let off = valid(&[
        ("cors-allow-origin", "https://app.test"),
        ("cors-allow-credentials", "false"),
    ]);
    assert_eq!(
        header(&off, &header::ACCESS_CONTROL_ALLOW_CREDENTIALS),
        None
    );
}

#[test]
fn wildcard_covers_exactly_one_label() {
    let c = valid(&[("cors-allow-origin", "https://*.example.com")]);
    assert!(admits(&c, "https://app.example.com"));
    assert!(admits(&c, "https://A-1.Example.COM"));
    assert!(
        !admits(&c, "https://example.com"),
        "the label must be there"
    );
    assert!(!admits(&c, "https://a.b.example.com"), "one label only");
    assert!(!admits(&c, "http://app.example.com"));
    assert!(!admits(&c, "https://app.example.com:444"));
    assert!(!admits(&c, "https://app.example.com.evil.test"));
    assert!(!admits(&c, "https://evil.test/.example.com"));
    let port = valid(&[("cors-allow-origin", "https://*.example.com:8443")]);
    assert!(admits(&port, "https://x.example.com:8443"));
    assert!(!admits(&port, "https://x.example.com"));
}

#[test]
fn a_star_anywhere_admits_every_origin() {
    let c = valid(&[("cors-allow-origin", "https://a.test, *")]);
    assert!(!c.varies_by_origin());
    assert!(admits(&c, "https://anything.test"));
}

#[test]
fn methods_headers_expose_and_max_age_are_written_back_normalised() {
    let c = valid(&[
        ("cors-allow-origin", "https://a.test"),
        ("cors-allow-methods", "GET,POST , PUT"),
        ("cors-allow-headers", "X-Custom,Content-Type"),
        ("cors-expose-headers", "X-Total-Count, *"),
        ("cors-max-age", "0"),
    ]);
    assert_eq!(
        header(&c, &header::ACCESS_CONTROL_ALLOW_METHODS),
        Some("GET, POST, PUT")
    );
    assert_eq!(
        header(&c, &header::ACCESS_CONTROL_ALLOW_HEADERS),
        Some("X-Custom, Content-Type")
    );
    assert_eq!(
        header(&c, &header::ACCESS_CONTROL_EXPOSE_HEADERS),
        Some("X-Total-Count, *")
    );
    assert_eq!(header(&c, &header::ACCESS_CONTROL_MAX_AGE), Some("0"));
}

#[test]
fn an_invalid_value_turns_cors_off_and_is_reported() {
    for (name, value, needle) in [
        ("cors-allow-origin", "app.test", "no scheme"),
        ("cors-allow-origin", "https://app.test/", "no path"),
        ("cors-allow-origin", "https://a.*.test", "wildcard"),
        ("cors-allow-origin", "https://*", "bad host"),
        ("cors-allow-origin", "https://a.test:99999", "bad port"),
        ("cors-allow-origin", "https://a.test:0", "bad port"),
        ("cors-allow-origin", "https://ok.test, ftp//x", "no scheme"),
        ("cors-allow-origin", " , ", "lists no origin"),
        ("cors-allow-methods", "GET;POST", "not a method"),
        ("cors-allow-methods", "", "lists no method"),
        (
            "cors-allow-headers",
            "X-Ok, Bad Header",
            "not a header name",
        ),
        ("cors-expose-headers", "X-(x)", "not a header name"),
        ("cors-max-age", "-1", "not a number"),
        ("cors-max-age", "1d", "not a number"),
        ("cors-allow-credentials", "maybe", "not a boolean"),
    ] {
        let (c, errors) = cors(&[(name, value)]);
        assert!(c.is_none(), "{name}: {value:?} keeps CORS on");
        one_error(&errors, needle);
        one_error(&errors, "CORS is off for this Ingress");
    }
}

#[test]
fn ours_wins_over_ingress_nginx() {
    let (a, errors) = parse_map(&[
        ("portcullis.io/enable-cors", "true"),
        ("portcullis.io/cors-allow-origin", "https://ours.test"),
        (&format!("{P}cors-allow-origin"), "https://theirs.test"),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    let c = a.cors.unwrap();
    assert!(admits(&c, "https://ours.test") && !admits(&c, "https://theirs.test"));
}
