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
    let target = running
        .children_seen()
        .into_iter()
        .find(|p| p.cmdline.contains(victim) && p.cmdline.contains("data"))
        .or_else(|| {
            running
                .children_seen()
                .into_iter()
                .find(|p| p.cmdline.contains(victim))
        })
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
