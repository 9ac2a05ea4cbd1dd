//! Zero-drop restarts: what a Kubernetes rolling update does to a Portcullis pod (SIGTERM, readiness
//! turning off, a drain period, the process exiting) must not cost a client a request.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use support::backend::{self, BodyDigest};
use support::client::{self, try_http_send};
use support::manifests;
use support::wait::{LIVE, within};
use support::*;
use tokio_tungstenite::tungstenite::{self, Message};

const NS: &str = "web";

async fn setup(dir: &ManifestDir) -> EchoServer {
    let echo = EchoServer::start(EchoIdentity::service("app")).await;
    let svc = manifests::service_with_endpoints(NS, "app", 80, Some("http"), &[echo.addr()], true);
    dir.write("svc.yaml", &svc.objects());
    dir.write(
        "ingress.yaml",
        &[&IngressBuilder::new(NS, "app")
            .route(Some("app.test"), "app")
            .build()],
    );
    echo
}

async fn websocket(ctl: &Controller) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let tcp = client::tcp(ctl.addrs.http, None).await.expect("connect");
    let (mut ws, _) = within(
        "the WebSocket handshake",
        LIVE,
        tokio_tungstenite::client_async(format!("ws://app.test{}", backend::WEBSOCKET), tcp),
    )
    .await
    .expect("WebSocket handshake");
    ws.send(Message::text("before")).await.expect("send");
    assert_eq!(
        within("echo", LIVE, ws.next())
            .await
            .expect("message")
            .expect("frame"),
        Message::text("before")
    );
    ws
}

#[tokio::test]
async fn sigterm_turns_readiness_off_keeps_serving_then_drains_uploads_and_websockets() {
    let dir = ManifestDir::new();
    let echo = setup(&dir).await;
    let mut ctl = Controller::start(
        dir.path(),
        &["--shutdown-delay", "1500ms", "--shutdown-timeout", "3s"],
    )
    .await;

    // In flight when SIGTERM arrives: a WebSocket that will close itself, one that stays open, a slow
    // request and an upload that takes two seconds to send.
    let mut polite = websocket(&ctl).await;
    let mut lingering = websocket(&ctl).await;
    let slow = tokio::spawn(try_http_send(
        ctl.addrs.http,
        request("GET", "app.test", &format!("{}?ms=1000", backend::SLEEP)),
    ));
    echo.wait_for_request(backend::SLEEP, LIVE).await;
    let (chunks_tx, chunks_rx) =
        tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(1);
    const CHUNKS: usize = 20;
    const CHUNK: usize = 64 * 1024;
    let upload = {
        let tcp = client::tcp(ctl.addrs.http, None).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let body = StreamBody::new(tokio_stream_from(chunks_rx));
        let req = http::Request::post(backend::HASH)
            .header("host", "app.test")
            .header("content-length", (CHUNKS * CHUNK).to_string())
            .body(body)
            .expect("request");
        tokio::spawn(async move {
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, bytes))
        })
    };
    chunks_tx
        .send(Ok(Frame::data(Bytes::from(vec![7u8; CHUNK]))))
        .await
        .expect("first chunk");

    ctl.sigterm();
    let signalled = Instant::now();
    eventually(
        "/readyz to fail after SIGTERM",
        Duration::from_millis(1000),
        async || match ctl.admin_status("/readyz").await {
            Some(503) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    // During the delay the listeners still accept: load balancers may not have noticed yet.
    let fresh = try_http_send(ctl.addrs.http, request("GET", "app.test", "/during-delay"))
        .await
        .expect("a new connection during the delay");
    assert_eq!(fresh.status, 200);
    assert!(
        signalled.elapsed() < Duration::from_millis(1500),
        "checked within the delay"
    );

    let feeder = tokio::spawn(async move {
        for _ in 1..CHUNKS {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if chunks_tx
                .send(Ok(Frame::data(Bytes::from(vec![7u8; CHUNK]))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    lingering
        .send(Message::text("during drain"))
        .await
        .expect("the WebSocket still works while draining");
    assert_eq!(
        within("echo while draining", LIVE, lingering.next())
            .await
            .expect("message")
            .expect("frame"),
        Message::text("during drain")
    );
    polite
        .close(None)
        .await
        .expect("closing handshake through the draining proxy");

    let slow = within("the slow request", LIVE, slow)
        .await
        .expect("task")
        .expect("slow request");
    assert_eq!(slow.status, 200, "an in-flight request completes");
    let (status, body) = within("the upload", LIVE, upload)
        .await
        .expect("task")
        .expect("upload");
    feeder.await.expect("feeder");
    assert_eq!(status, 200, "the upload that was in flight completes");
    let digest: BodyDigest = serde_json::from_slice(&body).expect("digest");
    assert_eq!(digest.length as usize, CHUNKS * CHUNK);

    // The WebSocket that never closes is closed by the deadline, with a FIN rather than a reset.
    let end = within(
        "the lingering WebSocket to be closed",
        Duration::from_secs(8),
        lingering.next(),
    )
    .await;
    match end {
        None | Some(Ok(Message::Close(_))) => {}
        Some(Err(tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ))) => {}
        other => panic!("the lingering WebSocket ended with {other:?}"),
    }
    let status = ctl.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        ctl.logs()
    );
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn rolling_replacement_under_load_loses_no_request() {
    let dir = ManifestDir::new();
    let _echo = setup(&dir).await;
    // Like a Service in front of two pods: clients go to the instances whose /readyz says ready.
    let mut old = Controller::start(
        dir.path(),
        &["--shutdown-delay", "1s", "--shutdown-timeout", "5s"],
    )
    .await;
    let instances: Arc<std::sync::Mutex<Vec<(std::net::SocketAddr, std::net::SocketAddr)>>> =
        Arc::new(std::sync::Mutex::new(vec![(
            old.addrs.http,
            old.addrs.admin,
        )]));
    let ready: Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>> =
        Arc::new(std::sync::Mutex::new(vec![old.addrs.http]));
    let stop = Arc::new(AtomicBool::new(false));

    // The "endpoints controller": polls readiness every 50 ms, as a kubelet probe plus kube-proxy would.
    let prober = {
        let (instances, ready, stop) = (instances.clone(), ready.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let all = instances.lock().expect("lock").clone();
                let mut now_ready = Vec::new();
                for (http, admin) in all {
                    if support::controller::admin_get(admin, "/readyz").await == Some(200) {
                        now_ready.push(http);
                    }
                }
                *ready.lock().expect("lock") = now_ready;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let served = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (ready, stop, served, failures) = (
                ready.clone(),
                stop.clone(),
                served.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0usize;
                // Bounded: at most 3000 requests per worker, and the test stops them after the swap.
                while !stop.load(Ordering::Relaxed) && n < 3000 {
                    let targets = ready.lock().expect("lock").clone();
                    let Some(target) = targets.get((w + n) % targets.len().max(1)).copied() else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    n += 1;
                    match try_http_send(target, request("GET", "app.test", &format!("/w{w}/{n}")))
                        .await
                    {
                        Ok(resp) if resp.status == 200 => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(resp) => failures
                            .lock()
                            .expect("lock")
                            .push(format!("{target}: status {}", resp.status)),
                        Err(e) => failures
                            .lock()
                            .expect("lock")
                            .push(format!("{target}: {e}")),
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let new = Controller::start(dir.path(), &[]).await;
    instances
        .lock()
        .expect("lock")
        .push((new.addrs.http, new.addrs.admin));
    eventually("the new instance to receive traffic", LIVE, async || {
        if ready.lock().expect("lock").contains(&new.addrs.http) {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    let before_swap = served.load(Ordering::Relaxed);
    old.sigterm();
    let status = old.wait_exit(Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    prober.await.expect("prober");

    assert!(
        status.success(),
        "the old instance exits 0; log:\n{}",
        old.logs()
    );
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} requests failed during the rollout, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let total = served.load(Ordering::Relaxed);
    assert!(
        before_swap > 20 && total > before_swap + 20,
        "traffic flowed before ({before_swap}) and after ({total}) the swap"
    );
}
