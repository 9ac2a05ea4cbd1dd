//! A real HTTP/1.1 backend: the Ingress conformance echo server's JSON, plus a few behaviours the proxy
//! tests need (streaming, hashing an upload, sleeping, WebSocket echo, its own `Server` header).
//!
//! Every request path echoes, as upstream's does, except `/health` and the paths under [`SPECIAL`],
//! which no conformance scenario uses.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::protocol::Role;

/// Paths with test behaviours. See [`EchoServer`] for each.
pub const SPECIAL: &str = "/_echo/";
/// `GET /_echo/stream?chunks=N&size=S&hold=K`: N chunks of S bytes, no `Content-Length`; after the
/// first K chunks it waits for [`EchoServer::release_streams`].
pub const STREAM: &str = "/_echo/stream";
/// Any method: reads the whole body and answers [`BodyDigest`].
pub const HASH: &str = "/_echo/hash";
/// `/_echo/sleep?ms=N`: sleeps, then echoes.
pub const SLEEP: &str = "/_echo/sleep";
/// WebSocket upgrade; echoes every message.
pub const WEBSOCKET: &str = "/_echo/ws";
/// Echoes, with the backend's own `Server` header.
pub const WITH_SERVER: &str = "/_echo/server";

/// The `Server` header [`WITH_SERVER`] sends.
pub const BACKEND_SERVER: &str = "echo-backend/1";

/// Who the backend says it is: the fields the upstream echo server fills from its environment.
#[derive(Debug, Clone, Default)]
pub struct EchoIdentity {
    pub namespace: String,
    pub ingress: String,
    pub service: String,
    pub pod: String,
}

impl EchoIdentity {
    /// A backend for `service`, with namespace, Ingress and pod left for tests that care.
    pub fn service(service: &str) -> EchoIdentity {
        EchoIdentity {
            service: service.into(),
            pod: format!("{service}-pod"),
            ..Default::default()
        }
    }
}

/// What [`HASH`] answers about the request body it received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BodyDigest {
    pub length: u64,
    pub sha256: String,
    pub content_length: Option<String>,
    pub transfer_encoding: Option<String>,
}

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
}

struct State {
    identity: EchoIdentity,
    seen: Mutex<Vec<Seen>>,
    arrived: Notify,
    /// Permits let held streams continue.
    gate: Semaphore,
}

/// A running echo backend; stops when dropped.
pub struct EchoServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Starts a backend on 127.0.0.1 and an ephemeral port.
    pub async fn start(identity: EchoIdentity) -> EchoServer {
        EchoServer::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), identity).await
    }

    /// Starts a backend on `ip` (a cluster suite needs addresses the API server accepts in
    /// EndpointSlices, which excludes loopback).
    pub async fn start_on(ip: IpAddr, identity: EchoIdentity) -> EchoServer {
        EchoServer::start_at(SocketAddr::new(ip, 0), identity).await
    }

    /// Like [`EchoServer::start_on`], on a fixed port (pods of one Service share their port).
    pub async fn start_at(addr: SocketAddr, identity: EchoIdentity) -> EchoServer {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the echo backend");
        let addr = listener.local_addr().expect("backend address");
        let state = Arc::new(State {
            identity,
            seen: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            gate: Semaphore::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        EchoServer { addr, state, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn identity(&self) -> &EchoIdentity {
        &self.state.identity
    }

    /// Every request received so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("seen lock").clone()
    }

    /// The paths of the requests so far that start with `prefix`, in order of arrival.
    pub fn paths_under(&self, prefix: &str) -> Vec<String> {
        self.seen()
            .into_iter()
            .map(|s| s.path)
            .filter(|p| p.starts_with(prefix))
            .collect()
    }

    /// Waits until a request whose path starts with `prefix` has arrived.
    pub async fn wait_for_request(&self, prefix: &str, timeout: Duration) -> Seen {
        let found = async {
            loop {
                let arrived = self.state.arrived.notified();
                if let Some(seen) = self.seen().into_iter().find(|s| s.path.starts_with(prefix)) {
                    return seen;
                }
                arrived.await;
            }
        };
        super::wait::within(
            &format!("a request for {prefix} at the backend"),
            timeout,
            found,
        )
        .await
    }

    /// Lets every held [`STREAM`] response send the rest of its chunks.
    pub fn release_streams(&self) {
        self.state.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        // Connections live in the set, so aborting the server also closes them.
        connections.spawn(async move {
            let service = service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    state.seen.lock().expect("seen lock").push(Seen {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or(path.clone(), |p| p.to_string()),
    });
    state.arrived.notify_waiters();
    let response = match path.as_str() {
        "/health" => text(StatusCode::OK, "OK"),
        STREAM => stream(&state, &req),
        HASH => hash(req).await,
        SLEEP => {
            tokio::time::sleep(Duration::from_millis(query(&req, "ms").unwrap_or(1000))).await;
            echo(&state.identity, &req)
        }
        WEBSOCKET => websocket(req),
        WITH_SERVER => {
            let mut resp = echo(&state.identity, &req);
            resp.headers_mut()
                .insert(header::SERVER, HeaderValue::from_static(BACKEND_SERVER));
            resp
        }
        _ => echo(&state.identity, &req),
    };
    Ok(response)
}

/// The upstream echo server's answer: `json.MarshalIndent` of the request, indent one space.
fn echo(identity: &EchoIdentity, req: &Request<Incoming>) -> Response<Body> {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        if name == header::HOST {
            continue; // Go moves Host to r.Host
        }
        headers
            .entry(canonical_header_name(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let body = serde_json::json!({
        "path": req.uri().path_and_query().map_or("/", |p| p.as_str()),
        "host": host,
        "method": req.method().as_str(),
        "proto": format!("{:?}", req.version()),
        "headers": headers,
        "namespace": identity.namespace,
        "ingress": identity.ingress,
        "service": identity.service,
        "pod": identity.pod,
    });
    let mut resp = full(
        StatusCode::OK,
        serde_json::to_string_pretty(&body).expect("JSON"),
    );
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Go's `CanonicalMIMEHeaderKey`: `x-forwarded-for` → `X-Forwarded-For`.
pub fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn stream(state: &Arc<State>, req: &Request<Incoming>) -> Response<Body> {
    let chunks = query(req, "chunks").unwrap_or(16);
    let size = query(req, "size").unwrap_or(64 * 1024) as usize;
    let hold = query(req, "hold").unwrap_or(0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let state = state.clone();
    tokio::spawn(async move {
        for i in 0..chunks {
            if i == hold && hold > 0 {
                match state.gate.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => return,
                }
            }
            // Each chunk is filled with its index, so the client can check order and completeness.
            if tx
                .send(Bytes::from(vec![(i % 251) as u8; size]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

async fn hash(req: Request<Incoming>) -> Response<Body> {
    let header_value = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_length = header_value(header::CONTENT_LENGTH);
    let transfer_encoding = header_value(header::TRANSFER_ENCODING);
    let mut body = req.into_body();
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut length = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return text(StatusCode::BAD_REQUEST, "body broken");
        };
        if let Some(data) = frame.data_ref() {
            length += data.len() as u64;
            digest.update(data);
        }
    }
    let answer = BodyDigest {
        length,
        sha256: super::pki::hex(digest.finish().as_ref()),
        content_length,
        transfer_encoding,
    };
    full(
        StatusCode::OK,
        serde_json::to_string(&answer).expect("JSON"),
    )
}

/// Accepts a WebSocket upgrade (RFC 6455 handshake) and echoes text and binary messages.
fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(key) = key.filter(|_| is_upgrade) else {
        return text(StatusCode::BAD_REQUEST, "not a WebSocket upgrade");
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                return;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = full(StatusCode::SWITCHING_PROTOCOLS, String::new());
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    resp
}

fn query<B>(req: &Request<B>, name: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(BodyExt::boxed(Full::new(body.into())));
    *resp.status_mut() = status;
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = full(status, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
