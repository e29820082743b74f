//! A vhost-user round trip without a VM: the test frontend drives the real
//! `virtiofsd-msb` binary through INIT, LOOKUP, CREATE, WRITE, READ,
//! READDIRPLUS, UNLINK and friends, checking replies and the host side.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::{FuseClient, ROOT_ID};

const S_IFMT: u32 = libc::S_IFMT;

fn start() -> Daemon {
    Daemon::start(&[]).unwrap_or_else(|e| panic!("cannot start virtiofsd-msb: {e}"))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn init_lookup_create_write_read_readdirplus_unlink() {
    let d = start();
    let share = d.shared_dir().to_path_buf();
    fs::write(share.join("hello.txt"), b"hello from the host\n").unwrap();
    fs::create_dir(share.join("dir")).unwrap();
    let fs = d.connect(1).unwrap_or_else(|e| panic!("{e}"));

    // INIT was sent by connect(); a second INIT must not break anything, and
    // its answer shows what the daemon negotiated.
    let init = fs.init().expect("second FUSE_INIT");
    assert_eq!(init.major, 7, "FUSE major version");
    assert!(
        init.minor >= 27,
        "FUSE minor version {} too old",
        init.minor
    );
    let max_write = init.max_write.max(4096) as usize;

    // LOOKUP of a host-created file.
    let host_md = fs::metadata(share.join("hello.txt")).unwrap();
    let hello = fs.lookup(ROOT_ID, b"hello.txt").expect("lookup hello.txt");
    assert!(
        hello.nodeid != 0 && hello.nodeid != ROOT_ID,
        "nodeid {}",
        hello.nodeid
    );
    assert_eq!(hello.attr.mode & S_IFMT, libc::S_IFREG, "hello.txt type");
    assert_eq!(hello.attr.size, host_md.len());
    assert_eq!(hello.attr.mtime as i64, host_md.mtime(), "hello.txt mtime");
    let dir = fs.lookup(ROOT_ID, b"dir").expect("lookup dir");
    assert_eq!(dir.attr.mode & S_IFMT, libc::S_IFDIR, "dir type");
    assert_eq!(
        fs.lookup(ROOT_ID, b"missing").unwrap_err().errno(),
        Some(libc::ENOENT),
        "lookup of a missing name"
    );
    assert_eq!(
        fs.getattr(ROOT_ID).expect("getattr root").mode & S_IFMT,
        libc::S_IFDIR
    );

    // READ of the host file through OPEN.
    let fh = fs
        .open(hello.nodeid, libc::O_RDONLY)
        .expect("open hello.txt")
        .fh;
    assert_eq!(
        fs.read(hello.nodeid, fh, 0, 4096).unwrap(),
        b"hello from the host\n"
    );
    assert_eq!(fs.read(hello.nodeid, fh, 6, 4).unwrap(), b"from");
    fs.release(hello.nodeid, fh).expect("release hello.txt");

    // CREATE, WRITE (in max_write chunks), READ back.
    let (created, open) = fs
        .create(ROOT_ID, b"new.bin", libc::S_IFREG | 0o640, libc::O_RDWR)
        .expect("create new.bin");
    assert!(created.nodeid != 0);
    assert_eq!(
        created.attr.mode,
        libc::S_IFREG | 0o640,
        "guest-visible mode"
    );
    let host_new = share.join("new.bin");
    assert!(host_new.is_file(), "CREATE made no host file");
    let data = pattern(300_000, 7);
    let mut off = 0;
    while off < data.len() {
        let end = (off + max_write.min(128 * 1024)).min(data.len());
        let n = fs
            .write(created.nodeid, open.fh, off as u64, &data[off..end])
            .expect("write");
        assert_eq!(n as usize, end - off, "short write at {off}");
        off = end;
    }
    assert_eq!(
        fs::read(&host_new).unwrap(),
        data,
        "host sees the written data"
    );
    let mut back = Vec::new();
    while back.len() < data.len() {
        let chunk = fs
            .read(created.nodeid, open.fh, back.len() as u64, 64 * 1024)
            .expect("read back");
        assert!(!chunk.is_empty(), "read returned EOF at {}", back.len());
        back.extend(chunk);
    }
    assert_eq!(back, data, "read back what was written");
    assert!(
        fs.read(created.nodeid, open.fh, data.len() as u64, 4096)
            .unwrap()
            .is_empty(),
        "read at EOF"
    );
    assert_eq!(fs.getattr(created.nodeid).unwrap().size, data.len() as u64);

    // Host-side changes are visible.
    fs::write(share.join("hello.txt"), b"changed").unwrap();
    assert_eq!(
        fs.getattr(hello.nodeid).unwrap().size,
        7,
        "getattr after host write"
    );

    // READDIRPLUS sees the new file with the right attributes.
    let listing = fs.list_plus(ROOT_ID).expect("readdirplus of root");
    let find = |name: &[u8]| listing.iter().find(|e| e.dirent.name == name);
    let entry = find(b"new.bin").expect("readdirplus lists new.bin");
    assert_eq!(entry.entry.nodeid, created.nodeid, "same nodeid as CREATE");
    assert_eq!(entry.entry.attr.size, data.len() as u64);
    assert_eq!(entry.entry.attr.mode, libc::S_IFREG | 0o640);
    assert_eq!(entry.dirent.typ, libc::DT_REG as u32);
    let dir_entry = find(b"dir").expect("readdirplus lists dir");
    assert_eq!(dir_entry.entry.attr.mode & S_IFMT, libc::S_IFDIR);
    assert!(find(b"hello.txt").is_some(), "readdirplus lists hello.txt");
    let mut forgets: Vec<(u64, u64)> = listing
        .iter()
        .filter(|e| e.entry.nodeid != 0 && e.dirent.name != b"." && e.dirent.name != b"..")
        .map(|e| (e.entry.nodeid, 1))
        .collect();

    // Plain READDIR agrees on the names.
    let mut names: Vec<Vec<u8>> = fs
        .list(ROOT_ID)
        .expect("readdir of root")
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n != b"." && n != b"..")
        .collect();
    names.sort();
    assert_eq!(
        names,
        [b"dir".to_vec(), b"hello.txt".to_vec(), b"new.bin".to_vec()]
    );

    // UNLINK removes the host file.
    fs.release(created.nodeid, open.fh)
        .expect("release new.bin");
    fs.unlink(ROOT_ID, b"new.bin").expect("unlink new.bin");
    assert!(!host_new.exists(), "host file still there after UNLINK");
    assert_eq!(
        fs.lookup(ROOT_ID, b"new.bin").unwrap_err().errno(),
        Some(libc::ENOENT)
    );

    // MKDIR, SYMLINK, READLINK, RENAME, RMDIR.
    let sub = fs.mkdir(dir.nodeid, b"sub", 0o750).expect("mkdir");
    assert_eq!(sub.attr.mode & S_IFMT, libc::S_IFDIR);
    assert!(share.join("dir/sub").is_dir());
    let link = fs
        .symlink(dir.nodeid, b"link", b"sub/target")
        .expect("symlink");
    assert_eq!(link.attr.mode & S_IFMT, libc::S_IFLNK);
    assert_eq!(fs.readlink(link.nodeid).unwrap(), b"sub/target");
    assert_eq!(
        fs::read_link(share.join("dir/link"))
            .unwrap()
            .as_os_str()
            .as_encoded_bytes(),
        b"sub/target"
    );
    fs.rename(dir.nodeid, b"link", ROOT_ID, b"moved")
        .expect("rename");
    assert!(fs::symlink_metadata(share.join("moved"))
        .unwrap()
        .file_type()
        .is_symlink());
    fs.unlink(ROOT_ID, b"moved").expect("unlink symlink");
    fs.rmdir(dir.nodeid, b"sub").expect("rmdir");
    assert!(!share.join("dir/sub").exists());

    // STATFS answers.
    assert!(fs.statfs(ROOT_ID).expect("statfs").bsize > 0);

    // FORGET everything looked up; the daemon keeps serving.
    forgets.extend([
        (hello.nodeid, 1),
        (dir.nodeid, 1),
        (sub.nodeid, 1),
        (link.nodeid, 1),
    ]);
    fs.batch_forget(&forgets).expect("batch forget");
    fs.forget(created.nodeid, 1).expect("forget");
    assert_eq!(fs.lookup(ROOT_ID, b"hello.txt").unwrap().attr.size, 7);
}

#[test]
fn two_request_queues_serve_concurrently() {
    let d = start();
    let share = d.shared_dir().to_path_buf();
    let fs = d.connect(2).unwrap_or_else(|e| panic!("{e}"));
    const FILES: usize = 60;

    std::thread::scope(|s| {
        for q in 1..=2usize {
            let fs = &fs;
            let share = &share;
            s.spawn(move || {
                let c = fs.on_queue(q);
                for i in 0..FILES {
                    let name = format!("q{q}_{i}");
                    let data = pattern(5000 + i, q as u8);
                    let (e, o) = c
                        .create(
                            ROOT_ID,
                            name.as_bytes(),
                            libc::S_IFREG | 0o644,
                            libc::O_RDWR,
                        )
                        .unwrap_or_else(|err| panic!("queue {q}: create {name}: {err}"));
                    assert_eq!(
                        c.write(e.nodeid, o.fh, 0, &data).unwrap() as usize,
                        data.len()
                    );
                    assert_eq!(
                        c.read(e.nodeid, o.fh, 0, 8192).unwrap(),
                        data,
                        "queue {q} {name}"
                    );
                    c.release(e.nodeid, o.fh).unwrap();
                    c.forget(e.nodeid, 1).unwrap();
                    assert_eq!(fs::read(share.join(&name)).unwrap(), data);
                }
            });
        }
    });
    for q in 1..=2 {
        assert!(
            fs.completed(q) >= (FILES * 4) as u64,
            "queue {q} completed only {} requests",
            fs.completed(q)
        );
    }
    let names = fs.list(ROOT_ID).unwrap();
    assert_eq!(
        names.iter().filter(|e| e.name.starts_with(b"q")).count(),
        2 * FILES,
        "all files of both queues listed"
    );
}

#[test]
fn frontend_disconnect_ends_the_daemon_cleanly() {
    let mut d = start();
    let fs = d.connect(1).unwrap_or_else(|e| panic!("{e}"));
    fs.getattr(ROOT_ID).unwrap();
    drop(fs);
    let status = d
        .wait_exit(Duration::from_secs(20))
        .unwrap()
        .unwrap_or_else(|| panic!("daemon still running 20 s after the frontend disconnected"));
    assert!(
        status.success(),
        "daemon exit status after disconnect: {status}"
    );
    assert!(!d.socket().exists(), "socket file left behind after exit");
}

#[test]
fn large_reads_copied_by_several_threads_come_back_whole() {
    // 1 MiB reads are split over copy threads (`--copy-threads`); in the
    // sandbox (seccomp on) the helpers start after the filter went up.
    let len = 3 * 1024 * 1024 + 12_345;
    let data = pattern(len, 5);
    for flags in [
        &[][..],
        &["--copy-threads", "4"][..],
        &["--copy-threads", "1"][..],
        &[
            "--sandbox",
            "none",
            "--seccomp",
            "none",
            "--copy-threads",
            "3",
        ][..],
    ] {
        let mut d = Daemon::start(flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        fs::write(d.shared_dir().join("big"), &data).unwrap();
        let fs = d.connect(1).unwrap_or_else(|e| panic!("{e}"));
        let node = fs.lookup(ROOT_ID, b"big").expect("lookup big").nodeid;
        let fh = fs.open(node, libc::O_RDONLY).expect("open big").fh;
        let mib = 1 << 20;
        for offset in [0, 4096, 777, mib, len - 100, len, len + 5] {
            let got = fs
                .read(node, fh, offset as u64, mib as u32)
                .unwrap_or_else(|e| panic!("{flags:?}: read at {offset}: {e}"));
            let want = &data[offset.min(len)..(offset + mib).min(len)];
            assert!(
                got == want,
                "{flags:?}: read at {offset}: {} bytes, want {}",
                got.len(),
                want.len()
            );
        }
        assert!(d.is_alive(), "{flags:?}: daemon died: {}", d.log_tail(2000));
    }
}

#[test]
fn many_large_reads_in_flight_come_back_whole() {
    // With several 1 MiB reads in flight the queue thread hands whole reads
    // to idle copy helpers and goes on with the next: replies come back out
    // of order, from several threads, and each must still hold the file's
    // bytes at its own offset (unaligned ones and one past the end too).
    use fuse_backend_rs::abi::fuse_abi::{Opcode, ReadIn};
    use msb_tests::vhost_driver::window::wait_any;
    use msb_tests::vhost_driver::DriverConfig;
    use vm_memory::ByteValued;

    const MIB: usize = 1 << 20;
    const OUT_HEADER: usize = 16;
    const SLOTS: usize = 16;
    let len = 20 * MIB + 4321;
    let data = pattern(len, 9);
    for flags in [
        &[][..],
        &["--copy-threads", "3"][..],
        &["--copy-threads", "1"][..],
    ] {
        let mut d = Daemon::start(flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        fs::write(d.shared_dir().join("big"), &data).unwrap();
        let fs = d
            .connect_with(DriverConfig {
                request_queues: 1,
                queue_size: 64,
                arena_bytes: (SLOTS * (2 * MIB)) as u64,
                event_idx: true,
                ..DriverConfig::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let node = fs.lookup(ROOT_ID, b"big").expect("lookup big").nodeid;
        let fh = fs.open(node, libc::O_RDONLY).expect("open big").fh;
        let mut w = fs
            .window(1, SLOTS, 128, (OUT_HEADER + MIB) as u32)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut checked = 0;
        for round in 0..6usize {
            let mut offsets = [0usize; SLOTS];
            for (slot, at) in offsets.iter_mut().enumerate() {
                *at = (slot * MIB + round * 4096 + slot * 7 * round) % (len + MIB / 2);
                let body = ReadIn {
                    fh,
                    offset: *at as u64,
                    size: MIB as u32,
                    ..Default::default()
                };
                let (_, req) = fs.encode(Opcode::Read as u32, node, body.as_slice());
                w.submit(slot, &req, req.len() as u32, (OUT_HEADER + MIB) as u32)
                    .unwrap();
            }
            w.flush().unwrap();
            let mut back = 0;
            let mut reply = vec![0u8; OUT_HEADER + MIB];
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while back < SLOTS {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{flags:?}: round {round}: {back} of {SLOTS} replies in 60 s"
                );
                let mut done = Vec::new();
                w.harvest(|slot, used| done.push((slot, used as usize)))
                    .unwrap();
                for (slot, used) in done {
                    let at = offsets[slot];
                    let want = &data[at.min(len)..(at + MIB).min(len)];
                    assert_eq!(used, OUT_HEADER + want.len(), "{flags:?}: read at {at}");
                    w.read_reply(slot, &mut reply[..used]).unwrap();
                    let error = i32::from_ne_bytes(reply[4..8].try_into().unwrap());
                    assert_eq!(error, 0, "{flags:?}: read at {at}");
                    assert!(
                        reply[OUT_HEADER..used] == *want,
                        "{flags:?}: read at {at}: wrong bytes"
                    );
                    back += 1;
                    checked += 1;
                }
                if back < SLOTS && !w.arm().unwrap() {
                    wait_any(std::slice::from_ref(&w), Duration::from_secs(10)).unwrap();
                }
            }
        }
        assert_eq!(checked, 6 * SLOTS);
        // Still up while connected (a frontend leaving ends it).
        assert!(d.is_alive(), "{flags:?}: daemon died: {}", d.log_tail(2000));
        drop(w);
        drop(fs);
    }
}
