//! One daemon figure: every request queue keeps `depth` requests in flight
//! (a slot is refilled as soon as its reply is back), one thread drives all
//! queues and sleeps on the call eventfds when nothing is back, as a guest
//! waits for its interrupt. Operations completed inside the measuring
//! window count.

use std::time::{Duration, Instant};

use msb_tests::vhost_driver::window::{wait_any, Window};
use msb_tests::vhost_driver::FsDriver;

use crate::host_dir::process_cpu_ns;

use crate::op::Op;
use crate::workload::{buffer_sizes, Targets, Workload};

/// How long a figure warms up and then measures.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Time before counting starts.
    pub warmup: Duration,
    /// Time operations are counted.
    pub measure: Duration,
}

/// How the frontend waits for replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// Sleeps on the call eventfds, as a guest waits for its interrupt:
    /// every wakeup the daemon causes is in the figure.
    Wait,
    /// Never sleeps: keeps looking at the used rings, as a guest with
    /// halt polling does. The figure is then what the daemon itself can do.
    Spin,
}

/// What one figure measured.
#[derive(Debug, Clone, Default)]
pub struct Figure {
    /// Operations completed per second in the measuring window.
    pub ops_per_sec: f64,
    /// Per-operation latencies (recorded at one request in flight only).
    pub latencies: Vec<Duration>,
    /// Daemon CPU time per operation in microseconds (NaN natively).
    pub cpu_us_per_op: f64,
    /// This process's CPU time per operation in microseconds: the test
    /// frontend, which on a small host shares the CPUs with the daemon
    /// (NaN natively).
    pub frontend_cpu_us_per_op: f64,
}

/// The share of an operation that ran from `start` to `end` falling inside
/// the measuring window `[t0, t1)`: summed over all operations this counts
/// long operations (a whole directory listing) fairly even when only a few
/// complete inside the window.
pub fn credit(start: Instant, end: Instant, (t0, t1): (Instant, Instant)) -> f64 {
    let from = start.max(t0);
    let to = end.min(t1);
    if to <= from {
        return 0.0;
    }
    let whole = end.saturating_duration_since(start).as_secs_f64();
    if whole == 0.0 {
        return 1.0;
    }
    (to - from).as_secs_f64() / whole
}

impl Figure {
    /// A figure from `ops` operations (in credits) in `window`.
    pub fn new(ops: f64, window: Duration, mut latencies: Vec<Duration>) -> Figure {
        latencies.sort_unstable();
        Figure {
            ops_per_sec: ops / window.as_secs_f64(),
            latencies,
            cpu_us_per_op: f64::NAN,
            frontend_cpu_us_per_op: f64::NAN,
        }
    }

    /// The `p`-th percentile latency in microseconds (NaN without samples).
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() - 1) as f64 * p / 100.0).round() as usize;
        self.latencies[i].as_secs_f64() * 1e6
    }
}

/// The window geometry a figure needs: (queue size, arena bytes per queue).
pub fn queue_geometry(op: Op, depth: usize) -> (u16, u64) {
    let (req, reply) = buffer_sizes(op);
    let stride = u64::from(req).next_multiple_of(64) + u64::from(reply).next_multiple_of(64);
    let size = (2 * depth).next_power_of_two().max(256) as u16;
    (size, stride * depth as u64 + 4096)
}

/// One figure to take from a daemon.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The operation.
    pub op: Op,
    /// Request queues used (`1..=queues`).
    pub queues: usize,
    /// Requests in flight on each.
    pub depth: usize,
    /// Warm-up and measuring time.
    pub timing: Timing,
    /// How the frontend waits.
    pub frontend: Frontend,
    /// The daemon's process id, for its CPU time.
    pub daemon_pid: u32,
}

/// Runs `spec.op` on request queues `1..=spec.queues` of `driver` with
/// `spec.depth` requests in flight on each.
pub fn run(driver: &FsDriver, targets: &Targets, spec: Spec) -> Result<Figure, String> {
    let Spec {
        op,
        queues,
        depth,
        timing,
        frontend,
        daemon_pid,
    } = spec;
    let (req_cap, reply_cap) = buffer_sizes(op);
    let mut windows = Vec::with_capacity(queues);
    let mut loads = Vec::with_capacity(queues);
    for q in 1..=queues {
        let w = driver
            .window(q, depth, req_cap, reply_cap)
            .map_err(|e| format!("queue {q}: {e}"))?;
        let load = Workload::new(op, driver, targets, q, depth);
        if let Some((at, data)) = load.payload() {
            for slot in 0..depth {
                w.fill_request(slot, at, &data).map_err(|e| e.to_string())?;
            }
        }
        windows.push(w);
        loads.push(load);
    }
    let mut run = Run {
        uniques: vec![vec![0; depth]; queues],
        started: vec![vec![Instant::now(); depth]; queues],
        record_latency: depth == 1 && queues == 1,
        latencies: Vec::new(),
        counted: 0.0,
        reply: vec![0u8; reply_cap as usize],
        done: Vec::with_capacity(depth),
        frontend,
        daemon_pid,
        cpu: (None, None),
    };
    for (q, (w, load)) in windows.iter_mut().zip(&mut loads).enumerate() {
        for slot in 0..depth {
            let r = load.start(slot);
            w.submit(slot, &r.prefix, r.len, r.reply_cap)
                .map_err(|e| e.to_string())?;
            run.uniques[q][slot] = r.unique;
        }
        w.flush().map_err(|e| e.to_string())?;
    }
    let t0 = Instant::now() + timing.warmup;
    let t1 = t0 + timing.measure;
    run.drive(&mut windows, &mut loads, t0, t1)?;
    drop(windows);
    for load in &mut loads {
        load.flush_forgets()?;
    }
    let mut fig = Figure::new(run.counted, timing.measure, run.latencies);
    if let (Some(a), Some(b)) = run.cpu {
        let per_op = |from: u64, to: u64| to.saturating_sub(from) as f64 / 1000.0 / run.counted;
        fig.cpu_us_per_op = per_op(a.daemon, b.daemon);
        fig.frontend_cpu_us_per_op = per_op(a.frontend, b.frontend);
    }
    Ok(fig)
}

/// CPU time used so far, in nanoseconds, by the daemon and by this process
/// (the frontend).
#[derive(Clone, Copy)]
struct CpuSample {
    daemon: u64,
    frontend: u64,
}

impl CpuSample {
    fn now(daemon_pid: u32) -> Option<CpuSample> {
        Some(CpuSample {
            daemon: process_cpu_ns(daemon_pid)?,
            frontend: process_cpu_ns(std::process::id())?,
        })
    }
}

/// Longest time without any reply before a figure is given up.
const STALL: Duration = Duration::from_secs(30);

/// The bookkeeping of one figure.
struct Run {
    uniques: Vec<Vec<u64>>,
    started: Vec<Vec<Instant>>,
    record_latency: bool,
    latencies: Vec<Duration>,
    counted: f64,
    reply: Vec<u8>,
    done: Vec<(usize, u32)>,
    frontend: Frontend,
    daemon_pid: u32,
    /// CPU time at the start and the end of the measuring window.
    cpu: (Option<CpuSample>, Option<CpuSample>),
}

impl Run {
    /// Keeps every slot busy until `t1`, then lets in-flight operations
    /// finish; counts the part of each operation inside `[t0, t1)`.
    fn drive(
        &mut self,
        windows: &mut [Window<'_>],
        loads: &mut [Workload<'_>],
        t0: Instant,
        t1: Instant,
    ) -> Result<(), String> {
        let mut last_progress = Instant::now();
        loop {
            let now = Instant::now();
            let stopping = now >= t1;
            if now >= t0 && self.cpu.0.is_none() {
                self.cpu.0 = CpuSample::now(self.daemon_pid);
            }
            if stopping && self.cpu.1.is_none() {
                self.cpu.1 = CpuSample::now(self.daemon_pid);
            }
            let mut progressed = false;
            for (q, (w, load)) in windows.iter_mut().zip(loads.iter_mut()).enumerate() {
                self.done.clear();
                let done = &mut self.done;
                w.harvest(|slot, len| done.push((slot, len)))
                    .map_err(|e| e.to_string())?;
                progressed |= !self.done.is_empty();
                for i in 0..self.done.len() {
                    let (slot, len) = self.done[i];
                    self.complete(w, load, q, slot, len, (t0, t1), stopping)?;
                }
                w.flush().map_err(|e| e.to_string())?;
            }
            if stopping && windows.iter().all(|w| w.in_flight() == 0) {
                return Ok(());
            }
            if progressed {
                last_progress = Instant::now();
                continue;
            }
            if self.frontend == Frontend::Spin {
                if last_progress.elapsed() > STALL {
                    return Err(format!("no reply for {STALL:?}"));
                }
                std::hint::spin_loop();
                continue;
            }
            let mut ready = false;
            for w in windows.iter_mut() {
                ready |= w.arm().map_err(|e| e.to_string())?;
            }
            if !ready {
                wait_any(windows, Duration::from_millis(100)).map_err(|e| e.to_string())?;
                if last_progress.elapsed() > STALL {
                    return Err(format!("no reply for {STALL:?}"));
                }
            }
        }
    }

    /// Handles the reply in `slot` of queue `q` and refills the slot.
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &mut self,
        w: &mut Window<'_>,
        load: &mut Workload<'_>,
        q: usize,
        slot: usize,
        len: u32,
        (t0, t1): (Instant, Instant),
        stopping: bool,
    ) -> Result<(), String> {
        let n = load.read_back(slot, len);
        w.read_reply(slot, &mut self.reply[..n])
            .map_err(|e| e.to_string())?;
        let next = load.on_reply(slot, self.uniques[q][slot], len, &self.reply[..n])?;
        let req = match next {
            Some(r) => r,
            None => {
                let end = Instant::now();
                let start = self.started[q][slot];
                self.counted += credit(start, end, (t0, t1));
                if self.record_latency && start >= t0 && end < t1 {
                    self.latencies.push(end - start);
                }
                if stopping {
                    return Ok(());
                }
                self.started[q][slot] = end;
                load.start(slot)
            }
        };
        w.submit(slot, &req.prefix, req.len, req.reply_cap)
            .map_err(|e| e.to_string())?;
        self.uniques[q][slot] = req.unique;
        Ok(())
    }
}
