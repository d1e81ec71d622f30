//! What the server processes of a benchmark spent during the measured run (CPU time,
//! context switches, system calls), and flame graphs of them under load.
//!
//! Context switches are read from `/proc/PID/task/*/status` (every thread's voluntary and
//! involuntary switches: each voluntary one is a thread going to sleep, so a wake-up
//! later). System calls are counted by `perf stat -e raw_syscalls:sys_enter` attached to
//! the processes for the measured window (perf is needed: `setup` installs it, and a run
//! without it fails naming it rather than printing zeros). Flame graphs: `perf record` with
//! DWARF call graphs on one process, folded and drawn by the `inferno` crate.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Context switches and system calls of a set of processes over a window.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Kernel {
    /// Voluntary plus involuntary context switches of every thread.
    pub(crate) switches: u64,
    /// System calls entered.
    pub(crate) syscalls: u64,
}

/// A window being counted: `perf stat` attached, the switches read at its start.
pub(crate) struct Window {
    pids: Vec<u32>,
    switches: u64,
    perf: Child,
    out: PathBuf,
}

/// Starts counting the system calls and context switches of `pids`.
pub(crate) fn start(pids: &[u32]) -> Result<Window, String> {
    let out = std::env::temp_dir().join(format!("tribes-perf-stat-{}-{}.csv", std::process::id(), pids[0]));
    let list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let perf = Command::new("perf")
        .args(["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", &list, "-o"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run perf (Debian: apt-get install linux-perf): {e}"))?;
    // perf opens its counters after it starts; give it that time before the window opens.
    std::thread::sleep(Duration::from_millis(300));
    let switches = pids.iter().map(|p| switches(*p)).sum();
    Ok(Window {
        pids: pids.to_vec(),
        switches,
        perf,
        out,
    })
}

impl Window {
    /// Ends the window: what happened since [`start`].
    pub(crate) fn finish(self) -> Result<Kernel, String> {
        let now: u64 = self.pids.iter().map(|p| switches(*p)).sum();
        interrupt(&self.perf)?;
        let done = self.perf.wait_with_output().map_err(|e| format!("perf stat: {e}"))?;
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out);
        // `-x ,`: `COUNT,UNIT,EVENT,...`; "<not counted>" or "<not supported>" when the
        // event cannot be counted here (no tracepoints: perf must say so, not a zero).
        let syscalls = text
            .lines()
            .find(|l| l.contains("raw_syscalls:sys_enter"))
            .and_then(|l| l.split(',').next())
            .and_then(|n| n.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                format!(
                    "perf stat counted no system calls ({}):\n{text}{}",
                    done.status,
                    String::from_utf8_lossy(&done.stderr)
                )
            })?;
        Ok(Kernel {
            switches: now.saturating_sub(self.switches),
            syscalls,
        })
    }
}

/// SIGINT to a child (perf writes its counts and exits on it).
fn interrupt(child: &Child) -> Result<(), String> {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -INT {} failed: {status}", child.id()))
    }
}

/// `USER_HZ`: the unit of the CPU times in `/proc/PID/stat` (100 on Linux).
pub(crate) const CLOCK_TICKS: f64 = 100.0;

/// User plus system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) start at field 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    at(14) + at(15)
}

/// Voluntary plus involuntary context switches of every live thread of `pid`.
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut sum = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                sum += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    sum
}

/// A `perf record` of one process with DWARF call graphs, running until [`Recording::finish`].
pub(crate) struct Recording {
    perf: Child,
    data: PathBuf,
}

/// Starts sampling `pid` (999 Hz, DWARF unwinding: release builds keep no frame pointers).
pub(crate) fn record(pid: u32, data: &Path) -> Result<Recording, String> {
    let perf = Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "999",
            "--call-graph",
            "dwarf",
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run perf (Debian: apt-get install linux-perf): {e}"))?;
    Ok(Recording {
        perf,
        data: data.to_path_buf(),
    })
}

impl Recording {
    /// Stops sampling and draws the flame graph into `svg`, titled `title`.
    pub(crate) fn finish(self, svg: &Path, title: &str) -> Result<(), String> {
        interrupt(&self.perf)?;
        let mut perf = self.perf;
        let status = perf.wait().map_err(|e| format!("perf record: {e}"))?;
        // perf exits with 130 (or 0) on SIGINT; a missing data file is the real failure.
        if !self.data.exists() {
            return Err(format!("perf record wrote no {} ({status})", self.data.display()));
        }
        let script = Command::new("perf")
            .args(["script", "--no-inline", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run perf script: {e}"))?;
        if script.stdout.is_empty() {
            return Err(format!("perf script printed nothing for {}", self.data.display()));
        }
        let mut folded = Vec::new();
        {
            use inferno::collapse::Collapse as _;
            let mut folder = inferno::collapse::perf::Folder::from(inferno::collapse::perf::Options::default());
            folder
                .collapse(BufReader::new(&script.stdout[..]), &mut folded)
                .map_err(|e| format!("cannot fold perf's stacks: {e}"))?;
        }
        let folded = String::from_utf8_lossy(&folded);
        let mut options = inferno::flamegraph::Options::default();
        options.title = title.to_string();
        let file = std::fs::File::create(svg).map_err(|e| format!("cannot create {}: {e}", svg.display()))?;
        inferno::flamegraph::from_lines(&mut options, folded.lines(), std::io::BufWriter::new(file))
            .map_err(|e| format!("cannot draw {}: {e}", svg.display()))?;
        let _ = std::fs::remove_file(&self.data);
        Ok(())
    }
}

/// Flame graphs of the processes `pids` (named `names`, in order) under wrk's load on
/// `target` with `script`: a 2 s warm-up, then 4 s of samples in the middle of an 8 s run.
/// Writes `flame-3n-async-NAME.svg` into `dir`.
pub(crate) fn flame_run(
    target: std::net::SocketAddr,
    script: &Path,
    pids: &[u32],
    names: &[&str],
    dir: &Path,
) -> Result<(), String> {
    use crate::bench_http::{CONNECTIONS, THREADS, wrk};
    let url = format!("http://{target}/counter");
    let script = script.display().to_string();
    wrk(&["-t", THREADS, "-c", CONNECTIONS, "-d", "2s", "-s", &script, &url])?;
    let load = {
        let (script, url) = (script.clone(), url.clone());
        std::thread::spawn(move || wrk(&["-t", THREADS, "-c", CONNECTIONS, "-d", "8s", "-s", &script, &url]))
    };
    std::thread::sleep(Duration::from_secs(1));
    let mut recordings = Vec::new();
    for (name, pid) in names.iter().zip(pids) {
        let data = std::env::temp_dir().join(format!("tribes-flame-{}-{name}.data", std::process::id()));
        recordings.push((*name, record(*pid, &data)?));
    }
    std::thread::sleep(Duration::from_secs(4));
    for (_, r) in &recordings {
        interrupt(&r.perf)?;
    }
    let out = load.join().map_err(|_| "the wrk thread panicked".to_string())??;
    eprintln!(
        "xtask: flame graph load: {}",
        out.lines().find(|l| l.contains("Requests/sec")).unwrap_or("?")
    );
    for (name, r) in recordings {
        let svg = dir.join(format!("flame-3n-async-{name}.svg"));
        r.finish(
            &svg,
            &format!("tribes-demo node {name}, 3 nodes, Delta, async, under wrk -t{THREADS} -c{CONNECTIONS}"),
        )?;
        eprintln!("xtask: wrote {}", svg.display());
    }
    Ok(())
}
