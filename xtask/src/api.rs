//! `cargo xtask api [--bless]`: the public API of each published crate, checked against
//! the baseline committed in `api/<crate>.txt`.
//!
//! The listing is the `public-api` crate's rendering of rustdoc's JSON output: one line
//! per public item (paths, signatures, fields, variants, trait impls), sorted, without
//! blanket and auto-trait impls (they change with dependencies, not with our code).
//! rustdoc's JSON output is unstable, so it is asked of the stable toolchain with
//! `RUSTC_BOOTSTRAP=1`, in a target directory of its own (`target/api`) so that the other
//! builds keep their caches. Any change to the public API shows as added and removed
//! lines; the run fails until the baseline is blessed, which puts the change in review.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::PUBLISHED;

/// The rustdoc JSON format versions the `public-api` version in `Cargo.toml` reads.
const FORMAT_VERSIONS: std::ops::RangeInclusive<u32> = 56..=57;

/// `cargo xtask api [--bless]`.
pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let bless = match args {
        [] => false,
        [flag] if flag == "--bless" => true,
        other => return Err(format!("api takes --bless only, not {}", other.join(" "))),
    };
    let root = workspace_root();
    let mut changed = Vec::new();
    for krate in PUBLISHED {
        let listing = listing(&root, krate)?;
        let baseline = root.join("api").join(format!("{krate}.txt"));
        if bless {
            fs::create_dir_all(baseline.parent().expect("api/"))
                .map_err(|e| format!("cannot create {}: {e}", baseline.display()))?;
            fs::write(&baseline, &listing).map_err(|e| format!("cannot write {}: {e}", baseline.display()))?;
            eprintln!("xtask api: wrote {}", baseline.display());
            continue;
        }
        let committed = fs::read_to_string(&baseline).map_err(|e| {
            format!(
                "cannot read the public API baseline {}: {e} (run `cargo xtask api --bless` and commit it)",
                baseline.display()
            )
        })?;
        let diff = difference(&committed, &listing);
        if diff.is_empty() {
            eprintln!("xtask api: {krate}: the public API matches api/{krate}.txt");
        } else {
            eprintln!("xtask api: {krate}: the public API differs from api/{krate}.txt:\n{diff}");
            changed.push(krate);
        }
    }
    if changed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the public API of {} changed (lines above: - removed, + added). If that is intended, run \
             `cargo xtask api --bless`, commit api/*.txt with the change, and note it in CHANGELOG.md \
             (a removed or changed line is a breaking change: bump the minor version before 1.0)",
            changed.join(", ")
        ))
    }
}

/// The sorted public-API listing of `krate`, one item per line.
fn listing(root: &Path, krate: &str) -> Result<String, String> {
    let target = root.join("target").join("api");
    eprintln!("xtask api: rustdoc JSON of {krate}");
    let status = Command::new("cargo")
        .current_dir(root)
        .args([
            "rustdoc",
            "--quiet",
            "--lib",
            "--all-features",
            "-p",
            krate,
            "--target-dir",
        ])
        .arg(&target)
        .args(["--", "-Z", "unstable-options", "--output-format", "json"])
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("RUSTDOCFLAGS")
        .status()
        .map_err(|e| format!("cannot run cargo rustdoc: {e}"))?;
    if !status.success() {
        return Err(format!("`cargo rustdoc -p {krate}` (JSON output) failed with {status}"));
    }
    let json = target.join("doc").join(format!("{}.json", krate.replace('-', "_")));
    let version = format_version(&json)?;
    if !FORMAT_VERSIONS.contains(&version) {
        return Err(format!(
            "{} has rustdoc JSON format {version}; the public-api crate in xtask/Cargo.toml reads {FORMAT_VERSIONS:?}. \
             This toolchain's rustdoc is newer or older than the one the baseline was made with: update public-api \
             to the version for format {version} (its changelog names the format), then `cargo xtask api --bless`",
            json.display()
        ));
    }
    let api = public_api::Builder::from_rustdoc_json(&json)
        .omit_blanket_impls(true)
        .omit_auto_trait_impls(true)
        .build()
        .map_err(|e| format!("cannot read {}: {e}", json.display()))?;
    Ok(api.items().map(|item| format!("{item}\n")).collect())
}

/// The `format_version` of a rustdoc JSON file, read without parsing the rest.
fn format_version(json: &Path) -> Result<u32, String> {
    let text = fs::read_to_string(json).map_err(|e| format!("cannot read {}: {e}", json.display()))?;
    let at = text
        .rfind("\"format_version\":")
        .ok_or_else(|| format!("{} names no format_version", json.display()))?;
    let digits: String = text[at + "\"format_version\":".len()..]
        .chars()
        .skip_while(|c| c.is_whitespace())
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .map_err(|e| format!("{}: bad format_version: {e}", json.display()))
}

/// The lines only in `old` (as `- line`) and only in `new` (as `+ line`), in order.
fn difference(old: &str, new: &str) -> String {
    let (old, new): (BTreeSet<&str>, BTreeSet<&str>) = (old.lines().collect(), new.lines().collect());
    let removed = old.difference(&new).map(|l| format!("- {l}\n"));
    let added = new.difference(&old).map(|l| format!("+ {l}\n"));
    removed.chain(added).collect()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_difference_names_removed_and_added_lines_and_nothing_else() {
        let old = "pub fn a()\npub fn b()\npub struct C\n";
        let new = "pub fn a()\npub struct C\npub struct D\n";
        assert_eq!(difference(old, new), "- pub fn b()\n+ pub struct D\n");
        assert_eq!(difference(old, old), "");
    }

    #[test]
    fn the_format_version_is_read_from_the_end_of_the_file() {
        let dir = std::env::temp_dir().join(format!("xtask-api-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let json = dir.join("k.json");
        fs::write(&json, r#"{"root":1,"index":{},"format_version": 57}"#).unwrap();
        assert_eq!(format_version(&json).unwrap(), 57);
        fs::write(&json, r#"{"root":1}"#).unwrap();
        assert!(format_version(&json).unwrap_err().contains("names no format_version"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
