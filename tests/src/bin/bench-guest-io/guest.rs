//! One guest run: boot the test guest with the share served by one daemon,
//! time the workload inside it, and read the timings back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use msb_tests::qemu::{workspace_root, Daemon, GuestConfig};

/// The workload, as the guest runs it in /mnt (the share). Each step is
/// timed with /proc/uptime (10 ms) and reported as `MSB-RESULT step=A B`;
/// the guest's caches are dropped before each step so every lookup reaches
/// the daemon.
const SCRIPT: &str = r#". /lib/msb-test.sh
now() { cut -d' ' -f1 /proc/uptime; }
fresh() { sync; echo 3 > /proc/sys/vm/drop_caches; }
mkdir -p /mnt/work || fail "mkdir"
fresh
a=$(now); tar -xf /src.tar -C /mnt/work || fail "untar"; b=$(now)
result untar "$a $b"
fresh
a=$(now); n=$(find /mnt/work | wc -l); b=$(now)
result find "$a $b"
result entries "$n"
fresh
a=$(now); rm -rf /mnt/work || fail "rm -rf"; b=$(now)
result rm "$a $b"
fresh
out=$(/bin/msb-randread /mnt/rand.dat "$READS") || fail "randread: $out"
result randread "$out"
msb_finish
"#;

/// What one guest run measured, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// `tar -xf` of the tree into the share.
    pub untar: f64,
    /// `find` over the unpacked tree.
    pub find: f64,
    /// `rm -rf` of the tree.
    pub rm: f64,
    /// The random 4 KiB reads.
    pub randread: f64,
}

/// Builds the static guest helper `msb-randread` into `dir` (once; rebuilt
/// when its source is newer) and returns its path.
pub fn build_helper(dir: &Path) -> Result<PathBuf, String> {
    let src = workspace_root().join("tests/guest/msb-randread.rs");
    let out = dir.join("msb-randread");
    let newer = |a: &Path, b: &Path| -> bool {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((m(a), m(b)), (Some(x), Some(y)) if x > y)
    };
    if out.is_file() && !newer(&src, &out) {
        return Ok(out);
    }
    let status = Command::new("rustc")
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=2",
            "-C",
            "debuginfo=0",
        ])
        .args(["-C", "target-feature=+crt-static"])
        .args([
            "--target",
            "x86_64-unknown-linux-gnu",
            "--crate-name",
            "msb_randread",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status()
        .map_err(|e| format!("rustc: {e}"))?;
    if !status.success() {
        return Err(format!("rustc {} failed: {status}", src.display()));
    }
    Ok(out)
}

/// The guest files every run gets: the tree's archive and the helper.
pub struct GuestFiles {
    /// The tar archive of the source tree.
    pub tar: Vec<u8>,
    /// The `msb-randread` binary.
    pub helper: Vec<u8>,
    /// Random reads per run.
    pub reads: u64,
}

/// Runs the workload once with `bin args` serving `share`.
pub fn run(
    bin: &Path,
    args: &[String],
    share: &Path,
    files: &GuestFiles,
) -> Result<Timings, String> {
    let daemon = Daemon::start_serving(bin, share, args.to_vec())
        .map_err(|e| format!("starting {}: {e}", bin.display()))?;
    let outcome = GuestConfig::new(SCRIPT)
        .daemon(daemon)
        .env("READS", files.reads.to_string())
        .file("src.tar", 0o644, files.tar.clone())
        .file("bin/msb-randread", 0o755, files.helper.clone())
        .memory_mib(1024)
        .timeout(Duration::from_secs(1200))
        .run()
        .map_err(|e| e.to_string())?;
    if outcome.status != Some(0) || !outcome.failures().is_empty() {
        return Err(format!("guest run failed:\n{}", outcome.report()));
    }
    let span = |key: &str| -> Result<f64, String> {
        let v = outcome.result(key);
        let mut it = v.split_whitespace().map(str::parse::<f64>);
        match (it.next(), it.next()) {
            (Some(Ok(a)), Some(Ok(b))) => Ok(b - a),
            _ => Err(format!("guest result {key}={v:?} is not two times")),
        }
    };
    let randread = outcome
        .result("randread")
        .split_whitespace()
        .find_map(|w| w.strip_prefix("seconds="))
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| format!("randread result {:?}", outcome.result("randread")))?;
    Ok(Timings {
        untar: span("untar")?,
        find: span("find")?,
        rm: span("rm")?,
        randread,
    })
}
