//! Every log line of a test process, kept for the test to read (what must, or must
//! never, be logged).

use std::io::Write;
use std::sync::{Arc, Mutex};

/// The log lines of this process, written by the subscriber [`capture_logs`] installs.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything logged so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends every log line of this process that `filter` (an `EnvFilter` directive such as
/// `tribes=debug,info`) lets through to a buffer, without colours: a global subscriber,
/// so the tasks on every runtime thread log into it.
///
/// # Panics
///
/// When the test binary has installed another global subscriber.
pub fn capture_logs(filter: &str) -> LogBuffer {
    let buf = LogBuffer::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("no other subscriber in this test binary");
    buf
}
