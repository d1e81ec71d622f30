//! Real node processes of a test cluster: a child SIGKILLed when dropped, a fresh cluster
//! key file, and the poll of a node's JSON status until it says what the test waits for.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running child process, SIGKILLed (and reaped) when dropped.
#[derive(Debug, Default)]
pub struct Killed(Option<Child>);

impl Killed {
    /// Spawns `cmd`.
    ///
    /// # Panics
    ///
    /// When it does not start, naming `what`.
    pub fn spawn(cmd: &mut Command, what: &str) -> Killed {
        Killed(Some(cmd.spawn().unwrap_or_else(|e| panic!("{what} starts: {e}"))))
    }

    /// Whether the process was started and not killed since.
    pub fn is_running(&self) -> bool {
        self.0.is_some()
    }

    /// `kill -9`: no goodbye, no handover. Does nothing when not running.
    ///
    /// # Panics
    ///
    /// When the signal cannot be sent or the process cannot be reaped.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.0.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A new cluster key (key id 1) written to `path`, which is returned.
pub fn key_file(path: PathBuf) -> PathBuf {
    std::fs::write(&path, tribes::Keyring::generate(1, &mut rand::rng()).to_file_text()).unwrap();
    path
}

/// A fresh directory under the system's temporary one, named `tag`, the process id and
/// a random number.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{tag}-{}-{:016x}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `GET url` (a JSON status, such as a node's `/cluster`) every 100 ms until
/// `cond` holds.
///
/// # Panics
///
/// After `limit`, naming `what` and the last document read.
pub async fn wait_json(url: &str, what: &str, limit: Duration, cond: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + limit;
    let client = reqwest::Client::new();
    let mut last = None;
    loop {
        if let Ok(r) = client.get(url).send().await
            && let Ok(v) = r.json::<Value>().await
        {
            if cond(&v) {
                return;
            }
            last = Some(v);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; last {url}: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
