//! Helpers for `bench/run`. One binary, `bench-tools <command> key=value...`:
//!
//! - `certs dir=D hosts=N`: a test CA, leaves for `a.bench.test` (ECDSA P-256), `rsa.bench.test`
//!   (RSA-2048), two versions of `rot.bench.test`, and `hNNNNN.bench.test` for N scale hosts; PEM files
//!   plus `fingerprints.tsv` (name, SHA-256 of the leaf). Cached: nothing is redone if present.
//! - `backend addr=A body=BYTES`: the HTTP/1.1 backend every proxy forwards to (hyper, one thread).
//! - `load addr=A sni=H conns=C rate=R new-rate=N duration=S out=F`: keep-alive requests at a fixed
//!   rate over C connections (latency measured from the scheduled send time, so no coordinated
//!   omission) plus N new TLS connections per second; counts failed requests and dropped connections.
//! - `probe-watch addr=A sni=H duration=S`: back-to-back full handshakes; prints `<unix-ns> <sha256>`
//!   each time the served leaf changes.
//! - `probe-hosts addr=A list=F since-ns=T timeout=S`: waits until every `host fingerprint` line of F
//!   serves its own certificate; prints milliseconds since T.
//! - `idle addr=A sni=H n=N alpn=P`: opens N TLS connections, one request each, prints `ready OK FAILED`,
//!   then holds them until stdin closes. `alpn=h2` offers only h2 and speaks HTTP/2; the default is
//!   `http/1.1`.
//! - `flood addr=A host=H n=N conns=C first=IP`: N plain HTTP/1.1 requests, each on its own connection
//!   bound to its own loopback source address (`first`, `first`+1, … within 127.0.0.0/8), so the
//!   server sees N distinct clients; at most C at once. Prints one JSON line: how many got 2xx, another
//!   status, or no answer, and how long it took.
//!
//! The TLS client offers X25519 only and never resumes, like the OpenSSL 3.0 peers (wrk, h2load) the
//! other measurements use.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let opts: HashMap<String, String> = args
        .filter_map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let opts = Opts(opts);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let result = rt.block_on(async {
        match command.as_str() {
            "certs" => certs(&opts),
            "backend" => backend(&opts).await,
            "load" => load(&opts).await,
            "probe-watch" => probe_watch(&opts).await,
            "probe-hosts" => probe_hosts(&opts).await,
            "idle" => idle(&opts).await,
            "flood" => flood(&opts).await,
            _ => Err(format!(
                "unknown command {command:?}; see the comment at the top of bench/tools/src/main.rs"
            )
            .into()),
        }
    });
    if let Err(e) = result {
        eprintln!("bench-tools {command}: {e}");
        std::process::exit(1);
    }
}

struct Opts(HashMap<String, String>);

impl Opts {
    fn str(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }
    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        self.0
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
    fn addr(&self) -> SocketAddr {
        self.str("addr", "127.0.0.1:443")
            .parse()
            .expect("addr=IP:PORT")
    }
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------------
// Certificates

fn certs(opts: &Opts) -> Result<(), Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = PathBuf::from(opts.str("dir", "certs"));
    let hosts: usize = opts.num("hosts", 0);
    let marker = dir.join(format!("done-{hosts}"));
    if marker.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis bench CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut fingerprints = String::new();
    let mut leaf = |name: &str, host: &str, key: KeyPair| -> Result<(), Error> {
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        let cert = params.signed_by(&key, &issuer)?;
        let (crt, key) = (cert.pem(), key.serialize_pem());
        std::fs::write(dir.join(format!("{name}.crt")), &crt)?;
        std::fs::write(dir.join(format!("{name}.key")), &key)?;
        std::fs::write(dir.join(format!("{name}.pem")), format!("{crt}{key}"))?;
        fingerprints.push_str(&format!("{name}\t{host}\t{}\n", sha256_hex(cert.der())));
        Ok(())
    };
    leaf("a", "a.bench.test", KeyPair::generate()?)?;
    leaf(
        "rsa",
        "rsa.bench.test",
        KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?,
    )?;
    leaf("rot-v1", "rot.bench.test", KeyPair::generate()?)?;
    leaf("rot-v2", "rot.bench.test", KeyPair::generate()?)?;
    for i in 0..hosts {
        let name = format!("h{i:05}");
        leaf(&name, &format!("{name}.bench.test"), KeyPair::generate()?)?;
    }
    // The changed certificate of the "one certificate among 10k" measurement.
    if hosts > 0 {
        let name = format!("h{:05}", hosts / 2);
        leaf(
            &format!("{name}-v2"),
            &format!("{name}.bench.test"),
            KeyPair::generate()?,
        )?;
    }
    std::fs::write(dir.join("fingerprints.tsv"), fingerprints)?;
    std::fs::write(marker, "")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Backend

async fn backend(opts: &Opts) -> Result<(), Error> {
    let addr: SocketAddr = opts.str("addr", "127.0.0.1:9000").parse()?;
    let size: usize = opts.num("body", 3);
    let body = if size == 3 {
        Bytes::from_static(b"ok\n")
    } else {
        Bytes::from(vec![b'x'; size])
    };
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

// ---------------------------------------------------------------------------------------------------
// TLS client

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn connector() -> TlsConnector {
    connector_offering(b"http/1.1")
}

fn connector_offering(alpn: &[u8]) -> TlsConnector {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let provider = Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn handshake(tls: &TlsConnector, addr: SocketAddr, sni: &str) -> Result<Tls, Error> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(sni.to_string())?;
    Ok(tls.connect(name, tcp).await?)
}

fn leaf_fingerprint(stream: &Tls) -> Option<String> {
    let certs = stream.get_ref().1.peer_certificates()?;
    certs.first().map(|c| sha256_hex(c.as_ref()))
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn http_conn(tls: &TlsConnector, addr: SocketAddr, sni: &str) -> Result<Sender, Error> {
    let stream = handshake(tls, addr, sni).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// An HTTP/2 connection for `idle alpn=h2`; the sender keeps it open.
async fn h2_conn(tls: &TlsConnector, addr: SocketAddr, sni: &str) -> Result<H2Sender, Error> {
    let stream = handshake(tls, addr, sni).await?;
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// Sends one GET; the status, or an error if the connection broke.
async fn get(sender: &mut Sender, sni: &str, path: &str) -> Result<u16, Error> {
    let req = Request::get(path)
        .header(http::header::HOST, sni)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

// ---------------------------------------------------------------------------------------------------
// Load

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    non_2xx: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    connect_failed: AtomicU64,
    new_ok: AtomicU64,
    new_failed: AtomicU64,
}

async fn load(opts: &Opts) -> Result<(), Error> {
    let addr = opts.addr();
    let sni = opts.str("sni", "a.bench.test");
    let path = opts.str("path", "/");
    let conns: u32 = opts.num("conns", 16);
    let rate: f64 = opts.num("rate", 1000.0);
    let new_rate: f64 = opts.num("new-rate", 0.0);
    let duration = Duration::from_secs_f64(opts.num("duration", 10.0));
    let out = opts.str("out", "load.json");
    let tls = connector();
    let counters = Arc::new(Counters::default());
    let start = tokio::time::Instant::now();
    let start_ns = unix_ns();
    let deadline = start + duration;

    let mut workers = Vec::new();
    if conns > 0 && rate > 0.0 {
        let period = Duration::from_secs_f64(f64::from(conns) / rate);
        for i in 0..conns {
            let (tls, sni, path, counters) =
                (tls.clone(), sni.clone(), path.clone(), counters.clone());
            let first = start + period.mul_f64(f64::from(i) / f64::from(conns));
            workers.push(tokio::spawn(async move {
                let mut samples: Vec<(u32, i32)> = Vec::new();
                let mut sender: Option<Sender> = None;
                let mut ticks = tokio::time::interval_at(first, period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                loop {
                    let scheduled = ticks.tick().await;
                    if scheduled >= deadline {
                        break;
                    }
                    // A connection the server closed while it was idle: dropped, reconnect.
                    if let Some(s) = &mut sender
                        && s.ready().await.is_err()
                    {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        sender = None;
                    }
                    if sender.is_none() {
                        match http_conn(&tls, addr, &sni).await {
                            Ok(s) => sender = Some(s),
                            Err(_) => {
                                counters.connect_failed.fetch_add(1, Ordering::Relaxed);
                                counters.failed.fetch_add(1, Ordering::Relaxed);
                                counters.sent.fetch_add(1, Ordering::Relaxed);
                                samples.push((ms_since(start, scheduled), -1));
                                continue;
                            }
                        }
                    }
                    let Some(s) = sender.as_mut() else { continue };
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    match get(s, &sni, &path).await {
                        Ok(status) => {
                            let latency = scheduled.elapsed().as_micros().min(i32::MAX as u128);
                            if (200..300).contains(&status) {
                                counters.ok.fetch_add(1, Ordering::Relaxed);
                                samples.push((ms_since(start, scheduled), latency as i32));
                            } else {
                                counters.non_2xx.fetch_add(1, Ordering::Relaxed);
                                counters.failed.fetch_add(1, Ordering::Relaxed);
                                samples.push((ms_since(start, scheduled), -1));
                            }
                        }
                        Err(_) => {
                            // The request was sent on a connection that then broke.
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            samples.push((ms_since(start, scheduled), -1));
                            sender = None;
                        }
                    }
                }
                samples
            }));
        }
    }

    let mut new_conns = None;
    if new_rate > 0.0 {
        let (tls, sni, path, counters) = (tls.clone(), sni.clone(), path.clone(), counters.clone());
        new_conns = Some(tokio::spawn(async move {
            let mut errors: HashMap<String, u64> = HashMap::new();
            let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / new_rate));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let in_flight = Arc::new(tokio::sync::Semaphore::new(512));
            loop {
                if ticks.tick().await >= deadline {
                    break;
                }
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    counters.new_failed.fetch_add(1, Ordering::Relaxed);
                    *errors.entry("client overloaded".into()).or_default() += 1;
                    continue;
                };
                let (tls, sni, path, counters, err_tx) = (
                    tls.clone(),
                    sni.clone(),
                    path.clone(),
                    counters.clone(),
                    err_tx.clone(),
                );
                tokio::spawn(async move {
                    let _permit = permit;
                    let result = async {
                        let mut s = http_conn(&tls, addr, &sni).await?;
                        get(&mut s, &sni, &path).await
                    };
                    match tokio::time::timeout(Duration::from_secs(10), result).await {
                        Ok(Ok(status)) if (200..300).contains(&status) => {
                            counters.new_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        outcome => {
                            counters.new_failed.fetch_add(1, Ordering::Relaxed);
                            let kind = match outcome {
                                Ok(Ok(status)) => format!("status {status}"),
                                Ok(Err(e)) => e.to_string(),
                                Err(_) => "timeout".into(),
                            };
                            let _ = err_tx.send(kind);
                        }
                    }
                });
            }
            drop(err_tx);
            // Wait for the connections still in flight.
            let _ = in_flight.acquire_many(512).await;
            while let Ok(kind) = err_rx.try_recv() {
                *errors.entry(kind).or_default() += 1;
            }
            errors
        }));
    }

    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await?);
    }
    let errors = match new_conns {
        Some(task) => task.await?,
        None => HashMap::new(),
    };
    samples.sort_unstable();
    let c = &counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "start_unix_ns": start_ns.to_string(),
        "duration_s": duration.as_secs_f64(),
        "keepalive": {
            "conns": conns,
            "rate": rate,
            "sent": get(&c.sent),
            "ok": get(&c.ok),
            "non_2xx": get(&c.non_2xx),
            "failed": get(&c.failed),
            "dropped_connections": get(&c.dropped),
            "connect_failed": get(&c.connect_failed),
            // [ms since start (scheduled), latency µs from the scheduled send or -1 for a failure]
            "samples": samples.iter().map(|(t, l)| [*t as i64, *l as i64]).collect::<Vec<_>>(),
        },
        "new_connections": {
            "rate": new_rate,
            "ok": get(&c.new_ok),
            "failed": get(&c.new_failed),
            "errors": errors,
        },
    });
    std::fs::write(&out, serde_json::to_vec(&report)?)?;
    Ok(())
}

fn ms_since(start: tokio::time::Instant, t: tokio::time::Instant) -> u32 {
    t.saturating_duration_since(start).as_millis() as u32
}

// ---------------------------------------------------------------------------------------------------
// Probes

async fn probe_watch(opts: &Opts) -> Result<(), Error> {
    let addr = opts.addr();
    let sni = opts.str("sni", "rot.bench.test");
    let deadline = Instant::now() + Duration::from_secs_f64(opts.num("duration", 30.0));
    let tls = connector();
    let mut last = String::new();
    let mut handshakes = 0u64;
    let mut errors = 0u64;
    let stdout = std::io::stdout();
    while Instant::now() < deadline {
        let outcome =
            tokio::time::timeout(Duration::from_secs(2), handshake(&tls, addr, &sni)).await;
        let now = unix_ns();
        let seen = match outcome {
            Ok(Ok(stream)) => {
                handshakes += 1;
                leaf_fingerprint(&stream).unwrap_or_else(|| "none".into())
            }
            Ok(Err(e)) => {
                errors += 1;
                format!("error:{}", e.to_string().replace(' ', "_"))
            }
            Err(_) => {
                errors += 1;
                "error:timeout".into()
            }
        };
        if seen != last {
            let mut out = stdout.lock();
            let _ = writeln!(out, "{now} {seen}");
            let _ = out.flush();
            last = seen;
        }
        if errors > 0 && last.starts_with("error") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    println!("done {handshakes} {errors}");
    Ok(())
}

async fn probe_hosts(opts: &Opts) -> Result<(), Error> {
    let addr = opts.addr();
    let list = std::fs::read_to_string(opts.str("list", "hosts.txt"))?;
    let since_ns: u128 = opts.num("since-ns", unix_ns());
    let deadline = Instant::now() + Duration::from_secs_f64(opts.num("timeout", 600.0));
    let parallel: usize = opts.num("parallel", 4);
    let hosts: Vec<(String, String)> = list
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(h, f)| (h.to_string(), f.to_string()))
        .collect();
    let tls = connector();
    let next = Arc::new(AtomicU64::new(0));
    let handshakes = Arc::new(AtomicU64::new(0));
    let hosts = Arc::new(hosts);
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (tls, next, hosts, handshakes) =
            (tls.clone(), next.clone(), hosts.clone(), handshakes.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((host, want)) = hosts.get(i) else {
                    return true;
                };
                loop {
                    if Instant::now() > deadline {
                        return false;
                    }
                    handshakes.fetch_add(1, Ordering::Relaxed);
                    let got =
                        tokio::time::timeout(Duration::from_secs(5), handshake(&tls, addr, host))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .and_then(|s| leaf_fingerprint(&s));
                    if got.as_deref() == Some(want.as_str()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    let mut all = true;
    for t in tasks {
        all &= t.await?;
    }
    let elapsed_ms = (unix_ns().saturating_sub(since_ns)) as f64 / 1e6;
    println!(
        "{}",
        serde_json::json!({"ok": all, "elapsed_ms": elapsed_ms, "hosts": hosts.len(), "handshakes": handshakes.load(Ordering::Relaxed)})
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Idle connections

async fn idle(opts: &Opts) -> Result<(), Error> {
    let addr = opts.addr();
    let sni = opts.str("sni", "a.bench.test");
    let n: usize = opts.num("n", 1000);
    let h2 = match opts.str("alpn", "http/1.1").as_str() {
        "http/1.1" => false,
        "h2" => true,
        other => return Err(format!("alpn={other}: http/1.1 or h2").into()),
    };
    let tls = if h2 {
        connector_offering(b"h2")
    } else {
        connector()
    };
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::with_capacity(n);
    let mut failed = 0;
    let mut pending = tokio::task::JoinSet::new();
    let mut started = 0;
    while started < n || !pending.is_empty() {
        while started < n && pending.len() < 32 {
            let (tls, sni) = (tls.clone(), sni.clone());
            pending.spawn(async move {
                if h2 {
                    let mut s = h2_conn(&tls, addr, &sni).await?;
                    let req = Request::get(format!("https://{sni}/")).body(Empty::<Bytes>::new())?;
                    s.send_request(req).await?.into_body().collect().await?;
                    Ok::<_, Error>(Box::new(s) as Box<dyn std::any::Any + Send>)
                } else {
                    let mut s = http_conn(&tls, addr, &sni).await?;
                    get(&mut s, &sni, "/").await?;
                    Ok(Box::new(s) as Box<dyn std::any::Any + Send>)
                }
            });
            started += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok(s))) => held.push(s),
            _ => failed += 1,
        }
    }
    println!("ready {} {failed}", held.len());
    let _ = std::io::stdout().flush();
    // Hold until told to stop (stdin closes).
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    drop(held);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// A flood of distinct client addresses

async fn flood(opts: &Opts) -> Result<(), Error> {
    let addr: SocketAddr = opts.str("addr", "127.0.0.1:80").parse()?;
    let host = opts.str("host", "a.bench.test");
    let n: u32 = opts.num("n", 1000);
    let conns: usize = opts.num("conns", 32);
    let first: std::net::Ipv4Addr = opts.str("first", "127.1.0.1").parse()?;
    let first = u32::from(first);
    // Every source address must stay inside 127.0.0.0/8, which Linux routes to the loopback device.
    if first >> 24 != 127
        || (first & 0x00ff_ffff)
            .checked_add(n)
            .is_none_or(|end| end > 0x0100_0000)
    {
        return Err("first..first+n must lie inside 127.0.0.0/8".into());
    }
    let request = Arc::new(format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..conns.max(1) {
        let (next, request) = (next.clone(), request.clone());
        workers.spawn(async move {
            let (mut ok, mut other, mut failed) = (0u64, 0u64, 0u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= u64::from(n) {
                    return (ok, other, failed);
                }
                // i < n, which was checked to fit with `first` in 127.0.0.0/8.
                let source = std::net::Ipv4Addr::from(first + i as u32);
                let one = tokio::time::timeout(
                    Duration::from_secs(10),
                    one_request_from(source, addr, &request),
                );
                match one.await {
                    Ok(Ok(status)) if (200..300).contains(&status) => ok += 1,
                    Ok(Ok(_)) => other += 1,
                    _ => failed += 1,
                }
            }
        });
    }
    let (mut ok, mut other, mut failed) = (0, 0, 0);
    while let Some(counts) = workers.join_next().await {
        let (o, x, f) = counts?;
        ok += o;
        other += x;
        failed += f;
    }
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{}",
        serde_json::json!({"sent": n, "ok": ok, "other_status": other, "failed": failed,
                           "elapsed_ms": elapsed_ms})
    );
    Ok(())
}

/// One request on a new connection from `source`; the response's status code.
async fn one_request_from(
    source: std::net::Ipv4Addr,
    addr: SocketAddr,
    request: &str,
) -> Result<u16, Error> {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let mut stream = socket.connect(addr).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::with_capacity(512);
    stream.read_to_end(&mut response).await?;
    // "HTTP/1.1 200 OK"
    let status = response
        .get(9..12)
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse().ok())
        .ok_or("no HTTP status line")?;
    Ok(status)
}
