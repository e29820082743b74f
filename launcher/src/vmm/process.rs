//! Starting the VMM process.
//!
//! The VMM's own stdout and stderr go to `plan.run_dir/`[`VMM_LOG`] so they
//! never mix with the command's output (which travels through the FIFOs);
//! its stdin is `/dev/null`. For cloud-hypervisor the event monitor is the
//! write end of a pipe passed as fd [`CH_EVENT_FD`]: the read end sees EOF
//! exactly when CH exits, and nothing can block on opening it.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use crate::process::{Supervised, PASSED_FD};

use super::cloud_hypervisor::{ch_argv, CH_EVENT_FD};
use super::detect::vmm_program;
use super::qemu::qemu_argv;
use super::{check_plan, VmPlan, VmmKind};

// The event pipe travels as the fd every supervised child gets passed.
const _: () = assert!(CH_EVENT_FD == PASSED_FD);

/// File name, in `plan.run_dir`, of the VMM's own stdout and stderr.
pub const VMM_LOG: &str = "vmm.log";

/// A started VMM.
#[derive(Debug)]
pub struct Spawned {
    /// The VMM process (see [`Supervised`]: own process group, SIGKILLed
    /// with the launcher, stopped and reaped on drop).
    pub child: Supervised,
    /// cloud-hypervisor only: the read end of the event-monitor pipe, for
    /// [`super::ch_events::watch_events`]; EOF when CH exits.
    pub events: Option<File>,
}

/// A pipe for CH's event monitor: `(read end, write end)`, both
/// close-on-exec. Pass the write end to CH as fd [`CH_EVENT_FD`] and close
/// the parent's copy right after spawning, or the read end never sees EOF.
pub fn event_pipe() -> io::Result<(File, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nothing else.
    let (read, write) = unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((read, write))
}

/// The VMM command for `plan` (program from [`vmm_program`], the backend's
/// argv, stdin null, stdout+stderr to [`VMM_LOG`]), without any process
/// setup; for CH the caller must also provide fd [`CH_EVENT_FD`] (see
/// [`event_pipe`]). [`spawn`] does all of that.
pub fn command(kind: VmmKind, plan: &VmPlan) -> io::Result<Command> {
    let log = File::create(plan.run_dir.join(VMM_LOG))?;
    let mut cmd = Command::new(vmm_program(kind));
    match kind {
        VmmKind::Qemu => cmd.args(qemu_argv(plan)),
        VmmKind::CloudHypervisor => cmd.args(ch_argv(plan)),
    };
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(cmd)
}

/// Checks `plan` for `kind` ([`check_plan`]; a refusal is an
/// `InvalidInput` error) and starts the VMM: [`command`] run as a
/// [`Supervised`] child (own process group, dies with the launcher). Call it
/// from a thread that lives as long as the VM (the death signal fires when
/// the spawning *thread* exits). For CH the event pipe's write end is its
/// fd [`CH_EVENT_FD`] (the same number as [`PASSED_FD`]).
///
/// Before calling, the launcher must hold `plan.stdout_fifo` and
/// `plan.stderr_fifo` open for reading (see the module docs of [`super`]).
pub fn spawn(kind: VmmKind, plan: &VmPlan) -> io::Result<Spawned> {
    check_plan(kind, plan).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.0))?;
    let cmd = command(kind, plan)?;
    let (events, pass) = match kind {
        VmmKind::CloudHypervisor => {
            let (read, write) = event_pipe()?;
            (Some(read), Some(write))
        }
        VmmKind::Qemu => (None, None),
    };
    let program = cmd.get_program().to_string_lossy().into_owned();
    let child = Supervised::spawn(program, cmd, pass.as_ref(), plan.run_dir.join(VMM_LOG))?;
    // Our copy of the write end must go, or the reader never sees EOF.
    drop(pass);
    Ok(Spawned { child, events })
}
