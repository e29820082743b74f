//! Creating, starting, stopping and removing sandboxes: the one
//! implementation behind `msb create/start/stop/rm/ls/inspect` and the SDK.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::client;
use super::error::{Error, Result};
use super::spec::{validate_name, SandboxSpec};
use super::store::{SandboxRecord, SandboxStore, Status};
use super::supervisor::recorded_run_dir;
use crate::machine;
use crate::process::PASSED_FD;

/// Environment variable naming the `msb` binary that runs supervisors.
pub const MSB_BIN_ENV: &str = "MSB_BIN";
/// The hidden `msb` subcommand a supervisor runs as.
pub const SUPERVISOR_COMMAND: &str = "sandbox-supervisor";
/// How long `stop` waits for the supervisor to finish.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// Creates sandbox `name` and boots it; returns once its agent is ready.
/// Everything is checked first (a bad spec changes nothing); if the VM
/// does not come up, nothing is left behind.
pub fn create(home: &Path, name: &str, spec: &SandboxSpec) -> Result<()> {
    validate_name(name)?;
    // The same checks `msb run` makes, before anything is recorded
    // (relative host paths resolve against this process's directory, which
    // is where the spec's `cwd` came from).
    machine::check(&spec.machine)?;
    if let Some(reference) = &spec.image {
        // Pull (with progress on a terminal) and build the root now, so a
        // bad or missing image is reported before the name is taken.
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        machine::image::resolve(home, reference, machine::Upper::Tmpfs, tty)?;
    }
    let mut store = SandboxStore::open(home)?;
    store.insert(name, spec)?;
    if let Err(e) = spawn_supervisor(&store, name) {
        let _ = store.delete(name);
        return Err(e);
    }
    Ok(())
}

/// Starts a stopped (or crashed) sandbox with the spec it was created with.
pub fn start(home: &Path, name: &str) -> Result<()> {
    let mut store = SandboxStore::open(home)?;
    clean_after_crash(&store, name)?;
    store.restart(name)?;
    spawn_supervisor(&store, name)
}

/// Stops a running sandbox: a clean guest shutdown (processes get SIGTERM,
/// disks are unmounted), or with `force` an immediate stop of the VM.
/// Stopping a sandbox that is not running does nothing.
pub fn stop(home: &Path, name: &str, force: bool) -> Result<()> {
    let store = SandboxStore::open(home)?;
    let rec = store.get(name)?;
    if !rec.status().is_up() {
        return clean_after_crash(&store, name);
    }
    let socket = store.control_socket(name);
    let asked = client::request_stop(&socket, name, force);
    let deadline = Instant::now() + STOP_WAIT;
    loop {
        let rec = store.get(name)?;
        if !rec.status().is_up() {
            return clean_after_crash(&store, name);
        }
        if Instant::now() >= deadline || (asked.is_err() && force) {
            // The supervisor does not answer: kill it (the VMM and daemons
            // die with it) and clean up after it.
            if let Some(p) = rec.supervisor.filter(|p| p.is_alive()) {
                // SAFETY: kill(2) with plain integers; the pid was checked
                // against its start time just above.
                unsafe { libc::kill(p.pid as libc::pid_t, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(200));
            return clean_after_crash(&store, name);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes a sandbox; a running one only with `force` (stopped first).
pub fn remove(home: &Path, name: &str, force: bool) -> Result<()> {
    let mut store = SandboxStore::open(home)?;
    let rec = store.get(name)?;
    if rec.status().is_up() {
        if !force {
            return Err(Error::InUse(format!(
                "sandbox {name:?} is {}; stop it first (msb stop {name}) or use rm -f",
                rec.status().as_str()
            )));
        }
        stop(home, name, true)?;
    }
    clean_after_crash(&store, name)?;
    store.delete(name)
}

/// Every sandbox (what crashed supervisors left on disk is removed on the
/// way).
pub fn list(home: &Path) -> Result<Vec<SandboxRecord>> {
    let store = SandboxStore::open(home)?;
    let list = store.list()?;
    for r in list.iter().filter(|r| r.status() == Status::Crashed) {
        clean_after_crash(&store, &r.name)?;
    }
    Ok(list)
}

/// One sandbox.
pub fn inspect(home: &Path, name: &str) -> Result<SandboxRecord> {
    let store = SandboxStore::open(home)?;
    let rec = store.get(name)?;
    if rec.status() == Status::Crashed {
        clean_after_crash(&store, name)?;
    }
    Ok(rec)
}

/// The control socket of a running sandbox, or why there is none.
pub fn control_socket(home: &Path, name: &str) -> Result<PathBuf> {
    let store = SandboxStore::open(home)?;
    let rec = store.get(name)?;
    match rec.status() {
        Status::Running | Status::Unhealthy => Ok(store.control_socket(name)),
        other => Err(Error::InvalidState(format!(
            "sandbox {name:?} is {}{}; start it with `msb start {name}`",
            other.as_str(),
            rec.reason().map(|r| format!(" ({r})")).unwrap_or_default()
        ))),
    }
}

/// Removes what a killed supervisor left: its run directory and control
/// socket (its VMM and daemons died with it).
fn clean_after_crash(store: &SandboxStore, name: &str) -> Result<()> {
    let rec = store.get(name)?;
    if rec.status().is_up() {
        return Ok(());
    }
    if let Some(dir) = recorded_run_dir(store, name) {
        if dir.exists() {
            tracing::info!("removing {} left by a crashed supervisor", dir.display());
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let _ = std::fs::remove_file(store.dir(name).join(super::supervisor::RUN_DIR_NOTE));
    let _ = std::fs::remove_file(store.control_socket(name));
    Ok(())
}

/// The `msb` binary that runs supervisors: `$MSB_BIN`, this program if it
/// is `msb`, an `msb` next to it or one directory up (cargo's `examples/`
/// and `deps/`), else `msb` on `PATH`.
pub fn msb_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(MSB_BIN_ENV) {
        return Ok(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        if exe.file_name().is_some_and(|n| n == "msb") {
            return Ok(exe);
        }
        if let Some(dir) = exe.parent() {
            for cand in [dir.join("msb"), dir.join("../msb")] {
                if cand.is_file() {
                    return Ok(cand);
                }
            }
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("msb"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::State(format!(
                "cannot find the msb binary to run the sandbox supervisor: set {MSB_BIN_ENV}"
            ))
        })
}

/// Starts the supervisor of `name` detached (own session, not killed with
/// us) and waits until it reports the sandbox ready or fails.
fn spawn_supervisor(store: &SandboxStore, name: &str) -> Result<()> {
    let bin = msb_binary()?;
    let (read_end, write_end) = pipe()?;
    let log_path = store.log(name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let mut cmd = Command::new(&bin);
    cmd.arg(SUPERVISOR_COMMAND)
        .arg(name)
        .arg("--home")
        .arg(store.home())
        .env(volumes::HOME_ENV, store.home())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let fd = write_end.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (setsid, dup2, fcntl) on plain integers.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            let ok = if fd == PASSED_FD {
                libc::fcntl(fd, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(fd, PASSED_FD) >= 0
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::io(&bin, e))?;
    drop(write_end);
    // Reap it whenever it ends, so a long-lived SDK process keeps no zombie.
    std::thread::spawn(move || child.wait());
    let mut line = String::new();
    let mut reader = BufReader::new(std::fs::File::from(read_end));
    let _ = reader.read_line(&mut line);
    let line = line.trim_end();
    if line == "ready" {
        return Ok(());
    }
    let message = match line.strip_prefix("error: ") {
        Some(m) => m.to_string(),
        None => format!(
            "the sandbox supervisor exited during start-up; its log ({}) ends with:\n{}",
            log_path.display(),
            crate::run::tail_lines(&log_path, 10)
        ),
    };
    Err(classify(message))
}

/// Types a supervisor's start-up error from its message.
fn classify(message: String) -> Error {
    if message.starts_with("mount ") {
        Error::InvalidMount(message)
    } else if message.contains(" not found") {
        Error::NotFound(message)
    } else if message.starts_with("image ") || message.starts_with("--") {
        Error::Invalid(message)
    } else {
        Error::Vm(message)
    }
}

/// A close-on-exec pipe.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::State(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors were just created and are owned by no one else.
    Ok(unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    })
}

/// Whether any sandbox (running or not) was created from the image `id`
/// (`msb image rm` refuses such an image).
pub fn image_in_use(home: &Path, id: &images::ImageId) -> bool {
    let (Ok(store), Ok(images)) = (SandboxStore::open(home), images::Store::open(home)) else {
        // When in doubt, keep the image.
        return true;
    };
    let Ok(list) = store.list() else {
        return true;
    };
    list.iter()
        .filter_map(|r| r.spec.image.as_deref())
        .any(|reference| matches!(images.find(reference), Ok(Some(img)) if &img.id == id))
}
