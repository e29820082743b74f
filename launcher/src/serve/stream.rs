//! `POST /v1/sandboxes/{name}/exec/stream`: a command with stdin, stdout
//! and stderr streamed both ways over an upgraded connection.
//!
//! The request carries `Connection: Upgrade`, `Upgrade: msb-exec` and the
//! command as JSON (as for `/exec`, without `stdin`, `stdin_base64` and
//! `output`). Errors before the start are ordinary JSON answers; once the
//! command runs the server answers `101 Switching Protocols` and both
//! sides exchange frames: one kind byte, a big-endian u32 payload length,
//! the payload (at most [`MAX_FRAME`] bytes).
//!
//! | kind | direction | payload |
//! | --- | --- | --- |
//! | 1 stdout, 2 stderr | server → client | bytes |
//! | 3 exit | server → client | JSON: `exit_code`, `signal`, `timed_out`, `error`; the last frame |
//! | 4 error | server → client | JSON error body; the last frame |
//! | 16 stdin | client → server | bytes; an empty payload closes stdin |
//! | 17 signal | client → server | u32 signal number |
//! | 18 resize | client → server | u16 rows, u16 cols |
//!
//! A client that closes the connection before the exit frame takes the
//! command with it (SIGKILL).

use axum::extract::{FromRequestParts, State};
use axum::http::header::{CONNECTION, UPGRADE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use guest_init::protocol::WindowSize;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::body::{Json, Path};
use super::error::ApiError;
use super::exec::{Encoding, ExecBody, ExitInfo, Running};
use super::AppState;
use crate::sandbox::client::ExecInput;
use crate::sdk::ExecOutput;
use crate::ExecEvent;

/// The `Upgrade` protocol name.
pub const PROTOCOL: &str = "msb-exec";
/// Largest frame payload either side may send.
pub const MAX_FRAME: usize = 1 << 20;

/// Frame kinds (see the module docs).
pub mod kind {
    /// Server → client: stdout bytes.
    pub const STDOUT: u8 = 1;
    /// Server → client: stderr bytes.
    pub const STDERR: u8 = 2;
    /// Server → client: the exit, JSON.
    pub const EXIT: u8 = 3;
    /// Server → client: an error, JSON.
    pub const ERROR: u8 = 4;
    /// Client → server: stdin bytes (empty: close).
    pub const STDIN: u8 = 16;
    /// Client → server: a signal, u32.
    pub const SIGNAL: u8 = 17;
    /// Client → server: a pty size, u16 rows + u16 cols.
    pub const RESIZE: u8 = 18;
}

/// The connection to upgrade, from a request that asked for [`PROTOCOL`].
pub struct Upgrade(OnUpgrade);

fn has_token(parts: &Parts, name: axum::http::HeaderName, token: &str) -> bool {
    parts.headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        if !has_token(parts, CONNECTION, "upgrade") || !has_token(parts, UPGRADE, PROTOCOL) {
            return Err(ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "upgrade_required",
                format!(
                    "this endpoint streams over an upgraded connection: send \
                     `Connection: Upgrade` and `Upgrade: {PROTOCOL}` (or use /exec)"
                ),
            ));
        }
        parts
            .extensions
            .remove::<OnUpgrade>()
            .map(Upgrade)
            .ok_or_else(|| ApiError::internal("this connection cannot be upgraded"))
    }
}

/// `POST /v1/sandboxes/{name}/exec/stream`.
pub async fn exec(
    State(_state): State<AppState>,
    Path(name): Path<String>,
    Upgrade(on_upgrade): Upgrade,
    Json(req): Json<ExecBody>,
) -> Result<Response, ApiError> {
    if req.stdin.is_some() || req.stdin_base64.is_some() || req.output != Encoding::Utf8 {
        return Err(ApiError::invalid(
            "fields \"stdin\", \"stdin_base64\" and \"output\" are for /exec; \
             a stream sends stdin frames and gets raw bytes",
        ));
    }
    let running = Running::start(name, req.options()?).await?;
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => pump(TokioIo::new(upgraded), running).await,
            // The client left before the switch: dropping `running` kills
            // the command.
            Err(e) => tracing::info!("exec stream: upgrade failed: {e}"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(PROTOCOL));
    Ok(response)
}

/// Writes one frame.
async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(payload).await?;
    w.flush().await
}

/// Reads one frame; `None` at a clean end of the connection.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<(u8, Vec<u8>)>, String> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(format!(
            "frame of {len} bytes is over the limit of {MAX_FRAME}"
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some((head[0], payload)))
}

/// Applies one client frame to the command.
fn apply(input: &ExecInput, kind: u8, payload: &[u8]) -> Result<(), String> {
    let done = match (kind, payload.len()) {
        (kind::STDIN, 0) => input.close(),
        (kind::STDIN, _) => input.write(payload),
        (kind::SIGNAL, 4) => {
            let n = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            let signal = i32::try_from(n).map_err(|_| format!("signal {n} is out of range"))?;
            input.signal(signal)
        }
        (kind::RESIZE, 4) => input.resize(WindowSize {
            rows: u16::from_be_bytes([payload[0], payload[1]]),
            cols: u16::from_be_bytes([payload[2], payload[3]]),
        }),
        (kind::SIGNAL | kind::RESIZE, n) => {
            return Err(format!(
                "frame kind {kind} needs a 4-byte payload, not {n} bytes"
            ))
        }
        (other, _) => return Err(format!("unknown frame kind {other}")),
    };
    done.map_err(|e| e.to_string())
}

/// Feeds client frames to the command until the client ends or sends
/// something wrong; returns why it stopped (`None`: a clean close).
async fn feed<R: AsyncRead + Unpin>(mut r: R, input: ExecInput) -> Option<String> {
    loop {
        let (kind, payload) = match read_frame(&mut r).await {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(e) => return Some(e),
        };
        let input = input.clone();
        match tokio::task::spawn_blocking(move || apply(&input, kind, &payload)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Some(e),
            Err(e) => return Some(e.to_string()),
        }
    }
}

/// Relays the command's output to the client and the client's frames to
/// the command, until the exit frame is sent or the client goes away
/// (then `running` is dropped armed, which kills the command).
async fn pump<T: AsyncRead + AsyncWrite + Send + 'static>(io: T, mut running: Running) {
    let (reader, mut writer) = tokio::io::split(io);
    let mut feeder = tokio::spawn(feed(reader, running.stream.input()));
    loop {
        tokio::select! {
            event = running.stream.next() => {
                let (kind, payload) = match event {
                    Some(Ok(ExecEvent::Stdout(b))) => (kind::STDOUT, b),
                    Some(Ok(ExecEvent::Stderr(b))) => (kind::STDERR, b),
                    Some(Ok(ExecEvent::Exited(exited))) => {
                        running.disarm();
                        let out = ExecOutput::new(Vec::new(), Vec::new(), exited);
                        let json = serde_json::to_vec(&ExitInfo::of(&out)).unwrap_or_default();
                        (kind::EXIT, json)
                    }
                    Some(Err(e)) => {
                        let e = ApiError::from(e);
                        (kind::ERROR, serde_json::to_vec(&e.body()).unwrap_or_default())
                    }
                    None => {
                        let e = ApiError::internal("the command's stream ended without its exit");
                        (kind::ERROR, serde_json::to_vec(&e.body()).unwrap_or_default())
                    }
                };
                let last = kind == kind::EXIT || kind == kind::ERROR;
                if write_frame(&mut writer, kind, &payload).await.is_err() {
                    break;
                }
                if last {
                    let _ = writer.shutdown().await;
                    break;
                }
            }
            stopped = &mut feeder => {
                match stopped {
                    Ok(Some(why)) => {
                        tracing::info!("exec stream: {why}");
                        let e = ApiError::invalid(format!("stream: {why}"));
                        let body = serde_json::to_vec(&e.body()).unwrap_or_default();
                        let _ = write_frame(&mut writer, kind::ERROR, &body).await;
                    }
                    _ => tracing::info!("exec stream: the client closed the connection"),
                }
                break;
            }
        }
    }
    feeder.abort();
}
