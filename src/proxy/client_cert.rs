//! The client-certificate step: a request on a route with `auth-tls-*` passes only with a certificate
//! the route's CA accepts (unless `optional`/`optional_no_ca` say otherwise), and goes upstream with
//! `ssl-client-verify`, `ssl-client-subject-dn`, `ssl-client-issuer-dn` and, when asked,
//! `ssl-client-cert`. Copies of those headers sent by the client are always removed, on every route.
//!
//! As nginx: a missing or failed certificate is answered 400 after the handshake (or redirected to
//! `auth-tls-error-page`), a subject that `auth-tls-match-cn` refuses 403. A request whose
//! connection was not asked for a certificate (its SNI named another host, or none) is answered 421,
//! so the client opens a connection for this host; an unusable policy answers 503.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use super::response::{self, Body};
use crate::model::annotations::client_cert::{ClientAuth, ClientCertPolicy, VerifyClient};

pub const SSL_CLIENT_VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
pub const SSL_CLIENT_SUBJECT_DN: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
pub const SSL_CLIENT_ISSUER_DN: HeaderName = HeaderName::from_static("ssl-client-issuer-dn");
pub const SSL_CLIENT_CERT: HeaderName = HeaderName::from_static("ssl-client-cert");

/// What the TLS handshake learnt about a client certificate, and the connection's last check of it.
/// It is only checked against a CA per request, since the CA depends on the route.
#[derive(Debug, Default)]
pub struct ClientCertificate {
    /// Whether the handshake asked for one (its server name needed it).
    requested: bool,
    /// The chain the client sent, its own certificate first.
    chain: Option<Arc<[CertificateDer<'static>]>>,
    /// The last check, reused by the connection's next requests under the same policy while the
    /// certificate is valid: verification and DN formatting cost more than the rest of a request.
    memo: ArcSwapOption<Memo>,
}

impl ClientCertificate {
    /// Plain HTTP, or a handshake whose server name needed no certificate.
    pub fn not_requested() -> ClientCertificate {
        ClientCertificate::default()
    }

    /// A handshake that asked for a certificate, and the chain the client sent, if any.
    pub fn requested(chain: Option<&[CertificateDer<'static>]>) -> ClientCertificate {
        ClientCertificate {
            requested: true,
            chain: chain.filter(|c| !c.is_empty()).map(Arc::from),
            memo: ArcSwapOption::empty(),
        }
    }

    /// The check of this certificate under `auth`, remembered for the connection's next requests.
    fn checked(&self, auth: &Arc<ClientAuth>) -> Arc<Checked> {
        let now = UnixTime::now();
        if let Some(memo) = self.memo.load().as_ref()
            && memo.valid_until.is_none_or(|until| now < until)
        {
            if Arc::ptr_eq(&memo.auth, auth) {
                return memo.checked.clone();
            }
            // A new configuration generation with the same CA and settings: still the same check.
            if *memo.auth == **auth {
                self.memo.store(Some(Arc::new(Memo {
                    auth: auth.clone(),
                    checked: memo.checked.clone(),
                    valid_until: memo.valid_until,
                })));
                return memo.checked.clone();
            }
        }
        let (checked, valid_until) = examine(auth, self.chain.as_deref(), now);
        let checked = Arc::new(checked);
        if checked.verdict != Verdict::Failed {
            self.memo.store(Some(Arc::new(Memo {
                auth: auth.clone(),
                checked: checked.clone(),
                valid_until,
            })));
        }
        checked
    }
}

impl Clone for ClientCertificate {
    fn clone(&self) -> Self {
        ClientCertificate {
            requested: self.requested,
            chain: self.chain.clone(),
            memo: ArcSwapOption::empty(),
        }
    }
}

#[derive(Debug)]
struct Memo {
    auth: Arc<ClientAuth>,
    checked: Arc<Checked>,
    /// When a verified certificate expires; `None` when there is none.
    valid_until: Option<UnixTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    None,
    Success,
    Failed,
}

/// One certificate checked under one policy: the verdict and what goes upstream.
#[derive(Debug)]
struct Checked {
    verdict: Verdict,
    /// The subject DN (`""` without a certificate), for `auth-tls-match-cn`.
    subject: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Checks the request's connection against the route's policy. `None`: the request goes on, with the
/// upstream headers set in `headers`; otherwise the answer.
pub fn check(
    policy: Option<&ClientCertPolicy>,
    cert: &ClientCertificate,
    https: bool,
    headers: &mut HeaderMap,
) -> Option<Response<Body>> {
    for name in [
        SSL_CLIENT_VERIFY,
        SSL_CLIENT_SUBJECT_DN,
        SSL_CLIENT_ISSUER_DN,
        SSL_CLIENT_CERT,
    ] {
        headers.remove(name);
    }
    let auth = match policy? {
        ClientCertPolicy::Enforce(auth) => auth,
        ClientCertPolicy::Unavailable => {
            return Some(response::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "client certificates cannot be checked for this host",
            ));
        }
    };
    if https && !cert.requested {
        return Some(response::error(
            StatusCode::MISDIRECTED_REQUEST,
            "this host needs a client certificate: connect with its name in SNI",
        ));
    }
    let checked = cert.checked(auth);
    match (checked.verdict, auth.settings.verify) {
        (Verdict::None, VerifyClient::On) => {
            return Some(refuse(auth, "No required SSL certificate was sent"));
        }
        (Verdict::Failed, VerifyClient::On | VerifyClient::Optional) => {
            return Some(refuse(auth, "The SSL certificate error"));
        }
        _ => {}
    }
    if let Some(pattern) = &auth.match_cn
        && !pattern.is_match(&checked.subject)
    {
        return Some(response::error(
            StatusCode::FORBIDDEN,
            "client certificate unauthorized",
        ));
    }
    for (name, value) in &checked.headers {
        headers.insert(name, value.clone());
    }
    None
}

/// Verifies `chain` under `auth` at `now`: the verdict, the upstream headers, and when a verified
/// certificate expires.
fn examine(
    auth: &ClientAuth,
    chain: Option<&[CertificateDer<'static>]>,
    now: UnixTime,
) -> (Checked, Option<UnixTime>) {
    let outcome = match chain {
        None => Outcome::None,
        Some(chain) => verify(auth, chain, now),
    };
    let (verdict, verify_value, leaf) = match &outcome {
        Outcome::None => (Verdict::None, HeaderValue::from_static("NONE"), None),
        Outcome::Success(leaf) => (
            Verdict::Success,
            HeaderValue::from_static("SUCCESS"),
            Some(*leaf),
        ),
        Outcome::Failed(leaf, reason) => (
            Verdict::Failed,
            HeaderValue::from_str(&format!("FAILED:{reason}"))
                .unwrap_or(HeaderValue::from_static("FAILED")),
            Some(*leaf),
        ),
    };
    let mut headers = vec![(SSL_CLIENT_VERIFY, verify_value)];
    let mut subject = String::new();
    let mut valid_until = None;
    if let Some(leaf) = leaf
        && let Ok((_, cert)) = X509Certificate::from_der(leaf.as_ref())
    {
        subject = rfc2253(cert.subject());
        for (name, value) in [
            (SSL_CLIENT_SUBJECT_DN, &subject),
            (SSL_CLIENT_ISSUER_DN, &rfc2253(cert.issuer())),
        ] {
            if let Ok(value) = HeaderValue::from_str(value)
                && !value.is_empty()
            {
                headers.push((name, value));
            }
        }
        valid_until = u64::try_from(cert.validity().not_after.timestamp())
            .ok()
            .map(|secs| UnixTime::since_unix_epoch(Duration::from_secs(secs)));
    }
    if auth.settings.pass_certificate
        && let Some(leaf) = leaf
        && let Ok(value) = HeaderValue::from_str(&escaped_pem(leaf))
    {
        headers.push((SSL_CLIENT_CERT, value));
    }
    let checked = Checked {
        verdict,
        subject,
        headers,
    };
    (checked, valid_until.filter(|_| verdict == Verdict::Success))
}

/// What the client's certificate amounts to under the route's CA.
enum Outcome<'c> {
    None,
    Success(&'c CertificateDer<'static>),
    /// The certificate, and nginx's wording of why it failed.
    Failed(&'c CertificateDer<'static>, String),
}

/// Verifies the chain against the route's CA and revocation lists, at the current time. At most
/// `auth-tls-verify-depth - 1` of the client's intermediates are used, which limits the chain length
/// as nginx's depth does (webpki has no depth setting of its own).
fn verify<'c>(
    auth: &ClientAuth,
    chain: &'c [CertificateDer<'static>],
    now: UnixTime,
) -> Outcome<'c> {
    let (leaf, intermediates) = match chain.split_first() {
        Some(parts) => parts,
        None => return Outcome::None,
    };
    let intermediates = &intermediates[..intermediates
        .len()
        .min(auth.settings.depth.saturating_sub(1))];
    match auth.verifier.verify_client_cert(leaf, intermediates, now) {
        Ok(_) => Outcome::Success(leaf),
        Err(e) => Outcome::Failed(leaf, reason(&e)),
    }
}

/// The reasons of OpenSSL's `X509_verify_cert_error_string`, which backends of ingress-nginx read in
/// `ssl-client-verify`, for the common cases.
fn reason(error: &rustls::Error) -> String {
    use rustls::CertificateError as E;
    match error {
        rustls::Error::InvalidCertificate(e) => match e {
            E::Expired | E::ExpiredContext { .. } => "certificate has expired".into(),
            E::NotValidYet | E::NotValidYetContext { .. } => "certificate is not yet valid".into(),
            E::Revoked => "certificate revoked".into(),
            E::UnknownIssuer => "unable to get local issuer certificate".into(),
            E::BadSignature => "certificate signature failure".into(),
            E::UnknownRevocationStatus => "unable to get certificate CRL".into(),
            E::ExpiredRevocationList | E::ExpiredRevocationListContext { .. } => {
                "CRL has expired".into()
            }
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

fn refuse(auth: &ClientAuth, message: &str) -> Response<Body> {
    match &auth.error_page {
        Some(location) => {
            let mut resp = response::error(StatusCode::FOUND, message);
            resp.headers_mut()
                .insert(header::LOCATION, location.clone());
            resp
        }
        None => response::error(StatusCode::BAD_REQUEST, message),
    }
}

/// A distinguished name as nginx's `$ssl_client_s_dn` writes it (RFC 2253: most specific first,
/// `,` between RDNs, special characters escaped).
fn rfc2253(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            let parts: Vec<String> = rdn
                .iter()
                .map(|attr| {
                    let key = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| attr.attr_type().to_id_string());
                    let value = match attr.as_str() {
                        Ok(v) => escape_dn_value(v),
                        Err(_) => format!(
                            "#{}",
                            attr.attr_value()
                                .data
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect::<String>()
                        ),
                    };
                    format!("{key}={value}")
                })
                .collect();
            parts.join("+")
        })
        .collect();
    rdns.reverse();
    rdns.join(",")
}

fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The certificate as PEM, URL-escaped as nginx's `$ssl_client_escaped_cert` (every byte but
/// letters, digits and `-._~` as `%XX`).
fn escaped_pem(cert: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut out = String::with_capacity(pem.len() * 3 / 2);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::annotations::client_cert::{
        ClientCertAnnotation, ClientCertSettings, resolve,
    };

    fn ca_params(cn: &str) -> rcgen::CertificateParams {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
    }

    /// A root CA's PEM, and a client chain (leaf, intermediate) issued below it.
    fn chain() -> (String, Vec<CertificateDer<'static>>) {
        let root = rcgen::CertifiedIssuer::self_signed(
            ca_params("Root"),
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        let intermediate = rcgen::CertifiedIssuer::signed_by(
            ca_params("Intermediate"),
            rcgen::KeyPair::generate().unwrap(),
            &root,
        )
        .unwrap();
        let mut leaf = rcgen::CertificateParams::new(Vec::new()).unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "alice, the \"admin\"");
        leaf.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Shop");
        let leaf = leaf
            .signed_by(&rcgen::KeyPair::generate().unwrap(), &intermediate)
            .unwrap();
        (
            root.pem(),
            vec![leaf.der().clone(), intermediate.der().clone()],
        )
    }

    fn auth(ca: &str, depth: usize) -> Arc<ClientAuth> {
        auth_with(&[("ca.crt", ca)], depth)
    }

    fn auth_with(data: &[(&str, &str)], depth: usize) -> Arc<ClientAuth> {
        let annotation = ClientCertAnnotation::Verify(ClientCertSettings {
            secret_namespace: None,
            secret_name: "ca".into(),
            verify: VerifyClient::On,
            depth,
            pass_certificate: false,
            error_page: None,
            match_cn: None,
        });
        let secret = k8s_openapi::api::core::v1::Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            k8s_openapi::ByteString(v.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        match resolve(&annotation, "ns", &provider, |_, _| Some(&secret)) {
            Ok(ClientCertPolicy::Enforce(auth)) => auth,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verify_depth_limits_the_chain() {
        let (root, chain) = chain();
        assert!(matches!(
            verify(&auth(&root, 1), &chain, UnixTime::now()),
            Outcome::Failed(_, reason) if reason == "unable to get local issuer certificate"
        ));
        assert!(matches!(
            verify(&auth(&root, 2), &chain, UnixTime::now()),
            Outcome::Success(_)
        ));
        assert!(matches!(
            verify(&auth(&root, 3), &chain, UnixTime::now()),
            Outcome::Success(_)
        ));
        assert!(
            matches!(
                verify(&auth(&root, 2), &chain[..1], UnixTime::now()),
                Outcome::Failed(..)
            ),
            "the intermediate must be sent"
        );
    }

    #[test]
    fn revocation_lists_revoke_and_expire() {
        let root = rcgen::CertifiedIssuer::self_signed(
            ca_params("Root"),
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        let leaf = |serial: u64| {
            let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
            params.serial_number = Some(rcgen::SerialNumber::from(serial));
            params
                .signed_by(&rcgen::KeyPair::generate().unwrap(), &root)
                .unwrap()
                .der()
                .clone()
        };
        let crl = |next_update: (i32, u8, u8), revoked: Option<u64>| {
            rcgen::CertificateRevocationListParams {
                this_update: rcgen::date_time_ymd(2020, 1, 1),
                next_update: rcgen::date_time_ymd(next_update.0, next_update.1, next_update.2),
                crl_number: rcgen::SerialNumber::from(1u64),
                issuing_distribution_point: None,
                revoked_certs: revoked
                    .map(|serial| rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from(serial),
                        revocation_time: rcgen::date_time_ymd(2020, 1, 1),
                        reason_code: None,
                        invalidity_date: None,
                    })
                    .into_iter()
                    .collect(),
                key_identifier_method: rcgen::KeyIdMethod::Sha256,
            }
            .signed_by(&root)
            .unwrap()
            .pem()
            .unwrap()
        };
        let (good, revoked) = ([leaf(7)], [leaf(8)]);
        let fresh = auth_with(
            &[
                ("ca.crt", &root.pem()),
                ("ca.crl", &crl((2100, 1, 1), Some(8))),
            ],
            1,
        );
        let failure = |auth: &ClientAuth, chain: &[CertificateDer<'static>]| match verify(
            auth,
            chain,
            UnixTime::now(),
        ) {
            Outcome::Success(_) => None,
            Outcome::Failed(_, reason) => Some(reason),
            Outcome::None => Some("none".into()),
        };
        assert_eq!(failure(&fresh, &good), None);
        assert_eq!(
            failure(&fresh, &revoked).as_deref(),
            Some("certificate revoked")
        );
        let stale = auth_with(
            &[
                ("ca.crt", &root.pem()),
                ("ca.crl", &crl((2021, 1, 1), None)),
            ],
            1,
        );
        assert_eq!(failure(&stale, &good).as_deref(), Some("CRL has expired"));
    }

    #[test]
    fn a_remembered_check_is_only_reused_under_the_same_policy() {
        let (other_root, _) = chain();
        let (root, chain) = chain();
        let cert = ClientCertificate::requested(Some(&chain));
        let ours = ClientCertPolicy::Enforce(auth(&root, 2));
        let theirs = ClientCertPolicy::Enforce(auth(&other_root, 2));
        let status = |policy: &ClientCertPolicy| {
            let mut headers = HeaderMap::new();
            match check(Some(policy), &cert, true, &mut headers) {
                Some(refused) => refused.status().as_u16(),
                None => {
                    assert_eq!(headers[&SSL_CLIENT_VERIFY], "SUCCESS");
                    200
                }
            }
        };
        assert_eq!(status(&ours), 200);
        assert_eq!(status(&ours), 200, "remembered");
        assert_eq!(status(&theirs), 400, "another CA checks again");
        assert_eq!(status(&ours), 200);
        let rebuilt = ClientCertPolicy::Enforce(auth(&root, 2));
        assert_eq!(status(&rebuilt), 200, "the same CA in a new generation");
        let deeper = ClientCertPolicy::Enforce(auth(&root, 1));
        assert_eq!(status(&deeper), 400, "other settings check again");
        let plain = ClientCertificate::not_requested();
        let mut headers = HeaderMap::new();
        let refused = check(Some(&ours), &plain, true, &mut headers).map(|r| r.status());
        assert_eq!(refused, Some(StatusCode::MISDIRECTED_REQUEST));
    }

    #[test]
    fn distinguished_names_read_most_specific_first() {
        let (_, chain) = chain();
        let (_, cert) = X509Certificate::from_der(chain[0].as_ref()).unwrap();
        assert_eq!(
            rfc2253(cert.subject()),
            "O=Shop,CN=alice\\, the \\\"admin\\\""
        );
        assert_eq!(rfc2253(cert.issuer()), "CN=Intermediate");
    }

    #[test]
    fn dn_values_are_escaped_as_rfc_2253() {
        assert_eq!(escape_dn_value("Acme, Inc."), "Acme\\, Inc.");
        assert_eq!(escape_dn_value(" lead#"), "\\ lead#");
        assert_eq!(escape_dn_value("#x "), "\\#x\\ ");
        assert_eq!(escape_dn_value("a+b;c"), "a\\+b\\;c");
    }

    #[test]
    fn pem_is_url_escaped() {
        let escaped = escaped_pem(&CertificateDer::from(vec![0xfb, 0xff]));
        assert_eq!(
            escaped,
            "-----BEGIN%20CERTIFICATE-----%0A%2B%2F8%3D%0A-----END%20CERTIFICATE-----%0A"
        );
    }
}
