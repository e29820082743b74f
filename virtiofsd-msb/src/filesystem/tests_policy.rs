//! Unit tests of the policies as the filesystem applies them, calling the
//! `FileSystem` trait directly (no FUSE).

use std::ffi::CString;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::{CreateIn, SetattrValid};
use fuse_backend_rs::api::filesystem::{
    Context, DirEntry, Entry, FileSystem, GetxattrReply, ListxattrReply,
};

use super::inodes::ROOT_ID;
use super::*;
use crate::policy::stat_override::{StatOverride, XATTR_NAME};

pub(super) fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("succeeded, an error was expected"),
        Err(e) => e.raw_os_error().unwrap(),
    }
}

pub(super) fn fs_with(dir: &Path, f: impl FnOnce(&mut FsConfig)) -> ConfinedFs {
    let mut config = FsConfig::new(dir.to_path_buf(), 64);
    f(&mut config);
    ConfinedFs::new(config).unwrap()
}

pub(super) fn ctx(uid: u32, gid: u32) -> Context {
    let mut c = Context::new();
    c.uid = uid;
    c.gid = gid;
    c
}

pub(super) fn record_of(path: &Path) -> Option<StatOverride> {
    let p = c(path.to_str().unwrap());
    let mut buf = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a writable buffer.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            XATTR_NAME.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| StatOverride::decode(&buf[..n as usize]).unwrap())
}

pub(super) fn set_raw_record(path: &Path, value: &[u8]) {
    let p = c(path.to_str().unwrap());
    // SAFETY: valid NUL-terminated strings and a readable value.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            XATTR_NAME.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "{}", io::Error::last_os_error());
}

fn create(fs: &ConfinedFs, ctx: &Context, name: &str, mode: u32) -> (Entry, u64) {
    let args = CreateIn {
        flags: libc::O_RDWR as u32,
        mode,
        umask: 0,
        fuse_flags: 0,
    };
    let (e, h, _, _) = fs.create(ctx, ROOT_ID, &c(name), args).unwrap();
    (e, h.unwrap())
}

fn write(
    fs: &ConfinedFs,
    ctx: &Context,
    e: &Entry,
    h: u64,
    off: u64,
    data: &[u8],
) -> io::Result<usize> {
    let mut src = tempfile::tempfile().unwrap();
    src.write_all(data).unwrap();
    src.seek(SeekFrom::Start(0)).unwrap();
    fs.write(
        ctx,
        e.inode,
        h,
        &mut src,
        data.len() as u32,
        off,
        None,
        false,
        0,
        0,
    )
}

fn attr_with(f: impl FnOnce(&mut libc::stat64)) -> libc::stat64 {
    // SAFETY: plain data; zero is valid.
    let mut a: libc::stat64 = unsafe { std::mem::zeroed() };
    f(&mut a);
    a
}

fn euid() -> u32 {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() }
}

#[test]
fn owner_and_mode_live_in_the_record_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("f");
    {
        let fs = fs_with(tmp.path(), |_| {});
        assert!(fs.overlay_active());
        let (e, h) = create(&fs, &ctx(1000, 100), "f", 0o640);
        assert_eq!(e.attr.st_mode, libc::S_IFREG | 0o640);
        assert_eq!((e.attr.st_uid, e.attr.st_gid), (1000, 100));
        fs.release(&ctx(1000, 100), e.inode, 0, h, false, false, None)
            .unwrap();
        let meta = std::fs::metadata(&host).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600, "private: host owner-only");
        assert_eq!(meta.uid(), euid(), "host owner is the daemon's");
        let a = attr_with(|a| {
            a.st_uid = 4321;
            a.st_gid = 8765;
            a.st_mode = 0o751;
        });
        let valid = SetattrValid::UID | SetattrValid::GID | SetattrValid::MODE;
        let (st, _) = fs.setattr(&ctx(0, 0), e.inode, a, None, valid).unwrap();
        assert_eq!(
            (st.st_uid, st.st_gid, st.st_mode),
            (4321, 8765, libc::S_IFREG | 0o751)
        );
        let after = std::fs::metadata(&host).unwrap();
        assert_eq!(
            (after.uid(), after.gid(), after.mode()),
            (meta.uid(), meta.gid(), meta.mode()),
            "host inode unchanged"
        );
    }
    // A new daemon sees the same.
    let fs = fs_with(tmp.path(), |_| {});
    let e = fs.lookup(&ctx(0, 0), ROOT_ID, &c("f")).unwrap();
    assert_eq!(
        (e.attr.st_uid, e.attr.st_gid, e.attr.st_mode),
        (4321, 8765, libc::S_IFREG | 0o751)
    );
}

#[test]
fn special_files_are_host_regular_files_that_never_open() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = fs_with(tmp.path(), |_| {});
    let cx = ctx(0, 0);
    let dev = fs
        .mknod(&cx, ROOT_ID, &c("null"), libc::S_IFCHR | 0o666, 0x103, 0)
        .unwrap();
    assert_eq!(dev.attr.st_mode, libc::S_IFCHR | 0o666);
    assert_eq!(dev.attr.st_rdev, 0x103);
    let fifo = fs
        .mknod(&cx, ROOT_ID, &c("fifo"), libc::S_IFIFO | 0o600, 0, 0)
        .unwrap();
    let sock = fs
        .mknod(&cx, ROOT_ID, &c("sock"), libc::S_IFSOCK | 0o600, 0, 0)
        .unwrap();
    for name in ["null", "fifo", "sock"] {
        let m = std::fs::symlink_metadata(tmp.path().join(name)).unwrap();
        assert!(m.file_type().is_file(), "{name} is a host regular file");
        assert!(!m.file_type().is_char_device());
    }
    assert_eq!(record_of(&tmp.path().join("null")).unwrap().rdev, 0x103);
    for e in [&dev, &fifo, &sock] {
        assert_eq!(
            errno(fs.open(&cx, e.inode, libc::O_RDWR as u32, 0)),
            libc::EACCES
        );
        let trunc = attr_with(|a| a.st_size = 0);
        assert_eq!(
            errno(fs.setattr(&cx, e.inode, trunc, None, SetattrValid::SIZE)),
            libc::EINVAL
        );
    }
    // Plain READDIR reports the guest types.
    let (h, _) = fs.opendir(&cx, ROOT_ID, 0).unwrap();
    let mut types = Vec::new();
    fs.readdir(&cx, ROOT_ID, h.unwrap(), 4096, 0, &mut |d: DirEntry| {
        types.push((d.name.to_vec(), d.type_));
        Ok(1)
    })
    .unwrap();
    types.sort();
    let want = |n: &[u8]| types.iter().find(|(name, _)| name == n).unwrap().1;
    assert_eq!(want(b"null"), u32::from(libc::DT_CHR));
    assert_eq!(want(b"fifo"), u32::from(libc::DT_FIFO));
    assert_eq!(want(b"sock"), u32::from(libc::DT_SOCK));
}

#[test]
fn the_record_is_invisible_and_untouchable() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = fs_with(tmp.path(), |_| {});
    let cx = ctx(0, 0);
    let (e, _) = create(&fs, &ctx(7, 7), "f", 0o644);
    let before = record_of(&tmp.path().join("f")).unwrap();
    fs.setxattr(&cx, e.inode, &c("user.mine"), b"v", 0).unwrap();
    match fs.listxattr(&cx, e.inode, 4096).unwrap() {
        ListxattrReply::Names(n) => assert_eq!(n, b"user.mine\0"),
        ListxattrReply::Count(_) => panic!("names expected"),
    }
    match fs.listxattr(&cx, e.inode, 0).unwrap() {
        ListxattrReply::Count(n) => assert_eq!(n, 10),
        ListxattrReply::Names(_) => panic!("count expected"),
    }
    assert_eq!(errno(fs.listxattr(&cx, e.inode, 3)), libc::ERANGE);
    let name = c("user.msb.override_stat");
    assert_eq!(errno(fs.getxattr(&cx, e.inode, &name, 64)), libc::ENODATA);
    assert_eq!(errno(fs.getxattr(&cx, e.inode, &name, 0)), libc::ENODATA);
    let forged = StatOverride {
        uid: 0,
        gid: 0,
        mode: libc::S_IFREG | 0o4777,
        rdev: 0,
    };
    assert_eq!(
        errno(fs.setxattr(&cx, e.inode, &name, &forged.encode(), 0)),
        libc::EPERM
    );
    assert_eq!(errno(fs.removexattr(&cx, e.inode, &name)), libc::EPERM);
    assert_eq!(
        errno(fs.setxattr(&cx, e.inode, &c("user.msb.other"), b"x", 0)),
        libc::EPERM
    );
    assert_eq!(record_of(&tmp.path().join("f")).unwrap(), before);
    // Foreign namespaces are refused, not remapped.
    for n in [
        "security.capability",
        "trusted.overlay.opaque",
        "system.posix_acl_access",
    ] {
        assert_eq!(
            errno(fs.setxattr(&cx, e.inode, &c(n), b"\x01", 0)),
            libc::EOPNOTSUPP,
            "{n}"
        );
        assert_eq!(
            errno(fs.removexattr(&cx, e.inode, &c(n))),
            libc::EOPNOTSUPP,
            "{n}"
        );
        assert_eq!(
            errno(fs.getxattr(&cx, e.inode, &c(n), 64)),
            libc::ENODATA,
            "{n}"
        );
    }
    match fs.getxattr(&cx, e.inode, &c("user.mine"), 64).unwrap() {
        GetxattrReply::Value(v) => assert_eq!(v, b"v"),
        GetxattrReply::Count(_) => panic!("value expected"),
    }
}

#[test]
fn a_corrupt_record_is_eio_for_that_inode_only() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("bad"), b"x").unwrap();
    std::fs::write(tmp.path().join("good"), b"y").unwrap();
    set_raw_record(&tmp.path().join("bad"), b"\x02garbage");
    let mut dir_rec = StatOverride::from_host(&sys_stat(tmp.path()));
    dir_rec.mode = libc::S_IFDIR | 0o755;
    std::fs::create_dir(tmp.path().join("d")).unwrap();
    // A directory record on a regular file is corrupt too.
    std::fs::write(tmp.path().join("typed"), b"z").unwrap();
    set_raw_record(&tmp.path().join("typed"), &dir_rec.encode());
    let fs = fs_with(tmp.path(), |_| {});
    let cx = ctx(0, 0);
    assert_eq!(errno(fs.lookup(&cx, ROOT_ID, &c("bad"))), libc::EIO);
    assert_eq!(errno(fs.lookup(&cx, ROOT_ID, &c("typed"))), libc::EIO);
    fs.lookup(&cx, ROOT_ID, &c("good")).unwrap();
    // READDIRPLUS still lists every name.
    let (h, _) = fs.opendir(&cx, ROOT_ID, 0).unwrap();
    let mut names = Vec::new();
    fs.readdirplus(
        &cx,
        ROOT_ID,
        h.unwrap(),
        4096,
        0,
        &mut |d: DirEntry, e: Entry| {
            names.push((d.name.to_vec(), e.inode));
            Ok(1)
        },
    )
    .unwrap();
    let bad = names.iter().find(|(n, _)| n == b"bad").unwrap();
    assert_eq!(bad.1, 0, "listed without a lookup");
    assert!(names.iter().any(|(n, id)| n == b"good" && *id != 0));
}

fn sys_stat(p: &Path) -> libc::stat64 {
    let p = c(p.to_str().unwrap());
    // SAFETY: plain data.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and writable struct.
    assert_eq!(unsafe { libc::lstat64(p.as_ptr(), &mut st) }, 0);
    st
}

#[test]
fn writes_by_non_root_clear_setuid_in_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = fs_with(tmp.path(), |_| {});
    let user = ctx(1000, 1000);
    let (e, h) = create(&fs, &user, "f", 0o755);
    let suid = attr_with(|a| a.st_mode = 0o6755);
    fs.setattr(&user, e.inode, suid, None, SetattrValid::MODE)
        .unwrap();
    // Root (CAP_FSETID) keeps them.
    write(&fs, &ctx(0, 0), &e, h, 0, b"root").unwrap();
    assert_eq!(
        record_of(&tmp.path().join("f")).unwrap().mode & 0o7777,
        0o6755
    );
    write(&fs, &user, &e, h, 4, b"user").unwrap();
    assert_eq!(
        record_of(&tmp.path().join("f")).unwrap().mode & 0o7777,
        0o755
    );
    let (st, _) = fs.getattr(&user, e.inode, None).unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o755);
    assert_eq!(
        std::fs::metadata(tmp.path().join("f")).unwrap().mode() & 0o7000,
        0
    );
}

#[test]
fn mirror_copies_rwx_only_and_setgid_dirs_pass_on_their_group() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = fs_with(tmp.path(), |c| {
        c.host_permissions = crate::policy::HostPermissions::Mirror
    });
    let cx = ctx(0, 0);
    let (e, _) = create(&fs, &cx, "f", 0o644);
    let mode = |p: &str| {
        std::fs::metadata(tmp.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("f"), 0o644);
    let m = attr_with(|a| a.st_mode = 0o4755);
    let (st, _) = fs
        .setattr(&cx, e.inode, m, None, SetattrValid::MODE)
        .unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o4755, "the guest sees setuid");
    assert_eq!(mode("f"), 0o755, "the host never does");
    let m = attr_with(|a| a.st_mode = 0o000);
    fs.setattr(&cx, e.inode, m, None, SetattrValid::MODE)
        .unwrap();
    assert_eq!(mode("f"), 0o600, "owner floor");
    let d = fs.mkdir(&cx, ROOT_ID, &c("d"), 0o2775, 0).unwrap();
    assert_eq!(mode("d"), 0o775);
    let g = attr_with(|a| a.st_gid = 555);
    fs.setattr(&cx, d.inode, g, None, SetattrValid::GID)
        .unwrap();
    let sub = fs
        .mkdir(&ctx(1000, 1000), d.inode, &c("sub"), 0o755, 0)
        .unwrap();
    assert_eq!(sub.attr.st_gid, 555, "setgid directory passes its group on");
    assert_eq!(
        sub.attr.st_mode & 0o7777,
        0o2755,
        "and setgid to directories"
    );
    assert_eq!(mode("d/sub") & 0o7000, 0);
}

#[test]
fn off_shows_host_metadata_and_refuses_what_needs_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("h"), b"x").unwrap();
    let fake = StatOverride {
        uid: 99,
        gid: 99,
        mode: libc::S_IFREG | 0o777,
        rdev: 0,
    };
    set_raw_record(&tmp.path().join("h"), &fake.encode());
    let fs = fs_with(tmp.path(), |c| {
        c.stat_virtualization = crate::policy::StatVirtualization::Off
    });
    assert!(!fs.overlay_active());
    let cx = ctx(0, 0);
    let h = fs.lookup(&cx, ROOT_ID, &c("h")).unwrap();
    assert_eq!(h.attr.st_uid, euid(), "records are ignored");
    let chown = attr_with(|a| a.st_uid = euid() + 1);
    assert_eq!(
        errno(fs.setattr(&cx, h.inode, chown, None, SetattrValid::UID)),
        libc::EPERM
    );
    let same = attr_with(|a| a.st_uid = euid());
    fs.setattr(&cx, h.inode, same, None, SetattrValid::UID)
        .unwrap();
    let suid = attr_with(|a| a.st_mode = 0o4755);
    assert_eq!(
        errno(fs.setattr(&cx, h.inode, suid, None, SetattrValid::MODE)),
        libc::EPERM
    );
    assert_eq!(
        errno(fs.mknod(&cx, ROOT_ID, &c("dev"), libc::S_IFBLK | 0o600, 0x801, 0)),
        libc::EPERM
    );
    fs.mknod(&cx, ROOT_ID, &c("fifo"), libc::S_IFIFO | 0o600, 0, 0)
        .unwrap();
    assert!(std::fs::symlink_metadata(tmp.path().join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn quota_refuses_growth_past_the_budget_and_counts_frees() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("pre"), vec![0u8; 1000]).unwrap();
    let fs = fs_with(tmp.path(), |c| {
        c.quota = Some(crate::policy::QuotaConfig {
            limit_bytes: 4096,
            accounting_file: None,
        })
    });
    let cx = ctx(0, 0);
    let used = || fs.quota.as_ref().unwrap().used().unwrap();
    assert_eq!(used(), 1000, "initial scan");
    let (e, h) = create(&fs, &cx, "f", 0o644);
    assert_eq!(write(&fs, &cx, &e, h, 0, &[1u8; 3000]).unwrap(), 3000);
    assert_eq!(used(), 4000);
    // A write that straddles the limit fails whole.
    assert_eq!(
        errno(write(&fs, &cx, &e, h, 3000, &[2u8; 200])),
        libc::ENOSPC
    );
    assert_eq!(std::fs::metadata(tmp.path().join("f")).unwrap().len(), 3000);
    // Rewriting in place needs no budget; up to the limit works.
    write(&fs, &cx, &e, h, 0, &[3u8; 3000]).unwrap();
    write(&fs, &cx, &e, h, 3000, &[4u8; 96]).unwrap();
    assert_eq!(used(), 4096);
    let grow = attr_with(|a| a.st_size = 5000);
    assert_eq!(
        errno(fs.setattr(&cx, e.inode, grow, Some(h), SetattrValid::SIZE)),
        libc::ENOSPC
    );
    assert_eq!(
        errno(fs.fallocate(&cx, e.inode, h, 0, 0, 8192)),
        libc::ENOSPC
    );
    assert_eq!(
        errno(fs.symlink(&cx, &c("target"), ROOT_ID, &c("l"))),
        libc::ENOSPC
    );
    // Statfs shows the budget.
    let st = fs.statfs(&cx, ROOT_ID).unwrap();
    assert_eq!(st.f_blocks * st.f_frsize, 4096);
    assert_eq!(st.f_bavail, 0);
    // Truncating and unlinking give bytes back.
    let shrink = attr_with(|a| a.st_size = 1000);
    fs.setattr(&cx, e.inode, shrink, Some(h), SetattrValid::SIZE)
        .unwrap();
    assert_eq!(used(), 2000);
    fs.unlink(&cx, ROOT_ID, &c("pre")).unwrap();
    assert_eq!(used(), 1000);
    fs.symlink(&cx, &c("target"), ROOT_ID, &c("l")).unwrap();
    assert_eq!(used(), 1006);
    fs.fallocate(&cx, e.inode, h, 0, 0, 3000).unwrap();
    assert_eq!(used(), 3006);
    let keep = libc::FALLOC_FL_KEEP_SIZE as u32;
    assert_eq!(
        errno(fs.fallocate(&cx, e.inode, h, keep, 0, 100_000)),
        libc::EOPNOTSUPP
    );
    // A hard link costs nothing, and unlinking one of two frees nothing.
    fs.link(&cx, e.inode, ROOT_ID, &c("f2")).unwrap();
    fs.unlink(&cx, ROOT_ID, &c("f")).unwrap();
    assert_eq!(used(), 3006);
    // Replacing by rename frees the replaced file.
    let (e3, h3) = create(&fs, &cx, "small", 0o644);
    write(&fs, &cx, &e3, h3, 0, b"12345").unwrap();
    assert_eq!(used(), 3011);
    fs.rename(&cx, ROOT_ID, &c("small"), ROOT_ID, &c("f2"), 0)
        .unwrap();
    // The replaced inode is still open (handle `h`, and looked up by the
    // create and the link): it keeps taking host space, and stays counted
    // until the daemon holds it no more.
    assert_eq!(used(), 3011);
    fs.release(&cx, e.inode, 0, h, false, false, None).unwrap();
    fs.forget(&cx, e.inode, 2);
    fs.statfs(&cx, ROOT_ID).unwrap();
    assert_eq!(used(), 11);
}

#[test]
fn readonly_never_writes_the_record() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("f"), b"x").unwrap();
    let fs = fs_with(tmp.path(), |c| c.readonly = true);
    assert!(
        fs.overlay_active(),
        "a read-only probe proves xattr support"
    );
    let cx = ctx(0, 0);
    let e = fs.lookup(&cx, ROOT_ID, &c("f")).unwrap();
    let a = attr_with(|a| a.st_uid = 5);
    assert_eq!(
        errno(fs.setattr(&cx, e.inode, a, None, SetattrValid::UID)),
        libc::EROFS
    );
    assert_eq!(
        errno(fs.setxattr(&cx, e.inode, &c("user.msb.override_stat"), b"x", 0)),
        libc::EROFS
    );
    assert!(record_of(&tmp.path().join("f")).is_none());
    assert!(
        record_of(tmp.path()).is_none(),
        "no probe xattr left on the root"
    );
}

#[test]
fn file_backed_symlinks_read_as_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("l"), b"some/target").unwrap();
    let rec = StatOverride {
        uid: 3,
        gid: 4,
        mode: libc::S_IFLNK | 0o777,
        rdev: 0,
    };
    set_raw_record(&tmp.path().join("l"), &rec.encode());
    let fs = fs_with(tmp.path(), |_| {});
    let cx = ctx(0, 0);
    let e = fs.lookup(&cx, ROOT_ID, &c("l")).unwrap();
    assert_eq!(e.attr.st_mode, libc::S_IFLNK | 0o777);
    assert_eq!(fs.readlink(&cx, e.inode).unwrap(), b"some/target");
    assert_eq!(
        errno(fs.open(&cx, e.inode, libc::O_RDONLY as u32, 0)),
        libc::ELOOP
    );
}
