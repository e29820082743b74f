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
    assert!(parse_volume("cache:/x")
        .unwrap_err()
        .reason
        .contains("volume name"));
    assert!(parse_volume(&dir).is_err());
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

#[test]
fn disks_take_format_and_fstype() {
    let (_t, _, disk) = tmpdir_with_disk();
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
