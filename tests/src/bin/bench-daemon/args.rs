//! Command-line flags of `bench-daemon`.

use std::path::PathBuf;
use std::time::Duration;

use crate::op::Op;
use crate::pipeline::{Frontend, Timing};
use crate::runner::{Daemons, Plan};

/// What `--help` prints.
pub const USAGE: &str = "\
bench-daemon: ops/s of native syscalls, virtiofsd and virtiofsd-msb, side by side

  --virtiofsd PATH       reference daemon (default $VIRTIOFSD, else
                         target/bench/virtiofsd-1.14.0/bin/virtiofsd)
  --ours PATH            virtiofsd-msb (default: as the tests find it)
  --virtiofsd-args ARGS  its flags (default: --sandbox none --seccomp none
                         --cache auto --thread-pool-size 0)
  --ours-args ARGS       our flags (default: --sandbox none --seccomp none
                         --cache auto --thread-pool-size 0)
  --variant LABEL=PATH   another virtiofsd-msb build to measure alongside
                         (repeatable)
  --variant-args ARGS    their flags (default: --sandbox none --cache auto
                         --thread-pool-size 0, which builds from before
                         --seccomp existed take)
  --ops LIST             comma-separated: getattr,lookup,read4k,write4k,
                         read1m,write1m,create,readdirplus (default all)
  --queues LIST          request queues (default 1,2)
  --depths LIST          requests in flight per queue (default 1,16,64)
  --repeats N            rounds; medians are reported (default 3)
  --warmup-ms N          per figure (default 200)
  --measure-ms N         per figure (default 600)
  --frontend wait|spin   wait: sleep on the call eventfds like a guest
                         waiting for its interrupt (default); spin: poll
                         the used rings, so figures show the daemon alone
  --dir DIR              where the fixture goes (default /dev/shm when it
                         stores user.* xattrs, else the temporary dir)
  --markdown FILE        also write the tables there
";

/// Parsed flags.
pub struct Args {
    /// The daemons.
    pub daemons: Daemons,
    /// The figures.
    pub plan: Plan,
    /// Per-figure timing.
    pub timing: Timing,
    /// How the frontend waits for replies.
    pub frontend: Frontend,
    /// Fixture parent directory.
    pub dir: Option<PathBuf>,
    /// Markdown output file.
    pub markdown: Option<PathBuf>,
}

fn list<T>(v: &str, parse: impl Fn(&str) -> Option<T>, flag: &str) -> Result<Vec<T>, String> {
    v.split(',')
        .map(|x| parse(x.trim()).ok_or_else(|| format!("{flag}: bad value {x:?}")))
        .collect()
}

fn split_args(v: &str) -> Vec<String> {
    v.split_whitespace().map(String::from).collect()
}

impl Args {
    /// Parses `args` (without the program name); `Ok(None)` for `--help`.
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default();
        let mut virtiofsd = std::env::var_os("VIRTIOFSD")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace.join("target/bench/virtiofsd-1.14.0/bin/virtiofsd"));
        let mut ours = None;
        let mut virtiofsd_args =
            split_args("--sandbox none --seccomp none --cache auto --thread-pool-size 0");
        let mut ours_args =
            split_args("--sandbox none --seccomp none --cache auto --thread-pool-size 0");
        let mut variant_args = split_args("--sandbox none --cache auto --thread-pool-size 0");
        let mut variants = Vec::new();
        let mut plan = Plan {
            ops: Op::ALL.to_vec(),
            queues: vec![1, 2],
            depths: vec![1, 16, 64],
            repeats: 3,
        };
        let mut timing = Timing {
            warmup: Duration::from_millis(200),
            measure: Duration::from_millis(600),
        };
        let (mut dir, mut markdown) = (None, None);
        let mut frontend = Frontend::Wait;
        let mut args = args;
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                return Ok(None);
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag}: needs a value (see --help)"))?;
            let num = |v: &str| v.parse::<usize>().ok().filter(|&n| n > 0);
            match flag.as_str() {
                "--virtiofsd" => virtiofsd = PathBuf::from(value),
                "--ours" => ours = Some(PathBuf::from(value)),
                "--virtiofsd-args" => virtiofsd_args = split_args(&value),
                "--ours-args" => ours_args = split_args(&value),
                "--variant-args" => variant_args = split_args(&value),
                "--variant" => {
                    let (label, path) = value
                        .split_once('=')
                        .ok_or_else(|| format!("--variant {value}: expected LABEL=PATH"))?;
                    variants.push((label.to_string(), PathBuf::from(path)));
                }
                "--ops" => plan.ops = list(&value, Op::parse, &flag)?,
                "--queues" => plan.queues = list(&value, num, &flag)?,
                "--depths" => plan.depths = list(&value, num, &flag)?,
                "--repeats" => plan.repeats = list(&value, num, &flag)?[0],
                "--warmup-ms" => {
                    timing.warmup = Duration::from_millis(list(&value, num, &flag)?[0] as u64)
                }
                "--measure-ms" => {
                    timing.measure = Duration::from_millis(list(&value, num, &flag)?[0] as u64)
                }
                "--frontend" => {
                    frontend = match value.as_str() {
                        "wait" => Frontend::Wait,
                        "spin" => Frontend::Spin,
                        _ => return Err(format!("--frontend {value}: wait or spin")),
                    }
                }
                "--dir" => dir = Some(PathBuf::from(value)),
                "--markdown" => markdown = Some(PathBuf::from(value)),
                _ => return Err(format!("unknown flag {flag} (see --help)")),
            }
        }
        let ours = match ours {
            Some(p) => p,
            None => msb_tests::daemon_proc::daemon_binary().map_err(|e| e.to_string())?,
        };
        if !virtiofsd.is_file() {
            return Err(format!(
                "virtiofsd not found at {} (scripts/setup.sh installs it; or --virtiofsd PATH)",
                virtiofsd.display()
            ));
        }
        Ok(Some(Args {
            daemons: Daemons {
                virtiofsd,
                virtiofsd_args,
                ours,
                ours_args,
                variants,
                variant_args,
            },
            plan,
            timing,
            frontend,
            dir,
            markdown,
        }))
    }
}
