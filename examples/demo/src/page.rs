//! The demo's HTML page: your session, the node that served you, a counter button.

/// Escape text for HTML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) fn render(route: &str, session: Option<&str>, count: u64, links: &[String]) -> String {
    let route = escape(route);
    let session = session
        .map(escape)
        .unwrap_or_else(|| "none yet (press the button)".into());
    let links: String = links
        .iter()
        .map(|l| format!("<li><a href=\"{0}\">{0}</a></li>", escape(l)))
        .collect();
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tribes demo: node {route}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; line-height: 1.5; }}
.node {{ font-size: 2rem; }}
#count {{ font-size: 3rem; font-weight: bold; }}
button {{ font-size: 1.2rem; padding: .5rem 1.5rem; }}
code {{ background: #eee; padding: 0 .3rem; }}
</style>
</head>
<body>
<h1>tribes demo</h1>
<p class="node">Served by node <strong id="node">{route}</strong></p>
<p>Your session: <code id="session">{session}</code> (its log hash: the id itself stays in the HttpOnly cookie)</p>
<p>Count: <span id="count">{count}</span></p>
<button id="increment" onclick="increment()">Count</button>
<p>Kill this node, then open another one: the count goes on.</p>
<ul id="links">{links}</ul>
<p><a href="/cluster/">Cluster dashboard</a> · <a href="/cluster/status.html">This node</a> · <a href="/metrics">Metrics</a></p>
<script>
async function increment() {{
  const r = await fetch('/counter', {{ credentials: 'same-origin' }});
  const j = await r.json();
  document.getElementById('count').textContent = j.count;
  document.getElementById('node').textContent = j.node;
  document.getElementById('session').textContent = j.session;
}}
</script>
</body>
</html>
"#
    )
}
