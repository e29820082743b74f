//! The daemon policies seen from a real guest (Debian cloud kernel under
//! QEMU TCG, its own virtiofs client): chown/chmod/mknod in one VM survive
//! into a second VM on a new daemon while the host inodes keep the daemon's
//! owner and owner-only modes; device nodes are host regular files; the
//! quota shows in the guest's statfs and stops its writes with ENOSPC.
//! Needs `scripts/setup.sh` (qemu, kernel) and a built daemon.

mod common;
mod policy_util;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use msb_tests::daemon_proc::{Daemon, DaemonOptions};
use msb_tests::qemu::GuestConfig;
use policy_util::{record, Record};

/// The directory both VMs share (a `prepare` hook is a plain `fn`).
static VOLUME: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Makes the daemon's `share/` a symlink to [`VOLUME`]: the daemon
/// canonicalizes `--shared-dir` and serves the volume itself.
fn share_the_volume(root: &Path) -> io::Result<()> {
    let volume = VOLUME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| io::Error::other("no volume set"))?;
    fs::remove_dir(root.join("share"))?;
    std::os::unix::fs::symlink(volume, root.join("share"))
}

fn daemon_on_volume(args: &[&str]) -> Daemon {
    Daemon::start_with(DaemonOptions {
        args: args.iter().map(|a| a.to_string()).collect(),
        prepare: Some(share_the_volume),
    })
    .unwrap_or_else(|e| panic!("start virtiofsd-msb: {e}"))
}

const FIRST_VM: &str = r#". /lib/msb-test.sh
run "write f" sh -c 'echo data > /mnt/f'
run "mkdir d" mkdir /mnt/d
run "chown f" chown 1234:5678 /mnt/f
run "chmod f" chmod 751 /mnt/f
run "chown d" chown 4321:8765 /mnt/d
run "chmod d" chmod 710 /mnt/d
run "mknod c 1 3" mknod /mnt/null c 1 3
run "mkfifo" mkfifo /mnt/fifo
expect "f as chowned" "$(stat -c '%u:%g %a' /mnt/f)" "1234:5678 751"
expect "null is a char device" "$(stat -c '%F %t:%T' /mnt/null)" "character special file 1:3"
result statfs "$(stat -f -c '%b %a %S' /mnt)"
run "write 3 MiB" dd if=/dev/zero of=/mnt/big bs=65536 count=48
must_fail "write 2 MiB more past the 4 MiB quota" dd if=/dev/zero of=/mnt/big2 bs=65536 count=32
result big2 "$(stat -c %s /mnt/big2)"
run "free it" rm /mnt/big2
msb_finish
"#;

const SECOND_VM: &str = r#". /lib/msb-test.sh
expect "f after the restart" "$(stat -c '%u:%g %a' /mnt/f)" "1234:5678 751"
expect "d after the restart" "$(stat -c '%u:%g %a' /mnt/d)" "4321:8765 710"
expect "null after the restart" "$(stat -c '%F %t:%T' /mnt/null)" "character special file 1:3"
expect "fifo after the restart" "$(stat -c %F /mnt/fifo)" "fifo"
expect "contents" "$(cat /mnt/f)" "data"
msb_finish
"#;

#[test]
fn guest_chown_chmod_mknod_survive_a_vm_restart_and_quota_holds_in_the_vm() {
    let scratch = common::Scratch::new("msb-policy-guest-");
    let volume = scratch.mkdir("volume");
    *VOLUME.lock().unwrap_or_else(|e| e.into_inner()) = Some(volume.clone());

    let first = GuestConfig::new(FIRST_VM)
        .daemon(daemon_on_volume(&["--quota-mib", "4"]))
        .timeout(Duration::from_secs(90))
        .run()
        .expect("guest harness");
    first.assert_passed();
    let report = first.report();
    // statfs in the guest: 4 MiB of 4 KiB blocks.
    let statfs: Vec<u64> = first
        .result("statfs")
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        statfs[0] * statfs[2],
        4 << 20,
        "guest statfs size\n{report}"
    );
    assert!(statfs[1] * statfs[2] <= 4 << 20, "{report}");
    let big2: u64 = first.result("big2").parse().unwrap_or(u64::MAX);
    assert!(
        big2 <= (1 << 20),
        "big2 grew to {big2} past the quota\n{report}"
    );
    drop(first);

    // The host inodes: the daemon's owner, owner-only, records hold the rest.
    // SAFETY: no preconditions.
    let uid = unsafe { libc::geteuid() };
    let meta = |p: &str| fs::symlink_metadata(volume.join(p)).unwrap();
    assert_eq!((meta("f").uid(), meta("f").mode() & 0o7777), (uid, 0o600));
    assert_eq!((meta("d").uid(), meta("d").mode() & 0o7777), (uid, 0o700));
    assert!(meta("null").file_type().is_file(), "host device node");
    assert!(meta("fifo").file_type().is_file(), "host fifo");
    assert_eq!(
        record(&volume.join("f")),
        Some(Record {
            uid: 1234,
            gid: 5678,
            mode: libc::S_IFREG | 0o751,
            rdev: 0
        })
    );
    let host_before = (
        meta("f").uid(),
        meta("f").gid(),
        meta("f").mode(),
        meta("f").ino(),
    );

    let second = GuestConfig::new(SECOND_VM)
        .daemon(daemon_on_volume(&[]))
        .timeout(Duration::from_secs(90))
        .run()
        .expect("guest harness");
    second.assert_passed();
    drop(second);
    assert_eq!(
        (
            meta("f").uid(),
            meta("f").gid(),
            meta("f").mode(),
            meta("f").ino()
        ),
        host_before,
        "the second VM changed the host inode"
    );
}
