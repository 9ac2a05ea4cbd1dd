//! The crate's modules depend on each other one way only (objects → model → serving → observability,
//! with the shared vocabulary at the bottom): no `use` circle between files, nor between top-level
//! modules. Read from the source text, so a new circle fails here with the path that closes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`proxy::forward`) → the file that defines it.
fn module_files(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let rel = rel.to_string_lossy();
            let Some(stem) = rel.strip_suffix(".rs") else {
                continue;
            };
            // The crate roots tie everything together; unit-test files may use anything.
            if matches!(stem, "main" | "lib") || stem.ends_with("tests") {
                continue;
            }
            let module = stem.strip_suffix("/mod").unwrap_or(stem).replace('/', "::");
            found.insert(module, path);
        }
    }
    found
}

/// The source without its `#[cfg(test)] mod tests { … }` block (tests may reach anywhere).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// The longest known module that `path` (segments after `crate::`) names.
fn resolve(modules: &BTreeMap<String, PathBuf>, path: &[&str]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}

/// Paths named by `crate::…` and `super::…`, with `{a, b::c}` groups expanded one level; and, in a
/// `mod.rs`, `use child::…` of its own submodules. `pub use` re-exports are a facade, not a dependency.
fn referenced_paths(module: &str, is_dir_module: bool, text: &str) -> Vec<Vec<String>> {
    let segments: Vec<&str> = module.split("::").collect();
    let parent = &segments[..segments.len() - 1];
    let mut paths = Vec::new();
    for (start, _) in text.match_indices("::") {
        let head_start = text[..start]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let head = &text[head_start..start];
        let base: Vec<String> = match head {
            "crate" => Vec::new(),
            "super" => parent.iter().map(|s| s.to_string()).collect(),
            _ => continue,
        };
        // Only the first `::` after `crate`/`super` starts a path.
        if text[..head_start].ends_with("::") {
            continue;
        }
        let rest = &text[start + 2..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let prefix: Vec<String> = rest[..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if rest[end..].starts_with('{') {
            let group = &rest[end + 1..rest[end..].find('}').map_or(rest.len(), |i| end + i)];
            for item in group.split(',') {
                let item = item.split_whitespace().next().unwrap_or("");
                let mut path = base.clone();
                path.extend(prefix.iter().cloned());
                path.extend(
                    item.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
                paths.push(path);
            }
        } else {
            let mut path = base;
            path.extend(prefix);
            paths.push(path);
        }
    }
    if is_dir_module {
        for line in text.lines().map(str::trim_start) {
            if let Some(rest) = line.strip_prefix("use ")
                && let Some((child, _)) = rest.split_once("::")
                && !matches!(child, "crate" | "super" | "self" | "std")
            {
                let mut path: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
                path.push(child.to_string());
                paths.push(path);
            }
        }
    }
    paths
}

type Graph = BTreeMap<String, BTreeSet<String>>;

fn file_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = module_files(&src);
    let mut graph = Graph::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).expect("source is readable");
        let is_dir_module = file.ends_with("mod.rs");
        let deps = graph.entry(module.clone()).or_default();
        for path in referenced_paths(module, is_dir_module, without_tests(&text)) {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            if let Some(target) = resolve(&modules, &path)
                && &target != module
            {
                deps.insert(target);
            }
        }
    }
    graph
}

/// One dependency circle, as the path that closes it, if the graph has any.
fn find_circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|n| n == node) {
            let mut circle = stack[i..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, stack, done) {
                return Some(circle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_file_depends_on_itself_through_others() {
    let graph = file_graph();
    assert!(graph.contains_key("proxy::forward"), "modules were found");
    if let Some(circle) = find_circle(&graph) {
        panic!("import circle: {}", circle.join(" → "));
    }
}

#[test]
fn top_level_modules_depend_one_way() {
    let mut top = Graph::new();
    for (module, deps) in file_graph() {
        let from = module.split("::").next().unwrap_or_default().to_string();
        let entry = top.entry(from.clone()).or_default();
        entry.extend(
            deps.iter()
                .map(|d| d.split("::").next().unwrap_or_default().to_string())
                .filter(|to| *to != from),
        );
    }
    assert!(top["proxy"].contains("model"), "the proxy reads the model");
    if let Some(circle) = find_circle(&top) {
        panic!("module circle: {}", circle.join(" → "));
    }
}

#[test]
fn the_checker_sees_a_circle() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_circle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.get_mut("c").map(|deps| deps.remove("a"));
    assert_eq!(find_circle(&graph), None);
}
