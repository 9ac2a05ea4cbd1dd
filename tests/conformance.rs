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
    pub mod manifest_driver;
    pub mod world;
}

use std::path::PathBuf;
use std::sync::LazyLock;

use clap::Parser as _;
use cucumber::gherkin::{self, Feature};
use cucumber::writer::Stats as _;
use cucumber::{World as _, cli};
use futures_util::FutureExt as _;

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

/// Reads exactly the given feature files (cucumber's own parser takes one file or a whole directory,
/// and the directory also holds the cluster-only features).
struct FeatureFiles;

impl<I: IntoIterator<Item = PathBuf>> cucumber::Parser<I> for FeatureFiles {
    type Cli = cli::Empty;
    type Output = futures_util::stream::Iter<std::vec::IntoIter<cucumber::parser::Result<Feature>>>;

    fn parse(self, files: I, _: cli::Empty) -> Self::Output {
        let features: Vec<_> = files
            .into_iter()
            .map(|file| {
                let feature = Feature::parse_path(file, gherkin::GherkinEnv::default())?;
                Ok(expand_outlines(feature))
            })
            .collect();
        futures_util::stream::iter(features)
    }
}

/// Expands each Scenario Outline into one scenario per Examples row, as cucumber does, except that a
/// `<placeholder>` naming no column stays as written instead of failing the parse. That is what the
/// Gherkin reference and godog (which the upstream suite runs on) do, and what
/// `default_backend.feature` relies on: its steps contain the literal text `<key>` and `<value>`.
fn expand_outlines(mut feature: Feature) -> Feature {
    let expand = |scenarios: Vec<gherkin::Scenario>| -> Vec<gherkin::Scenario> {
        scenarios.into_iter().flat_map(expand_scenario).collect()
    };
    for rule in &mut feature.rules {
        rule.scenarios = expand(std::mem::take(&mut rule.scenarios));
    }
    feature.scenarios = expand(std::mem::take(&mut feature.scenarios));
    feature
}

fn expand_scenario(scenario: gherkin::Scenario) -> Vec<gherkin::Scenario> {
    static PLACEHOLDER: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"<([^<>\s](?:[^<>]*[^<>\s])?)>").expect("valid regex"));
    if scenario.examples.is_empty() {
        return vec![scenario];
    }
    let mut expanded = Vec::new();
    for example in &scenario.examples {
        let Some((header, rows)) = example.table.as_ref().and_then(|t| t.rows.split_first()) else {
            continue;
        };
        for (i, row) in rows.iter().enumerate() {
            let replace = |text: &str| -> String {
                PLACEHOLDER
                    .replace_all(text, |cap: &regex::Captures<'_>| {
                        header
                            .iter()
                            .position(|h| h == &cap[1])
                            .and_then(|col| row.get(col))
                            .cloned()
                            .unwrap_or_else(|| cap[0].to_string())
                    })
                    .into_owned()
            };
            let mut one = scenario.clone();
            // Distinct positions keep the expanded scenarios apart, as in cucumber's expansion.
            one.position = example.position;
            one.position.line += i + 2;
            one.tags.extend(example.tags.iter().cloned());
            one.name = replace(&one.name);
            for step in &mut one.steps {
                step.value = replace(&step.value);
                if let Some(doc) = &mut step.docstring {
                    *doc = replace(doc);
                }
                for cell in step
                    .table
                    .iter_mut()
                    .flat_map(|t| t.rows.iter_mut().flatten())
                {
                    *cell = replace(cell);
                }
            }
            let mut this_row = example.clone();
            if let Some(table) = &mut this_row.table {
                table.rows = vec![header.clone(), row.clone()];
            }
            one.examples = vec![this_row];
            expanded.push(one);
        }
    }
    expanded
}

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

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/features");
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
