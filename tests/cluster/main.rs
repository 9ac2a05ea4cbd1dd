//! End-to-end tests of cluster mode against a real kube-apiserver and etcd (built from pinned Go
//! modules by tests/e2e/control-plane), with RBAC enforced: every controller runs with the token of the
//! ServiceAccount of a release of the Helm chart, so with exactly the permissions the chart grants; the
//! chart itself is tested in chart.rs.
//!
//! The binary re-runs itself in a private network namespace, where backends listen on 10.244.x.y
//! (EndpointSlices may not point at loopback addresses) and nothing touches the host's network.

mod acme;
mod chart;
mod check;
mod conformance;
mod fault_proxy;
mod gateway;
mod harness;
mod measure;
mod scenarios;
#[path = "../support/mod.rs"]
mod support;
mod traffic;

use std::sync::Arc;

use libtest_mimic::{Arguments, Trial};

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let names: Vec<&'static str> = scenarios::NAMES
        .iter()
        .chain(chart::NAMES)
        .chain(traffic::NAMES)
        .chain(acme::NAMES)
        .chain(gateway::NAMES)
        .chain(&[conformance::NAME, measure::NAME, check::NAME])
        .copied()
        .collect();
    let selected = |name: &str| {
        args.filter.as_deref().is_none_or(|f| {
            if args.exact {
                name == f
            } else {
                name.contains(f)
            }
        })
    };
    if args.list || !names.iter().any(|n| selected(n)) {
        let trials = names.iter().map(|n| Trial::test(*n, || Ok(()))).collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }

    harness::enter_private_network();
    let cp = match harness::ControlPlane::up("cluster") {
        Ok(cp) => Arc::new(cp),
        Err(e) => {
            eprintln!("cannot start the control plane: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = cp.apply(&harness::ingress_class(true)) {
        eprintln!("cannot create the IngressClass: {e:#}");
        cp.down();
        return std::process::ExitCode::FAILURE;
    }
    // Every controller then finds the Gateway API installed, as in a cluster that has it.
    if let Err(e) = gateway::install_crds(&cp) {
        eprintln!("cannot install the Gateway API CRDs: {e:#}");
        cp.down();
        return std::process::ExitCode::FAILURE;
    }
    let trials = names
        .iter()
        .copied()
        .enumerate()
        .map(|(slot, name)| {
            let cp = cp.clone();
            Trial::test(name, move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                let slot = slot as u8 + 1;
                let scenario = async {
                    if name == measure::NAME {
                        measure::run(&cp, slot).await
                    } else if name == conformance::NAME {
                        conformance::run(cp.clone()).await
                    } else if acme::NAMES.contains(&name) {
                        acme::run(name, &cp, slot).await
                    } else if name == check::NAME {
                        check::run(&cp, slot).await
                    } else if chart::NAMES.contains(&name) {
                        chart::run(name, &cp, slot).await
                    } else if gateway::NAMES.contains(&name) {
                        gateway::run(name, &cp, slot).await
                    } else if traffic::NAMES.contains(&name) {
                        traffic::run(name, &cp, slot).await
                    } else {
                        scenarios::run(name, &cp, slot).await
                    }
                };
                runtime
                    .block_on(scenario)
                    .map_err(|e| format!("{e:#}").into())
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    cp.down();
    conclusion.exit_code()
}
