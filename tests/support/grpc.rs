//! A gRPC backend and client over h2c, for the GRPCRoute tests of both modes.

use std::net::SocketAddr;

/// A gRPC server over h2c, as far as the proxy can tell: HTTP/2 only, `application/grpc` answers
/// with one length-prefixed message (the method called) and a `grpc-status` trailer.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GrpcBackend {
    pub async fn start_at(at: SocketAddr) -> GrpcBackend {
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .expect("bind the gRPC backend");
        let addr = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |req: http::Request<hyper::body::Incoming>| async move {
                            let message = format!("{} {:?}", req.uri().path(), req.version());
                            let mut framed = vec![0u8];
                            framed.extend((message.len() as u32).to_be_bytes());
                            framed.extend(message.into_bytes());
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            let frames: Vec<Result<Frame<bytes::Bytes>, std::convert::Infallible>> = vec![
                                Ok(Frame::data(bytes::Bytes::from(framed))),
                                Ok(Frame::trailers(trailers)),
                            ];
                            let body = StreamBody::new(futures_util::stream::iter(frames));
                            let resp = http::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .expect("response");
                            Ok::<_, std::convert::Infallible>(resp)
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
                });
            }
        });
        GrpcBackend { addr, task }
    }
}

/// One gRPC call over h2c: the status, the message and the `grpc-status` trailer.
pub async fn grpc_call(
    at: SocketAddr,
    path: &str,
) -> Result<(u16, String, Option<String>), String> {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(at)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://grpc.test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(&[
            0, 0, 0, 0, 0,
        ])))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let trailer = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let bytes = collected.to_bytes();
    let message = String::from_utf8_lossy(bytes.get(5..).unwrap_or_default()).into_owned();
    Ok((status, message, trailer))
}
