//! `msb run -i` / `-t`: the command gets stdin (and a pty with `-t`), so it
//! runs through the guest agent, exactly as `msb exec` runs commands in a
//! sandbox: the VM boots in agent mode, the command is one exec session
//! over the agent link this process holds, and the VM is shut down when it
//! ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guest_init::protocol::{ExecRequest, Frame, Kind, ShutdownRequest};

use crate::exit::RunError;
use crate::machine::Machine;
use crate::sandbox::agent_link::AgentLink;
use crate::sandbox::client::ExecSession;
use crate::sandbox_cmd::exec::{drive, terminal_size};

/// How long the guest gets to power off after the command.
const POWEROFF_WAIT: Duration = Duration::from_secs(10);

/// Runs `command` in `machine` (prepared in agent mode) with stdin
/// forwarded; returns the exit status.
pub fn run(
    mut machine: Machine,
    command: &[String],
    tty: bool,
    timeout: Option<u64>,
) -> Result<i32, RunError> {
    let since = Instant::now();
    machine.start_vmm()?;
    let link = match AgentLink::boot(&mut machine, since, || true) {
        Ok(link) => Arc::new(link),
        Err(f) => {
            return Err(RunError::launcher(format!(
                "{}; VM stopped. Last console lines:\n{}",
                f.why, f.console
            )))
        }
    };
    let req = ExecRequest {
        argv: command.to_vec(),
        stdin: true,
        tty: tty.then(terminal_size),
        timeout_ms: timeout.map(|s| s.saturating_mul(1000)),
        ..ExecRequest::default()
    };
    let result = ExecSession::over_agent(link.clone(), &req)
        .and_then(|session| drive(session, &req, timeout))
        .map_err(|e| RunError {
            code: e.exit_code().max(crate::exit::LAUNCHER),
            message: e.to_string(),
        });
    let _ = link.send(&Frame::json(
        Kind::Shutdown,
        0,
        &ShutdownRequest { grace_ms: 500 },
    ));
    if let Some(vmm) = machine.vmm_mut() {
        if vmm.wait_for(POWEROFF_WAIT).is_none() {
            vmm.stop(Duration::from_millis(500));
        }
    }
    drop(link);
    drop(machine);
    result
}
