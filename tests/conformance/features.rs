//! Reading the upstream feature files: exactly the files asked for, with Scenario Outlines expanded the
//! way godog (which the upstream suite runs on) expands them.

use std::path::PathBuf;
use std::sync::LazyLock;

use cucumber::cli;
use cucumber::gherkin::{self, Feature};

/// Where the features live: `../shared/conformance/features/` beside the project.
pub fn feature_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/features")
}

/// Reads exactly the given feature files (cucumber's own parser takes one file or a whole directory,
/// and the directory also holds the cluster-only features).
pub struct FeatureFiles;

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
