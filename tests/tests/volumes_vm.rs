//! Named volumes in real VMs (`msb run` with `-v NAME:/guest` and
//! `--mount type=volume,…`), each test with its own `MSB_HOME`:
//! - a volume populated host-side (`msb volume fs`) is read in a VM;
//! - the seeds' writer/reader: one VM writes, a second (read-only) reads;
//! - two VMs at once on one quota'd volume hit ENOSPC together at the limit;
//! - `msb volume rm` is refused while a VM runs and works after it exits,
//!   whether the run ended normally, by SIGINT, by `--timeout`, by an error
//!   after the lease was taken, or by SIGKILL of msb (a stale lease);
//! - a disk volume keeps its data across runs.
//!
//! Prerequisites as for `run_basic.rs` (guest kernel and initramfs from
//! scripts/setup.sh; a current `msb` binary, see `msb_proc::msb_binary`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use msb_tests::msb_proc::{
    debugfs_cat, ensure_initramfs, msb_binary, Msb, Sandbox, EXIT_SIGINT, EXIT_TIMEOUT, EXIT_USAGE,
};

/// A sandbox with a private `MSB_HOME` inside it.
struct Env {
    sb: Sandbox,
    home: PathBuf,
}

impl Env {
    fn new(label: &str) -> Env {
        let sb = Sandbox::new(label);
        let home = sb.mkdir("msb-home");
        msb_tests::sandbox_env::copy_kvm_verdict(&home);
        Env { sb, home }
    }

    /// `msb volume ARGS`, output collected.
    fn volume(&self, args: &[&str]) -> Output {
        self.volume_stdin(args, b"")
    }

    /// `msb volume ARGS` with `input` on stdin, output collected.
    fn volume_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let bin = msb_binary().unwrap_or_else(|e| panic!("{e}"));
        let mut child = Command::new(bin)
            .arg("volume")
            .args(args)
            .env("MSB_HOME", &self.home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).unwrap();
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    /// `msb volume ARGS`, which must succeed; its stdout.
    #[track_caller]
    fn volume_ok(&self, args: &[&str]) -> String {
        let o = self.volume(args);
        assert!(
            o.status.success(),
            "msb volume {args:?}: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `msb volume inspect NAME --json`.
    fn inspect(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.volume_ok(&["inspect", name, "--json"])).unwrap()
    }

    /// `msb run` with this `MSB_HOME`.
    fn msb(&self) -> Msb {
        self.sb.msb().env("MSB_HOME", &self.home)
    }
}

#[test]
fn a_volume_populated_on_the_host_is_read_in_the_vm() {
    let env = Env::new("vol-populate");
    env.volume_ok(&["create", "seeded", "--label", "purpose=test"]);
    env.volume_ok(&["fs", "seeded", "mkdir", "conf/deep"]);
    env.volume_ok(&["fs", "seeded", "write", "conf/deep/app.toml", "answer = 42"]);
    env.volume_ok(&["fs", "seeded", "write", "seed.txt", "hello from the host"]);
    let out = env
        .msb()
        .args(["-v", "seeded:/data"])
        .sh(
            "echo seed=$(cat /data/seed.txt); echo conf=$(cat /data/conf/deep/app.toml); \
             echo mode=$(stat -c %a /data/seed.txt); grep ' /data ' /proc/mounts | sed 's/^/mnt=/'",
        )
        .run();
    out.assert_code(0).assert_clean();
    assert_eq!(
        out.value("seed").as_deref(),
        Some("hello from the host"),
        "{}",
        out.describe()
    );
    assert_eq!(
        out.value("conf").as_deref(),
        Some("answer = 42"),
        "{}",
        out.describe()
    );
    assert_eq!(
        out.value("mode").as_deref(),
        Some("644"),
        "{}",
        out.describe()
    );
    let mnt = out.value("mnt").unwrap_or_default();
    assert!(
        mnt.contains("virtiofs") && mnt.contains("rw"),
        "{}",
        out.describe()
    );
    assert!(env.inspect("seeded")["in_use_by"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// The seeds' example: a writer VM, then a read-only reader VM.
#[test]
fn one_vm_writes_and_a_read_only_vm_reads() {
    let env = Env::new("vol-share");
    let writer = env
        .msb()
        .args([
            "--mount",
            "type=volume,src=shared-data,dst=/data,mode=create",
        ])
        .sh("echo 'hello' > /data/message.txt && echo wrote=ok")
        .label("writer")
        .run();
    writer.assert_code(0).assert_clean();
    assert_eq!(
        writer.value("wrote").as_deref(),
        Some("ok"),
        "{}",
        writer.describe()
    );
    assert_eq!(
        env.volume_ok(&["fs", "shared-data", "read", "message.txt"]),
        "hello\n"
    );
    let reader = env
        .msb()
        .args(["-v", "shared-data:/data:ro"])
        .sh("cat /data/message.txt; echo more >> /data/message.txt 2>/dev/null && echo write=allowed || echo write=refused")
        .label("reader")
        .run();
    reader.assert_code(0).assert_clean();
    assert!(
        reader.stdout.starts_with("hello\n"),
        "{}",
        reader.describe()
    );
    assert_eq!(
        reader.value("write").as_deref(),
        Some("refused"),
        "{}",
        reader.describe()
    );
    assert_eq!(
        env.volume_ok(&["fs", "shared-data", "read", "message.txt"]),
        "hello\n"
    );
    // mode=create refuses the volume that now exists, before any VM.
    let again = env
        .msb()
        .args([
            "--mount",
            "type=volume,src=shared-data,dst=/data,mode=create",
        ])
        .command(["true"])
        .run();
    again.assert_code(EXIT_USAGE).assert_clean();
    assert!(
        again.stderr.contains("already exists"),
        "{}",
        again.describe()
    );
}

/// Guest script for the shared-quota test: announce, wait for the other
/// VM, then write until the volume is full.
fn quota_script(me: &str, other: &str) -> String {
    format!(
        "touch /data/ready-{me}; i=0
         while [ ! -e /data/ready-{other} ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done
         echo waited=$i
         df -k /data | tail -1 | awk '{{print \"quota_kib=\" $2}}'
         dd if=/dev/zero of=/data/fill-{me} bs=64k count=400 conv=fsync 2>/tmp/err; echo dd=$?
         sed 's/^/err=/' /tmp/err | grep -i 'space' | head -1
         echo size=$(wc -c < /data/fill-{me})"
    )
}

/// A second `msb run` started directly (the `Msb` harness runs one VM per
/// test process at a time; the first VM's turn covers both).
fn spawn_plain(env: &Env, args: &[&str], log: &Path) -> Child {
    let bin = msb_binary().unwrap_or_else(|e| panic!("{e}"));
    let run_dir = env.sb.mkdir("run-b");
    Command::new(bin)
        .arg("run")
        .args(args)
        .env("MSB_HOME", &env.home)
        .env("TMPDIR", run_dir)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stdout(fs::File::create(log).unwrap())
        .stderr(fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn two_vms_share_one_quota_and_hit_enospc_together_at_the_limit() {
    const QUOTA_MIB: u64 = 8;
    let env = Env::new("vol-quota");
    ensure_initramfs();
    env.volume_ok(&["create", "q", "--quota", &QUOTA_MIB.to_string()]);
    let mount = "q:/data";
    let a = env
        .msb()
        .args(["-v", mount])
        .sh(&quota_script("a", "b"))
        .label("vm-a")
        .deadline(Duration::from_secs(300))
        .spawn();
    let log_b = env.sb.path().join("vm-b.out");
    let script_b = quota_script("b", "a");
    let mut b = spawn_plain(&env, &["-v", mount, "--", "sh", "-c", &script_b], &log_b);
    let deadline = Instant::now() + Duration::from_secs(300);
    let status_b = loop {
        if let Some(st) = b.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = b.kill();
            panic!(
                "the second VM did not finish: {}",
                fs::read_to_string(&log_b).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out_a = a.wait();
    let out_b = fs::read_to_string(&log_b).unwrap();
    let err_b = fs::read_to_string(log_b.with_extension("err")).unwrap_or_default();
    let both = format!(
        "{}\n--- vm b ({status_b}) ---\n{out_b}\n{err_b}",
        out_a.describe()
    );
    out_a.assert_code(0).assert_clean();
    assert_eq!(status_b.code(), Some(0), "{both}");
    let value = |text: &str, key: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
    };
    let mut total = 0u64;
    let mut sizes = Vec::new();
    for out in [&out_a.stdout, &out_b] {
        // Both ran at once: neither gave up waiting for the other.
        let waited: u64 = value(out, "waited")
            .and_then(|w| w.parse().ok())
            .unwrap_or(9999);
        assert!(waited < 1800, "a VM never saw the other: {both}");
        assert_eq!(
            value(out, "quota_kib"),
            Some((QUOTA_MIB * 1024).to_string()),
            "{both}"
        );
        assert_ne!(
            value(out, "dd").as_deref(),
            Some("0"),
            "dd must fail: {both}"
        );
        assert!(
            value(out, "err").is_some_and(|e| e.contains("No space left")),
            "each VM hits ENOSPC: {both}"
        );
        let size: u64 = value(out, "size").and_then(|s| s.parse().ok()).unwrap_or(0);
        sizes.push(size);
        total += size;
    }
    eprintln!(
        "VM a wrote {} bytes, VM b {} bytes: {total} of {} allowed",
        sizes[0],
        sizes[1],
        QUOTA_MIB << 20
    );
    // Together they filled the budget, never more.
    let limit = QUOTA_MIB << 20;
    assert!(
        total <= limit,
        "wrote {total} bytes past a {limit}-byte quota: {both}"
    );
    assert!(
        total >= limit - (256 << 10),
        "stopped at {total} of {limit} bytes: {both}"
    );
    let used = env.inspect("q")["used_bytes"].as_u64().unwrap();
    assert!(
        used <= limit && used >= total,
        "used_bytes {used}, written {total}"
    );
    // And the host side draws from the same budget.
    let o = env.volume_stdin(&["fs", "q", "write", "one-more"], &vec![b'x'; 300 << 10]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No space left"),
        "{o:?}"
    );
}

/// Guest script that reports, then waits for the host to write `stop`.
const WAIT_FOR_STOP: &str = "echo up; i=0; while [ ! -e /data/stop ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; echo stopped=$i";

#[test]
fn rm_is_refused_while_a_vm_uses_the_volume_and_works_after() {
    let env = Env::new("vol-rm");
    env.volume_ok(&["create", "busy"]);
    // 1. A normal run.
    let mut running = env
        .msb()
        .args(["-v", "busy:/data"])
        .sh(WAIT_FOR_STOP)
        .spawn();
    assert!(
        running.wait_for_stdout("up", Duration::from_secs(180)),
        "the VM never started"
    );
    let msb_pid = running.pid();
    let o = env.volume(&["rm", "busy"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("in use by msb run (pid {msb_pid}) at /data")),
        "{err}"
    );
    let users = env.inspect("busy")["in_use_by"].clone();
    assert_eq!(users[0]["pid"], msb_pid, "{users}");
    assert_eq!(users[0]["live"], true, "{users}");
    assert!(env.volume_ok(&["ls"]).contains("1 VM"));
    env.volume_ok(&["fs", "busy", "write", "stop", "now"]);
    let out = running.wait();
    out.assert_code(0).assert_clean();
    assert!(
        out.value("stopped").is_some_and(|s| s != "1200"),
        "{}",
        out.describe()
    );
    // Released on the way out (not merely stale).
    assert_eq!(env.inspect("busy")["in_use_by"], serde_json::json!([]));

    // 2. SIGINT to msb: released too.
    env.volume_ok(&["fs", "busy", "rm", "stop"]);
    let mut running = env
        .msb()
        .args(["-v", "busy:/data"])
        .sh(WAIT_FOR_STOP)
        .spawn();
    assert!(
        running.wait_for_stdout("up", Duration::from_secs(180)),
        "the VM never started"
    );
    assert_eq!(env.volume(&["rm", "busy"]).status.code(), Some(1));
    running.signal(libc::SIGINT);
    running.wait().assert_code(EXIT_SIGINT).assert_clean();
    assert_eq!(env.inspect("busy")["in_use_by"], serde_json::json!([]));

    // 3. --timeout: released too.
    let out = env
        .msb()
        .args(["--timeout", "3", "-v", "busy:/data"])
        .command(["sleep", "1000"])
        .run();
    out.assert_code(EXIT_TIMEOUT).assert_clean();
    assert_eq!(env.inspect("busy")["in_use_by"], serde_json::json!([]));

    // 4. A failure after the lease was taken (the next mount names a
    // volume that does not exist): released, nothing started.
    let out = env
        .msb()
        .args(["-v", "busy:/data", "-v", "missing:/other"])
        .command(["true"])
        .run();
    out.assert_code(EXIT_USAGE).assert_clean();
    assert!(
        out.stderr.contains("\"missing\" not found"),
        "{}",
        out.describe()
    );
    assert_eq!(env.inspect("busy")["in_use_by"], serde_json::json!([]));

    // 5. SIGKILL: the lease stays behind, stale, and blocks nothing.
    let mut running = env
        .msb()
        .args(["-v", "busy:/data"])
        .sh(WAIT_FOR_STOP)
        .spawn();
    assert!(
        running.wait_for_stdout("up", Duration::from_secs(180)),
        "the VM never started"
    );
    assert_eq!(env.volume(&["rm", "busy"]).status.code(), Some(1));
    running.signal(libc::SIGKILL);
    let _ = running.wait();
    let users = env.inspect("busy")["in_use_by"].clone();
    assert_eq!(users[0]["live"], false, "{users}");
    assert_eq!(env.volume_ok(&["rm", "busy"]), "busy\n");
    assert!(!env.home.join("volumes/busy").exists());
}

#[test]
fn a_disk_volume_keeps_its_data_across_runs() {
    let env = Env::new("vol-disk");
    let mount = "type=volume,src=blk,dst=/d,mode=ensure-exists,kind=disk,size=32";
    let first = env
        .msb()
        .args(["--mount", mount])
        .sh("grep ' /d ' /proc/mounts | sed 's/^/mnt=/'; echo 'kept across runs' > /d/note; sync; echo wrote=ok")
        .label("first")
        .run();
    first.assert_code(0).assert_clean();
    let mnt = first.value("mnt").unwrap_or_default();
    assert!(
        mnt.contains(" ext4 ") && mnt.contains("rw"),
        "{}",
        first.describe()
    );
    let h = env.inspect("blk");
    assert_eq!(h["kind"], "disk");
    assert_eq!(h["capacity_bytes"], 32 << 20);
    let image = PathBuf::from(h["path"].as_str().unwrap()).join("disk.raw");
    assert_eq!(debugfs_cat(&image, "/note"), "kept across runs\n");
    // ensure-exists reuses it; a later run sees the file, also read-only.
    let second = env
        .msb()
        .args(["--mount", mount])
        .sh("cat /d/note; echo again >> /d/note")
        .label("second")
        .run();
    second
        .assert_code(0)
        .assert_clean()
        .assert_stdout("kept across runs\n");
    let third = env
        .msb()
        .args(["-v", "blk:/d:ro"])
        .sh("cat /d/note; grep ' /d ' /proc/mounts | grep -q ' ro,' && echo ro=yes")
        .label("third")
        .run();
    third.assert_code(0).assert_clean();
    assert!(
        third.stdout.starts_with("kept across runs\nagain\n"),
        "{}",
        third.describe()
    );
    assert_eq!(
        third.value("ro").as_deref(),
        Some("yes"),
        "{}",
        third.describe()
    );
    // A request that does not match is refused before any VM starts.
    let mismatch = env
        .msb()
        .args([
            "--mount",
            "type=volume,src=blk,dst=/d,mode=ensure-exists,kind=disk,size=64",
        ])
        .command(["true"])
        .run();
    mismatch.assert_code(EXIT_USAGE).assert_clean();
    assert!(
        mismatch.stderr.contains("size 64 MiB"),
        "{}",
        mismatch.describe()
    );
    assert_eq!(
        env.inspect("blk")["capacity_bytes"],
        32 << 20,
        "metadata unchanged"
    );
}
