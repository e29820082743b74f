//! Disk image formats in real VMs: found on the host when `format=` is not
//! given, a raw disk that stays raw whatever its guest writes, images
//! naming other host files refused unless `backing=allow`. Needs what
//! `run_basic.rs` needs, plus e2fsprogs and qemu-utils (scripts/setup.sh).

use std::path::Path;
use std::time::Duration;

use msb_tests::msb_proc::{debugfs_write, make_ext4_image, qemu_img_convert, EXIT_USAGE};
use msb_tests::sandbox_env::SandboxEnv;

/// A 64 MiB raw ext4 image at `path` holding `/notes`.
fn ext4_with_notes(path: &Path, notes: &str) {
    make_ext4_image(path, 64);
    debugfs_write(path, "notes", notes.as_bytes());
}

/// A QCOW2 v3 header (64 KiB clusters, 64 MiB) naming `backing` as its
/// backing file, padded to 512 bytes: what a hostile guest writes into the
/// first sector of its raw disk (ext4 leaves the first 1 KiB unused).
fn qcow2_header_with_backing(backing: &str) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[8..16].copy_from_slice(&0x100u64.to_be_bytes());
    h[16..20].copy_from_slice(&(backing.len() as u32).to_be_bytes());
    h[20..24].copy_from_slice(&16u32.to_be_bytes());
    h[24..32].copy_from_slice(&(64u64 << 20).to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&104u32.to_be_bytes());
    h[0x100..0x100 + backing.len()].copy_from_slice(backing.as_bytes());
    h
}

/// `msb run --disk ./data.qcow2:/data -- cat /data/notes` (and the same
/// with a `.vmdk`, sparse as `qemu-img convert` makes it): no `format=`.
#[test]
fn qcow2_and_vmdk_disks_work_without_format() {
    let env = SandboxEnv::new("diskfmt");
    let raw = env.dir().join("base.raw");
    ext4_with_notes(&raw, "notes from the image\n");
    qemu_img_convert(&raw, "qcow2", &env.dir().join("data.qcow2"));
    qemu_img_convert(&raw, "vmdk", &env.dir().join("data.vmdk"));
    for image in ["./data.qcow2", "./data.vmdk"] {
        let spec = format!("{image}:/data");
        let r = env
            .msb(&["run", "--disk", &spec, "--", "cat", "/data/notes"])
            .expect(0);
        assert_eq!(r.stdout, "notes from the image\n", "{}", r.describe());
    }
    // A format= that contradicts the header: a usage error naming the
    // mount, nothing started.
    let r = env.msb(&[
        "run",
        "--disk",
        "./data.qcow2:/data:format=vmdk",
        "--",
        "true",
    ]);
    let r = r.expect(EXIT_USAGE);
    assert!(
        r.stderr
            .contains("mount \"./data.qcow2:/data:format=vmdk\": disk image ")
            && r.stderr
                .contains("format=vmdk given, but the image is qcow2"),
        "{}",
        r.describe()
    );
    env.assert_clean(Duration::from_secs(10));
}

/// A guest writes a QCOW2 header naming a host file into the first sector
/// of its raw disk. The next run still opens the disk as raw (the ext4 on
/// it mounts, the header is only bytes), and never the host file.
#[test]
fn a_raw_disk_stays_raw_after_its_guest_writes_a_qcow2_header() {
    let env = SandboxEnv::new("diskpin");
    std::fs::write(env.dir().join("secret.txt"), "host secret\n").unwrap();
    let disk = env.dir().join("disk.raw");
    ext4_with_notes(&disk, "still raw\n");
    debugfs_write(&disk, "hdr", &qcow2_header_with_backing("secret.txt"));
    let write_header = r#"
        dev=$(grep ' /d ' /proc/mounts | cut -d' ' -f1)
        dd if=/d/hdr of="$dev" bs=512 count=1 conv=notrunc 2>/dev/null && sync && echo wrote=ok
    "#;
    let r = env
        .msb(&[
            "run",
            "--disk",
            "./disk.raw:/d",
            "--",
            "sh",
            "-c",
            write_header,
        ])
        .expect(0);
    assert!(r.stdout.contains("wrote=ok"), "{}", r.describe());
    let head = std::fs::read(&disk).unwrap();
    assert_eq!(
        &head[..4],
        b"QFI\xfb",
        "the guest's write did not reach the image"
    );
    let r = env
        .msb(&["run", "--disk", "./disk.raw:/d", "--", "cat", "/d/notes"])
        .expect(0);
    assert_eq!(r.stdout, "still raw\n", "{}", r.describe());
    assert!(!r.stdout.contains("secret"), "{}", r.describe());
    // Asking for qcow2 now is refused: the image was recorded raw.
    let r = env
        .msb(&[
            "run",
            "--disk",
            "./disk.raw:/d:format=qcow2,backing=allow",
            "--",
            "true",
        ])
        .expect(EXIT_USAGE);
    assert!(
        r.stderr.contains("recorded this image as raw"),
        "{}",
        r.describe()
    );
    env.assert_clean(Duration::from_secs(10));
}

/// A qcow2 overlay with a backing file: refused by default (exit 2, the
/// mount named), read through with `backing=allow` when the backing file
/// is beside it.
#[test]
fn a_backing_file_needs_backing_allow() {
    let env = SandboxEnv::new("diskback");
    let raw = env.dir().join("base.raw");
    ext4_with_notes(&raw, "from the base\n");
    let base = env.dir().join("base.qcow2");
    qemu_img_convert(&raw, "qcow2", &base);
    let out = std::process::Command::new("qemu-img")
        .current_dir(env.dir())
        .args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "over.qcow2",
        ])
        .output()
        .expect("qemu-img (qemu-utils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = env
        .msb(&["run", "--disk", "./over.qcow2:/d", "--", "cat", "/d/notes"])
        .expect(EXIT_USAGE);
    assert!(
        r.stderr.contains("mount \"./over.qcow2:/d\"")
            && r.stderr.contains("backing file \"base.qcow2\"")
            && r.stderr.contains("backing=allow"),
        "{}",
        r.describe()
    );
    let r = env
        .msb(&[
            "run",
            "--disk",
            "./over.qcow2:/d:backing=allow",
            "--",
            "cat",
            "/d/notes",
        ])
        .expect(0);
    assert_eq!(r.stdout, "from the base\n", "{}", r.describe());
    env.assert_clean(Duration::from_secs(10));
}
