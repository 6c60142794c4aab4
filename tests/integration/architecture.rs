//! The layout's promises (docs/DESIGN.md, "Modules"), checked on the
//! source text: the import graph between modules has no cycle, only the
//! command line and watch mode run backups, the repository boundary
//! (`repo`) depends on nothing above it, only `local/` knows the `.trove`
//! layout, and `unsafe` lives in `sys.rs` alone.
//!
//! `cargo test --test integration architecture -- --nocapture` prints the
//! module graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, by module path (`repo::tree`; a
/// folder's `mod.rs` is the folder's module).
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        let mut ents: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("list src")
            .map(|e| e.expect("entry").path())
            .collect();
        ents.sort();
        for p in ents {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            if p.is_dir() {
                let sub = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}::{name}")
                };
                walk(&p, &sub, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let m = match (prefix.is_empty(), name.as_str()) {
                    (true, "lib") => "crate".to_string(),
                    (true, _) => name.clone(),
                    (false, "mod") => prefix.to_string(),
                    (false, _) => format!("{prefix}::{name}"),
                };
                out.insert(m, std::fs::read_to_string(&p).expect("read source"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut out,
    );
    out.remove("main");
    out
}

/// The text of a file without its tests (`#[cfg(test)]` to the end, the
/// layout every module here uses) and without comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("//")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules `m` refers to: every `crate::a::b…` path (and `super::`
/// inside a folder), resolved to the longest module it names; grouped
/// imports (`crate::repo::{tree, RepoRead}`) count each module named.
fn deps(m: &str, text: &str, all: &BTreeSet<String>) -> BTreeSet<String> {
    let text = code(text);
    let parent = match m.rsplit_once("::") {
        Some((p, _)) => p.to_string(),
        None => "crate".to_string(),
    };
    let mut out = BTreeSet::new();
    let mut resolve = |segs: &[&str]| {
        let mut best = None;
        for k in 1..=segs.len() {
            let cand = segs[..k].join("::");
            if all.contains(&cand) {
                best = Some(cand);
            }
        }
        if let Some(b) = best {
            if b != m {
                out.insert(b);
            }
        }
    };
    for (start, anchor) in [("crate::", None), ("super::", Some(parent.as_str()))] {
        let mut rest = text.as_str();
        while let Some(i) = rest.find(start) {
            let before = rest[..i].chars().last();
            rest = &rest[i + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let base: Vec<&str> = match anchor {
                Some(p) if p != "crate" => p.split("::").collect(),
                _ => Vec::new(),
            };
            let mut full: Vec<&str> = base.clone();
            full.append(&mut segs);
            resolve(&full);
            // `crate::repo::{tree, snapshot::Scan}`: each name in the group.
            let after = &rest[path.len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner: String = group.chars().take_while(|c| *c != '}').collect();
                for item in inner.split(',') {
                    let item = item.trim();
                    let mut p = full.clone();
                    p.extend(item.split("::").map(str::trim).filter(|s| !s.is_empty()));
                    resolve(&p);
                }
            }
        }
    }
    out
}

/// The top-level module a module belongs to (`repo::tree` → `repo`).
fn top(m: &str) -> &str {
    m.split("::").next().unwrap_or(m)
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn build() -> Graph {
        let mods = modules();
        let all: BTreeSet<String> = mods.keys().cloned().collect();
        let edges = mods
            .iter()
            .map(|(m, t)| (m.clone(), deps(m, t, &all)))
            .collect();
        Graph { edges }
    }

    /// The graph between top-level modules (submodules folded in).
    fn top_level(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (m, ds) in &self.edges {
            if m == "crate" {
                continue;
            }
            let e = out.entry(top(m).to_string()).or_default();
            for d in ds {
                if top(d) != top(m) && d != "crate" {
                    e.insert(top(d).to_string());
                }
            }
        }
        out
    }
}

/// A cycle in `g`, if there is one (as the list of its modules).
fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(n) {
            Some(2) => return None,
            Some(1) => {
                let i = stack.iter().position(|s| s == n).unwrap_or(0);
                let mut c = stack[i..].to_vec();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = Graph::build();
    let tops = g.top_level();
    for (m, ds) in &tops {
        println!(
            "{m} -> {}",
            ds.iter().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    assert_eq!(find_cycle(&tops), None, "a cycle between top-level modules");
    // Inside each folder, between sibling files (a folder's mod.rs is
    // their parent, which they may use and which may use them).
    let mut folders: BTreeSet<String> = BTreeSet::new();
    for m in g.edges.keys() {
        if let Some((p, _)) = m.rsplit_once("::") {
            folders.insert(p.to_string());
        }
    }
    for f in folders {
        let inner: BTreeMap<String, BTreeSet<String>> = g
            .edges
            .iter()
            .filter(|(m, _)| m.rsplit_once("::").is_some_and(|(p, _)| p == f))
            .map(|(m, ds)| {
                let sib = ds
                    .iter()
                    .filter(|d| d.rsplit_once("::").is_some_and(|(p, _)| p == f))
                    .cloned()
                    .collect();
                (m.clone(), sib)
            })
            .collect();
        assert_eq!(find_cycle(&inner), None, "a cycle inside {f}/");
    }
}

#[test]
fn only_the_command_line_and_watch_run_backups() {
    let tops = Graph::build().top_level();
    let users: Vec<&String> = tops
        .iter()
        .filter(|(m, ds)| ds.contains("backup") && m.as_str() != "backup")
        .map(|(m, _)| m)
        .collect();
    assert_eq!(users, vec!["cli", "watch"]);
}

#[test]
fn the_repository_boundary_depends_on_nothing_above_it() {
    let tops = Graph::build().top_level();
    let below: BTreeSet<&str> = ["codec", "error", "hash", "id", "model", "pathbytes"].into();
    let repo = tops.get("repo").cloned().unwrap_or_default();
    let above: Vec<&String> = repo
        .iter()
        .filter(|d| !below.contains(d.as_str()))
        .collect();
    assert!(above.is_empty(), "repo/ uses {above:?}");
    // The local store implements the boundary; it runs nothing above it.
    let local = tops.get("local").cloned().unwrap_or_default();
    for high in [
        "backup",
        "browsable",
        "cli",
        "gc",
        "verify",
        "restore",
        "inspect",
        "prune",
        "watch",
    ] {
        assert!(!local.contains(high), "local/ uses {high}");
    }
}

#[test]
fn the_remote_reaches_a_local_repository_only_through_the_boundary() {
    let tops = Graph::build().top_level();
    let remote = tops.get("remote").cloned().unwrap_or_default();
    for high in [
        "local",
        "backup",
        "browsable",
        "cli",
        "watch",
        "prune",
        "mirror",
    ] {
        assert!(!remote.contains(high), "remote/ uses {high}");
    }
    // The store layer knows nothing of the format, the format nothing of
    // the store: only the remote repository puts them together.
    let g = Graph::build();
    for layer in ["backend", "crypto", "chunk", "pack", "index", "format"] {
        let m = format!("remote::{layer}");
        let ds = g.edges.get(&m).cloned().unwrap_or_default();
        for d in &ds {
            assert!(
                ![
                    "remote::repo",
                    "remote::push",
                    "remote::pull",
                    "remote::check",
                    "remote::backend"
                ]
                .contains(&d.as_str())
                    || (layer == "backend" && d == "remote::backend"),
                "{m} uses {d}"
            );
        }
        if layer != "backend" {
            assert!(!ds.contains("remote::backend"), "{m} uses the backend");
        }
    }
}

#[test]
fn only_the_remote_repository_touches_the_cache_of_a_remote() {
    // Every read through the cache is checked as a GET's bytes would be,
    // and every eviction follows a listing or the index: both live in
    // `remote::repo`, so nothing else may reach the cache's files.
    let g = Graph::build();
    assert!(g
        .edges
        .get("remote::repo")
        .is_some_and(|ds| ds.contains("remote::cache")));
    for (m, ds) in &g.edges {
        if ds.contains("remote::cache") {
            assert_eq!(m, "remote::repo", "{m} uses remote::cache");
        }
    }
}

#[test]
fn only_local_knows_the_repository_layout() {
    for (m, text) in modules() {
        if top(&m) == "local" {
            continue;
        }
        let text = code(&text);
        // The remote has a layout of its own (`snapshots/`, `data/` …,
        // docs/FORMAT.md), and never names a `.trove` path.
        if top(&m) == "remote" {
            assert!(
                !text.contains("\".trove/") && !text.contains("join(\".trove\")"),
                "{m} names the local layout"
            );
            continue;
        }
        for name in [
            "objects",
            "trees",
            "packs",
            "snapshots",
            "pinned",
            "quarantine",
            "materialized",
        ] {
            for pat in [
                format!("join(\"{name}\")"),
                format!("\"{name}/"),
                format!("\".trove/{name}"),
            ] {
                assert!(!text.contains(&pat), "{m} builds a repository path: {pat}");
            }
        }
        assert!(
            !text.contains("join(\".trove\")"),
            "{m} builds the .trove path"
        );
    }
}

#[test]
fn unsafe_code_lives_in_sys_alone() {
    for (m, text) in modules() {
        let code = code(&text);
        match m.as_str() {
            "sys" => {}
            "crate" => {
                let allows: Vec<&str> = code
                    .lines()
                    .filter(|l| l.contains("allow(unsafe_code)"))
                    .collect();
                assert_eq!(allows.len(), 1, "lib.rs allows unsafe once, for sys");
                assert!(code.contains("#[allow(unsafe_code)]\npub mod sys;"));
            }
            _ => {
                assert!(
                    !code.contains("unsafe {") && !code.contains("unsafe_code"),
                    "{m} uses unsafe"
                );
            }
        }
    }
}
