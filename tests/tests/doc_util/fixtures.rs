//! What the examples run against, made here in a private `MSB_HOME`:
//! `./src`, `./cache`, `./config.toml`, `./data.qcow2` (ext4 with
//! `/notes`), `./app.tar` (an OCI archive), an `alpine:latest` image (busybox
//! with every applet, as Alpine's), and a real registry standing for the
//! docs' `127.0.0.1:5000` holding `team/app:1` (an index for amd64 and
//! arm64), `app:1` (with an Entrypoint and a Cmd) and `py:3` (Debian with
//! python3, pushed only when an example names it).
//!
//! Before each example, [`Fixtures::prepare`] puts the named things it
//! needs in place: a sandbox or volume it uses exists (made by the docs'
//! own `msb create` / `msb volume create` line when there is one), one it
//! creates does not, images it names are in the store or the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use msb_tests::msb_proc::{debugfs_write, make_ext4_image, msb_binary, qemu_img_convert};
use msb_tests::sandbox_env::{Ran, SandboxEnv};
use serde_json::{json, Value};

use super::extract::{commands, Example};
use crate::image_util::registry::Registry;
use crate::image_util::{python_layout, write_layout, Layer};
use msb_tests::oci_image::{put_blob, sha256_file, write_index};

/// The registry address the docs use; examples get the test registry's.
pub const DOCS_REGISTRY: &str = "127.0.0.1:5000";
/// The digest placeholder the docs use (`@sha256:…`).
const DOCS_DIGEST: &str = "sha256:…";
/// How long one example may run.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything the examples need, and what they have made so far.
pub struct Fixtures {
    /// The private `MSB_HOME` and test directory (the examples' cwd).
    pub env: SandboxEnv,
    registry: Registry,
    /// Directory holding `msb` for `PATH`.
    bin: PathBuf,
    /// Digest of the `team/app:1` index in the registry.
    app_index: String,
    /// Repositories pushed so far.
    pushed: BTreeSet<String>,
    /// Sandbox names the docs create, with the docs' line creating each.
    sandboxes: BTreeMap<String, String>,
    /// Volume names the docs use, with the docs' `msb volume create` line.
    volumes: BTreeMap<String, Option<String>>,
    /// Examples run so far (names their output files).
    runs: usize,
    /// Process groups of lines that left a background job.
    groups: Vec<i32>,
}

fn is_volume_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(['.', '/'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
}

/// The `key=` value of a `--mount` text.
fn mount_opt<'a>(spec: &'a str, key: &str) -> Option<&'a str> {
    spec.split(',')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

impl Fixtures {
    /// Makes the fixtures; `examples` are every example to be run (the
    /// sandboxes and volumes they create are learnt from them).
    pub fn new(examples: &[Example]) -> Fixtures {
        let env = SandboxEnv::new("docs");
        let dir = env.dir().to_path_buf();
        let bin = env.mkdir("bin");
        // Examples run with HOME here: `~/.microsandbox` is MSB_HOME.
        std::os::unix::fs::symlink(env.home(), dir.join(".microsandbox")).unwrap();
        let msb = msb_binary().unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(&msb, bin.join("msb")).unwrap();
        let src = env.mkdir("src");
        fs::write(src.join("hello.txt"), "hello from ./src\n").unwrap();
        fs::write(src.join("Makefile"), "all:\n\techo built\n").unwrap();
        let cache = env.mkdir("cache");
        fs::write(cache.join("cached.txt"), "cached\n").unwrap();
        fs::write(dir.join("config.toml"), "[app]\nname = \"docs\"\n").unwrap();
        let raw = dir.join("data.raw");
        make_ext4_image(&raw, 32);
        debugfs_write(&raw, "notes", b"notes on the disk image\n");
        qemu_img_convert(&raw, "qcow2", &dir.join("data.qcow2"));
        fs::remove_file(&raw).unwrap();
        let layouts = env.mkdir("layouts");
        write_layout(&layouts.join("app"), "1", &[alpine_layer()], json!({}));
        let tar = Command::new("tar")
            .arg("-C")
            .arg(layouts.join("app"))
            .arg("-cf")
            .arg(dir.join("app.tar"))
            .arg(".")
            .status()
            .expect("tar");
        assert!(tar.success(), "tar of the app layout");
        write_layout(
            &layouts.join("alpine"),
            "latest",
            &[alpine_layer()],
            json!({}),
        );
        write_layout(
            &layouts.join("entry"),
            "1",
            &[alpine_layer()],
            json!({"Entrypoint": ["/bin/echo", "app:"], "Cmd": ["hello from the image's Cmd"]}),
        );
        write_two_platform_layout(&layouts.join("multi"), "1");
        let registry = Registry::start();
        registry.push(&layouts.join("multi"), "1", "team/app:1", true);
        registry.push(&layouts.join("entry"), "1", "app:1", false);
        let app_index = registry_digest(&registry.reference("team/app:1"));
        let mut fx = Fixtures {
            env,
            registry,
            bin,
            app_index,
            pushed: BTreeSet::from(["team/app".to_string(), "app".to_string()]),
            sandboxes: BTreeMap::new(),
            volumes: BTreeMap::new(),
            runs: 0,
            groups: Vec::new(),
        };
        fx.learn(examples);
        fx
    }

    /// Notes the sandboxes and volumes the docs create or use.
    fn learn(&mut self, examples: &[Example]) {
        for ex in examples {
            for cmd in commands(&ex.line) {
                match cmd
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice()
                {
                    ["msb", "create", name, ..] => {
                        self.sandboxes
                            .entry(name.to_string())
                            .or_insert_with(|| cmd.join(" "));
                    }
                    ["msb", "volume", "create", name, ..] => {
                        self.volumes.insert(name.to_string(), Some(quote_all(&cmd)));
                    }
                    _ => {}
                }
                for (i, w) in cmd.iter().enumerate() {
                    let prev = i.checked_sub(1).map(|p| cmd[p].as_str());
                    if prev == Some("-v") || prev == Some("--volume") {
                        let src = w.split(':').next().unwrap_or_default();
                        if is_volume_name(src) {
                            self.volumes.entry(src.to_string()).or_default();
                        }
                    }
                    if prev == Some("--mount") && mount_opt(w, "type") == Some("volume") {
                        if let Some(src) = mount_opt(w, "src") {
                            self.volumes.entry(src.to_string()).or_default();
                        }
                    }
                }
            }
        }
    }

    /// The example's line as run: the docs' registry and digest
    /// placeholders replaced by the test registry's.
    pub fn resolve(&self, line: &str) -> String {
        let with_slash = self.registry.reference("");
        let addr = with_slash.trim_end_matches('/');
        line.replace(DOCS_REGISTRY, addr)
            .replace(DOCS_DIGEST, &self.app_index)
    }

    /// Runs `msb ARGS` in the environment; panics unless it exits 0.
    fn msb(&self, args: &[&str]) -> Ran {
        self.env.msb(args).expect(0)
    }

    /// Runs a line of shell as a user would: `sh -e -c LINE` in the test
    /// directory (also `$HOME`, so `~/.microsandbox` is `MSB_HOME`), `msb`
    /// on `PATH`, `exit` on stdin (what an interactive example reads), in a
    /// process group of its own. A line ending in `&` may leave its
    /// background job running until [`Fixtures::end_block`]; any other line
    /// that leaves a process behind, or runs past the deadline, fails.
    pub fn run(&mut self, line: &str) -> Ran {
        let logs = self.env.dir().join("example-logs");
        fs::create_dir_all(&logs).unwrap();
        self.runs += 1;
        let out_path = logs.join(format!("{:03}.out", self.runs));
        let err_path = logs.join(format!("{:03}.err", self.runs));
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.bin.clone()];
        dirs.extend(std::env::split_paths(&path));
        let mut cmd = self.env.command_for(Path::new("sh"));
        cmd.args(["-e", "-c", line])
            .env("PATH", std::env::join_paths(dirs).unwrap())
            .env("HOME", self.env.dir())
            .stdin(Stdio::piped())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .process_group(0);
        let mut child = cmd.spawn().expect("sh");
        let group = child.id() as i32;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            let _ = stdin.write_all(b"exit\n");
        }
        let deadline = Instant::now() + EXAMPLE_TIMEOUT;
        let mut note = String::new();
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait for sh") {
                break status.code().unwrap_or(-1);
            }
            if Instant::now() >= deadline {
                note = format!("\n(killed after {EXAMPLE_TIMEOUT:?})");
                kill_group(group);
                let _ = child.wait();
                break -1;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let background = line.trim_end().ends_with('&');
        let left = group_members(group);
        if background {
            self.groups.push(group);
            self.settle(line);
        } else if !left.is_empty() {
            note += &format!("\n(left processes running: {left:?}; killed)");
            kill_group(group);
        }
        let stderr = fs::read_to_string(&err_path).unwrap_or_default() + &note;
        let failed_by_note = !note.is_empty();
        Ran {
            code: if failed_by_note && code == 0 {
                -1
            } else {
                code
            },
            stdout: fs::read_to_string(&out_path).unwrap_or_default(),
            stderr,
            described: line.to_string(),
        }
    }

    /// After a line that started `msb serve` in the background: waits (up
    /// to 30 s) until its socket answers, as a user would before the next
    /// line.
    fn settle(&self, line: &str) {
        if !line.contains("msb serve") {
            return;
        }
        let socket = self.env.home().join("msb.sock");
        let end = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ends a block: every sandbox removed (idle VMs cost CPU) and every
    /// background job of its lines stopped.
    pub fn end_block(&mut self) {
        self.remove_sandboxes();
        for group in std::mem::take(&mut self.groups) {
            kill_group(group);
        }
    }

    /// Puts in place what `line` (resolved) needs; see the module doc.
    pub fn prepare(&mut self, line: &str) {
        let fetches = commands(line).iter().any(|c| {
            c[0] == "msb" && matches!(c.get(1).map(String::as_str), Some("pull" | "load"))
        });
        if line.contains("alpine") && !fetches {
            // By name (`--image alpine:latest`) or in an API request body.
            self.load("alpine", "alpine:latest");
        }
        for cmd in commands(line) {
            if cmd[0] != "msb" {
                continue;
            }
            let words: Vec<&str> = cmd.iter().map(String::as_str).collect();
            match words.as_slice() {
                ["msb", "create", name, ..] => self.sandbox_absent(name),
                ["msb", "volume", "create", name, ..] => self.volume_absent(name),
                _ => {}
            }
            for (i, w) in words.iter().enumerate() {
                self.prepare_word(&words, i, w);
            }
        }
    }

    fn prepare_word(&mut self, words: &[&str], i: usize, w: &str) {
        let creating = |name: &str| matches!(words, ["msb", "create", n, ..] | ["msb", "volume", "create", n, ..] if *n == name);
        let names: Vec<String> = self.sandboxes.keys().cloned().collect();
        for s in names {
            if (w == s || w.starts_with(&format!("{s}:"))) && !creating(&s) && i >= 2 {
                self.sandbox_running(&s);
            }
        }
        let prev = i.checked_sub(1).map(|p| words[p]);
        let volumes: Vec<String> = self.volumes.keys().cloned().collect();
        for v in volumes {
            let in_volume_cmd = words.get(1) == Some(&"volume") && w == v;
            let as_bind =
                matches!(prev, Some("-v" | "--volume")) && w.starts_with(&format!("{v}:"));
            let as_mount = prev == Some("--mount")
                && mount_opt(w, "type") == Some("volume")
                && mount_opt(w, "src") == Some(v.as_str());
            if as_mount && matches!(mount_opt(w, "mode"), Some("create" | "ensure-exists")) {
                // Made by the example itself, as it asks.
                self.volume_absent(&v);
            } else if (in_volume_cmd || as_bind || as_mount) && !creating(&v) {
                self.volume_present(&v);
            }
        }
        if w == "team/app:1" && words.get(1) == Some(&"image") {
            self.load("app", "team/app");
        }
        if let Some(rest) = w.strip_prefix(&self.registry.reference("")) {
            let repo = rest
                .split([':', '@'])
                .next()
                .unwrap_or_default()
                .to_string();
            self.push(&repo);
        }
    }

    fn status(&self, name: &str) -> Option<String> {
        self.env
            .list()
            .into_iter()
            .find(|v| v["name"] == name)
            .map(|v| v["status"].as_str().unwrap_or("").to_string())
    }

    fn sandbox_absent(&self, name: &str) {
        if self.status(name).is_some() {
            self.msb(&["rm", "-f", name]);
        }
    }

    fn sandbox_running(&mut self, name: &str) {
        let name = name.split(':').next().unwrap_or(name);
        match self.status(name).as_deref() {
            Some("running") => {}
            Some(_) => {
                self.msb(&["start", name]);
            }
            None => {
                let line = self.sandboxes[name].clone();
                self.prepare(&line);
                let r = self.run(&line);
                assert_eq!(r.code, 0, "making sandbox {name}: {}", r.describe());
            }
        }
    }

    fn volumes_now(&self) -> Vec<String> {
        let r = self.msb(&["volume", "ls", "--json"]);
        match serde_json::from_str::<Value>(&r.stdout) {
            Ok(Value::Array(v)) => v
                .iter()
                .filter_map(|v| v["name"].as_str().map(str::to_string))
                .collect(),
            other => panic!("msb volume ls --json: {other:?}"),
        }
    }

    fn volume_absent(&mut self, name: &str) {
        if !self.volumes_now().iter().any(|v| v == name) {
            return;
        }
        if self.env.msb(&["volume", "rm", name]).code != 0 {
            // In use by a sandbox of an earlier example.
            self.remove_sandboxes();
            self.msb(&["volume", "rm", name]);
        }
    }

    fn volume_present(&mut self, name: &str) {
        if self.volumes_now().iter().any(|v| v == name) {
            return;
        }
        let line = self.volumes[name]
            .clone()
            .unwrap_or_else(|| format!("msb volume create {name}"));
        let r = self.run(&line);
        assert_eq!(r.code, 0, "making volume {name}: {}", r.describe());
    }

    /// Loads layout `layout` as `name` unless the store has it.
    fn load(&mut self, layout: &str, name: &str) {
        let want = if name.contains(':') {
            name.to_string()
        } else {
            format!("{name}:1")
        };
        if self.env.msb(&["image", "inspect", &want]).code == 0 {
            return;
        }
        let dir = self.env.dir().join("layouts").join(layout);
        let name = name.split(':').next().unwrap_or(name);
        self.msb(&["load", dir.to_str().unwrap(), "--name", name]);
    }

    /// Pushes the registry repository `repo` once.
    fn push(&mut self, repo: &str) {
        if !self.pushed.insert(repo.to_string()) {
            return;
        }
        let layouts = self.env.dir().join("layouts");
        match repo {
            "team/app" => self
                .registry
                .push(&layouts.join("multi"), "1", "team/app:1", true),
            "app" => self
                .registry
                .push(&layouts.join("entry"), "1", "app:1", false),
            "py" => self.registry.push(&python_layout(), "py", "py:3", false),
            other => panic!("the examples name {other} in the registry; add it to the fixtures"),
        }
    }

    /// Removes every sandbox (between blocks: idle VMs cost CPU).
    pub fn remove_sandboxes(&self) {
        for v in self.env.list() {
            if let Some(n) = v["name"].as_str() {
                self.msb(&["rm", "-f", n]);
            }
        }
    }
}

/// `cmd` as one shell line, each word quoted.
fn quote_all(cmd: &[String]) -> String {
    cmd.iter()
        .map(|w| format!("'{}'", w.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A root like Alpine's: busybox with every applet in `/bin`,
/// `/etc/os-release`, `/tmp`, `/root`.
fn alpine_layer() -> Vec<u8> {
    let busybox = fs::read("/bin/busybox").expect("busybox-static (scripts/setup.sh)");
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut l = Layer::new();
    for d in ["bin", "etc", "root", "usr", "usr/bin", "var", "var/log"] {
        l = l.dir(d, 0o755);
    }
    l = l
        .dir("tmp", 0o1777)
        .file("bin/busybox", 0o755, &busybox)
        .file(
            "etc/os-release",
            0o644,
            b"NAME=\"msb docs fixture (busybox)\"\nID=alpine\n",
        );
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.contains('/') {
            l = l.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    l.finish()
}

/// The digest the registry gives `reference` (its manifest or index as
/// stored: `skopeo inspect --raw`, hashed).
fn registry_digest(reference: &str) -> String {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), &out.stdout).unwrap();
    format!("sha256:{}", sha256_file(tmp.path()))
}

/// An OCI layout whose `tag` is an index of two images, linux/amd64 and
/// linux/arm64 (the same busybox layer: only pulled, never run).
fn write_two_platform_layout(layout: &Path, tag: &str) {
    let (layer, layer_size) = put_blob(layout, &alpine_layer());
    let diff_id = layer.clone();
    let mut manifests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config = json!({"architecture": arch, "os": "linux", "config": {},
                            "rootfs": {"type": "layers", "diff_ids": [diff_id]}});
        let (cd, cs) = put_blob(layout, config.to_string().as_bytes());
        let manifest = json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer, "size": layer_size}]});
        let (md, ms) = put_blob(layout, manifest.to_string().as_bytes());
        manifests.push(
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms, "platform": {"architecture": arch, "os": "linux"}}),
        );
    }
    let index = json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let (index_digest, index_size) = put_blob(layout, index.to_string().as_bytes());
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": index_size,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    write_index(layout, &top);
}

/// Processes whose process group is `group`.
fn group_members(group: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid pgrp …: comm may hold spaces, so split after ')'.
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|p| p.parse::<i32>().ok());
        if pgrp == Some(group) {
            out.push(pid);
        }
    }
    out
}

/// SIGKILLs process group `group`, then waits (up to 5 s) until it is gone.
fn kill_group(group: i32) {
    // SAFETY: kill(2) on a process group this test created; plain integers.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let end = Instant::now() + Duration::from_secs(5);
    while !group_members(group).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
}
