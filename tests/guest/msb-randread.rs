//! `msb-randread FILE COUNT`: a tiny static guest helper for
//! scripts/bench-guest-io. Reads COUNT blocks of 4 KiB at random 4 KiB
//! aligned offsets of FILE with O_DIRECT (so every read reaches the
//! virtio-fs daemon, none is served by the guest's page cache) and prints
//! `seconds=S reads=N` on one line. Exit 1 on any error (printed), 2 on
//! usage errors. Built with plain `rustc` (std only, crt-static) by
//! bench-guest-io.

use std::alloc::{alloc, dealloc, Layout};
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::time::Instant;

/// `O_DIRECT` on x86_64 Linux.
const O_DIRECT: i32 = 0o40000;
const BLOCK: usize = 4096;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(count)) = (args.get(1), args.get(2).and_then(|c| c.parse::<u64>().ok()))
    else {
        eprintln!("usage: msb-randread FILE COUNT");
        return ExitCode::from(2);
    };
    match run(path, count) {
        Ok(secs) => {
            println!("seconds={secs:.6} reads={count}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("msb-randread: {path}: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(path: &str, count: u64) -> std::io::Result<f64> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(O_DIRECT)
        .open(path)?;
    let blocks = file.metadata()?.len() / BLOCK as u64;
    if blocks == 0 {
        return Err(std::io::Error::other("file shorter than one block"));
    }
    let layout = Layout::from_size_align(BLOCK, BLOCK).map_err(std::io::Error::other)?;
    // SAFETY: the layout has a non-zero size; the pointer is checked.
    let ptr = unsafe { alloc(layout) };
    if ptr.is_null() {
        return Err(std::io::Error::other("out of memory"));
    }
    // SAFETY: `ptr` points at BLOCK bytes we own until the dealloc below;
    // O_DIRECT needs the buffer aligned, which the layout guarantees.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, BLOCK) };
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let start = Instant::now();
    let mut result = Ok(());
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let offset = (state % blocks) * BLOCK as u64;
        match file.read_at(buf, offset) {
            Ok(BLOCK) => {}
            Ok(n) => {
                result = Err(std::io::Error::other(format!("short read {n} at {offset}")));
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // SAFETY: allocated above with the same layout, not used after this.
    unsafe { dealloc(ptr, layout) };
    result.map(|()| secs)
}
