//! `msb run --rootfs DIR` (a host directory becomes the guest's root) and
//! disk filesystems other than ext4 (xfs, vfat, btrfs), each detected from
//! its superblock in the guest. See `run_basic.rs` for prerequisites; the
//! mkfs tools come from scripts/setup.sh.

use std::ffi::OsStr;
use std::path::Path;

use msb_tests::msb_proc::{host_tool, Sandbox};

/// A minimal root: busybox as /bin/sh and friends, plus a marker file.
fn make_rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static (scripts/setup.sh)");
    for applet in ["sh", "cat", "ls", "echo"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    std::fs::write(root.join("marker"), "from the host rootfs\n").unwrap();
}

#[test]
fn rootfs_becomes_the_guest_root() {
    let sb = Sandbox::new("rootfs");
    let root = sb.mkdir("root");
    make_rootfs(&root);
    let out = sb
        .msb()
        .arg("--rootfs")
        .arg(&root)
        .sh("echo marker=$(cat /marker); echo written > /made-in-guest; echo ok=yes")
        .run();
    out.assert_code(0).assert_clean();
    assert_eq!(
        out.value("marker").as_deref(),
        Some("from the host rootfs"),
        "{}",
        out.describe()
    );
    assert_eq!(
        std::fs::read_to_string(root.join("made-in-guest")).unwrap(),
        "written\n"
    );
}

/// Makes a `size_mib` image with `mkfs` and returns its path.
fn image(sb: &Sandbox, name: &str, size_mib: u64, mkfs: &[&str]) -> std::path::PathBuf {
    let img = sb.path().join(name);
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(size_mib << 20).unwrap();
    let mut args: Vec<&OsStr> = mkfs[1..].iter().map(OsStr::new).collect();
    args.push(img.as_os_str());
    host_tool(mkfs[0], &args);
    img
}

fn check_detected(label: &str, mkfs: &[&str], size_mib: u64, fstype: &str) {
    let sb = Sandbox::new(label);
    let img = image(&sb, "disk.img", size_mib, mkfs);
    let out = sb
        .msb()
        .arg("--disk")
        .arg(format!("{}:/d", img.display()))
        .sh("grep ' /d ' /proc/mounts | sed 's/^/mountline=/'; echo hi > /d/f && sync && echo wrote=$(cat /d/f)")
        .run();
    out.assert_code(0).assert_clean();
    let line = out.value("mountline").unwrap_or_default();
    assert!(
        line.contains(&format!(" {fstype} ")),
        "{label}: mounted as {line:?}\n{}",
        out.describe()
    );
    assert_eq!(
        out.value("wrote").as_deref(),
        Some("hi"),
        "{}",
        out.describe()
    );
}

#[test]
fn xfs_disk_is_detected() {
    check_detected("xfs", &["mkfs.xfs", "-q", "-f"], 300, "xfs");
}

#[test]
fn vfat_disk_is_detected() {
    check_detected("vfat", &["mkfs.vfat"], 64, "vfat");
}

#[test]
fn btrfs_disk_is_detected() {
    check_detected("btrfs", &["mkfs.btrfs", "-q"], 128, "btrfs");
}
