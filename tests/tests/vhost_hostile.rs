//! Hostile requests through the real daemon and real virtqueues, by
//! class: open flags that must never reach the host, FIFOs, sockets and
//! devices that must never hold a queue thread, guest-chosen sizes that
//! must not become daemon memory, stat-virtualization records a host user
//! forged, and host symlink owners. Each case runs on a fresh daemon with
//! the sandbox on and off (see `hostile_util`).

mod hostile_util;

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{Opcode, ReadIn};
use hostile_util::{all, chown, errno, getxattr, run_suite, setattr, setxattr, Case};
use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::{FsDriver, FuseClient, ROOT_ID};
use vm_memory::ByteValued;

const RECORD: &str = "user.msb.override_stat";

fn file_with(root: &Path) -> std::io::Result<()> {
    std::fs::write(root.join("share/f"), b"file data")
}

/// Opens `name` with `flags` and must answer within a second whatever it
/// answers; the daemon must serve the next request at once.
fn prompt(fs: &FsDriver, node: u64, flags: i32) -> i32 {
    let start = Instant::now();
    let r = errno(fs.open(node, flags));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "OPEN {flags:#o} took {:?}",
        start.elapsed()
    );
    fs.getattr(ROOT_ID).unwrap();
    r
}

// ---- open flags -------------------------------------------------------

fn o_path_is_stripped(_d: &Daemon, fs: &FsDriver) {
    let e = fs.lookup(ROOT_ID, b"f").unwrap();
    let o = fs.open(e.nodeid, libc::O_PATH | libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(e.nodeid, o.fh, 0, 64).unwrap(), b"file data");
}

fn access_mode_3_is_einval(_d: &Daemon, fs: &FsDriver) {
    let e = fs.lookup(ROOT_ID, b"f").unwrap();
    assert_eq!(errno(fs.open(e.nodeid, 3)), libc::EINVAL);
}

fn exec_async_and_unknown_bits_are_ignored(_d: &Daemon, fs: &FsDriver) {
    let e = fs.lookup(ROOT_ID, b"f").unwrap();
    for extra in [
        0x20, /* __FMODE_EXEC */
        libc::O_ASYNC,
        0x4000_0000,
        libc::O_CREAT | libc::O_EXCL,
    ] {
        let o = fs.open(e.nodeid, libc::O_RDONLY | extra).unwrap();
        assert_eq!(fs.read(e.nodeid, o.fh, 0, 4).unwrap(), b"file");
    }
}

fn opendir_for_writing_fails(_d: &Daemon, fs: &FsDriver) {
    let d = fs.mkdir(ROOT_ID, b"dir", 0o755).unwrap();
    let mut body = libc::O_WRONLY.to_le_bytes().to_vec();
    body.extend_from_slice(&[0u8; 4]);
    assert_ne!(errno(fs.call(Opcode::Opendir, d.nodeid, &body, 16)), 0);
}

fn readonly_share_refuses_every_write_flag(_d: &Daemon, fs: &FsDriver) {
    let e = fs.lookup(ROOT_ID, b"f").unwrap();
    for flags in [
        libc::O_WRONLY,
        libc::O_RDWR,
        libc::O_RDONLY | libc::O_TRUNC,
        libc::O_RDONLY | libc::O_APPEND,
    ] {
        assert_eq!(errno(fs.open(e.nodeid, flags)), libc::EROFS, "{flags:#o}");
    }
    assert_eq!(
        errno(fs.create(ROOT_ID, b"n", 0o644, libc::O_RDONLY)),
        libc::EROFS
    );
}

// ---- nothing blocks a queue thread ------------------------------------

fn specials(root: &Path) -> std::io::Result<()> {
    let share = root.join("share");
    std::fs::write(share.join("f"), b"file data")?;
    let fifo = CString::new(share.join("p").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    drop(std::os::unix::net::UnixListener::bind(share.join("s"))?);
    let dev = CString::new(share.join("c").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; /dev/null's numbers. Root only.
    unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    Ok(())
}

fn fifo_read_open_and_read_never_block(_d: &Daemon, fs: &FsDriver) {
    let p = fs.lookup(ROOT_ID, b"p").unwrap();
    assert_eq!(prompt(fs, p.nodeid, libc::O_RDONLY), 0);
    let o = fs.open(p.nodeid, libc::O_RDONLY).unwrap();
    let start = Instant::now();
    let r = fs.read(p.nodeid, o.fh, 0, 100);
    assert!(start.elapsed() < Duration::from_secs(1));
    // Nothing to read (a real guest reads its FIFOs itself; positional
    // reads of a pipe are ESPIPE): any prompt answer will do.
    let errno = r.as_ref().err().and_then(|e| e.errno());
    let empty = matches!(&r, Ok(v) if v.is_empty());
    assert!(
        empty || matches!(errno, Some(libc::EAGAIN | libc::ESPIPE)),
        "{r:?}"
    );
}

fn fifo_write_open_without_reader_is_enxio(_d: &Daemon, fs: &FsDriver) {
    let p = fs.lookup(ROOT_ID, b"p").unwrap();
    assert_eq!(prompt(fs, p.nodeid, libc::O_WRONLY), libc::ENXIO);
    let start = Instant::now();
    let r = errno(fs.create(ROOT_ID, b"p", 0o644, libc::O_WRONLY));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_ne!(
        r, 0,
        "CREATE of an existing FIFO for writing without a reader"
    );
}

fn socket_and_device_files_are_never_opened(_d: &Daemon, fs: &FsDriver) {
    let s = fs.lookup(ROOT_ID, b"s").unwrap();
    assert_ne!(prompt(fs, s.nodeid, libc::O_RDWR), 0);
    if let Ok(c) = fs.lookup(ROOT_ID, b"c") {
        assert_eq!(prompt(fs, c.nodeid, libc::O_RDWR), libc::EACCES);
        assert_eq!(prompt(fs, c.nodeid, libc::O_RDONLY), libc::EACCES);
    }
}

// ---- guest sizes are not daemon memory --------------------------------

/// The server's peak resident memory in KiB.
fn peak_kib(d: &Daemon) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", d.server_pid().unwrap())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

fn huge_sizes_stay_small(d: &Daemon, fs: &FsDriver) {
    let before = peak_kib(d);
    let e = fs.lookup(ROOT_ID, b"f").unwrap();
    setxattr(fs, e.nodeid, "user.k", b"value").unwrap();
    assert_eq!(
        getxattr(fs, e.nodeid, "user.k", u32::MAX, 4096).unwrap(),
        b"value"
    );
    assert_eq!(
        getxattr(fs, e.nodeid, "user.k", 2, 4096).map_err(|e| e.errno()),
        Err(Some(libc::ERANGE))
    );
    let mut body = u32::MAX.to_le_bytes().to_vec();
    body.extend_from_slice(&[0u8; 4]);
    fs.call(Opcode::Listxattr, e.nodeid, &body, 4096).unwrap();
    let o = fs.open(e.nodeid, libc::O_RDONLY).unwrap();
    let read = ReadIn {
        fh: o.fh,
        size: u32::MAX,
        ..Default::default()
    };
    let _ = fs.call(Opcode::Read, e.nodeid, read.as_slice(), 4096);
    let dh = fs.opendir(ROOT_ID).unwrap();
    let readdir = ReadIn {
        fh: dh,
        size: u32::MAX,
        ..Default::default()
    };
    let _ = fs.call(Opcode::Readdir, ROOT_ID, readdir.as_slice(), 4096);
    let _ = fs.call(Opcode::Readdirplus, ROOT_ID, readdir.as_slice(), 4096);
    let grew = peak_kib(d).saturating_sub(before);
    assert!(grew < 32 * 1024, "the server grew by {grew} KiB");
}

fn lookups_without_forgets_do_not_grow_the_daemon(d: &Daemon, fs: &FsDriver) {
    let before = peak_kib(d);
    let fds = d.open_fds().unwrap();
    for _ in 0..20_000 {
        fs.lookup(ROOT_ID, b"f").unwrap();
    }
    assert!(
        d.open_fds().unwrap() <= fds + 1,
        "one inode, at most one more fd"
    );
    let grew = peak_kib(d).saturating_sub(before);
    assert!(
        grew < 16 * 1024,
        "20000 lookups of one file grew the server by {grew} KiB"
    );
}

/// 300 files on the host, more than 16 inode fds x 16 entries allow.
fn many_files(root: &Path) -> std::io::Result<()> {
    for i in 0..300 {
        std::fs::write(root.join(format!("share/f{i}")), b"x")?;
    }
    Ok(())
}

fn the_inode_table_is_bounded(_d: &Daemon, fs: &FsDriver) {
    let mut ids = Vec::new();
    let mut refused = 0;
    for i in 0..300 {
        match fs.lookup(ROOT_ID, format!("f{i}").as_bytes()) {
            Ok(e) => ids.push(e.nodeid),
            Err(e) => {
                assert_eq!(e.errno(), Some(libc::ENFILE), "{e}");
                refused += 1;
            }
        }
    }
    assert!(
        ids.len() <= 256 && refused >= 44,
        "{} held, {refused} refused",
        ids.len()
    );
    // Forgetting makes room again.
    for id in ids.drain(..50) {
        fs.forget(id, 1).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs.lookup(ROOT_ID, b"f299").is_err() {
        assert!(Instant::now() < deadline, "forgets made no room");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn batch_forget_with_a_lying_count(_d: &Daemon, fs: &FsDriver) {
    let mut body = u32::MAX.to_le_bytes().to_vec();
    body.extend_from_slice(&[0u8; 4]);
    body.extend_from_slice(&[1u8; 16]);
    fs.send_no_reply(0, Opcode::BatchForget as u32, 0, &body)
        .unwrap();
}

// ---- forged records ----------------------------------------------------

fn record(uid: u32, gid: u32, mode: u32, rdev: u32) -> Vec<u8> {
    let mut r = vec![1u8, 0, 0, 0];
    for w in [uid, gid, mode, rdev] {
        r.extend_from_slice(&w.to_le_bytes());
    }
    r
}

fn set_record(path: &Path, value: &[u8]) -> std::io::Result<()> {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = CString::new(RECORD).unwrap();
    // SAFETY: NUL-terminated strings and a readable value.
    if unsafe {
        libc::setxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `forged` and `forgeddev`: a host user's (uid 4242) own files with
/// records claiming setuid root and a /dev/mem-like device; `mine`: the
/// daemon's own file with a setuid record.
fn forged_records(root: &Path) -> std::io::Result<()> {
    let share = root.join("share");
    for (name, rec) in [
        ("forged", record(0, 0, libc::S_IFREG | 0o6755, 0)),
        (
            "forgeddev",
            record(0, 0, libc::S_IFCHR | 0o666, (1 << 8) | 1),
        ),
        ("mine", record(0, 0, libc::S_IFREG | 0o4755, 0)),
    ] {
        let p = share.join(name);
        std::fs::write(&p, b"#!/bin/sh\n")?;
        set_record(&p, &rec)?;
        if name != "mine" {
            std::os::unix::fs::chown(&p, Some(4242), Some(4242))?;
        }
    }
    Ok(())
}

fn root_only() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("not root: cannot give files to another host user; case skipped");
    }
    root
}

fn forged_setuid_record_grants_nothing(_d: &Daemon, fs: &FsDriver) {
    if !root_only() {
        return;
    }
    let e = fs.lookup(ROOT_ID, b"forged").unwrap();
    assert_eq!(e.attr.mode, libc::S_IFREG | 0o755, "{:o}", e.attr.mode);
    let mine = fs.lookup(ROOT_ID, b"mine").unwrap();
    assert_eq!(
        mine.attr.mode,
        libc::S_IFREG | 0o4755,
        "the daemon's own record"
    );
}

fn forged_device_record_is_a_plain_file(_d: &Daemon, fs: &FsDriver) {
    if !root_only() {
        return;
    }
    let e = fs.lookup(ROOT_ID, b"forgeddev").unwrap();
    assert_eq!(e.attr.mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(e.attr.rdev, 0);
    let attr = fs.getattr(e.nodeid).unwrap();
    assert_eq!(attr.mode & libc::S_IFMT, libc::S_IFREG);
}

fn guest_chmod_setuid_on_a_foreign_file_shows_none(d: &Daemon, fs: &FsDriver) {
    if !root_only() {
        return;
    }
    let e = fs.lookup(ROOT_ID, b"forged").unwrap();
    const FATTR_MODE: u32 = 1;
    let arg = fuse_backend_rs::abi::fuse_abi::SetattrIn {
        valid: FATTR_MODE,
        mode: libc::S_IFREG | 0o4755,
        ..Default::default()
    };
    let attr = setattr(fs, e.nodeid, arg).unwrap();
    assert_eq!(attr.mode & 0o6000, 0, "{:o}", attr.mode);
    let host = std::fs::metadata(d.shared_dir().join("forged")).unwrap();
    assert_eq!(host.mode() & 0o6000, 0);
}

fn the_record_xattr_is_out_of_reach(_d: &Daemon, fs: &FsDriver) {
    let e = fs.lookup(ROOT_ID, b"mine").unwrap();
    assert_eq!(
        errno(setxattr(
            fs,
            e.nodeid,
            RECORD,
            &record(0, 0, libc::S_IFREG | 0o4777, 0)
        )),
        libc::EPERM
    );
    assert_eq!(errno(getxattr(fs, e.nodeid, RECORD, 64, 64)), libc::ENODATA);
}

// ---- host symlink owners -------------------------------------------------

fn symlink_chown_to_another_owner_is_eperm(d: &Daemon, fs: &FsDriver) {
    let l = fs.symlink(ROOT_ID, b"l", b"target").unwrap();
    let host = d.shared_dir().join("l");
    let before = std::fs::symlink_metadata(&host).unwrap();
    assert_eq!(errno(chown(fs, l.nodeid, 4242, 4242)), libc::EPERM);
    assert_eq!(errno(chown(fs, l.nodeid, u32::MAX, 4242)), libc::EPERM);
    let after = std::fs::symlink_metadata(&host).unwrap();
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    // Asking for the owner it has is fine.
    chown(fs, l.nodeid, before.uid(), before.gid()).unwrap();
}

fn guest_symlinks_belong_to_the_daemon(d: &Daemon, fs: &FsDriver) {
    // A request from guest uid 1000 (the header's creds are the driver's:
    // send this one by hand).
    let (_, mut bytes) = fs.encode(Opcode::Symlink as u32, ROOT_ID, b"l2\0target\0");
    bytes[24..28].copy_from_slice(&1000u32.to_le_bytes());
    bytes[28..32].copy_from_slice(&1000u32.to_le_bytes());
    let done = fs.send_raw(&bytes, 256, 0).unwrap();
    let error = i32::from_le_bytes(done.written[4..8].try_into().unwrap());
    assert_eq!(error, 0, "SYMLINK as guest uid 1000");
    let host = std::fs::symlink_metadata(d.shared_dir().join("l2")).unwrap();
    // SAFETY: geteuid has no preconditions.
    assert_eq!(host.uid(), unsafe { libc::geteuid() }, "host symlink owner");
}

fn host_symlinks_are_never_followed(_d: &Daemon, fs: &FsDriver) {
    let e = fs.lookup(ROOT_ID, b"out").unwrap();
    assert_eq!(errno(fs.open(e.nodeid, libc::O_RDONLY)), libc::ELOOP);
    assert_eq!(fs.readlink(e.nodeid).unwrap(), b"/etc/passwd");
    assert_eq!(errno(fs.lookup(e.nodeid, b"x")), libc::ENOTDIR);
}

fn outward_symlink(root: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink("/etc/passwd", root.join("share/out"))
}

fn bad_names_everywhere(_d: &Daemon, fs: &FsDriver) {
    for name in [&b".."[..], b".", b"a/b", b"/etc", b""] {
        assert_eq!(errno(fs.lookup(ROOT_ID, name)), libc::EINVAL, "{name:?}");
        assert_eq!(
            errno(fs.mkdir(ROOT_ID, name, 0o755)),
            libc::EINVAL,
            "{name:?}"
        );
        assert_eq!(
            errno(fs.create(ROOT_ID, name, 0o644, libc::O_RDWR)),
            libc::EINVAL,
            "{name:?}"
        );
    }
}

/// Open flags: only sensible ones reach the host.
const OPEN_FLAGS: [Case; 5] = [
    Case::new("O_PATH is stripped", &[], o_path_is_stripped).prepared(file_with),
    Case::new("access mode 3 is EINVAL", &[], access_mode_3_is_einval).prepared(file_with),
    Case::new(
        "exec, async and unknown bits are ignored",
        &[],
        exec_async_and_unknown_bits_are_ignored,
    )
    .prepared(file_with),
    Case::new("OPENDIR for writing fails", &[], opendir_for_writing_fails),
    Case::new(
        "read-only share refuses every write flag",
        &["--readonly"],
        readonly_share_refuses_every_write_flag,
    )
    .prepared(file_with),
];

/// FIFOs, sockets and devices never hold a queue thread.
const NO_BLOCKING: [Case; 3] = [
    Case::new(
        "FIFO opened and read without a writer",
        &[],
        fifo_read_open_and_read_never_block,
    )
    .prepared(specials),
    Case::new(
        "FIFO opened for writing without a reader",
        &[],
        fifo_write_open_without_reader_is_enxio,
    )
    .prepared(specials),
    Case::new(
        "socket and device files",
        &[],
        socket_and_device_files_are_never_opened,
    )
    .prepared(specials),
];

/// Guest sizes and lookups do not become daemon memory.
const GUEST_SIZES: [Case; 4] = [
    Case::new(
        "4 GiB getxattr/listxattr/read/readdir sizes",
        &["--xattr"],
        huge_sizes_stay_small,
    )
    .prepared(file_with),
    Case::new(
        "20000 lookups never forgotten",
        &[],
        lookups_without_forgets_do_not_grow_the_daemon,
    )
    .prepared(file_with),
    Case::new(
        "lookups past the inode table's bound",
        &["--max-inode-fds", "16"],
        the_inode_table_is_bounded,
    )
    .prepared(many_files),
    Case::new(
        "BATCH_FORGET with a lying count",
        &[],
        batch_forget_with_a_lying_count,
    ),
];

/// Forged records and symlink owners grant nothing.
const FORGED: [Case; 8] = [
    Case::new(
        "forged setuid-root record",
        &[],
        forged_setuid_record_grants_nothing,
    )
    .prepared(forged_records),
    Case::new(
        "forged device record",
        &[],
        forged_device_record_is_a_plain_file,
    )
    .prepared(forged_records),
    Case::new(
        "guest chmod u+s on a foreign file",
        &[],
        guest_chmod_setuid_on_a_foreign_file_shows_none,
    )
    .prepared(forged_records),
    Case::new(
        "the record xattr is out of the guest's reach",
        &["--xattr"],
        the_record_xattr_is_out_of_reach,
    )
    .prepared(forged_records),
    Case::new(
        "symlink chown to another owner",
        &[],
        symlink_chown_to_another_owner_is_eperm,
    ),
    Case::new(
        "guest symlinks belong to the daemon",
        &[],
        guest_symlinks_belong_to_the_daemon,
    ),
    Case::new(
        "host symlinks are never followed",
        &[],
        host_symlinks_are_never_followed,
    )
    .prepared(outward_symlink),
    Case::new("bad names at every entry point", &[], bad_names_everywhere),
];

#[test]
fn hostile_requests_each_on_a_fresh_daemon_with_the_sandbox_on_and_off() {
    run_suite(
        file!(),
        &all(&[&OPEN_FLAGS, &NO_BLOCKING, &GUEST_SIZES, &FORGED]),
    );
}
