//! Hostile guests against the quota with what is not plain file data:
//! extended attributes (big values, many names), long symlink targets,
//! special nodes, fallocate's zero/insert/collapse modes and
//! copy_file_range within one file. Host usage (file bytes plus guest
//! xattr bytes, as the host holds them) never passes the budget by more
//! than one request. Each case runs on a fresh daemon with the sandbox on
//! and off (see `hostile_util`).

mod hostile_util;

use hostile_util::{
    all, copy_range, errno, fallocate, host_bytes, host_xattr_bytes, mknod, run_suite, setxattr,
    unlinked_open_bytes, Case,
};
use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::{FsDriver, FuseClient, ROOT_ID};

const MIB: u64 = 1 << 20;
/// Most bytes one request may add (an xattr value and its name).
const ONE_REQUEST: u64 = 64 * 1024 + 256;

/// What the host holds for the guest: file bytes, unlinked files the
/// server keeps open, guest xattrs. Never more than `limit` + one request.
fn assert_within(d: &Daemon, limit: u64) -> u64 {
    let held =
        host_bytes(d.shared_dir()) + unlinked_open_bytes(d) + host_xattr_bytes(d.shared_dir());
    assert!(
        held <= limit + ONE_REQUEST,
        "host holds {held} bytes under a {limit}-byte quota"
    );
    held
}

fn xattrs_are_counted(d: &Daemon, fs: &FsDriver) {
    // Many files, each with as much xattr data as the host takes.
    let value = vec![0x78u8; 3000];
    let mut refused = false;
    'files: for i in 0..2000 {
        let name = format!("f{i}");
        let e = match fs.create(ROOT_ID, name.as_bytes(), 0o644, libc::O_RDONLY) {
            Ok((e, o)) => {
                fs.release(e.nodeid, o.fh).unwrap();
                e
            }
            Err(e) if e.errno() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("create {name}: {e}"),
        };
        for k in 0..4 {
            match errno(setxattr(fs, e.nodeid, &format!("user.k{k}"), &value)) {
                0 => {}
                libc::ENOSPC if k > 0 => break,
                libc::ENOSPC => {
                    refused = true;
                    break 'files;
                }
                r => panic!("setxattr on {name}: errno {r}"),
            }
        }
    }
    assert!(refused, "xattrs never ran out of budget");
    let held = assert_within(d, MIB);
    assert!(held > MIB / 2, "only {held} bytes fit");
    // Removing gives back: a value fits again.
    let f0 = fs.lookup(ROOT_ID, b"f0").unwrap().nodeid;
    fs.call(
        fuse_backend_rs::abi::fuse_abi::Opcode::Removexattr,
        f0,
        b"user.k0\0",
        0,
    )
    .unwrap();
    setxattr(fs, f0, "user.again", &value[..2000]).unwrap();
    // Replacing a value with a bigger one is growth too.
    let big = vec![1u8; 60_000];
    let r = errno(setxattr(fs, f0, "user.again", &big));
    assert!(r == libc::ENOSPC || r == libc::E2BIG, "{r}");
    assert_within(d, MIB);
}

fn xattrs_of_unlinked_files_come_back(d: &Daemon, fs: &FsDriver) {
    let value = vec![1u8; 3000];
    for round in 0..3 {
        let mut made = Vec::new();
        for i in 0..400 {
            let name = format!("r{round}-{i}");
            let Ok((e, o)) = fs.create(ROOT_ID, name.as_bytes(), 0o644, libc::O_RDONLY) else {
                break;
            };
            fs.release(e.nodeid, o.fh).unwrap();
            if setxattr(fs, e.nodeid, "user.v", &value).is_err() {
                break;
            }
            made.push((name, e.nodeid));
        }
        assert!(made.len() > 100, "round {round}: only {} files", made.len());
        assert_within(d, MIB);
        for (name, node) in made {
            fs.unlink(ROOT_ID, name.as_bytes()).unwrap();
            fs.forget(node, 1).unwrap();
        }
    }
}

fn long_symlink_targets_are_counted(d: &Daemon, fs: &FsDriver) {
    let target = vec![b't'; 4095];
    let mut made = 0;
    let mut first = 0;
    for i in 0..2000 {
        match fs.symlink(ROOT_ID, format!("l{i}").as_bytes(), &target) {
            Ok(e) => {
                made += 1;
                if i == 0 {
                    first = e.nodeid;
                }
            }
            Err(e) => {
                assert_eq!(e.errno(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    assert!(
        (200..=256).contains(&made),
        "{made} 4 KiB symlinks in 1 MiB"
    );
    assert_within(d, MIB);
    // Unlinked and no longer held (forgotten): its bytes come back.
    fs.unlink(ROOT_ID, b"l0").unwrap();
    fs.forget(first, 1).unwrap();
    fs.symlink(ROOT_ID, b"again", &target).unwrap();
}

fn special_nodes_cost_a_name(d: &Daemon, fs: &FsDriver) {
    let kinds = [
        (libc::S_IFCHR | 0o666, (1 << 8) | 3),
        (libc::S_IFBLK | 0o660, 8 << 8),
        (libc::S_IFIFO | 0o644, 0),
        (libc::S_IFSOCK | 0o644, 0),
        (libc::S_IFREG | 0o644, 0),
    ];
    let mut made = 0;
    for i in 0..3000 {
        let (mode, rdev) = kinds[i % kinds.len()];
        match mknod(fs, ROOT_ID, format!("n{i}").as_bytes(), mode, rdev) {
            Ok(_) => made += 1,
            Err(e) => {
                assert_eq!(e.errno(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    assert_eq!(made, 1024, "names under a 1 MiB quota");
    assert_eq!(std::fs::read_dir(d.shared_dir()).unwrap().count(), 1024);
    assert_within(d, MIB);
}

fn fallocate_zero_insert_collapse(d: &Daemon, fs: &FsDriver) {
    let limit = 8 * MIB;
    let (e, o) = fs.create(ROOT_ID, b"f", 0o644, libc::O_RDWR).unwrap();
    let (n, fh) = (e.nodeid, o.fh);
    fallocate(fs, n, fh, 0, 0, 4 * MIB).unwrap();
    let zero = libc::FALLOC_FL_ZERO_RANGE as u32;
    let insert = libc::FALLOC_FL_INSERT_RANGE as u32;
    let collapse = libc::FALLOC_FL_COLLAPSE_RANGE as u32;
    let keep = libc::FALLOC_FL_KEEP_SIZE as u32;
    assert_eq!(errno(fallocate(fs, n, fh, zero, 0, 9 * MIB)), libc::ENOSPC);
    assert_eq!(fs.getattr(n).unwrap().size, 4 * MIB);
    assert_eq!(
        errno(fallocate(fs, n, fh, zero | keep, 4 * MIB, 8 * MIB)),
        libc::EOPNOTSUPP,
        "preallocation past the end no size shows"
    );
    fallocate(fs, n, fh, zero, 0, 6 * MIB).unwrap();
    assert_eq!(
        errno(fallocate(fs, n, fh, insert, 0, 4 * MIB)),
        libc::ENOSPC
    );
    assert_eq!(fs.getattr(n).unwrap().size, 6 * MIB);
    fallocate(fs, n, fh, collapse, 0, 2 * MIB).unwrap();
    assert_eq!(fs.getattr(n).unwrap().size, 4 * MIB);
    fallocate(fs, n, fh, insert, 0, 3 * MIB).unwrap();
    assert_eq!(fs.getattr(n).unwrap().size, 7 * MIB);
    assert_within(d, limit);
    // What collapse gave back and insert took is counted: 1 MiB is left.
    let (g, go) = fs.create(ROOT_ID, b"g", 0o644, libc::O_RDWR).unwrap();
    assert_eq!(
        errno(fallocate(fs, g.nodeid, go.fh, 0, 0, 2 * MIB)),
        libc::ENOSPC
    );
    fallocate(fs, g.nodeid, go.fh, 0, 0, MIB - 4096).unwrap();
    assert_within(d, limit);
}

fn copy_file_range_within_one_file(d: &Daemon, fs: &FsDriver) {
    let limit = 8 * MIB;
    let (e, o) = fs.create(ROOT_ID, b"f", 0o644, libc::O_RDWR).unwrap();
    let (n, fh) = (e.nodeid, o.fh);
    let fh2 = fs.open(n, libc::O_RDWR).unwrap().fh;
    let chunk = vec![3u8; 64 << 10];
    for i in 0..48 {
        fs.write(n, fh, i * (64 << 10), &chunk).unwrap();
    }
    // 3 MiB copied after itself: 6 MiB. Again: past the budget.
    copy_range(fs, (n, fh, 0), (n, fh2, 3 * MIB), 3 * MIB).unwrap();
    let r = errno(copy_range(fs, (n, fh2, 0), (n, fh, 6 * MIB), 3 * MIB));
    assert_eq!(r, libc::ENOSPC);
    assert_eq!(fs.getattr(n).unwrap().size, 6 * MIB);
    // Far past the end: a huge sparse hole is growth too.
    let r = errno(copy_range(fs, (n, fh, 0), (n, fh2, 1 << 40), 4096));
    assert_eq!(r, libc::ENOSPC);
    assert_within(d, limit);
}

const Q1X: &[&str] = &["--quota-mib", "1", "--xattr"];
const Q1: &[&str] = &["--quota-mib", "1"];
const Q8: &[&str] = &["--quota-mib", "8"];

/// Metadata and odd growth under a quota.
const META: [Case; 6] = [
    Case::new("xattrs under a quota are counted", Q1X, xattrs_are_counted),
    Case::new(
        "xattrs of unlinked files come back",
        Q1X,
        xattrs_of_unlinked_files_come_back,
    ),
    Case::new(
        "4 KiB symlink targets are counted",
        Q1,
        long_symlink_targets_are_counted,
    ),
    Case::new(
        "MKNOD of every type costs a name",
        Q1,
        special_nodes_cost_a_name,
    ),
    Case::new(
        "FALLOCATE zero-range, insert-range, collapse-range",
        Q8,
        fallocate_zero_insert_collapse,
    ),
    Case::new(
        "COPY_FILE_RANGE within one file",
        Q8,
        copy_file_range_within_one_file,
    ),
];

#[test]
fn quota_metadata_each_on_a_fresh_daemon_with_the_sandbox_on_and_off() {
    run_suite(file!(), &all(&[&META[..]]));
}
