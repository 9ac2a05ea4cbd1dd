//! ACME in cluster mode against Pebble, with two replicas run with the token of a chart release that
//! has `config.acme` issuers (so with exactly the RBAC the chart grants for ACME): the replica that is
//! not ordering answers the CA, one order per certificate, a restart re-orders nothing, the orderer
//! killed mid-order is replaced, foreign Secrets and cert-manager's Ingresses are left alone, and
//! cert-manager's own HTTP-01 solver Ingress is served through a sibling's forced redirect.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::harness::*;
use crate::support::pebble::Pebble;
use crate::support::tools;

pub const NAMES: &[&str] = &[
    "acme_the_replica_not_ordering_answers_one_order_per_certificate_and_restarts_reorder_nothing",
    "acme_orderer_killed_mid_order_is_replaced_by_the_other_replica",
    "acme_cert_manager_solver_ingress_is_served_through_a_siblings_forced_redirect",
    "acme_a_failed_order_is_a_warning_event_on_the_ingress_naming_the_step_and_the_cas_detail",
    "acme_external_account_binding_creates_the_account_with_the_cas_key_from_a_secret",
];

pub async fn run(name: &str, cp: &ControlPlane, slot: u8) -> Result<()> {
    let t = AcmeTest { cp, slot };
    match name {
        "acme_the_replica_not_ordering_answers_one_order_per_certificate_and_restarts_reorder_nothing" => {
            t.follower_answers().await
        }
        "acme_orderer_killed_mid_order_is_replaced_by_the_other_replica" => {
            t.orderer_killed().await
        }
        "acme_cert_manager_solver_ingress_is_served_through_a_siblings_forced_redirect" => {
            t.solver_ingress().await
        }
        "acme_a_failed_order_is_a_warning_event_on_the_ingress_naming_the_step_and_the_cas_detail" => {
            t.failed_order().await
        }
        "acme_external_account_binding_creates_the_account_with_the_cas_key_from_a_secret" => {
            t.external_account_binding().await
        }
        other => bail!("unknown ACME scenario {other}"),
    }
}

/// An issuance's whole course, with margin for a loaded machine and for one retry: a step that
/// fails once (a rejected nonce, a validation that came too early) is retried after the first
/// backoff, 48–72 s.
const ISSUED: Duration = Duration::from_secs(150);
/// The leader Lease's duration (15 s) after a killed leader, plus the new orderer's course.
const TAKEOVER: Duration = Duration::from_secs(90);

struct AcmeTest<'a> {
    cp: &'a ControlPlane,
    slot: u8,
}

/// Two replicas of one release with ACME on, a backend, and Pebble.
struct Replicas {
    ns: String,
    kubeconfig: PathBuf,
    config: PathBuf,
    pebble: Pebble,
    controllers: Vec<Controller>,
    _backend: Backend,
}

impl AcmeTest<'_> {
    fn ip(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.slot, n)
    }

    async fn replicas(&self, prefix: &str) -> Result<Replicas> {
        self.replicas_with(prefix, serde_json::json!({}), |_| String::new())
            .await
    }

    /// [`Self::replicas`] with more of Pebble's configuration and more lines for the issuer (given the
    /// namespace).
    async fn replicas_with(
        &self,
        prefix: &str,
        pebble_config: serde_json::Value,
        issuer_lines: impl Fn(&str) -> String,
    ) -> Result<Replicas> {
        let ns = self.cp.namespace(prefix)?;
        // Pebble validates on port 80 of whatever its DNS says; the tests point it per scenario.
        let pebble = Pebble::start_with(self.ip(1), 80, 443, pebble_config).await;
        let directory = format!("config.acme.issuers.pebble.directory={}", pebble.directory);
        let kubeconfig = self.cp.controller_identity_with(
            &ns,
            &ns,
            &["config.acme.default-issuer=pebble", &directory],
        )?;
        let config = self.cp.dir().join(format!("{ns}-config.yaml"));
        std::fs::write(
            &config,
            format!("{}{}", pebble.config("http-01"), issuer_lines(&ns)),
        )?;
        let backend = Backend::start(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, self.slot, 1)), 8080),
            "app",
            "app-1",
        )
        .await?;
        self.cp
            .apply(&service_with_endpoints(&ns, "app", &[backend.addr]))?;
        let mut replicas = Replicas {
            ns,
            kubeconfig,
            config,
            pebble,
            controllers: Vec::new(),
            _backend: backend,
        };
        for n in [1, 2] {
            let c = self.controller(&replicas, n).await?;
            replicas.controllers.push(c);
        }
        Ok(replicas)
    }

    async fn controller(&self, r: &Replicas, n: u8) -> Result<Controller> {
        let config = r.config.display().to_string();
        Controller::start(
            &r.kubeconfig,
            &r.ns,
            IpAddr::V4(self.ip(n)),
            &["--config", &config],
        )
        .await
    }

    /// The index in `r.controllers` of the replica holding the leader Lease (the orderer), once one
    /// of them holds it (a killed predecessor's Lease expires first).
    async fn orderer(&self, r: &Replicas) -> Result<usize> {
        eventually(
            "a replica to hold the leader Lease",
            Duration::from_secs(40),
            || async {
                let holder = self
                    .cp
                    .kubectl(&[
                        "-n",
                        &r.ns,
                        "get",
                        "lease",
                        "portcullis-leader",
                        "-o",
                        "jsonpath={.spec.holderIdentity}",
                    ])
                    .ok()?;
                r.controllers
                    .iter()
                    .position(|c| holder.ends_with(&format!("-{}", c.pid())))
            },
        )
        .await
    }

    fn secret_field(&self, ns: &str, name: &str, path: &str) -> Result<String> {
        self.cp.kubectl(&[
            "-n",
            ns,
            "get",
            "secret",
            name,
            "-o",
            &format!("jsonpath={path}"),
        ])
    }

    /// Waits until `https://HOST/` through `controller` answers 200 with a chain `root` verifies.
    async fn verified(&self, controller: &Controller, host: &str, root: &Path) -> Result<()> {
        eventually(
            &format!("a verified certificate for {host} on {}", controller.ip),
            ISSUED,
            || async {
                let out = tools::curl_https_status(host, controller.https(), root).await;
                (out.stdout.trim() == "200").then_some(())
            },
        )
        .await
    }

    async fn follower_answers(&self) -> Result<()> {
        let mut r = self.replicas("acme-ha").await?;
        let orderer = self.orderer(&r).await?;
        let follower = 1 - orderer;
        // The CA reaches only the replica that does not order.
        let follower_ip = r.controllers[follower].ip;
        let IpAddr::V4(follower_v4) = follower_ip else {
            bail!("IPv4 replicas")
        };
        r.pebble.resolve_all(follower_v4).await;
        let started = Instant::now();
        self.cp.apply(&acme_ingress(
            &r.ns,
            "shop",
            "shop.acme.test",
            "shop-tls",
            &[],
        ))?;
        let root = r.pebble.root().await;
        for c in &r.controllers {
            self.verified(c, "shop.acme.test", &root).await?;
        }
        let issued_in = started.elapsed();
        eprintln!(
            "cluster mode: Ingress applied to a verified certificate on both replicas in {issued_in:?}"
        );
        ensure!(
            r.pebble.orders() == 1,
            "Pebble saw {} orders",
            r.pebble.orders()
        );
        let answered = metric_sum(
            &metrics(&r.controllers[follower]).await?,
            "portcullis_acme_challenges_answered_total",
        );
        ensure!(answered >= 1.0, "the follower answered no challenge");
        let mut orders = 0.0;
        for c in &r.controllers {
            orders += metric_sum(&metrics(c).await?, "portcullis_acme_orders_total{");
        }
        ensure!(orders == 1.0, "the replicas counted {orders} orders");
        // The Secret is Portcullis's, named as documented; the account is one Secret in the
        // controller's namespace.
        ensure!(
            self.secret_field(
                &r.ns,
                "shop-tls",
                "{.metadata.labels.app\\.kubernetes\\.io/managed-by}"
            )? == "portcullis"
        );
        ensure!(
            self.secret_field(
                &r.ns,
                "shop-tls",
                "{.metadata.annotations.portcullis\\.io/acme-names}"
            )? == "shop.acme.test"
        );
        ensure!(
            !self
                .secret_field(
                    &r.ns,
                    "shop-tls",
                    "{.metadata.annotations.portcullis\\.io/acme-ari-id}"
                )?
                .is_empty()
        );
        ensure!(
            !self
                .secret_field(
                    &r.ns,
                    "portcullis-leader-acme-pebble",
                    "{.data.account\\.json}"
                )?
                .is_empty()
        );

        // A foreign Secret is never overwritten: reported on the Ingress, and it keeps serving.
        let (foreign, foreign_fp) = tls_secret(&r.ns, "theirs-tls", &["theirs.acme.test"]);
        self.cp.apply(&foreign)?;
        self.cp.apply(&acme_ingress(
            &r.ns,
            "theirs",
            "theirs.acme.test",
            "theirs-tls",
            &[],
        ))?;
        // cert-manager's Ingresses are cert-manager's, even with our annotation.
        self.cp.apply(&acme_ingress(
            &r.ns,
            "managed",
            "managed.acme.test",
            "managed-tls",
            &[("cert-manager.io/cluster-issuer", "letsencrypt")],
        ))?;
        self.warning_event(&r.ns, "theirs", "AcmeNotOrdered", "not overwritten")
            .await?;
        self.warning_event(&r.ns, "managed", "AcmeNotOrdered", "cert-manager")
            .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        for c in &r.controllers {
            let (_, _, served) = https_get(c.https(), "theirs.acme.test", "/").await?;
            ensure!(
                served == foreign_fp,
                "the foreign Secret is not what is served"
            );
        }
        ensure!(
            self.cp
                .kubectl(&[
                    "-n",
                    &r.ns,
                    "get",
                    "secret",
                    "managed-tls",
                    "--ignore-not-found"
                ])?
                .trim()
                .is_empty(),
            "a Secret was made for cert-manager's Ingress"
        );
        ensure!(
            self.secret_field(&r.ns, "theirs-tls", "{.metadata.labels}")?
                .is_empty(),
            "the foreign Secret was touched"
        );

        // Both replicas restart: the valid certificate in its Secret means no new order.
        let before = r.pebble.orders();
        r.controllers.clear();
        for n in [1, 2] {
            let c = self.controller(&r, n).await?;
            r.controllers.push(c);
        }
        self.orderer(&r).await?;
        for c in &r.controllers {
            self.verified(c, "shop.acme.test", &root).await?;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        ensure!(
            r.pebble.orders() == before,
            "a restart ordered again: {} orders",
            r.pebble.orders()
        );

        // The Secret deleted by hand comes back with the same certificate, without an order.
        let not_after = self.secret_field(
            &r.ns,
            "shop-tls",
            "{.metadata.annotations.portcullis\\.io/acme-not-after}",
        )?;
        self.cp
            .kubectl(&["-n", &r.ns, "delete", "secret", "shop-tls"])?;
        eventually("the deleted Secret written again", ISSUED, || async {
            self.secret_field(
                &r.ns,
                "shop-tls",
                "{.metadata.annotations.portcullis\\.io/acme-not-after}",
            )
            .ok()
            .filter(|n| *n == not_after)
        })
        .await?;
        ensure!(r.pebble.orders() == before, "{} orders", r.pebble.orders());
        Ok(())
    }

    async fn orderer_killed(&self) -> Result<()> {
        let mut r = self.replicas("acme-takeover").await?;
        let orderer = self.orderer(&r).await?;
        let survivor_ip = r.controllers[1 - orderer].ip;
        // The CA's first validation goes to a listener that accepts and never answers, so the order
        // stays in progress until the orderer is killed.
        let tarpit = tokio::net::TcpListener::bind((self.ip(9), 80)).await?;
        r.pebble.resolve_all(self.ip(9)).await;
        self.cp.apply(&acme_ingress(
            &r.ns,
            "shop",
            "takeover.acme.test",
            "takeover-tls",
            &[],
        ))?;
        let (held, _) = tokio::time::timeout(ISSUED, tarpit.accept())
            .await
            .context("the CA's validation to arrive")??;
        ensure!(r.pebble.orders() == 1);
        r.controllers[orderer].kill();
        let killed = Instant::now();
        drop(held);
        drop(tarpit);
        let IpAddr::V4(survivor_v4) = survivor_ip else {
            bail!("IPv4 replicas")
        };
        r.pebble.resolve_all(survivor_v4).await;
        let root = r.pebble.root().await;
        let survivor = r.controllers.remove(1 - orderer);
        eventually(
            "the surviving replica to order and serve the certificate",
            TAKEOVER,
            || async {
                let out =
                    tools::curl_https_status("takeover.acme.test", survivor.https(), &root).await;
                (out.stdout.trim() == "200").then_some(())
            },
        )
        .await?;
        eprintln!(
            "cluster mode: orderer killed mid-order to the certificate served by the other replica in {:?}",
            killed.elapsed()
        );
        ensure!(
            r.pebble.orders() == 2,
            "the half-finished order and one new one, not {}",
            r.pebble.orders()
        );
        Ok(())
    }

    async fn failed_order(&self) -> Result<()> {
        let r = self.replicas("acme-failed").await?;
        // Nothing listens there: the CA's validation is refused.
        r.pebble.resolve_all(self.ip(9)).await;
        self.cp.apply(&acme_ingress(
            &r.ns,
            "shop",
            "failed.acme.test",
            "failed-tls",
            &[],
        ))?;
        self.warning_event(&r.ns, "shop", "AcmeOrderFailed", "validation")
            .await?;
        let events = self.cp.kubectl(&[
            "-n",
            &r.ns,
            "get",
            "events.events.k8s.io",
            "-o",
            "jsonpath={range .items[*]}{.reason} {.note}{\"\\n\"}{end}",
        ])?;
        let failed = events
            .lines()
            .find(|l| l.starts_with("AcmeOrderFailed"))
            .context("no AcmeOrderFailed Event")?;
        ensure!(
            failed.contains(&format!("{}/failed-tls", r.ns)) && failed.contains("refused"),
            "the Event names the Secret and the CA's detail: {failed}"
        );
        // Backing off: no second order within the first minute.
        tokio::time::sleep(Duration::from_secs(5)).await;
        ensure!(r.pebble.orders() == 1, "{} orders", r.pebble.orders());
        Ok(())
    }

    async fn external_account_binding(&self) -> Result<()> {
        // The form CAs hand HMAC keys out in: base64url without padding.
        const HMAC: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
        let pebble = serde_json::json!({
            "externalAccountBindingRequired": true,
            "externalAccountMACKeys": {"kid-1": HMAC},
        });
        let r = self
            .replicas_with("acme-eab", pebble, |ns| {
                format!(
                    "      external-account-binding: {{key-id: kid-1, hmac-key-secret: {ns}/eab}}\n"
                )
            })
            .await?;
        self.cp.apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: eab, namespace: {}}}\nstringData: {{hmac-key: {HMAC}}}\n",
            r.ns
        ))?;
        let orderer = self.orderer(&r).await?;
        let IpAddr::V4(ip) = r.controllers[orderer].ip else {
            bail!("IPv4 replicas")
        };
        r.pebble.resolve_all(ip).await;
        self.cp.apply(&acme_ingress(
            &r.ns,
            "shop",
            "eab.acme.test",
            "eab-tls",
            &[],
        ))?;
        let root = r.pebble.root().await;
        self.verified(&r.controllers[orderer], "eab.acme.test", &root)
            .await?;
        ensure!(
            r.pebble.log().contains("kid-1"),
            "Pebble's log does not show the binding"
        );
        Ok(())
    }

    async fn solver_ingress(&self) -> Result<()> {
        let ns = self.cp.namespace("acme-solver")?;
        let kubeconfig = self.cp.controller_identity(&ns)?;
        let app = Backend::start(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, self.slot, 1)), 8080),
            "app",
            "app-1",
        )
        .await?;
        let solver = Backend::start(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, self.slot, 2)), 8089),
            "cm-acme-http-solver-x7k2p",
            "cm-acme-http-solver-pod",
        )
        .await?;
        let (secret, _) = tls_secret(&ns, "shop-tls", &["shop.solver.test"]);
        let token = "Jk3lC5W2pQh1vx4-yN0aZr8sT7uE6bD9fG2hK1mL0oI";
        // The user's Ingress forces HTTPS; cert-manager's solver Ingress is shaped as cert-manager
        // v1.21 makes it: the legacy class annotation, an Exact path, no TLS, an allowlist annotation.
        let user = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: shop\n  namespace: {ns}\n  annotations: {{nginx.ingress.kubernetes.io/force-ssl-redirect: \"true\"}}\n\
             spec:\n  ingressClassName: portcullis\n  tls: [{{hosts: [shop.solver.test], secretName: shop-tls}}]\n\
             \x20 rules:\n  - host: shop.solver.test\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{name: http}}}}}}}}]}}\n"
        );
        let cm_solver = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: cm-acme-http-solver-x7k2p\n  namespace: {ns}\n  annotations:\n    kubernetes.io/ingress.class: portcullis\n    nginx.ingress.kubernetes.io/whitelist-source-range: 0.0.0.0/0,::/0\n\
             spec:\n  rules:\n  - host: shop.solver.test\n    http: {{paths: [{{path: /.well-known/acme-challenge/{token}, pathType: Exact, backend: {{service: {{name: cm-acme-http-solver-x7k2p, port: {{name: http}}}}}}}}]}}\n"
        );
        self.cp.apply(
            &[
                secret,
                service_with_endpoints(&ns, "app", &[app.addr]),
                service_with_endpoints(&ns, "cm-acme-http-solver-x7k2p", &[solver.addr]),
                user,
                cm_solver,
            ]
            .join("---\n"),
        )?;
        let c = Controller::start(&kubeconfig, &ns, IpAddr::V4(self.ip(1)), &[]).await?;
        let path = format!("/.well-known/acme-challenge/{token}");
        let (status, body) = eventually(
            "the solver to answer over plain HTTP",
            Duration::from_secs(15),
            || async {
                http_get(c.http(), "shop.solver.test", &path)
                    .await
                    .ok()
                    .filter(|(s, _)| *s == 200)
            },
        )
        .await?;
        ensure!(
            status == 200 && body.contains("cm-acme-http-solver-pod"),
            "{body}"
        );
        // Everything else on the host is redirected, and other challenge paths are not the solver's.
        let (status, _) = http_get(c.http(), "shop.solver.test", "/").await?;
        ensure!(
            status == 308,
            "/ answered {status}, not the forced redirect"
        );
        let (status, body) = http_get(
            c.http(),
            "shop.solver.test",
            "/.well-known/acme-challenge/other",
        )
        .await?;
        ensure!(
            !body.contains("cm-acme-http-solver-pod"),
            "another token reached the solver ({status})"
        );
        Ok(())
    }

    async fn warning_event(
        &self,
        ns: &str,
        object: &str,
        reason: &str,
        needle: &str,
    ) -> Result<()> {
        let prefix = format!("{object} {reason} Warning");
        eventually(
            &format!("a {reason} Warning Event on {object}"),
            Duration::from_secs(20),
            || async {
                let out = self
                    .cp
                    .kubectl(&[
                        "-n",
                        ns,
                        "get",
                        "events.events.k8s.io",
                        "-o",
                        "jsonpath={range .items[*]}{.regarding.name} {.reason} {.type} {.note}{\"\\n\"}{end}",
                    ])
                    .ok()?;
                out.lines()
                    .any(|l| l.starts_with(&prefix) && l.contains(needle))
                    .then_some(())
            },
        )
        .await
    }
}

/// An Ingress opting in to ACME for `host`, stored in `secret`, with more annotations.
fn acme_ingress(ns: &str, name: &str, host: &str, secret: &str, more: &[(&str, &str)]) -> String {
    let mut annotations = vec![("portcullis.io/acme".to_string(), "true".to_string())];
    annotations.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let annotations: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("{k}: \"{v}\""))
        .collect();
    let base = ingress(ns, name, host, "app", Some(secret));
    base.replacen(
        &format!("metadata: {{name: {name}, namespace: {ns}}}"),
        &format!(
            "metadata: {{name: {name}, namespace: {ns}, annotations: {{{}}}}}",
            annotations.join(", ")
        ),
        1,
    )
}

async fn metrics(c: &Controller) -> Result<String> {
    let (status, body) = http_get(SocketAddr::new(c.ip, 10254), "admin", "/metrics").await?;
    ensure!(status == 200, "/metrics answered {status}");
    Ok(body)
}

/// The sum of every sample whose line starts with `prefix`.
fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
