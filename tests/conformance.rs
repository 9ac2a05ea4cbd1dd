//! The upstream Kubernetes Ingress conformance scenarios (kubernetes-sigs/ingress-controller-conformance)
//! for the default backend, host rules and path rules, run unchanged from `../shared/conformance/
//! features/` with the `cucumber` crate, through manifest mode.
//!
//! `ingress_class.feature` and `load_balancing.feature` need a cluster (IngressClass objects watched
//! live, Deployments scaled) and run in the cluster suite, which reuses the steps in
//! `conformance/world.rs` with a driver of its own.
//!
//! The run fails on any failed, skipped or unparsable step: a scenario that silently did nothing
//! must not pass.

mod support;

mod conformance {
    pub mod features;
    pub mod manifest_driver;
    pub mod world;
}

use std::path::PathBuf;

use clap::Parser as _;
use cucumber::writer::Stats as _;
use cucumber::{World as _, cli};
use futures_util::FutureExt as _;

use conformance::features::{FeatureFiles, feature_dir};
use conformance::manifest_driver::ManifestDriver;
use conformance::world::{IngressWorld, use_driver};

/// The features that manifest mode can run.
const FEATURES: [&str; 3] = [
    "default_backend.feature",
    "host_rules.feature",
    "path_rules.feature",
];

/// Every scenario starts a controller of its own; a few at a time keep a 2-core machine responsive.
const CONCURRENT_SCENARIOS: usize = 4;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // test listers (e.g. `cargo test -- --list`): nothing to list individually
    }
    // `cargo test <filter>` passes its filter to every test binary; cucumber's own options still work.
    let cli = cli::Opts::<_, _, _, cli::Empty>::try_parse().unwrap_or_else(|e| {
        eprintln!(
            "conformance: ignoring arguments cucumber does not understand ({})",
            e.kind()
        );
        cli::Opts::default()
    });

    let dir = feature_dir();
    let files: Vec<PathBuf> = FEATURES.iter().map(|f| dir.join(f)).collect();
    for file in &files {
        assert!(
            file.is_file(),
            "{} is missing: the conformance features live in ../shared beside the project",
            file.display()
        );
    }

    use_driver(ManifestDriver::boxed);
    let writer = IngressWorld::cucumber::<&str>()
        .with_parser(FeatureFiles)
        .max_concurrent_scenarios(CONCURRENT_SCENARIOS)
        .after(|_, _, _, _, world| {
            async move {
                if let Some(world) = world
                    && let Err(e) = world.after_scenario()
                {
                    panic!("{e}");
                }
            }
            .boxed_local()
        })
        .fail_on_skipped()
        .with_cli(cli)
        .run(files)
        .await;

    let failed = writer.execution_has_failed() || writer.skipped_steps() > 0;
    if failed || writer.passed_steps() == 0 {
        eprintln!(
            "conformance: {} failed, {} skipped, {} passed steps; {} parsing errors, {} hook errors",
            writer.failed_steps(),
            writer.skipped_steps(),
            writer.passed_steps(),
            writer.parsing_errors(),
            writer.hook_errors()
        );
        std::process::exit(1);
    }
}
