//! `virtiofsd-msb --shared-file`, driven over real vhost-user by the
//! project's frontend: the root holds the one file and nothing else; its
//! siblings cannot be named, listed, opened, changed or linked to through
//! any request, guessed node ids included; the file itself reads, writes
//! and truncates like any other.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fuse_backend_rs::abi::fuse_abi::{Opcode, SetattrIn};
use msb_tests::daemon_proc::{Daemon, DaemonOptions};
use msb_tests::vhost_driver::{DriverError, FsDriver, FuseClient, ROOT_ID};
use vm_memory::ByteValued;

const SECRET: &[u8] = b"SIBLING-SECRET-5e1f";

/// `share/app.conf` (served), siblings `share/secret` and
/// `share/sub/inner`.
fn layout(root: &Path) -> std::io::Result<()> {
    let share = root.join("share");
    fs::write(share.join("app.conf"), b"key = 1\n")?;
    fs::write(share.join("secret"), SECRET)?;
    fs::create_dir(share.join("sub"))?;
    fs::write(share.join("sub/inner"), SECRET)
}

/// What the host directory looks like: names, and mtimes and atimes of the
/// siblings (any read or change moves one of them).
fn host_state(share: &Path) -> Vec<(String, i64, i64, i64, i64)> {
    // Listed first: this listing itself moves the directory's atime once.
    let mut names: Vec<String> = fs::read_dir(share)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut v: Vec<_> = ["secret", "sub", "sub/inner", "."]
        .iter()
        .map(|n| {
            let m = fs::symlink_metadata(share.join(n)).unwrap();
            (
                n.to_string(),
                m.mtime(),
                m.mtime_nsec(),
                m.atime(),
                m.atime_nsec(),
            )
        })
        .collect();
    v.push((names.join(","), 0, 0, 0, 0));
    v
}

fn start(readonly: bool) -> (Daemon, FsDriver, PathBuf) {
    let args = if readonly {
        vec!["--readonly".to_string()]
    } else {
        Vec::new()
    };
    let opts = DaemonOptions {
        args,
        prepare: Some(layout),
    };
    let d = Daemon::start_shared_file("app.conf", opts)
        .unwrap_or_else(|e| panic!("cannot start virtiofsd-msb --shared-file: {e}"));
    let share = d.shared_dir().to_path_buf();
    // Atimes older than mtimes, so that any read on the host would show.
    for n in ["secret", "sub/inner"] {
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400 * 3);
        let f = fs::File::options().write(true).open(share.join(n)).unwrap();
        f.set_times(fs::FileTimes::new().set_accessed(old)).unwrap();
    }
    let fs = d.connect(1).unwrap_or_else(|e| panic!("{e}"));
    (d, fs, share)
}

fn errno<T: std::fmt::Debug>(r: Result<T, DriverError>) -> i32 {
    match r {
        Ok(v) => panic!("succeeded ({v:?}); an error was expected"),
        Err(e) => e
            .errno()
            .unwrap_or_else(|| panic!("not an errno reply: {e}")),
    }
}

fn with_name(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(name);
    v.push(0);
    v
}

#[test]
fn only_the_file_is_in_the_root() {
    let (_d, fs, share) = start(false);
    let before = host_state(&share);
    let file = fs.lookup(ROOT_ID, b"app.conf").expect("lookup app.conf");
    for name in [&b"secret"[..], b"sub", b"missing"] {
        assert_eq!(errno(fs.lookup(ROOT_ID, name)), libc::ENOENT);
    }
    for name in [&b".."[..], b".", b"../share/secret", b"sub/inner"] {
        assert_eq!(errno(fs.lookup(ROOT_ID, name)), libc::EINVAL);
    }
    assert_eq!(errno(fs.lookup(file.nodeid, b"..")), libc::EINVAL);
    assert_eq!(errno(fs.lookup(file.nodeid, b"secret")), libc::ENOTDIR);
    let listed: Vec<Vec<u8>> = fs
        .list(ROOT_ID)
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(
        listed,
        [b".".to_vec(), b"..".to_vec(), b"app.conf".to_vec()]
    );
    let plus = fs.list_plus(ROOT_ID).unwrap();
    let named: Vec<(Vec<u8>, bool)> = plus
        .iter()
        .map(|p| (p.dirent.name.clone(), p.entry.nodeid != 0))
        .collect();
    assert_eq!(
        named,
        [
            (b".".to_vec(), false),
            (b"..".to_vec(), false),
            (b"app.conf".to_vec(), true)
        ]
    );
    assert_eq!(plus[2].entry.nodeid, file.nodeid);
    let root = fs.getattr(ROOT_ID).unwrap();
    assert_eq!(root.mode & libc::S_IFMT, libc::S_IFDIR);
    // Guessed node ids: only the root and the file exist.
    for id in 2..64u64 {
        if id == file.nodeid {
            continue;
        }
        assert!(fs.getattr(id).is_err(), "node id {id} answered");
        assert!(fs.lookup(id, b"secret").is_err(), "lookup in node id {id}");
    }
    assert_eq!(host_state(&share), before, "the host directory was touched");
}

#[test]
fn no_request_changes_the_directory_or_reaches_a_sibling() {
    let (_d, fs, share) = start(false);
    let before = host_state(&share);
    let file = fs.lookup(ROOT_ID, b"app.conf").expect("lookup app.conf");
    let mode = libc::S_IFREG | 0o644;
    let link_in = with_name(&file.nodeid.to_ne_bytes(), b"again");
    let setattr = SetattrIn {
        valid: 1, // FATTR_MODE
        mode: libc::S_IFDIR | 0o777,
        ..Default::default()
    };
    let attempts: Vec<(&str, i32)> = vec![
        (
            "create",
            errno(fs.create(ROOT_ID, b"new", mode, libc::O_RDWR)),
        ),
        ("mkdir", errno(fs.mkdir(ROOT_ID, b"d", 0o755))),
        ("symlink", errno(fs.symlink(ROOT_ID, b"l", b"secret"))),
        ("unlink the file", errno(fs.unlink(ROOT_ID, b"app.conf"))),
        ("unlink a sibling", errno(fs.unlink(ROOT_ID, b"secret"))),
        ("rmdir a sibling", errno(fs.rmdir(ROOT_ID, b"sub"))),
        (
            "rename a sibling over the file",
            errno(fs.rename(ROOT_ID, b"secret", ROOT_ID, b"app.conf")),
        ),
        (
            "rename the file",
            errno(fs.rename(ROOT_ID, b"app.conf", ROOT_ID, b"x")),
        ),
        (
            "link the file into the root",
            errno(fs.call(Opcode::Link, ROOT_ID, &link_in, 256)),
        ),
        (
            "setattr of the root",
            errno(fs.call(Opcode::Setattr, ROOT_ID, setattr.as_slice(), 256)),
        ),
        ("open the root", errno(fs.open(ROOT_ID, libc::O_RDONLY))),
        ("statfs of the root", errno(fs.statfs(ROOT_ID))),
    ];
    for (what, e) in attempts {
        assert!(
            matches!(e, libc::EPERM | libc::EISDIR),
            "{what}: errno {e}, want EPERM"
        );
    }
    assert_eq!(host_state(&share), before, "the host directory was touched");
    assert_eq!(fs::read(share.join("secret")).unwrap(), SECRET);
    assert_eq!(fs::read(share.join("app.conf")).unwrap(), b"key = 1\n");
}

#[test]
fn the_file_reads_writes_and_truncates() {
    let (_d, fs, share) = start(false);
    let before = host_state(&share);
    let file = fs.lookup(ROOT_ID, b"app.conf").expect("lookup app.conf");
    let h = fs.open(file.nodeid, libc::O_RDWR).unwrap().fh;
    assert_eq!(fs.read(file.nodeid, h, 0, 64).unwrap(), b"key = 1\n");
    fs.write(file.nodeid, h, 0, b"key = 2\nmore\n").unwrap();
    let truncate = SetattrIn {
        valid: 1 << 3 | 1 << 6, // FATTR_SIZE | FATTR_FH
        size: 8,
        fh: h,
        ..Default::default()
    };
    fs.call(Opcode::Setattr, file.nodeid, truncate.as_slice(), 256)
        .unwrap();
    fs.release(file.nodeid, h).unwrap();
    assert_eq!(fs::read(share.join("app.conf")).unwrap(), b"key = 2\n");
    assert_eq!(host_state(&share), before, "a sibling was touched");
}

#[test]
fn read_only_file_share() {
    let (_d, fs, share) = start(true);
    let file = fs.lookup(ROOT_ID, b"app.conf").expect("lookup app.conf");
    let h = fs.open(file.nodeid, libc::O_RDONLY).unwrap().fh;
    assert_eq!(fs.read(file.nodeid, h, 0, 64).unwrap(), b"key = 1\n");
    fs.release(file.nodeid, h).unwrap();
    assert_eq!(errno(fs.open(file.nodeid, libc::O_RDWR)), libc::EROFS);
    assert_eq!(fs.getattr(ROOT_ID).unwrap().mode & 0o777, 0o555);
    assert_eq!(fs::read(share.join("app.conf")).unwrap(), b"key = 1\n");
}
