//! Medians over rounds and the tables printed at the end: ops/s with
//! same-round ratios, latency at one request in flight, and the goals.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::args::Args;
use crate::op::Op;
use crate::pipeline::{Figure, Frontend};
use crate::runner::{Backend, Daemons};

/// (operation, request queues, requests in flight per queue, backend);
/// a native figure's depth is the number of buffers its thread cycles
/// through (its calls are synchronous).
type Key = (Op, usize, usize, Backend);

/// Every figure of a run, by round.
#[derive(Default)]
pub struct Results {
    figures: BTreeMap<Key, BTreeMap<usize, Figure>>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let digits = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "–".into()
    }
}

impl Results {
    /// Records the figure of `backend` in round `round`.
    pub fn add(
        &mut self,
        backend: Backend,
        op: Op,
        queues: usize,
        depth: usize,
        round: usize,
        fig: Figure,
    ) {
        self.figures
            .entry((op, queues, depth, backend))
            .or_default()
            .insert(round, fig);
    }

    fn ops(&self, key: Key) -> f64 {
        let runs = self.figures.get(&key);
        median(
            runs.map(|r| r.values().map(|f| f.ops_per_sec).collect())
                .unwrap_or_default(),
        )
    }

    /// Median over rounds of `a / b`, each measured in the same round.
    fn ratio(&self, a: Key, b: Key) -> f64 {
        let (Some(ra), Some(rb)) = (self.figures.get(&a), self.figures.get(&b)) else {
            return f64::NAN;
        };
        median(
            ra.iter()
                .filter_map(|(round, fa)| rb.get(round).map(|fb| fa.ops_per_sec / fb.ops_per_sec))
                .collect(),
        )
    }

    fn cpu(&self, key: Key) -> f64 {
        self.median_of(key, |f| f.cpu_us_per_op)
    }

    fn frontend_cpu(&self, key: Key) -> f64 {
        self.median_of(key, |f| f.frontend_cpu_us_per_op)
    }

    /// CPUs kept busy by the daemon and the frontend together (median over
    /// rounds): near the host's CPU count, the machine is the limit.
    fn cpus_busy(&self, key: Key) -> f64 {
        self.median_of(key, |f| {
            (f.cpu_us_per_op + f.frontend_cpu_us_per_op) * f.ops_per_sec / 1e6
        })
    }

    fn median_of(&self, key: Key, value: impl Fn(&Figure) -> f64) -> f64 {
        let runs = self.figures.get(&key);
        median(
            runs.map(|r| r.values().map(&value).collect())
                .unwrap_or_default(),
        )
    }

    /// CPU time per operation (markdown): what each daemon spends, which
    /// the machine's load barely moves, what the test frontend spends
    /// beside it, and how many CPUs the two kept busy together.
    pub fn cpu_table(&self) -> String {
        let mut s = String::from(
            "| op | queues | in flight per queue | virtiofsd (1 queue) µs | virtiofsd-msb µs | ours / virtiofsd \
             | frontend µs (virtiofsd / ours) | CPUs busy (virtiofsd / ours) |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        for op in self.ops_measured() {
            for (q, d) in self.configs(op) {
                let theirs_key = (op, 1, d, Backend::Virtiofsd);
                let ours_key = (op, q, d, Backend::Ours);
                let theirs = self.cpu(theirs_key);
                let ours = self.cpu(ours_key);
                let _ = writeln!(
                    s,
                    "| {} | {q} | {d} | {theirs:.1} | {ours:.1} | {} | {:.1} / {:.1} | {:.2} / {:.2} |",
                    op.label(),
                    ratio(ours / theirs),
                    self.frontend_cpu(theirs_key),
                    self.frontend_cpu(ours_key),
                    self.cpus_busy(theirs_key),
                    self.cpus_busy(ours_key),
                );
            }
        }
        s
    }

    fn latency(&self, key: Key, p: f64) -> f64 {
        let runs = self.figures.get(&key);
        median(
            runs.map(|r| r.values().map(|f| f.percentile_us(p)).collect())
                .unwrap_or_default(),
        )
    }

    fn configs(&self, op: Op) -> Vec<(usize, usize)> {
        let mut v: Vec<_> = self
            .figures
            .keys()
            .filter(|k| k.0 == op && k.3 == Backend::Ours)
            .map(|k| (k.1, k.2))
            .collect();
        v.dedup();
        v
    }

    fn ops_measured(&self) -> Vec<Op> {
        let mut v: Vec<Op> = self.figures.keys().map(|k| k.0).collect();
        v.dedup();
        v
    }

    /// The ops/s table (markdown).
    pub fn throughput_table(&self) -> String {
        let mut s = String::new();
        s.push_str(
            "| op | queues | in flight per queue | native | virtiofsd (1 queue) | virtiofsd-msb | ours / virtiofsd | virtiofsd / native | ours / native |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for op in self.ops_measured() {
            for (q, d) in self.configs(op) {
                let ours = (op, q, d, Backend::Ours);
                let theirs = (op, 1, d, Backend::Virtiofsd);
                let native_q = (op, q, d, Backend::Native);
                let native_1 = (op, 1, d, Backend::Native);
                let _ = writeln!(
                    s,
                    "| {} | {q} | {d} | {} | {} | {} | {} | {} | {} |",
                    op.label(),
                    thousands(self.ops(native_q)),
                    thousands(self.ops(theirs)),
                    thousands(self.ops(ours)),
                    ratio(self.ratio(ours, theirs)),
                    ratio(self.ratio(theirs, native_1)),
                    ratio(self.ratio(ours, native_q)),
                );
            }
        }
        s
    }

    /// Each `--variant` next to ours (markdown; empty without variants):
    /// ops/s relative to virtiofsd in the same rounds, and daemon CPU time
    /// per operation, which the machine's load barely moves.
    pub fn variant_table(&self, daemons: &Daemons) -> String {
        if daemons.variants.is_empty() {
            return String::new();
        }
        let mut s =
            String::from("| op | queues | in flight per queue | virtiofsd CPU µs | virtiofsd-msb");
        for (label, _) in &daemons.variants {
            let _ = write!(s, " | {label}");
        }
        s.push_str(" |\n|---|---|---|---|---");
        s.push_str(&"|---".repeat(daemons.variants.len()));
        s.push_str("|\n");
        for op in self.ops_measured() {
            for (q, d) in self.configs(op) {
                let theirs = (op, 1, d, Backend::Virtiofsd);
                let cell = |b: Backend| {
                    let key = (op, q, d, b);
                    let r = ratio(self.ratio(key, theirs));
                    format!("{r} ({:.1} µs)", self.cpu(key))
                };
                let _ = write!(
                    s,
                    "| {} | {q} | {d} | {:.1} | {}",
                    op.label(),
                    self.cpu(theirs),
                    cell(Backend::Ours)
                );
                for i in 0..daemons.variants.len() {
                    let _ = write!(s, " | {}", cell(Backend::Variant(i)));
                }
                s.push_str(" |\n");
            }
        }
        s
    }

    /// Latency at one request in flight on one queue (markdown).
    pub fn latency_table(&self) -> String {
        let mut s = String::from(
            "| op (1 queue, 1 in flight) | native p50 / p99 µs | virtiofsd p50 / p99 µs | virtiofsd-msb p50 / p99 µs |\n\
             |---|---|---|---|\n",
        );
        let pair = |k: Key| {
            format!(
                "{:.1} / {:.1}",
                self.latency(k, 50.0),
                self.latency(k, 99.0)
            )
        };
        for op in self.ops_measured() {
            if !self.figures.contains_key(&(op, 1, 1, Backend::Ours)) {
                continue;
            }
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                op.label(),
                pair((op, 1, 1, Backend::Native)),
                pair((op, 1, 1, Backend::Virtiofsd)),
                pair((op, 1, 1, Backend::Ours)),
            );
        }
        s
    }

    /// The goals of issue 12, checked on this run's ratios.
    pub fn goals(&self) -> String {
        let mut s = String::new();
        let mut worst: Option<(f64, String)> = None;
        let mut misses = Vec::new();
        for op in self.ops_measured() {
            for (q, d) in self.configs(op).into_iter().filter(|c| c.0 == 1) {
                let theirs = (op, 1, d, Backend::Virtiofsd);
                let r = self.ratio((op, 1, d, Backend::Ours), theirs);
                let what = format!("{} at {d} in flight: {r:.2}", op.label());
                if r < 1.3 {
                    // Where native syscalls with the same buffers are not
                    // 1.3x virtiofsd either, no daemon making those calls
                    // can be.
                    let native = self.ratio((op, 1, d, Backend::Native), theirs);
                    misses.push(format!("{what} (native: {native:.2}x virtiofsd)"));
                }
                if worst.as_ref().is_none_or(|w| r < w.0) {
                    worst = Some((r, what));
                }
                let _ = q;
            }
        }
        let _ = writeln!(
            s,
            "- 1 queue, every op >= 1.3x virtiofsd: {} (lowest: {})",
            if misses.is_empty() { "met" } else { "NOT met" },
            worst.map(|w| w.1).unwrap_or_else(|| "–".into())
        );
        for m in &misses {
            let _ = writeln!(s, "  - below: {m}");
        }
        let mut lines = Vec::new();
        let mut met = true;
        for op in [Op::Getattr, Op::Lookup, Op::Read4k] {
            for (q, d) in self.configs(op).into_iter().filter(|c| c.0 == 2) {
                let r = self.ratio((op, q, d, Backend::Ours), (op, 1, d, Backend::Virtiofsd));
                met &= r >= 1.8;
                lines.push(format!("{} at {d} in flight: {r:.2}", op.label()));
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(
                s,
                "- 2 queues, >= 1.8x virtiofsd's 1 queue on getattr, lookup, read 4 KiB: {} ({})",
                if met { "met" } else { "NOT met" },
                lines.join("; ")
            );
        }
        s
    }
}

/// The whole report: how it was run, the tables, the goals.
pub fn render(results: &Results, args: &Args, fixture: &str) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Host kernel {}, {cpus} CPUs, files on {fixture}; medians of {} rounds, {} ms measured \
         per figure after {} ms warm-up, a fresh daemon per figure; ratios are medians of \
         same-round ratios; native: one thread per queue cycling through as many buffers as \
         requests in flight.\n\
         virtiofsd flags: `{}`; virtiofsd-msb flags: `{}`; the frontend {}.\n",
        kernel.trim(),
        args.plan.repeats,
        args.timing.measure.as_millis(),
        args.timing.warmup.as_millis(),
        args.daemons.virtiofsd_args.join(" "),
        args.daemons.ours_args.join(" "),
        match args.frontend {
            Frontend::Wait => "sleeps on the call eventfds between replies (like a guest)",
            Frontend::Spin => "polls the used rings (the daemon alone)",
        },
    );
    s.push_str("Operations per second:\n\n");
    s.push_str(&results.throughput_table());
    let variants = results.variant_table(&args.daemons);
    if !variants.is_empty() {
        s.push_str(
            "\nOther builds: ops/s relative to virtiofsd (same rounds) and daemon CPU time \
             per operation:\n\n",
        );
        s.push_str(&variants);
    }
    s.push_str(
        "\nCPU time per operation: the daemon (all its threads) and the test frontend \
         (this process), and the CPUs both kept busy:\n\n",
    );
    s.push_str(&results.cpu_table());
    s.push_str("\nLatency per operation:\n\n");
    s.push_str(&results.latency_table());
    s.push_str("\nGoals:\n\n");
    s.push_str(&results.goals());
    s
}
