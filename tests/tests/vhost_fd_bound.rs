//! fd exhaustion (CVE-2020-10717 class): the driver looks up many more
//! files than the daemon's fd bound without forgetting any; the daemon keeps
//! serving and its open fd count stays under the bound plus a small constant.

use std::fs;

use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::{FuseClient, ROOT_ID};

const FILES: usize = 1000;
const BOUND: usize = 64;
/// fds the daemon may hold beyond the inode bound and its idle baseline:
/// a few open file handles, a listing, transient fds during a request.
const SLACK: usize = 16;

fn content(i: usize) -> Vec<u8> {
    format!("file number {i}\n").into_bytes()
}

fn run(extra_args: &[&str]) {
    let d = Daemon::start(extra_args).unwrap_or_else(|e| panic!("cannot start virtiofsd-msb: {e}"));
    let share = d.shared_dir();
    fs::create_dir(share.join("many")).unwrap();
    for i in 0..FILES {
        fs::write(share.join(format!("many/f{i:04}")), content(i)).unwrap();
    }
    let fs = d.connect(1).unwrap_or_else(|e| panic!("{e}"));
    let dir = fs.lookup(ROOT_ID, b"many").expect("lookup many");
    let baseline = d.open_fds().expect("count daemon fds");
    let limit = baseline + BOUND + SLACK;
    let mut peak = baseline;
    let mut nodeids = Vec::with_capacity(FILES);

    for i in 0..FILES {
        let name = format!("f{i:04}");
        let e = fs
            .lookup(dir.nodeid, name.as_bytes())
            .unwrap_or_else(|e| panic!("lookup #{i} ({name}) failed: {e}\n{}", d.log_tail(3000)));
        assert_eq!(e.attr.size as usize, content(i).len(), "{name} size");
        nodeids.push(e.nodeid);
        if i.is_multiple_of(25) {
            peak = peak.max(d.open_fds().unwrap());
        }
    }
    peak = peak.max(d.open_fds().unwrap());
    let mut distinct = nodeids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), FILES, "every file got its own nodeid");

    // Still serving, including inodes whose fds were surely reclaimed: the
    // first ones looked up, used through their old nodeids.
    for &i in &[0usize, 1, 500, FILES - 1] {
        let id = nodeids[i];
        assert_eq!(
            fs.getattr(id).expect("getattr of an old nodeid").size as usize,
            content(i).len()
        );
        let fh = fs
            .open(id, libc::O_RDONLY)
            .expect("open of an old nodeid")
            .fh;
        assert_eq!(
            fs.read(id, fh, 0, 4096).expect("read"),
            content(i),
            "data of f{i:04}"
        );
        fs.release(id, fh).unwrap();
        peak = peak.max(d.open_fds().unwrap());
    }
    // A listing that looks up everything again (READDIRPLUS).
    let listed = fs
        .list_plus(dir.nodeid)
        .expect("readdirplus of 1000 entries");
    peak = peak.max(d.open_fds().unwrap());
    assert_eq!(
        listed
            .iter()
            .filter(|e| e.dirent.name.starts_with(b"f"))
            .count(),
        FILES,
        "readdirplus lists every file"
    );
    // New lookups and a create still work.
    let again = fs
        .lookup(dir.nodeid, b"f0000")
        .expect("lookup after the bound was hit");
    assert_eq!(again.nodeid, nodeids[0], "same inode, same nodeid");
    let (c, o) = fs
        .create(dir.nodeid, b"new", libc::S_IFREG | 0o644, libc::O_RDWR)
        .expect("create after the bound was hit");
    fs.write(c.nodeid, o.fh, 0, b"still serving").unwrap();
    fs.release(c.nodeid, o.fh).unwrap();
    assert_eq!(fs::read(share.join("many/new")).unwrap(), b"still serving");
    peak = peak.max(d.open_fds().unwrap());

    eprintln!("fds: baseline {baseline}, peak {peak}, limit {limit} (bound {BOUND})");
    assert!(
        peak <= limit,
        "daemon held {peak} fds; baseline {baseline} + bound {BOUND} + slack {SLACK} = {limit}"
    );
    let mut d = d;
    assert!(d.is_alive(), "daemon died");
}

#[test]
fn lookups_beyond_the_inode_fd_bound() {
    run(&["--max-inode-fds", "64"]);
}

#[test]
fn lookups_beyond_the_bound_under_a_low_rlimit() {
    // With RLIMIT_NOFILE far below the number of files, an unbounded inode
    // table would fail with EMFILE long before the end.
    run(&["--max-inode-fds", "64", "--rlimit-nofile", "256"]);
}
