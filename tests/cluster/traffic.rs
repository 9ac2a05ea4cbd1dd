//! Traffic management through the API: a canary Ingress's weight changed with `kubectl apply` while
//! requests flow (none may fail, each split as asked), and sessions under cookie affinity while the
//! Service's endpoints are scaled up and down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail, ensure};

use crate::harness::*;
use crate::support::client;

pub const NAMES: &[&str] = &[
    "balancing_canary_weight_changed_through_the_api_under_load_fails_no_request",
    "balancing_affinity_sessions_stay_put_while_endpoints_are_scaled",
];

pub async fn run(name: &str, cp: &ControlPlane, slot: u8) -> Result<()> {
    match name {
        "balancing_canary_weight_changed_through_the_api_under_load_fails_no_request" => {
            canary_weight(cp, slot).await
        }
        "balancing_affinity_sessions_stay_put_while_endpoints_are_scaled" => {
            scaling(cp, slot).await
        }
        other => bail!("unknown scenario {other}"),
    }
}

const WAIT: Duration = Duration::from_secs(15);
const HOST: &str = "traffic.example.com";

fn backend_addr(slot: u8, n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, slot, n)), 8080)
}

/// `ingress()` with these `nginx.ingress.kubernetes.io/` annotations.
fn annotated(ns: &str, name: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let list: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("nginx.ingress.kubernetes.io/{k}: {v:?}"))
        .collect();
    ingress(ns, name, HOST, service, None).replacen(
        &format!("metadata: {{name: {name}, namespace: {ns}}}"),
        &format!(
            "metadata: {{name: {name}, namespace: {ns}, annotations: {{{}}}}}",
            list.join(", ")
        ),
        1,
    )
}

/// A controller for `ns`, once it serves `HOST`.
async fn serving(kubeconfig: &std::path::Path, ns: &str, slot: u8) -> Result<Controller> {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, slot, 1));
    let controller = Controller::start(kubeconfig, ns, ip, &[]).await?;
    let addr = controller.http();
    eventually("the Ingress serves", WAIT, || async {
        (http_get(addr, HOST, "/").await.ok()?.0 == 200).then_some(())
    })
    .await?;
    Ok(controller)
}

/// The echo reply's `field` (`service`, `pod`).
fn field(body: &str, field: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get(field)?
        .as_str()
        .map(String::from)
}

async fn canary_weight(cp: &ControlPlane, slot: u8) -> Result<()> {
    let ns = cp.namespace("canary")?;
    let kubeconfig = cp.controller_identity(&ns)?;
    let mut backends = Vec::new();
    for (n, service) in [(1, "app"), (2, "app"), (3, "app-canary"), (4, "app-canary")] {
        let pod = format!("{service}-{n}");
        backends.push(Backend::start(backend_addr(slot, n), service, &pod).await?);
    }
    cp.apply(
        &[
            service_with_endpoints(&ns, "app", &[backends[0].addr, backends[1].addr]),
            service_with_endpoints(&ns, "app-canary", &[backends[2].addr, backends[3].addr]),
            ingress(&ns, "app", HOST, "app", None),
        ]
        .join("---\n"),
    )?;
    let controller = serving(&kubeconfig, &ns, slot).await?;
    let addr = controller.http();

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..2 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut conn = client::http_connection(addr).await;
            let mut failed = Vec::new();
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match conn
                    .try_send(crate::support::request("GET", HOST, "/"))
                    .await
                {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failed.push(format!("{} {}", r.status, r.text())),
                    Err(e) => failed.push(e),
                }
            }
            failed
        }));
    }

    for weight in [0u32, 25, 60, 100] {
        let w = weight.to_string();
        cp.apply(&annotated(
            &ns,
            "app-canary",
            "app-canary",
            &[("canary", "true"), ("canary-weight", &w)],
        ))?;
        // Measured over 2,000 requests once the new weight is live: within 3 points.
        eventually(&format!("weight {weight} live"), WAIT, || async {
            let mut conn = client::http_connection(addr).await;
            let mut seen = BTreeMap::<String, u32>::new();
            for _ in 0..2_000 {
                let r = conn
                    .try_send(crate::support::request("GET", HOST, "/"))
                    .await
                    .ok()?;
                *seen.entry(field(&r.text(), "service")?).or_default() += 1;
            }
            let share = f64::from(seen.get("app-canary").copied().unwrap_or(0)) / 20.0;
            eprintln!("canary weight {weight} through the API: {share:.2} % of 2000 requests");
            ((share - f64::from(weight)).abs() <= 3.0).then_some(())
        })
        .await?;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let failed = task.await?;
        ensure!(
            failed.is_empty(),
            "requests failed during the rollout: {failed:?}"
        );
    }
    Ok(())
}

/// A new session: its pod and its cookie.
async fn new_session(addr: SocketAddr) -> Result<(String, String)> {
    let r = client::try_http_send(addr, crate::support::request("GET", HOST, "/"))
        .await
        .map_err(anyhow::Error::msg)?;
    let cookie = r
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .map(String::from);
    match (field(&r.text(), "pod"), cookie) {
        (Some(pod), Some(cookie)) if r.status == 200 => Ok((pod, cookie)),
        _ => bail!("a new session got {} {:?}", r.status, r.headers),
    }
}

/// Where a session goes now, and whether it got a new cookie.
async fn revisit(addr: SocketAddr, cookie: &str) -> Result<(String, bool)> {
    let req = crate::support::request("GET", HOST, "/").header("cookie", cookie);
    let r = client::try_http_send(addr, req)
        .await
        .map_err(anyhow::Error::msg)?;
    let pod = field(&r.text(), "pod").unwrap_or_default();
    Ok((pod, r.header("set-cookie").is_some()))
}

async fn scaling(cp: &ControlPlane, slot: u8) -> Result<()> {
    let ns = cp.namespace("affinity")?;
    let kubeconfig = cp.controller_identity(&ns)?;
    let mut pods = Vec::new();
    for n in 1..=4 {
        pods.push(Backend::start(backend_addr(slot, n), "app", &format!("app-{n}")).await?);
    }
    let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
    let sticky = [("affinity", "cookie"), ("affinity-mode", "persistent")];
    cp.apply(
        &[
            service_with_endpoints(&ns, "app", &addrs[..3]),
            annotated(&ns, "app", "app", &sticky),
        ]
        .join("---\n"),
    )?;
    let controller = serving(&kubeconfig, &ns, slot).await?;
    let addr = controller.http();
    let mut sessions = Vec::new();
    for _ in 0..30 {
        sessions.push(new_session(addr).await?);
    }

    // Scaled up: new sessions reach the fourth pod, and no old one moves.
    cp.apply(&service_with_endpoints(&ns, "app", &addrs))?;
    eventually("new sessions on app-4", WAIT, || async {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            seen.insert(new_session(addr).await.ok()?.0);
        }
        seen.contains("app-4").then_some(())
    })
    .await?;
    for (pod, cookie) in &sessions {
        let (now, new_cookie) = revisit(addr, cookie).await?;
        ensure!(
            &now == pod && !new_cookie,
            "{cookie}: {pod} → {now} after scaling up"
        );
    }

    // app-2 goes away: only its sessions move.
    cp.apply(&service_with_endpoints(
        &ns,
        "app",
        &[addrs[0], addrs[2], addrs[3]],
    ))?;
    eventually("app-2 out of rotation", WAIT, || async {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            seen.insert(new_session(addr).await.ok()?.0);
        }
        (!seen.contains("app-2")).then_some(())
    })
    .await?;
    for (pod, cookie) in &sessions {
        let (now, new_cookie) = revisit(addr, cookie).await?;
        if pod == "app-2" {
            ensure!(
                now != "app-2" && new_cookie,
                "{cookie} stayed on the removed pod"
            );
        } else {
            ensure!(
                &now == pod && !new_cookie,
                "{cookie}: {pod} → {now} after scaling down"
            );
        }
    }
    Ok(())
}
