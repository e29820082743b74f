//! Quota through `virtiofsd-msb --fuse-mount`: growth past `--quota-mib`
//! fails with ENOSPC and changes nothing, freeing gives budget back, statfs
//! (`df`) shows the quota, a share already over its quota is served but
//! cannot grow, and two daemons given the same `--quota-file` draw from one
//! budget.
//!
//! Writes here are small (one FUSE WRITE each): the guarantee is per
//! request; a kernel may split a large write(2) into several requests, of
//! which those that fit succeed (a short write).

mod common;
mod policy_util;

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use policy_util::{errno, Setup};

const MIB: u64 = 1 << 20;

fn append(p: &Path, data: &[u8]) -> std::io::Result<()> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(p)?
        .write_all(data)
}

fn size(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

/// `statvfs` of `p`: (size, available) in bytes.
fn statvfs(p: &Path) -> (u64, u64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: plain data, overwritten by the call.
    let mut st: libc::statvfs64 = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and writable struct.
    assert_eq!(unsafe { libc::statvfs64(c.as_ptr(), &mut st) }, 0);
    (st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)
}

/// `df -B1 --output=size,avail DIR` as two numbers.
fn df(p: &Path) -> (u64, u64) {
    let out = policy_util::sh(&format!("df -B1 --output=size,avail {}", p.display()));
    let nums: Vec<u64> = out
        .lines()
        .nth(1)
        .expect("df data line")
        .split_whitespace()
        .map(|n| n.parse().expect("number"))
        .collect();
    (nums[0], nums[1])
}

/// Fills `f` (through the mount) to `bytes` in 4 KiB appends.
fn fill(f: &Path, bytes: u64) {
    let chunk = vec![7u8; 4096];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(4096) as usize;
        append(f, &chunk[..n]).unwrap();
        left -= n as u64;
    }
    assert_eq!(size(f), bytes);
}

#[test]
fn a_write_straddling_the_limit_fails_whole() {
    let Some(s) = Setup::new("a_write_straddling_the_limit_fails_whole") else {
        return;
    };
    // --cache never: every write(2) is one FUSE WRITE, as the daemon sees it.
    let _m = s.mount(&["--quota-mib", "1", "--cache", "never"]);
    let f = s.mnt.join("f");
    fill(&f, MIB - 100);
    let e = append(&f, &[1u8; 200]).unwrap_err();
    assert_eq!(errno(&e), libc::ENOSPC, "{e}");
    assert_eq!(size(&f), MIB - 100, "no partial growth");
    assert_eq!(size(&s.share.join("f")), MIB - 100);
    // Exactly up to the limit works; one byte more does not, anywhere.
    append(&f, &[2u8; 100]).unwrap();
    assert_eq!(size(&f), MIB);
    assert_eq!(errno(&append(&f, b"x").unwrap_err()), libc::ENOSPC);
    assert_eq!(
        errno(&fs::write(s.mnt.join("g"), b"x").unwrap_err()),
        libc::ENOSPC
    );
    // Overwriting in place needs no budget.
    let file = OpenOptions::new().write(true).open(&f).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"rewritten", 0).unwrap();
    // Deleting gives the budget back, once the file is closed (while it is
    // open, its bytes still take host space and stay counted).
    drop(file);
    fs::remove_file(&f).unwrap();
    fs::write(s.mnt.join("g"), vec![3u8; 4096]).unwrap();
}

#[test]
fn cached_writes_never_pass_the_limit() {
    let Some(s) = Setup::new("cached_writes_never_pass_the_limit") else {
        return;
    };
    // With the page cache the kernel may split a write(2) at page
    // boundaries: what fits goes in (a short write), nothing goes past.
    let _m = s.mount(&["--quota-mib", "1"]);
    let f = s.mnt.join("f");
    fill(&f, MIB - 100);
    let e = append(&f, &[1u8; 8192]).unwrap_err();
    assert_eq!(errno(&e), libc::ENOSPC, "{e}");
    assert!(size(&f) <= MIB, "grew to {} past the limit", size(&f));
    assert!(size(&s.share.join("f")) <= MIB);
    assert_eq!(
        errno(&append(&s.mnt.join("g"), &[0u8; 4096]).unwrap_err()),
        libc::ENOSPC
    );
}

#[test]
fn truncate_fallocate_copy_and_symlinks_respect_the_quota() {
    let Some(s) = Setup::new("truncate_fallocate_copy_and_symlinks") else {
        return;
    };
    let _m = s.mount(&["--quota-mib", "1"]);
    let f = s.mnt.join("f");
    fs::write(&f, vec![1u8; 512 * 1024]).unwrap();
    let file = OpenOptions::new().read(true).write(true).open(&f).unwrap();
    // Truncate up past the budget: ENOSPC, size unchanged.
    let e = file.set_len(2 * MIB).unwrap_err();
    assert_eq!(errno(&e), libc::ENOSPC, "{e}");
    assert_eq!(size(&f), 512 * 1024);
    // fallocate past the budget.
    // SAFETY: valid fd.
    let rc = unsafe { libc::fallocate64(file.as_raw_fd(), 0, 0, 2 * MIB as i64) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOSPC)
    );
    assert_eq!(size(&f), 512 * 1024);
    // copy_file_range doubling the file would pass it.
    let dst = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(s.mnt.join("copy"))
        .unwrap();
    let (mut off_in, mut off_out) = (0i64, 0i64);
    // SAFETY: valid fds and offsets.
    let n = unsafe {
        libc::copy_file_range(
            file.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            512 * 1024,
            0,
        )
    };
    let copy_err = std::io::Error::last_os_error();
    assert_eq!(n, 512 * 1024, "the first copy fits ({copy_err})");
    let (mut off_in, mut off_out) = (0i64, 512 * 1024i64);
    // SAFETY: as above.
    let n = unsafe {
        libc::copy_file_range(
            file.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            512 * 1024,
            0,
        )
    };
    let copy_err2 = std::io::Error::last_os_error();
    assert_eq!(n, -1, "the second copy passes the budget");
    assert_eq!(copy_err2.raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(size(&s.mnt.join("copy")), 512 * 1024);
    // The budget is full: a symlink (its target length counts) is refused.
    let e = std::os::unix::fs::symlink("some/target", s.mnt.join("l")).unwrap_err();
    assert_eq!(errno(&e), libc::ENOSPC);
    // Truncating down frees.
    file.set_len(1000).unwrap();
    std::os::unix::fs::symlink("some/target", s.mnt.join("l")).unwrap();
    file.set_len(400 * 1024).unwrap();
    assert_eq!(size(&s.share.join("f")), 400 * 1024);
}

#[test]
fn statfs_and_df_show_the_quota() {
    let Some(s) = Setup::new("statfs_and_df_show_the_quota") else {
        return;
    };
    fs::write(s.share.join("pre"), vec![0u8; 100 * 1024]).unwrap();
    let _m = s.mount(&["--quota-mib", "8"]);
    assert_eq!(statvfs(&s.mnt), (8 * MIB, 8 * MIB - 100 * 1024));
    fs::write(s.mnt.join("more"), vec![0u8; 1024 * 1024]).unwrap();
    assert_eq!(df(&s.mnt), (8 * MIB, 8 * MIB - 100 * 1024 - MIB));
    fs::remove_file(s.mnt.join("pre")).unwrap();
    assert_eq!(df(&s.mnt), (8 * MIB, 7 * MIB));
}

#[test]
fn a_share_over_its_quota_is_served_but_cannot_grow() {
    let Some(s) = Setup::new("a_share_over_its_quota_is_served") else {
        return;
    };
    fs::write(s.share.join("big"), vec![5u8; 2 * MIB as usize]).unwrap();
    let _m = s.mount(&["--quota-mib", "1"]);
    assert_eq!(fs::read(s.mnt.join("big")).unwrap().len(), 2 * MIB as usize);
    assert_eq!(statvfs(&s.mnt).1, 0, "nothing available");
    assert_eq!(
        errno(&append(&s.mnt.join("big"), b"x").unwrap_err()),
        libc::ENOSPC
    );
    let e = fs::File::create(s.mnt.join("new")).unwrap_err();
    assert_eq!(errno(&e), libc::ENOSPC, "no new entries while over");
    // Shrinking works, and once under the limit growth works again.
    OpenOptions::new()
        .write(true)
        .open(s.mnt.join("big"))
        .unwrap()
        .set_len(MIB / 2)
        .unwrap();
    fs::write(s.mnt.join("new"), vec![1u8; 4096]).unwrap();
}

#[test]
fn two_daemons_on_one_directory_share_one_budget() {
    let Some(s) = Setup::new("two_daemons_on_one_directory_share_one_budget") else {
        return;
    };
    let mnt2 = s.scratch.mkdir("mnt2");
    let qfile = s.scratch.path().join("volume.quota");
    let q = qfile.to_str().unwrap();
    let args = ["--quota-mib", "1", "--quota-file", q];
    let a = s.mount_at(&s.share, &s.mnt, "a", &args);
    let b = s.mount_at(&s.share, &mnt2, "b", &args);
    let (fa, fb) = (s.mnt.join("from_a"), mnt2.join("from_b"));
    let chunk = vec![9u8; 4096];
    for _ in 0..150 {
        append(&fa, &chunk).unwrap(); // 600 KiB through A
    }
    // B sees A's usage in statfs and cannot take more than is left.
    assert_eq!(statvfs(&mnt2), (MIB, MIB - 600 * 1024));
    let mut through_b = 0;
    let err = loop {
        match append(&fb, &chunk) {
            Ok(()) => through_b += 4096,
            Err(e) => break e,
        }
        assert!(through_b <= MIB, "B wrote past the shared budget");
    };
    assert_eq!(errno(&err), libc::ENOSPC);
    assert_eq!(through_b, 424 * 1024, "B got exactly what A left");
    assert_eq!(errno(&append(&fa, b"x").unwrap_err()), libc::ENOSPC);
    // Freeing through B gives A room.
    fs::remove_file(&fb).unwrap();
    append(&fa, &chunk).unwrap();
    assert_eq!(statvfs(&s.mnt).1, MIB - 604 * 1024);
    drop(b);
    drop(a);
    // A daemon started alone later rescans: same total.
    let _c = s.mount_at(&s.share, &s.mnt, "c", &args);
    assert_eq!(statvfs(&s.mnt), (MIB, MIB - 604 * 1024));
}

#[test]
fn the_quota_file_must_live_outside_the_share() {
    let Some(s) = Setup::new("the_quota_file_must_live_outside_the_share") else {
        return;
    };
    let inside = s.share.join("q");
    let args = ["--quota-mib", "1", "--quota-file", inside.to_str().unwrap()];
    let (status, log) = policy_util::expect_refusal(&s.daemon, &s.share, &s.mnt, &args);
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("inside the shared directory"), "{log}");
    assert!(!inside.exists());
}
