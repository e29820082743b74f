//! Cleanup when something other than the command ends the run: the VMM
//! crashes, a daemon crashes, the guest kernel panics. Each must give msb's
//! launcher status (125) with a message saying what happened, and leave no
//! process, socket or temp file behind. See `run_basic.rs` for
//! prerequisites.

use std::time::Duration;

use msb_tests::msb_proc::Sandbox;

/// msb's status when it or the VM failed.
const EXIT_LAUNCHER: i32 = 125;

/// Starts a long run with one bind mount, SIGKILLs the child whose command
/// line contains `victim`, and checks the outcome.
fn kill_child_mid_run(label: &str, victim: &str, message: &str) {
    let sb = Sandbox::new(label);
    let running = sb.start_long_run();
    // Only children still running: msb may have run others before (the
    // KVM probe's QEMU, which has exited).
    let alive = || {
        running
            .children_seen()
            .into_iter()
            .filter(|p| std::path::Path::new(&format!("/proc/{}", p.pid)).exists())
            .filter(|p| p.cmdline.contains(victim))
    };
    let target = alive()
        .find(|p| p.cmdline.contains("data"))
        .or_else(|| alive().next())
        .unwrap_or_else(|| panic!("no {victim} among msb's children"));
    // SAFETY: kill(2) with plain integers on a process msb started.
    assert_eq!(unsafe { libc::kill(target.pid, libc::SIGKILL) }, 0);
    let out = running.wait_within(Duration::from_secs(30));
    out.assert_code(EXIT_LAUNCHER).assert_clean();
    assert!(
        out.stderr.contains(message),
        "expected {message:?} on stderr\n{}",
        out.describe()
    );
}

#[test]
fn vmm_crash_ends_the_run_and_cleans_up() {
    kill_child_mid_run("vmmcrash", "qemu-system", "killed by signal 9");
}

#[test]
fn daemon_crash_ends_the_run_and_cleans_up() {
    kill_child_mid_run("daemoncrash", "virtiofsd-msb", "exited unexpectedly");
}

#[test]
fn guest_panic_ends_the_run_and_cleans_up() {
    let sb = Sandbox::new("panic");
    let out = sb
        .msb()
        .sh("echo c > /proc/sysrq-trigger; sleep 1000")
        .deadline(Duration::from_secs(120))
        .run();
    out.assert_code(EXIT_LAUNCHER).assert_clean();
    assert!(out.stderr.contains("panicked"), "{}", out.describe());
}

/// An initramfs whose `/init` never becomes msb-init: busybox sleeping.
fn sleeping_initramfs(sb: &Sandbox) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = sb.mkdir("sleeping-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static (scripts/setup.sh installs it)");
    let init = root.join("init");
    std::fs::write(&init, "#!/bin/busybox sh\n/bin/busybox sleep 100000\n").unwrap();
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = sb.path().join("sleeping.cpio.gz");
    let pack = format!(
        "cd '{}' && find . -print0 | cpio --null -o -H newc --owner=0:0 2>/dev/null | gzip -1 > '{}'",
        root.display(),
        out.display()
    );
    let st = std::process::Command::new("sh")
        .args(["-c", &pack])
        .status()
        .unwrap();
    assert!(st.success(), "packing {}", out.display());
    out
}

#[test]
fn a_guest_that_never_reaches_init_ends_at_the_boot_deadline() {
    let sb = Sandbox::new("noinit");
    let initramfs = sleeping_initramfs(&sb);
    let started = std::time::Instant::now();
    let out = sb
        .msb()
        .arg("--initramfs")
        .arg(&initramfs)
        .args(["--boot-timeout", "8"])
        .command(["true"])
        .deadline(Duration::from_secs(120))
        .run();
    out.assert_code(EXIT_LAUNCHER).assert_clean();
    assert!(
        out.stderr.contains("never started msb-init") && out.stderr.contains("8s"),
        "{}",
        out.describe()
    );
    assert!(
        started.elapsed() < Duration::from_secs(100),
        "{}",
        out.describe()
    );
}

#[test]
fn a_control_share_that_never_answers_ends_at_the_boot_deadline() {
    let sb = Sandbox::new("nocontrol");
    let mut running = sb
        .msb()
        .args(["--boot-timeout", "30"])
        .command(["true"])
        .deadline(Duration::from_secs(150))
        .spawn();
    // Freeze the control share's daemon once msb-init says on the console
    // that it started (the guest kernel has set the virtio-fs device up, so
    // QEMU is done with its vhost-user messages) and before it mounts the
    // share, so its FUSE_INIT is never answered.
    let end = std::time::Instant::now() + Duration::from_secs(20);
    let daemon = loop {
        let console_started = std::fs::read_dir(sb.run_dir())
            .into_iter()
            .flatten()
            .flatten()
            .any(|run| {
                std::fs::read(run.path().join("console.log"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("msb-init: started"))
            });
        let found = running
            .children_seen()
            .into_iter()
            .find(|p| p.cmdline.contains("virtiofsd-msb") && p.cmdline.contains("control"));
        if let Some(p) = found.filter(|_| console_started) {
            break p;
        }
        assert!(
            !running.has_exited() && std::time::Instant::now() < end,
            "no control-share daemon seen\n{}",
            running.wait().describe()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    // SAFETY: kill(2) with plain integers on a process msb started.
    assert_eq!(unsafe { libc::kill(daemon.pid, libc::SIGSTOP) }, 0);
    // The sandboxed daemon serves from a descendant of the started process.
    let procs = msb_tests::procs::all_processes();
    for p in msb_tests::procs::descendants(&procs, daemon.pid) {
        // SAFETY: as above, on the daemon's own sandboxed children.
        unsafe { libc::kill(p.pid, libc::SIGSTOP) };
    }
    let out = running.wait();
    out.assert_code(EXIT_LAUNCHER).assert_clean();
    assert!(
        out.stderr.contains("did not mount the control share"),
        "{}",
        out.describe()
    );
}
