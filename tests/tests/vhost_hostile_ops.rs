//! Hostile requests on handles, sessions, offsets and names, through the
//! real daemon and real virtqueues: handles used with the wrong inode or
//! after release, forgets of the root and past lookup counts, a second
//! FUSE_INIT and DESTROY (the old session's fds must go), offsets near
//! `u64::MAX`, lseek/fallocate/copy_file_range/readdir/ioctl edge values,
//! RENAME2 flags that would make host device nodes or loops, links of
//! directories and unlinked files, creates through host symlinks that lead
//! out, guest device nodes, and xattr names and sizes the host must never
//! see. Each case runs on a fresh daemon with the sandbox on and off (see
//! `hostile_util`).

mod hostile_util;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::{IoctlIn, Opcode};
use hostile_util::{
    all, copy_range, errno, fallocate, getxattr, link, lseek, mknod, rename2, run_suite, setxattr,
    truncate, Case,
};
use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::{FsDriver, FuseClient, FIRST_REQUEST_QUEUE, ROOT_ID};
use vm_memory::ByteValued;

const DATA: &[u8] = b"file data";

fn two_files(root: &Path) -> std::io::Result<()> {
    std::fs::write(root.join("share/a"), DATA)?;
    std::fs::write(root.join("share/b"), b"bbbb")
}

fn host(d: &Daemon, name: &str) -> Vec<u8> {
    std::fs::read(d.shared_dir().join(name)).unwrap()
}

// ---- handles ------------------------------------------------------------

fn handle_of_another_inode(d: &Daemon, fs: &FsDriver) {
    let a = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let b = fs.lookup(ROOT_ID, b"b").unwrap().nodeid;
    let fh = fs.open(a, libc::O_RDWR).unwrap().fh;
    assert_eq!(errno(fs.read(b, fh, 0, 64)), libc::EBADF, "READ");
    assert_eq!(errno(fs.write(b, fh, 0, b"XXXX")), libc::EBADF, "WRITE");
    assert_eq!(errno(fallocate(fs, b, fh, 0, 0, 4096)), libc::EBADF);
    assert_eq!(
        errno(lseek(fs, b, fh, 0, libc::SEEK_DATA as u32)),
        libc::EBADF
    );
    assert_eq!(errno(truncate(fs, b, fh, 0)), libc::EBADF, "SETATTR size");
    assert_eq!(errno(fs.release(b, fh)), libc::EBADF, "RELEASE");
    let dh = fs.opendir(ROOT_ID).unwrap();
    assert_ne!(
        errno(fs.read(a, dh, 0, 64)),
        0,
        "READ with a directory handle"
    );
    assert_ne!(
        errno(fs.readdir(ROOT_ID, fh, 0, 4096)),
        0,
        "READDIR with a file's"
    );
    assert_eq!(
        (host(d, "a"), host(d, "b")),
        (DATA.to_vec(), b"bbbb".to_vec())
    );
    assert_eq!(
        fs.read(a, fh, 0, 64).unwrap(),
        DATA,
        "the right pairing works"
    );
}

fn double_release_and_use_after_release(_d: &Daemon, fs: &FsDriver) {
    let a = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let fh = fs.open(a, libc::O_RDONLY).unwrap().fh;
    fs.release(a, fh).unwrap();
    assert_eq!(errno(fs.release(a, fh)), libc::EBADF, "second RELEASE");
    assert_eq!(
        errno(fs.read(a, fh, 0, 4)),
        libc::EBADF,
        "READ after RELEASE"
    );
    let dh = fs.opendir(ROOT_ID).unwrap();
    fs.releasedir(ROOT_ID, dh).unwrap();
    assert_ne!(errno(fs.releasedir(ROOT_ID, dh)), 0, "second RELEASEDIR");
    assert_ne!(errno(fs.readdir(ROOT_ID, dh, 0, 4096)), 0);
    // Handle numbers are never handed out twice.
    let again = fs.open(a, libc::O_RDONLY).unwrap().fh;
    assert!(again != fh && again != dh, "handle {again} reused");
}

fn forget_of_the_root_and_past_the_count(d: &Daemon, fs: &FsDriver) {
    let fds = d.open_fds().unwrap();
    fs.forget(ROOT_ID, u64::MAX).unwrap();
    fs.batch_forget(&[(ROOT_ID, u64::MAX), (ROOT_ID, 1)])
        .unwrap();
    fs.getattr(ROOT_ID).expect("the root after FORGET");
    let a = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    fs.forget(a, 1000).unwrap();
    fs.forget(a, 1).unwrap();
    fs.forget(0xdead_beef, 5).unwrap();
    // Forgets travel on the hiprio queue: the old id goes soon.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while fs.getattr(a).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "a forgotten id serves"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let again = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let fh = fs.open(again, libc::O_RDONLY).unwrap().fh;
    assert_eq!(fs.read(again, fh, 0, 64).unwrap(), DATA);
    assert!(d.open_fds().unwrap() <= fds + 2, "fds leaked by forgets");
}

fn second_init_ends_the_old_session(d: &Daemon, fs: &FsDriver) {
    let fds = d.open_fds().unwrap();
    let a = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let handles: Vec<u64> = (0..20)
        .map(|_| fs.open(a, libc::O_RDONLY).unwrap().fh)
        .collect();
    assert!(d.open_fds().unwrap() >= fds + 20);
    fs.init().expect("a second FUSE_INIT");
    assert!(
        d.open_fds().unwrap() <= fds + 1,
        "the old session's fds stay open"
    );
    assert_eq!(errno(fs.read(a, handles[0], 0, 4)), libc::EBADF);
    assert_ne!(errno(fs.getattr(a)), 0, "a node id of the old session");
    let again = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let fh = fs.open(again, libc::O_RDONLY).unwrap().fh;
    assert!(!handles.contains(&fh), "an old handle number came back");
    assert_eq!(fs.read(again, fh, 0, 64).unwrap(), DATA);
}

fn destroy_then_requests(d: &Daemon, fs: &FsDriver) {
    let fds = d.open_fds().unwrap();
    let a = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let fh = fs.open(a, libc::O_RDWR).unwrap().fh;
    fs.call(Opcode::Destroy, ROOT_ID, &[], 0).expect("DESTROY");
    assert!(d.open_fds().unwrap() <= fds + 1, "DESTROY left fds open");
    assert_eq!(errno(fs.write(a, fh, 0, b"late")), libc::EBADF, "WRITE");
    assert_eq!(host(d, "a"), DATA);
    fs.init().expect("FUSE_INIT after DESTROY");
    let again = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let fh = fs.open(again, libc::O_RDONLY).unwrap().fh;
    assert_eq!(fs.read(again, fh, 0, 64).unwrap(), DATA);
}

fn interrupt_of_nothing(_d: &Daemon, fs: &FsDriver) {
    let drv = fs;
    let q = FIRST_REQUEST_QUEUE;
    for body in [
        0xdead_beef_u64.to_le_bytes().to_vec(),
        0u64.to_le_bytes().to_vec(),
        vec![1, 2, 3],
    ] {
        drv.send_no_reply(q, Opcode::Interrupt as u32, 0, &body)
            .expect("INTERRUPT: the chain back, no reply");
        fs.getattr(ROOT_ID).unwrap();
    }
}

// ---- offsets -------------------------------------------------------------

fn offsets_near_u64_max(d: &Daemon, fs: &FsDriver) {
    let a = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let fh = fs.open(a, libc::O_RDWR).unwrap().fh;
    for off in [u64::MAX - 3, u64::MAX, 1 << 63, (i64::MAX as u64) - 1] {
        assert_ne!(errno(fs.write(a, fh, off, b"abcd")), 0, "WRITE at {off:#x}");
        match fs.read(a, fh, off, 64) {
            Ok(v) => assert!(v.is_empty(), "READ at {off:#x}: {v:?}"),
            Err(e) => assert!(e.errno().is_some(), "READ at {off:#x}: {e}"),
        }
    }
    let meta = std::fs::metadata(d.shared_dir().join("a")).unwrap();
    assert_eq!(meta.len(), DATA.len() as u64, "the host file grew");
    assert!(meta.blocks() <= 8, "{} blocks", meta.blocks());
}

fn fallocate_overflow_and_unknown_modes(d: &Daemon, fs: &FsDriver) {
    let a = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let fh = fs.open(a, libc::O_RDWR).unwrap().fh;
    for (mode, off, len) in [
        (0, u64::MAX - 10, 100),
        (0, 0, u64::MAX),
        (0, 1 << 63, 1),
        (0xffff_0000, 0, 10),
        (0x7f, 0, 10),
        (libc::FALLOC_FL_PUNCH_HOLE as u32, 0, 4), // punch without KEEP_SIZE
    ] {
        let r = errno(fallocate(fs, a, fh, mode, off, len));
        assert!(r > 0, "FALLOCATE mode {mode:#x} at {off:#x}+{len:#x}: {r}");
    }
    assert_eq!(host(d, "a"), DATA);
}

fn lseek_unknown_whence_and_past_the_end(_d: &Daemon, fs: &FsDriver) {
    let a = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let fh = fs.open(a, libc::O_RDONLY).unwrap().fh;
    for whence in [5, 42, u32::MAX] {
        assert_eq!(errno(lseek(fs, a, fh, 0, whence)), libc::EINVAL, "{whence}");
    }
    let data = libc::SEEK_DATA as u32;
    let hole = libc::SEEK_HOLE as u32;
    assert_eq!(errno(lseek(fs, a, fh, 1000, data)), libc::ENXIO);
    let r = errno(lseek(fs, a, fh, u64::MAX, data));
    assert!(
        r == libc::EINVAL || r == libc::ENXIO,
        "SEEK_DATA at -1: {r}"
    );
    assert_eq!(lseek(fs, a, fh, 0, hole).unwrap(), DATA.len() as u64);
    assert_eq!(lseek(fs, a, fh, 0, data).unwrap(), 0);
    // Positional reads do not care where the handle was moved to.
    assert_eq!(fs.read(a, fh, 0, 64).unwrap(), DATA);
}

fn copy_file_range_overlapping_and_mismatched(d: &Daemon, fs: &FsDriver) {
    let a = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let b = fs.lookup(ROOT_ID, b"b").unwrap().nodeid;
    let fa = fs.open(a, libc::O_RDWR).unwrap().fh;
    let fa2 = fs.open(a, libc::O_RDWR).unwrap().fh;
    let fb = fs.open(b, libc::O_RDWR).unwrap().fh;
    // Overlapping ranges of one file, through one handle and two.
    assert_eq!(
        errno(copy_range(fs, (a, fa, 0), (a, fa, 2), 8)),
        libc::EINVAL
    );
    assert_eq!(
        errno(copy_range(fs, (a, fa, 2), (a, fa2, 0), 8)),
        libc::EINVAL
    );
    // A handle of another inode on either side.
    assert_eq!(
        errno(copy_range(fs, (a, fb, 0), (b, fb, 0), 4)),
        libc::EBADF
    );
    assert_eq!(
        errno(copy_range(fs, (a, fa, 0), (b, fa, 0), 4)),
        libc::EBADF
    );
    assert_eq!(host(d, "a"), DATA);
    assert_eq!(host(d, "b"), b"bbbb");
    // Past the end of the source: nothing to copy.
    assert_eq!(copy_range(fs, (a, fa, 1 << 40), (b, fb, 0), 4).unwrap(), 0);
    // Non-overlapping within one file works.
    assert_eq!(copy_range(fs, (a, fa, 0), (a, fa2, 100), 4).unwrap(), 4);
    assert_eq!(&host(d, "a")[100..], b"file");
}

fn readdir_at_huge_offsets(_d: &Daemon, fs: &FsDriver) {
    let dh = fs.opendir(ROOT_ID).unwrap();
    for off in [u64::MAX, 1 << 63, i64::MAX as u64, 0xdead_beef] {
        match fs.readdir(ROOT_ID, dh, off, 4096) {
            Ok(v) => assert!(v.len() <= 4, "{off:#x}: {} entries", v.len()),
            Err(e) => assert!(e.errno().is_some(), "{off:#x}: {e}"),
        }
        let _ = fs.readdirplus(ROOT_ID, dh, off, 4096);
    }
    let names: Vec<Vec<u8>> = fs
        .readdir(ROOT_ID, dh, 0, 4096)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    for want in [&b"."[..], b"..", b"a", b"b"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want:?} missing: {names:?}"
        );
    }
}

fn ioctl_is_refused_without_allocating(d: &Daemon, fs: &FsDriver) {
    let a = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let fh = fs.open(a, libc::O_RDWR).unwrap().fh;
    let status = |d: &Daemon| {
        let s = std::fs::read_to_string(format!("/proc/{}/status", d.server_pid().unwrap()));
        s.unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .unwrap()
    };
    let before = status(d);
    for (cmd, in_size, out_size, extra) in [
        (0x4004_6601_u32, 0, u32::MAX, 0), // FS_IOC_GETFLAGS, 4 GiB out
        (0x4004_6602, u32::MAX, 0, 16),    // FS_IOC_SETFLAGS, lying in_size
        (0x5401, 8, 8, 8),                 // TCGETS
        (0xc020_660b, 32, 32, 32),         // FS_IOC_FIEMAP
    ] {
        let arg = IoctlIn {
            fh,
            flags: 0,
            cmd,
            arg: 0,
            in_size,
            out_size,
        };
        let mut body = arg.as_slice().to_vec();
        body.extend(std::iter::repeat_n(0xffu8, extra));
        let r = errno(fs.call(Opcode::Ioctl, a, &body, 4096));
        assert!(r > 0, "IOCTL {cmd:#x} answered {r}");
    }
    assert_eq!(host(d, "a"), DATA);
    let grew = status(d).saturating_sub(before);
    assert!(grew < 16 * 1024, "IOCTLs grew the server by {grew} KiB");
}

// ---- names ---------------------------------------------------------------

/// Host entries of the share (name, is a device/FIFO/socket node).
fn host_nodes(d: &Daemon) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d.shared_dir()).unwrap().flatten() {
        let t = std::fs::symlink_metadata(e.path()).unwrap().file_type();
        let special = t.is_char_device() || t.is_block_device() || t.is_fifo() || t.is_socket();
        out.push((e.file_name().to_string_lossy().into_owned(), special));
    }
    out
}

fn no_host_special_files(d: &Daemon) {
    let nodes = host_nodes(d);
    assert!(
        nodes.iter().all(|(_, s)| !s),
        "host special files: {nodes:?}"
    );
}

fn rename2_whiteout_and_unknown_flags(d: &Daemon, fs: &FsDriver) {
    const RENAME_WHITEOUT: u32 = 1 << 2;
    // Bits no flag uses (`1 << 3`) are refused before fuse-backend-rs
    // could drop them and make the request a plain rename.
    for flags in [
        RENAME_WHITEOUT,
        RENAME_WHITEOUT | 1,
        1 << 3,
        1 << 31,
        u32::MAX,
    ] {
        let r = errno(rename2(fs, (ROOT_ID, b"a"), (ROOT_ID, b"c"), flags));
        assert_eq!(r, libc::EINVAL, "flags {flags:#x}");
    }
    let both = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
    assert_eq!(
        errno(rename2(fs, (ROOT_ID, b"a"), (ROOT_ID, b"b"), both)),
        libc::EINVAL
    );
    no_host_special_files(d);
    assert_eq!(
        (host(d, "a"), host(d, "b")),
        (DATA.to_vec(), b"bbbb".to_vec())
    );
    assert!(!d.shared_dir().join("c").exists());
}

fn rename_exchange_with_a_directory_and_into_itself(d: &Daemon, fs: &FsDriver) {
    let dir = fs.mkdir(ROOT_ID, b"d", 0o755).unwrap().nodeid;
    let child = fs.mkdir(dir, b"c", 0o755).unwrap().nodeid;
    let x = libc::RENAME_EXCHANGE;
    // A directory exchanged with its own child, or moved under itself.
    assert_eq!(
        errno(rename2(fs, (ROOT_ID, b"d"), (dir, b"c"), x)),
        libc::EINVAL
    );
    assert_eq!(
        errno(rename2(fs, (dir, b"c"), (ROOT_ID, b"d"), x)),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.rename(ROOT_ID, b"d", child, b"loop")),
        libc::EINVAL
    );
    assert_eq!(errno(fs.rename(ROOT_ID, b"d", dir, b"self")), libc::EINVAL);
    // Exchange with a name that does not exist moves nothing.
    assert_eq!(
        errno(rename2(fs, (ROOT_ID, b"a"), (dir, b"none"), x)),
        libc::ENOENT
    );
    // A directory over a file, a file over a directory: refused.
    assert_eq!(
        errno(fs.rename(ROOT_ID, b"d", ROOT_ID, b"a")),
        libc::ENOTDIR
    );
    assert_eq!(errno(fs.rename(ROOT_ID, b"a", ROOT_ID, b"d")), libc::EISDIR);
    assert!(d.shared_dir().join("d/c").is_dir());
    assert_eq!(host(d, "a"), DATA);
    // A legitimate exchange of a file and a directory works.
    rename2(fs, (ROOT_ID, b"a"), (ROOT_ID, b"d"), x).unwrap();
    assert!(d.shared_dir().join("a/c").is_dir());
    assert_eq!(host(d, "d"), DATA);
}

fn link_of_a_directory_the_root_or_an_unlinked_file(d: &Daemon, fs: &FsDriver) {
    let dir = fs.mkdir(ROOT_ID, b"d", 0o755).unwrap().nodeid;
    assert_eq!(errno(link(fs, dir, ROOT_ID, b"d2")), libc::EPERM);
    assert_ne!(errno(link(fs, ROOT_ID, dir, b"root")), 0);
    let (gone, fh) = fs.create(ROOT_ID, b"gone", 0o644, libc::O_RDWR).unwrap();
    fs.write(gone.nodeid, fh.fh, 0, b"secret").unwrap();
    fs.unlink(ROOT_ID, b"gone").unwrap();
    assert_eq!(errno(link(fs, gone.nodeid, ROOT_ID, b"back")), libc::ENOENT);
    let names: Vec<String> = host_nodes(d).into_iter().map(|(n, _)| n).collect();
    for bad in ["d2", "back"] {
        assert!(
            !names.iter().any(|n| n == bad),
            "{bad} on the host: {names:?}"
        );
    }
    assert!(std::fs::read_dir(d.shared_dir().join("d"))
        .unwrap()
        .next()
        .is_none());
}

/// `out` and `dangling`: host symlinks leading out of the share, to an
/// existing file and to a name that does not exist.
fn outward_links(root: &Path) -> std::io::Result<()> {
    std::fs::write(root.join("victim"), b"host file")?;
    std::os::unix::fs::symlink("../victim", root.join("share/out"))?;
    std::os::unix::fs::symlink("../made", root.join("share/dangling"))
}

fn create_through_host_symlinks_leading_out(d: &Daemon, fs: &FsDriver) {
    for flags in [
        libc::O_RDWR | libc::O_TRUNC,
        libc::O_WRONLY,
        libc::O_RDWR | libc::O_NOFOLLOW,
        libc::O_RDWR | libc::O_EXCL,
    ] {
        for name in [&b"out"[..], b"dangling"] {
            let r = errno(fs.create(ROOT_ID, name, 0o644, flags));
            assert_ne!(r, 0, "CREATE {name:?} {flags:#o} through a symlink");
        }
    }
    for name in [&b"out"[..], b"dangling"] {
        let e = fs.lookup(ROOT_ID, name).unwrap();
        assert_eq!(
            errno(fs.open(e.nodeid, libc::O_RDWR | libc::O_TRUNC)),
            libc::ELOOP
        );
        assert_ne!(errno(fs.mkdir(ROOT_ID, name, 0o755)), 0);
        assert_ne!(errno(mknod(fs, ROOT_ID, name, libc::S_IFREG | 0o644, 0)), 0);
    }
    let root = d.root();
    assert_eq!(std::fs::read(root.join("victim")).unwrap(), b"host file");
    assert!(!root.join("made").exists(), "a file made outside the share");
}

fn create_with_directory_path_and_nofollow_flags(d: &Daemon, fs: &FsDriver) {
    const O_TMPFILE_BIT: i32 = 0o20000000;
    for (name, flags) in [
        ("dir", libc::O_DIRECTORY | libc::O_RDWR),
        ("path", libc::O_PATH | libc::O_RDWR),
        ("tmp", O_TMPFILE_BIT | libc::O_DIRECTORY | libc::O_RDWR),
        ("nofollow", libc::O_NOFOLLOW | libc::O_RDWR),
    ] {
        if let Ok((e, o)) = fs.create(ROOT_ID, name.as_bytes(), 0o644, flags) {
            // Whatever was made is a plain, visible, writable file.
            fs.write(e.nodeid, o.fh, 0, b"ok").unwrap();
            let m = std::fs::symlink_metadata(d.shared_dir().join(name)).unwrap();
            assert!(m.is_file(), "{name}: {:?}", m.file_type());
            assert_eq!(host(d, name), b"ok");
        }
    }
    no_host_special_files(d);
}

fn guest_device_nodes_are_host_regular_files(d: &Daemon, fs: &FsDriver) {
    for (name, mode, rdev) in [
        ("mem", libc::S_IFCHR | 0o666, (1 << 8) | 1),
        ("sda", libc::S_IFBLK | 0o660, 8 << 8),
        ("whiteout", libc::S_IFCHR, 0),
        ("fifo", libc::S_IFIFO | 0o644, 0),
        ("sock", libc::S_IFSOCK | 0o644, 0),
    ] {
        let e = mknod(fs, ROOT_ID, name.as_bytes(), mode, rdev).unwrap();
        assert_eq!(e.attr.mode & libc::S_IFMT, mode & libc::S_IFMT, "{name}");
        assert_eq!(e.attr.rdev, rdev, "{name}");
        // Opening it never reaches a device.
        let r = errno(fs.open(e.nodeid, libc::O_RDWR | libc::O_NONBLOCK));
        if r == 0 {
            let m = std::fs::symlink_metadata(d.shared_dir().join(name)).unwrap();
            assert!(m.is_file());
        }
    }
    assert_eq!(
        errno(mknod(fs, ROOT_ID, b"bad", 0o170000 | 0o644, 0)),
        libc::EINVAL
    );
    no_host_special_files(d);
}

fn device_nodes_without_stat_virtualization(d: &Daemon, fs: &FsDriver) {
    let r = errno(mknod(
        fs,
        ROOT_ID,
        b"mem",
        libc::S_IFCHR | 0o666,
        (1 << 8) | 1,
    ));
    assert_eq!(r, libc::EPERM);
    let r = errno(mknod(fs, ROOT_ID, b"sda", libc::S_IFBLK | 0o666, 8 << 8));
    assert_eq!(r, libc::EPERM);
    no_host_special_files(d);
    assert!(!d.shared_dir().join("mem").exists());
}

fn xattr_sizes_and_namespaces(d: &Daemon, fs: &FsDriver) {
    let a = fs.lookup(ROOT_ID, b"a").unwrap().nodeid;
    let big = vec![7u8; 65537];
    assert_eq!(errno(setxattr(fs, a, "user.big", &big)), libc::E2BIG);
    let long = format!("user.{}", "n".repeat(251));
    assert_eq!(errno(setxattr(fs, a, &long, b"v")), libc::ERANGE);
    for name in [
        "security.capability",
        "trusted.overlay.opaque",
        "system.posix_acl_access",
        "security.selinux",
        "nonsense.x",
    ] {
        let r = errno(setxattr(fs, a, name, &[1, 0, 0, 2, 0xff, 0xff, 0xff, 0xff]));
        assert!(r == libc::EPERM || r == libc::EOPNOTSUPP, "{name}: {r}");
        assert_eq!(
            errno(getxattr(fs, a, name, 64, 64)),
            libc::ENODATA,
            "{name}"
        );
    }
    let path = std::ffi::CString::new(
        d.shared_dir()
            .join("a")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    let mut names = vec![0u8; 4096];
    // SAFETY: a NUL-terminated path and a buffer of the given size.
    let n = unsafe { libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let names = &names[..n.max(0) as usize];
    assert!(
        names
            .split(|&b| b == 0)
            .all(|n| n.is_empty() || n.starts_with(b"user.msb.")),
        "host xattrs: {:?}",
        String::from_utf8_lossy(names)
    );
    // The largest value the protocol allows is fine (ext4 may refuse it
    // for lack of room: then ENOSPC or E2BIG, never a crash).
    let r = errno(setxattr(fs, a, "user.max", &big[..65536]));
    assert!(matches!(r, 0 | libc::ENOSPC | libc::E2BIG), "{r}");
}

fn symlink_targets_past_path_max(d: &Daemon, fs: &FsDriver) {
    let long = vec![b'x'; 4096];
    assert_eq!(errno(fs.symlink(ROOT_ID, b"l", &long)), libc::ENAMETOOLONG);
    assert!(!d.shared_dir().join("l").exists());
    let ok = vec![b'y'; 4095];
    let e = fs.symlink(ROOT_ID, b"l", &ok).unwrap();
    assert_eq!(fs.readlink(e.nodeid).unwrap(), ok);
}

/// Handles used with the wrong inode, after release, across sessions.
const HANDLES: [Case; 6] = [
    Case::new(
        "a file handle used with another inode",
        &[],
        handle_of_another_inode,
    )
    .prepared(two_files),
    Case::new(
        "double RELEASE and use after RELEASE",
        &[],
        double_release_and_use_after_release,
    )
    .prepared(two_files),
    Case::new(
        "FORGET of the root and past the lookup count",
        &[],
        forget_of_the_root_and_past_the_count,
    )
    .prepared(two_files),
    Case::new(
        "a second FUSE_INIT ends the old session",
        &[],
        second_init_ends_the_old_session,
    )
    .prepared(two_files),
    Case::new("DESTROY, then requests", &[], destroy_then_requests).prepared(two_files),
    Case::new("INTERRUPT of nothing", &[], interrupt_of_nothing),
];

/// Offsets, whences, modes and ranges at the edges.
const OFFSETS: [Case; 6] = [
    Case::new(
        "READ/WRITE at offsets near u64::MAX",
        &[],
        offsets_near_u64_max,
    )
    .prepared(two_files),
    Case::new(
        "FALLOCATE overflowing ranges and unknown modes",
        &[],
        fallocate_overflow_and_unknown_modes,
    )
    .prepared(two_files),
    Case::new(
        "LSEEK unknown whence, SEEK_DATA past the end",
        &[],
        lseek_unknown_whence_and_past_the_end,
    )
    .prepared(two_files),
    Case::new(
        "COPY_FILE_RANGE overlapping, mismatched handles",
        &[],
        copy_file_range_overlapping_and_mismatched,
    )
    .prepared(two_files),
    Case::new("READDIR at huge offsets", &[], readdir_at_huge_offsets).prepared(two_files),
    Case::new(
        "IOCTL with lying sizes is refused",
        &[],
        ioctl_is_refused_without_allocating,
    )
    .prepared(two_files),
];

/// Names, links and nodes the host must never get.
const NAMES: [Case; 9] = [
    Case::new(
        "RENAME2 with RENAME_WHITEOUT and unknown flags",
        &[],
        rename2_whiteout_and_unknown_flags,
    )
    .prepared(two_files),
    Case::new(
        "RENAME_EXCHANGE of a directory with its child, moves into itself",
        &[],
        rename_exchange_with_a_directory_and_into_itself,
    )
    .prepared(two_files),
    Case::new(
        "LINK of a directory, the root, an unlinked file",
        &[],
        link_of_a_directory_the_root_or_an_unlinked_file,
    ),
    Case::new(
        "CREATE through host symlinks leading out",
        &[],
        create_through_host_symlinks_leading_out,
    )
    .prepared(outward_links),
    Case::new(
        "CREATE with O_DIRECTORY, O_PATH, O_TMPFILE, O_NOFOLLOW",
        &[],
        create_with_directory_path_and_nofollow_flags,
    ),
    Case::new(
        "MKNOD of devices, whiteouts, FIFOs, sockets",
        &[],
        guest_device_nodes_are_host_regular_files,
    ),
    Case::new(
        "MKNOD of devices without stat virtualization",
        &["--stat-virtualization", "off"],
        device_nodes_without_stat_virtualization,
    ),
    Case::new(
        "SETXATTR past XATTR_SIZE_MAX and outside user.*",
        &["--xattr"],
        xattr_sizes_and_namespaces,
    )
    .prepared(two_files),
    Case::new(
        "SYMLINK targets past PATH_MAX",
        &[],
        symlink_targets_past_path_max,
    ),
];

#[test]
fn hostile_operations_each_on_a_fresh_daemon_with_the_sandbox_on_and_off() {
    run_suite(file!(), &all(&[&HANDLES[..], &OFFSETS[..], &NAMES[..]]));
}
