//! One guest run: boot the test guest with the share served by one daemon,
//! time the workload inside it, and read the timings back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use msb_tests::guest_helper::build_static_helper;
use msb_tests::qemu::{Daemon, GuestConfig};

use crate::host_dir::process_cpu_ns;

/// The workload, as the guest runs it in /mnt (the share). Each step is
/// timed with /proc/uptime (10 ms) and reported as `MSB-RESULT step=A B`;
/// the guest's caches are dropped before each step so every lookup reaches
/// the daemon. Around each step the guest prints `MSB-STEP name` and waits
/// half a second, so the host can read the daemon's CPU time there.
const SCRIPT: &str = r#". /lib/msb-test.sh
now() { cut -d' ' -f1 /proc/uptime; }
fresh() { sync; echo 3 > /proc/sys/vm/drop_caches; }
mark() { echo "MSB-STEP $1"; sleep 0.5; }
mkdir -p /mnt/work || fail "mkdir"
fresh
mark begin
a=$(now); tar -xf /src.tar -C /mnt/work || fail "untar"; b=$(now)
result untar "$a $b"
fresh
mark untar
a=$(now); n=$(find /mnt/work | wc -l); b=$(now)
result find "$a $b"
result entries "$n"
fresh
mark find
a=$(now); rm -rf /mnt/work || fail "rm -rf"; b=$(now)
result rm "$a $b"
fresh
mark rm
out=$(/bin/msb-randread /mnt/rand.dat "$READS") || fail "randread: $out"
result randread "$out"
mark randread
msb_finish
"#;

/// The steps, in the order the guest marks their ends.
pub const STEPS: [&str; 4] = ["untar", "find", "rm", "randread"];

/// What one guest run measured, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Daemon CPU seconds per step, in [`STEPS`] order (NaN if unread).
    pub cpu: [f64; 4],
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
    build_static_helper("msb-randread", dir)
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
    let pid = daemon.pid();
    let mut guest = GuestConfig::new(SCRIPT)
        .daemon(daemon)
        .env("READS", files.reads.to_string())
        .file("src.tar", 0o644, files.tar.clone())
        .file("bin/msb-randread", 0o755, files.helper.clone())
        .memory_mib(1024)
        .timeout(Duration::from_secs(1200))
        .start()
        .map_err(|e| e.to_string())?;
    let mut cpu = [f64::NAN; 4];
    let mut last = None;
    for (i, step) in std::iter::once("begin").chain(STEPS).enumerate() {
        if !guest.wait_for_serial(&format!("MSB-STEP {step}\n"), Duration::from_secs(1200)) {
            break;
        }
        let now = process_cpu_ns(pid);
        if let (Some(a), Some(b), Some(slot)) = (last, now, i.checked_sub(1)) {
            cpu[slot] = b.saturating_sub(a) as f64 / 1e9;
        }
        last = now;
    }
    let outcome = guest.wait();
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
        cpu,
        untar: span("untar")?,
        find: span("find")?,
        rm: span("rm")?,
        randread,
    })
}
