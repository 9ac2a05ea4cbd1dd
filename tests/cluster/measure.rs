//! Reaction times, measured rather than asserted (timings do not belong in pass/fail tests): from a
//! change accepted by the API server until the data plane shows it, over 50 changes each. Runs only
//! with `PORTCULLIS_MEASURE=1`, and prints the figures:
//!
//!     PORTCULLIS_MEASURE=1 cargo test --test cluster -- reaction_times --nocapture

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, PostParams};

use crate::harness::*;

pub const NAME: &str = "reaction_times";
const CHANGES: usize = 50;

pub async fn run(cp: &ControlPlane, slot: u8) -> Result<()> {
    if std::env::var_os("PORTCULLIS_MEASURE").is_none() {
        println!("{NAME}: set PORTCULLIS_MEASURE=1 to measure");
        return Ok(());
    }
    let ns = cp.namespace("measure")?;
    let kubeconfig = cp.controller_identity(&ns)?;
    let backend = Backend::start(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, slot, 1)), 8080),
        "web",
        "web-1",
    )
    .await?;
    let (secret, _) = tls_secret(&ns, "web-tls", &["m.example.com"]);
    cp.apply(
        &[
            secret,
            service_with_endpoints(&ns, "web", &[backend.addr]),
            ingress(&ns, "web", "m.example.com", "web", Some("web-tls")),
        ]
        .join("---\n"),
    )?;
    let controller = Controller::start(
        &kubeconfig,
        &ns,
        IpAddr::V4(Ipv4Addr::new(127, 0, slot, 1)),
        &[],
    )
    .await?;

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&cp.kubeconfig)?,
        &Default::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;

    // Certificates: replace the Secret, then handshake until the new certificate is served.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut certificate_times = Vec::new();
    for _ in 0..CHANGES {
        let (manifest, fingerprint) = tls_secret(&ns, "web-tls", &["m.example.com"]);
        let mut secret: Secret = serde_yaml::from_str(&manifest)?;
        secret.metadata.resource_version = secrets.get("web-tls").await?.metadata.resource_version;
        secrets
            .replace("web-tls", &PostParams::default(), &secret)
            .await?;
        let accepted = Instant::now();
        wait_until(|| async {
            tls_connect(controller.https(), "m.example.com")
                .await
                .ok()
                .map(|(_, fp)| fp == fingerprint)
                .unwrap_or(false)
        })
        .await?;
        certificate_times.push(accepted.elapsed());
    }

    // Routes: create an Ingress, then request its host until it answers.
    let ingresses: Api<Ingress> = Api::namespaced(client, &ns);
    let mut route_times = Vec::new();
    for i in 0..CHANGES {
        let host = format!("r{i}.example.com");
        let ingress: Ingress = serde_yaml::from_str(&crate::harness::ingress(
            &ns,
            &format!("r{i}"),
            &host,
            "web",
            None,
        ))?;
        ingresses.create(&PostParams::default(), &ingress).await?;
        let accepted = Instant::now();
        wait_until(|| async {
            matches!(http_get(controller.http(), &host, "/").await, Ok((200, _)))
        })
        .await?;
        route_times.push(accepted.elapsed());
    }
    println!(
        "{NAME}: Secret update accepted -> new certificate served: {}",
        summary(&mut certificate_times)
    );
    println!(
        "{NAME}: Ingress create accepted -> route answers:          {}",
        summary(&mut route_times)
    );
    Ok(())
}

async fn wait_until<F, Fut>(mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        anyhow::ensure!(Instant::now() < deadline, "no reaction within 20 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn summary(times: &mut [Duration]) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "median {:.1} ms, max {:.1} ms, min {:.1} ms (n={})",
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        ms(times[0]),
        times.len()
    )
}
