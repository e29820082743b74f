//! A private `MSB_HOME` for sandbox tests, with `msb` commands run against
//! it, and cleanup that leaves nothing running: on drop every sandbox is
//! removed (`msb rm -f`), then any process still mentioning the test's
//! directory (supervisors, VMMs, daemons) is killed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::msb_proc::{ensure_initramfs, msb_binary, processes_mentioning, Sandbox};
use crate::vm_turn::VmTurn;

/// A test's `MSB_HOME` and its `msb` runner.
pub struct SandboxEnv {
    sb: Sandbox,
    home: PathBuf,
    _turn: VmTurn,
}

/// What one `msb` command did.
pub struct Ran {
    /// Exit status (-1: killed by a signal).
    pub code: i32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// The command line, for messages.
    pub described: String,
}

impl Ran {
    /// Panics with everything known unless the status is `code`.
    pub fn expect(self, code: i32) -> Ran {
        assert_eq!(self.code, code, "{}", self.describe());
        self
    }

    /// The whole story, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "$ {}\nexit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.described,
            self.code,
            crate::msb_proc::tail(&self.stdout, 40),
            crate::msb_proc::tail(&self.stderr, 40)
        )
    }
}

impl SandboxEnv {
    /// A fresh environment; holds this process's VM turn for its life.
    pub fn new(label: &str) -> SandboxEnv {
        ensure_initramfs();
        let turn = VmTurn::take();
        let sb = Sandbox::new(label);
        let home = sb.mkdir("home");
        copy_kvm_verdict(&home);
        SandboxEnv {
            sb,
            home,
            _turn: turn,
        }
    }

    /// The test directory.
    pub fn dir(&self) -> &Path {
        self.sb.path()
    }

    /// `MSB_HOME`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Creates `<dir>/<name>`.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        self.sb.mkdir(name)
    }

    /// A `Command` for the `msb` binary in this environment (MSB_HOME, and
    /// TMPDIR inside the test directory so run directories are checked).
    pub fn command(&self) -> Command {
        let bin = msb_binary().unwrap_or_else(|e| panic!("{e}"));
        self.command_for(&bin)
    }

    /// A `Command` for `program` in this environment (as [`Self::command`]).
    pub fn command_for(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("MSB_HOME", &self.home)
            .env("TMPDIR", self.sb.run_dir())
            .env_remove("XDG_RUNTIME_DIR")
            .current_dir(self.sb.path());
        cmd
    }

    /// Runs `msb ARGS` to the end (5 minutes at most).
    pub fn msb(&self, args: &[&str]) -> Ran {
        self.msb_stdin(args, None)
    }

    /// Runs `msb ARGS` with `input` on stdin.
    pub fn msb_stdin(&self, args: &[&str], input: Option<&[u8]>) -> Ran {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let described = format!("msb {}", args.join(" "));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{described}: {e}"));
        if let Some(bytes) = input {
            let mut stdin = child.stdin.take().expect("stdin");
            let bytes = bytes.to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&bytes);
            });
        }
        let out = wait_output(child, Duration::from_secs(300), &described);
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            described,
        }
    }

    /// `msb ls --json` parsed.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let r = self.msb(&["ls", "--json"]).expect(0);
        match serde_json::from_str(&r.stdout) {
            Ok(serde_json::Value::Array(v)) => v,
            other => panic!("msb ls --json: {other:?}\n{}", r.describe()),
        }
    }

    /// The status `msb ls` shows for `name`.
    pub fn status(&self, name: &str) -> String {
        self.list()
            .into_iter()
            .find(|v| v["name"] == name)
            .map(|v| v["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| "absent".into())
    }

    /// Processes that still belong to this environment.
    pub fn leftovers(&self) -> Vec<String> {
        processes_mentioning(self.sb.path())
            .into_iter()
            .map(|p| format!("{} {}", p.pid, p.cmdline))
            .collect()
    }

    /// Run directories left in TMPDIR.
    pub fn leftover_dirs(&self) -> Vec<String> {
        fs::read_dir(self.sb.run_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (up to `max`) until nothing of this environment runs and no
    /// run directory is left; panics naming what is left.
    pub fn assert_clean(&self, max: Duration) {
        let end = Instant::now() + max;
        loop {
            let procs = self.leftovers();
            let dirs = self.leftover_dirs();
            if procs.is_empty() && dirs.is_empty() {
                return;
            }
            if Instant::now() >= end {
                panic!("left behind: processes {procs:#?}, run dirs {dirs:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SandboxEnv {
    fn drop(&mut self) {
        let names: Vec<String> = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let out = self.command().args(["ls", "--json"]).output().ok()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            Some(
                v.as_array()?
                    .iter()
                    .filter_map(|s| s["name"].as_str().map(String::from))
                    .collect(),
            )
        }))
        .ok()
        .flatten()
        .unwrap_or_default();
        for n in names {
            let _ = self
                .command()
                .args(["rm", "-f", &n])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for p in processes_mentioning(self.sb.path()) {
            // SAFETY: kill(2) with plain integers on a leftover of this test.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
    }
}

/// Copies this host's cached KVM verdict into a test's `MSB_HOME`, so no
/// run in it re-probes KVM.
pub fn copy_kvm_verdict(home: &Path) {
    let cached = [
        std::env::var_os("XDG_RUNTIME_DIR").map(|d| PathBuf::from(d).join("msb/kvm-probe")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".microsandbox/cache/kvm-probe")),
    ];
    if let Some(src) = cached.into_iter().flatten().find(|p| p.is_file()) {
        fs::create_dir_all(home.join("cache")).unwrap();
        let _ = fs::copy(src, home.join("cache/kvm-probe"));
    }
}

/// Waits for `child` with a deadline, killing it when passed.
fn wait_output(mut child: std::process::Child, max: Duration, what: &str) -> Output {
    let end = Instant::now() + max;
    let out = child.stdout.take();
    let err = child.stderr.take();
    let read = |s: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut s) = s {
                let _ = s.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_t = read(out.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let err_t = read(err.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            panic!("{what}: still running after {max:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}
