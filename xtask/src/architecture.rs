//! ARCHITECTURE.md names every module: each source file of the three crates appears in
//! its crate's section (by its path under `src/`, or by its file name; a `mod.rs` by its
//! folder), so a new module cannot land without its line in the code map. Test files
//! (`tests.rs`, `*_tests.rs`) are exempt.

use std::path::Path;

/// The files of `src` (relative paths, `/`-separated) that `section` does not name.
fn unnamed(src: &Path, section: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let named = if name == "mod.rs" {
                let folder = rel.trim_end_matches("mod.rs");
                section.contains(&format!("`{folder}")) || section.contains(&format!("`{rel}`"))
            } else {
                section.contains(&format!("`{rel}`")) || section.contains(&format!("`{name}`"))
            };
            if !named {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// The text of ARCHITECTURE.md under the heading that names `crates/<krate>`, up to the
/// next heading of the same level.
fn section<'a>(architecture: &'a str, krate: &str) -> &'a str {
    let heading = format!("### `crates/{krate}`");
    let start = architecture
        .find(&heading)
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no section {heading}"));
    let rest = &architecture[start + heading.len()..];
    let end = rest.find("\n## ").into_iter().chain(rest.find("\n### ")).min();
    &rest[..end.unwrap_or(rest.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_md_names_every_module_of_the_three_crates() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
        let mut missing = Vec::new();
        for krate in crate::PUBLISHED {
            for file in unnamed(&root.join("crates").join(krate).join("src"), section(&text, krate)) {
                missing.push(format!("crates/{krate}/src/{file}"));
            }
        }
        assert!(
            missing.is_empty(),
            "ARCHITECTURE.md's code map does not name these modules (add a line each, with its job \
             and the invariants it keeps, in its crate's section): {missing:#?}"
        );
    }

    #[test]
    fn a_module_is_named_by_path_file_name_or_folder() {
        let dir = std::env::temp_dir().join(format!("xtask-arch-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("farm")).unwrap();
        for f in [
            "lib.rs",
            "a.rs",
            "b.rs",
            "farm/mod.rs",
            "farm/tests.rs",
            "farm/state.rs",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let section = "- `lib.rs`: root. - `a.rs`: a. - `farm/`: the farm, `state.rs` decides.";
        assert_eq!(unnamed(&dir, section), ["b.rs"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
