//! Which feature files run, how they are read, and the run itself, shared by the manifest-mode and
//! cluster-mode runners.
//!
//! The project's own scenarios (`tests/conformance/features/`) always run. The upstream
//! ingress-controller-conformance features run as an extra, external check when
//! `PORTCULLIS_UPSTREAM_CONFORMANCE` names a directory holding them; they are read unchanged, with
//! Scenario Outlines expanded the way godog (which the upstream suite runs on) expands them.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use clap::Parser as _;
use cucumber::gherkin::{self, Feature};
use cucumber::writer::Stats as _;
use cucumber::{World as _, cli};
use futures_util::FutureExt as _;

use super::world::IngressWorld;

/// Names the directory of the upstream `.feature` files; unset, only the project's own run.
pub const UPSTREAM_ENV: &str = "PORTCULLIS_UPSTREAM_CONFORMANCE";

/// Scenarios (or whole features) with this tag need an API server (they check Ingress status).
const CLUSTER_TAG: &str = "cluster";

/// Upstream features that check nothing but Ingress status, so need an API server.
const UPSTREAM_CLUSTER_ONLY: [&str; 1] = ["ingress_class.feature"];

/// Every scenario starts a controller of its own; a few at a time keep a 2-core machine responsive.
const CONCURRENT_SCENARIOS: usize = 4;

/// Where the objects come from; decides which scenarios can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Each test binary runs one mode.
#[allow(dead_code)]
pub enum Mode {
    /// `--manifests DIR`: no API server, so no Ingress status.
    Manifest,
    /// A real API server: everything runs.
    Cluster,
}

/// The project's own scenarios.
pub fn own_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/features")
}

/// The `.feature` files directly in `dir`, sorted.
fn feature_files_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().is_some_and(|x| x == "feature") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("{} holds no .feature files", dir.display()));
    }
    Ok(files)
}

/// The files `mode` runs: the project's own, then the upstream ones if given (a line says which).
fn files_to_run(mode: Mode) -> Result<Vec<PathBuf>, String> {
    let mut files = feature_files_in(&own_dir())?;
    match std::env::var_os(UPSTREAM_ENV).filter(|v| !v.is_empty()) {
        None => eprintln!(
            "conformance: upstream suite not given ({UPSTREAM_ENV} unset); running the project's own scenarios only"
        ),
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let (run, left): (Vec<_>, Vec<_>) = feature_files_in(&dir)
                .map_err(|e| format!("{UPSTREAM_ENV}: {e}"))?
                .into_iter()
                .partition(|f| {
                    mode == Mode::Cluster
                        || !f
                            .file_name()
                            .is_some_and(|n| UPSTREAM_CLUSTER_ONLY.iter().any(|c| n == *c))
                });
            let left: Vec<_> = left
                .iter()
                .filter_map(|f| f.file_name())
                .map(|n| n.to_string_lossy())
                .collect();
            eprintln!(
                "conformance: also running {} upstream feature files from {}{}",
                run.len(),
                dir.display(),
                if left.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} needs a cluster: the cluster suite runs it)",
                        left.join(", ")
                    )
                }
            );
            files.extend(run);
        }
    }
    Ok(files)
}

/// Runs every scenario `mode` can run, with the driver already chosen ([`super::world::use_driver`]).
/// Fails on any failed, skipped or unparsable step, and when nothing ran: a scenario that silently did
/// nothing must not pass. `args` are cucumber's command line (after the program name); arguments it
/// does not understand (say, `cargo test`'s filter) are reported and ignored.
pub async fn run(mode: Mode, args: Vec<String>) -> Result<(), String> {
    let files = files_to_run(mode)?;
    let argv = std::iter::once("conformance".to_string()).chain(args);
    let cli = cli::Opts::<_, _, _, cli::Empty>::try_parse_from(argv).unwrap_or_else(|e| {
        eprintln!(
            "conformance: ignoring arguments cucumber does not understand ({})",
            e.kind()
        );
        cli::Opts::default()
    });
    let writer = IngressWorld::cucumber::<&str>()
        .with_parser(FeatureFiles { mode })
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
    if writer.execution_has_failed() || writer.skipped_steps() > 0 || writer.passed_steps() == 0 {
        return Err(format!(
            "conformance: {} failed, {} skipped, {} passed steps; {} parsing errors, {} hook errors",
            writer.failed_steps(),
            writer.skipped_steps(),
            writer.passed_steps(),
            writer.parsing_errors(),
            writer.hook_errors()
        ));
    }
    Ok(())
}

/// Reads exactly the given feature files (cucumber's own parser takes one file or a whole directory),
/// leaving out in manifest mode what is tagged `@cluster`.
struct FeatureFiles {
    mode: Mode,
}

impl<I: IntoIterator<Item = PathBuf>> cucumber::Parser<I> for FeatureFiles {
    type Cli = cli::Empty;
    type Output = futures_util::stream::Iter<std::vec::IntoIter<cucumber::parser::Result<Feature>>>;

    fn parse(self, files: I, _: cli::Empty) -> Self::Output {
        let features: Vec<_> = files
            .into_iter()
            .map(|file| {
                let feature = Feature::parse_path(file, gherkin::GherkinEnv::default())?;
                Ok(self.runnable(expand_outlines(feature)))
            })
            .collect();
        futures_util::stream::iter(features)
    }
}

impl FeatureFiles {
    /// The feature without the scenarios this mode cannot run.
    fn runnable(&self, mut feature: Feature) -> Feature {
        if self.mode == Mode::Cluster {
            return feature;
        }
        let cluster_only = |tags: &[String]| tags.iter().any(|t| t == CLUSTER_TAG);
        if cluster_only(&feature.tags) {
            feature.scenarios.clear();
            feature.rules.clear();
        }
        feature.scenarios.retain(|s| !cluster_only(&s.tags));
        for rule in &mut feature.rules {
            rule.scenarios.retain(|s| !cluster_only(&s.tags));
        }
        feature
    }
}

/// Expands each Scenario Outline into one scenario per Examples row, as cucumber does, except that a
/// `<placeholder>` naming no column stays as written instead of failing the parse. That is what the
/// Gherkin reference and godog do, and what upstream's `default_backend.feature` relies on: its steps
/// contain the literal text `<key>` and `<value>`.
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
