//! Real guests under QEMU TCG: boot msb's guest kernel with the test
//! initramfs, let it mount a directory served by a real `virtiofsd-msb`
//! process, run a shell script inside, and collect what it printed.
//!
//! Pieces:
//! - [`GuestAssets`]: qemu, the guest kernel (`scripts/setup.sh` builds it) and
//!   the cached base initramfs (`scripts/build-test-initramfs.sh` builds it).
//! - [`start_daemon`]: a [`Daemon`] (from [`crate::daemon_proc`]) serving a
//!   fresh temporary `share/`; lay out files in it, then hand it over.
//! - [`GuestConfig`]: one guest run (script, daemon, limits) → [`RunningGuest`]
//!   → [`GuestOutcome`]. QEMU is killed and reaped and the work directory
//!   removed when the [`RunningGuest`] is dropped, also when a test panics;
//!   the daemon (and its share) when the [`GuestOutcome`] (or the
//!   [`RunningGuest`]) is dropped.
//! - The guest side: `tests/guest/init.sh` is PID 1; the test script becomes
//!   `/test.sh` (run in `/mnt`, the mounted share) and can source
//!   `/lib/msb-test.sh` (`tests/guest/lib.sh`) for the result protocol.
//!
//! Environment knobs: `MSB_DAEMON_BIN` (daemon binary), `MSB_QEMU` (qemu
//! binary), `MSB_GUEST_DIR` (kernel + initramfs dir, default
//! `<workspace>/target/guest`), `MSB_GUEST_TIMEOUT_SECS` (overrides every
//! guest timeout), `MSB_GUEST_ECHO=1` (copy the serial console to stderr live),
//! `MSB_DAEMON_ARGS` (extra daemon flags for [`start_daemon`], whitespace
//! separated).

pub mod cpio;
pub mod outcome;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::daemon_proc::{daemon_binary, Daemon, DaemonOptions};
pub use cpio::CpioFile;
pub use outcome::{DaemonReport, GuestOutcome};

/// The shell helpers installed as `/lib/msb-test.sh` in every guest.
pub const GUEST_LIB: &str = include_str!("../guest/lib.sh");

/// The virtiofs tag the harness gives the share.
pub const TAG: &str = "msbtest";

/// A harness failure (missing prerequisite, process that would not start…),
/// as opposed to a guest-side test failure, which is in [`GuestOutcome`].
#[derive(Clone)]
pub struct HarnessError(String);

// Debug shows the plain message: `.expect()` output stays readable.
impl std::fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl HarnessError {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        HarnessError(msg.into())
    }

    fn io(context: impl std::fmt::Display, e: std::io::Error) -> Self {
        HarnessError(format!("{context}: {e}"))
    }
}

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

/// The Cargo workspace root (parent of the tests crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Where the guest kernel and test initramfs live: `$MSB_GUEST_DIR` or
/// `<workspace>/target/guest`.
pub fn guest_dir() -> PathBuf {
    std::env::var_os("MSB_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/guest"))
}

/// Makes `cmd`'s child get SIGKILL when the spawning thread exits, so a test
/// process that dies abruptly leaves no qemu or daemon behind. Spawn from the
/// thread that owns the child's handle.
fn set_parent_death_signal(cmd: &mut Command) {
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls prctl(2), which is async-signal-safe and touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The host-side files a guest run needs.
#[derive(Debug, Clone)]
pub struct GuestAssets {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// The guest kernel (`msb-kernel/vmlinux`, an ELF with a PVH entry).
    pub kernel: PathBuf,
    /// The base test initramfs (gzip'd newc cpio).
    pub initramfs: PathBuf,
}

impl GuestAssets {
    /// Locates qemu and the kernel and builds (or reuses) the base initramfs,
    /// once per process. A missing piece is an error that says to run
    /// `scripts/setup.sh`.
    pub fn get() -> Result<&'static GuestAssets, HarnessError> {
        static ASSETS: OnceLock<Result<GuestAssets, HarnessError>> = OnceLock::new();
        ASSETS
            .get_or_init(Self::locate)
            .as_ref()
            .map_err(Clone::clone)
    }

    fn locate() -> Result<GuestAssets, HarnessError> {
        let qemu = match std::env::var_os("MSB_QEMU") {
            Some(q) => PathBuf::from(q),
            None => find_in_path("qemu-system-x86_64").ok_or_else(|| {
                HarnessError::new(
                    "qemu-system-x86_64 not found in PATH: run scripts/setup.sh \
                     (Debian package qemu-system-x86)",
                )
            })?,
        };
        let dir = guest_dir();
        let kernel = dir.join("msb-kernel/vmlinux");
        if !kernel.is_file() {
            return Err(HarnessError::new(format!(
                "guest kernel {} not found: run scripts/setup.sh",
                kernel.display()
            )));
        }
        let script = workspace_root().join("scripts/build-test-initramfs.sh");
        let initramfs = dir.join("test-initramfs.cpio.gz");
        let out = Command::new(&script)
            .arg(&initramfs)
            .env("MSB_GUEST_DIR", &dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| HarnessError::io(format!("run {}", script.display()), e))?;
        if !out.status.success() || !initramfs.is_file() {
            return Err(HarnessError::new(format!(
                "{} failed ({}); run scripts/setup.sh first. Its output:\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(GuestAssets {
            qemu,
            kernel,
            initramfs,
        })
    }
}

/// Starts `virtiofsd-msb` on a fresh temporary `share/` with `args` plus
/// `$MSB_DAEMON_ARGS`; lay out the share (and its surroundings under
/// [`Daemon::root`]) before handing the daemon to [`GuestConfig::daemon`].
pub fn start_daemon(args: &[&str]) -> Result<Daemon, HarnessError> {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    if let Ok(extra) = std::env::var("MSB_DAEMON_ARGS") {
        args.extend(extra.split_whitespace().map(String::from));
    }
    Daemon::start_with(DaemonOptions {
        args,
        prepare: None,
    })
    .map_err(|e| HarnessError::io("start virtiofsd-msb", e))
}

/// One guest run: the script to run in the guest, the directory to share,
/// and limits. Build with [`GuestConfig::new`], then [`start`](Self::start)
/// or [`run`](Self::run).
pub struct GuestConfig {
    script: String,
    daemon: Option<Daemon>,
    env: Vec<(String, String)>,
    files: Vec<CpioFile>,
    timeout: Duration,
    memory_mib: u32,
    cpus: u32,
    kernel_args: Vec<String>,
}

impl GuestConfig {
    /// A run of `script` (busybox sh; it may `. /lib/msb-test.sh`). Defaults:
    /// no share, 60 s timeout, 512 MiB, 1 vCPU.
    pub fn new(script: impl Into<String>) -> Self {
        GuestConfig {
            script: script.into(),
            daemon: None,
            env: Vec::new(),
            files: Vec::new(),
            timeout: Duration::from_secs(60),
            memory_mib: 512,
            cpus: 1,
            kernel_args: Vec::new(),
        }
    }

    /// Connects the guest to `daemon` (see [`start_daemon`]); the guest
    /// mounts its share at `/mnt`. Without a daemon no virtiofs device is
    /// added and the guest reports a mount failure (status 125).
    pub fn daemon(mut self, daemon: Daemon) -> Self {
        self.daemon = Some(daemon);
        self
    }

    /// Exports `key=value` to the guest script (prepended as `export`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Adds a file to the guest's root filesystem (path without leading `/`).
    pub fn file(mut self, path: impl Into<String>, mode: u32, data: impl Into<Vec<u8>>) -> Self {
        self.files.push(CpioFile {
            path: path.into(),
            mode,
            data: data.into(),
        });
        self
    }

    /// Hard limit for the whole run, boot to poweroff (`$MSB_GUEST_TIMEOUT_SECS`
    /// overrides it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Guest memory in MiB.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Number of vCPUs.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// An extra word on the kernel command line (e.g. `msb.debug=1`).
    pub fn kernel_arg(mut self, arg: impl Into<String>) -> Self {
        self.kernel_args.push(arg.into());
        self
    }

    fn effective_timeout(&self) -> Duration {
        std::env::var("MSB_GUEST_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(self.timeout)
    }

    /// The initrd: base initramfs, zero padding to 4 bytes, then a newc
    /// archive with /test.sh, /lib/msb-test.sh and the extra files.
    fn initrd(&self, base: &Path) -> Result<Vec<u8>, HarnessError> {
        let mut image = std::fs::read(base)
            .map_err(|e| HarnessError::io(format!("read {}", base.display()), e))?;
        while image.len() & 3 != 0 {
            image.push(0);
        }
        let mut script = String::new();
        for (key, value) in &self.env {
            script.push_str(&format!(
                "export {key}='{}'\n",
                value.replace('\'', r"'\''")
            ));
        }
        script.push_str(&self.script);
        let mut files = vec![
            CpioFile {
                path: "test.sh".into(),
                mode: 0o755,
                data: script.into_bytes(),
            },
            CpioFile {
                path: "lib/msb-test.sh".into(),
                mode: 0o644,
                data: GUEST_LIB.as_bytes().to_vec(),
            },
        ];
        files.extend(self.files.iter().cloned());
        image.extend_from_slice(&cpio::newc_archive(&files));
        Ok(image)
    }

    /// Starts QEMU (connected to the daemon, if any); returns at once.
    /// Guests of one test process run one at a time (TCG is CPU-bound): this
    /// blocks while another [`RunningGuest`] of the process is alive.
    pub fn start(self) -> Result<RunningGuest, HarnessError> {
        let assets = GuestAssets::get()?;
        let turn = Turn::take();
        let workdir = tempfile::Builder::new()
            .prefix("msb-qemu-")
            .tempdir()
            .map_err(|e| HarnessError::io("create temp dir", e))?;
        let initrd = workdir.path().join("initrd.img");
        std::fs::write(&initrd, self.initrd(&assets.initramfs)?)
            .map_err(|e| HarnessError::io(format!("write {}", initrd.display()), e))?;
        let timeout = self.effective_timeout();
        let daemon = self.daemon;
        let mem = self.memory_mib;
        // The machine, firmware and TCG kernel parameters of `msb run`
        // (launcher/src/vmm/qemu.rs says why each), for the same boot time.
        let mut cmdline = String::from("console=ttyS0 panic=-1 quiet no_timer_check");
        if self.cpus == 1 {
            cmdline.push_str(" noapictimer noreplace-smp");
        }
        if daemon.is_some() {
            cmdline.push_str(&format!(" msb.tag={TAG}"));
        }
        for arg in &self.kernel_args {
            cmdline.push(' ');
            cmdline.push_str(arg);
        }
        let mut cmd = Command::new(&assets.qemu);
        cmd.args([
            "-machine",
            "q35,sata=off,smbus=off,vmport=off,smm=off,i8042=off",
            "-bios",
            "qboot.rom",
            "-accel",
            "tcg",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-m", &format!("{mem}M"), "-smp", &self.cpus.to_string()])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(&assets.kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &cmdline])
        .args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        ])
        .args(["-numa", "node,memdev=mem"]);
        if let Some(d) = &daemon {
            // The socket file appears at bind(); give the daemon a moment to
            // listen() so QEMU's connect does not race it.
            std::thread::sleep(Duration::from_millis(50));
            let mut chardev = OsString::from("socket,id=vfs0,path=");
            chardev.push(d.socket());
            cmd.arg("-chardev").arg(chardev).args([
                "-device",
                &format!("vhost-user-fs-pci,queue-size=1024,chardev=vfs0,tag={TAG}"),
            ]);
        }
        let stderr_path = workdir.path().join("qemu.stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| HarnessError::io(format!("create {}", stderr_path.display()), e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        set_parent_death_signal(&mut cmd);
        let started = Instant::now();
        let mut qemu = cmd
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawn {}", assets.qemu.display()), e))?;

        let serial = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = qemu.stdout.take().expect("qemu stdout is piped");
        let sink = Arc::clone(&serial);
        let echo = std::env::var_os("MSB_GUEST_ECHO").is_some_and(|v| v != "0");
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if echo {
                    let _ = std::io::stderr().write_all(&buf[..n]);
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(RunningGuest {
            qemu: Some(qemu),
            qemu_exit: None,
            reader: Some(reader),
            serial,
            stderr_path,
            started,
            timeout,
            daemon,
            workdir,
            _turn: turn,
        })
    }

    /// [`start`](Self::start)s the guest and [`wait`](RunningGuest::wait)s for it.
    pub fn run(self) -> Result<GuestOutcome, HarnessError> {
        Ok(self.start()?.wait())
    }
}

/// A guest that is running (or has stopped but was not collected yet).
/// Dropping it kills QEMU and the daemon, reaps them and removes its work
/// directory and the daemon's share.
pub struct RunningGuest {
    qemu: Option<Child>,
    qemu_exit: Option<ExitStatus>,
    reader: Option<JoinHandle<()>>,
    serial: Arc<Mutex<Vec<u8>>>,
    stderr_path: PathBuf,
    started: Instant,
    timeout: Duration,
    // Dropped after `Drop::drop` ran, in this order: daemon, then work dir.
    daemon: Option<Daemon>,
    workdir: tempfile::TempDir,
    _turn: Turn,
}

use crate::vm_turn::VmTurn as Turn;

impl RunningGuest {
    /// The serial console output so far (carriage returns removed).
    pub fn serial_text(&self) -> String {
        let bytes = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).replace('\r', "")
    }

    /// Waits until the console shows `needle`, QEMU exits or `timeout`
    /// passes; true if `needle` was seen.
    pub fn wait_for_serial(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.serial_text().contains(needle) {
                return true;
            }
            if self.qemu_exited() || Instant::now() >= deadline {
                return self.serial_text().contains(needle);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The daemon serving the guest's share, if any.
    pub fn daemon(&self) -> Option<&Daemon> {
        self.daemon.as_ref()
    }

    /// The harness's private work directory (socket, initrd, logs).
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    fn qemu_exited(&mut self) -> bool {
        if let Some(q) = self.qemu.as_mut() {
            if let Ok(Some(status)) = q.try_wait() {
                self.qemu_exit = Some(status);
                self.qemu = None;
            }
        }
        self.qemu.is_none()
    }

    fn kill_qemu(&mut self) {
        if let Some(mut q) = self.qemu.take() {
            let _ = q.kill();
            self.qemu_exit = q.wait().ok();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Waits for the guest to power off (or the timeout, then kills QEMU),
    /// gives the daemon 5 s to exit by itself on the disconnect, and collects
    /// everything into a [`GuestOutcome`], which keeps the daemon (and so its
    /// share) for the host-side checks.
    pub fn wait(mut self) -> GuestOutcome {
        let deadline = self.started + self.timeout;
        let mut timed_out = false;
        while !self.qemu_exited() {
            if Instant::now() >= deadline {
                timed_out = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_qemu();
        let elapsed = self.started.elapsed();
        let mut report = DaemonReport::default();
        if let Some(d) = self.daemon.as_mut() {
            report.served = true;
            report.exit_on_disconnect = d.wait_exit(Duration::from_secs(5)).ok().flatten();
            report.socket_removed = !d.socket().exists();
            report.log = d.log_tail(64 * 1024);
        }
        let qemu_stderr =
            String::from_utf8_lossy(&std::fs::read(&self.stderr_path).unwrap_or_default())
                .into_owned();
        let serial = self.serial_text();
        let mut outcome = GuestOutcome::parse(serial, timed_out, self.timeout, elapsed, report);
        outcome.qemu_exit = self.qemu_exit;
        outcome.qemu_stderr = qemu_stderr;
        outcome.daemon_process = self.daemon.take();
        outcome
    }
}

impl Drop for RunningGuest {
    fn drop(&mut self) {
        self.kill_qemu();
    }
}
