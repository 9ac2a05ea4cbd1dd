//! The Ingress conformance scenarios in manifest mode: the project's own specification of the
//! Ingress semantics (`tests/conformance/features/`, Gherkin run with the `cucumber` crate) and,
//! when `PORTCULLIS_UPSTREAM_CONFORMANCE` names their directory, the upstream
//! kubernetes-sigs/ingress-controller-conformance features, unchanged.
//!
//! Scenarios tagged `@cluster` (Ingress status, which needs an API server) run only in the cluster
//! suite, which reuses the steps in `conformance/world.rs` and `conformance/steps.rs` with a driver of
//! its own.

mod support;

mod conformance {
    pub mod features;
    pub mod manifest_driver;
    pub mod steps;
    pub mod upstream_steps;
    pub mod world;
}

use conformance::features::{self, Mode};
use conformance::manifest_driver::ManifestDriver;
use conformance::world::use_driver;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return; // test listers (e.g. `cargo test -- --list`): nothing to list individually
    }
    use_driver(ManifestDriver::boxed);
    if let Err(e) = features::run(Mode::Manifest, args).await {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
