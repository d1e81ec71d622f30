//! The module-cycle check of ARCHITECTURE.md: the modules of a crate import each other
//! without a cycle. It reads the sources: every `crate::name` path outside comments and
//! test code is an arrow from the file's top-level module to `name`, or to the module
//! the crate root re-exports `name` from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use regex::Regex;

/// Checks the crate whose manifest is in `manifest_dir` (pass
/// `env!("CARGO_MANIFEST_DIR")`) and returns its graph, for checks of particular arrows.
///
/// # Panics
///
/// When no arrow was read at all (the check would be empty), or on a cycle, naming its
/// modules in order.
pub fn assert_no_cycles(manifest_dir: &str) -> Graph {
    let g = graph(&Path::new(manifest_dir).join("src"));
    assert!(!g.is_empty(), "no `crate::` path read under {manifest_dir}/src");
    if let Some(c) = cycle(&g) {
        panic!(
            "module cycle {} -> {}: move what both need into a leaf module (as tribes-axum's settings.rs, error.rs, counters.rs)",
            c.join(" -> "),
            c[0]
        );
    }
    g
}

/// Arrows between the top-level modules of a crate: module -> the modules it uses.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level modules declared in lib.rs.
pub fn modules(lib: &str) -> BTreeSet<String> {
    let re = Regex::new(r"(?m)^\s*(?:pub )?mod (\w+);").expect("valid regex");
    re.captures_iter(lib).map(|c| c[1].to_owned()).collect()
}

/// The names lib.rs re-exports from its own modules, and from which.
pub fn reexports(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let re = Regex::new(r"pub use (\w+)::(\{[^}]*\}|\w+);").expect("valid regex");
    let word = Regex::new(r"\w+").expect("valid regex");
    let mut out = BTreeMap::new();
    for c in re.captures_iter(lib) {
        if modules.contains(&c[1]) {
            for name in word.find_iter(&c[2]) {
                out.insert(name.as_str().to_owned(), c[1].to_owned());
            }
        }
    }
    out
}

/// The code of a file: without its `#[cfg(test)]` tail and without comments.
pub fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The arrows between the top-level modules of the crate in `src`.
pub fn graph(src: &Path) -> Graph {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs is readable");
    let mods = modules(&lib);
    let names = reexports(&lib, &mods);
    let path = Regex::new(r"crate::(\{[^}]*\}|\w+)").expect("valid regex");
    let mut out = Graph::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let p = entry.expect("a directory entry").path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let file = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            if !file.ends_with(".rs") || file == "lib.rs" || file.ends_with("tests.rs") {
                continue;
            }
            let rel = p.strip_prefix(src).expect("under src");
            let first = rel.components().next().expect("a path").as_os_str().to_string_lossy();
            let from = first.trim_end_matches(".rs").to_owned();
            let text = std::fs::read_to_string(&p).expect("a readable source");
            for c in path.captures_iter(&code(&text)) {
                let group = &c[1];
                let heads: Vec<&str> = match group.strip_prefix('{') {
                    Some(list) => list
                        .trim_end_matches('}')
                        .split(',')
                        .filter_map(|i| i.trim().split("::").next())
                        .filter(|i| !i.is_empty())
                        .collect(),
                    None => vec![group],
                };
                for head in heads {
                    let to = if mods.contains(head) {
                        Some(head.to_owned())
                    } else {
                        names.get(head).cloned()
                    };
                    if let Some(to) = to.filter(|t| *t != from) {
                        out.entry(from.clone()).or_default().insert(to);
                    }
                }
            }
        }
    }
    out
}

/// A cycle of `g` (its modules in order), if there is one.
pub fn cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(g: &Graph, at: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|m| m == at) {
            return Some(path[i..].to_vec());
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.to_owned());
        for next in g.get(at).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(at.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys().find_map(|m| visit(g, m, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_finds_a_cycle_and_reads_paths() {
        let mut g = Graph::new();
        for (a, b) in [("layer", "service"), ("service", "future"), ("future", "layer")] {
            g.entry(a.to_owned()).or_default().insert(b.to_owned());
        }
        assert_eq!(cycle(&g).map(|c| c.len()), Some(3));
        g.remove("future");
        assert_eq!(cycle(&g), None);
        let lib = "mod a;\npub mod b;\npub use b::{B, C};\n";
        let mods = modules(lib);
        assert_eq!(mods.len(), 2);
        assert_eq!(reexports(lib, &mods).get("C").map(String::as_str), Some("b"));
        assert_eq!(code("use x; // crate::a\n#[cfg(test)]\nuse crate::b;"), "use x; ");
    }
}
