//! Fs sessions of the agent: read, write, list, stat, remove, mkdir, and
//! tar streams out and in (escapes refused); paths under a rootfs.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{request, Agent, Session};
use guest_init::agent::AgentOptions;
use guest_init::protocol::{FileKind, FsReply, FsRequest};

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Sends `data` as the session's stdin, then its end, and collects the reply.
fn upload(s: &Session<'_>, data: &[u8]) -> Result<(Vec<u8>, FsReply), String> {
    s.stdin(data);
    s.eof();
    s.fs_result()
}

#[test]
fn write_then_read_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let agent = Agent::start();
    let write = agent.fs(&FsRequest::Write {
        path: p(&file),
        mode: 0o600,
    });
    let (_, reply) = upload(&write, &data).unwrap();
    assert_eq!(reply.bytes, data.len() as u64);
    assert!(fs::read(&file).unwrap() == data);
    assert_eq!(mode_of(&file), 0o600, "the new file's mode, umask or not");

    let (back, reply) = agent
        .fs(&FsRequest::Read { path: p(&file) })
        .fs_result()
        .unwrap();
    assert_eq!(reply.bytes, data.len() as u64);
    assert!(back == data, "read back altered");

    // Rewriting truncates and keeps the existing mode.
    let rewrite = agent.fs(&FsRequest::Write {
        path: p(&file),
        mode: 0o644,
    });
    upload(&rewrite, b"short").unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"short");
    assert_eq!(mode_of(&file), 0o600);
}

#[test]
fn list_and_stat() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("f"), b"12345").unwrap();
    fs::set_permissions(dir.path().join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::create_dir(dir.path().join("d")).unwrap();
    std::os::unix::fs::symlink("f", dir.path().join("l")).unwrap();
    let agent = Agent::start();
    let (_, reply) = agent
        .fs(&FsRequest::List {
            path: p(dir.path()),
        })
        .fs_result()
        .unwrap();
    let names: Vec<_> = reply
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("d", FileKind::Dir),
            ("f", FileKind::File),
            ("l", FileKind::Symlink)
        ]
    );
    let f = &reply.entries[1];
    assert_eq!((f.size, f.mode), (5, 0o640));

    let (_, reply) = agent
        .fs(&FsRequest::Stat {
            path: p(&dir.path().join("l")),
        })
        .fs_result()
        .unwrap();
    let stat = reply.stat.unwrap();
    assert_eq!((stat.name.as_str(), stat.kind), ("l", FileKind::Symlink));
}

#[test]
fn mkdir_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("a/b/c");
    let agent = Agent::start();
    agent
        .fs(&FsRequest::Mkdir {
            path: p(&deep),
            mode: 0o750,
        })
        .fs_result()
        .unwrap();
    assert!(deep.is_dir());
    assert_eq!(mode_of(&dir.path().join("a/b")), 0o750);
    // Existing directories are fine (mkdir -p).
    agent
        .fs(&FsRequest::Mkdir {
            path: p(&deep),
            mode: 0o700,
        })
        .fs_result()
        .unwrap();
    fs::write(deep.join("f"), b"x").unwrap();

    let a = dir.path().join("a");
    let e = agent
        .fs(&FsRequest::Remove {
            path: p(&a),
            recursive: false,
        })
        .fs_result()
        .unwrap_err();
    assert!(e.contains(&p(&a)) && e.contains("not empty"), "{e}");
    agent
        .fs(&FsRequest::Remove {
            path: p(&a),
            recursive: true,
        })
        .fs_result()
        .unwrap();
    assert!(!a.exists());
    let e = agent
        .fs(&FsRequest::Remove {
            path: "/tmp/..".into(),
            recursive: true,
        })
        .fs_result()
        .unwrap_err();
    assert!(e.contains("refusing to remove the root"), "{e}");
}

#[test]
fn errors_name_the_path_and_the_errno() {
    let agent = Agent::start();
    let e = agent
        .fs(&FsRequest::Read {
            path: "/no/such/file".into(),
        })
        .fs_result()
        .unwrap_err();
    assert_eq!(
        e,
        "read /no/such/file: No such file or directory (os error 2)"
    );
    let e = agent
        .fs(&FsRequest::Stat {
            path: String::new(),
        })
        .fs_result()
        .unwrap_err();
    assert!(e.contains("empty path"), "{e}");
    // A write whose file cannot be created: later stdin is dropped quietly.
    let s = agent.fs(&FsRequest::Write {
        path: "/no/such/dir/f".into(),
        mode: 0o644,
    });
    assert!(s
        .fs_result()
        .unwrap_err()
        .starts_with("write /no/such/dir/f: "));
    s.stdin(b"ignored");
    s.eof();
    assert!(s.next_within(Duration::from_millis(300)).is_none());
}

#[test]
fn relative_paths_start_at_the_workdir() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("here.txt"), b"here").unwrap();
    let agent = Agent::start_with(AgentOptions {
        workdir: Some(p(dir.path())),
        ..common::options()
    });
    let (data, _) = agent
        .fs(&FsRequest::Read {
            path: "here.txt".into(),
        })
        .fs_result()
        .unwrap();
    assert_eq!(data, b"here");
}

fn set_mtime(path: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    fs::File::open(path).unwrap().set_modified(t).unwrap();
}

#[test]
fn copy_out_then_in_keeps_modes_symlinks_and_mtimes() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("run.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(tree.join("run.sh"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::write(tree.join("sub/b"), b"bee").unwrap();
    std::os::unix::fs::symlink("run.sh", tree.join("link")).unwrap();
    set_mtime(&tree.join("run.sh"), 1_000_000_000);
    fs::set_permissions(tree.join("sub"), fs::Permissions::from_mode(0o700)).unwrap();
    set_mtime(&tree.join("sub"), 1_200_000_000);

    let agent = Agent::start();
    let (tar_bytes, reply) = agent
        .fs(&FsRequest::CopyOut { path: p(&tree) })
        .fs_result()
        .unwrap();
    assert_eq!(reply.bytes, tar_bytes.len() as u64);
    let mut names = Vec::new();
    for entry in tar::Archive::new(tar_bytes.as_slice()).entries().unwrap() {
        let entry = entry.unwrap();
        names.push(
            entry
                .path()
                .unwrap()
                .display()
                .to_string()
                .trim_end_matches('/')
                .to_string(),
        );
    }
    names.sort();
    assert_eq!(
        names,
        ["tree", "tree/link", "tree/run.sh", "tree/sub", "tree/sub/b"]
    );

    let dest = tempfile::tempdir().unwrap();
    let s = agent.fs(&FsRequest::CopyIn {
        dest: p(dest.path()),
    });
    let (_, reply) = upload(&s, &tar_bytes).unwrap();
    assert_eq!(reply.bytes, tar_bytes.len() as u64);
    let copy = dest.path().join("tree");
    assert_eq!(fs::read(copy.join("run.sh")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(mode_of(&copy.join("run.sh")), 0o751);
    assert_eq!(
        fs::metadata(copy.join("run.sh")).unwrap().mtime(),
        1_000_000_000
    );
    assert_eq!(
        fs::read_link(copy.join("link")).unwrap(),
        Path::new("run.sh")
    );
    assert_eq!(mode_of(&copy.join("sub")), 0o700);
    assert_eq!(
        fs::metadata(copy.join("sub")).unwrap().mtime(),
        1_200_000_000
    );
    assert_eq!(fs::read(copy.join("sub/b")).unwrap(), b"bee");

    // A single file comes out under its own name.
    let (one, _) = agent
        .fs(&FsRequest::CopyOut {
            path: p(&tree.join("sub/b")),
        })
        .fs_result()
        .unwrap();
    let mut archive = tar::Archive::new(one.as_slice());
    let entry = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.path().unwrap(), Path::new("b"));
}

/// A tar entry with a name written as is (the tar crate's own setters
/// refuse `..`).
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish_tar(mut out: Vec<u8>) -> Vec<u8> {
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn copy_in_refuses_entries_that_escape() {
    let base = tempfile::tempdir().unwrap();
    let dest = base.path().join("dest");
    let outside = base.path().join("outside");
    fs::create_dir_all(&dest).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(base.path().join("secret"), b"secret").unwrap();
    use tar::EntryType::{Link, Regular, Symlink};

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut t = Vec::new();
    raw_entry(&mut t, "../outside/evil", Regular, "", b"x");
    cases.push(("escapes the destination", finish_tar(t)));
    let mut t = Vec::new();
    raw_entry(&mut t, &format!("{}/evil", p(&outside)), Regular, "", b"x");
    cases.push(("escapes the destination", finish_tar(t)));
    let mut t = Vec::new();
    raw_entry(&mut t, "hop", Symlink, &p(&outside), b"");
    raw_entry(&mut t, "hop/evil", Regular, "", b"x");
    cases.push(("outside of destination", finish_tar(t)));
    let mut t = Vec::new();
    raw_entry(&mut t, "up", Symlink, "..", b"");
    raw_entry(&mut t, "up/outside/evil", Regular, "", b"x");
    cases.push(("outside of destination", finish_tar(t)));
    let mut t = Vec::new();
    raw_entry(&mut t, "hard", Link, "../secret", b"");
    cases.push(("escapes the destination", finish_tar(t)));

    let agent = Agent::start();
    for (want, tar_bytes) in cases {
        let s = agent.fs(&FsRequest::CopyIn { dest: p(&dest) });
        let e = upload(&s, &tar_bytes).unwrap_err();
        assert!(e.starts_with(&format!("copy_in {}: ", p(&dest))), "{e}");
        assert!(e.contains(want), "want {want:?}: {e}");
        assert!(!outside.join("evil").exists(), "wrote outside: {e}");
    }
    assert_eq!(fs::read(base.path().join("secret")).unwrap(), b"secret");
    // Garbage is an error too, and a copy into a file is refused.
    let s = agent.fs(&FsRequest::CopyIn { dest: p(&dest) });
    assert!(upload(&s, &[0xAB; 700]).is_err());
    let s = agent.fs(&FsRequest::CopyIn {
        dest: p(&base.path().join("secret")),
    });
    assert!(upload(&s, &finish_tar(Vec::new()))
        .unwrap_err()
        .contains("not a directory"));
}

#[test]
fn paths_resolve_inside_a_rootfs() {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    fs::write(root.path().join("etc/name"), b"inside").unwrap();
    // An absolute symlink in the rootfs points into the rootfs.
    std::os::unix::fs::symlink("/etc", root.path().join("cfg")).unwrap();
    let options = AgentOptions {
        root: p(root.path()),
        ..common::options()
    };
    let agent = Agent::start_with(options);
    for path in ["/etc/name", "/cfg/name", "/../../etc/name"] {
        let (data, _) = agent
            .fs(&FsRequest::Read { path: path.into() })
            .fs_result()
            .unwrap();
        assert_eq!(data, b"inside", "{path}");
    }
    let (_, reply) = agent
        .fs(&FsRequest::List { path: "/".into() })
        .fs_result()
        .unwrap();
    let names: Vec<_> = reply.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["cfg", "etc"]);

    // Commands chroot into it (needs root and a static busybox).
    let busybox = Path::new("/usr/bin/busybox");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || !busybox.exists() {
        eprintln!(
            "paths_resolve_inside_a_rootfs: exec part needs root and busybox-static; skipped"
        );
        return;
    }
    fs::create_dir_all(root.path().join("bin")).unwrap();
    fs::copy(busybox, root.path().join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.path().join("bin/sh")).unwrap();
    let mut req = request(&["sh", "-c", "pwd; busybox cat /cfg/name; echo; busybox ls /"]);
    req.workdir = Some("/etc".into());
    let o = agent.exec(&req).finish();
    assert_eq!(o.out(), "/etc\ninside\nbin\ncfg\netc\n", "{}", o.err());
}
