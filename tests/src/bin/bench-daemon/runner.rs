//! What runs each figure: native syscalls, or a freshly started daemon
//! (virtiofsd or ours) driven over vhost-user; and the order figures run in.

use std::path::PathBuf;

use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::DriverConfig;

use crate::native;
use crate::op::Op;
use crate::pipeline::{self, queue_geometry, Figure, Frontend, Spec, Timing};
use crate::report::Results;
use crate::workload::Targets;

/// Who serves the operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    /// Syscalls in this process, no daemon.
    Native,
    /// The reference daemon, virtiofsd.
    Virtiofsd,
    /// virtiofsd-msb.
    Ours,
    /// Another virtiofsd-msb build (`--variant`), by index.
    Variant(usize),
}

impl Backend {
    /// Name in progress lines and tables.
    pub fn label(self, daemons: &Daemons) -> &str {
        match self {
            Backend::Native => "native",
            Backend::Virtiofsd => "virtiofsd",
            Backend::Ours => "virtiofsd-msb",
            Backend::Variant(i) => daemons.variants.get(i).map_or("?", |v| v.0.as_str()),
        }
    }
}

/// The daemons to compare and how to start them.
#[derive(Debug, Clone)]
pub struct Daemons {
    /// virtiofsd binary.
    pub virtiofsd: PathBuf,
    /// Its flags besides `--socket-path` and `--shared-dir`.
    pub virtiofsd_args: Vec<String>,
    /// virtiofsd-msb binary.
    pub ours: PathBuf,
    /// Its flags besides `--socket-path` and `--shared-dir`.
    pub ours_args: Vec<String>,
    /// Other builds of ours to measure alongside (label, binary): to see
    /// what one change bought, in the same run.
    pub variants: Vec<(String, PathBuf)>,
    /// The variants' flags.
    pub variant_args: Vec<String>,
}

/// Runs figures on one fixture.
pub struct Bench {
    share: PathBuf,
    daemons: Daemons,
    timing: Timing,
    frontend: Frontend,
}

impl Bench {
    /// A bench on the fixture at `share`.
    pub fn new(share: PathBuf, daemons: Daemons, timing: Timing, frontend: Frontend) -> Bench {
        Bench {
            share,
            daemons,
            timing,
            frontend,
        }
    }

    /// Measures `op` served by `backend` with `queues` request queues
    /// (threads, natively) and `depth` requests in flight per queue.
    pub fn figure(
        &self,
        backend: Backend,
        op: Op,
        queues: usize,
        depth: usize,
    ) -> Result<Figure, String> {
        // Dirty pages of an earlier figure (1 MiB writes) must not be
        // written back, and stall the journal, during this one.
        // SAFETY: sync(2) has no arguments and cannot fail.
        unsafe { libc::sync() };
        let (bin, args) = match backend {
            Backend::Native => return native::run(&self.share, op, queues, depth, self.timing),
            Backend::Virtiofsd => (&self.daemons.virtiofsd, &self.daemons.virtiofsd_args),
            Backend::Ours => (&self.daemons.ours, &self.daemons.ours_args),
            Backend::Variant(i) => match self.daemons.variants.get(i) {
                Some((_, bin)) => (bin, &self.daemons.variant_args),
                None => return Err(format!("no variant {i}")),
            },
        };
        let daemon = Daemon::start_serving(bin, &self.share, args.clone())
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let (queue_size, arena_bytes) = queue_geometry(op, depth);
        let config = DriverConfig {
            request_queues: queues,
            queue_size,
            arena_bytes,
            event_idx: true,
            ..DriverConfig::default()
        };
        let fs = daemon.connect_with(config)?;
        let targets = Targets::resolve(&fs)?;
        let spec = Spec {
            op,
            queues,
            depth,
            timing: self.timing,
            frontend: self.frontend,
            daemon_pid: daemon.pid(),
        };
        pipeline::run(&fs, &targets, spec)
            .map_err(|e| format!("{e}\ndaemon log:\n{}", daemon.log_tail(2000)))
    }
}

/// Which figures a run takes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Operations.
    pub ops: Vec<Op>,
    /// Request queue counts (virtiofsd serves one; it runs only there).
    pub queues: Vec<usize>,
    /// Requests in flight per queue.
    pub depths: Vec<usize>,
    /// Rounds; every figure runs once per round.
    pub repeats: usize,
}

/// Runs every figure of `plan` `plan.repeats` times; within a round the
/// backends of one configuration run back to back, in an order that
/// rotates from round to round.
pub fn run_plan(bench: &Bench, plan: &Plan) -> Result<Results, String> {
    let mut results = Results::default();
    for round in 0..plan.repeats {
        for &op in &plan.ops {
            for &queues in &plan.queues {
                for &depth in &plan.depths {
                    let mut backends = vec![Backend::Ours];
                    let variants = bench.daemons.variants.len();
                    backends.extend((0..variants).map(Backend::Variant));
                    if queues == 1 {
                        backends.push(Backend::Virtiofsd);
                    }
                    backends.push(Backend::Native);
                    let turn = round % backends.len();
                    backends.rotate_left(turn);
                    for backend in backends {
                        let fig = bench.figure(backend, op, queues, depth).map_err(|e| {
                            let name = backend.label(&bench.daemons);
                            format!("{name} {} q{queues} d{depth}: {e}", op.key())
                        })?;
                        eprintln!(
                            "round {}/{}: {:<26} q{queues} d{depth:<3} {:<14} {:>12.0} ops/s",
                            round + 1,
                            plan.repeats,
                            op.label(),
                            backend.label(&bench.daemons),
                            fig.ops_per_sec
                        );
                        results.add(backend, op, queues, depth, round, fig);
                    }
                }
            }
        }
    }
    Ok(results)
}
