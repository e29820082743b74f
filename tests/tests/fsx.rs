//! fsx (file system exerciser) on a file inside a `virtiofsd-msb
//! --fuse-mount` mount: random reads, writes, mmap, truncate, fallocate,
//! hole punching, copy_file_range… each read checked against fsx's model of
//! the file. Any mismatch or non-zero exit fails the test.
//!
//! The same seed first runs on a native file of the same host filesystem as a
//! control (a failure there is the host's, not the daemon's) and to give a
//! time to compare with.
//!
//! `MSB_FSX_SEED` and `MSB_FSX_OPS` override the seed and the number of
//! operations (default 50,000) to reproduce or shorten a run.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{report, FuseMount, Scratch};

const DEFAULT_OPS: u64 = 50_000;
const DEFAULT_SEED: u64 = 20_251_123;
const OK_LINE: &str = "All operations completed A-OK!";

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}")),
        Err(_) => default,
    }
}

/// Runs fsx on `file`; returns how it ended, or the failure with fsx's log.
fn run_fsx(
    fsx: &Path,
    config: &Path,
    file: &Path,
    ops: u64,
    seed: u64,
    artifacts: &Path,
    label: &str,
) -> Result<common::Finished, String> {
    let mut cmd = Command::new(fsx);
    cmd.arg("-N")
        .arg(ops.to_string())
        .arg("-S")
        .arg(seed.to_string())
        .arg("-P")
        .arg(artifacts)
        .arg("-f")
        .arg(config)
        .arg(file)
        .env("RUST_BACKTRACE", "1");
    let fin = common::run_with_deadline(cmd, artifacts, label, Duration::from_secs(1200));
    let ok = fin.status.is_some_and(|s| s.success()) && fin.stdout.contains(OK_LINE);
    if ok {
        Ok(fin)
    } else {
        Err(format!(
            "fsx {label} (-N {ops} -S {seed} on {}) failed: {}\nstdout:\n{}\nstderr (fsx's operation log):\n{}",
            file.display(),
            fin.describe(),
            common::tail(&fin.stdout, 20),
            common::tail(&fin.stderr, 80)
        ))
    }
}

fn rate(ops: u64, fin: &common::Finished) -> String {
    let secs = fin.elapsed.as_secs_f64();
    format!("{ops} ops in {secs:.1} s ({:.0} ops/s)", ops as f64 / secs)
}

#[test]
fn fsx_through_fuse() {
    if !common::preflight("fsx_through_fuse") {
        return;
    }
    let fsx = common::find_tool("fsx");
    let daemon = common::daemon_bin();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("fsx.toml");
    let ops = env_u64("MSB_FSX_OPS", DEFAULT_OPS);
    let seed = env_u64("MSB_FSX_SEED", DEFAULT_SEED);
    if ops < DEFAULT_OPS {
        report(&format!(
            "fsx: MSB_FSX_OPS={ops} is below the required {DEFAULT_OPS} operations"
        ));
    }

    let scratch = Scratch::new("msb-fsx-");
    let native = scratch.mkdir("native");
    let backing = scratch.mkdir("backing");
    let mnt = scratch.mkdir("mnt");
    let artifacts = scratch.mkdir("artifacts");

    // Control run on the host filesystem itself.
    let native_fin = run_fsx(
        &fsx,
        &config,
        &native.join("fsx.data"),
        ops,
        seed,
        &artifacts,
        "native",
    )
    .unwrap_or_else(|e| panic!("the host filesystem itself fails fsx (not a daemon bug):\n{e}"));
    report(&format!("fsx native: {}", rate(ops, &native_fin)));

    let mut mount = FuseMount::start(&daemon, &backing, &mnt, &artifacts.join("daemon.log"));
    let result = run_fsx(
        &fsx,
        &config,
        &mount.path().join("fsx.data"),
        ops,
        seed,
        &artifacts,
        "fuse",
    );
    let alive = mount.check_alive();
    // The host must see what was written through the mount. Only read back
    // when fsx finished and the daemon is up: a hung daemon would block us.
    let (via_mount, on_host) = if result.is_ok() && alive.is_ok() {
        (
            fs::read(mount.path().join("fsx.data")),
            fs::read(backing.join("fsx.data")),
        )
    } else {
        (Ok(Vec::new()), Ok(Vec::new()))
    };
    let daemon_log = mount.log_tail(40);
    let ended = mount.shutdown();
    report(&format!(
        "virtiofsd-msb (FUSE mode) stopped: {}",
        ended.as_deref().unwrap_or("?")
    ));

    let fin = match result {
        Ok(fin) => fin,
        Err(e) => panic!("{e}\ndaemon log (last lines):\n{daemon_log}"),
    };
    report(&format!(
        "fsx through virtiofsd-msb --fuse-mount: {} (native: {:.1} s), seed {seed}",
        rate(ops, &fin),
        native_fin.elapsed.as_secs_f64()
    ));
    if let Err(e) = alive {
        panic!("{e}\ndaemon log (last lines):\n{daemon_log}");
    }
    match (via_mount, on_host) {
        (Ok(a), Ok(b)) => assert!(
            a == b,
            "after fsx, {} ({} bytes) differs from the host's {} ({} bytes)",
            mnt.join("fsx.data").display(),
            a.len(),
            backing.join("fsx.data").display(),
            b.len()
        ),
        (a, b) => panic!(
            "reading the fsx file back: via the mount {:?}, on the host {:?}",
            a.map(|v| v.len()),
            b.map(|v| v.len())
        ),
    }
}
