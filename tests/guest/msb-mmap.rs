//! `msb-mmap FILE OFFSET TEXT`: a tiny static guest helper (busybox maps no
//! file it writes). Maps FILE shared and writable, writes TEXT at OFFSET
//! through the mapping, `msync`s it and unmaps, then reads the bytes back
//! with `pread` through a new descriptor. Prints `mmap=ok` (exit 0) or
//! `mmap=FAIL <why>` (exit 1). Built with plain `rustc` (std only,
//! crt-static) by the tests that bind it into a guest.

use std::ffi::{c_int, c_void};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;

const PROT_READ: c_int = 1;
const PROT_WRITE: c_int = 2;
const MAP_SHARED: c_int = 1;
const MS_SYNC: c_int = 4;

unsafe extern "C" {
    fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: i64,
    ) -> *mut c_void;
    fn msync(addr: *mut c_void, len: usize, flags: c_int) -> c_int;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
}

fn run(path: &str, offset: usize, text: &[u8]) -> Result<(), String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("open {path}: {e}"))?;
    let len = file.metadata().map_err(|e| format!("stat: {e}"))?.len() as usize;
    if offset + text.len() > len {
        return Err(format!("{path} has {len} bytes, too few for the text"));
    }
    // SAFETY: a fresh shared mapping of `len` bytes of an open file; the
    // kernel picks the address.
    let addr = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            PROT_READ | PROT_WRITE,
            MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr as isize == -1 {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `offset + text.len() <= len`, inside the writable mapping.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), addr.cast::<u8>().add(offset), text.len())
    };
    // SAFETY: the mapping made above, with its length.
    let synced = unsafe { msync(addr, len, MS_SYNC) };
    let sync_err = std::io::Error::last_os_error();
    // SAFETY: the mapping made above, unmapped once.
    unsafe { munmap(addr, len) };
    if synced != 0 {
        return Err(format!("msync: {sync_err}"));
    }
    drop(file);
    let again = OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(|e| format!("reopen: {e}"))?;
    let mut back = vec![0u8; text.len()];
    again
        .read_exact_at(&mut back, offset as u64)
        .map_err(|e| format!("pread: {e}"))?;
    if back != text {
        return Err(format!("read back {:?}", String::from_utf8_lossy(&back)));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(Ok(offset)), Some(text)) = (
        args.get(1),
        args.get(2).map(|o| o.parse::<usize>()),
        args.get(3),
    ) else {
        eprintln!("usage: msb-mmap FILE OFFSET TEXT");
        return ExitCode::from(2);
    };
    match run(path, offset, text.as_bytes()) {
        Ok(()) => {
            println!("mmap=ok");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("mmap=FAIL {why}");
            ExitCode::from(1)
        }
    }
}
