//! `msb run --tmpfs GUEST[:size=…,noexec]`: the size limit gives ENOSPC and
//! noexec denies execution. See `run_basic.rs` for prerequisites.

use msb_tests::msb_proc::Sandbox;

/// Writing past `size=1M` fails with ENOSPC.
#[test]
fn tmpfs_size_limit_gives_enospc() {
    let sb = Sandbox::new("tmpfssize");
    let script = r#"
        grep ' /scratch ' /proc/mounts | sed 's/^/mountline=/'
        echo "kb=$(df -k /scratch | awk 'NR==2 {print $2}')"
        err=$(dd if=/dev/zero of=/scratch/big bs=64k count=64 2>&1); echo "dd=$?:$err"
        echo "written=$(wc -c < /scratch/big)"
        true
    "#;
    let out = sb
        .msb()
        .args(["--tmpfs", "/scratch:size=1M"])
        .sh(script)
        .run();
    out.assert_code(0).assert_clean();
    let mountline = out.value("mountline").unwrap_or_default();
    assert!(
        mountline.contains("tmpfs"),
        "/scratch is not a tmpfs: {mountline:?}\n{}",
        out.describe()
    );
    let kb: u64 = out.value("kb").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert_eq!(kb, 1024, "df should show a 1 MiB tmpfs\n{}", out.describe());
    let dd = out.value("dd").unwrap_or_default();
    assert!(
        !dd.starts_with("0:") && dd.contains("No space left on device"),
        "writing 4 MiB into a 1 MiB tmpfs should fail with ENOSPC, got {dd:?}\n{}",
        out.describe()
    );
    let written: u64 = out
        .value("written")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        written <= 1 << 20,
        "{written} bytes landed in a 1 MiB tmpfs\n{}",
        out.describe()
    );
}

/// A program on a `noexec` tmpfs cannot be executed (EACCES); the same
/// program on a normal tmpfs runs.
#[test]
fn tmpfs_noexec_denies_exec() {
    let sb = Sandbox::new("tmpfsnoexec");
    let script = r#"
        cp /bin/busybox /noexec/true && cp /bin/busybox /exec/true
        chmod 755 /noexec/true /exec/true
        err=$(/noexec/true 2>&1); echo "noexec=$?:$err"
        err=$(/exec/true 2>&1); echo "exec=$?:$err"
        grep ' /noexec ' /proc/mounts | sed 's/^/mountline=/'
        true
    "#;
    let out = sb
        .msb()
        .args(["--tmpfs", "/noexec:noexec", "--tmpfs", "/exec"])
        .sh(script)
        .run();
    out.assert_code(0).assert_clean();
    let noexec = out.value("noexec").unwrap_or_default();
    assert!(
        noexec.starts_with("126:") && noexec.contains("Permission denied"),
        "running a program from a noexec tmpfs should be denied, got {noexec:?}\n{}",
        out.describe()
    );
    assert_eq!(
        out.value("exec").as_deref(),
        Some("0:"),
        "the control (exec allowed) failed\n{}",
        out.describe()
    );
    assert!(
        out.value("mountline")
            .unwrap_or_default()
            .contains("noexec"),
        "{}",
        out.describe()
    );
}
