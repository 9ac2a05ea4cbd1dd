//! Real clients: HTTP/1.1 over TCP, and rustls with a chosen SNI, ALPN and TLS versions carrying
//! HTTP/1.1 or HTTP/2 (hyper). Requests are sent to the controller's address with the `Host` (or
//! `:authority`) of the test, as a client resolving that name to the controller would.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::SupportedProtocolVersion;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

/// How long one request (connect, send, read the whole response) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A request before it is shaped for HTTP/1.1 (`Host` header) or HTTP/2 (`:authority`).
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    /// `Host`; empty means none is sent (HTTP/1.1 then uses the address, as a client given an IP does).
    pub host: String,
    /// Path and query, exactly as it goes on the request line.
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// A request for `host` and `path`.
pub fn request(method: &str, host: &str, path: &str) -> Req {
    Req {
        method: method.parse().expect("a method"),
        host: host.into(),
        path: path.into(),
        headers: Vec::new(),
        body: Bytes::new(),
    }
}

impl Req {
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((
            name.parse().expect("a header name"),
            value.parse().expect("a header value"),
        ));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Req {
        self.body = body.into();
        self
    }

    fn into_http1(self) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(self.method)
            .uri(self.path)
            .version(Version::HTTP_11);
        if !self.host.is_empty() {
            builder = builder.header(http::header::HOST, self.host);
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder.body(Full::new(self.body)).expect("a valid request")
    }

    fn into_http2(self) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(self.method)
            .uri(format!("https://{}{}", self.host, self.path))
            .version(Version::HTTP_2);
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder.body(Full::new(self.body)).expect("a valid request")
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Captured {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo backend's report of the request; panics with the body when it is not one.
    pub fn echo(&self) -> EchoReply {
        self.try_echo().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_echo(&self) -> Result<EchoReply, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "not an echo reply ({e}): status {}, body {:?}",
                self.status,
                self.text()
            )
        })
    }

    pub fn json<T: for<'de> Deserialize<'de>>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not the JSON expected ({e}): {:?}", self.text()))
    }
}

/// The fields of the Ingress conformance echo server's answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EchoReply {
    pub path: String,
    pub host: String,
    pub method: String,
    pub proto: String,
    pub headers: BTreeMap<String, Vec<String>>,
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub pod: String,
}

impl EchoReply {
    /// The first value of a request header as the backend saw it (canonical name, e.g. `X-Real-Ip`).
    pub fn header(&self, canonical: &str) -> Option<&str> {
        self.headers
            .get(canonical)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// One client connection that sends requests in turn (HTTP/1.1 keep-alive, or HTTP/2 streams).
pub enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    /// HTTP/1.1 over an established stream; the connection task also serves upgrades.
    pub async fn http1<S>(stream: S) -> Result<Sender, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        tokio::spawn(conn.with_upgrades());
        Ok(Sender::H1(sender))
    }

    /// HTTP/2 over an established stream (prior knowledge, or after ALPN chose `h2`).
    pub async fn http2<S>(stream: S) -> Result<Sender, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    }

    /// Sends a request and returns the response with its body unread.
    pub async fn try_send_streaming(&mut self, req: Req) -> Result<Response<Incoming>, String> {
        let exchange = async {
            match self {
                Sender::H1(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(req.into_http1()).await
                }
                Sender::H2(s) => {
                    s.ready().await.map_err(|e| e.to_string())?;
                    s.send_request(req.into_http2()).await
                }
            }
            .map_err(|e| format!("request failed: {e}"))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no response within {REQUEST_TIMEOUT:?}"))?
    }

    pub async fn send_streaming(&mut self, req: Req) -> Response<Incoming> {
        self.try_send_streaming(req)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends a request and reads the whole response.
    pub async fn try_send(&mut self, req: Req) -> Result<Captured, String> {
        let resp = self.try_send_streaming(req).await?;
        collect(resp).await
    }

    pub async fn send(&mut self, req: Req) -> Captured {
        self.try_send(req).await.unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Reads a whole response.
pub async fn collect(resp: Response<Incoming>) -> Result<Captured, String> {
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
        .await
        .map_err(|_| format!("response body not complete within {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| format!("response body: {e}"))?
        .to_bytes();
    Ok(Captured {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

/// A TCP connection to `addr`, from `source` if given (so a test knows which client address the
/// controller sees).
pub async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, String> {
    let connect = async {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| e.to_string())?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
        }
        socket
            .connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, connect)
        .await
        .map_err(|_| format!("connect {addr}: timed out"))?
}

/// A plain-HTTP/1.1 connection to `addr`.
pub async fn http_connection(addr: SocketAddr) -> Sender {
    let stream = tcp(addr, None).await.unwrap_or_else(|e| panic!("{e}"));
    Sender::http1(stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One request over a new plain-HTTP/1.1 connection.
pub async fn http_send(addr: SocketAddr, req: Req) -> Captured {
    http_connection(addr).await.send(req).await
}

/// Like [`http_send`], but reports failures instead of panicking (for polling).
pub async fn try_http_send(addr: SocketAddr, req: Req) -> Result<Captured, String> {
    let stream = tcp(addr, None).await?;
    Sender::http1(stream).await?.try_send(req).await
}

/// The status of `GET path` for `host` over a new plain-HTTP/1.1 connection.
pub async fn http_status(addr: SocketAddr, host: &str, path: &str) -> u16 {
    http_send(addr, request("GET", host, path))
        .await
        .status
        .as_u16()
}

/// How a TLS client connects: SNI, ALPN, versions, and whether it verifies the server.
#[derive(Clone)]
pub struct TlsClient {
    sni: Option<String>,
    alpn: Vec<Vec<u8>>,
    versions: Vec<&'static SupportedProtocolVersion>,
    roots: Option<Vec<CertificateDer<'static>>>,
    /// A client certificate chain and its key, both PEM.
    client_cert: Option<(String, String)>,
}

impl Default for TlsClient {
    fn default() -> Self {
        TlsClient::new()
    }
}

/// An established TLS connection and what the handshake decided.
pub struct TlsConn {
    pub stream: TlsStream<TcpStream>,
    /// The certificates the server presented, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
}

impl TlsConn {
    pub fn leaf(&self) -> &CertificateDer<'static> {
        self.chain
            .first()
            .expect("the server presented a certificate")
    }

    pub fn fingerprint(&self) -> String {
        super::pki::fingerprint(self.leaf())
    }

    pub fn alpn(&self) -> Option<String> {
        self.stream
            .get_ref()
            .1
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }

    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.get_ref().1.protocol_version()
    }

    /// HTTP over this connection: HTTP/2 if ALPN chose `h2`, else HTTP/1.1.
    pub async fn http(self) -> Sender {
        let result = match self.alpn().as_deref() {
            Some("h2") => Sender::http2(self.stream).await,
            _ => Sender::http1(self.stream).await,
        };
        result.unwrap_or_else(|e| panic!("{e}"))
    }
}

impl TlsClient {
    /// No SNI, no ALPN, TLS 1.2 and 1.3, any certificate accepted (but the handshake signature is
    /// still checked, so the server must hold the certificate's key).
    pub fn new() -> TlsClient {
        TlsClient {
            sni: None,
            alpn: Vec::new(),
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            roots: None,
            client_cert: None,
        }
    }

    /// Sends this client certificate chain (PEM) with its key (PEM) when the server asks for one.
    pub fn client_cert(mut self, chain_pem: &str, key_pem: &str) -> TlsClient {
        self.client_cert = Some((chain_pem.into(), key_pem.into()));
        self
    }

    pub fn sni(mut self, name: &str) -> TlsClient {
        self.sni = Some(name.into());
        self
    }

    pub fn alpn(mut self, protocols: &[&str]) -> TlsClient {
        self.alpn = protocols.iter().map(|p| p.as_bytes().to_vec()).collect();
        self
    }

    pub fn versions(mut self, versions: &[&'static SupportedProtocolVersion]) -> TlsClient {
        self.versions = versions.to_vec();
        self
    }

    /// Verify the chain against `roots` and the SNI name, as a browser would.
    pub fn verify_with(mut self, roots: Vec<CertificateDer<'static>>) -> TlsClient {
        self.roots = Some(roots);
        self
    }

    pub async fn connect(&self, addr: SocketAddr) -> Result<TlsConn, String> {
        self.connect_from(addr, None).await
    }

    pub async fn connect_from(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<TlsConn, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|e| e.to_string())?;
        let mut config = match &self.roots {
            Some(roots) => {
                let mut store = rustls::RootCertStore::empty();
                for root in roots {
                    store.add(root.clone()).map_err(|e| e.to_string())?;
                }
                self.with_client_auth(builder.with_root_certificates(store))?
            }
            None => self.with_client_auth(builder.dangerous().with_custom_certificate_verifier(
                Arc::new(portcullis::tls::AcceptAnyCertificate(provider)),
            ))?,
        };
        config.alpn_protocols = self.alpn.clone();
        // Without a name, connect by IP address: rustls then sends no SNI, as clients given an IP do.
        let name = match &self.sni {
            Some(sni) => {
                ServerName::try_from(sni.clone()).map_err(|e| format!("SNI {sni:?}: {e}"))?
            }
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let tcp = tcp(addr, source).await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let chain = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        Ok(TlsConn { stream, chain })
    }

    fn with_client_auth(
        &self,
        builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    ) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let Some((chain, key)) = &self.client_cert else {
            return Ok(builder.with_no_client_auth());
        };
        let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("client certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| format!("client key: {e}"))?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate: {e}"))
    }
}
