//! What the fuzz targets share: an allocator that stops the fuzzer when one input makes
//! the code allocate past the configured limits.
//!
//! "Every length read from the network is checked against a limit before anything is
//! allocated" (ARCHITECTURE.md). Under the fuzzer, each input runs with the checks below
//! armed; breaking one prints what happened and a backtrace and aborts the process,
//! which libFuzzer reports as a crash and saves as an artifact.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

/// The largest single allocation while decoding one input: the frame limit (1 MiB, the
/// largest thing a peer may make a node hold at once) plus 64 KiB of slack for the
/// frame prefix and rounding. Decoders of session messages and cookies are held to it
/// too: their inputs arrive in frames and HTTP headers far smaller than a frame.
pub const MAX_ALLOC: usize = tribes::fuzzing::MAX_FRAME_LEN + 64 * 1024;

/// The most memory one input may hold at a time (beyond what was live before it):
/// 16 frames' worth. An input is at most 64 KiB, so this catches amplification (a few
/// bytes that decode into a huge structure) and memory that grows without bound.
pub const MAX_LIVE: usize = 16 * tribes::fuzzing::MAX_FRAME_LEN;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static BASE: AtomicUsize = AtomicUsize::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);

/// [`System`], with the limits checked while an input runs.
#[derive(Debug)]
pub struct Limited;

#[global_allocator]
static ALLOCATOR: Limited = Limited;

fn check(size: usize, growth: usize) {
    // A panic is reported as a crash anyway; its backtrace may allocate a lot.
    if !ARMED.load(Relaxed) || std::thread::panicking() {
        return;
    }
    if size > MAX_ALLOC {
        fail(format_args!(
            "a single allocation of {size} bytes, over the limit of {MAX_ALLOC} (frame limit + 64 KiB)"
        ));
    }
    let held = (LIVE.load(Relaxed) + growth).saturating_sub(BASE.load(Relaxed));
    if held > MAX_LIVE {
        fail(format_args!(
            "{held} bytes held for one input, over the limit of {MAX_LIVE} (16 frames)"
        ));
    }
}

#[cold]
fn fail(what: std::fmt::Arguments<'_>) -> ! {
    // Disarm first: printing and the backtrace allocate.
    ARMED.store(false, Relaxed);
    eprintln!("\n==tribes-fuzz== allocation limit broken: {what}");
    eprintln!("{}", std::backtrace::Backtrace::force_capture());
    std::process::abort();
}

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged;
// the wrapper only counts sizes.
unsafe impl GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size(), layout.size());
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size(), layout.size());
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size, new_size.saturating_sub(layout.size()));
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Relaxed);
            LIVE.fetch_sub(layout.size(), Relaxed);
        }
        p
    }
}

/// Runs one input through `target` with the allocation limits armed.
pub fn run(data: &[u8], target: impl FnOnce(&[u8])) {
    BASE.store(LIVE.load(Relaxed), Relaxed);
    ARMED.store(true, Relaxed);
    target(data);
    ARMED.store(false, Relaxed);
}

/// Seeds as `(name, bytes)`, written by the real encoders.
pub type Seeds = fn() -> Vec<(String, Vec<u8>)>;

/// At the start of a target: when `TRIBES_FUZZ_WRITE_SEEDS` names a directory, write
/// the target's seeds there as `seed_<name>` (`cargo xtask fuzz --seeds`; files the
/// fuzzer added are left alone).
pub fn write_seeds_if_asked(seeds: Seeds) {
    let Some(dir) = std::env::var_os("TRIBES_FUZZ_WRITE_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    let seeds = seeds();
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("seed_{name}")), bytes).expect("write a seed");
    }
    eprintln!("==tribes-fuzz== wrote {} seeds to {}", seeds.len(), dir.display());
}
