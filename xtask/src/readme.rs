//! The repository README's first Rust example is the `tribes-axum` README's first doc
//! test, line for line once rustdoc's hidden lines (`# ...`) are left out: the doc test
//! compiles it (`cargo test --doc -p tribes-axum`), this check keeps the two the same.

/// The first ```` ```rust ```` block of a Markdown text, without its fences and without
/// rustdoc's hidden lines.
fn first_rust_example(markdown: &str) -> Vec<&str> {
    let mut lines = markdown.lines().skip_while(|l| !l.starts_with("```rust"));
    lines.next();
    lines
        .take_while(|l| !l.starts_with("```"))
        .filter(|l| *l != "#" && !l.starts_with("# "))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::first_rust_example;

    fn read(path: &str) -> String {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
    }

    #[test]
    fn the_readme_first_example_is_the_tribes_axum_doc_test() {
        let root = read("README.md");
        let crate_readme = read("crates/tribes-axum/README.md");
        let (shown, compiled) = (first_rust_example(&root), first_rust_example(&crate_readme));
        assert!(shown.len() > 5, "README.md has no Rust example");
        assert_eq!(
            shown, compiled,
            "README.md's first example differs from crates/tribes-axum/README.md's first doc test \
             (hidden `# ` lines aside): change both, so the one users read is the one that compiles"
        );
    }

    #[test]
    fn hidden_lines_and_fences_are_left_out() {
        let md = "text\n```rust,no_run\nuse a;\n# fn hidden() {\nlet x = 1;\n#\n# }\n```\n```rust\nnot this\n```\n";
        assert_eq!(first_rust_example(md), ["use a;", "let x = 1;"]);
    }
}
