//! The stat-virtualization record cache: reused only while the inode's
//! ctime is unchanged and settled, so host-side changes are always seen.

use std::time::{Duration, SystemTime};

use fuse_backend_rs::api::filesystem::FileSystem;

use super::inodes::ROOT_ID;
use super::overlay::settled;
use super::tests_policy::{c, ctx, fs_with, set_raw_record};
use crate::policy::stat_override::StatOverride;

fn record(uid: u32) -> Vec<u8> {
    StatOverride {
        uid,
        gid: 7,
        mode: libc::S_IFREG | 0o640,
        rdev: 0,
    }
    .encode()
    .to_vec()
}

fn ctime_of(st: &libc::stat64) -> (i64, i64) {
    (st.st_ctime, st.st_ctime_nsec)
}

#[test]
fn settled_means_older_than_any_timestamp_granularity() {
    let now = SystemTime::now();
    let secs = |t: SystemTime| {
        let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        (d.as_secs() as i64, i64::from(d.subsec_nanos()))
    };
    assert!(settled(secs(now - Duration::from_secs(3)), now));
    assert!(!settled(secs(now - Duration::from_millis(1500)), now));
    assert!(!settled(secs(now), now));
    assert!(!settled(secs(now + Duration::from_secs(60)), now));
    assert!(settled((-5, 0), now));
}

#[test]
fn a_cached_record_gives_way_to_every_host_change() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    std::fs::write(&path, b"x").unwrap();
    set_raw_record(&path, &record(1000));
    // Let the ctime settle so the record read may be kept.
    std::thread::sleep(Duration::from_millis(2100));
    let fs = fs_with(tmp.path(), |_| {});
    let ctx = ctx(0, 0);
    let e = fs.lookup(&ctx, ROOT_ID, &c("f")).unwrap();
    assert_eq!(e.attr.st_uid, 1000);
    let inode = fs.inodes.get(e.inode).unwrap();
    let (st, _) = fs.getattr(&ctx, e.inode, None).unwrap();
    assert_eq!(st.st_uid, 1000);
    assert!(
        inode.cached_record(ctime_of(&st)).is_some(),
        "a settled record is kept"
    );

    // Changed on the host right after: the ctime moved, so it is read again.
    set_raw_record(&path, &record(2000));
    let (st, _) = fs.getattr(&ctx, e.inode, None).unwrap();
    assert_eq!(st.st_uid, 2000);
    assert_eq!(
        inode.cached_record(ctime_of(&st)),
        None,
        "a record changed a moment ago is not kept"
    );
    set_raw_record(&path, &record(3000));
    assert_eq!(fs.getattr(&ctx, e.inode, None).unwrap().0.st_uid, 3000);

    // Removed on the host: host metadata again.
    let p = c(path.to_str().unwrap());
    // SAFETY: NUL-terminated strings.
    let rc = unsafe {
        libc::removexattr(
            p.as_ptr(),
            crate::policy::stat_override::XATTR_NAME.as_ptr(),
        )
    };
    assert_eq!(rc, 0);
    let (st, _) = fs.getattr(&ctx, e.inode, None).unwrap();
    assert_eq!(
        st.st_uid,
        std::fs::metadata(&path)
            .map(|m| { std::os::unix::fs::MetadataExt::uid(&m) })
            .unwrap()
    );
    // And a guest chmod through the daemon is seen at once as well.
    let mut attr = st;
    attr.st_mode = libc::S_IFREG | 0o600;
    let valid = fuse_backend_rs::abi::fuse_abi::SetattrValid::MODE;
    let (st, _) = fs.setattr(&ctx, e.inode, attr, None, valid).unwrap();
    assert_eq!(st.st_mode & 0o7777, 0o600);
    assert_eq!(
        fs.getattr(&ctx, e.inode, None).unwrap().0.st_mode & 0o7777,
        0o600
    );
}
