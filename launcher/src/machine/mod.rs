//! One VM and what serves it, as `msb run` and a sandbox's supervisor both
//! need it: the user's machine options checked ([`check`]), the named
//! volumes resolved and leased, the run directory, one `virtiofsd-msb` per
//! share, the guest config on the control share ([`Machine::prepare`]),
//! and the VMM ([`Machine::start_vmm`]).
//!
//! A [`Machine`] tears everything down when dropped, in order: the VMM
//! first, then the daemons, then the run directory, then the leases
//! (nothing serves a volume any more by then).

pub mod image;
mod layout;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use guest_init::config::{
    AgentChannel, GuestConfig, BOOTED_FILE, CONFIG_FILE, CONFIG_VERSION, CONTROL_TAG,
    STARTED_MESSAGE,
};
use guest_init::protocol::{AGENT_PORT, AGENT_VSOCK_PORT};

use crate::assets::Assets;
use crate::cli::{MachineArgs, VmmChoice};
use crate::exit::RunError;
use crate::process::Supervised;
use crate::spec::{self, MountSpec};
use crate::vmm::ch_events::{self, ChLifecycle, Flow};
use crate::vmm::{self, Accel, VmPlan, VmmKind};
pub use image::{ImageRootfs, Upper};
pub(crate) use layout::RunDir;
use layout::{start_daemon, Layout};

/// Base kernel command line (backends add the console).
/// `cryptomgr.notests` and the blacklisted KDF self-test save about half a
/// second of boot under TCG; the guest kernel's crypto is not what msb relies
/// on (its data path is virtio-fs and virtio-blk).
const KERNEL_CMDLINE: &str =
    "quiet loglevel=3 rdinit=/init cryptomgr.notests initcall_blacklist=crypto_kdf108_init";

/// Machine options after every check: nothing has started yet.
pub struct Checked {
    /// Mounts, parents before children (named volumes not yet resolved).
    pub mounts: Vec<MountSpec>,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub cpus: u32,
    /// Environment entries, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory of commands in the guest.
    pub workdir: Option<String>,
    /// Host directory that becomes the guest's root.
    pub rootfs: Option<PathBuf>,
    /// Kernel, initramfs, daemon.
    pub assets: Assets,
    /// The VMM.
    pub kind: VmmKind,
    /// QEMU acceleration.
    pub accel: Accel,
    /// How long the guest gets to come up.
    pub boot_timeout: Duration,
    /// Who the volume leases name as their holder.
    pub holder: String,
}

/// Checks everything the user gave for a VM; errors are usage errors (exit
/// 2) naming the bad input, and nothing has started.
pub fn check(args: &MachineArgs) -> Result<Checked, RunError> {
    let mounts = parse_mounts(args)?;
    let memory_mib = memory_mib(&args.memory)?;
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
    Ok(Checked {
        mounts,
        memory_mib,
        cpus: args.cpus,
        env,
        workdir: args.workdir.clone(),
        rootfs,
        assets,
        kind,
        accel,
        boot_timeout: Duration::from_secs(args.boot_timeout),
        holder: crate::volume::mounts::HOLDER.to_string(),
    })
}

/// Parses every mount option in `args`, parents before children.
pub fn parse_mounts(args: &MachineArgs) -> Result<Vec<MountSpec>, RunError> {
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
pub fn resolve_env(entries: &[String]) -> Result<Vec<String>, RunError> {
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
pub fn memory_mib(text: &str) -> Result<u64, RunError> {
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

/// What the guest does once its mounts are up.
pub enum GuestRole {
    /// Run this command and power off (`msb run`); its stdout and stderr go
    /// to FIFOs in the run directory (the caller opens them for reading
    /// before [`Machine::start_vmm`]).
    Command(Vec<String>),
    /// Serve the agent protocol until asked to stop (a sandbox).
    Agent,
}

/// A VM with its daemons, run directory and volume leases.
pub struct Machine {
    // Fields drop in this order: VMM, daemons, run directory, leases.
    vmm: Option<Supervised>,
    events: Option<EventWatch>,
    daemons: Vec<Supervised>,
    must_stop: Arc<AtomicBool>,
    plan: VmPlan,
    kind: VmmKind,
    control: PathBuf,
    boot_timeout: Duration,
    dir: RunDir,
    /// Held for its drop, which releases the leases.
    _leases: Vec<volumes::Lease>,
}

impl Machine {
    /// Resolves named volumes (creating them if their mode says so, and
    /// leasing them for the machine's life), makes the run directory,
    /// starts one daemon per share and writes the guest config. The VMM is
    /// not started yet.
    pub fn prepare(
        checked: Checked,
        role: GuestRole,
        image: Option<ImageRootfs>,
    ) -> Result<Machine, RunError> {
        let resolved = crate::volume::mounts::resolve(checked.mounts, &checked.holder)?;
        let dir = RunDir::create()?;
        let path = dir.path.clone();
        // The control share carries the config in and the status out.
        let control = path.join("control");
        std::fs::create_dir(&control)
            .map_err(|e| RunError::launcher(format!("{}: {e}", control.display())))?;
        if image.is_some() && checked.rootfs.is_some() {
            return Err(RunError::usage("--rootfs and --image exclude each other"));
        }
        let layout = Layout::new(
            &resolved.mounts,
            checked.rootfs.as_deref(),
            image.as_ref(),
            &control,
        )?;
        let agent = matches!(role, GuestRole::Agent);
        // A sandbox's guest never opens its output ports: plain files keep
        // the VMM from waiting on a FIFO reader.
        let (stdout, stderr) = if agent {
            (path.join("guest-stdout.log"), path.join("guest-stderr.log"))
        } else {
            (path.join("stdout.fifo"), path.join("stderr.fifo"))
        };
        let plan = VmPlan {
            kernel: checked.assets.kernel.clone(),
            initramfs: checked.assets.initramfs.clone(),
            cmdline: KERNEL_CMDLINE.to_string(),
            cpus: checked.cpus,
            memory_mib: checked.memory_mib,
            shares: layout.shares.iter().map(|s| s.device(&path)).collect(),
            disks: layout.disks.clone(),
            stdout_fifo: stdout,
            stderr_fifo: stderr,
            console_log: path.join("console.log"),
            agent_socket: agent.then(|| path.join("agent.sock")),
            run_dir: path.clone(),
            accel: checked.accel,
        };
        // The last check of user input, still before any process starts.
        vmm::check_plan(checked.kind, &plan).map_err(|e| RunError::usage(e.0))?;
        let mut machine = Machine {
            vmm: None,
            events: None,
            daemons: Vec::new(),
            must_stop: Arc::new(AtomicBool::new(false)),
            plan,
            kind: checked.kind,
            control,
            boot_timeout: checked.boot_timeout,
            dir,
            _leases: resolved.leases,
        };
        for share in &layout.shares {
            let daemon = start_daemon(&checked.assets.daemon, share, &path)?;
            machine.daemons.push(daemon);
        }
        let (command, agent) = match role {
            GuestRole::Command(c) => (c, None),
            GuestRole::Agent => (Vec::new(), Some(agent_channel(checked.kind))),
        };
        // The image's environment, workdir and user; the user's env and
        // workdir on top. The image's user runs the command (`msb run`) or
        // is the default of execs (a sandbox).
        let (mut env, mut workdir, mut uid, mut gid) = (Vec::new(), None, 0, 0);
        if let Some(img) = &image {
            env = img.env();
            workdir = img.config.working_dir.clone();
            (uid, gid) = (img.user.uid, img.user.gid);
        }
        env.extend(checked.env);
        let config = GuestConfig {
            version: CONFIG_VERSION,
            command,
            env,
            workdir: checked.workdir.or(workdir),
            uid,
            gid,
            rootfs_tag: layout.rootfs_tag,
            root_overlay: layout.root_overlay,
            mounts: layout.guest_mounts,
            stdio: vmm::guest_stdio(checked.kind),
            agent,
        };
        let config_path = machine.control.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(&config)
            .map_err(|e| RunError::launcher(format!("guest config: {e}")))?;
        std::fs::write(&config_path, text)
            .map_err(|e| RunError::launcher(format!("{}: {e}", config_path.display())))?;
        Ok(machine)
    }

    /// Starts the VMM.
    pub fn start_vmm(&mut self) -> Result<(), RunError> {
        let (child, events) = start_vmm(self.kind, &self.plan, &self.must_stop)?;
        self.vmm = Some(child);
        self.events = events;
        Ok(())
    }

    /// The VM's plan (device paths, sockets, logs).
    pub fn plan(&self) -> &VmPlan {
        &self.plan
    }

    /// The VMM in use.
    pub fn kind(&self) -> VmmKind {
        self.kind
    }

    /// The host side of the control share.
    pub fn control(&self) -> &Path {
        &self.control
    }

    /// The running VMM, once started.
    pub fn vmm_mut(&mut self) -> Option<&mut Supervised> {
        self.vmm.as_mut()
    }

    /// The daemons, one per share.
    pub fn daemons_mut(&mut self) -> &mut [Supervised] {
        &mut self.daemons
    }

    /// True when cloud-hypervisor reported a guest reboot or panic (it has
    /// no no-reboot option: the VMM must be stopped).
    pub fn must_stop(&self) -> bool {
        self.must_stop.load(Ordering::SeqCst)
    }

    /// What cloud-hypervisor's event monitor saw (`None` under QEMU).
    pub(crate) fn take_events(&mut self) -> Option<EventWatch> {
        self.events.take()
    }

    /// How to watch the guest come up.
    pub(crate) fn boot_watch(&self) -> BootWatch {
        BootWatch {
            booted: self.control.join(BOOTED_FILE),
            console: self.plan.console_log.clone(),
            deadline: self.boot_timeout,
        }
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }
}

/// The agent channel of a backend: a named virtio-serial port on QEMU, a
/// vsock port behind cloud-hypervisor's hybrid vsock socket.
fn agent_channel(kind: VmmKind) -> AgentChannel {
    match kind {
        VmmKind::Qemu => AgentChannel::Port {
            name: AGENT_PORT.to_string(),
        },
        VmmKind::CloudHypervisor => AgentChannel::Vsock {
            port: AGENT_VSOCK_PORT,
        },
    }
}

/// Starts the VMM; for cloud-hypervisor also a thread watching its event
/// monitor, which raises `must_stop` on a guest reboot or panic (CH has no
/// no-reboot option) and hands back what it saw.
pub(crate) fn start_vmm(
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
pub(crate) type EventWatch = std::thread::JoinHandle<ChLifecycle>;

/// How to tell that the guest came up, and how long to wait for it.
pub(crate) struct BootWatch {
    /// Created by msb-init on the control share once it is mounted.
    pub(crate) booted: PathBuf,
    /// The guest console, where msb-init says it started.
    pub(crate) console: PathBuf,
    /// How long the guest gets.
    pub(crate) deadline: Duration,
}

impl BootWatch {
    /// Which boot step did not happen, for the message of a stalled boot.
    pub(crate) fn missing_step(&self) -> String {
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
