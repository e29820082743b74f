use super::*;

fn tmpdir_with_disk() -> (tempfile::TempDir, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("d.raw");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    (tmp, dir, disk.to_str().unwrap().to_string())
}

#[test]
fn sizes_parse_with_units() {
    assert_eq!(parse_size("64M"), Ok(64 << 20));
    assert_eq!(parse_size("1g"), Ok(1 << 30));
    assert_eq!(parse_size("512k"), Ok(512 << 10));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("12Q").unwrap_err().contains("12Q"));
    assert!(parse_size("M").is_err());
    assert!(parse_size("0").is_err());
    assert!(parse_size("99999999999T")
        .unwrap_err()
        .contains("too large"));
}

#[test]
fn bind_mounts_parse_and_check_the_host_path() {
    let (_t, dir, _) = tmpdir_with_disk();
    let m = parse_volume(&format!("{dir}:/data:ro,nosuid")).unwrap();
    let MountSpec::Bind {
        host,
        guest,
        flags,
        policy,
    } = m
    else {
        panic!()
    };
    assert_eq!(host, std::fs::canonicalize(&dir).unwrap());
    assert_eq!(guest, "/data");
    assert!(flags.ro && flags.nosuid && !flags.noexec);
    assert_eq!(policy, SharePolicy::default());
    let e = parse_volume("/no/such/dir:/x").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("mount \"/no/such/dir:/x\": host path"),
        "{e}"
    );
    assert!(parse_volume(&format!("{dir}:rel"))
        .unwrap_err()
        .reason
        .contains("absolute"));
    assert!(parse_volume(&format!("{dir}:/a/../b"))
        .unwrap_err()
        .reason
        .contains(".."));
    assert!(parse_volume(&format!("{dir}:/"))
        .unwrap_err()
        .reason
        .contains("guest's /"));
    assert!(parse_volume(&format!("{dir}:/x:rw0"))
        .unwrap_err()
        .reason
        .contains("unknown option \"rw0\""));
    assert!(matches!(parse_volume("cache:/x"), Ok(MountSpec::Volume(_))));
    assert!(parse_volume(&dir).is_err());
}

#[test]
fn a_host_file_is_bound_alone() {
    let (_t, _dir, file) = tmpdir_with_disk();
    let want = MountSpec::BindFile {
        host: std::fs::canonicalize(&file).unwrap(),
        guest: "/etc/app.conf".into(),
        flags: MountFlags {
            ro: true,
            ..Default::default()
        },
        policy: SharePolicy {
            stat_virt: Some(StatVirt::Relaxed),
            ..Default::default()
        },
    };
    let short = parse_volume(&format!("{file}:/etc/app.conf:ro,stat-virt=relaxed")).unwrap();
    assert_eq!(short, want);
    let long = parse_mount(&format!(
        "type=bind,src={file},dst=/etc/app.conf,ro,stat-virt=relaxed"
    ))
    .unwrap();
    assert_eq!(long, want);
    assert_eq!(long.guest(), "/etc/app.conf");
    let e = parse_volume("/dev/null:/null").unwrap_err();
    assert!(
        e.reason.contains("neither a directory nor a regular file"),
        "{e}"
    );
}

#[test]
fn tmpfs_takes_size_and_flags_but_no_policies() {
    let m = parse_tmpfs("/tmp:size=64M,noexec").unwrap();
    assert_eq!(
        m,
        MountSpec::Tmpfs {
            guest: "/tmp".into(),
            size_bytes: Some(64 << 20),
            flags: MountFlags {
                noexec: true,
                ..Default::default()
            }
        }
    );
    assert_eq!(parse_tmpfs("/scratch").unwrap().guest(), "/scratch");
    let e = parse_tmpfs("/tmp:stat-virt=strict").unwrap_err();
    assert!(e.reason.contains("only to bind mounts"), "{e}");
    assert!(parse_tmpfs("/tmp:host-perms=mirror").is_err());
    assert!(parse_tmpfs("/tmp:size=lots")
        .unwrap_err()
        .reason
        .contains("lots"));
    assert!(parse_tmpfs("/tmp:format=raw")
        .unwrap_err()
        .reason
        .contains("unknown option"));
}

/// A 16 MiB qcow2 image made by `qemu-img` in `dir`.
fn qcow2_in(dir: &str) -> String {
    let path = format!("{dir}/d.qcow2");
    let ok = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", &path, "16M"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "qemu-img create failed (install qemu-utils: scripts/setup.sh)"
    );
    path
}

#[test]
fn disks_take_format_and_fstype() {
    let (_t, dir, raw) = tmpdir_with_disk();
    let disk = qcow2_in(&dir);
    let m = parse_disk(&format!("{disk}:/disk:format=qcow2,fstype=ext4,ro")).unwrap();
    let MountSpec::Disk {
        format,
        fstype,
        flags,
        ..
    } = m
    else {
        panic!()
    };
    assert_eq!(format, DiskFormat::Qcow2);
    assert_eq!(fstype.as_deref(), Some("ext4"));
    assert!(flags.ro);
    assert!(parse_disk(&format!("{disk}:/d:format=iso"))
        .unwrap_err()
        .reason
        .contains("iso"));
    // The format comes from the image when not given, and must agree when
    // given; the message names the mount.
    let detected = |text: &str| match parse_disk(text) {
        Ok(MountSpec::Disk { format, .. }) => Ok(format),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.to_string()),
    };
    assert_eq!(detected(&format!("{disk}:/d")), Ok(DiskFormat::Qcow2));
    let e = detected(&format!("{raw}:/d:format=qcow2")).unwrap_err();
    assert!(
        e.starts_with(&format!("mount \"{raw}:/d:format=qcow2\": disk image "))
            && e.contains("format=qcow2 given, but the image is raw"),
        "{e}"
    );
    assert_eq!(detected(&format!("{raw}:/d")), Ok(DiskFormat::Raw));
    let e = detected(&format!("{raw}:/d:format=qcow2")).unwrap_err();
    assert!(e.contains("recorded this image as raw"), "{e}");
    assert_eq!(
        detected(&format!("{disk}:/d:backing=allow")),
        Ok(DiskFormat::Qcow2)
    );
    assert!(detected(&format!("{disk}:/d:backing=maybe"))
        .unwrap_err()
        .contains("use deny or allow"));
    assert!(parse_disk(&format!("{disk}:/d:stat-virt=off"))
        .unwrap_err()
        .reason
        .contains("only to bind"));
    assert!(parse_disk("/nope.raw:/d")
        .unwrap_err()
        .reason
        .contains("/nope.raw"));
    let (_t2, dir, _) = tmpdir_with_disk();
    assert!(parse_disk(&format!("{dir}:/d"))
        .unwrap_err()
        .reason
        .contains("not a regular file"));
}

#[test]
fn long_form_matches_short_forms() {
    let (_t, dir, disk) = tmpdir_with_disk();
    assert_eq!(
        parse_mount(&format!("type=bind,src={dir},dst=/data,ro")).unwrap(),
        parse_volume(&format!("{dir}:/data:ro")).unwrap()
    );
    assert_eq!(
        parse_mount("type=tmpfs,dst=/t,size=1M").unwrap(),
        parse_tmpfs("/t:size=1M").unwrap()
    );
    assert_eq!(
        parse_mount(&format!("type=disk,source={disk},target=/d,format=raw")).unwrap(),
        parse_disk(&format!("{disk}:/d:format=raw")).unwrap()
    );
    assert!(parse_mount("type=tmpfs")
        .unwrap_err()
        .reason
        .contains("dst="));
    assert!(parse_mount("dst=/x").unwrap_err().reason.contains("type="));
    assert!(parse_mount("type=nfs,dst=/x")
        .unwrap_err()
        .reason
        .contains("nfs"));
    assert!(parse_mount("type=bind,dst=/x")
        .unwrap_err()
        .reason
        .contains("src="));
    assert!(parse_mount("type=tmpfs,src=/a,dst=/x")
        .unwrap_err()
        .reason
        .contains("no src"));
}

#[test]
fn duplicate_targets_are_refused_naming_the_second_mount() {
    let a = ("/t".to_string(), parse_tmpfs("/t").unwrap());
    let b = (
        "/t/:size=1M".to_string(),
        parse_tmpfs("/t/:size=1M").unwrap(),
    );
    let e = check_unique_targets(&[a.clone(), b]).unwrap_err();
    assert_eq!(e.spec, "/t/:size=1M");
    check_unique_targets(&[a]).unwrap();
}

#[test]
fn bind_mounts_take_daemon_policies() {
    let (_t, dir, _) = tmpdir_with_disk();
    let m = parse_volume(&format!("{dir}:/d:stat-virt=relaxed,host-perms=mirror")).unwrap();
    let MountSpec::Bind { policy, .. } = m else {
        panic!()
    };
    assert_eq!(
        policy.daemon_args(),
        [
            "--stat-virtualization",
            "relaxed",
            "--host-permissions",
            "mirror"
        ]
    );
    let long = parse_mount(&format!("type=bind,src={dir},dst=/d,stat-virt=off")).unwrap();
    let MountSpec::Bind { policy, .. } = long else {
        panic!()
    };
    assert_eq!(policy.stat_virt, Some(StatVirt::Off));
    let e = parse_volume(&format!("{dir}:/d:stat-virt=loose")).unwrap_err();
    assert!(e.reason.contains("loose"), "{e}");
    assert!(parse_volume(&format!("{dir}:/d:host-perms")).is_err());
}

#[test]
fn a_source_without_slash_or_dot_is_a_named_volume() {
    let m = parse_volume("cache:/data:ro,nosuid,stat-virt=relaxed").unwrap();
    let MountSpec::Volume(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!((v.name.as_str(), v.guest.as_str()), ("cache", "/data"));
    assert!(v.flags.ro && v.flags.nosuid);
    assert_eq!(v.policy.stat_virt, Some(StatVirt::Relaxed));
    assert_eq!(v.provision, volumes::Provision::default(), "mode existing");
    assert_eq!(v.spec, "cache:/data:ro,nosuid,stat-virt=relaxed");
    // Names break the rules: the message says how to write a path.
    let e = parse_volume("ca$he:/x").unwrap_err();
    assert!(
        e.reason.contains("not a volume name") && e.reason.contains("starts with /"),
        "{e}"
    );
    assert!(parse_volume("cache:rel")
        .unwrap_err()
        .reason
        .contains("absolute"));
    // The short form takes the provisioning options too.
    let MountSpec::Volume(v) = parse_volume("c:/x:mode=ensure-exists,quota=5").unwrap() else {
        panic!()
    };
    assert_eq!(v.provision.quota_mib, Some(5));
    assert!(parse_volume("cache:/x:bogus")
        .unwrap_err()
        .reason
        .contains("volume mount"));
}

#[test]
fn long_form_volume_mounts_take_mode_kind_size_and_quota() {
    let m =
        parse_mount("type=volume,src=pg,dst=/var/lib/pg,mode=ensure-exists,kind=disk,size=1G,ro")
            .unwrap();
    let MountSpec::Volume(v) = m else {
        panic!("{m:?}")
    };
    assert_eq!(v.name, "pg");
    assert_eq!(v.guest, "/var/lib/pg");
    assert!(v.flags.ro);
    assert_eq!(
        v.provision,
        volumes::Provision {
            mode: volumes::Mode::EnsureExists,
            kind: Some(volumes::VolumeKind::Disk),
            size_mib: Some(1024),
            quota_mib: None,
        }
    );
    let q = parse_mount("type=volume,src=c,dst=/c,mode=create,quota=64").unwrap();
    let MountSpec::Volume(v) = q else { panic!() };
    assert_eq!(v.provision.mode, volumes::Mode::Create);
    assert_eq!(v.provision.quota_mib, Some(64));
    for (spec, needle) in [
        ("type=volume,dst=/c", "src=VOLUME_NAME"),
        ("type=volume,src=./dir,dst=/c", "type=bind"),
        ("type=volume,src=/abs,dst=/c", "type=bind"),
        (
            "type=volume,src=c,dst=/c,mode=sometimes",
            "existing, create or ensure-exists",
        ),
        ("type=volume,src=c,dst=/c,kind=nfs", "dir or disk"),
        ("type=volume,src=c,dst=/c,size=1.5G", "size"),
        ("type=volume,src=c,dst=/c,quota", "MiB"),
        ("type=volume,src=c,dst=/c,size=1500k", "whole number of MiB"),
        ("type=volume,src=c,dst=/c,format=raw", "unknown option"),
        ("type=volume,src=a/b,dst=/c", "not a volume name"),
    ] {
        let e = parse_mount(spec).unwrap_err();
        assert!(e.reason.contains(needle), "{spec}: {e}");
        assert_eq!(e.spec, spec);
    }
    // Options of other kinds stay theirs.
    assert!(parse_mount("type=tmpfs,dst=/t,mode=create").is_err());
    assert!(parse_mount("type=tmpfs,dst=/t,quota=5").is_err());
}

#[test]
fn mib_sizes() {
    assert_eq!(parse_mib("64"), Ok(64));
    assert_eq!(parse_mib("2G"), Ok(2048));
    assert_eq!(parse_mib("512M"), Ok(512));
    assert!(parse_mib("1500k").unwrap_err().contains("whole"));
    assert!(parse_mib("99999999999").unwrap_err().contains("too large"));
    assert!(parse_mib("x").is_err());
}

#[test]
fn volume_quota_reaches_the_daemon_flags() {
    let policy = SharePolicy {
        stat_virt: Some(StatVirt::Off),
        quota: Some(ShareQuota {
            mib: 64,
            file: "/home/u/.microsandbox/volumes/.quota/c".into(),
        }),
        ..Default::default()
    };
    assert_eq!(
        policy.daemon_args(),
        [
            "--stat-virtualization",
            "off",
            "--quota-mib",
            "64",
            "--quota-file",
            "/home/u/.microsandbox/volumes/.quota/c"
        ]
    );
}
