//! `msb run`: from parsed options to an exit status.
//!
//! 1. parse and check every mount (usage errors exit 2 before anything
//!    starts);
//! 2. make a private run directory; start one `virtiofsd-msb` per virtio-fs
//!    share (control share, rootfs, each bind mount) on a socket the launcher
//!    created and passes down (`--fd`), so the VMM never races the daemon;
//! 3. write the guest config onto the control share, open the output FIFOs,
//!    start the VMM;
//! 4. supervise: VMM exit, `--timeout`, SIGINT/SIGTERM, a daemon dying;
//! 5. read the guest's status, map it to an exit status, and tear down:
//!    children are stopped and reaped and the run directory removed on every
//!    path (the [`Session`] drop order guarantees it).

mod output;
pub mod signals;

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use guest_init::config::{
    GuestConfig, GuestMount, GuestStatus, InitStage, StatusReport, BOOTED_FILE, CONFIG_FILE,
    CONFIG_VERSION, CONTROL_TAG, STARTED_MESSAGE, STATUS_FILE,
};

use crate::assets::Assets;
use crate::cli::{RunArgs, VmmChoice};
use crate::exit::{self, RunError};
use crate::process::{Supervised, PASSED_FD};
use crate::spec::{self, MountSpec};
use crate::vmm::ch_events::{self, ChLifecycle, Flow};
use crate::vmm::{self, Accel, Disk, FsShare, VmPlan, VmmExit, VmmKind};
use output::Pump;

/// Request queues per virtio-fs device.
const FS_QUEUES: u32 = 1;
/// Virtqueue size of virtio-fs devices.
const FS_QUEUE_SIZE: u32 = 1024;
/// Base kernel command line (backends add the console).
/// `cryptomgr.notests` and the blacklisted KDF self-test save about half a
/// second of boot under TCG; the guest kernel's crypto is not what msb relies
/// on (its data path is virtio-fs and virtio-blk).
const KERNEL_CMDLINE: &str =
    "quiet loglevel=3 rdinit=/init cryptomgr.notests initcall_blacklist=crypto_kdf108_init";
/// virtio-fs tag of the `--rootfs` share.
const ROOTFS_TAG: &str = "msb-root";

/// Everything a run owns. Fields drop in order: the VMM stops first, then
/// the daemons, then the run directory goes, then the volume leases are
/// released (nothing serves a volume any more by then).
struct Session {
    pumps: Vec<Pump>,
    vmm: Option<Supervised>,
    daemons: Vec<Supervised>,
    dir: RunDir,
    /// Held for its drop, which releases the leases.
    _leases: Vec<volumes::Lease>,
}

/// The private directory of one run, removed on drop.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create() -> Result<RunDir, RunError> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir());
        let base = base.unwrap_or_else(std::env::temp_dir);
        for attempt in 0..100u32 {
            let path = base.join(format!("msb-run-{}-{attempt}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(RunDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(RunError::launcher(format!(
                        "run directory {}: {e}",
                        path.display()
                    )))
                }
            }
        }
        Err(RunError::launcher(format!(
            "no free run directory under {}",
            base.display()
        )))
    }
}

use std::os::unix::fs::DirBuilderExt;

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("could not remove {}: {e}", self.path.display());
        }
    }
}

/// A directory one `virtiofsd-msb` serves to the guest.
struct ShareSource {
    tag: String,
    host: PathBuf,
    readonly: bool,
    /// Extra daemon flags (policies).
    args: Vec<OsString>,
}

impl ShareSource {
    fn socket(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.sock", self.tag))
    }

    fn device(&self, dir: &Path) -> FsShare {
        FsShare {
            tag: self.tag.clone(),
            socket: self.socket(dir),
            num_queues: FS_QUEUES,
            queue_size: FS_QUEUE_SIZE,
        }
    }
}

/// How the user's mounts map onto devices and guest mounts, worked out
/// before anything starts.
struct Layout {
    /// Shares to serve: the control share first, then the rootfs, then bind
    /// mounts.
    shares: Vec<ShareSource>,
    disks: Vec<Disk>,
    guest_mounts: Vec<GuestMount>,
    rootfs_tag: Option<String>,
}

impl Layout {
    /// Fails only for a named volume mount that was not resolved (a bug).
    fn new(
        mounts: &[MountSpec],
        rootfs: Option<&Path>,
        control: &Path,
    ) -> Result<Layout, RunError> {
        let share = |tag: &str, host: &Path, readonly, args| ShareSource {
            tag: tag.into(),
            host: host.into(),
            readonly,
            args,
        };
        let mut layout = Layout {
            // msb's own scratch directory: no ownership to virtualize, and it
            // may sit on a tmpfs without user xattrs.
            shares: vec![share(
                CONTROL_TAG,
                control,
                false,
                vec!["--stat-virtualization".into(), "off".into()],
            )],
            disks: Vec::new(),
            guest_mounts: Vec::new(),
            rootfs_tag: rootfs.map(|_| ROOTFS_TAG.to_string()),
        };
        if let Some(root) = rootfs {
            layout
                .shares
                .push(share(ROOTFS_TAG, root, false, Vec::new()));
        }
        for (i, m) in mounts.iter().enumerate() {
            let mount = match m {
                MountSpec::Bind {
                    host,
                    guest,
                    flags,
                    policy,
                } => {
                    let tag = format!("msb-m{i}");
                    layout
                        .shares
                        .push(share(&tag, host, flags.ro, policy.daemon_args()));
                    GuestMount::Virtiofs {
                        tag,
                        target: guest.clone(),
                        flags: *flags,
                    }
                }
                MountSpec::Tmpfs {
                    guest,
                    size_bytes,
                    flags,
                } => GuestMount::Tmpfs {
                    target: guest.clone(),
                    size_bytes: *size_bytes,
                    flags: *flags,
                },
                MountSpec::Disk {
                    host,
                    guest,
                    format,
                    fstype,
                    flags,
                } => {
                    let serial = format!("msb-d{}", layout.disks.len());
                    layout.disks.push(Disk {
                        path: host.clone(),
                        format: *format,
                        readonly: flags.ro,
                        serial: serial.clone(),
                    });
                    GuestMount::Block {
                        serial,
                        target: guest.clone(),
                        fstype: fstype.clone(),
                        flags: *flags,
                    }
                }
                MountSpec::Volume(v) => {
                    return Err(RunError::launcher(format!(
                        "mount {:?}: volume {:?} was not resolved",
                        v.spec, v.name
                    )))
                }
            };
            layout.guest_mounts.push(mount);
        }
        Ok(layout)
    }
}

/// Logs how far a run got, for `scripts/bench-boot`.
fn phase(start: Instant, name: &str) {
    tracing::debug!("phase {name} at {} ms", start.elapsed().as_millis());
}

/// Parses every mount option in `args`, parents before children.
pub fn parse_mounts(args: &RunArgs) -> Result<Vec<MountSpec>, RunError> {
    let mut specs: Vec<(String, MountSpec)> = Vec::new();
    type Parser = fn(&str) -> Result<MountSpec, spec::SpecError>;
    let sources: [(&Vec<String>, Parser); 4] = [
        (&args.volumes, spec::parse_volume),
        (&args.tmpfs, spec::parse_tmpfs),
        (&args.disks, spec::parse_disk),
        (&args.mounts, spec::parse_mount),
    ];
    for (texts, parse) in sources {
        for text in texts {
            let m = parse(text).map_err(|e| RunError::usage(e.to_string()))?;
            specs.push((text.clone(), m));
        }
    }
    spec::check_unique_targets(&specs).map_err(|e| RunError::usage(e.to_string()))?;
    let mut mounts: Vec<MountSpec> = specs.into_iter().map(|(_, m)| m).collect();
    // A parent must be mounted before anything inside it.
    mounts.sort_by_key(|m| m.guest().matches('/').count());
    Ok(mounts)
}

/// Resolves `-e KEY=VALUE` and `-e KEY` (host value; skipped when unset).
fn resolve_env(entries: &[String]) -> Result<Vec<String>, RunError> {
    let mut out = Vec::new();
    for e in entries {
        match e.split_once('=') {
            Some(("", _)) => return Err(RunError::usage(format!("-e {e:?}: empty variable name"))),
            Some(_) => out.push(e.clone()),
            None if e.is_empty() => return Err(RunError::usage("-e needs KEY or KEY=VALUE")),
            None => {
                if let Ok(v) = std::env::var(e) {
                    out.push(format!("{e}={v}"));
                }
            }
        }
    }
    Ok(out)
}

/// Parses `--memory` (a plain number is MiB).
fn memory_mib(text: &str) -> Result<u64, RunError> {
    let bytes = if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
        text.parse::<u64>()
            .ok()
            .and_then(|m| m.checked_mul(1 << 20))
    } else {
        spec::parse_size(text).ok()
    };
    match bytes.map(|b| b >> 20) {
        Some(mib) if mib >= 64 => Ok(mib),
        _ => Err(RunError::usage(format!(
            "--memory {text:?}: give at least 64M, e.g. 512M or 2G"
        ))),
    }
}

/// Runs `msb run`; returns the exit status to leave with.
pub fn run(args: &RunArgs) -> Result<i32, RunError> {
    let start = Instant::now();
    // Everything the user typed is checked before anything starts.
    let mounts = parse_mounts(args)?;
    let memory = memory_mib(&args.memory)?;
    let env = resolve_env(&args.env)?;
    if let Some(w) = &args.workdir {
        if !w.starts_with('/') {
            return Err(RunError::usage(format!(
                "--workdir {w:?} must be an absolute guest path"
            )));
        }
    }
    let rootfs = match &args.rootfs {
        Some(p) if p.is_dir() => Some(
            std::fs::canonicalize(p)
                .map_err(|e| RunError::usage(format!("--rootfs {}: {e}", p.display())))?,
        ),
        Some(p) => {
            return Err(RunError::usage(format!(
                "--rootfs {}: not a directory",
                p.display()
            )))
        }
        None => None,
    };
    let assets = Assets::locate(args.kernel.as_deref(), args.initramfs.as_deref())?;
    let (kind, accel) = match args.vmm {
        Some(VmmChoice::CloudHypervisor) => (VmmKind::CloudHypervisor, Accel::Kvm),
        Some(VmmChoice::Qemu) => (
            VmmKind::Qemu,
            if vmm::detect::kvm_usable(&assets.kernel) {
                Accel::Kvm
            } else {
                Accel::Tcg
            },
        ),
        None => vmm::detect::default_vmm(&assets.kernel),
    };
    tracing::info!("using {kind:?} ({accel:?})");
    phase(start, "checked");

    // Named volumes: created if the mode says so, and leased until the
    // session is dropped.
    let resolved = crate::volume::mounts::resolve(mounts)?;
    let mounts = resolved.mounts;
    let mut session = Session {
        pumps: Vec::new(),
        vmm: None,
        daemons: Vec::new(),
        dir: RunDir::create()?,
        _leases: resolved.leases,
    };
    let dir = session.dir.path.clone();
    // The control share carries the config in and the status out.
    let control = dir.join("control");
    std::fs::create_dir(&control)
        .map_err(|e| RunError::launcher(format!("{}: {e}", control.display())))?;
    let layout = Layout::new(&mounts, rootfs.as_deref(), &control)?;
    let plan = VmPlan {
        kernel: assets.kernel.clone(),
        initramfs: assets.initramfs.clone(),
        cmdline: KERNEL_CMDLINE.to_string(),
        cpus: args.cpus,
        memory_mib: memory,
        shares: layout.shares.iter().map(|s| s.device(&dir)).collect(),
        disks: layout.disks.clone(),
        stdout_fifo: dir.join("stdout.fifo"),
        stderr_fifo: dir.join("stderr.fifo"),
        console_log: dir.join("console.log"),
        run_dir: dir.clone(),
        accel,
    };
    // The last check of user input, still before any process starts.
    vmm::check_plan(kind, &plan).map_err(|e| RunError::usage(e.0))?;

    signals::install();
    for share in &layout.shares {
        session
            .daemons
            .push(start_daemon(&assets.daemon, share, &dir)?);
    }
    phase(start, "daemons-started");

    let config = GuestConfig {
        version: CONFIG_VERSION,
        command: args.command.clone(),
        env,
        workdir: args.workdir.clone(),
        uid: 0,
        gid: 0,
        rootfs_tag: layout.rootfs_tag,
        mounts: layout.guest_mounts,
        stdio: vmm::guest_stdio(kind),
        agent: None,
    };
    let config_path = control.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&config)
        .map_err(|e| RunError::launcher(format!("guest config: {e}")))?;
    std::fs::write(&config_path, text)
        .map_err(|e| RunError::launcher(format!("{}: {e}", config_path.display())))?;

    for (fifo, fd) in [(&plan.stdout_fifo, 1), (&plan.stderr_fifo, 2)] {
        let err = |e: std::io::Error| RunError::launcher(format!("{}: {e}", fifo.display()));
        output::make_fifo(fifo).map_err(err)?;
        session
            .pumps
            .push(Pump::start(fifo, output::own_fd(fd).map_err(err)?).map_err(err)?);
    }
    let must_stop = Arc::new(AtomicBool::new(false));
    let (vmm_child, events) = start_vmm(kind, &plan, &must_stop)?;
    session.vmm = Some(vmm_child);
    phase(start, "vmm-started");

    let boot = BootWatch {
        booted: control.join(BOOTED_FILE),
        console: plan.console_log.clone(),
        deadline: Duration::from_secs(args.boot_timeout),
    };
    let ended = supervise(
        &mut session,
        args.timeout.map(Duration::from_secs),
        &boot,
        &must_stop,
    );
    phase(start, "vmm-exited");
    let pumps = std::mem::take(&mut session.pumps);
    pumps.into_iter().for_each(Pump::finish);
    let result = match ended {
        Ended::Vmm(status) => {
            // Read the console once: the panic banner may sit well above
            // the lines the message shows.
            let console = tail_lines(&plan.console_log, 200);
            let how = match events.map(|w| w.join().unwrap_or_default()) {
                Some(life) => ch_events::ch_exit(status, &life),
                None => vmm::qemu::qemu_exit(status, &console),
            };
            guest_result(
                &control.join(STATUS_FILE),
                how,
                &last_lines(&console, 15),
                start,
            )
        }
        Ended::Timeout(t) => Err(RunError {
            code: exit::TIMEOUT,
            message: format!("timed out after {}s; VM stopped", t.as_secs()),
        }),
        Ended::Signal(sig) => Err(RunError {
            code: exit::SIGNAL_BASE + sig,
            message: format!("interrupted by signal {sig}; VM stopped"),
        }),
        Ended::BootStalled(why) => Err(RunError::launcher(format!(
            "{why}; VM stopped. Last console lines:\n{}",
            tail_lines(&plan.console_log, 15)
        ))),
        Ended::DaemonDied(name, log) => Err(RunError::launcher(format!(
            "{name} exited unexpectedly; VM stopped. Its last log lines:\n{}",
            tail_lines(&log, 10)
        ))),
    };
    drop(session);
    phase(start, "cleaned-up");
    result
}

/// Starts the daemon of `share` on a socket the launcher binds and passes
/// down (`--fd`), so the socket exists before the VMM looks for it.
fn start_daemon(bin: &Path, share: &ShareSource, dir: &Path) -> Result<Supervised, RunError> {
    let socket = share.socket(dir);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| RunError::launcher(format!("socket {}: {e}", socket.display())))?;
    let fd = OwnedFd::from(listener);
    let log_path = dir.join(format!("{}.log", share.tag));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| RunError::launcher(format!("daemon log: {e}")))?;
    let mut cmd = Command::new(bin);
    cmd.arg("--fd")
        .arg(PASSED_FD.to_string())
        .arg("--shared-dir")
        .arg(&share.host)
        .args(["--sandbox", "none", "--log-level", "warn"]);
    if share.readonly {
        cmd.arg("--readonly");
    }
    cmd.args(&share.args);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    let name = format!("virtiofsd-msb for {}", share.host.display());
    Supervised::spawn(name, cmd, Some(&fd), log_path).map_err(|e| RunError::launcher(e.to_string()))
}

/// Starts the VMM; for cloud-hypervisor also a thread watching its event
/// monitor, which raises `must_stop` on a guest reboot or panic (CH has no
/// no-reboot option) and hands back what it saw.
fn start_vmm(
    kind: VmmKind,
    plan: &VmPlan,
    must_stop: &Arc<AtomicBool>,
) -> Result<(Supervised, Option<EventWatch>), RunError> {
    let spawned = vmm::spawn(kind, plan).map_err(|e| RunError::launcher(e.to_string()))?;
    let watch = spawned.events.map(|events| {
        let flag = must_stop.clone();
        std::thread::spawn(move || {
            let mut life = ChLifecycle::default();
            let watched = ch_events::watch_events(events, |ev| {
                let flow = life.observe(&ev);
                if flow == Flow::Stop {
                    flag.store(true, Ordering::SeqCst);
                }
                flow
            });
            if let Err(e) = watched {
                tracing::warn!("cloud-hypervisor event monitor: {e}");
            }
            life
        })
    });
    Ok((spawned.child, watch))
}

/// The thread following cloud-hypervisor's events.
type EventWatch = std::thread::JoinHandle<ChLifecycle>;

/// How to tell that the guest came up, and how long to wait for it.
struct BootWatch {
    /// Created by msb-init on the control share once it is mounted.
    booted: PathBuf,
    /// The guest console, where msb-init says it started.
    console: PathBuf,
    deadline: Duration,
}

impl BootWatch {
    /// Which boot step did not happen, for the message of a stalled boot.
    fn missing_step(&self) -> String {
        let secs = self.deadline.as_secs();
        let started = format!("msb-init: {STARTED_MESSAGE}");
        let console = std::fs::read(&self.console).unwrap_or_default();
        if console.is_empty() {
            format!(
                "the VM did not start within {secs}s (--boot-timeout): no console output at \
                 all (the VMM may be waiting on a vhost-user daemon that does not answer)"
            )
        } else if String::from_utf8_lossy(&console).contains(&started) {
            format!(
                "the guest did not come up within {secs}s (--boot-timeout): msb-init started \
                 but did not mount the control share {CONTROL_TAG:?} (its virtio-fs daemon \
                 never answered)"
            )
        } else {
            format!(
                "the guest did not come up within {secs}s (--boot-timeout): the guest kernel \
                 never started msb-init"
            )
        }
    }
}

/// Why supervision stopped.
enum Ended {
    Vmm(ExitStatus),
    Timeout(Duration),
    /// The guest did not come up in time: which step is missing.
    BootStalled(String),
    Signal(i32),
    DaemonDied(String, PathBuf),
}

/// Waits for the VMM to exit, stopping it on timeout, a signal, or a dead
/// daemon.
fn supervise(
    session: &mut Session,
    timeout: Option<Duration>,
    boot: &BootWatch,
    must_stop: &AtomicBool,
) -> Ended {
    let deadline = timeout.map(|t| (Instant::now() + t, t));
    let boot_deadline = Instant::now() + boot.deadline;
    let mut booted = false;
    let Some(vmm) = session.vmm.as_mut() else {
        return Ended::Signal(libc::SIGTERM);
    };
    loop {
        if let Ok(Some(st)) = vmm.try_wait() {
            return Ended::Vmm(st);
        }
        if must_stop.load(Ordering::SeqCst) {
            // A guest reboot or panic under cloud-hypervisor.
            return Ended::Vmm(
                vmm.stop(Duration::from_millis(500))
                    .unwrap_or_else(|| ExitStatus::from_raw(0)),
            );
        }
        booted = booted || boot.booted.exists();
        let reason = if let Some(sig) = signals::received() {
            Some(Ended::Signal(sig))
        } else if let Some((_, t)) = deadline.filter(|(at, _)| Instant::now() >= *at) {
            Some(Ended::Timeout(t))
        } else if !booted && Instant::now() >= boot_deadline {
            Some(Ended::BootStalled(boot.missing_step()))
        } else {
            session.daemons.iter_mut().find_map(|d| {
                matches!(d.try_wait(), Ok(Some(_)))
                    .then(|| Ended::DaemonDied(d.name().to_string(), d.log().to_path_buf()))
            })
        };
        if let Some(reason) = reason {
            // A daemon ends by itself when the VMM closes its socket on the
            // way out: give the VMM a moment to finish before calling it a
            // crash.
            if matches!(reason, Ended::DaemonDied(..)) {
                if let Some(st) = vmm.wait_for(Duration::from_secs(1)) {
                    return Ended::Vmm(st);
                }
            }
            vmm.stop(Duration::from_millis(500));
            return reason;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Maps the guest's report (or its absence) to our exit status.
fn guest_result(
    status_path: &Path,
    how: VmmExit,
    console: &str,
    start: Instant,
) -> Result<i32, RunError> {
    let report = std::fs::read_to_string(status_path)
        .ok()
        .and_then(|t| serde_json::from_str::<StatusReport>(&t).ok());
    let Some(report) = report else {
        let what = match how {
            VmmExit::GuestPanic => "the guest kernel panicked".to_string(),
            VmmExit::Rebooted => "the guest rebooted".to_string(),
            VmmExit::PoweredOff => "the guest powered off without reporting a status".to_string(),
            VmmExit::Failed(code) => format!("the VMM failed (exit {code}; see its log)"),
            VmmExit::Killed(sig) => format!("the VMM was killed by signal {sig}"),
        };
        return Err(RunError::launcher(format!(
            "{what}; last console lines:\n{console}"
        )));
    };
    let t = report.timings;
    tracing::debug!(
        "guest timings: init at {} ms, command {}..{} ms (guest uptime); host total {} ms",
        t.init_start_ms,
        t.command_start_ms,
        t.command_end_ms,
        start.elapsed().as_millis()
    );
    match report.status {
        GuestStatus::Exited { code } => Ok(code),
        GuestStatus::Signaled { signal } => Ok(exit::SIGNAL_BASE + signal),
        GuestStatus::InitFailed { stage, message } => {
            let code = match stage {
                InitStage::CommandNotFound => exit::NOT_FOUND,
                InitStage::Exec => exit::CANNOT_RUN,
                InitStage::Config | InitStage::Setup | InitStage::Mount => exit::LAUNCHER,
            };
            Err(RunError {
                code,
                message: format!("guest: {message}"),
            })
        }
    }
}

/// The last `n` lines of a log file, for failure messages.
fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    last_lines(&text, n)
}

/// The last `n` lines of `text`.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests;
