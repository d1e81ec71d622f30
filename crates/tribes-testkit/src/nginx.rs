//! nginx with the shipped config (`deploy/nginx/tribes-demo.conf`), its listen address
//! and upstreams moved to the test's, as the load balancer a user would have.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The installed nginx, if any.
pub fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// The shipped config with its listen address moved to `lb` and its upstreams
/// (127.0.0.1:8081, 8082, …) to `upstreams`.
///
/// # Panics
///
/// When the shipped config does not name the demo's ports.
pub fn config(lb: SocketAddr, upstreams: &[SocketAddr]) -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/nginx/tribes-demo.conf"
    ))
    .unwrap();
    let mut conf = shipped.replace("127.0.0.1:8080", &lb.to_string());
    for (i, up) in upstreams.iter().enumerate() {
        conf = conf.replace(&format!("127.0.0.1:808{}", i + 1), &up.to_string());
    }
    assert_ne!(conf, shipped, "the shipped config should name the demo's ports");
    conf
}

/// A running nginx, stopped and its directory removed when dropped.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    prefix: PathBuf,
}

impl Nginx {
    /// Runs nginx with `conf` in the directory `prefix`, and waits (5 s at most) until
    /// it accepts connections on `lb`.
    ///
    /// # Panics
    ///
    /// When nginx is not installed, does not start, or does not listen in time.
    pub fn start(conf: &str, lb: SocketAddr, prefix: PathBuf) -> Nginx {
        let binary = nginx_binary().expect("nginx is installed");
        std::fs::create_dir_all(prefix.join("tmp")).unwrap();
        std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
        let child = Command::new(binary)
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(prefix.join("nginx.conf"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let nginx = Nginx { child, prefix };
        let start = Instant::now();
        while std::net::TcpStream::connect(lb).is_err() {
            assert!(start.elapsed() < Duration::from_secs(5), "nginx did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}
