//! `bench-guest-io`: in-guest file I/O through virtiofsd-msb and through
//! virtiofsd, in the same run, as ratios (the guest runs under QEMU TCG
//! here, so absolute times say little). Workload: unpack a source tree of
//! ~5,000 files into the share, `find` it, `rm -rf` it, then random 4 KiB
//! O_DIRECT reads of a 64 MiB file. See `scripts/bench-guest-io`.

mod guest;
#[path = "../bench-daemon/host_dir.rs"]
mod host_dir;
mod tree;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use guest::{GuestFiles, Timings};

const USAGE: &str = "\
bench-guest-io: guest file I/O through virtiofsd-msb vs virtiofsd (QEMU guests)

  --rounds N        guest runs per daemon, alternating (default 3)
  --files N         files in the source tree (default 5000)
  --reads N         random 4 KiB reads (default 5000)
  --virtiofsd PATH  reference daemon (default $VIRTIOFSD, else
                    target/bench/virtiofsd-1.14.0/bin/virtiofsd)
  --ours PATH       virtiofsd-msb (default: as the tests find it)
  --markdown FILE   also write the table there
";

struct Args {
    rounds: usize,
    files: usize,
    reads: u64,
    virtiofsd: PathBuf,
    ours: Option<PathBuf>,
    markdown: Option<PathBuf>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut a = Args {
        rounds: 3,
        files: 5000,
        reads: 5000,
        virtiofsd: std::env::var_os("VIRTIOFSD")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                msb_tests::qemu::workspace_root()
                    .join("target/bench/virtiofsd-1.14.0/bin/virtiofsd")
            }),
        ours: None,
        markdown: None,
    };
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let v = it.next().ok_or_else(|| format!("{flag}: needs a value"))?;
        let num = |v: &str| v.parse::<usize>().ok().filter(|&n| n > 0);
        let bad = || format!("{flag}: bad value {v:?}");
        match flag.as_str() {
            "--rounds" => a.rounds = num(&v).ok_or_else(bad)?,
            "--files" => a.files = num(&v).ok_or_else(bad)?,
            "--reads" => a.reads = num(&v).ok_or_else(bad)? as u64,
            "--virtiofsd" => a.virtiofsd = PathBuf::from(v),
            "--ours" => a.ours = Some(PathBuf::from(v)),
            "--markdown" => a.markdown = Some(PathBuf::from(v)),
            _ => return Err(format!("unknown flag {flag} (see --help)")),
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-guest-io: {e}");
            ExitCode::FAILURE
        }
    }
}

fn split(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn run() -> Result<(), String> {
    let Some(args) = parse(std::env::args().skip(1))? else {
        print!("{USAGE}");
        return Ok(());
    };
    let ours = match &args.ours {
        Some(p) => p.clone(),
        None => msb_tests::qemu::daemon_binary().map_err(|e| e.to_string())?,
    };
    if !args.virtiofsd.is_file() {
        return Err(format!(
            "virtiofsd not found at {} (scripts/setup.sh installs it)",
            args.virtiofsd.display()
        ));
    }
    let parent = host_dir::default_parent();
    let root = tempfile::Builder::new()
        .prefix("msb-bench-guest-io-")
        .tempdir_in(&parent)
        .map_err(|e| format!("temporary directory in {}: {e}", parent.display()))?;
    let tree_dir = root.path().join("tree");
    let bytes = tree::generate(&tree_dir, args.files).map_err(|e| format!("tree: {e}"))?;
    let tar_path = root.path().join("src.tar");
    tree::pack(&tree_dir, &tar_path).map_err(|e| format!("tar: {e}"))?;
    let share = root.path().join("share");
    std::fs::create_dir(&share).map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(share.join("rand.dat"), data).map_err(|e| e.to_string())?;
    let helper_dir = msb_tests::qemu::workspace_root().join("target/bench");
    std::fs::create_dir_all(&helper_dir).map_err(|e| e.to_string())?;
    let helper = guest::build_helper(&helper_dir)?;
    let files = GuestFiles {
        tar: std::fs::read(&tar_path).map_err(|e| e.to_string())?,
        helper: std::fs::read(&helper).map_err(|e| e.to_string())?,
        reads: args.reads,
    };
    let daemons = [
        (
            "virtiofsd",
            args.virtiofsd.clone(),
            split("--sandbox none --seccomp none --cache auto --thread-pool-size 0"),
        ),
        (
            "virtiofsd-msb",
            ours,
            split("--sandbox none --seccomp none --cache auto --thread-pool-size 0"),
        ),
    ];
    let mut runs: [Vec<Timings>; 2] = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        // Alternate which daemon goes first.
        for k in 0..2 {
            let i = (k + round) % 2;
            let (name, bin, flags) = &daemons[i];
            let t = guest::run(bin, flags, &share, &files).map_err(|e| format!("{name}: {e}"))?;
            eprintln!(
                "round {}/{}: {name:<14} untar {:.2} s, find {:.2} s, rm {:.2} s, {} reads {:.2} s",
                round + 1,
                args.rounds,
                t.untar,
                t.find,
                t.rm,
                args.reads,
                t.randread
            );
            runs[i].push(t);
        }
    }
    let text = report(&runs, &args, bytes, &parent);
    print!("{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Picks one step's time out of a run's timings.
type Step = fn(&Timings) -> f64;

fn report(runs: &[Vec<Timings>; 2], args: &Args, bytes: u64, parent: &std::path::Path) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "QEMU TCG guest (1 vCPU, 1 GiB), share on {} ({}); medians of {} runs per daemon, \
         alternating; source tree of {} files, {:.1} MiB; {} random 4 KiB O_DIRECT reads \
         of a 64 MiB file.\n",
        parent.display(),
        host_dir::filesystem_name(parent),
        args.rounds,
        args.files,
        bytes as f64 / (1 << 20) as f64,
        args.reads
    );
    s.push_str(
        "| step | virtiofsd s | virtiofsd-msb s | virtiofsd-msb speed / virtiofsd \
         | virtiofsd CPU s | virtiofsd-msb CPU s | CPU ours / virtiofsd |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|\n");
    let steps: [(&str, Step); 4] = [
        ("untar", |t| t.untar),
        ("find", |t| t.find),
        ("rm -rf", |t| t.rm),
        ("random 4 KiB reads", |t| t.randread),
    ];
    for (step, (name, get)) in steps.into_iter().enumerate() {
        let theirs = median(runs[0].iter().map(get).collect());
        let ours = median(runs[1].iter().map(get).collect());
        // Same-round ratios: their time over ours (> 1: ours is faster).
        let ratio = median(
            runs[0]
                .iter()
                .zip(&runs[1])
                .map(|(a, b)| get(a) / get(b))
                .collect(),
        );
        let cpu = |i: usize| median(runs[i].iter().map(|t| t.cpu[step]).collect());
        let (cpu_theirs, cpu_ours) = (cpu(0), cpu(1));
        let _ = writeln!(
            s,
            "| {name} | {theirs:.2} | {ours:.2} | {ratio:.2} | {cpu_theirs:.3} | {cpu_ours:.3} | {:.2} |",
            cpu_ours / cpu_theirs
        );
    }
    s.push_str(
        "\nCPU: the daemon's CPU time (all threads) during the step, read on the host \
         between the guest's step markers.\n",
    );
    s
}
