//! Stat virtualization and host permissions through `virtiofsd-msb
//! --fuse-mount` (the host kernel plays the guest): the record
//! `user.msb.override_stat` holds what the guest sees, the host inode keeps
//! the daemon's owner, special files are host regular files, the record is
//! invisible, strict refuses a filesystem without `user.*` xattrs, mirror
//! never mirrors setuid, and `off` refuses what needs the record.
//!
//! Runs as root with /dev/fuse (see `common::preflight`).

mod common;
mod policy_util;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use msb_tests::daemon_proc::{Daemon, DaemonOptions};
use msb_tests::vhost_driver::{FuseClient, ROOT_ID};
use policy_util::{record, sh, sh_as, Record, Setup};

const STRICT_PRIVATE: &[&str] = &[
    "--stat-virtualization",
    "strict",
    "--host-permissions",
    "private",
];

fn host_meta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap_or_else(|e| panic!("host lstat {}: {e}", p.display()))
}

/// (uid, gid, mode) of a host inode.
fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let m = host_meta(p);
    (m.uid(), m.gid(), m.mode())
}

#[test]
fn chown_and_chmod_survive_a_restart_and_leave_the_host_inode_alone() {
    let Some(s) = Setup::new("chown_and_chmod_survive_a_restart") else {
        return;
    };
    let (f, d) = (s.mnt.join("f"), s.mnt.join("d"));
    let (hf, hd) = (s.share.join("f"), s.share.join("d"));
    let (host_f, host_d);
    {
        // Defaults: strict + private.
        let _m = s.mount(&[]);
        fs::write(&f, b"data").unwrap();
        fs::create_dir(&d).unwrap();
        host_f = owner_mode(&hf);
        host_d = owner_mode(&hd);
        assert_eq!(host_f.2 & 0o7777, 0o600, "private: host file owner-only");
        assert_eq!(host_d.2 & 0o7777, 0o700, "private: host dir owner-only");
        sh(&format!(
            "chown 1234:5678 {f} && chmod 0751 {f} && chown 4321:8765 {d} && chmod 0710 {d}",
            f = f.display(),
            d = d.display()
        ));
        let m = fs::metadata(&f).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode()),
            (1234, 5678, libc::S_IFREG | 0o751)
        );
    }
    // The host inodes never changed owner or mode.
    assert_eq!(owner_mode(&hf), host_f);
    assert_eq!(owner_mode(&hd), host_d);
    assert_eq!(
        record(&hf),
        Some(Record {
            uid: 1234,
            gid: 5678,
            mode: libc::S_IFREG | 0o751,
            rdev: 0
        })
    );
    // A restarted daemon (explicitly strict + private) shows the same.
    let _m = s.mount(STRICT_PRIVATE);
    let m = fs::metadata(&f).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode()),
        (1234, 5678, libc::S_IFREG | 0o751)
    );
    let m = fs::metadata(&d).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode()),
        (4321, 8765, libc::S_IFDIR | 0o710)
    );
    assert_eq!(fs::read(&f).unwrap(), b"data");
    // Permissions are answered from the record: the owner (1234) may write,
    // "others" (4321) only execute, although the host file is root's 0600.
    let (ok, err) = sh_as(1234, 5678, &format!("printf more >> {}", f.display()));
    assert!(ok.success(), "owner write refused: {err}");
    let (denied, _) = sh_as(4321, 4321, &format!("printf x >> {}", f.display()));
    assert!(!denied.success(), "a non-owner wrote to a 0751 file");
    let (ls, _) = sh_as(1234, 1234, &format!("ls {}", d.display()));
    assert!(!ls.success(), "others may not list a 0710 directory");
    assert_eq!(owner_mode(&hf), host_f, "still unchanged on the host");
}

#[test]
fn mknod_char_device_is_a_host_regular_file() {
    let Some(s) = Setup::new("mknod_char_device_is_a_host_regular_file") else {
        return;
    };
    let _m = s.mount(&[]);
    sh(&format!(
        "mknod {d}/null c 1 3 && mknod {d}/blk b 8 1 && mkfifo {d}/fifo",
        d = s.mnt.display()
    ));
    let guest = fs::symlink_metadata(s.mnt.join("null")).unwrap();
    assert!(
        guest.file_type().is_char_device(),
        "guest sees a char device"
    );
    assert_eq!(guest.rdev(), libc::makedev(1, 3));
    assert!(fs::symlink_metadata(s.mnt.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    for name in ["null", "blk", "fifo"] {
        let host = host_meta(&s.share.join(name));
        assert!(
            host.file_type().is_file(),
            "host {name} is not a regular file"
        );
        assert_eq!(host.rdev(), 0, "host {name} has a device number");
    }
    let rec = record(&s.share.join("null")).expect("record on the device file");
    assert_eq!(rec.mode & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(u64::from(rec.rdev), libc::makedev(1, 3));
    assert_eq!(
        record(&s.share.join("blk")).unwrap().mode & libc::S_IFMT,
        libc::S_IFBLK
    );
    assert_eq!(
        record(&s.share.join("fifo")).unwrap().mode & libc::S_IFMT,
        libc::S_IFIFO
    );
}

#[test]
fn opening_a_guest_device_never_opens_a_host_device() {
    // Through vhost-user, as a (possibly misbehaving) guest kernel would:
    // MKNOD a char device, then send OPEN for it.
    let d = Daemon::start_with(DaemonOptions::default())
        .unwrap_or_else(|e| panic!("cannot start virtiofsd-msb: {e}"));
    let fs = d.connect(1).unwrap_or_else(|e| panic!("{e}"));
    let arg = fuse_backend_rs::abi::fuse_abi::MknodIn {
        mode: libc::S_IFCHR | 0o666,
        rdev: 0x0103, // 1:3, /dev/null
        umask: 0,
        padding: 0,
    };
    let mut body = vm_memory::ByteValued::as_slice(&arg).to_vec();
    body.extend_from_slice(b"null\0");
    let reply = fs
        .call(
            fuse_backend_rs::abi::fuse_abi::Opcode::Mknod,
            ROOT_ID,
            &body,
            4096,
        )
        .expect("MKNOD");
    assert!(!reply.is_empty());
    let e = fs.lookup(ROOT_ID, b"null").expect("lookup");
    assert_eq!(e.attr.mode & libc::S_IFMT, libc::S_IFCHR);
    let host = host_meta(&d.shared_dir().join("null"));
    assert!(host.file_type().is_file(), "host got a device node");
    for flags in [libc::O_RDONLY, libc::O_RDWR] {
        assert_eq!(
            fs.open(e.nodeid, flags).unwrap_err().errno(),
            Some(libc::EACCES),
            "OPEN of a guest device (flags {flags:#o})"
        );
    }
}

#[test]
fn the_override_xattr_is_hidden_from_the_guest() {
    let Some(s) = Setup::new("the_override_xattr_is_hidden_from_the_guest") else {
        return;
    };
    let _m = s.mount(&["--xattr"]);
    let f = s.mnt.join("f");
    fs::write(&f, b"x").unwrap();
    policy_util::setxattr(&f, "user.visible", b"1").unwrap();
    let before = policy_util::getxattr(&s.share.join("f"), policy_util::RECORD).expect("record");
    assert_eq!(policy_util::listxattr(&f).unwrap(), ["user.visible"]);
    let rec = policy_util::RECORD;
    assert_eq!(policy_util::getxattr(&f, rec), Err(libc::ENODATA));
    let forged = Record {
        uid: 0,
        gid: 0,
        mode: libc::S_IFREG | 0o4777,
        rdev: 0,
    };
    assert_eq!(
        policy_util::setxattr(&f, rec, &forged.encode()),
        Err(libc::EPERM)
    );
    assert_eq!(policy_util::removexattr(&f, rec), Err(libc::EPERM));
    assert_eq!(
        policy_util::getxattr(&s.share.join("f"), rec).unwrap(),
        before,
        "record untouched"
    );
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7000, 0);
    // security.* and trusted.* never reach the host.
    for name in ["security.msbtest", "trusted.msbtest"] {
        assert_eq!(
            policy_util::setxattr(&f, name, b"v"),
            Err(libc::EOPNOTSUPP),
            "{name}"
        );
        assert_eq!(
            policy_util::getxattr(&s.share.join("f"), name),
            Err(libc::ENODATA)
        );
    }
}

/// A mounted filesystem without `user.*` xattrs: a loop-mounted vfat image
/// when the kernel has vfat, else ramfs. Unmounted on drop.
struct NoXattrFs {
    dir: PathBuf,
    kind: &'static str,
}

impl NoXattrFs {
    fn mount(scratch: &Path) -> NoXattrFs {
        let dir = scratch.join("noxattr");
        fs::create_dir(&dir).unwrap();
        let img = scratch.join("vfat.img");
        let vfat = fs::File::create(&img)
            .and_then(|f| f.set_len(32 << 20))
            .is_ok()
            && Command::new("mkfs.vfat")
                .arg(&img)
                .output()
                .is_ok_and(|o| o.status.success())
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&dir)
                .output()
                .is_ok_and(|o| o.status.success());
        if vfat {
            return NoXattrFs {
                dir,
                kind: "vfat (loop)",
            };
        }
        common::report(
            "policy: this kernel cannot mount vfat; using ramfs (no user.* xattrs either)",
        );
        let out = Command::new("mount")
            .args(["-t", "ramfs", "ramfs"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount ramfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        NoXattrFs { dir, kind: "ramfs" }
    }
}

impl Drop for NoXattrFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn strict_refuses_a_filesystem_without_user_xattrs_and_relaxed_serves_it() {
    let Some(s) = Setup::new("strict_refuses_a_filesystem_without_user_xattrs") else {
        return;
    };
    let nx = NoXattrFs::mount(s.scratch.path());
    common::report(&format!("policy: no-xattr filesystem: {}", nx.kind));
    assert_eq!(
        policy_util::setxattr(&nx.dir, "user.probe", b"1"),
        Err(libc::EOPNOTSUPP),
        "{} stores user xattrs after all",
        nx.kind
    );
    for args in [
        &[][..],
        &["--stat-virtualization", "strict"][..],
        &["--readonly"][..],
    ] {
        let (status, log) = policy_util::expect_refusal(&s.daemon, &nx.dir, &s.mnt, args);
        assert_eq!(status.code(), Some(1), "{args:?}: {log}");
        assert!(
            log.contains("strict needs user.* extended attributes") && log.contains("relaxed"),
            "{args:?}: unclear refusal:\n{log}"
        );
    }
    // relaxed: served, with the host's metadata.
    let m = s.mount_at(
        &nx.dir,
        &s.mnt,
        "relaxed",
        &["--stat-virtualization", "relaxed"],
    );
    let f = s.mnt.join("hello.txt");
    fs::write(&f, b"on a filesystem without xattrs").unwrap();
    assert_eq!(
        fs::read(nx.dir.join("hello.txt")).unwrap(),
        b"on a filesystem without xattrs"
    );
    assert_eq!(
        fs::metadata(&f).unwrap().uid(),
        host_meta(&nx.dir.join("hello.txt")).uid()
    );
    assert!(
        m.log_tail(50).contains("relaxed"),
        "no note of relaxed mode:\n{}",
        m.log_tail(50)
    );
    // Overlay operations fail clearly there.
    let out = Command::new("mknod")
        .arg(s.mnt.join("dev"))
        .args(["c", "1", "3"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "mknod of a device on a share without records"
    );
    drop(m);
}

#[test]
fn mirror_never_mirrors_setuid_and_private_never_mirrors_anything() {
    let Some(s) = Setup::new("mirror_never_mirrors_setuid") else {
        return;
    };
    let host_mode = |p: &str| host_meta(&s.share.join(p)).mode() & 0o7777;
    let guest_mode = |p: &str| fs::symlink_metadata(s.mnt.join(p)).unwrap().mode() & 0o7777;
    {
        let _m = s.mount(&["--host-permissions", "mirror"]);
        fs::write(s.mnt.join("f"), b"#!/bin/sh\n").unwrap();
        sh(&format!("chmod 0644 {}", s.mnt.join("f").display()));
        assert_eq!(host_mode("f"), 0o644, "mirror copies rw-r--r--");
        for (mode, host) in [
            (0o4755, 0o755),
            (0o2755, 0o755),
            (0o6711, 0o711),
            (0o0000, 0o600),
            (0o0044, 0o644),
        ] {
            fs::set_permissions(s.mnt.join("f"), fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(guest_mode("f"), mode, "guest mode {mode:o}");
            assert_eq!(host_mode("f"), host, "host mode for guest {mode:o}");
        }
        fs::create_dir(s.mnt.join("d")).unwrap();
        for (mode, host) in [(0o1777, 0o777), (0o2775, 0o775), (0o0000, 0o700)] {
            fs::set_permissions(s.mnt.join("d"), fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(guest_mode("d"), mode);
            assert_eq!(host_mode("d"), host, "host mode for guest dir {mode:o}");
        }
    }
    {
        let _m = s.mount(STRICT_PRIVATE);
        let before = host_mode("f");
        assert_eq!(before, 0o644, "as mirror left it");
        fs::set_permissions(s.mnt.join("f"), fs::Permissions::from_mode(0o4777)).unwrap();
        assert_eq!(guest_mode("f"), 0o4777);
        assert_eq!(host_mode("f"), before, "private leaves the host mode alone");
        fs::write(s.mnt.join("p"), b"").unwrap();
        fs::set_permissions(s.mnt.join("p"), fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(host_mode("p"), 0o600);
    }
}

#[test]
fn writes_clear_setuid_in_the_record_as_the_kernel_would() {
    let Some(s) = Setup::new("writes_clear_setuid_in_the_record") else {
        return;
    };
    let _m = s.mount(&["--cache", "never"]);
    let f = s.mnt.join("f");
    fs::write(&f, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6777)).unwrap();
    // Root (CAP_FSETID) keeps them.
    fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b"# root\n")
        .unwrap();
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o6777);
    let (st, err) = sh_as(
        65534,
        65534,
        &format!("printf '# nobody\\n' >> {}", f.display()),
    );
    assert!(st.success(), "{err}");
    assert_eq!(
        fs::metadata(&f).unwrap().mode() & 0o7777,
        0o777,
        "guest view"
    );
    assert_eq!(
        record(&s.share.join("f")).unwrap().mode & 0o7777,
        0o777,
        "record"
    );
    assert_eq!(
        host_meta(&s.share.join("f")).mode() & 0o7000,
        0,
        "host inode"
    );
}

#[test]
fn a_corrupt_record_is_eio_and_the_daemon_keeps_serving() {
    let Some(s) = Setup::new("a_corrupt_record_is_eio") else {
        return;
    };
    fs::write(s.share.join("bad"), b"b").unwrap();
    fs::write(s.share.join("good"), b"g").unwrap();
    policy_util::setxattr(
        &s.share.join("bad"),
        policy_util::RECORD,
        b"\x07not a record",
    )
    .unwrap();
    let mut m = s.mount(&[]);
    let e = fs::symlink_metadata(s.mnt.join("bad")).unwrap_err();
    assert_eq!(policy_util::errno(&e), libc::EIO, "{e}");
    assert_eq!(fs::read(s.mnt.join("good")).unwrap(), b"g");
    let mut names: Vec<String> = fs::read_dir(&s.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bad", "good"]);
    fs::write(s.mnt.join("new"), b"n").unwrap();
    m.check_alive().unwrap();
}

#[test]
fn off_shows_host_metadata_and_refuses_what_needs_the_record() {
    let Some(s) = Setup::new("off_shows_host_metadata") else {
        return;
    };
    fs::write(s.share.join("h"), b"h").unwrap();
    let fake = Record {
        uid: 4242,
        gid: 4242,
        mode: libc::S_IFREG | 0o4777,
        rdev: 0,
    };
    policy_util::setxattr(&s.share.join("h"), policy_util::RECORD, &fake.encode()).unwrap();
    let _m = s.mount(&["--stat-virtualization", "off"]);
    let g = fs::metadata(s.mnt.join("h")).unwrap();
    let h = host_meta(&s.share.join("h"));
    assert_eq!(
        (g.uid(), g.mode()),
        (h.uid(), h.mode()),
        "literal host metadata"
    );
    let chown = Command::new("chown")
        .arg("1234")
        .arg(s.mnt.join("h"))
        .output()
        .unwrap();
    assert!(!chown.status.success());
    assert!(
        String::from_utf8_lossy(&chown.stderr).contains("not permitted"),
        "{chown:?}"
    );
    let mknod = Command::new("mknod")
        .arg(s.mnt.join("dev"))
        .args(["c", "1", "3"])
        .output()
        .unwrap();
    assert!(!mknod.status.success(), "device node without the record");
    let e = fs::set_permissions(s.mnt.join("h"), fs::Permissions::from_mode(0o4755)).unwrap_err();
    assert_eq!(policy_util::errno(&e), libc::EPERM);
    sh(&format!("mkfifo {}", s.mnt.join("fifo").display()));
    assert!(host_meta(&s.share.join("fifo")).file_type().is_fifo());
    assert!(!s.share.join("dev").exists());
}
