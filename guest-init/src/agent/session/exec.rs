//! Starting an exec session: stdio (pipes or a pty), the spawn, the stdin
//! feeder and the output pump.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use super::command::{self, Refusal, CANNOT_RUN};
use super::pump::{self, Stream};
use crate::agent::input::{self, StdinTarget};
use crate::agent::sessions::ExecHandle;
use crate::agent::{pty, Shared};
use crate::protocol::{ExecRequest, Exited, Kind, Started};

/// Pipe size asked for stdout and stderr: fewer, larger reads.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// Starts session `id` running `req`. Every outcome is reported: `Started`
/// then (from the pump) `Exited`, or `Exited` with the error when the
/// command cannot start, or an `Error` frame for a request that names no
/// runnable session (id in use, empty argv).
pub fn start(shared: &Arc<Shared>, id: u32, req: ExecRequest) {
    if shared.sessions.is_live(id) {
        shared
            .sink
            .error(id, format!("session {id} is already in use"));
        return;
    }
    if req.argv.is_empty() {
        shared
            .sink
            .error(id, format!("session {id}: exec with an empty argv"));
        shared.sessions.end(id);
        return;
    }
    if let Err(refusal) = spawn(shared, id, &req) {
        shared.sessions.end(id);
        shared.sink.json(
            Kind::Exited,
            id,
            &Exited {
                code: Some(refusal.code),
                signal: None,
                timed_out: false,
                error: Some(refusal.message),
            },
        );
    }
}

fn cannot_run(name: &str, what: impl std::fmt::Display) -> Refusal {
    Refusal {
        code: CANNOT_RUN,
        message: format!("{name}: cannot run: {what}"),
    }
}

fn spawn(shared: &Arc<Shared>, id: u32, req: &ExecRequest) -> Result<(), Refusal> {
    let name = req.argv[0].as_str();
    let mut cmd = command::prepare(req, &shared.options, &shared.root)?;
    let dup = |fd: &OwnedFd| {
        fd.try_clone()
            .map(File::from)
            .map_err(|e| cannot_run(name, format!("dup: {e}")))
    };
    // Everything that can fail is done before the spawn: once the process
    // runs, it is supervised.
    let mut pty_ends = None;
    match req.tty {
        Some(size) => {
            let pty = pty::open(size).map_err(|e| cannot_run(name, format!("pty: {e}")))?;
            cmd.stdin(dup(&pty.slave)?)
                .stdout(dup(&pty.slave)?)
                .stderr(Stdio::from(pty.slave));
            let (output, input) = (dup(&pty.master)?, dup(&pty.master)?);
            pty_ends = Some((pty.master, output, input));
        }
        None => {
            let stdin = if req.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            };
            cmd.stdin(stdin)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
    }
    let (mut child, exit) = shared
        .reaper
        .spawn(&mut cmd)
        .map_err(|e| cannot_run(name, e))?;
    // Our copies of the pty slave go now: the master reads EOF (EIO) once
    // the process and its children have closed theirs.
    drop(cmd);
    let pid = child.id() as libc::pid_t;

    let (master, streams, stdin_target) = match pty_ends {
        Some((master, output, input)) => (
            Some(Arc::new(master)),
            vec![Stream::new(output, Kind::Stdout)],
            Some(StdinTarget::Pty(input)),
        ),
        None => {
            let outputs = [
                (child.stdout.take().map(OwnedFd::from), Kind::Stdout),
                (child.stderr.take().map(OwnedFd::from), Kind::Stderr),
            ];
            let streams = outputs
                .into_iter()
                .filter_map(|(fd, kind)| fd.map(|fd| (fd, kind)))
                .map(|(fd, kind)| {
                    // SAFETY: fcntl on a pipe fd we own; failure only keeps
                    // the default pipe size.
                    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
                    Stream::new(File::from(fd), kind)
                })
                .collect();
            let stdin = child
                .stdin
                .take()
                .map(|p| StdinTarget::Pipe(File::from(OwnedFd::from(p))));
            (None, streams, stdin)
        }
    };
    let input = stdin_target.map(|target| {
        let (tx, rx) = input::queue();
        input::spawn_feeder(id, rx, target);
        tx
    });
    let handle = ExecHandle {
        pid,
        pty: master,
        exit: exit.clone(),
    };
    // The id was checked free above and only this (reader) thread adds
    // sessions, so this cannot fail; if it did, the process must not run
    // unsupervised.
    if let Err(e) = shared.sessions.insert(id, Some(handle), input) {
        pump::kill_group(pid, libc::SIGKILL);
        return Err(cannot_run(name, e));
    }
    shared
        .sink
        .json(Kind::Started, id, &Started { pid: pid as u32 });
    let timeout = req.timeout_ms.map(Duration::from_millis);
    pump::spawn(shared, id, pid, streams, exit, timeout);
    Ok(())
}
