//! `msb run` lifecycle: `--timeout` stops the VM (exit 124), SIGINT/SIGTERM
//! to msb mid-run exit 130/143 and leave nothing behind, bad mount specs exit 2
//! before any daemon or VMM is started. See `run_basic.rs` for
//! prerequisites.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use msb_tests::msb_proc::{make_ext4_image, Sandbox, EXIT_SIGINT, EXIT_TIMEOUT, EXIT_USAGE};

/// `--timeout 2` stops `sleep 1000` and exits 124, promptly.
#[test]
fn timeout_stops_a_long_command() {
    let sb = Sandbox::new("timeout");
    let out = sb
        .msb()
        .args(["--timeout", "2"])
        .command(["sleep", "1000"])
        .deadline(Duration::from_secs(90))
        .run();
    out.assert_code(EXIT_TIMEOUT).assert_clean();
    assert!(
        out.elapsed < Duration::from_secs(30),
        "--timeout 2 took {:?} to stop the VM\n{}",
        out.elapsed,
        out.describe()
    );
}

/// SIGINT to msb while the command runs: exit 130, no process, socket or
/// run directory left (a bind mount is included so a daemon is running).
#[test]
fn sigint_mid_run_cleans_up_everything() {
    signal_mid_run_cleans_up("sigint", libc::SIGINT, EXIT_SIGINT);
}

/// The same for SIGTERM: exit 143.
#[test]
fn sigterm_mid_run_cleans_up_everything() {
    signal_mid_run_cleans_up("sigterm", libc::SIGTERM, 128 + libc::SIGTERM);
}

fn signal_mid_run_cleans_up(label: &str, signal: i32, want: i32) {
    let sb = Sandbox::new(label);
    let running = sb.start_long_run();
    let seen = running.children_seen();
    let run_dir_entries: Vec<PathBuf> = fs::read_dir(sb.run_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    running.signal(signal);
    let out = running.wait_within(Duration::from_secs(30));
    out.assert_code(want).assert_clean();
    let names: Vec<&str> = seen.iter().map(|p| p.cmdline.as_str()).collect();
    assert!(
        names.iter().any(|c| c.contains("qemu-system"))
            && names.iter().any(|c| c.contains("virtiofsd-msb")),
        "expected a VMM and daemons among msb's children while it ran, saw {names:#?}\n{}",
        out.describe()
    );
    assert!(
        !run_dir_entries.is_empty(),
        "msb's run directory was expected under TMPDIR ({}) while it ran\n{}",
        sb.run_dir().display(),
        out.describe()
    );
}

/// A wrapper script at `dir/name` that records each start in `dir/spawned`
/// and then runs `real`.
fn spy(dir: &Path, name: &str, real: &Path) -> PathBuf {
    let path = dir.join(name);
    let script = format!(
        "#!/bin/sh\necho \"{name} $*\" >> '{}/spawned'\nexec '{}' \"$@\"\n",
        dir.display(),
        real.display()
    );
    fs::write(&path, script).expect("write spy");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod spy");
    path
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Each bad mount spec exits 2 with a message naming it, and nothing is
/// started: no daemon, no VMM (spies on PATH and MSB_DAEMON_BIN record
/// every start; the /proc watcher sees no child either).
#[test]
fn bad_mount_specs_fail_before_anything_starts() {
    let sb = Sandbox::new("badspec");
    let dir = sb.mkdir("dir").display().to_string();
    let img_path = sb.path().join("disk.raw");
    make_ext4_image(&img_path, 16);
    let img = img_path.display().to_string();
    let spies = sb.mkdir("spies");
    let real_daemon = msb_tests::daemon_proc::daemon_binary().unwrap_or_else(|e| panic!("{e}"));
    let daemon_spy = spy(&spies, "virtiofsd-msb", &real_daemon);
    // Spy on the VMMs that exist here (a fake cloud-hypervisor on PATH
    // would change which VMM msb picks).
    for vmm in ["qemu-system-x86_64", "cloud-hypervisor"] {
        if let Some(real) = find_in_path(vmm) {
            spy(&spies, vmm, &real);
        }
    }
    let path = format!(
        "{}:{}",
        spies.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let missing = sb.path().join("missing").display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-v".into(), format!("{missing}:/data")],
            "missing host dir",
        ),
        (
            vec!["-v".into(), format!("{dir}:data")],
            "relative guest path",
        ),
        (
            vec!["-v".into(), format!("{dir}:/data:rw0")],
            "unknown option",
        ),
        (vec!["-v".into(), format!("{dir}:/")], "mount over /"),
        (
            vec!["-v".into(), format!("{dir}:/a/../b")],
            "'..' in guest path",
        ),
        (vec!["--tmpfs".into(), "/t:size=abc".into()], "bad size"),
        (vec!["--tmpfs".into(), "/t:size=0".into()], "zero size"),
        (
            vec!["--tmpfs".into(), "/t:bogus".into()],
            "unknown tmpfs option",
        ),
        (
            vec!["--tmpfs".into(), "/t:stat-virt=strict".into()],
            "stat virtualization on tmpfs",
        ),
        (
            vec!["--disk".into(), format!("{missing}.raw:/d")],
            "missing disk image",
        ),
        (
            vec!["--disk".into(), format!("{dir}:/d")],
            "directory as disk image",
        ),
        (
            vec!["--disk".into(), format!("{img}:/d:format=zip")],
            "unknown disk format",
        ),
        (
            vec!["--disk".into(), format!("{img}:/d:size=1M")],
            "size on a disk",
        ),
        (
            vec![
                "-v".into(),
                format!("{dir}:/data"),
                "--tmpfs".into(),
                "/data".into(),
            ],
            "duplicate guest target",
        ),
        (
            vec!["--mount".into(), "type=foo,dst=/x".into()],
            "unknown mount type",
        ),
        (
            vec!["--mount".into(), "type=bind,dst=/x".into()],
            "bind without src",
        ),
        (
            vec!["--mount".into(), format!("type=bind,src={dir}")],
            "bind without dst",
        ),
        (
            vec!["--mount".into(), format!("type=tmpfs,src={dir},dst=/t")],
            "tmpfs with src",
        ),
    ];
    let mut failures = Vec::new();
    for (args, what) in &cases {
        let out = sb
            .msb()
            .label("badspec")
            .args(args)
            .env("PATH", &path)
            .env("MSB_DAEMON_BIN", &daemon_spy)
            .command(["true"])
            .deadline(Duration::from_secs(60))
            .run();
        let spawned = fs::read_to_string(spies.join("spawned")).unwrap_or_default();
        let _ = fs::remove_file(spies.join("spawned"));
        let mut problems = Vec::new();
        if out.code() != Some(EXIT_USAGE) {
            problems.push(format!("exit status {:?}, want {EXIT_USAGE}", out.code()));
        }
        if !spawned.is_empty() {
            problems.push(format!("processes were started: {spawned:?}"));
        }
        if !out.children_seen.is_empty() {
            let seen: Vec<String> = out.children_seen.iter().map(|p| p.to_string()).collect();
            problems.push(format!("children seen: {seen:?}"));
        }
        if !out.leftovers.is_empty() {
            problems.push("left processes or files behind".to_string());
        }
        if out.stderr.trim().is_empty() {
            problems.push("no error message on stderr".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{what}: {}\n{}",
                problems.join("; "),
                out.describe()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad specs misbehaved:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
