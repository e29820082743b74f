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
//!    path (the [`Machine`] drop order guarantees it).

mod interactive;
mod output;
pub mod signals;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use guest_init::config::{GuestStatus, InitStage, StatusReport, STATUS_FILE};

use crate::cli::RunArgs;
use crate::exit::{self, RunError};
pub use crate::machine::parse_mounts;
use crate::machine::{self, BootWatch, GuestRole, Machine};
use crate::vmm::{self, ch_events, VmmExit};
use output::Pump;

/// Logs how far a run got, for `scripts/bench-boot`.
fn phase(start: Instant, name: &str) {
    tracing::debug!("phase {name} at {} ms", start.elapsed().as_millis());
}

/// Runs `msb run`; returns the exit status to leave with.
pub fn run(args: &RunArgs) -> Result<i32, RunError> {
    let start = Instant::now();
    // Everything the user typed is checked before anything starts.
    let checked = machine::check(&args.machine)?;
    phase(start, "checked");
    signals::install();
    let image = match &args.image {
        Some(reference) => {
            let home = volumes::default_home().map_err(|e| RunError::launcher(e.to_string()))?;
            Some(machine::image::resolve(
                &home,
                reference,
                machine::Upper::Tmpfs,
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )?)
        }
        None => None,
    };
    phase(start, "image-ready");
    let command = machine::image::command_line(image.as_ref(), &args.command)?;
    if args.interactive || args.tty {
        let machine = Machine::prepare(checked, GuestRole::Agent, image)?;
        return interactive::run(machine, &command, args.tty, args.timeout);
    }
    let mut machine = Machine::prepare(checked, GuestRole::Command(command), image)?;
    phase(start, "daemons-started");

    let plan = machine.plan().clone();
    let mut pumps = Vec::new();
    for (fifo, fd) in [(&plan.stdout_fifo, 1), (&plan.stderr_fifo, 2)] {
        let err = |e: std::io::Error| RunError::launcher(format!("{}: {e}", fifo.display()));
        output::make_fifo(fifo).map_err(err)?;
        pumps.push(Pump::start(fifo, output::own_fd(fd).map_err(err)?).map_err(err)?);
    }
    machine.start_vmm()?;
    phase(start, "vmm-started");

    let boot = machine.boot_watch();
    let ended = supervise(&mut machine, args.timeout.map(Duration::from_secs), &boot);
    phase(start, "vmm-exited");
    pumps.into_iter().for_each(Pump::finish);
    let result = match ended {
        Ended::Vmm(status) => {
            // Read the console once: the panic banner may sit well above
            // the lines the message shows.
            let console = tail_lines(&plan.console_log, 200);
            let how = match machine.take_events().map(|w| w.join().unwrap_or_default()) {
                Some(life) => ch_events::ch_exit(status, &life),
                None => vmm::qemu::qemu_exit(status, &console),
            };
            guest_result(
                &machine.control().join(STATUS_FILE),
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
    drop(machine);
    phase(start, "cleaned-up");
    result
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

/// Waits for the VMM to exit, stopping it on timeout, a signal, a dead
/// daemon, or a guest that does not come up.
fn supervise(machine: &mut Machine, timeout: Option<Duration>, boot: &BootWatch) -> Ended {
    let deadline = timeout.map(|t| (Instant::now() + t, t));
    let boot_deadline = Instant::now() + boot.deadline;
    let mut booted = false;
    loop {
        let must_stop = machine.must_stop();
        let Some(vmm) = machine.vmm_mut() else {
            return Ended::Signal(libc::SIGTERM);
        };
        if let Ok(Some(st)) = vmm.try_wait() {
            return Ended::Vmm(st);
        }
        if must_stop {
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
            machine.daemons_mut().iter_mut().find_map(|d| {
                matches!(d.try_wait(), Ok(Some(_)))
                    .then(|| Ended::DaemonDied(d.name().to_string(), d.log().to_path_buf()))
            })
        };
        if let Some(reason) = reason {
            let Some(vmm) = machine.vmm_mut() else {
                return reason;
            };
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
pub(crate) fn tail_lines(path: &Path, n: usize) -> String {
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
