//! `msb run` end to end, basics: the command's stdout, stderr and exit code
//! come back through the real `msb` binary (QEMU TCG guest, virtiofsd-msb
//! control share, msb-init). Needs `scripts/setup.sh` (QEMU, kernel,
//! initramfs) and `cargo build -p launcher -p virtiofsd-msb`; see
//! `msb_tests::msb_proc`. Every test also checks that msb left no process,
//! socket or run directory behind.

use msb_tests::msb_proc::{Sandbox, EXIT_NOT_FOUND};

/// `msb run -- echo hello` prints exactly `hello` and exits 0.
#[test]
fn echo_output_reaches_stdout() {
    let sb = Sandbox::new("echo");
    sb.msb()
        .command(["echo", "hello"])
        .run()
        .assert_code(0)
        .assert_stdout("hello\n")
        .assert_clean();
}

/// The command's exit code becomes msb's.
#[test]
fn exit_code_42_is_propagated() {
    let sb = Sandbox::new("exit42");
    sb.msb()
        .sh("echo before-exit; exit 42")
        .run()
        .assert_code(42)
        .assert_stdout("before-exit\n")
        .assert_clean();
}

/// stdout and stderr arrive on separate streams, in full.
#[test]
fn stderr_is_separate_from_stdout() {
    let sb = Sandbox::new("stderr");
    let out = sb
        .msb()
        .sh("echo to-stdout; echo to-stderr >&2; echo again-stdout; echo again-stderr >&2")
        .run();
    out.assert_code(0)
        .assert_stdout("to-stdout\nagain-stdout\n")
        .assert_clean();
    assert!(
        out.stderr.contains("to-stderr\n") && out.stderr.contains("again-stderr\n"),
        "the command's stderr is missing from msb's stderr\n{}",
        out.describe()
    );
    let err_pos = out.stderr.find("to-stderr").unwrap_or(0);
    let again_pos = out.stderr.find("again-stderr").unwrap_or(0);
    assert!(
        err_pos < again_pos,
        "stderr out of order\n{}",
        out.describe()
    );
}

/// A large output (≈1.3 MB) arrives complete and in order.
#[test]
fn large_stdout_arrives_complete() {
    let sb = Sandbox::new("bigout");
    let out = sb.msb().command(["seq", "1", "200000"]).run();
    out.assert_code(0).assert_clean();
    let want: String = (1..=200000).map(|i| format!("{i}\n")).collect();
    assert!(
        out.stdout == want,
        "stdout differs from `seq 1 200000` ({} bytes, want {})\n{}",
        out.stdout.len(),
        want.len(),
        out.describe()
    );
}

/// A missing command exits 127; a command killed by a signal gives 128+N.
#[test]
fn not_found_and_signal_statuses() {
    let sb = Sandbox::new("status");
    sb.msb()
        .command(["no-such-command-xyz"])
        .run()
        .assert_code(EXIT_NOT_FOUND)
        .assert_clean();
    sb.msb()
        .sh("kill -KILL $$")
        .run()
        .assert_code(128 + 9)
        .assert_clean();
}

/// `-e` and `-w` reach the command.
#[test]
fn env_and_workdir_reach_the_command() {
    let sb = Sandbox::new("envwd");
    let out = sb
        .msb()
        .args(["-e", "MSB_GREETING=hi there", "-w", "/proc"])
        .sh("echo \"greeting=$MSB_GREETING\"; echo \"cwd=$(pwd)\"")
        .run();
    out.assert_code(0).assert_clean();
    assert_eq!(
        out.value("greeting").as_deref(),
        Some("hi there"),
        "{}",
        out.describe()
    );
    assert_eq!(
        out.value("cwd").as_deref(),
        Some("/proc"),
        "{}",
        out.describe()
    );
}

/// Processes the command leaves in the background do not keep the VM up:
/// msb returns when the command itself exits.
#[test]
fn background_processes_do_not_keep_the_vm_alive() {
    let sb = Sandbox::new("bg");
    let out = sb
        .msb()
        .sh("sleep 1000 >/dev/null 2>&1 & echo started-bg")
        .deadline(std::time::Duration::from_secs(120))
        .run();
    out.assert_code(0)
        .assert_stdout("started-bg\n")
        .assert_clean();
}
