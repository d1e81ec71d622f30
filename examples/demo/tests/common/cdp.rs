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

/// Returns the page's accessibility problems: missing language, title, single h1,
/// labels of charts, tables, sections, form controls and buttons, header scopes, and
/// text below WCAG AA contrast (4.5:1, against the nearest opaque background).
const A11Y: &str = r#"(() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push('html has no lang');
  if (!document.title.trim()) problems.push('no title');
  if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one h1');
  document.querySelectorAll('svg').forEach((s, i) => {
    if (s.getAttribute('role') !== 'img' || !(s.getAttribute('aria-label') || '').trim()) problems.push(`svg ${i} has no role=img and label`);
  });
  document.querySelectorAll('th').forEach(th => { if (!th.getAttribute('scope')) problems.push('th without scope: ' + th.textContent.slice(0, 30)); });
  document.querySelectorAll('table').forEach(t => { const by = t.getAttribute('aria-labelledby'); if (!t.querySelector('caption') && !t.getAttribute('aria-label') && !(by && document.getElementById(by))) problems.push('table without caption'); });
  document.querySelectorAll('input:not([type=hidden]),select,textarea').forEach(c => { if (!c.labels || !c.labels.length) problems.push('control without a label: ' + (c.name || c.id)); });
  document.querySelectorAll('button').forEach(b => { if (!b.textContent.trim()) problems.push('button without text'); });
  document.querySelectorAll('section').forEach(s => {
    const id = s.getAttribute('aria-labelledby');
    if (!id || !document.getElementById(id)) problems.push('section without a heading label');
  });
  const parse = c => { const m = c.match(/rgba?\(([^)]+)\)/); if (!m) return null; const p = m[1].split(',').map(Number); return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 }; };
  const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const bg = el => { for (let e = el; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor); if (c && c.a > 0) return c; } return { r: 255, g: 255, b: 255, a: 1 }; };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  let checked = 0;
  while (walker.nextNode()) {
    const n = walker.currentNode, el = n.parentElement;
    if (!n.textContent.trim() || !el || seen.has(el) || el.closest('[hidden],script,style,title')) continue;
    seen.add(el);
    checked++;
    const fg = parse(getComputedStyle(el).color), b = bg(el);
    const l1 = lum(fg), l2 = lum(b), ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    if (ratio < 4.5) problems.push(`contrast ${ratio.toFixed(2)} below 4.5 for "${n.textContent.trim().slice(0, 40)}"`);
  }
  if (checked < MIN_TEXTS) problems.push(`only ${checked} text elements checked`);
  return problems;
})()"#;

/// [`A11Y`] for a page with at least `min_texts` text elements (fewer: a problem too,
/// so an empty page does not pass).
pub fn a11y_script(min_texts: usize) -> String {
    A11Y.replace("MIN_TEXTS", &min_texts.to_string())
}

impl Browser {
    /// Press and release one key (`Tab`, `Enter`) in the page.
    pub async fn press(&mut self, key: &str, vk: u32) {
        // Enter types a carriage return (a keyDown with text), which activates buttons.
        let text = if key == "Enter" { "\r" } else { "" };
        for kind in ["keyDown", "keyUp"] {
            let mut event = json!({ "type": kind, "key": key, "code": key, "windowsVirtualKeyCode": vk });
            if kind == "keyDown" && !text.is_empty() {
                event["text"] = json!(text);
            }
            self.call("Input.dispatchKeyEvent", event).await;
        }
    }
}
