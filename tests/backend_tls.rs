//! `proxy-ssl-*` in manifest mode against real TLS backends presenting trusted, untrusted and
//! wrong-name certificates, and one that requires a client certificate.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::manifests;
use support::pki::TestCert;
use support::*;
use tokio::net::TcpListener;

const NS: &str = "web";
const HOST: &str = "app.test";
const NAME: &str = "api.internal";

/// A TLS backend presenting `cert`, optionally requiring a client certificate issued by
/// `client_ca`; answers `ok` over HTTP/1.1 and remembers the SNI of each handshake.
struct TlsBackend {
    addr: SocketAddr,
    sni: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_backend(cert: &TestCert, client_ca: Option<&TestCert>) -> TlsBackend {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.trust_anchor()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sni = Arc::new(Mutex::new(Vec::new()));
    let seen = sni.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let name = tls.get_ref().1.server_name().map(str::to_string);
                seen.lock().unwrap().push(name);
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    TlsBackend { addr, sni, task }
}

/// The controller with one HTTPS-backend Ingress for `HOST` with `annotations`, and `secrets`.
async fn setup(
    backend: SocketAddr,
    annotations: &[(&str, &str)],
    secrets: &[k8s_openapi::api::core::v1::Secret],
) -> (ManifestDir, Controller) {
    let dir = ManifestDir::new();
    let svc = manifests::service_with_endpoints(NS, "app", 80, None, &[backend], true);
    let mut objects = svc.objects();
    for s in secrets {
        objects.push(s);
    }
    dir.write("objects.yaml", &objects);
    let mut ingress = IngressBuilder::new(NS, "app")
        .route(Some(HOST), "app")
        .annotation("nginx.ingress.kubernetes.io/backend-protocol", "HTTPS");
    for (k, v) in annotations {
        ingress = ingress.annotation(&format!("nginx.ingress.kubernetes.io/{k}"), v);
    }
    dir.write("ingress.yaml", &[&ingress.build()]);
    let ctl = Controller::start(dir.path(), &[]).await;
    (dir, ctl)
}

fn ca_pem(cert: &TestCert) -> String {
    let der = cert.trust_anchor();
    let b64 = support::controller::base64(der.as_ref());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

async fn status(ctl: &Controller) -> u16 {
    support::client::http_status(ctl.addrs.http, HOST, "/").await
}

const VERIFY: &[(&str, &str)] = &[
    ("proxy-ssl-secret", "backend-ca"),
    ("proxy-ssl-verify", "on"),
    ("proxy-ssl-name", NAME),
];

#[tokio::test]
async fn a_backend_with_a_trusted_certificate_for_the_name_is_reached() {
    let cert = TestCert::ca_signed(&[NAME], &rcgen::PKCS_ECDSA_P256_SHA256);
    let backend = tls_backend(&cert, None).await;
    let secret = manifests::opaque_secret(NS, "backend-ca", &[("ca.crt", &ca_pem(&cert))]);
    let (_dir, ctl) = setup(backend.addr, VERIFY, &[secret]).await;
    assert_eq!(status(&ctl).await, 200);
    assert_eq!(
        backend.sni.lock().unwrap().first().cloned(),
        Some(None),
        "no SNI unless proxy-ssl-server-name: on"
    );
}

#[tokio::test]
async fn untrusted_and_wrong_name_certificates_are_refused() {
    let trusted = TestCert::ca_signed(&[NAME], &rcgen::PKCS_ECDSA_P256_SHA256);
    let secret = manifests::opaque_secret(NS, "backend-ca", &[("ca.crt", &ca_pem(&trusted))]);
    // Another CA's certificate for the right name.
    let untrusted = TestCert::ca_signed(&[NAME], &rcgen::PKCS_ECDSA_P256_SHA256);
    let backend = tls_backend(&untrusted, None).await;
    let (_dir, ctl) = setup(backend.addr, VERIFY, std::slice::from_ref(&secret)).await;
    assert_eq!(status(&ctl).await, 502);
    drop(ctl);
    // The right CA, another name: `proxy-ssl-name` must match.
    let backend = tls_backend(&trusted, None).await;
    let wrong_name = [
        ("proxy-ssl-secret", "backend-ca"),
        ("proxy-ssl-verify", "on"),
        ("proxy-ssl-name", "other.internal"),
    ];
    let (_dir, ctl) = setup(backend.addr, &wrong_name, std::slice::from_ref(&secret)).await;
    assert_eq!(status(&ctl).await, 502);
    drop(ctl);
    // Without proxy-ssl-verify, as before: not verified.
    let (_dir, ctl) = setup(backend.addr, &[("proxy-ssl-name", "other.internal")], &[]).await;
    assert_eq!(status(&ctl).await, 200);
}

#[tokio::test]
async fn a_missing_or_unusable_secret_with_verify_on_answers_503() {
    let cert = TestCert::ca_signed(&[NAME], &rcgen::PKCS_ECDSA_P256_SHA256);
    let backend = tls_backend(&cert, None).await;
    let (_dir, ctl) = setup(backend.addr, VERIFY, &[]).await;
    assert_eq!(status(&ctl).await, 503);
    ctl.wait_for_log(&["proxy-ssl-secret", "backend-ca", "does not exist"])
        .await;
    drop(ctl);
    let garbage = manifests::opaque_secret(NS, "backend-ca", &[("ca.crt", "not a certificate")]);
    let (_dir, ctl) = setup(backend.addr, VERIFY, &[garbage]).await;
    assert_eq!(status(&ctl).await, 503);
    drop(ctl);
    let no_name = [
        ("proxy-ssl-secret", "backend-ca"),
        ("proxy-ssl-verify", "on"),
    ];
    let secret = manifests::opaque_secret(NS, "backend-ca", &[("ca.crt", &ca_pem(&cert))]);
    let (_dir, ctl) = setup(backend.addr, &no_name, &[secret]).await;
    assert_eq!(status(&ctl).await, 503);
    ctl.wait_for_log(&["proxy-ssl-name"]).await;
}

#[tokio::test]
async fn a_client_certificate_from_the_secret_reaches_a_backend_that_requires_one() {
    let server = TestCert::ca_signed(&[NAME], &rcgen::PKCS_ECDSA_P256_SHA256);
    let client = TestCert::ca_signed(&["portcullis"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let backend = tls_backend(&server, Some(&client)).await;
    let ca_only = manifests::opaque_secret(NS, "backend-ca", &[("ca.crt", &ca_pem(&server))]);
    let (_dir, ctl) = setup(backend.addr, VERIFY, &[ca_only]).await;
    assert_eq!(status(&ctl).await, 502, "no client certificate: refused");
    drop(ctl);
    let with_client = manifests::opaque_secret(
        NS,
        "backend-ca",
        &[
            ("ca.crt", &ca_pem(&server)),
            ("tls.crt", &client.chain_pem),
            ("tls.key", &client.key_pem),
        ],
    );
    let mut annotations = VERIFY.to_vec();
    annotations.push(("proxy-ssl-server-name", "on"));
    let (dir, ctl) = setup(backend.addr, &annotations, &[with_client]).await;
    dir.remember_key(&client.key_pem);
    assert_eq!(status(&ctl).await, 200);
    assert!(
        backend
            .sni
            .lock()
            .unwrap()
            .contains(&Some(NAME.to_string())),
        "proxy-ssl-server-name: on sends proxy-ssl-name as SNI"
    );
    ctl.assert_no_key_material(&dir.private_keys());
}
