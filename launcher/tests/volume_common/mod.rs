//! Running `msb volume …` against a private `MSB_HOME`, shared by the
//! volume CLI and crash tests.

#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Exit status of a usage error.
pub const USAGE: i32 = 2;

/// The `msb` binary Cargo built for these tests.
pub fn msb_bin() -> &'static str {
    env!("CARGO_BIN_EXE_msb")
}

/// What one `msb volume` run did.
#[derive(Debug)]
pub struct Out {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Out {
    /// Asserts stdout is exactly `want`.
    #[track_caller]
    pub fn stdout_is(&self, want: &str) -> &Self {
        assert_eq!(self.stdout, want, "{self:?}");
        self
    }
}

/// A temporary `MSB_HOME`.
pub struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    /// A fresh, empty state root.
    pub fn new() -> Home {
        Home {
            dir: tempfile::Builder::new()
                .prefix("msb-volume-test-")
                .tempdir()
                .unwrap(),
        }
    }

    /// The state root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `msb volume ARGS` with this home, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(msb_bin());
        c.arg("volume")
            .args(args)
            .env("MSB_HOME", self.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Starts `msb volume ARGS` (stdout and stderr discarded).
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        let mut c = self.command(args);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.spawn().unwrap()
    }

    /// Runs `msb volume ARGS` with `stdin` as its input.
    pub fn run_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        let mut c = self.command(args);
        if stdin.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c.spawn().unwrap();
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(data).unwrap();
        }
        let o = child.wait_with_output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Runs `msb volume ARGS`.
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_stdin(args, None)
    }

    /// Runs it and asserts exit 0 with nothing on stderr.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Out {
        let o = self.run(args);
        assert_eq!(
            (o.code, o.stderr.as_str()),
            (0, ""),
            "msb volume {args:?}: {o:?}"
        );
        o
    }

    /// `ok` with input on stdin.
    #[track_caller]
    pub fn ok_stdin(&self, args: &[&str], stdin: &[u8]) -> Out {
        let o = self.run_stdin(args, Some(stdin));
        assert_eq!(
            (o.code, o.stderr.as_str()),
            (0, ""),
            "msb volume {args:?}: {o:?}"
        );
        o
    }

    /// Runs it and asserts exit `code` with `needle` in stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str], code: i32, needle: &str) -> Out {
        let o = self.run(args);
        assert_eq!(o.code, code, "msb volume {args:?}: {o:?}");
        assert!(
            o.stderr.contains(needle),
            "msb volume {args:?}: want {needle:?} in {o:?}"
        );
        o
    }

    /// `fails` with input on stdin.
    #[track_caller]
    pub fn fails_stdin(&self, args: &[&str], stdin: &[u8], code: i32, needle: &str) -> Out {
        let o = self.run_stdin(args, Some(stdin));
        assert_eq!(o.code, code, "msb volume {args:?}: {o:?}");
        assert!(
            o.stderr.contains(needle),
            "msb volume {args:?}: want {needle:?} in {o:?}"
        );
        o
    }

    /// Runs it, asserts success, parses stdout as JSON.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let o = self.ok(args);
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {o:?}"))
    }
}
