//! A man-in-the-middle between a controller and the API server that can make watches expire: it cuts
//! every open watch stream, and answers the next attempt to resume each resource's watch from a
//! resourceVersion with `410 Gone` (an `ERROR` event with code 410), exactly what the API server sends
//! once etcd has compacted past that version. The controller must re-list and carry on.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use tokio::sync::watch;

use crate::support::TestCert;

const EXPIRED: &str = "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old resource version\",\"reason\":\"Expired\",\"code\":410}}\n";

struct State {
    upstream: SocketAddr,
    upstream_tls: Arc<rustls::ClientConfig>,
    expiring: AtomicBool,
    /// Resources whose resumed watch was already answered with 410 (once each).
    expired: Mutex<HashSet<String>>,
    gone_sent: AtomicUsize,
    cut: watch::Sender<u64>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    /// PEM of the CA that issued the proxy's certificate, for the controller's kubeconfig.
    pub ca_pem: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Listens on `addr` (port 0 for any) and forwards to the API server at `upstream`, trusting
    /// `upstream_ca` (PEM).
    pub async fn start(
        addr: SocketAddr,
        upstream: SocketAddr,
        upstream_ca: &[u8],
    ) -> Result<FaultProxy> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(upstream_ca) {
            roots.add(cert?)?;
        }
        let upstream_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let cert = TestCert::ca_signed(&[&addr.ip().to_string()], &rcgen::PKCS_ECDSA_P256_SHA256);
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes())?;
        let chain: Vec<_> =
            rustls::pki_types::CertificateDer::pem_slice_iter(cert.chain_pem.as_bytes())
                .collect::<Result<_, _>>()?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let ca_der = cert.ca.clone().context("a CA-issued certificate")?;
        let ca_pem = pem_of(&ca_der);

        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            upstream_tls: Arc::new(upstream_tls),
            expiring: AtomicBool::new(false),
            expired: Mutex::new(HashSet::new()),
            gone_sent: AtomicUsize::new(0),
            cut: watch::channel(0).0,
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let task = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, state) = (acceptor.clone(), state.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service =
                            hyper::service::service_fn(move |req| forward(state.clone(), req));
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            }
        });
        Ok(FaultProxy {
            addr,
            ca_pem,
            state,
            task,
        })
    }

    /// Ends every open watch, and answers the next resumed watch of each resource with 410 Gone.
    pub fn expire_watches(&self) {
        self.state.expiring.store(true, Ordering::SeqCst);
        self.state.cut.send_modify(|n| *n += 1);
    }

    /// How many 410 answers were sent.
    pub fn gone_sent(&self) -> usize {
        self.state.gone_sent.load(Ordering::SeqCst)
    }
}

fn pem_of(der: &[u8]) -> String {
    use std::fmt::Write as _;
    let b64 = crate::support::controller::base64(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(chunk));
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

type ProxyBody = Either<Cuttable, Full<Bytes>>;

async fn forward(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    // Subscribed before the request goes upstream, so a cut while it waits for headers counts too.
    let cut = state.cut.subscribe();
    let query = req.uri().query().unwrap_or("");
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let resumes = query.split('&').any(|p| {
        p.starts_with("resourceVersion=")
            && p.len() > "resourceVersion=".len()
            && p != "resourceVersion=0"
    });
    if watch && resumes && state.expiring.load(Ordering::SeqCst) {
        let first = state
            .expired
            .lock()
            .map(|mut s| s.insert(req.uri().path().to_string()))
            .unwrap_or(false);
        if first {
            state.gone_sent.fetch_add(1, Ordering::SeqCst);
            let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
                EXPIRED.as_bytes(),
            ))));
            resp.headers_mut()
                .insert("content-type", "application/json".parse().expect("static"));
            return Ok(resp);
        }
    }
    match send_upstream(&state, req).await {
        Ok(resp) => Ok(resp.map(|body| Either::Left(Cuttable::new(body, cut)))),
        Err(e) => {
            let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!(
                "proxy: {e:#}"
            )))));
            *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
            Ok(resp)
        }
    }
}

async fn send_upstream(state: &State, req: Request<Incoming>) -> Result<Response<Incoming>> {
    let tcp = tokio::net::TcpStream::connect(state.upstream).await?;
    let name = rustls::pki_types::ServerName::IpAddress(state.upstream.ip().into());
    let tls = tokio_rustls::TlsConnector::from(state.upstream_tls.clone())
        .connect(name, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()?;
    Ok(sender
        .send_request(Request::from_parts(parts, body))
        .await?)
}

/// A response body that ends (cleanly) when the proxy cuts its streams.
pub struct Cuttable {
    inner: Incoming,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl Cuttable {
    fn new(inner: Incoming, mut cut: watch::Receiver<u64>) -> Cuttable {
        Cuttable {
            inner,
            cut: Box::pin(async move {
                let _ = cut.changed().await;
            }),
        }
    }
}

impl Body for Cuttable {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }
}
