//! Crafted headers: what each format names, and the rules applied to it.

use std::path::{Path, PathBuf};

use super::*;

/// A QCOW2 header of `version` (2 or 3) with 64 KiB clusters, an optional
/// backing file name (at 0x200), the incompatible features given, and
/// header extensions `(type, data)`.
fn qcow2(version: u32, backing: Option<&str>, incompat: u64, exts: &[(u32, &[u8])]) -> Vec<u8> {
    let mut h = vec![0u8; 0x400];
    h[..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&version.to_be_bytes());
    h[20..24].copy_from_slice(&16u32.to_be_bytes());
    h[24..32].copy_from_slice(&(64u64 << 20).to_be_bytes());
    if let Some(b) = backing {
        h[8..16].copy_from_slice(&0x200u64.to_be_bytes());
        h[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
        h[0x200..0x200 + b.len()].copy_from_slice(b.as_bytes());
    }
    let mut at = 72;
    if version == 3 {
        h[72..80].copy_from_slice(&incompat.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        at = 104;
    }
    for (kind, data) in exts {
        h[at..at + 4].copy_from_slice(&kind.to_be_bytes());
        h[at + 4..at + 8].copy_from_slice(&(data.len() as u32).to_be_bytes());
        h[at + 8..at + 8 + data.len()].copy_from_slice(data);
        at += 8 + data.len().div_ceil(8) * 8;
    }
    h
}

/// A VMDK4 sparse header with `capacity` sectors and a descriptor `desc`
/// at sector 1.
fn vmdk_sparse(capacity: u64, desc: &str) -> Vec<u8> {
    let mut h = vec![0u8; 0x200 + 20 * 512];
    h[..4].copy_from_slice(b"KDMV");
    h[4..8].copy_from_slice(&1u32.to_le_bytes());
    h[12..20].copy_from_slice(&capacity.to_le_bytes());
    h[20..28].copy_from_slice(&128u64.to_le_bytes());
    h[28..36].copy_from_slice(&1u64.to_le_bytes());
    h[36..44].copy_from_slice(&20u64.to_le_bytes());
    h[0x200..0x200 + desc.len()].copy_from_slice(desc.as_bytes());
    h
}

const DESCRIPTOR: &str = "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
createType=\"monolithicFlat\"\n\n# Extent description\nRW 2048 FLAT \"data-flat.vmdk\" 0\n";

struct Dir {
    _tmp: tempfile::TempDir,
    path: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = std::fs::canonicalize(tmp.path()).expect("canonical tempdir");
        Dir { _tmp: tmp, path }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, bytes).expect("write image");
        p
    }
}

fn req(format: Option<DiskFormat>, backing: BackingPolicy) -> DiskRequest {
    DiskRequest {
        format,
        backing,
        writable: true,
    }
}

fn check(
    p: &Path,
    format: Option<DiskFormat>,
    backing: BackingPolicy,
) -> Result<DiskFormat, String> {
    check_image(p, &req(format, backing)).map_err(|e| e.0)
}

#[test]
fn qcow2_v2_and_v3_without_other_files() {
    let d = Dir::new();
    for version in [2, 3] {
        let p = d.file(&format!("v{version}.qcow2"), &qcow2(version, None, 0, &[]));
        let found = probe(&p).unwrap();
        assert_eq!(found.format, DiskFormat::Qcow2, "v{version}");
        assert!(found.externals.is_empty(), "v{version}: {found:?}");
        assert_eq!(check(&p, None, BackingPolicy::Deny), Ok(DiskFormat::Qcow2));
        assert_eq!(
            check(&p, Some(DiskFormat::Qcow2), BackingPolicy::Deny),
            Ok(DiskFormat::Qcow2)
        );
        assert_eq!(read_record(&p), Ok(None), "only raw images are recorded");
    }
}

#[test]
fn qcow2_backing_file_refused_unless_allowed_and_inside() {
    let d = Dir::new();
    for version in [2, 3] {
        let _ = std::fs::remove_file(d.path.join("base.qcow2"));
        let p = d.file("top.qcow2", &qcow2(version, Some("base.qcow2"), 0, &[]));
        assert_eq!(
            probe(&p).unwrap().externals,
            vec![External::new(ExternalKind::Backing, "base.qcow2")]
        );
        let e = check(&p, None, BackingPolicy::Deny).unwrap_err();
        assert!(
            e.contains("backing file \"base.qcow2\"") && e.contains("backing=allow"),
            "{e}"
        );
        // Allowed, but the backing file does not exist.
        let e = check(&p, None, BackingPolicy::Allow).unwrap_err();
        assert!(
            e.contains("base.qcow2") && e.contains("No such file"),
            "{e}"
        );
        d.file("base.qcow2", &qcow2(3, None, 0, &[]));
        assert_eq!(check(&p, None, BackingPolicy::Allow), Ok(DiskFormat::Qcow2));
    }
}

#[test]
fn backing_files_outside_the_directory_or_protocols_never_followed() {
    let d = Dir::new();
    std::fs::create_dir(d.path.join("sub")).unwrap();
    d.file("outside.raw", b"secret");
    let cases = [
        ("../outside.raw", "outside the image's directory"),
        ("/etc/passwd", "outside the image's directory"),
        (
            "json:{\"driver\":\"file\",\"filename\":\"/etc/passwd\"}",
            "protocol",
        ),
        ("nbd:localhost:10809", "protocol"),
        ("", "empty backing file"),
    ];
    for (name, why) in cases {
        let p = d.file("sub/top.qcow2", &qcow2(3, Some(name), 0, &[]));
        let e = check(&p, None, BackingPolicy::Allow).unwrap_err();
        assert!(e.contains(why), "{name}: {e}");
    }
    // A symlink beside the image that leads out counts as outside.
    std::os::unix::fs::symlink("../outside.raw", d.path.join("sub/link.raw")).unwrap();
    let p = d.file("sub/top.qcow2", &qcow2(3, Some("link.raw"), 0, &[]));
    let e = check(&p, None, BackingPolicy::Allow).unwrap_err();
    assert!(e.contains("outside the image's directory"), "{e}");
}

#[test]
fn backing_chain_is_checked_to_the_end() {
    let d = Dir::new();
    d.file("outside.raw", b"secret");
    std::fs::create_dir(d.path.join("img")).unwrap();
    let top = d.file("img/top.qcow2", &qcow2(3, Some("mid.qcow2"), 0, &[]));
    d.file("img/mid.qcow2", &qcow2(3, Some("../outside.raw"), 0, &[]));
    let e = check(&top, None, BackingPolicy::Allow).unwrap_err();
    assert!(e.contains("outside the image's directory"), "{e}");
    // A loop.
    d.file("img/mid.qcow2", &qcow2(3, Some("top.qcow2"), 0, &[]));
    let e = check(&top, None, BackingPolicy::Allow).unwrap_err();
    assert!(e.contains("loop"), "{e}");
}

#[test]
fn qcow2_external_data_file() {
    let d = Dir::new();
    let named = qcow2(3, None, 1 << 2, &[(0x4441_5441, b"data.raw")]);
    let p = d.file("ext.qcow2", &named);
    assert_eq!(
        probe(&p).unwrap().externals,
        vec![External::new(ExternalKind::DataFile, "data.raw")]
    );
    let e = check(&p, None, BackingPolicy::Deny).unwrap_err();
    assert!(e.contains("external data file \"data.raw\""), "{e}");
    d.file("data.raw", &[0u8; 512]);
    assert_eq!(check(&p, None, BackingPolicy::Allow), Ok(DiskFormat::Qcow2));
    // The feature bit alone (no name) or the name alone: still external.
    let p = d.file("bit.qcow2", &qcow2(3, None, 1 << 2, &[]));
    assert_eq!(probe(&p).unwrap().externals.len(), 1);
    let p = d.file(
        "name.qcow2",
        &qcow2(3, None, 0, &[(0x4441_5441, b"data.raw")]),
    );
    assert_eq!(probe(&p).unwrap().externals.len(), 1);
    // Other extensions (a backing format) are not files.
    let p = d.file("fmt.qcow2", &qcow2(3, None, 0, &[(0xe279_2aca, b"raw")]));
    assert!(probe(&p).unwrap().externals.is_empty());
}

#[test]
fn qcow2_refusals() {
    let d = Dir::new();
    let mut enc = qcow2(2, None, 0, &[]);
    enc[32..36].copy_from_slice(&1u32.to_be_bytes());
    let e = check(&d.file("enc.qcow2", &enc), None, BackingPolicy::Deny).unwrap_err();
    assert!(e.contains("encrypted"), "{e}");
    let mut bad = qcow2(3, None, 0, &[]);
    bad[20..24].copy_from_slice(&40u32.to_be_bytes());
    let e = check(&d.file("bad.qcow2", &bad), None, BackingPolicy::Deny).unwrap_err();
    assert!(e.contains("cluster_bits 40"), "{e}");
    let mut long = qcow2(3, Some("x"), 0, &[]);
    long[16..20].copy_from_slice(&5000u32.to_be_bytes());
    let e = check(&d.file("long.qcow2", &long), None, BackingPolicy::Allow).unwrap_err();
    assert!(e.contains("backing file name too long"), "{e}");
}

#[test]
fn vmdk_sparse_self_contained_or_with_parent() {
    let d = Dir::new();
    let own = "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicSparse\"\n\
               RW 2048 SPARSE \"disk.vmdk\"\n";
    let p = d.file("disk.vmdk", &vmdk_sparse(2048, own));
    assert_eq!(
        probe(&p).unwrap(),
        Probe {
            format: DiskFormat::Vmdk,
            externals: Vec::new()
        }
    );
    assert_eq!(check(&p, None, BackingPolicy::Deny), Ok(DiskFormat::Vmdk));
    let child = format!("{own}parentFileNameHint=\"base.vmdk\"\n");
    let p = d.file("child.vmdk", &vmdk_sparse(2048, &child));
    assert_eq!(
        probe(&p).unwrap().externals,
        vec![External::new(ExternalKind::Backing, "base.vmdk")]
    );
    let e = check(&p, None, BackingPolicy::Deny).unwrap_err();
    assert!(e.contains("backing file \"base.vmdk\""), "{e}");
    d.file("base.vmdk", &vmdk_sparse(2048, own));
    assert_eq!(check(&p, None, BackingPolicy::Allow), Ok(DiskFormat::Vmdk));
}

#[test]
fn vmdk_sparse_with_capacity_zero_opens_its_descriptor_extents() {
    let d = Dir::new();
    let p = d.file("hollow.vmdk", &vmdk_sparse(0, DESCRIPTOR));
    assert_eq!(
        probe(&p).unwrap().externals,
        vec![External::new(ExternalKind::Extent, "data-flat.vmdk")]
    );
    assert!(check(&p, None, BackingPolicy::Deny).is_err());
}

#[test]
fn vmdk_descriptor_extents() {
    let d = Dir::new();
    let p = d.file("desc.vmdk", DESCRIPTOR.as_bytes());
    assert_eq!(probe(&p).unwrap().format, DiskFormat::Vmdk);
    let e = check(&p, None, BackingPolicy::Deny).unwrap_err();
    assert!(e.contains("extent file \"data-flat.vmdk\""), "{e}");
    d.file("data-flat.vmdk", &[0u8; 4096]);
    assert_eq!(check(&p, None, BackingPolicy::Allow), Ok(DiskFormat::Vmdk));
    // Extents out of the directory, and every access mode QEMU may parse.
    for line in [
        "RW 8 FLAT \"/etc/shadow\" 0",
        "RDONLY 8 FLAT \"../x\" 0",
        "  NOACCESS 8 SPARSE \"/dev/sda\"",
    ] {
        let text = DESCRIPTOR.replace("RW 2048 FLAT \"data-flat.vmdk\" 0", line);
        let p = d.file("evil.vmdk", text.as_bytes());
        assert!(
            check(&p, None, BackingPolicy::Allow).is_err(),
            "{line} was accepted"
        );
    }
    // Comments and blank lines before `version=` still make a descriptor.
    assert!(vmdk::is_descriptor(b"\n# c\n   \n  version=1\n"));
    assert!(!vmdk::is_descriptor(b"hello\nversion=1\n"));
}

#[test]
fn a_raw_image_stays_raw_after_its_guest_writes_a_header() {
    let d = Dir::new();
    let p = d.file("disk.img", &vec![0u8; 1 << 16]);
    assert_eq!(check(&p, None, BackingPolicy::Deny), Ok(DiskFormat::Raw));
    assert_eq!(read_record(&p), Ok(Some(DiskFormat::Raw)));
    // What a guest could write into its disk: a QCOW2 header naming a
    // host file, a VMDK descriptor with an extent.
    let hostile: [Vec<u8>; 3] = [
        qcow2(3, Some("/etc/shadow"), 0, &[]),
        qcow2(2, None, 0, &[]),
        DESCRIPTOR
            .replace("data-flat.vmdk", "/etc/shadow")
            .into_bytes(),
    ];
    for header in hostile {
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[..header.len()].copy_from_slice(&header);
        std::fs::write(&p, &bytes).unwrap();
        for backing in [BackingPolicy::Deny, BackingPolicy::Allow] {
            assert_eq!(check(&p, None, backing), Ok(DiskFormat::Raw));
            assert_eq!(
                check(&p, Some(DiskFormat::Raw), backing),
                Ok(DiskFormat::Raw)
            );
        }
        let e = check(&p, Some(DiskFormat::Qcow2), BackingPolicy::Deny).unwrap_err();
        assert!(e.contains("recorded this image as raw"), "{e}");
    }
}

#[test]
fn given_format_must_match_the_header() {
    let d = Dir::new();
    let q = d.file("d.qcow2", &qcow2(3, None, 0, &[]));
    let e = check(&q, Some(DiskFormat::Vmdk), BackingPolicy::Deny).unwrap_err();
    assert!(
        e.contains("format=vmdk given, but the image is qcow2"),
        "{e}"
    );
    let e = check(&q, Some(DiskFormat::Raw), BackingPolicy::Deny).unwrap_err();
    assert!(
        e.contains("format=raw given, but the image is qcow2") && e.contains("setfattr"),
        "{e}"
    );
    assert_eq!(read_record(&q), Ok(None));
    // Once recorded raw (what the hint says), format=raw is accepted.
    record_raw(&q).unwrap();
    assert_eq!(
        check(&q, Some(DiskFormat::Raw), BackingPolicy::Deny),
        Ok(DiskFormat::Raw)
    );
}

#[test]
fn a_record_that_is_not_a_format_is_an_error() {
    let d = Dir::new();
    let p = d.file("d.img", &[0u8; 4096]);
    let set = |v: &str| {
        let ok = std::process::Command::new("setfattr")
            .args(["-n", FORMAT_XATTR, "-v", v])
            .arg(&p)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "setfattr (package attr) failed");
    };
    set("bogus");
    let e = check(&p, None, BackingPolicy::Deny).unwrap_err();
    assert!(e.contains("not a format name"), "{e}");
}

#[test]
fn read_only_formats_need_ro() {
    assert!(!DiskFormat::Dmg.writable());
    assert!(DiskFormat::Vdi.writable());
    assert_eq!("vhdx".parse::<DiskFormat>(), Ok(DiskFormat::Vhdx));
    assert!("nbd"
        .parse::<DiskFormat>()
        .unwrap_err()
        .contains("use raw, qcow2"));
    assert_eq!("allow".parse::<BackingPolicy>(), Ok(BackingPolicy::Allow));
}

#[test]
fn qemu_img_output_read() {
    let found = qemu_img::parse(
        br#"{"format": "qed", "backing-filename": "b.qed", "format-specific": {"type": "x",
            "data": {"data-file": "d.raw", "extents": [{"filename": "e1"}, {"filename": "e2"}]}}}"#,
    )
    .unwrap();
    assert_eq!(found.format, DiskFormat::Qed);
    let names: Vec<_> = found
        .externals
        .iter()
        .map(|e| (e.kind, e.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (ExternalKind::Backing, "b.qed"),
            (ExternalKind::DataFile, "d.raw"),
            (ExternalKind::Extent, "e1"),
            (ExternalKind::Extent, "e2")
        ]
    );
    assert!(qemu_img::parse(br#"{"format": "luks"}"#)
        .unwrap_err()
        .contains("LUKS"));
    assert!(qemu_img::parse(br#"{"format": "vvfat"}"#)
        .unwrap_err()
        .contains("vvfat"));
    assert!(qemu_img::parse(b"not json").is_err());
}
