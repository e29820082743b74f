//! Runs the real `msb` binary for the `run_*` integration tests and checks
//! that it cleaned up after itself.
//!
//! - [`msb_binary`] finds the binary (`$MSB_BIN`, else the newest
//!   `<target>/{release,debug}/msb`, refused when older than its sources);
//!   [`ensure_initramfs`] brings the default initramfs up to date
//!   (`scripts/build-initramfs.sh`) before the first run.
//! - [`Sandbox`] is a test's private temporary directory. Every `msb` started
//!   from it gets `sandbox/run` as `TMPDIR` (and no `XDG_RUNTIME_DIR`), so
//!   its run directory (sockets, FIFOs, logs) lands there and a leftover is
//!   visible.
//! - [`Msb`] builds one `msb` invocation; [`Msb::spawn`] starts it and
//!   [`RunningMsb::wait`] collects a [`MsbOutcome`]: exit status, stdout,
//!   stderr, and what it left behind ([`MsbOutcome::leftovers`]).
//!
//! Leftover detection: while `msb` runs, a watcher thread polls /proc and
//! records every descendant of `msb` (pid + start time). Once `msb` has
//! exited, any of them still alive is a leftover, and so is any process
//! whose command line mentions the sandbox path (a daemon or VMM that
//! escaped the watcher), and any entry left in `sandbox/run` or an
//! `msb-run-<pid>-*` entry in the test's temp dir. Leftover processes are
//! SIGKILLed after being recorded, so a failing test does not leak them.
//!
//! Only one `msb` runs at a time per test process (TCG guests are CPU-bound
//! and the timing tests need the CPU); [`Msb::spawn`] waits for its turn.
//!
//! Environment knobs: `MSB_BIN` (the binary), `MSB_TEST_TMPDIR` (parent of
//! the sandboxes), `MSB_TEST_DEADLINE_SECS` (per-run deadline, default 180),
//! `MSB_TEST_ECHO=1` (copy each run's stderr to the test's stderr).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

/// Exit status of `msb` for bad usage or a bad mount spec.
pub const EXIT_USAGE: i32 = 2;
/// Exit status of `msb` when `--timeout` was reached.
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit status of `msb` when it or the VM failed.
pub const EXIT_LAUNCHER: i32 = 125;
/// Exit status of `msb` when the command could not be run.
pub const EXIT_CANNOT_RUN: i32 = 126;
/// Exit status of `msb` when the command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit status of `msb` after SIGINT.
pub const EXIT_SIGINT: i32 = 130;

/// The Cargo workspace root (parent of the tests crate).
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Finds the `msb` binary: `$MSB_BIN`, else the newer of
/// `<target>/release/msb` and `<target>/debug/msb` (`<target>` is
/// `$CARGO_TARGET_DIR` or the workspace's `target/`). The error says how to
/// build it.
pub fn msb_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("MSB_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("MSB_BIN={} is not a file", p.display()))
        };
    }
    let workspace = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                workspace.join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    let (built, bin) = ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("msb"))
        .filter_map(|p| {
            let mtime = fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            Some((mtime, p))
        })
        .max_by_key(|(mtime, _): &(SystemTime, PathBuf)| *mtime)
        .ok_or_else(|| {
            format!(
                "the msb binary was not found under {}/{{release,debug}}: build it with \
                 `cargo build --release -p launcher -p virtiofsd-msb` (and run \
                 scripts/setup.sh for the guest kernel and initramfs), or set MSB_BIN",
                target.display()
            )
        })?;
    // `cargo test` does not rebuild another package's binary: refuse a
    // binary older than the sources it is built from.
    for src in ["launcher/src", "guest-init/src"] {
        if let Some(newer) = newer_file(&workspace.join(src), built) {
            return Err(format!(
                "{} is older than {}: rebuild it (`cargo build --release -p launcher`) \
                 or set MSB_BIN",
                bin.display(),
                newer.display()
            ));
        }
    }
    Ok(bin)
}

/// Some file under `dir` modified after `than`, if any.
fn newer_file(dir: &Path, than: SystemTime) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.flatten() {
        let path = e.path();
        let meta = e.metadata().ok()?;
        if meta.is_dir() {
            if let Some(p) = newer_file(&path, than) {
                return Some(p);
            }
        } else if meta.modified().ok()? > than {
            return Some(path);
        }
    }
    None
}

/// Builds (or finds current) the default initramfs with
/// `scripts/build-initramfs.sh`, once per process, so the guest runs the
/// msb-init of this tree; skipped when `$MSB_INITRAMFS` names one. Panics
/// with the script's output when it fails.
pub fn ensure_initramfs() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        if std::env::var_os("MSB_INITRAMFS").is_some() {
            return Ok(());
        }
        let script = workspace_root().join("scripts/build-initramfs.sh");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}); run scripts/setup.sh first. Its output:\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A test's private temporary directory, removed on drop. `run/` inside it
/// is the `TMPDIR` of every `msb` started from it.
pub struct Sandbox {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Sandbox {
    /// Creates a sandbox (mode 0755) in `$MSB_TEST_TMPDIR` or the system
    /// temp dir; its name starts with `msb-test-<label>-`.
    pub fn new(label: &str) -> Sandbox {
        let parent = std::env::var_os("MSB_TEST_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix(&format!("msb-test-{label}-"))
            .tempdir_in(&parent)
            .unwrap_or_else(|e| panic!("creating a sandbox in {}: {e}", parent.display()));
        let path = dir.path().to_path_buf();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod sandbox");
        fs::create_dir(path.join("run")).expect("mkdir sandbox/run");
        Sandbox {
            dir: Some(dir),
            path,
        }
    }

    /// The sandbox directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory `msb` gets as `TMPDIR`.
    pub fn run_dir(&self) -> PathBuf {
        self.path.join("run")
    }

    /// Creates (mode 0755) and returns `<sandbox>/<name>`.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    /// An `msb run` invocation from this sandbox (the `run` subcommand is
    /// already in the arguments).
    pub fn msb(&self) -> Msb {
        Msb::new(self)
    }

    /// Starts `msb run -v <sandbox>/data:/data -- sh -c 'echo started;
    /// sleep 1000'` and waits (up to 2 min) until the guest command runs,
    /// so a test can disturb a live run. Panics if it never starts.
    pub fn start_long_run(&self) -> RunningMsb {
        let data = self.mkdir("data");
        let mut running = self
            .msb()
            .arg("-v")
            .arg(format!("{}:/data", data.display()))
            .sh("echo started; sleep 1000")
            .spawn();
        if !running.wait_for_stdout("started", Duration::from_secs(120)) {
            panic!(
                "the guest command never started\n{}",
                running.wait().describe()
            );
        }
        running
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Kill anything still referring to the sandbox before removing it.
        for p in processes_mentioning(&self.path) {
            kill_pid(p.pid);
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                eprintln!("removing sandbox {}: {e}", self.path.display());
            }
        }
    }
}

/// Per-run deadline: `$MSB_TEST_DEADLINE_SECS` or 180 s.
fn default_deadline() -> Duration {
    let secs = std::env::var("MSB_TEST_DEADLINE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

/// One `msb run …` invocation. Build it, then [`spawn`](Self::spawn) or
/// [`run`](Self::run).
pub struct Msb {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    sandbox: PathBuf,
    run_dir: PathBuf,
    deadline: Duration,
    label: String,
}

impl Msb {
    /// `msb run` with no options yet, started from `sandbox`.
    pub fn new(sandbox: &Sandbox) -> Msb {
        Msb {
            args: vec!["run".into()],
            env: Vec::new(),
            sandbox: sandbox.path().to_path_buf(),
            run_dir: sandbox.run_dir(),
            deadline: default_deadline(),
            label: "msb".into(),
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Msb {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Msb
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Appends `--` and the guest command.
    pub fn command<I, S>(self, cmd: I) -> Msb
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.arg("--").args(cmd)
    }

    /// Appends `-- sh -c SCRIPT`.
    pub fn sh(self, script: &str) -> Msb {
        self.command(["sh", "-c", script])
    }

    /// Sets an environment variable of the `msb` process.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Msb {
        self.env
            .push((k.as_ref().to_os_string(), v.as_ref().to_os_string()));
        self
    }

    /// Kills `msb` (and its process group) if it runs longer than `d`.
    pub fn deadline(mut self, d: Duration) -> Msb {
        self.deadline = d;
        self
    }

    /// Names the run in messages and log file names.
    pub fn label(mut self, l: &str) -> Msb {
        self.label = l.to_string();
        self
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        let mut s = String::from("msb");
        for a in &self.args {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$;&|<>".contains(c)) {
                let _ = write!(s, " '{}'", a.replace('\'', r"'\''"));
            } else {
                let _ = write!(s, " {a}");
            }
        }
        s
    }

    /// Starts `msb` once it is this run's turn. Panics (the test fails) when
    /// the binary is missing or cannot be started.
    pub fn spawn(self) -> RunningMsb {
        let bin = msb_binary().unwrap_or_else(|e| panic!("{e}"));
        ensure_initramfs();
        let turn = Turn::take();
        let logs = self.sandbox.join("logs");
        fs::create_dir_all(&logs).expect("mkdir sandbox/logs");
        let n = fs::read_dir(&logs).map(|d| d.count()).unwrap_or(0);
        let out_path = logs.join(format!("{n:02}-{}.stdout", self.label));
        let err_path = logs.join(format!("{n:02}-{}.stderr", self.label));
        let out = File::create(&out_path).expect("create stdout log");
        let err = File::create(&err_path).expect("create stderr log");
        let mut cmd = Command::new(&bin);
        // Without XDG_RUNTIME_DIR msb puts its run directory in TMPDIR, where
        // a leftover is visible (its per-user caches go to ~/.microsandbox).
        cmd.args(&self.args)
            .env("TMPDIR", &self.run_dir)
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // msb dies with the test process (it then cleans up itself).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let described = self.describe();
        let started = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({described}): {e}", bin.display()));
        let pid = child.id() as i32;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let watcher = {
            let (stop, seen) = (stop.clone(), seen.clone());
            thread::spawn(move || watch_descendants(pid, &stop, &seen))
        };
        RunningMsb {
            child: Some(child),
            pid,
            described,
            started,
            deadline: self.deadline,
            out_path,
            err_path,
            sandbox: self.sandbox,
            run_dir: self.run_dir,
            stop,
            seen,
            watcher: Some(watcher),
            _turn: turn,
        }
    }

    /// Runs `msb` to the end and returns what happened.
    pub fn run(self) -> MsbOutcome {
        self.spawn().wait()
    }
}

use crate::vm_turn::VmTurn as Turn;

pub use crate::host_tools::{
    debugfs_cat, debugfs_write, host_tool, make_ext4_image, qemu_img_convert, tail,
};
pub use crate::procs::{all_processes, proc_info, processes_mentioning, ProcInfo};
use crate::procs::{kill_pid, watch_descendants};

/// A running `msb`. Dropping it without [`wait`](Self::wait) kills its
/// process group and everything it started.
pub struct RunningMsb {
    child: Option<Child>,
    pid: i32,
    described: String,
    started: Instant,
    deadline: Duration,
    out_path: PathBuf,
    err_path: PathBuf,
    sandbox: PathBuf,
    run_dir: PathBuf,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeMap<i32, ProcInfo>>>,
    watcher: Option<JoinHandle<()>>,
    _turn: Turn,
}

impl RunningMsb {
    /// The pid of `msb`.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// What `msb` wrote on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        read_lossy(&self.out_path)
    }

    /// What `msb` wrote on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        read_lossy(&self.err_path)
    }

    /// The descendants of `msb` seen so far.
    pub fn children_seen(&self) -> Vec<ProcInfo> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.values().cloned().collect()
    }

    /// True once `msb` has exited.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Waits until `msb`'s stdout contains `needle` (true), or `msb` exits
    /// or `timeout` passes (false).
    pub fn wait_for_stdout(&mut self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.stdout_so_far().contains(needle) {
                return true;
            }
            if self.has_exited() || Instant::now() >= end {
                return self.stdout_so_far().contains(needle);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to `msb` only (not its process group).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet
        // (the Child is still held), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({}, {signal}): {}",
            self.pid,
            std::io::Error::last_os_error()
        );
    }

    /// Like [`wait`](Self::wait), with the deadline moved to `d` from now.
    pub fn wait_within(mut self, d: Duration) -> MsbOutcome {
        self.deadline = self.started.elapsed() + d;
        self.wait()
    }

    /// Waits for `msb` to exit (killing its process group at the deadline),
    /// then looks for leftovers and kills them.
    pub fn wait(mut self) -> MsbOutcome {
        let mut child = self.child.take().expect("msb child");
        let end = self.started + self.deadline;
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) => {}
                Err(e) => panic!("waiting for msb: {e}"),
            }
            if Instant::now() >= end {
                timed_out = true;
                // SAFETY: kill(2) on msb's own process group (process_group(0)
                // made it a group leader); no memory is involved.
                unsafe { libc::kill(-self.pid, libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(10));
        };
        let elapsed = self.started.elapsed();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        // What msb left running: give exiting processes a moment to go.
        thread::sleep(Duration::from_millis(200));
        let leftovers = self.collect_leftovers();
        for p in &leftovers.processes {
            kill_pid(p.pid);
        }
        let outcome = MsbOutcome {
            command: self.described.clone(),
            status,
            timed_out,
            deadline: self.deadline,
            elapsed,
            stdout: read_lossy(&self.out_path),
            stderr: read_lossy(&self.err_path),
            children_seen: self.children_seen(),
            leftovers,
        };
        if std::env::var("MSB_TEST_ECHO").as_deref() == Ok("1") {
            let mut e = std::io::stderr().lock();
            let _ = writeln!(e, "{}", outcome.describe());
        }
        // Leave the run dir empty for the next run's check.
        if let Ok(entries) = fs::read_dir(&self.run_dir) {
            for e in entries.flatten() {
                let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
            }
        }
        outcome
    }

    fn collect_leftovers(&self) -> Leftovers {
        let mut processes: Vec<ProcInfo> = Vec::new();
        for p in self.children_seen() {
            if let Some(now) = proc_info(p.pid) {
                if now.start == p.start && now.state != 'Z' {
                    processes.push(now);
                }
            }
        }
        for p in processes_mentioning(&self.sandbox) {
            if !processes.iter().any(|q| q.pid == p.pid) {
                processes.push(p);
            }
        }
        let mut files: Vec<PathBuf> = fs::read_dir(&self.run_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        let prefix = format!("msb-run-{}-", self.pid);
        let mut dirs = vec![std::env::temp_dir(), PathBuf::from("/tmp")];
        dirs.extend(std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from));
        for dir in dirs {
            if let Ok(d) = fs::read_dir(&dir) {
                files.extend(
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                        .map(|e| e.path()),
                );
            }
        }
        files.sort();
        files.dedup();
        Leftovers { processes, files }
    }
}

impl Drop for RunningMsb {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on msb's own process group; no memory involved.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in self.children_seen() {
            if proc_info(p.pid).is_some_and(|now| now.start == p.start) {
                kill_pid(p.pid);
            }
        }
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

fn read_lossy(p: &Path) -> String {
    String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned()
}

/// What an `msb` run left behind.
#[derive(Debug, Clone, Default)]
pub struct Leftovers {
    /// Processes still alive after `msb` exited (they have been killed since).
    pub processes: Vec<ProcInfo>,
    /// Files or directories left in the run directory, or `msb-run-<pid>-*`
    /// entries in the temp dir, /tmp or `$XDG_RUNTIME_DIR`.
    pub files: Vec<PathBuf>,
}

impl Leftovers {
    /// True when nothing was left.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.files.is_empty()
    }
}

/// How one `msb` run ended.
#[derive(Debug, Clone)]
pub struct MsbOutcome {
    /// The command line.
    pub command: String,
    /// Exit status; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// True when the deadline killed it.
    pub timed_out: bool,
    /// The deadline it had.
    pub deadline: Duration,
    /// Wall-clock time it ran.
    pub elapsed: Duration,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
    /// Every descendant process seen while it ran.
    pub children_seen: Vec<ProcInfo>,
    /// What it left behind.
    pub leftovers: Leftovers,
}

impl MsbOutcome {
    /// Its exit code (`None` when killed by a signal or at the deadline).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// A multi-line account: command, status, time, stdout, stderr,
    /// leftovers; used in every assertion message.
    pub fn describe(&self) -> String {
        let how = match (self.status, self.timed_out) {
            (_, true) => format!("KILLED at the test deadline of {:?}", self.deadline),
            (Some(s), _) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit status {c}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => s.to_string(),
            },
            (None, false) => "no status".to_string(),
        };
        let mut s = format!(
            "`{}` ended with {how} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n",
            self.command,
            self.elapsed,
            tail(&self.stdout, 40),
            tail(&self.stderr, 60)
        );
        if !self.leftovers.is_empty() {
            s.push_str("--- left behind ---\n");
            for p in &self.leftovers.processes {
                let _ = writeln!(s, "process {p}");
            }
            for f in &self.leftovers.files {
                let _ = writeln!(s, "file {}", f.display());
            }
        }
        s
    }

    /// Asserts the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "expected exit status {code}\n{}",
            self.describe()
        );
        self
    }

    /// Asserts `msb` left no process, socket or run directory behind.
    #[track_caller]
    pub fn assert_clean(&self) -> &Self {
        assert!(
            self.leftovers.is_empty(),
            "msb left processes or files behind\n{}",
            self.describe()
        );
        self
    }

    /// Asserts stdout is exactly `want`.
    #[track_caller]
    pub fn assert_stdout(&self, want: &str) -> &Self {
        assert_eq!(self.stdout, want, "unexpected stdout\n{}", self.describe());
        self
    }

    /// The value of `key=` on a line of stdout (the guest scripts print
    /// `key=value` lines), or `None`.
    pub fn value(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(str::to_string)
    }
}
