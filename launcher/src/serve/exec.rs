//! `POST /v1/sandboxes/{name}/exec`: runs a command to completion and
//! answers with its stdout, stderr and exit code. Built on the SDK's
//! [`crate::Sandbox::exec_stream`]; a client that goes away before the end
//! takes the command with it (SIGKILL to its process group), so nothing
//! keeps running for nobody.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::IntoResponse;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::body::{Json, Path};
use super::error::ApiError;
use super::sandboxes::env_list;
use super::AppState;
use crate::sandbox::client::ExecInput;
use crate::sdk::{ExecOptions, ExecOutput, ExecStream};
use crate::ExecEvent;

/// Most output (stdout + stderr) kept for one command; past it the command
/// is killed and the answer says `truncated`.
pub const MAX_OUTPUT: usize = 64 << 20;
/// SIGKILL.
const SIGKILL: i32 = 9;

/// How output bytes are put in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text (invalid sequences replaced).
    #[default]
    Utf8,
    /// Base64 of the exact bytes.
    Base64,
}

/// A pty size.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtySize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// The command of an exec (both endpoints).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Environment added for this command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (absolute guest path).
    #[serde(default)]
    pub workdir: Option<String>,
    /// User id.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Group id.
    #[serde(default)]
    pub gid: Option<u32>,
    /// Text for stdin (run-to-completion only).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Base64 bytes for stdin (run-to-completion only).
    #[serde(default)]
    pub stdin_base64: Option<String>,
    /// Run on a pty of this size.
    #[serde(default)]
    pub tty: Option<TtySize>,
    /// Kill the command after this many seconds (exit code 124).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Encoding of stdout/stderr in the answer (run-to-completion only).
    #[serde(default)]
    pub output: Encoding,
}

impl ExecBody {
    /// The SDK's options for this command, checked.
    pub fn options(&self) -> Result<ExecOptions, ApiError> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(ApiError::invalid(
                "field \"command\": give the program and its arguments, e.g. [\"ls\", \"-l\"]",
            ));
        }
        if let Some(i) = self.command.iter().position(|a| a.contains('\0')) {
            return Err(ApiError::invalid(format!(
                "field \"command[{i}]\" holds a NUL byte"
            )));
        }
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') || w.contains('\0') {
                return Err(ApiError::invalid(format!(
                    "field \"workdir\": {w:?} must be an absolute guest path"
                )));
            }
        }
        if self.tty.is_some_and(|t| t.rows == 0 || t.cols == 0) {
            return Err(ApiError::invalid(
                "field \"tty\": rows and cols must be positive",
            ));
        }
        let stdin = match (&self.stdin, &self.stdin_base64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "fields \"stdin\" and \"stdin_base64\": give one of them",
                ))
            }
            (Some(text), None) => Some(text.as_bytes().to_vec()),
            (None, Some(b64)) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| ApiError::invalid(format!("field \"stdin_base64\": {e}")))?,
            ),
            (None, None) => None,
        };
        Ok(ExecOptions {
            argv: self.command.clone(),
            env: env_list("env", &self.env)?,
            workdir: self.workdir.clone(),
            uid: self.uid,
            gid: self.gid,
            stdin,
            tty: self.tty.map(|t| (t.rows, t.cols)),
            timeout_secs: self.timeout_secs,
        })
    }
}

/// How a command ended (the stream's exit frame; part of [`ExecResult`]).
#[derive(Debug, Serialize)]
pub struct ExitInfo {
    /// Exit code as `msb exec` gives it: the command's own, 128+N for a
    /// signal N, 124 for a timeout, 126/127 when it could not run.
    pub exit_code: i32,
    /// Signal that killed it, if one did.
    pub signal: Option<i32>,
    /// True when `timeout_secs` killed it.
    pub timed_out: bool,
    /// Why it could not start, if it could not.
    pub error: Option<String>,
}

impl ExitInfo {
    /// The exit of `out`.
    pub fn of(out: &ExecOutput) -> ExitInfo {
        let exited = out.exited();
        ExitInfo {
            exit_code: out.exit_code(),
            signal: exited.signal,
            timed_out: exited.timed_out,
            error: exited.error.clone(),
        }
    }
}

/// The answer of a finished command.
#[derive(Debug, Serialize)]
pub struct ExecResult {
    /// How it ended.
    #[serde(flatten)]
    pub exit: ExitInfo,
    /// Its stdout, in `encoding`.
    pub stdout: String,
    /// Its stderr, in `encoding`.
    pub stderr: String,
    /// `utf8` or `base64`.
    pub encoding: Encoding,
    /// True when the output passed [`MAX_OUTPUT`] and the command was
    /// killed.
    pub truncated: bool,
}

impl ExecResult {
    /// The answer for `out`, its output in `encoding`.
    pub fn of(out: &ExecOutput, encoding: Encoding, truncated: bool) -> ExecResult {
        let enc = |b: &[u8]| match encoding {
            Encoding::Utf8 => String::from_utf8_lossy(b).into_owned(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(b),
        };
        ExecResult {
            exit: ExitInfo::of(out),
            stdout: enc(out.stdout_bytes()),
            stderr: enc(out.stderr_bytes()),
            encoding,
            truncated,
        }
    }
}

/// A command running for a client: killed (SIGKILL to its process group)
/// when dropped before [`Running::disarm`], i.e. when the request ends
/// early because its client went away.
pub struct Running {
    /// Its output and exit.
    pub stream: ExecStream,
    kill: Option<ExecInput>,
}

impl Running {
    /// Starts `opts` in sandbox `name`, stdin open.
    pub async fn start(name: String, opts: ExecOptions) -> Result<Running, ApiError> {
        let sandbox = crate::Sandbox::get(name).await?;
        let stream = sandbox.exec_stream(opts).await?;
        let kill = Some(stream.input());
        Ok(Running { stream, kill })
    }

    /// The command ended: nothing to kill on drop.
    pub fn disarm(&mut self) {
        self.kill = None;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(input) = self.kill.take() else {
            return;
        };
        tracing::info!("exec client went away: killing its command");
        // A thread of its own: the write may block, and this may run while
        // the runtime shuts down (when tokio's blocking pool is gone).
        std::thread::spawn(move || {
            let _ = input.signal(SIGKILL);
        });
    }
}

/// `POST /v1/sandboxes/{name}/exec`: runs the command to its end.
pub async fn run(
    State(_state): State<AppState>,
    Path(name): Path<String>,
    Json(req): Json<ExecBody>,
) -> Result<impl IntoResponse, ApiError> {
    let mut opts = req.options()?;
    let stdin = opts.stdin.take();
    let mut running = Running::start(name, opts).await?;
    let stream = &mut running.stream;
    if let Some(bytes) = stdin {
        stream.write_stdin(bytes).await?;
    }
    stream.close_stdin().await?;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut truncated = false;
    let exited = loop {
        let event = stream
            .next()
            .await
            .ok_or_else(|| ApiError::internal("the command's stream ended without its exit"))??;
        let (is_stdout, bytes) = match event {
            ExecEvent::Stdout(b) => (true, b),
            ExecEvent::Stderr(b) => (false, b),
            ExecEvent::Exited(e) => break e,
        };
        if truncated {
            continue;
        }
        if stdout.len() + stderr.len() + bytes.len() > MAX_OUTPUT {
            truncated = true;
            stream.signal(SIGKILL).await?;
        } else if is_stdout {
            stdout.extend_from_slice(&bytes);
        } else {
            stderr.extend_from_slice(&bytes);
        }
    };
    running.disarm();
    let out = ExecOutput::new(stdout, stderr, exited);
    Ok(axum::Json(ExecResult::of(&out, req.output, truncated)))
}
