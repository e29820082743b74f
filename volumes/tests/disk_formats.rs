//! Disk images made by the real `qemu-img` (package qemu-utils, installed
//! by scripts/setup.sh): the format each one is attached with, and which
//! ones name other files.

use std::path::{Path, PathBuf};
use std::process::Command;

use volumes::disk_image::{check_image, read_record, BackingPolicy, DiskFormat, DiskRequest};

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

    /// `qemu-img create -f FORMAT [ARGS] NAME 16M`; the image's path.
    fn create(&self, name: &str, format: &str, args: &[&str]) -> PathBuf {
        let path = self.path.join(name);
        let out = Command::new("qemu-img")
            .current_dir(&self.path)
            .args(["create", "-q", "-f", format])
            .args(args)
            .arg(&path)
            .arg("16M")
            .output()
            .expect("cannot run qemu-img (install qemu-utils with scripts/setup.sh)");
        assert!(
            out.status.success(),
            "qemu-img create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    }
}

fn check(p: &Path, backing: BackingPolicy) -> Result<DiskFormat, String> {
    let req = DiskRequest {
        format: None,
        backing,
        writable: true,
    };
    check_image(p, &req).map_err(|e| e.0)
}

#[test]
fn every_format_detected_from_the_image() {
    let d = Dir::new();
    let cases: &[(&str, &str, &[&str], DiskFormat)] = &[
        ("a.raw", "raw", &[], DiskFormat::Raw),
        (
            "v2.qcow2",
            "qcow2",
            &["-o", "compat=0.10"],
            DiskFormat::Qcow2,
        ),
        (
            "v3.qcow2",
            "qcow2",
            &["-o", "compat=1.1"],
            DiskFormat::Qcow2,
        ),
        ("sparse.vmdk", "vmdk", &[], DiskFormat::Vmdk),
        (
            "stream.vmdk",
            "vmdk",
            &["-o", "subformat=streamOptimized"],
            DiskFormat::Vmdk,
        ),
        ("d.vdi", "vdi", &[], DiskFormat::Vdi),
        ("d.vhdx", "vhdx", &[], DiskFormat::Vhdx),
        ("d.vhd", "vpc", &[], DiskFormat::Vpc),
        ("d.qed", "qed", &[], DiskFormat::Qed),
        ("d.qcow", "qcow", &[], DiskFormat::Qcow),
        ("d.parallels", "parallels", &[], DiskFormat::Parallels),
    ];
    for (name, format, args, want) in cases {
        let p = d.create(name, format, args);
        assert_eq!(check(&p, BackingPolicy::Deny), Ok(*want), "{name}");
        let recorded = read_record(&p).unwrap();
        let want_record = (*want == DiskFormat::Raw).then_some(DiskFormat::Raw);
        assert_eq!(recorded, want_record, "{name}: record");
        // The right format= is accepted, another one refused.
        let given = |f| {
            check_image(
                &p,
                &DiskRequest {
                    format: Some(f),
                    backing: BackingPolicy::Deny,
                    writable: true,
                },
            )
        };
        assert_eq!(given(*want), Ok(*want), "{name}");
        let other = if *want == DiskFormat::Vdi {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Vdi
        };
        let e = given(other).unwrap_err().0;
        assert!(e.contains(&format!("format={other} given")), "{name}: {e}");
    }
}

#[test]
fn images_naming_other_files_need_backing_allow() {
    let d = Dir::new();
    d.create("base.raw", "raw", &[]);
    let cases = [
        d.create("over.qcow2", "qcow2", &["-b", "base.raw", "-F", "raw"]),
        d.create("ext.qcow2", "qcow2", &["-o", "data_file=data.raw"]),
        d.create("flat.vmdk", "vmdk", &["-o", "subformat=monolithicFlat"]),
        d.create(
            "split.vmdk",
            "vmdk",
            &["-o", "subformat=twoGbMaxExtentSparse"],
        ),
        d.create("over.qed", "qed", &["-b", "base.raw", "-F", "raw"]),
    ];
    for p in &cases {
        let e = check(p, BackingPolicy::Deny).unwrap_err();
        assert!(e.contains("backing=allow"), "{}: {e}", p.display());
        assert!(check(p, BackingPolicy::Allow).is_ok(), "{}", p.display());
    }
}

#[test]
fn backing_files_outside_the_image_directory_are_refused() {
    let d = Dir::new();
    d.create("base.qcow2", "qcow2", &[]);
    std::fs::create_dir(d.path.join("work")).unwrap();
    let over = d.create(
        "work/over.qcow2",
        "qcow2",
        &["-b", "../base.qcow2", "-F", "qcow2"],
    );
    let e = check(&over, BackingPolicy::Allow).unwrap_err();
    assert!(e.contains("outside the image's directory"), "{e}");
    let abs = d.path.join("base.qcow2");
    let over = d.create(
        "work/abs.qcow2",
        "qcow2",
        &["-b", abs.to_str().unwrap(), "-F", "qcow2"],
    );
    let e = check(&over, BackingPolicy::Allow).unwrap_err();
    assert!(e.contains("outside the image's directory"), "{e}");
}
