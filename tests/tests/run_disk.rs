//! `msb run --disk HOST:GUEST[:format=…,ro]`: ext4 disk images attached as
//! virtio-blk, fstype detected from the superblock in the guest; the host
//! reads the result back with debugfs. See `run_basic.rs` for
//! prerequisites; also needs e2fsprogs and qemu-utils (scripts/setup.sh).

use msb_tests::msb_proc::{debugfs_cat, host_tool, make_ext4_image, qemu_img_convert, Sandbox};

/// Guest script: report the mount, write /d/file, sync.
const WRITE_SCRIPT: &str = r#"
    grep ' /d ' /proc/mounts | sed 's/^/mountline=/'
    echo "written in the guest" > /d/file && sync && echo wrote=ok
"#;

/// A raw ext4 image, no fstype given: mounted as ext4, the guest's write is
/// on the image.
#[test]
fn ext4_raw_disk_autodetected_written_and_read_back() {
    let sb = Sandbox::new("diskraw");
    let img = sb.path().join("disk.raw");
    make_ext4_image(&img, 64);
    let out = sb
        .msb()
        .arg("--disk")
        .arg(format!("{}:/d", img.display()))
        .sh(WRITE_SCRIPT)
        .run();
    out.assert_code(0).assert_clean();
    let mountline = out.value("mountline").unwrap_or_default();
    assert!(
        mountline.contains(" ext4 ") && mountline.contains("rw"),
        "the disk should be mounted rw as ext4 (detected), got {mountline:?}\n{}",
        out.describe()
    );
    assert_eq!(
        out.value("wrote").as_deref(),
        Some("ok"),
        "{}",
        out.describe()
    );
    assert_eq!(debugfs_cat(&img, "/file"), "written in the guest\n");
    assert_clean_ext4(&img);
}

/// The guest unmounted the filesystem before powering off: no journal
/// left to replay (else a later `ro` attach fails and host tools see stale
/// metadata).
#[track_caller]
fn assert_clean_ext4(img: &std::path::Path) {
    let header = host_tool("dumpe2fs", &[std::ffi::OsStr::new("-h"), img.as_os_str()]);
    let features = header
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap_or_default();
    assert!(
        !features.contains("needs_recovery"),
        "the guest left the ext4 on {} needing journal recovery (not unmounted):\n{features}",
        img.display()
    );
}

/// The same through a qcow2 image (converted from raw, back to raw for
/// debugfs).
#[test]
fn ext4_qcow2_disk_autodetected_written_and_read_back() {
    let sb = Sandbox::new("diskqcow2");
    let raw = sb.path().join("base.raw");
    make_ext4_image(&raw, 64);
    let qcow = sb.path().join("disk.qcow2");
    qemu_img_convert(&raw, "qcow2", &qcow);
    let out = sb
        .msb()
        .arg("--disk")
        .arg(format!("{}:/d:format=qcow2", qcow.display()))
        .sh(WRITE_SCRIPT)
        .run();
    out.assert_code(0).assert_clean();
    let mountline = out.value("mountline").unwrap_or_default();
    assert!(
        mountline.contains(" ext4 "),
        "the qcow2 disk should be mounted as ext4 (detected), got {mountline:?}\n{}",
        out.describe()
    );
    assert_eq!(
        out.value("wrote").as_deref(),
        Some("ok"),
        "{}",
        out.describe()
    );
    let back = sb.path().join("back.raw");
    qemu_img_convert(&qcow, "raw", &back);
    assert_eq!(debugfs_cat(&back, "/file"), "written in the guest\n");
}

/// A disk with `ro`: readable, every write fails with EROFS, the image is
/// unchanged.
#[test]
fn ro_disk_is_read_only() {
    let sb = Sandbox::new("diskro");
    let img = sb.path().join("disk.raw");
    make_ext4_image(&img, 64);
    // Put a file on it first, through a rw run.
    sb.msb()
        .arg("--disk")
        .arg(format!("{}:/d", img.display()))
        .sh("echo original > /d/keep && sync")
        .run()
        .assert_code(0)
        .assert_clean();
    let script = r#"
        echo "keep=$(cat /d/keep)"
        grep ' /d ' /proc/mounts | sed 's/^/mountline=/'
        err=$( (echo x > /d/new) 2>&1 ); echo "write=$?:$err"
        err=$( (echo changed > /d/keep) 2>&1 ); echo "overwrite=$?:$err"
        true
    "#;
    let out = sb
        .msb()
        .arg("--disk")
        .arg(format!("{}:/d:ro", img.display()))
        .sh(script)
        .run();
    out.assert_code(0).assert_clean();
    assert_eq!(
        out.value("keep").as_deref(),
        Some("original"),
        "{}",
        out.describe()
    );
    assert!(
        out.value("mountline").unwrap_or_default().contains(" ro"),
        "{}",
        out.describe()
    );
    for key in ["write", "overwrite"] {
        let v = out.value(key).unwrap_or_default();
        assert!(
            !v.starts_with("0:") && v.contains("Read-only file system"),
            "{key}: expected EROFS, got {v:?}\n{}",
            out.describe()
        );
    }
    assert_eq!(debugfs_cat(&img, "/keep"), "original\n");
}

/// A `ro` disk stays read-only when the guest remounts it rw: the device
/// itself must be attached read-only, not just mounted ro.
#[test]
fn ro_disk_survives_guest_remount_rw() {
    let sb = Sandbox::new("diskroremount");
    let img = sb.path().join("disk.raw");
    make_ext4_image(&img, 64);
    let script = r#"
        err=$(mount -o remount,rw /d 2>&1); echo "remount=$?:$err"
        err=$( (echo x > /d/new && sync) 2>&1 ); echo "write=$?:$err"
        echo "ro_flag=$(cat /sys/block/$(basename $(grep ' /d ' /proc/mounts | cut -d' ' -f1))/ro)"
        true
    "#;
    let out = sb
        .msb()
        .arg("--disk")
        .arg(format!("{}:/d:ro", img.display()))
        .sh(script)
        .run();
    out.assert_code(0).assert_clean();
    let write = out.value("write").unwrap_or_default();
    assert!(
        !write.starts_with("0:"),
        "after `mount -o remount,rw` the guest wrote to a ro disk ({write:?})\n{}",
        out.describe()
    );
    assert_eq!(
        out.value("ro_flag").as_deref(),
        Some("1"),
        "the virtio-blk device should be read-only\n{}",
        out.describe()
    );
    let ls = host_tool(
        "debugfs",
        &[
            std::ffi::OsStr::new("-R"),
            std::ffi::OsStr::new("ls -l /"),
            img.as_os_str(),
        ],
    );
    assert!(
        !ls.contains(" new"),
        "the image changed:\n{ls}\n{}",
        out.describe()
    );
}
