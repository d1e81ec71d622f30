//! A headless Chromium driven over the DevTools protocol (no WebDriver, no TLS):
//! navigate, run script in the page, take screenshots.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub fn chromium_binary() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

pub struct Browser {
    child: Child,
    profile: PathBuf,
    socket: Socket,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    /// Start headless Chromium with a fresh profile and the flags that keep it offline.
    pub async fn launch() -> Browser {
        let port = super::free_addrs(1)[0].port();
        let profile = std::env::temp_dir().join(format!("tribes-chromium-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(chromium_binary().expect("chromium"))
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--window-size=900,700",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--remote-debugging-port={port}"))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let start = Instant::now();
        let ws_url = loop {
            let list = reqwest::get(format!("http://127.0.0.1:{port}/json/list")).await;
            if let Ok(r) = list
                && let Ok(targets) = r.json::<Vec<Value>>().await
                && let Some(t) = targets.iter().find(|t| t["type"] == "page")
            {
                break t["webSocketDebuggerUrl"].as_str().unwrap().to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromium did not open its DevTools port"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(ws_url)
            .await
            .expect("DevTools websocket");
        Browser {
            child,
            profile,
            socket,
            next_id: 0,
        }
    }

    /// Send one DevTools command and return its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.socket.send(Message::Text(msg.to_string().into())).await.unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.socket.next())
                .await
                .expect("DevTools answer in time")
                .expect("DevTools socket open")
                .unwrap();
            if let Message::Text(text) = frame {
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method} failed: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    /// Evaluate JavaScript in the page and return its value.
    pub async fn eval(&mut self, script: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": script, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Open a URL and wait until the document has loaded.
    pub async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let href = self.eval("location.href").await;
            if href.as_str() == Some(url) && self.eval("document.readyState").await == "complete" {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{url} did not load: at {href}"
            );
        }
    }

    /// Text of the element with this id.
    pub async fn text(&mut self, id: &str) -> String {
        self.eval(&format!(
            "document.getElementById('{id}') ? document.getElementById('{id}').textContent : null"
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Poll until the element's text is `want`.
    pub async fn wait_text(&mut self, id: &str, want: &str) {
        let start = Instant::now();
        loop {
            let got = self.text(id).await;
            if got == want {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "#{id} shows {got:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A PNG screenshot of the page, written under the target directory.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" })).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}
