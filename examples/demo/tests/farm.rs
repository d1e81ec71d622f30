//! The replicated directory (`--farm-dir`) across real processes: a file dropped on
//! one node appears on the others byte for byte, a node started later receives it,
//! and a later update on another node wins everywhere.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn farm_dirs(n: usize) -> Vec<PathBuf> {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("farm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    (0..n).map(|i| base.join(format!("node-{i}"))).collect()
}

/// Bytes that differ from run to run and span several 256 KiB chunks.
fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2] ^ seed)
        .collect()
}

async fn wait_file(dir: &Path, name: &str, want: &[u8], limit: Duration) {
    let path = dir.join(name);
    let start = Instant::now();
    loop {
        if std::fs::read(&path).is_ok_and(|got| got == want) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {} to hold the expected {} bytes (has {:?} bytes)",
            path.display(),
            want.len(),
            std::fs::metadata(&path).map(|m| m.len()).ok()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn no_temp_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            !name.starts_with('.'),
            "leftover temporary file {name} in {}",
            dir.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_farm_file_reaches_every_node_and_the_last_update_wins() {
    let dirs = farm_dirs(4);
    let mut nodes = cluster(4, &Options::default());
    for (node, dir) in nodes.iter_mut().zip(&dirs) {
        node.push_args(["--farm-dir".to_string(), dir.display().to_string()]);
    }
    for n in nodes.iter_mut().take(3) {
        n.start();
    }
    for n in nodes.iter().take(3) {
        wait_ready(n, 2).await;
    }

    // Dropped on A (written in place: the farm waits until it is stable).
    let v1 = content(1, 600 * 1024 + 17);
    std::fs::write(dirs[0].join("app.war"), &v1).unwrap();
    for dir in &dirs[1..3] {
        wait_file(dir, "app.war", &v1, Duration::from_secs(20)).await;
    }

    // D starts later and receives the current set.
    nodes[3].start();
    wait_ready(&nodes[3], 3).await;
    wait_file(&dirs[3], "app.war", &v1, Duration::from_secs(20)).await;

    // An update on B wins everywhere, A included.
    let v2 = content(2, 300 * 1024 + 5);
    std::fs::write(dirs[1].join("app.war"), &v2).unwrap();
    for (i, dir) in dirs.iter().enumerate() {
        if i != 1 {
            wait_file(dir, "app.war", &v2, Duration::from_secs(20)).await;
        }
    }
    // And stays: no node republishes an older version.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for dir in &dirs {
        assert_eq!(std::fs::read(dir.join("app.war")).unwrap(), v2, "{}", dir.display());
        no_temp_files(dir);
    }
    for n in nodes.iter_mut() {
        n.terminate();
    }
    let _ = std::fs::remove_dir_all(dirs[0].parent().unwrap());
}
