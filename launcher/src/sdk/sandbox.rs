//! `Sandbox`: create sandboxes that stay up and run commands in them.

use std::path::PathBuf;

use guest_init::protocol::{ExecRequest, Exited, FileStat, FsRequest, WindowSize};

use super::mount::{Mount, MountBuilder};
use super::{blocking, home};
use crate::cli::MachineArgs;
use crate::sandbox::client::{fs_request, ExecEvent, ExecInput, ExecSession};
use crate::sandbox::spec::SandboxSpec;
use crate::sandbox::store::{SandboxRecord, Status};
use crate::sandbox::{lifecycle, Error, Result};

/// A sandbox: a VM that stays up, with its mounts, taking commands.
#[derive(Debug, Clone)]
pub struct Sandbox {
    name: String,
    home: PathBuf,
}

/// Builds a sandbox: [`Sandbox::builder`].
#[derive(Debug, Clone)]
pub struct SandboxBuilder {
    name: String,
    image: Option<String>,
    mounts: Vec<String>,
    machine: MachineArgs,
}

impl SandboxBuilder {
    /// The OCI image of its root filesystem.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Mounts something at `guest_path`:
    /// `.volume("/data", |v| v.named("shared-data").readonly())`.
    pub fn volume<M: Into<Mount>>(
        mut self,
        guest_path: impl AsRef<str>,
        mount: impl FnOnce(MountBuilder) -> M,
    ) -> Self {
        let m: Mount = mount(MountBuilder).into();
        self.mounts.push(m.to_spec(guest_path.as_ref()));
        self
    }

    /// vCPUs (default 1).
    pub fn cpus(mut self, n: u32) -> Self {
        self.machine.cpus = n;
        self
    }

    /// Memory in MiB (default 512).
    pub fn memory(mut self, mib: u64) -> Self {
        self.machine.memory = format!("{mib}M");
        self
    }

    /// An environment variable of every command.
    pub fn env(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.machine
            .env
            .push(format!("{}={}", key.as_ref(), value.as_ref()));
        self
    }

    /// Working directory of commands.
    pub fn workdir(mut self, dir: impl Into<String>) -> Self {
        self.machine.workdir = Some(dir.into());
        self
    }

    /// Boots the sandbox and returns once it takes commands.
    pub async fn create(self) -> Result<Sandbox> {
        let home = home()?;
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        let mut machine = self.machine;
        machine.mounts = self.mounts;
        let spec = SandboxSpec {
            machine,
            image: self.image,
            cwd,
        };
        let name = self.name;
        let h = home.clone();
        let n = name.clone();
        blocking(move || lifecycle::create(&h, &n, &spec)).await?;
        Ok(Sandbox { name, home })
    }
}

/// What a finished command gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exited: Exited,
}

impl ExecOutput {
    /// A finished command's output from its parts (e.g. what a server
    /// relaying an [`ExecStream`] collected).
    pub fn new(stdout: Vec<u8>, stderr: Vec<u8>, exited: Exited) -> ExecOutput {
        ExecOutput {
            stdout,
            stderr,
            exited,
        }
    }

    /// Its stdout as text (invalid UTF-8 replaced).
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Its stderr as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Its stdout bytes.
    pub fn stdout_bytes(&self) -> &[u8] {
        &self.stdout
    }

    /// Its stderr bytes.
    pub fn stderr_bytes(&self) -> &[u8] {
        &self.stderr
    }

    /// Exit code as `msb exec` reports it: the command's own, 128+N for a
    /// signal N, 124 for a timeout, 126/127 when it could not run.
    pub fn exit_code(&self) -> i32 {
        let e = &self.exited;
        if e.timed_out {
            return crate::exit::TIMEOUT;
        }
        match (e.code, e.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => crate::exit::SIGNAL_BASE + s,
            (None, None) => crate::exit::LAUNCHER,
        }
    }

    /// True when it exited with 0.
    pub fn success(&self) -> bool {
        self.exit_code() == 0
    }

    /// How it ended, in detail.
    pub fn exited(&self) -> &Exited {
        &self.exited
    }
}

impl std::fmt::Display for ExecOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.stdout())
    }
}

/// A command to run with more than argv: see [`Sandbox::exec_with`].
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User id.
    pub uid: Option<u32>,
    /// Group id.
    pub gid: Option<u32>,
    /// Bytes for stdin (closed after them); `None`: empty stdin.
    pub stdin: Option<Vec<u8>>,
    /// Run on a pty of this size.
    pub tty: Option<(u16, u16)>,
    /// Kill after this many seconds.
    pub timeout_secs: Option<u64>,
}

impl ExecOptions {
    fn request(&self, stream_stdin: bool) -> ExecRequest {
        ExecRequest {
            argv: self.argv.clone(),
            env: self.env.clone(),
            workdir: self.workdir.clone(),
            uid: self.uid,
            gid: self.gid,
            stdin: stream_stdin || self.stdin.is_some(),
            tty: self.tty.map(|(rows, cols)| WindowSize { rows, cols }),
            timeout_ms: self.timeout_secs.map(|s| s.saturating_mul(1000)),
        }
    }
}

/// A command running in a sandbox, streamed: [`Sandbox::exec_stream`].
pub struct ExecStream {
    events: tokio::sync::mpsc::Receiver<Result<ExecEvent>>,
    input: ExecInput,
}

impl ExecStream {
    /// The next output chunk or the exit; `None` after the exit.
    pub async fn next(&mut self) -> Option<Result<ExecEvent>> {
        self.events.recv().await
    }

    /// A handle for its stdin, signals and resizes that can be used from
    /// another task or thread while this stream is read.
    pub fn input(&self) -> ExecInput {
        self.input.clone()
    }

    /// Sends bytes to its stdin.
    pub async fn write_stdin(&self, bytes: Vec<u8>) -> Result<()> {
        let input = self.input.clone();
        blocking(move || input.write(&bytes)).await
    }

    /// Closes its stdin.
    pub async fn close_stdin(&self) -> Result<()> {
        let input = self.input.clone();
        blocking(move || input.close()).await
    }

    /// Sends a signal to it.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        let input = self.input.clone();
        blocking(move || input.signal(signal)).await
    }

    /// Resizes its pty.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let input = self.input.clone();
        blocking(move || input.resize(WindowSize { rows, cols })).await
    }
}

impl Sandbox {
    /// Starts building sandbox `name`.
    pub fn builder(name: impl Into<String>) -> SandboxBuilder {
        SandboxBuilder {
            name: name.into(),
            image: None,
            mounts: Vec::new(),
            machine: MachineArgs::default(),
        }
    }

    /// An existing sandbox.
    pub async fn get(name: impl Into<String>) -> Result<Sandbox> {
        let name = name.into();
        let home = home()?;
        let (h, n) = (home.clone(), name.clone());
        blocking(move || lifecycle::inspect(&h, &n)).await?;
        Ok(Sandbox { name, home })
    }

    /// Every sandbox's record.
    pub async fn list() -> Result<Vec<SandboxRecord>> {
        let home = home()?;
        blocking(move || lifecycle::list(&home)).await
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its current status.
    pub async fn status(&self) -> Result<Status> {
        let (h, n) = (self.home.clone(), self.name.clone());
        blocking(move || lifecycle::inspect(&h, &n).map(|r| r.status())).await
    }

    /// Runs `cmd` with `args` and collects its output:
    /// `sb.exec("cat", ["/data/message.txt"])`.
    pub async fn exec<I, S>(&self, cmd: impl Into<String>, args: I) -> Result<ExecOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut argv = vec![cmd.into()];
        argv.extend(args.into_iter().map(Into::into));
        self.exec_with(ExecOptions {
            argv,
            ..ExecOptions::default()
        })
        .await
    }

    /// Runs `script` with `sh -c`.
    pub async fn shell(&self, script: impl Into<String>) -> Result<ExecOutput> {
        self.exec("sh", ["-c".to_string(), script.into()]).await
    }

    /// Runs a command with options and collects its output.
    pub async fn exec_with(&self, opts: ExecOptions) -> Result<ExecOutput> {
        let (h, n) = (self.home.clone(), self.name.clone());
        blocking(move || {
            let socket = lifecycle::control_socket(&h, &n)?;
            let mut session = ExecSession::start(&socket, &n, &opts.request(false))?;
            if let Some(bytes) = &opts.stdin {
                let input = session.input();
                let bytes = bytes.clone();
                std::thread::spawn(move || {
                    let _ = input.write(&bytes);
                    let _ = input.close();
                });
            }
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            loop {
                match session.next_event()? {
                    ExecEvent::Stdout(b) => stdout.extend_from_slice(&b),
                    ExecEvent::Stderr(b) => stderr.extend_from_slice(&b),
                    ExecEvent::Exited(exited) => {
                        return Ok(ExecOutput {
                            stdout,
                            stderr,
                            exited,
                        })
                    }
                }
            }
        })
        .await
    }

    /// Starts a command and streams its output as it comes; its stdin is
    /// open for [`ExecStream::write_stdin`].
    pub async fn exec_stream(&self, opts: ExecOptions) -> Result<ExecStream> {
        let (h, n) = (self.home.clone(), self.name.clone());
        let req = opts.request(true);
        let session = blocking(move || {
            let socket = lifecycle::control_socket(&h, &n)?;
            ExecSession::start(&socket, &n, &req)
        })
        .await?;
        let input = session.input();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        std::thread::spawn(move || {
            let mut session = session;
            loop {
                let ev = session.next_event();
                let last = !matches!(ev, Ok(ExecEvent::Stdout(_) | ExecEvent::Stderr(_)));
                if tx.blocking_send(ev).is_err() || last {
                    return;
                }
            }
        });
        Ok(ExecStream { events: rx, input })
    }

    /// File access inside the running sandbox, through its agent.
    pub fn fs(&self) -> SandboxFs {
        SandboxFs {
            sandbox: self.clone(),
        }
    }

    /// Stops it (clean guest shutdown).
    pub async fn stop(&self) -> Result<()> {
        let (h, n) = (self.home.clone(), self.name.clone());
        blocking(move || lifecycle::stop(&h, &n, false)).await
    }

    /// Starts it again with the same configuration.
    pub async fn start(&self) -> Result<()> {
        let (h, n) = (self.home.clone(), self.name.clone());
        blocking(move || lifecycle::start(&h, &n)).await
    }

    /// Removes it, stopping it first if it runs.
    pub async fn remove(self) -> Result<()> {
        let (h, n) = (self.home, self.name);
        blocking(move || lifecycle::remove(&h, &n, true)).await
    }
}

/// Files inside a running sandbox (guest paths), through its agent.
#[derive(Debug, Clone)]
pub struct SandboxFs {
    sandbox: Sandbox,
}

impl SandboxFs {
    async fn request(
        &self,
        req: FsRequest,
        upload: Option<Vec<u8>>,
    ) -> Result<(guest_init::protocol::FsReply, Vec<u8>)> {
        let (h, n) = (self.sandbox.home.clone(), self.sandbox.name.clone());
        blocking(move || {
            let socket = lifecycle::control_socket(&h, &n)?;
            let mut data = Vec::new();
            let mut up = upload.as_deref();
            let reply = fs_request(
                &socket,
                &n,
                &req,
                up.as_mut().map(|u| u as &mut dyn std::io::Read),
                Some(&mut data),
            )?;
            Ok((reply, data))
        })
        .await
    }

    /// A file's contents.
    pub async fn read(&self, path: impl Into<String>) -> Result<Vec<u8>> {
        let (_, data) = self
            .request(FsRequest::Read { path: path.into() }, None)
            .await?;
        Ok(data)
    }

    /// A file's contents as text.
    pub async fn read_string(&self, path: impl Into<String>) -> Result<String> {
        let bytes = self.read(path).await?;
        String::from_utf8(bytes).map_err(|e| Error::Invalid(format!("not UTF-8: {e}")))
    }

    /// Writes a file (created 0644 or truncated).
    pub async fn write(&self, path: impl Into<String>, data: impl AsRef<[u8]>) -> Result<()> {
        let req = FsRequest::Write {
            path: path.into(),
            mode: 0o644,
        };
        self.request(req, Some(data.as_ref().to_vec())).await?;
        Ok(())
    }

    /// A directory's entries.
    pub async fn list(&self, path: impl Into<String>) -> Result<Vec<FileStat>> {
        let (reply, _) = self
            .request(FsRequest::List { path: path.into() }, None)
            .await?;
        Ok(reply.entries)
    }

    /// A path's metadata (symlinks not followed).
    pub async fn stat(&self, path: impl Into<String>) -> Result<FileStat> {
        let (reply, _) = self
            .request(FsRequest::Stat { path: path.into() }, None)
            .await?;
        reply
            .stat
            .ok_or_else(|| Error::Agent("stat answered without metadata".into()))
    }

    /// Creates a directory and its parents.
    pub async fn mkdir(&self, path: impl Into<String>) -> Result<()> {
        let req = FsRequest::Mkdir {
            path: path.into(),
            mode: 0o755,
        };
        self.request(req, None).await?;
        Ok(())
    }

    /// Removes a file or an empty directory.
    pub async fn remove(&self, path: impl Into<String>) -> Result<()> {
        let req = FsRequest::Remove {
            path: path.into(),
            recursive: false,
        };
        self.request(req, None).await?;
        Ok(())
    }

    /// Removes a file or a directory with everything in it.
    pub async fn remove_all(&self, path: impl Into<String>) -> Result<()> {
        let req = FsRequest::Remove {
            path: path.into(),
            recursive: true,
        };
        self.request(req, None).await?;
        Ok(())
    }

    /// Whether a path exists.
    pub async fn exists(&self, path: impl Into<String>) -> Result<bool> {
        match self.stat(path).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
