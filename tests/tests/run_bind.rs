//! `msb run -v HOST:GUEST[:ro]`: bind mounts served by virtiofsd-msb.
//! Writes from the guest reach the host on a rw mount; on a ro mount every
//! write fails with EROFS, also after the guest remounts it rw (the daemon
//! itself is read-only). See `run_basic.rs` for prerequisites.

use std::fs;

use msb_tests::msb_proc::Sandbox;

/// The guest writes into a rw bind mount; the host sees the file.
#[test]
fn rw_bind_mount_guest_writes_host_sees() {
    let sb = Sandbox::new("bindrw");
    let data = sb.mkdir("data");
    fs::write(data.join("from-host.txt"), "host text\n").expect("write host file");
    let out = sb
        .msb()
        .arg("-v")
        .arg(format!("{}:/data", data.display()))
        .sh(
            "cat /data/from-host.txt && echo 'guest text' > /data/from-guest.txt && \
             mkdir /data/dir && echo nested > /data/dir/n.txt && sync && echo wrote=ok",
        )
        .run();
    out.assert_code(0).assert_clean();
    assert!(
        out.stdout.contains("host text") && out.value("wrote").as_deref() == Some("ok"),
        "{}",
        out.describe()
    );
    assert_eq!(
        fs::read_to_string(data.join("from-guest.txt"))
            .ok()
            .as_deref(),
        Some("guest text\n"),
        "the guest's file did not reach the host\n{}",
        out.describe()
    );
    assert_eq!(
        fs::read_to_string(data.join("dir/n.txt")).ok().as_deref(),
        Some("nested\n"),
        "{}",
        out.describe()
    );
}

/// On a `ro` bind mount writes fail with EROFS, also after
/// `mount -o remount,rw` in the guest; the host tree is unchanged.
#[test]
fn ro_bind_mount_refuses_writes_even_after_remount() {
    let sb = Sandbox::new("bindro");
    let data = sb.mkdir("data");
    fs::write(data.join("keep.txt"), "original\n").expect("write host file");
    let script = r#"
        cat /data/keep.txt
        err=$( (echo x > /data/new1.txt) 2>&1 ); echo "write1=$?:$err"
        err=$( (echo changed > /data/keep.txt) 2>&1 ); echo "overwrite1=$?:$err"
        err=$(mount -o remount,rw /data 2>&1); echo "remount=$?:$err"
        grep ' /data ' /proc/mounts | sed 's/^/mountline=/'
        err=$( (echo x > /data/new2.txt) 2>&1 ); echo "write2=$?:$err"
        err=$( (echo changed > /data/keep.txt) 2>&1 ); echo "overwrite2=$?:$err"
        err=$(mkdir /data/newdir 2>&1); echo "mkdir2=$?:$err"
        err=$(rm /data/keep.txt 2>&1); echo "rm2=$?:$err"
        true
    "#;
    let out = sb
        .msb()
        .arg("-v")
        .arg(format!("{}:/data:ro", data.display()))
        .sh(script)
        .run();
    out.assert_code(0).assert_clean();
    assert!(out.stdout.contains("original"), "{}", out.describe());
    for key in [
        "write1",
        "overwrite1",
        "write2",
        "overwrite2",
        "mkdir2",
        "rm2",
    ] {
        let v = out.value(key).unwrap_or_default();
        assert!(
            !v.starts_with("0:") && v.contains("Read-only file system"),
            "{key}: expected a failure with EROFS (Read-only file system), got {v:?}\n{}",
            out.describe()
        );
    }
    let mut names: Vec<String> = fs::read_dir(&data)
        .expect("read data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["keep.txt"],
        "the host tree changed\n{}",
        out.describe()
    );
    assert_eq!(
        fs::read_to_string(data.join("keep.txt")).expect("read keep.txt"),
        "original\n",
        "{}",
        out.describe()
    );
}
