//! One scenario per behaviour of cluster mode; each gets its own namespace, its own loopback IPs for
//! controllers (127.0.SLOT.x) and its own backend addresses (10.244.SLOT.x).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;

use crate::harness::*;

pub const NAMES: &[&str] = &[
    "tls_secret_rotated_through_the_api_is_served_without_restart",
    "secret_created_after_its_ingress_is_picked_up",
    "a_secret_made_as_the_kubernetes_docs_show_is_served",
    "ingresses_of_other_or_unknown_classes_are_never_served_nor_given_status",
    "classless_ingresses_follow_the_default_class",
    "only_the_leader_writes_status_and_a_successor_takes_over",
    "endpoint_slice_changes_take_effect",
    "every_problem_kind_becomes_one_warning_event",
    "traffic_keeps_flowing_through_api_server_and_etcd_outages",
    "expired_watches_are_relisted_while_traffic_flows",
    "basic_auth_secret_changes_through_the_api_are_live_and_a_deleted_one_fails_closed",
    "client_ca_secret_changes_through_the_api_are_live_and_a_deleted_one_fails_closed",
];

pub async fn run(name: &str, cp: &ControlPlane, slot: u8) -> Result<()> {
    let t = Test { cp, slot };
    match name {
        "tls_secret_rotated_through_the_api_is_served_without_restart" => t.secret_rotation().await,
        "secret_created_after_its_ingress_is_picked_up" => t.secret_after_ingress().await,
        "a_secret_made_as_the_kubernetes_docs_show_is_served" => t.docs_secret().await,
        "ingresses_of_other_or_unknown_classes_are_never_served_nor_given_status" => {
            t.foreign_classes().await
        }
        "classless_ingresses_follow_the_default_class" => t.default_class().await,
        "only_the_leader_writes_status_and_a_successor_takes_over" => t.leader_status().await,
        "endpoint_slice_changes_take_effect" => t.endpoint_changes().await,
        "every_problem_kind_becomes_one_warning_event" => t.events().await,
        "traffic_keeps_flowing_through_api_server_and_etcd_outages" => t.api_outage().await,
        "expired_watches_are_relisted_while_traffic_flows" => t.expired_watches().await,
        "basic_auth_secret_changes_through_the_api_are_live_and_a_deleted_one_fails_closed" => {
            t.basic_auth_secret().await
        }
        "client_ca_secret_changes_through_the_api_are_live_and_a_deleted_one_fails_closed" => {
            t.client_ca_secret().await
        }
        other => bail!("unknown scenario {other}"),
    }
}

const WAIT: Duration = Duration::from_secs(15);

struct Test<'a> {
    cp: &'a ControlPlane,
    slot: u8,
}

impl Test<'_> {
    fn controller_ip(&self, n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, self.slot, n))
    }

    fn backend_addr(&self, n: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 244, self.slot, n)), 8080)
    }

    /// A namespace with the controller's ServiceAccount, and a kubeconfig for it.
    /// Waits for a Warning Event about `object` with `reason` whose note contains `needle`.
    async fn warning_event(
        &self,
        ns: &str,
        object: &str,
        reason: &str,
        needle: &str,
    ) -> Result<()> {
        let prefix = format!("{object} {reason} Warning");
        eventually(&format!("a {reason} Warning Event on {object}"), WAIT, || async {
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
        })
        .await?;
        Ok(())
    }

    fn setup(&self, prefix: &str) -> Result<(String, std::path::PathBuf)> {
        let ns = self.cp.namespace(prefix)?;
        let kubeconfig = self.cp.controller_identity(&ns)?;
        Ok((ns, kubeconfig))
    }

    async fn start(
        &self,
        kubeconfig: &std::path::Path,
        ns: &str,
        n: u8,
        extra: &[&str],
    ) -> Result<Controller> {
        let status = format!("192.0.2.{n}");
        let mut args = vec!["--publish-status-address", status.as_str()];
        args.extend_from_slice(extra);
        Controller::start(kubeconfig, ns, self.controller_ip(n), &args).await
    }

    fn status_of(&self, ns: &str, ingress: &str) -> Result<String> {
        self.cp.kubectl(&[
            "-n",
            ns,
            "get",
            "ingress",
            ingress,
            "-o",
            "jsonpath={.status.loadBalancer.ingress[*].ip}",
        ])
    }

    async fn secret_rotation(&self) -> Result<()> {
        let (ns, kubeconfig) = self.setup("rotation")?;
        let backend = Backend::start(self.backend_addr(1), "web", "web-1").await?;
        let (secret, first) = tls_secret(&ns, "web-tls", &["a.example.com"]);
        self.cp.apply(
            &[
                secret,
                service_with_endpoints(&ns, "web", &[backend.addr]),
                ingress(&ns, "web", "a.example.com", "web", Some("web-tls")),
            ]
            .join("---\n"),
        )?;
        let controller = self.start(&kubeconfig, &ns, 1, &[]).await?;

        let served = eventually("the first certificate", WAIT, || async {
            https_get(controller.https(), "a.example.com", "/")
                .await
                .ok()
                .filter(|(s, _, fp)| *s == 200 && *fp == first)
        })
        .await?;
        ensure!(
            served.1.contains("\"web\""),
            "served by the web service: {}",
            served.1
        );

        // An established connection must survive the rotation.
        let (tls, fp) = tls_connect(controller.https(), "a.example.com").await?;
        ensure!(fp == first);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);

        let (secret, second) = tls_secret(&ns, "web-tls", &["a.example.com"]);
        self.cp.apply(&secret)?;
        eventually(
            "the rotated certificate on new connections",
            WAIT,
            || async {
                https_get(controller.https(), "a.example.com", "/")
                    .await
                    .ok()
                    .filter(|(_, _, fp)| *fp == second)
            },
        )
        .await?;
        let req = hyper::Request::get("/after")
            .header("host", "a.example.com")
            .body(Full::new(bytes::Bytes::new()))?;
        let resp = sender.send_request(req).await?;
        ensure!(
            resp.status() == 200,
            "the connection established before the rotation still works"
        );
        let body = resp.into_body().collect().await?.to_bytes();
        ensure!(String::from_utf8_lossy(&body).contains("/after"));
        Ok(())
    }

    /// The Kubernetes documentation's recipe for a TLS Secret: `openssl req -x509 …` (a self-signed
    /// certificate that OpenSSL 3 marks CA:TRUE), then `kubectl create secret tls`.
    async fn docs_secret(&self) -> Result<()> {
        let (ns, kubeconfig) = self.setup("docs-secret")?;
        let backend = Backend::start(self.backend_addr(1), "web", "web-1").await?;
        let host = "foo.example.com";
        let dir = tempfile::tempdir()?;
        let (cn, san) = (format!("/CN={host}"), format!("subjectAltName=DNS:{host}"));
        let openssl = std::process::Command::new("openssl")
            .current_dir(dir.path())
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
            .args([
                "-keyout", "tls.key", "-out", "tls.crt", "-subj", &cn, "-addext", &san,
            ])
            .output()?;
        ensure!(
            openssl.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&openssl.stderr)
        );
        let crt = dir.path().join("tls.crt");
        let pem = std::fs::read(&crt)?;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(&pem)?;
        let fp = crate::support::pki::fingerprint(&der);
        let (cert_arg, key_arg) = (
            format!("--cert={}", crt.display()),
            format!("--key={}", dir.path().join("tls.key").display()),
        );
        self.cp.kubectl(&[
            "-n", &ns, "create", "secret", "tls", "docs-tls", &cert_arg, &key_arg,
        ])?;
        self.cp.apply(
            &[
                service_with_endpoints(&ns, "web", &[backend.addr]),
                ingress(&ns, "web", host, "web", Some("docs-tls")),
            ]
            .join("---\n"),
        )?;
        let controller = self.start(&kubeconfig, &ns, 1, &[]).await?;
        eventually("the docs certificate served", WAIT, || async {
            https_get(controller.https(), host, "/")
                .await
                .ok()
                .filter(|(s, _, got)| *s == 200 && *got == fp)
        })
        .await?;
        // A client that trusts exactly that certificate, as the docs' reader would, verifies it.
        let https = controller.https();
        let curl = crate::support::tools::curl_https_status(host, https, &crt).await;
        ensure!(
            curl.success && curl.stdout == "200",
            "curl --cacert tls.crt: {} {}",
            curl.stdout,
            curl.stderr
        );
        // Served without complaint: a Normal Event, no Warning.
        let events = || {
            self.cp.kubectl(&[
                "-n",
                &ns,
                "get",
                "events.events.k8s.io",
                "-o",
                "jsonpath={range .items[*]}{.regarding.name} {.reason} {.type}{\"\\n\"}{end}",
            ])
        };
        eventually("the Served Event", WAIT, || async {
            events().ok().filter(|e| e.contains("web Served Normal"))
        })
        .await?;
        let warnings: Vec<String> = events()?
            .lines()
            .filter(|l| l.ends_with(" Warning"))
            .map(String::from)
            .collect();
        ensure!(warnings.is_empty(), "Warning Events: {warnings:?}");
        Ok(())
    }

    async fn secret_after_ingress(&self) -> Result<()> {
        let (ns, kubeconfig) = self.setup("late-secret")?;
        let backend = Backend::start(self.backend_addr(1), "web", "web-1").await?;
        self.cp.apply(
            &[
                service_with_endpoints(&ns, "web", &[backend.addr]),
                ingress(&ns, "web", "late.example.com", "web", Some("late-tls")),
            ]
            .join("---\n"),
        )?;
        let controller = self.start(&kubeconfig, &ns, 1, &[]).await?;
        let (status, _, default_fp) =
            https_get(controller.https(), "late.example.com", "/").await?;
        ensure!(
            status == 200,
            "the host is served with the default certificate meanwhile"
        );

        let (secret, fp) = tls_secret(&ns, "late-tls", &["late.example.com"]);
        ensure!(fp != default_fp);
        self.cp.apply(&secret)?;
        eventually("the late Secret's certificate", WAIT, || async {
            https_get(controller.https(), "late.example.com", "/")
                .await
                .ok()
                .filter(|(s, _, got)| *s == 200 && *got == fp)
        })
        .await?;
        Ok(())
    }

    async fn foreign_classes(&self) -> Result<()> {
        let (ns, kubeconfig) = self.setup("classes")?;
        let backend = Backend::start(self.backend_addr(1), "web", "web-1").await?;
        let foreign = |name: &str, host: &str, class: &str| {
            ingress(&ns, name, host, "web", None).replace(
                "ingressClassName: portcullis",
                &format!("ingressClassName: {class}"),
            )
        };
        self.cp.apply(
            &[
                service_with_endpoints(&ns, "web", &[backend.addr]),
                ingress(&ns, "ours", "ours.example.com", "web", None),
                foreign("nginx", "nginx.example.com", "nginx"),
                foreign("unknown", "unknown.example.com", "some-invalid-class-name"),
            ]
            .join("---\n"),
        )?;
        let controller = self.start(&kubeconfig, &ns, 1, &[]).await?;
        eventually("status on our Ingress", WAIT, || async {
            self.status_of(&ns, "ours")
                .ok()
                .filter(|s| s == "192.0.2.1")
        })
        .await?;
        let (status, _) = http_get(controller.http(), "ours.example.com", "/").await?;
        ensure!(status == 200);
        // Give the status writer time to (wrongly) touch the others before looking.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (name, host) in [
            ("nginx", "nginx.example.com"),
            ("unknown", "unknown.example.com"),
        ] {
            let (status, _) = http_get(controller.http(), host, "/").await?;
            ensure!(status == 404, "{name} must not be served, got {status}");
            ensure!(
                self.status_of(&ns, name)?.is_empty(),
                "{name} must not get status"
            );
        }

        // Moving our Ingress to another class clears the status we wrote.
        self.cp
            .apply(&foreign("ours", "ours.example.com", "nginx"))?;
        eventually("status cleared after leaving our class", WAIT, || async {
            self.status_of(&ns, "ours").ok().filter(|s| s.is_empty())
        })
        .await?;
        let (status, _) = http_get(controller.http(), "ours.example.com", "/").await?;
        ensure!(status == 404);
        Ok(())
    }

    async fn default_class(&self) -> Result<()> {
        let (ns, kubeconfig) = self.setup("default-class")?;
        let backend = Backend::start(self.backend_addr(1), "web", "web-1").await?;
        let private = format!("private-{ns}");
        // The DefaultIngressClass admission plugin gives new class-less Ingresses the default class, so
        // a class-less Ingress is made by removing the class after creation (updates are not mutated).
        let classless = ingress(&ns, "classless", "classless.example.com", "web", None).replace(
            "ingressClassName: portcullis",
            "ingressClassName: placeholder",
        );
        self.cp.apply(&classless)?;
        self.cp.kubectl(&[
            "-n",
            &ns,
            "patch",
            "ingress",
            "classless",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/ingressClassName"}]"#,
        ])?;
        self.cp.apply(
            &[
                service_with_endpoints(&ns, "web", &[backend.addr]),
                ingress_class(false).replace("name: portcullis", &format!("name: {private}")),
                ingress(&ns, "private", "private.example.com", "web", None).replace(
                    "ingressClassName: portcullis",
                    &format!("ingressClassName: {private}"),
                ),
            ]
            .join("---\n"),
        )?;
        // `portcullis` is the cluster's default class (set up by the suite); `private-…` is not.
        // The controllers of the other class come from releases of the chart with their own Leases.
        let private_kubeconfig = self.cp.controller_identity_with(
            &ns,
            &format!("{ns}-private"),
            &["controller.electionId=private-leader"],
        )?;
        let flag_kubeconfig = self.cp.controller_identity_with(
            &ns,
            &format!("{ns}-flag"),
            &["controller.electionId=flag-leader"],
        )?;
        let default = self.start(&kubeconfig, &ns, 1, &[]).await?;
        let private_controller = self
            .start(
                &private_kubeconfig,
                &ns,
                2,
                &[
                    "--ingress-class",
                    &private,
                    "--election-id",
                    "private-leader",
                ],
            )
            .await?;
        ensure!(
            http_get(default.http(), "classless.example.com", "/")
                .await?
                .0
                == 200,
            "the default class takes class-less Ingresses"
        );
        ensure!(
            http_get(private_controller.http(), "private.example.com", "/")
                .await?
                .0
                == 200
        );
        ensure!(
            http_get(private_controller.http(), "classless.example.com", "/")
                .await?
                .0
                == 404,
            "a non-default class does not"
        );
        ensure!(
            http_get(default.http(), "private.example.com", "/")
                .await?
                .0
                == 404
        );
        drop(private_controller);

        let with_flag = self
            .start(
                &flag_kubeconfig,
                &ns,
                3,
                &[
                    "--ingress-class",
                    &private,
                    "--election-id",
                    "flag-leader",
                    "--watch-ingress-without-class",
                ],
            )
            .await?;
        ensure!(
            http_get(with_flag.http(), "classless.example.com", "/")
                .await?
                .0
                == 200,
            "--watch-ingress-without-class takes them too"
        );
        Ok(())
    }

    async fn leader_status(&self) -> Result<()> {
        let (ns, kubeconfig) = self.setup("leader")?;
        let backend = Backend::start(self.backend_addr(1), "web", "web-1").await?;
        self.cp.apply(
            &[
                service_with_endpoints(&ns, "web", &[backend.addr]),
                ingress(&ns, "web", "leader.example.com", "web", None),
            ]
            .join("---\n"),
        )?;
        let mut one = self.start(&kubeconfig, &ns, 1, &[]).await?;
        let mut two = self.start(&kubeconfig, &ns, 2, &[]).await?;
        let holder = eventually("a leader", WAIT, || async {
            self.cp
                .kubectl(&[
                    "-n",
                    &ns,
                    "get",
                    "lease",
                    "portcullis-leader",
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ])
                .ok()
                .filter(|h| !h.is_empty())
        })
        .await?;
        let leader_pid_one = holder.ends_with(&format!("-{}", one.pid()));
        let (leader_address, follower_address) = if leader_pid_one {
            ("192.0.2.1", "192.0.2.2")
        } else {
            ("192.0.2.2", "192.0.2.1")
        };
        eventually("status written by the leader", WAIT, || async {
            self.status_of(&ns, "web")
                .ok()
                .filter(|s| s == leader_address)
        })
        .await?;
        // Both replicas serve traffic.
        for c in [&one, &two] {
            ensure!(http_get(c.http(), "leader.example.com", "/").await?.0 == 200);
        }
        // The follower never writes its own address.
        for _ in 0..20 {
            ensure!(
                self.status_of(&ns, "web")? == leader_address,
                "status changed while the leader was alive"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The leader goes away without releasing the Lease; the follower takes over after it expires.
        if leader_pid_one {
            one.kill()
        } else {
            two.kill()
        }
        eventually(
            "the follower to take over and write status",
            Duration::from_secs(40),
            || async {
                self.status_of(&ns, "web")
                    .ok()
                    .filter(|s| s == follower_address)
            },
        )
        .await?;
        Ok(())
    }

    async fn endpoint_changes(&self) -> Result<()> {
        let (ns, kubeconfig) = self.setup("endpoints")?;
        let first = Backend::start(self.backend_addr(1), "web", "pod-1").await?;
        let second = Backend::start(self.backend_addr(2), "web", "pod-2").await?;
        self.cp.apply(
            &[
                service_with_endpoints(&ns, "web", &[first.addr]),
                ingress(&ns, "web", "ep.example.com", "web", None),
            ]
            .join("---\n"),
        )?;
        let controller = self.start(&kubeconfig, &ns, 1, &[]).await?;
        let pod = |body: &str| {
            serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["pod"].as_str().map(String::from))
        };
        let (status, body) = http_get(controller.http(), "ep.example.com", "/").await?;
        ensure!(status == 200 && pod(&body).as_deref() == Some("pod-1"));

        self.cp
            .apply(&service_with_endpoints(&ns, "web", &[second.addr]))?;
        eventually("traffic to the new endpoint", WAIT, || async {
            let (_, body) = http_get(controller.http(), "ep.example.com", "/")
                .await
                .ok()?;
            (pod(&body).as_deref() == Some("pod-2")).then_some(())
        })
        .await?;

        self.cp.apply(&service_with_endpoints(
            &ns,
            "web",
            &[first.addr, second.addr],
        ))?;
        eventually("both endpoints in turn", WAIT, || async {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..4 {
                seen.insert(pod(&http_get(controller.http(), "ep.example.com", "/")
                    .await
                    .ok()?
                    .1)?);
            }
            (seen.len() == 2).then_some(())
        })
        .await?;

        let not_ready = service_with_endpoints(&ns, "web", &[first.addr])
            .replace("ready: true", "ready: false");
        self.cp.apply(&not_ready)?;
        eventually("503 without ready endpoints", WAIT, || async {
            (http_get(controller.http(), "ep.example.com", "/")
                .await
                .ok()?
                .0
                == 503)
                .then_some(())
        })
        .await?;
        Ok(())
    }

    async fn events(&self) -> Result<()> {
        let (ns, kubeconfig) = self.setup("events")?;
        let backend = Backend::start(self.backend_addr(1), "web", "web-1").await?;
        let (good, _) = tls_secret(&ns, "good-tls", &["good.example.com"]);
        let (crt_only, _) = tls_secret(&ns, "x", &["mismatch.example.com"]);
        let (other, _) = tls_secret(&ns, "y", &["mismatch.example.com"]);
        let crt = |m: &str| serde_yaml_value(m, "tls.crt");
        let key = |m: &str| serde_yaml_value(m, "tls.key");
        let mismatched = secret_manifest(&ns, "mismatch-tls", &crt(&crt_only), &key(&other));
        let garbage = secret_manifest(
            &ns,
            "garbage-tls",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            "junk",
        );
        let annotated = ingress(&ns, "bad-annotation", "anno.example.com", "web", None).replace(
            &format!("namespace: {ns}}}"),
            &format!("namespace: {ns}, annotations: {{portcullis.io/ssl-redirect: maybe}}}}"),
        );
        self.cp.apply(
            &[
                service_with_endpoints(&ns, "web", &[backend.addr]),
                good,
                mismatched,
                garbage,
                ingress(&ns, "missing-service", "ms.example.com", "nowhere", None),
                ingress(
                    &ns,
                    "missing-secret",
                    "mt.example.com",
                    "web",
                    Some("absent-tls"),
                ),
                ingress(
                    &ns,
                    "bad-cert",
                    "bc.example.com",
                    "web",
                    Some("garbage-tls"),
                ),
                ingress(
                    &ns,
                    "key-mismatch",
                    "mismatch.example.com",
                    "web",
                    Some("mismatch-tls"),
                ),
                ingress(
                    &ns,
                    "wrong-host",
                    "wrong.example.com",
                    "web",
                    Some("good-tls"),
                ),
                ingress(&ns, "conflict-a", "dup.example.com", "web", None),
                annotated,
            ]
            .join("---\n"),
        )?;
        // Created later, so it is the younger one and loses the conflict.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        self.cp
            .apply(&ingress(&ns, "conflict-b", "dup.example.com", "web", None))?;
        let _controller = self.start(&kubeconfig, &ns, 1, &[]).await?;

        let expected = [
            ("missing-service", "MissingService"),
            ("missing-secret", "MissingSecret"),
            ("bad-cert", "InvalidCertificate"),
            ("key-mismatch", "KeyMismatch"),
            ("wrong-host", "CertificateHostMismatch"),
            ("conflict-b", "RuleConflict"),
            ("bad-annotation", "InvalidAnnotation"),
            ("conflict-a", "Served"),
        ];
        let events = || -> Result<Vec<(String, String, String)>> {
            let out = self.cp.kubectl(&[
                "-n",
                &ns,
                "get",
                "events.events.k8s.io",
                "-o",
                "jsonpath={range .items[*]}{.regarding.name} {.reason} {.type}{\"\\n\"}{end}",
            ])?;
            Ok(out
                .lines()
                .filter_map(|l| {
                    let mut p = l.split_whitespace();
                    Some((
                        p.next()?.to_string(),
                        p.next()?.to_string(),
                        p.next()?.to_string(),
                    ))
                })
                .collect())
        };
        eventually("an Event for every problem", WAIT, || async {
            let got = events().ok()?;
            expected
                .iter()
                .all(|(obj, reason)| got.iter().any(|(o, r, _)| o == obj && r == reason))
                .then_some(())
        })
        .await?;
        let before = events()?;
        ensure!(
            before
                .iter()
                .filter(|(_, r, t)| r != "Served" && t == "Warning")
                .count()
                >= 7
        );
        // A rebuild for an unrelated change must not repeat them.
        self.cp
            .apply(&service_with_endpoints(&ns, "unrelated", &[backend.addr]))?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = events()?;
        ensure!(
            after.len() == before.len(),
            "no Event storm on rebuild: {} then {}",
            before.len(),
            after.len()
        );
        Ok(())
    }

    /// An Opaque auth Secret (not covered by the TLS Secret watch) changed, then deleted, through the
    /// API: each change is live without restart, and deletion shuts the site (503) with a Warning
    /// Event naming the Secret.
    async fn basic_auth_secret(&self) -> Result<()> {
        let (ns, kubeconfig) = self.setup("basic-auth")?;
        let backend = Backend::start(self.backend_addr(1), "web", "web-1").await?;
        let htpasswd = |password: &str| -> Result<String> {
            let out = std::process::Command::new("htpasswd")
                .args(["-nbB", "alice", password])
                .output()?;
            ensure!(
                out.status.success(),
                "htpasswd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(String::from_utf8(out.stdout)?.trim().to_string())
        };
        let secret = |line: &str| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: {ns}}}\ntype: Opaque\nstringData: {{auth: {}}}\n",
                serde_json::Value::from(line)
            )
        };
        let protected = ingress(&ns, "private", "private.example.com", "web", None).replace(
            &format!("namespace: {ns}}}"),
            &format!(
                "namespace: {ns}, annotations: {{nginx.ingress.kubernetes.io/auth-type: basic, nginx.ingress.kubernetes.io/auth-secret: users}}}}"
            ),
        );
        self.cp.apply(
            &[
                service_with_endpoints(&ns, "web", &[backend.addr]),
                secret(&htpasswd("first")?),
                protected,
            ]
            .join("---\n"),
        )?;
        let controller = self.start(&kubeconfig, &ns, 1, &[]).await?;
        let status = |password: &'static str| {
            let addr = controller.http();
            async move {
                let credentials =
                    crate::support::controller::base64(format!("alice:{password}").as_bytes());
                let req = crate::support::request("GET", "private.example.com", "/")
                    .header("authorization", &format!("Basic {credentials}"));
                crate::support::client::try_http_send(addr, req)
                    .await
                    .ok()
                    .map(|r| r.status.as_u16())
            }
        };
        eventually("alice admitted with the first password", WAIT, || async {
            (status("first").await == Some(200)).then_some(())
        })
        .await?;
        ensure!(status("second").await == Some(401));

        self.cp.apply(&secret(&htpasswd("second")?))?;
        eventually(
            "the changed Secret admits the second password",
            WAIT,
            || async { (status("second").await == Some(200)).then_some(()) },
        )
        .await?;
        ensure!(
            status("first").await == Some(401),
            "the first password no longer works"
        );

        self.cp.kubectl(&["-n", &ns, "delete", "secret", "users"])?;
        eventually("a deleted Secret fails closed", WAIT, || async {
            (status("second").await == Some(503)).then_some(())
        })
        .await?;
        self.warning_event(
            &ns,
            "private",
            "MissingSecret",
            &format!("auth-secret {ns}/users does not exist"),
        )
        .await?;
        Ok(())
    }

    /// The CA Secret of `auth-tls-secret` (Opaque, not covered by the TLS Secret watch) replaced, then
    /// deleted, through the API: each change is live without restart, and deletion shuts the site
    /// (503) with a Warning Event naming the Secret.
    async fn client_ca_secret(&self) -> Result<()> {
        let (ns, kubeconfig) = self.setup("client-ca")?;
        let backend = Backend::start(self.backend_addr(1), "web", "web-1").await?;
        let host = "mtls.example.com";
        let (server_secret, _) = tls_secret(&ns, "web-tls", &[host]);
        // Two CAs, and a client certificate issued by the first.
        let ca = |cn: &str| -> Result<rcgen::CertifiedIssuer<'static, rcgen::KeyPair>> {
            let mut params = rcgen::CertificateParams::new(Vec::new())?;
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            Ok(rcgen::CertifiedIssuer::self_signed(
                params,
                rcgen::KeyPair::generate()?,
            )?)
        };
        let (first, second) = (ca("First CA")?, ca("Second CA")?);
        let mut leaf = rcgen::CertificateParams::new(Vec::new())?;
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let leaf_key = rcgen::KeyPair::generate()?;
        let leaf = leaf.signed_by(&leaf_key, &first)?;
        let ca_secret = |pem: &str| {
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: client-ca, namespace: {ns}}}\ntype: Opaque\nstringData: {{ca.crt: {}}}\n",
                serde_json::Value::from(pem)
            )
        };
        let protected = ingress(&ns, "private", host, "web", Some("web-tls")).replace(
            &format!("namespace: {ns}}}"),
            &format!(
                "namespace: {ns}, annotations: {{nginx.ingress.kubernetes.io/auth-tls-secret: client-ca}}}}"
            ),
        );
        self.cp.apply(
            &[
                service_with_endpoints(&ns, "web", &[backend.addr]),
                server_secret,
                ca_secret(&first.pem()),
                protected,
            ]
            .join("---\n"),
        )?;
        let controller = self.start(&kubeconfig, &ns, 1, &[]).await?;
        let client = crate::support::TlsClient::new()
            .sni(host)
            .client_cert(&leaf.pem(), &leaf_key.serialize_pem());
        let status = || {
            let client = &client;
            let addr = controller.https();
            async move {
                let mut sender = client.connect(addr).await.ok()?.http().await;
                let resp = sender
                    .try_send(crate::support::request("GET", host, "/"))
                    .await
                    .ok()?;
                Some(resp.status.as_u16())
            }
        };
        eventually("alice admitted under the first CA", WAIT, || async {
            (status().await == Some(200)).then_some(())
        })
        .await?;

        self.cp.apply(&ca_secret(&second.pem()))?;
        eventually("the replaced CA refuses alice", WAIT, || async {
            (status().await == Some(400)).then_some(())
        })
        .await?;

        self.cp
            .kubectl(&["-n", &ns, "delete", "secret", "client-ca"])?;
        eventually("a deleted CA Secret fails closed", WAIT, || async {
            (status().await == Some(503)).then_some(())
        })
        .await?;
        self.warning_event(
            &ns,
            "private",
            "MissingSecret",
            &format!("auth-tls-secret {ns}/client-ca does not exist"),
        )
        .await?;
        Ok(())
    }

    async fn api_outage(&self) -> Result<()> {
        // This scenario stops the API server, so it gets a control plane of its own.
        let cp = ControlPlane::up("outage")?;
        let result = async {
            cp.apply(&ingress_class(true))?;
            let other = Test {
                cp: &cp,
                slot: self.slot,
            };
            let (ns, kubeconfig) = other.setup("outage")?;
            let backend = Backend::start(self.backend_addr(1), "web", "web-1").await?;
            cp.apply(
                &[
                    service_with_endpoints(&ns, "web", &[backend.addr]),
                    ingress(&ns, "web", "outage.example.com", "web", None),
                ]
                .join("---\n"),
            )?;
            let controller = other.start(&kubeconfig, &ns, 1, &[]).await?;
            ensure!(
                http_get(controller.http(), "outage.example.com", "/")
                    .await?
                    .0
                    == 200
            );

            // A minute without the API server: traffic is served from the last configuration.
            cp.control_plane_command("stop-apiserver")?;
            let served = keep_serving(
                controller.http(),
                "outage.example.com",
                Duration::from_secs(60),
            )
            .await?;
            ensure!(served > 300, "only {served} requests in a minute");
            cp.control_plane_command("start-apiserver")?;

            // etcd restarting under the API server, while traffic flows.
            let restart = tokio::task::spawn_blocking({
                let dir = cp.dir().to_path_buf();
                move || ControlPlane::command_in(&dir, "restart-etcd")
            });
            keep_serving(
                controller.http(),
                "outage.example.com",
                Duration::from_secs(3),
            )
            .await?;
            restart.await??;
            keep_serving(
                controller.http(),
                "outage.example.com",
                Duration::from_secs(1),
            )
            .await?;

            // The watches reconnect: a change made after the outage is served.
            cp.apply(&ingress(&ns, "after", "after.example.com", "web", None))?;
            eventually(
                "a route created after the outage",
                Duration::from_secs(60),
                || async {
                    (http_get(controller.http(), "after.example.com", "/")
                        .await
                        .ok()?
                        .0
                        == 200)
                        .then_some(())
                },
            )
            .await?;
            Ok(())
        }
        .await;
        cp.down();
        result
    }
}

impl Test<'_> {
    async fn expired_watches(&self) -> Result<()> {
        let (ns, kubeconfig) = self.setup("expiry")?;
        let backend = Backend::start(self.backend_addr(1), "web", "web-1").await?;
        self.cp.apply(
            &[
                service_with_endpoints(&ns, "web", &[backend.addr]),
                ingress(&ns, "before", "before.example.com", "web", None),
            ]
            .join("---\n"),
        )?;

        // The controller talks to the API server through a proxy that can expire its watches.
        let server = self.cp.server()?;
        let upstream: SocketAddr = server.trim_start_matches("https://").parse()?;
        let proxy = crate::fault_proxy::FaultProxy::start(
            SocketAddr::new(self.controller_ip(9), 0),
            upstream,
            &std::fs::read(self.cp.dir().join("pki/ca.crt"))?,
        )
        .await?;
        let ca = self.cp.dir().join(format!("{ns}-proxy-ca.crt"));
        std::fs::write(&ca, &proxy.ca_pem)?;
        let original = std::fs::read_to_string(&kubeconfig)?;
        let old_ca = self.cp.dir().join("pki/ca.crt").display().to_string();
        let through_proxy = original
            .replace(server.trim(), &format!("https://{}", proxy.addr))
            .replace(&old_ca, &ca.display().to_string());
        ensure!(
            through_proxy != original,
            "the kubeconfig points at the proxy"
        );
        let proxied = self.cp.dir().join(format!("{ns}-proxied.kubeconfig"));
        std::fs::write(&proxied, through_proxy)?;
        let controller = self.start(&proxied, &ns, 1, &[]).await?;
        ensure!(
            http_get(controller.http(), "before.example.com", "/")
                .await?
                .0
                == 200
        );

        proxy.expire_watches();
        self.cp
            .apply(&ingress(&ns, "after", "after.example.com", "web", None))?;
        // The unaffected route keeps answering while the watches fail and re-list.
        keep_serving(
            controller.http(),
            "before.example.com",
            Duration::from_secs(2),
        )
        .await?;
        eventually(
            "the change made while the watches expired",
            WAIT,
            || async {
                (http_get(controller.http(), "after.example.com", "/")
                    .await
                    .ok()?
                    .0
                    == 200)
                    .then_some(())
            },
        )
        .await?;
        eventually("410 Gone for every watched kind", WAIT, || async {
            (proxy.gone_sent() >= 5).then_some(())
        })
        .await
        .with_context(|| format!("{} kinds got 410", proxy.gone_sent()))?;
        let log = std::fs::read_to_string(&controller.log)?;
        ensure!(log.contains("watch failed"), "the expiry is logged");
        keep_serving(
            controller.http(),
            "before.example.com",
            Duration::from_millis(500),
        )
        .await?;
        Ok(())
    }
}

/// Sends requests for `duration` (one every 100 ms) and fails on the first that is not answered 200.
async fn keep_serving(addr: SocketAddr, host: &str, duration: Duration) -> Result<usize> {
    let mut served = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < duration {
        let (status, _) = http_get(addr, host, "/").await?;
        ensure!(status == 200, "request {served} failed: {status}");
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(served)
}

/// The value of `key` in a Secret manifest written by [`secret_manifest`].
fn serde_yaml_value(manifest: &str, key: &str) -> String {
    let json = manifest.split("stringData: ").nth(1).unwrap_or("{}");
    serde_json::from_str::<serde_json::Value>(json.trim())
        .ok()
        .and_then(|v| v[key].as_str().map(String::from))
        .unwrap_or_default()
}
