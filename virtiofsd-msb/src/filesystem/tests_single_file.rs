//! Single-file shares, calling the trait directly: the root lists and
//! finds only the file, every request on the root that could reach the
//! host directory fails, the file itself is served like any other.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use fuse_backend_rs::abi::fuse_abi::{CreateIn, SetattrValid};
use fuse_backend_rs::api::filesystem::{Context, DirEntry, FileSystem};

use super::inodes::ROOT_ID;
use super::*;

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn errno<T>(r: io::Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("succeeded, an error was expected"),
        Err(e) => e.raw_os_error().unwrap(),
    }
}

/// `dir` with `app.conf` (the shared file) and siblings `secret` and `sub/`.
fn layout(dir: &Path) {
    std::fs::write(dir.join("app.conf"), b"key = 1\n").unwrap();
    std::fs::write(dir.join("secret"), b"sibling secret").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
}

fn single(dir: &Path, readonly: bool) -> ConfinedFs {
    ConfinedFs::new(FsConfig {
        readonly,
        single_file: Some("app.conf".into()),
        ..FsConfig::new(dir.to_path_buf(), 64)
    })
    .unwrap()
}

fn names(fs: &ConfinedFs, h: u64) -> Vec<String> {
    let mut out = Vec::new();
    fs.readdir(&Context::new(), ROOT_ID, h, 4096, 0, &mut |d: DirEntry| {
        out.push(String::from_utf8_lossy(d.name).into_owned());
        Ok(1)
    })
    .unwrap();
    out
}

fn host_listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn the_root_holds_only_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    layout(tmp.path());
    let fs = single(tmp.path(), false);
    let ctx = Context::new();
    let file = fs.lookup(&ctx, ROOT_ID, &c("app.conf")).unwrap();
    assert_eq!(file.attr.st_mode & libc::S_IFMT, libc::S_IFREG);
    for sibling in ["secret", "sub", "nothing"] {
        assert_eq!(errno(fs.lookup(&ctx, ROOT_ID, &c(sibling))), libc::ENOENT);
    }
    for bad in ["..", ".", "", "../app.conf", "sub/x"] {
        assert_eq!(
            errno(fs.lookup(&ctx, ROOT_ID, &c(bad))),
            libc::EINVAL,
            "{bad:?}"
        );
    }
    // The file is not a directory: nothing is found beneath it.
    assert_eq!(
        errno(fs.lookup(&ctx, file.inode, &c("secret"))),
        libc::ENOTDIR
    );
    let (root, _) = fs.getattr(&ctx, ROOT_ID, None).unwrap();
    assert_eq!(root.st_mode & libc::S_IFMT, libc::S_IFDIR);
    let (h, _) = fs.opendir(&ctx, ROOT_ID, libc::O_RDONLY as u32).unwrap();
    let h = h.unwrap();
    assert_eq!(names(&fs, h), [".", "..", "app.conf"]);
    let mut plus = Vec::new();
    fs.readdirplus(&ctx, ROOT_ID, h, 4096, 0, &mut |d, e| {
        plus.push((String::from_utf8_lossy(d.name).into_owned(), e.inode));
        Ok(1)
    })
    .unwrap();
    assert_eq!(plus.len(), 3);
    assert_eq!(plus[2], ("app.conf".to_string(), file.inode));
    assert_eq!((plus[0].1, plus[1].1), (0, 0), ". and .. are not looked up");
    // Listing from an offset continues after it.
    let mut rest = Vec::new();
    fs.readdir(&ctx, ROOT_ID, h, 4096, 2, &mut |d: DirEntry| {
        rest.push(d.name.to_vec());
        Ok(1)
    })
    .unwrap();
    assert_eq!(rest, [b"app.conf".to_vec()]);
    fs.releasedir(&ctx, ROOT_ID, 0, h).unwrap();
}

#[test]
fn no_request_on_the_root_reaches_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    layout(tmp.path());
    let before = host_listing(tmp.path());
    let dir_mtime = std::fs::metadata(tmp.path()).unwrap().mtime_nsec();
    let fs = single(tmp.path(), false);
    let ctx = Context::new();
    let file = fs.lookup(&ctx, ROOT_ID, &c("app.conf")).unwrap();
    let args = CreateIn {
        flags: libc::O_RDWR as u32,
        mode: libc::S_IFREG | 0o644,
        umask: 0,
        fuse_flags: 0,
    };
    let mut attr = file.attr;
    attr.st_mode = libc::S_IFDIR | 0o777;
    let refused = [
        ("create", errno(fs.create(&ctx, ROOT_ID, &c("new"), args))),
        ("mkdir", errno(fs.mkdir(&ctx, ROOT_ID, &c("d"), 0o755, 0))),
        (
            "mknod",
            errno(fs.mknod(&ctx, ROOT_ID, &c("n"), libc::S_IFIFO | 0o644, 0, 0)),
        ),
        (
            "symlink",
            errno(fs.symlink(&ctx, &c("secret"), ROOT_ID, &c("l"))),
        ),
        (
            "link",
            errno(fs.link(&ctx, file.inode, ROOT_ID, &c("again"))),
        ),
        (
            "unlink file",
            errno(fs.unlink(&ctx, ROOT_ID, &c("app.conf"))),
        ),
        (
            "unlink sibling",
            errno(fs.unlink(&ctx, ROOT_ID, &c("secret"))),
        ),
        ("rmdir sibling", errno(fs.rmdir(&ctx, ROOT_ID, &c("sub")))),
        (
            "rename over the file",
            errno(fs.rename(&ctx, ROOT_ID, &c("secret"), ROOT_ID, &c("app.conf"), 0)),
        ),
        (
            "rename the file",
            errno(fs.rename(&ctx, ROOT_ID, &c("app.conf"), ROOT_ID, &c("x"), 0)),
        ),
        (
            "setattr",
            errno(fs.setattr(&ctx, ROOT_ID, attr, None, SetattrValid::MODE)),
        ),
        (
            "setxattr",
            errno(fs.setxattr(&ctx, ROOT_ID, &c("user.x"), b"1", 0)),
        ),
        (
            "getxattr",
            errno(fs.getxattr(&ctx, ROOT_ID, &c("user.x"), 64)),
        ),
        ("listxattr", errno(fs.listxattr(&ctx, ROOT_ID, 64))),
        (
            "open",
            errno(fs.open(&ctx, ROOT_ID, libc::O_RDONLY as u32, 0)),
        ),
        (
            "opendir rw",
            errno(fs.opendir(&ctx, ROOT_ID, libc::O_RDWR as u32)),
        ),
        ("statfs", errno(fs.statfs(&ctx, ROOT_ID))),
        ("readlink", errno(fs.readlink(&ctx, ROOT_ID))),
    ];
    for (op, e) in refused {
        assert!(
            matches!(e, libc::EPERM | libc::EISDIR),
            "{op} on the root: errno {e}"
        );
    }
    assert_eq!(host_listing(tmp.path()), before);
    assert_eq!(
        std::fs::metadata(tmp.path()).unwrap().mtime_nsec(),
        dir_mtime,
        "the directory changed"
    );
    assert_eq!(
        std::fs::read(tmp.path().join("secret")).unwrap(),
        b"sibling secret"
    );
}

#[test]
fn the_file_is_served_like_any_other() {
    let tmp = tempfile::tempdir().unwrap();
    layout(tmp.path());
    let fs = single(tmp.path(), false);
    let ctx = Context::new();
    let file = fs.lookup(&ctx, ROOT_ID, &c("app.conf")).unwrap();
    let (h, _, _) = fs.open(&ctx, file.inode, libc::O_RDWR as u32, 0).unwrap();
    let h = h.unwrap();
    fs.fsync(&ctx, file.inode, false, h).unwrap();
    let mut attr = file.attr;
    attr.st_size = 3;
    let (st, _) = fs
        .setattr(&ctx, file.inode, attr, Some(h), SetattrValid::SIZE)
        .unwrap();
    assert_eq!(st.st_size, 3);
    assert_eq!(std::fs::read(tmp.path().join("app.conf")).unwrap(), b"key");
    fs.release(&ctx, file.inode, 0, h, false, false, None)
        .unwrap();
    // Read-only: the file opens for reading only, changes are EROFS.
    let ro = single(tmp.path(), true);
    let file = ro.lookup(&ctx, ROOT_ID, &c("app.conf")).unwrap();
    assert_eq!(
        errno(ro.setattr(&ctx, file.inode, attr, None, SetattrValid::SIZE)),
        libc::EROFS
    );
    let (root, _) = ro.getattr(&ctx, ROOT_ID, None).unwrap();
    assert_eq!(root.st_mode & 0o777, 0o555);
}

#[test]
fn the_file_is_held_by_fd_not_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    layout(tmp.path());
    let fs = single(tmp.path(), false);
    let ctx = Context::new();
    let before = fs.lookup(&ctx, ROOT_ID, &c("app.conf")).unwrap();
    // The host swaps the name for a symlink to a sibling: the share still
    // serves the file it opened.
    std::fs::rename(tmp.path().join("app.conf"), tmp.path().join("moved")).unwrap();
    std::os::unix::fs::symlink("secret", tmp.path().join("app.conf")).unwrap();
    let after = fs.lookup(&ctx, ROOT_ID, &c("app.conf")).unwrap();
    assert_eq!(after.inode, before.inode);
    assert_eq!(
        after.attr.st_ino,
        std::fs::metadata(tmp.path().join("moved")).unwrap().ino()
    );
}

#[test]
fn only_regular_files_can_be_shared() {
    let tmp = tempfile::tempdir().unwrap();
    layout(tmp.path());
    std::os::unix::fs::symlink("secret", tmp.path().join("link")).unwrap();
    for (name, want) in [
        ("sub", "not a regular file"),
        ("link", "not a regular file"),
        ("missing", "No such file"),
        ("..", "not a file name"),
    ] {
        let e = ConfinedFs::new(FsConfig {
            single_file: Some(name.into()),
            ..FsConfig::new(tmp.path().to_path_buf(), 64)
        })
        .err()
        .unwrap_or_else(|| panic!("{name} was accepted"));
        assert!(e.to_string().contains(want), "{name}: {e}");
    }
}
