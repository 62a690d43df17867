//! Module cycles inside a crate: `cargo xtask modcycles`, and a test that keeps them out.
//!
//! A crate's top-level modules (a `src/NAME.rs` file together with its `src/NAME/` folder) should
//! depend on each other in one direction, so that each can be read, tested and moved on its own.
//! This reads every crate's sources as text, takes an edge A → B wherever code in module A names
//! `crate::B` (in a `use` or a path; comments are skipped), and reports every strongly connected
//! group of two or more modules. Textual, so it needs no compiler plumbing, and it errs on the
//! side of reporting: a path written only in a doc example would count, which is why comment
//! lines are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Top-level modules of one crate, with the modules each one names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The cycles that were there when this check was written (issue 17 removes them): a ratchet.
/// The test fails on any cycle that is not inside one of these groups, and on a group here that
/// is gone or has shrunk, so that this list only ever gets shorter and always says what is left.
const KNOWN: &[(&str, &[&str])] = &[("rv64", &["csr", "hart", "mmu"])];

/// Compares `found` with [`KNOWN`]: the new cycles (not inside a known group), and the known
/// groups that are no longer found exactly as listed.
fn against_known(found: &[(String, Vec<String>)]) -> (Vec<String>, Vec<String>) {
    let new = found
        .iter()
        .filter(|(k, g)| {
            !KNOWN
                .iter()
                .any(|(kk, kg)| kk == k && g.iter().all(|m| kg.contains(&m.as_str())))
        })
        .map(|(k, g)| format!("{k}: {}", g.join(" <-> ")))
        .collect();
    let stale = KNOWN
        .iter()
        .filter(|(kk, kg)| !found.iter().any(|(k, g)| k == kk && g == kg))
        .map(|(k, g)| format!("{k}: {}", g.join(" <-> ")))
        .collect();
    (new, stale)
}

/// Runs `cargo xtask modcycles`: prints each crate's cycles, fails on one that is not known.
pub fn main() -> Result<()> {
    let cycles = workspace_cycles(&crate::guest::repo_root())?;
    if cycles.is_empty() {
        println!("modcycles: no module cycles in any crate");
        return Ok(());
    }
    for (krate, group) in &cycles {
        println!("modcycles: {krate}: {}", group.join(" <-> "));
    }
    let (new, _) = against_known(&cycles);
    if !new.is_empty() {
        bail!(
            "new module cycle(s), not in modcycles::KNOWN: {}",
            new.join("; ")
        );
    }
    println!(
        "modcycles: {} cycle(s), all known (issue 17 removes them)",
        cycles.len()
    );
    Ok(())
}

/// Every cycle in every crate of the workspace (`crates/*/src` and `xtask/src`), as the crate's
/// name and the modules of one strongly connected group, sorted.
pub fn workspace_cycles(repo: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let mut srcs: Vec<PathBuf> = fs::read_dir(repo.join("crates"))
        .context("reading crates/")?
        .filter_map(|e| e.ok().map(|e| e.path().join("src")))
        .filter(|p| p.is_dir())
        .collect();
    srcs.push(repo.join("xtask/src"));
    srcs.sort();
    let mut out = Vec::new();
    for src in srcs {
        let krate = src
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for group in cycles(&graph_of(&src)?) {
            out.push((krate.clone(), group));
        }
    }
    Ok(out)
}

/// The module graph of the crate whose sources are in `src`.
fn graph_of(src: &Path) -> Result<Graph> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let p = e?.path();
        let Some(stem) = p.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        if matches!(stem.as_str(), "lib" | "main") && p.is_file() {
            continue;
        }
        if p.is_dir() {
            let mut inner = Vec::new();
            rs_files(&p, &mut inner)?;
            files.entry(stem).or_default().extend(inner);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.entry(stem).or_default().push(p);
        }
    }
    let mut g = Graph::new();
    for (module, paths) in &files {
        let mut named = BTreeSet::new();
        for p in paths {
            let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            named.extend(crate_paths(&text));
        }
        named.retain(|n| n != module && files.contains_key(n));
        g.insert(module.clone(), named);
    }
    Ok(g)
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            rs_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// The first segments after `crate::` in `text`, comments left out. A grouped
/// `use crate::{a, b::{c, d}}`, on one line or several, names `a` and `b`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        // Not the tail of another identifier (`foo_crate::x`).
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(group) = rest.strip_prefix('{') else {
            out.extend(ident(rest));
            continue;
        };
        // The group's top-level items: split at commas outside inner braces.
        let (mut depth, mut item_start) = (0usize, 0usize);
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.extend(ident(group[item_start..j].trim()));
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(ident(group[item_start..j].trim()));
                    item_start = j + 1;
                }
                _ => {}
            }
        }
    }
    out
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> Option<String> {
    let n: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!n.is_empty()).then_some(n)
}

/// Strongly connected groups of two or more modules (Tarjan's algorithm), each sorted.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    group.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.out.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    }

    #[test]
    fn cycles_are_found_and_chains_are_not() {
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("e", "d")]);
        assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
        assert!(cycles(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    }

    #[test]
    fn crate_paths_read_uses_groups_and_skip_comments() {
        let t = "use crate::a::X;\nuse crate::{b, c::{Y, z}};\n// crate::d\nlet x = my_crate::e;\n\
                 f(crate::g::h());\nuse crate::{\n    i::J,\n    k,\n};";
        let got: Vec<_> = crate_paths(t).into_iter().collect();
        assert_eq!(got, ["a", "b", "c", "g", "i", "k"]);
    }

    #[test]
    fn no_new_module_cycle_and_the_known_list_is_exact() {
        let found = workspace_cycles(&crate::guest::repo_root()).unwrap();
        let (new, stale) = against_known(&found);
        assert!(
            new.is_empty(),
            "new module cycles (see `cargo xtask modcycles`): {new:?}"
        );
        assert!(
            stale.is_empty(),
            "these known cycles are gone or smaller: take them out of modcycles::KNOWN (or \
             list what is left of them): {stale:?}"
        );
    }

    #[test]
    fn the_ratchet_flags_new_and_stale_cycles() {
        let f = |k: &str, g: &[&str]| (k.to_string(), g.iter().map(|s| s.to_string()).collect());
        // One known group found as listed (whichever is first), and one that is not known.
        let (kk, kg) = KNOWN[0];
        let (new, stale) = against_known(&[f(kk, kg), f("ft", &["a", "b"])]);
        assert_eq!(new, ["ft: a <-> b"]);
        assert_eq!(stale.len(), KNOWN.len() - 1);
    }
}
