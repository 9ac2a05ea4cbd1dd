use super::*;
use crate::model::annotations::{AnnotationError, parse as parse_all};
use k8s_openapi::ByteString;

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), v.to_string()))
        .collect()
}

fn parsed(pairs: &[(&str, &str)]) -> (Option<ClientCertAnnotation>, Vec<AnnotationError>) {
    let (a, errors) = parse_all(Some(&annotations(pairs)));
    (a.client_cert, errors)
}

fn settings(pairs: &[(&str, &str)]) -> ClientCertSettings {
    match parsed(pairs) {
        (Some(ClientCertAnnotation::Verify(s)), errors) if errors.is_empty() => s,
        other => panic!("{pairs:?}: {other:?}"),
    }
}

fn secret(data: &[(&str, &[u8])]) -> Secret {
    let mut s = Secret::default();
    s.metadata.namespace = Some("ns".into());
    s.metadata.name = Some("ca".into());
    s.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
            .collect(),
    );
    s
}

/// A self-signed CA, and a revocation list it signed, as PEM.
fn ca_and_crl() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = params.self_signed(&key).unwrap();
    let issuer = rcgen::Issuer::new(params, key);
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2100, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap();
    (ca.pem(), crl.pem().unwrap())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

#[test]
fn secret_alone_verifies_with_the_defaults() {
    assert_eq!(
        settings(&[("auth-tls-secret", "ns/ca")]),
        ClientCertSettings {
            secret_namespace: Some("ns".into()),
            secret_name: "ca".into(),
            verify: VerifyClient::On,
            depth: 1,
            pass_certificate: false,
            error_page: None,
            match_cn: None,
        }
    );
}

#[test]
fn every_setting_is_read() {
    let s = settings(&[
        ("auth-tls-secret", "ca"),
        ("auth-tls-verify-client", "optional_no_ca"),
        ("auth-tls-verify-depth", "3"),
        ("auth-tls-pass-certificate-to-upstream", "true"),
        ("auth-tls-error-page", "https://example.com/cert-help"),
        ("auth-tls-match-cn", "CN=(alice|bob)"),
    ]);
    assert_eq!(s.secret_namespace, None);
    assert_eq!(s.verify, VerifyClient::OptionalNoCa);
    assert_eq!(s.depth, 3);
    assert!(s.pass_certificate);
    assert_eq!(
        s.error_page.as_deref(),
        Some("https://example.com/cert-help")
    );
    assert_eq!(s.match_cn.as_deref(), Some("CN=(alice|bob)"));
    let optional = settings(&[
        ("auth-tls-secret", "ca"),
        ("auth-tls-verify-client", "optional"),
        ("auth-tls-verify-depth", "10"),
    ]);
    assert_eq!(optional.verify, VerifyClient::Optional);
    assert_eq!(optional.depth, 10);
}

#[test]
fn off_asks_for_nothing() {
    for off in [
        &[("auth-tls-secret", "ca"), ("auth-tls-verify-client", "off")][..],
        &[("auth-tls-verify-client", "off")],
        &[("ssl-redirect", "false")],
    ] {
        let (a, errors) = parsed(off);
        assert_eq!(a, None, "{off:?}");
        assert!(errors.is_empty(), "{off:?}: {errors:?}");
    }
}

#[test]
fn invalid_settings_fail_closed_and_are_reported() {
    for bad in [
        &[("auth-tls-secret", "ca"), ("auth-tls-verify-client", "yes")][..],
        &[("auth-tls-secret", "ca"), ("auth-tls-verify-client", "ON")],
        &[("auth-tls-secret", "a/b/c")],
        &[("auth-tls-secret", "Bad_NS/ca")],
        &[("auth-tls-secret", "/ca")],
        &[("auth-tls-secret", "ns/")],
        &[("auth-tls-secret", "ca"), ("auth-tls-verify-depth", "0")],
        &[("auth-tls-secret", "ca"), ("auth-tls-verify-depth", "11")],
        &[("auth-tls-secret", "ca"), ("auth-tls-verify-depth", "-1")],
        &[("auth-tls-secret", "ca"), ("auth-tls-verify-depth", "one")],
        &[
            ("auth-tls-secret", "ca"),
            ("auth-tls-pass-certificate-to-upstream", "yes"),
        ],
        &[("auth-tls-secret", "ca"), ("auth-tls-error-page", "/help")],
        &[
            ("auth-tls-secret", "ca"),
            ("auth-tls-error-page", "ftp://x/"),
        ],
        &[("auth-tls-secret", "ca"), ("auth-tls-match-cn", "CN=(")],
        &[("auth-tls-secret", "ca"), ("auth-tls-match-cn", "")],
        &[("auth-tls-verify-client", "on")],
        &[("auth-tls-match-cn", "CN=alice")],
        &[("auth-tls-verify-depth", "2")],
    ] {
        let (a, errors) = parsed(bad);
        assert_eq!(a, Some(ClientCertAnnotation::Invalid), "{bad:?}");
        assert!(
            matches!(&errors[..], [AnnotationError::Invalid { reason, .. }] if reason.contains("503")),
            "{bad:?}: {errors:?}"
        );
    }
}

#[test]
fn own_prefix_wins() {
    let mut all = annotations(&[("auth-tls-secret", "theirs")]);
    all.insert("portcullis.io/auth-tls-secret".into(), "ours".into());
    let (a, errors) = parse_all(Some(&all));
    assert!(errors.is_empty(), "{errors:?}");
    assert!(
        matches!(a.client_cert, Some(ClientCertAnnotation::Verify(s)) if s.secret_name == "ours")
    );
}

#[test]
fn resolution_reads_ca_and_crl() {
    let a = parsed(&[("auth-tls-secret", "ns/ca"), ("auth-tls-match-cn", "CN=a")])
        .0
        .unwrap();
    let (ca, crl) = ca_and_crl();
    let s = secret(&[(CA_KEY, ca.as_bytes()), (CRL_KEY, crl.as_bytes())]);
    let policy = resolve(&a, "ns", &provider(), |ns, name| {
        assert_eq!((ns, name), ("ns", "ca"));
        Some(&s)
    })
    .unwrap();
    let ClientCertPolicy::Enforce(auth) = policy else {
        panic!("{policy:?}")
    };
    assert!(auth.match_cn.as_ref().unwrap().is_match("CN=a"));
    assert!(auth.verifier.offer_client_auth());
    assert!(!auth.verifier.client_auth_mandatory(), "answered over HTTP");
    assert_eq!(auth.verifier.root_hint_subjects().len(), 1);
}

#[test]
fn policies_differ_by_ca_material() {
    let a = parsed(&[("auth-tls-secret", "ca")]).0.unwrap();
    let (ca1, _) = ca_and_crl();
    let (ca2, _) = ca_and_crl();
    let one = secret(&[(CA_KEY, ca1.as_bytes())]);
    let two = secret(&[(CA_KEY, ca2.as_bytes())]);
    let resolved = |s: &Secret| resolve(&a, "ns", &provider(), |_, _| Some(s)).unwrap();
    assert_eq!(resolved(&one), resolved(&one));
    assert_ne!(resolved(&one), resolved(&two));
}

#[test]
fn unresolvable_secrets_fail_closed() {
    let a = parsed(&[("auth-tls-secret", "ca")]).0.unwrap();
    assert!(matches!(
        resolve(&a, "ns", &provider(), |_, _| None),
        Err(ResolveError::Missing(_))
    ));
    let (ca, _) = ca_and_crl();
    let garbage = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
    let bad_crl = b"-----BEGIN X509 CRL-----\n!!!\n-----END X509 CRL-----\n";
    for data in [
        &[("tls.crt", ca.as_bytes())][..],
        &[(CA_KEY, b"")],
        &[(CA_KEY, b"not PEM at all")],
        &[(CA_KEY, garbage)],
        &[(CA_KEY, ca.as_bytes()), (CRL_KEY, b"")],
        &[(CA_KEY, ca.as_bytes()), (CRL_KEY, bad_crl)],
        &[(CA_KEY, ca.as_bytes()), (CRL_KEY, ca.as_bytes())],
    ] {
        let s = secret(data);
        let err = resolve(&a, "ns", &provider(), |_, _| Some(&s))
            .expect_err("fails closed")
            .to_string();
        assert!(err.contains("ns/ca") && err.contains("503"), "{err}");
    }
}

#[test]
fn secrets_of_other_namespaces_are_refused() {
    let a = parsed(&[("auth-tls-secret", "other/ca")]).0.unwrap();
    let (ca, _) = ca_and_crl();
    let s = secret(&[(CA_KEY, ca.as_bytes())]);
    assert!(matches!(
        resolve(&a, "ns", &provider(), |_, _| Some(&s)),
        Err(ResolveError::OtherNamespace(_))
    ));
    assert_eq!(
        referenced_secret(Some(&annotations(&[("auth-tls-secret", "other/ca")])), "ns"),
        None,
        "never read"
    );
}

#[test]
fn referenced_secret_names_the_ca_secret() {
    for value in ["ca", "ns/ca"] {
        assert_eq!(
            referenced_secret(Some(&annotations(&[("auth-tls-secret", value)])), "ns"),
            Some(NamespacedName::new("ns", "ca"))
        );
    }
    let off = annotations(&[("auth-tls-secret", "ca"), ("auth-tls-verify-client", "off")]);
    assert_eq!(referenced_secret(Some(&off), "ns"), None);
    assert_eq!(referenced_secret(None, "ns"), None);
}
