//! Benchmark harness pieces the benchmarks share: the raw TCP baseline the transport
//! figures are measured against, and the command line of the peer apps.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

/// Raw TCP, the physical limit on this machine: a client writes `count` messages of
/// `size` bytes, each with a u32 length prefix, the server reads them all and answers
/// one byte at the end. Returns (messages per second, MB per second).
///
/// # Errors
///
/// Any socket error of either end.
pub async fn raw_throughput(size: usize, count: usize) -> std::io::Result<(f64, f64)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let (r, mut w) = s.into_split();
        let mut r = BufReader::with_capacity(256 * 1024, r);
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..count {
            let len = r.read_u32().await? as usize;
            r.read_exact(&mut buf[..len]).await?;
        }
        w.write_all(&[1]).await?;
        Ok::<_, std::io::Error>(())
    });
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (mut r, w) = s.into_split();
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    let payload = vec![7u8; size];
    let start = Instant::now();
    for _ in 0..count {
        w.write_u32(size as u32).await?;
        w.write_all(&payload).await?;
    }
    w.flush().await?;
    let mut done = [0u8; 1];
    r.read_exact(&mut done).await?;
    let secs = start.elapsed().as_secs_f64();
    server.await??;
    Ok((count as f64 / secs, (count * size) as f64 / secs / 1e6))
}

/// The command line of a benchmark's peer app: `FLAG VALUE [--http ADDR]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerArgs {
    /// The value of the app's own flag (`--app`, `--store`), if given.
    pub value: Option<String>,
    /// Where to serve HTTP (default 127.0.0.1:8091).
    pub http: SocketAddr,
    /// `-h` or `--help` was given: the caller prints its usage and exits.
    pub help: bool,
}

impl PeerArgs {
    /// Reads `args` (without the program name): `flag` takes the next argument as
    /// [`PeerArgs::value`], `--http` an address.
    ///
    /// # Errors
    ///
    /// An unknown argument, or `--http` without a valid address; the message ends
    /// with `usage`.
    pub fn parse(flag: &str, usage: &str, args: impl IntoIterator<Item = String>) -> Result<PeerArgs, String> {
        let mut out = PeerArgs {
            value: None,
            http: SocketAddr::from(([127, 0, 0, 1], 8091)),
            help: false,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                a if a == flag => out.value = args.next(),
                "--http" => {
                    out.http = args
                        .next()
                        .and_then(|a| a.parse().ok())
                        .ok_or_else(|| format!("--http takes an address\n{usage}"))?;
                }
                "-h" | "--help" => out.help = true,
                other => return Err(format!("unknown argument {other}\n{usage}")),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_args() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p = PeerArgs::parse("--app", "u", args(&["--app", "bare", "--http", "127.0.0.1:9"])).unwrap();
        assert_eq!(p.value.as_deref(), Some("bare"));
        assert_eq!(p.http.port(), 9);
        assert!(PeerArgs::parse("--app", "u", args(&["--store", "x"])).is_err());
        assert!(PeerArgs::parse("--app", "u", args(&["-h"])).unwrap().help);
    }
}
