//! `msb serve`: the local API. HTTP/1.1 + JSON on a unix socket (default
//! `$MSB_HOME/msb.sock`, mode 0600), versioned paths (`/v1/...`), over the
//! very library the CLI uses: every handler is a thin call into
//! [`crate::sandbox`], [`crate::sdk`], the `volumes` store or the `images`
//! store. The routes are listed once, in [`routes`]; `docs/openapi.json`
//! documents them (a test checks both ways).
//!
//! Sandboxes belong to their supervisors, not to the server: stopping or
//! restarting `msb serve` leaves them running.
//!
//! - [`listener`]: binding the socket, or taking one from systemd-style
//!   socket activation (`LISTEN_FDS`/`LISTEN_PID`);
//! - [`routes`]: the route table and the router;
//! - [`error`]: the JSON error body and its machine codes;
//! - [`body`]: JSON and byte bodies with size limits and field-naming errors;
//! - [`volumes`], [`sandboxes`], [`exec`], [`stream`], [`images`]: handlers.

pub mod body;
pub mod error;
pub mod exec;
pub mod images;
pub mod listener;
pub mod mounts;
pub mod routes;
pub mod sandboxes;
pub mod stream;
pub mod volumes;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::cli::LogLevel;
use crate::exit;

/// File name of the default socket under `$MSB_HOME`.
pub const SOCKET_NAME: &str = "msb.sock";
/// Environment variable naming the socket (the `--socket` default, and what
/// clients such as the Go SDK read first).
pub const SOCKET_ENV: &str = "MSB_SOCKET";
/// How long a stopping server waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(10);

/// Options of `msb serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Unix socket to listen on [default: $MSB_HOME/msb.sock]; created with
    /// mode 0600. Ignored when a listening socket is passed by socket
    /// activation (LISTEN_FDS=1 and LISTEN_PID set to this process).
    #[arg(long, value_name = "PATH", env = SOCKET_ENV)]
    pub socket: Option<PathBuf>,

    /// Log level of the server (RUST_LOG overrides).
    #[arg(long, value_enum, default_value = "info")]
    pub log_level: LogLevel,
}

/// What every handler gets: the state directory.
#[derive(Debug, Clone)]
pub struct AppState {
    home: Arc<PathBuf>,
}

impl AppState {
    /// The state of a server working in `home` (`MSB_HOME`).
    pub fn new(home: PathBuf) -> AppState {
        AppState {
            home: Arc::new(home),
        }
    }

    /// `MSB_HOME`.
    pub fn home(&self) -> &Path {
        &self.home
    }
}

/// Runs `msb serve` until SIGTERM or SIGINT; returns the exit status.
pub fn main(args: &ServeArgs) -> i32 {
    match serve(args) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("msb serve: {message}");
            exit::LAUNCHER
        }
    }
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    let home = ::volumes::default_home().map_err(|e| e.to_string())?;
    // Opening the store creates `home`, its database and schema, so a bad
    // state directory is reported now rather than on the first request.
    let store = ::volumes::Store::open(&home).map_err(|e| e.to_string())?;
    let home = store.home().to_path_buf();
    drop(store);
    // Bound before any thread exists (the socket is made under a umask).
    let bound = listener::Bound::take(args.socket.as_deref(), &home)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(run(bound, AppState::new(home)))
}

async fn run(bound: listener::Bound, state: AppState) -> Result<(), String> {
    let listener = bound.tokio_listener()?;
    // Handlers first: a SIGTERM that comes as soon as the first request
    // was answered must stop the server, not kill it.
    let stop = shutdown_signal();
    tracing::info!("listening on {}", bound.describe());
    let app = routes::router(state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stop| *stop).await;
    });
    let server = tokio::spawn(async move { server.await });
    stop.await;
    tracing::info!("stopping: no new connections; sandboxes keep running");
    // The path goes first, so a new server can bind it at once.
    bound.remove_path();
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN, server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("server: {e}")),
        Ok(Err(e)) => Err(format!("server task: {e}")),
        Err(_) => {
            tracing::warn!("requests still in flight after {DRAIN:?}: closing them");
            Ok(())
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves on
/// the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

/// Runs blocking library code on tokio's blocking pool.
pub(crate) async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, error::ApiError>
where
    T: Send + 'static,
    E: Into<error::ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(error::ApiError::internal(format!(
            "background task failed: {e}"
        ))),
    }
}
