//! The quick start: a demo echo backend on 127.0.0.1:8081 plus Portcullis itself, in manifest mode on
//! unprivileged ports, reading `examples/quickstart/manifests/`.
//!
//!     cargo run --example quickstart
//!
//! Extra arguments are passed to Portcullis (e.g. `-- --log-level debug`).

use std::convert::Infallible;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const BACKEND: &str = "127.0.0.1:8081";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/quickstart/manifests");
    let mut argv: Vec<String> = [
        "portcullis",
        "--manifests",
        manifests,
        "--https-addr",
        "127.0.0.1:8443",
        "--http-addr",
        "127.0.0.1:8080",
        "--admin-addr",
        "127.0.0.1:10254",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(std::env::args().skip(1));
    let args = portcullis::cli::Args::parse_from(argv);
    tracing_subscriber::fmt()
        .with_env_filter(args.log_level.as_deref().unwrap_or("info"))
        .init();

    let backend = tokio::net::TcpListener::bind(BACKEND).await?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = backend.accept().await {
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(echo)),
            );
        }
    });
    eprintln!("demo backend on http://{BACKEND}; try the curl commands in README.md");
    portcullis::run::run(args).await
}

/// Answers with what it received, the way the Ingress conformance echo server does.
async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let list = headers
            .entry(name.as_str())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(values) = list {
            values.push(String::from_utf8_lossy(value.as_bytes()).into());
        }
    }
    let body = serde_json::json!({
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "host": req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or(""),
        "method": req.method().as_str(),
        "proto": format!("{:?}", req.version()),
        "headers": headers,
        "service": "echo",
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body:#}\n"))));
    resp.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    Ok(resp)
}
