use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt};

use super::*;

/// A volume root inside a temp dir, with a sentinel file beside it.
struct Fixture {
    _tmp: tempfile::TempDir,
    outside: PathBuf,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("sentinel"), "secret").unwrap();
        let root = tmp.path().join("vol");
        std::fs::create_dir(&root).unwrap();
        Fixture {
            _tmp: tmp,
            outside,
            root,
        }
    }

    fn fs(&self) -> VolumeFs {
        VolumeFs::open(&self.root, None).unwrap()
    }

    fn quota_fs(&self, limit: u64) -> VolumeFs {
        let file = self.outside.join("quota");
        VolumeFs::open(&self.root, Some((limit, file))).unwrap()
    }
}

fn is_escape(r: Result<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(Error::PathEscape { .. }))
}

fn os_err<T>(r: Result<T>) -> Option<i32> {
    match r {
        Err(e) => e.io_error().and_then(|e| e.raw_os_error()),
        Ok(_) => None,
    }
}

#[test]
fn write_read_exists_and_modes() {
    let fx = Fixture::new();
    let fs = fx.fs();
    assert_eq!(fs.root(), fx.root);
    fs.mkdir("a/b/c").unwrap();
    fs.mkdir("a/b/c").unwrap();
    fs.write_string("a/b/c/f.txt", "hello").unwrap();
    assert_eq!(fs.read_string("a/b/c/f.txt").unwrap(), "hello");
    assert_eq!(fs.read("./a//b/c/../c/f.txt").unwrap(), b"hello");
    // Truncates.
    fs.write("a/b/c/f.txt", b"hi").unwrap();
    assert_eq!(fs.read_string("a/b/c/f.txt").unwrap(), "hi");
    assert!(fs.exists("a/b").unwrap());
    assert!(fs.exists("").unwrap());
    assert!(!fs.exists("a/nope").unwrap());
    assert!(!fs.exists("a/b/c/f.txt/below").unwrap());
    let mode = |p: &str| std::fs::metadata(fx.root.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("a/b/c/f.txt"), 0o644);
    assert_eq!(mode("a"), 0o755);
    assert_eq!(mode("a/b/c"), 0o755);
    // Reading a directory or a missing file names the path.
    let e = fs.read("a").unwrap_err();
    assert_eq!(
        e.io_error().and_then(|e| e.raw_os_error()),
        Some(libc::EISDIR)
    );
    assert!(e.to_string().contains("\"a\""), "{e}");
    assert_eq!(os_err(fs.read("missing")), Some(libc::ENOENT));
    // A file in the way of mkdir.
    assert!(fs.mkdir("a/b/c/f.txt/sub").is_err());
    // Invalid UTF-8.
    fs.write("bin", [0xff, 0xfe]).unwrap();
    assert!(fs.read_string("bin").is_err());
}

#[test]
fn list_entries() {
    let fx = Fixture::new();
    let fs = fx.fs();
    fs.mkdir("d").unwrap();
    fs.write("f", b"12345").unwrap();
    symlink("f", fx.root.join("l")).unwrap();
    let names: Vec<(String, EntryKind, u64)> = fs
        .read_dir("")
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.kind, e.size))
        .collect();
    assert_eq!(names[1], ("f".to_string(), EntryKind::File, 5));
    assert_eq!(names[0].1, EntryKind::Dir);
    assert_eq!(names[2], ("l".to_string(), EntryKind::Symlink, 1));
    assert!(fs.read_dir("f").is_err());
}

#[test]
fn remove_and_remove_all() {
    let fx = Fixture::new();
    let fs = fx.fs();
    fs.mkdir("d/e").unwrap();
    fs.write("d/e/f", b"x").unwrap();
    assert_eq!(os_err(fs.remove("d")), Some(libc::ENOTEMPTY));
    fs.remove("d/e/f").unwrap();
    fs.remove("d/e").unwrap();
    assert!(!fs.exists("d/e").unwrap());
    assert_eq!(os_err(fs.remove("d/e")), Some(libc::ENOENT));
    fs.mkdir("t/u/v").unwrap();
    fs.write("t/u/v/w", b"x").unwrap();
    fs.write("t/top", b"x").unwrap();
    // A symlink to the outside inside the tree is deleted, not followed.
    symlink(&fx.outside, fx.root.join("t/u/out")).unwrap();
    fs.remove_all("t").unwrap();
    assert!(!fs.exists("t").unwrap());
    assert_eq!(
        std::fs::read_to_string(fx.outside.join("sentinel")).unwrap(),
        "secret"
    );
    fs.remove_all("t").unwrap();
    fs.remove_all("no/such/thing").unwrap();
    for root in ["", ".", "a/.."] {
        assert!(
            matches!(fs.remove(root), Err(Error::InvalidPath { .. })),
            "{root}"
        );
        assert!(fs.remove_all(root).is_err(), "{root}");
    }
}

#[test]
fn escapes_are_refused_with_path_escape() {
    let fx = Fixture::new();
    let fs = fx.fs();
    fs.mkdir("d").unwrap();
    symlink(&fx.outside, fx.root.join("abs")).unwrap();
    symlink("../outside", fx.root.join("rel")).unwrap();
    symlink("../../outside/sentinel", fx.root.join("d/deep")).unwrap();
    symlink("d", fx.root.join("inside")).unwrap();
    for p in [
        "/etc/passwd",
        "../outside/sentinel",
        "d/../../outside/sentinel",
        "abs/sentinel",
        "rel/sentinel",
        "d/deep",
    ] {
        assert!(is_escape(fs.read(p)), "read {p}");
        assert!(is_escape(fs.write(p, b"pwned")), "write {p}");
        assert!(is_escape(fs.exists(p)), "exists {p}");
    }
    assert!(is_escape(fs.mkdir("abs/new")));
    assert!(is_escape(fs.mkdir("../new")));
    assert!(is_escape(fs.remove("rel/sentinel")));
    assert!(is_escape(fs.remove_all("abs/sentinel")));
    assert!(is_escape(fs.read_dir("abs")));
    assert!(!fx.outside.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(fx.outside.join("sentinel")).unwrap(),
        "secret"
    );
    // A symlink that stays inside is followed.
    fs.write("inside/f", b"via link").unwrap();
    assert_eq!(fs.read_string("d/f").unwrap(), "via link");
    // Removing a symlink removes the link only.
    fs.remove("abs").unwrap();
    assert!(fx.outside.join("sentinel").exists());
}

#[test]
fn special_files_are_not_opened_for_io() {
    let fx = Fixture::new();
    let fs = fx.fs();
    let fifo = CString::new(fx.root.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path; result checked.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // Neither call blocks on the fifo.
    assert!(fs.read("fifo").unwrap_err().to_string().contains("regular"));
    // Without a reader the non-blocking open itself fails (ENXIO).
    assert!(fs.write("fifo", b"x").is_err());
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fx.root.join("fifo"))
        .unwrap();
    assert!(fs
        .write("fifo", b"x")
        .unwrap_err()
        .to_string()
        .contains("regular"));
}

#[test]
fn writes_count_against_the_quota() {
    let fx = Fixture::new();
    std::fs::write(fx.root.join("pre"), vec![0u8; 400]).unwrap();
    let fs = fx.quota_fs(1000);
    fs.write("a", vec![1u8; 500]).unwrap();
    // 400 + 500 used: 101 more does not fit, and nothing is created.
    assert_eq!(os_err(fs.write("b", vec![1u8; 101])), Some(libc::ENOSPC));
    assert!(!fs.exists("b").unwrap(), "a refused write creates nothing");
    fs.write("b", vec![1u8; 100]).unwrap();
    // Rewriting a file only needs the difference.
    assert_eq!(os_err(fs.write("a", vec![2u8; 501])), Some(libc::ENOSPC));
    assert_eq!(
        fs.read("a").unwrap(),
        vec![1u8; 500],
        "unchanged after ENOSPC"
    );
    fs.write("a", vec![2u8; 200]).unwrap();
    fs.write("c", vec![3u8; 300]).unwrap();
    // Removing gives bytes back; a hard link frees nothing until the last.
    std::fs::hard_link(fx.root.join("c"), fx.root.join("c2")).unwrap();
    fs.remove("c").unwrap();
    assert_eq!(os_err(fs.write("d", vec![0u8; 1])), Some(libc::ENOSPC));
    fs.mkdir("sub").unwrap();
    std::fs::rename(fx.root.join("c2"), fx.root.join("sub/c2")).unwrap();
    fs.remove_all("sub").unwrap();
    fs.write("d", vec![0u8; 300]).unwrap();
    // A second VolumeFs (or a daemon) on the same accounting file shares it.
    let other = fx.quota_fs(1000);
    assert_eq!(os_err(other.write("e", vec![0u8; 1])), Some(libc::ENOSPC));
    fs.remove("d").unwrap();
    other.write("e", vec![0u8; 300]).unwrap();
    assert_eq!(os_err(fs.write("f", vec![0u8; 1])), Some(libc::ENOSPC));
}
