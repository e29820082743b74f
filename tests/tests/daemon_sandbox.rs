//! The daemon's process sandbox seen from the host: which namespaces,
//! root, mounts and working directory the serving process has under each
//! `--sandbox` mode, that requests still work inside it, and that every
//! way of stopping the started process (SIGTERM, SIGKILL) ends the server
//! too and cleans up on the host.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use msb_tests::daemon_proc::{daemon_binary, Daemon};
use msb_tests::vhost_driver::{FuseClient, ROOT_ID};

/// The namespace `kind` of process `pid` (`mnt:[4026531841]`).
fn ns(pid: u32, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("ns {kind} of {pid}: {e}"))
        .display()
        .to_string()
}

/// `pid` and its descendants, each with its only child (the chain the
/// sandbox makes).
fn chain(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    loop {
        let last = *out.last().unwrap();
        let kids =
            fs::read_to_string(format!("/proc/{last}/task/{last}/children")).unwrap_or_default();
        let kids: Vec<u32> = kids
            .split_whitespace()
            .filter_map(|k| k.parse().ok())
            .collect();
        match kids.as_slice() {
            [one] => out.push(*one),
            _ => return out,
        }
    }
}

fn gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie nobody has reaped yet.
        if state.is_empty() || state.split(' ').nth(2) == Some("Z") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Create, write, read back and list through the driver.
fn exercise(d: &Daemon) {
    let fs = d.connect(1).expect("connect");
    let (entry, open) = fs.create(ROOT_ID, b"inside", 0o644, libc::O_RDWR).unwrap();
    assert_eq!(fs.write(entry.nodeid, open.fh, 0, b"sandboxed").unwrap(), 9);
    assert_eq!(
        fs.read(entry.nodeid, open.fh, 0, 64).unwrap(),
        b"sandboxed".to_vec()
    );
    fs.release(entry.nodeid, open.fh).unwrap();
    let names: Vec<String> = fs
        .list(ROOT_ID)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect();
    assert!(names.contains(&"inside".to_string()), "{names:?}");
    assert_eq!(
        fs::read(d.shared_dir().join("inside")).unwrap(),
        b"sandboxed"
    );
}

#[test]
fn namespace_sandbox_confines_the_server_to_the_share() {
    let mut d = Daemon::start(&["--xattr"]).expect("daemon");
    let server = d.server_pid().unwrap();
    let procs = chain(d.pid());
    assert_eq!(
        procs.len(),
        3,
        "monitor, namespace parent, server: {procs:?}"
    );
    assert_eq!(*procs.last().unwrap(), server);
    let me = std::process::id();
    for kind in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        assert_ne!(ns(server, kind), ns(me, kind), "{kind} namespace shared");
    }
    // The monitor stays in the host's namespaces.
    assert_eq!(ns(d.pid(), "mnt"), ns(me, "mnt"));
    // One mount left: the share, as the root, nosuid/nodev/noexec.
    let mountinfo = fs::read_to_string(format!("/proc/{server}/mountinfo")).unwrap();
    let mounts: Vec<&str> = mountinfo.lines().collect();
    assert_eq!(mounts.len(), 1, "{mountinfo}");
    let fields: Vec<&str> = mounts[0].split(' ').collect();
    assert_eq!(fields[4], "/", "{mountinfo}");
    for opt in ["nosuid", "nodev", "noexec"] {
        assert!(fields[5].split(',').any(|o| o == opt), "{opt}: {mountinfo}");
    }
    // Its working directory is its own /proc/self/fd (pid 1 of its pid
    // namespace), not a host path.
    let cwd = fs::read_link(format!("/proc/{server}/cwd")).unwrap();
    assert_eq!(cwd, PathBuf::from("/1/fd"), "cwd");
    let status = fs::read_to_string(format!("/proc/{server}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.trim_end().ends_with("\t1"), "{nspid}");
    exercise(&d);

    // SIGTERM to the started process: forwarded, everything exits 0, and
    // the socket (out of the server's reach) is removed by the monitor.
    d.signal(libc::SIGTERM).unwrap();
    let status = d.wait_exit(Duration::from_secs(10)).unwrap().expect("exit");
    assert!(status.success(), "{status}");
    for p in procs {
        assert!(gone(p, Duration::from_secs(5)), "{p} still runs");
    }
    assert!(!d.socket().exists(), "socket left behind");
}

#[test]
fn killing_the_monitor_kills_the_server() {
    let d = Daemon::start(&[]).expect("daemon");
    let server = d.server_pid().unwrap();
    let procs = chain(d.pid());
    d.signal(libc::SIGKILL).unwrap();
    for p in procs {
        assert!(gone(p, Duration::from_secs(5)), "{p} outlived the monitor");
    }
    assert!(gone(server, Duration::from_secs(1)));
}

#[test]
fn chroot_sandbox_roots_the_server_in_the_share() {
    let d = Daemon::start(&["--sandbox", "chroot"]).expect("daemon");
    let server = d.server_pid().unwrap();
    assert_eq!(chain(d.pid()).len(), 2);
    let root = fs::read_link(format!("/proc/{server}/root")).unwrap();
    assert_eq!(root, fs::canonicalize(d.shared_dir()).unwrap());
    exercise(&d);
}

#[test]
fn no_sandbox_is_one_process_in_the_host_namespaces() {
    let d = Daemon::start(&["--sandbox", "none"]).expect("daemon");
    assert_eq!(d.server_pid().unwrap(), d.pid());
    assert_eq!(ns(d.pid(), "mnt"), ns(std::process::id(), "mnt"));
    exercise(&d);
}

/// Runs `f` with a scratch directory that uid/gid 65534 owns.
fn with_nobody_dir(f: impl FnOnce(&Path)) {
    let tmp = tempfile::Builder::new()
        .prefix("msb-sandbox-nobody-")
        .tempdir()
        .unwrap();
    std::os::unix::fs::chown(tmp.path(), Some(65534), Some(65534)).unwrap();
    f(tmp.path());
}

#[test]
fn unprivileged_daemon_gets_a_user_namespace() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: cannot start the daemon as another user; skipped");
        return;
    }
    with_nobody_dir(|root| {
        let share = root.join("share");
        fs::create_dir(&share).unwrap();
        std::os::unix::fs::chown(&share, Some(65534), Some(65534)).unwrap();
        let sock = root.join("s.sock");
        let log = root.join("log");
        let mut child = Command::new(daemon_binary().unwrap())
            .arg("--socket-path")
            .arg(&sock)
            .arg("--shared-dir")
            .arg(&share)
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(20);
        let server = loop {
            let procs = chain(pid);
            if procs.len() == 3 {
                let status =
                    fs::read_to_string(format!("/proc/{}/status", procs[2])).unwrap_or_default();
                if status.contains("Threads:\t") && !status.contains("Threads:\t1\n") {
                    break procs[2];
                }
            }
            if let Ok(Some(s)) = child.try_wait() {
                panic!("daemon exited ({s}): {}", fs::read_to_string(&log).unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "{}",
                fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let me = std::process::id();
        assert_ne!(ns(server, "user"), ns(me, "user"));
        assert_ne!(ns(server, "mnt"), ns(me, "mnt"));
        let map = fs::read_to_string(format!("/proc/{server}/uid_map")).unwrap();
        assert_eq!(
            map.split_whitespace().collect::<Vec<_>>(),
            ["65534", "65534", "1"]
        );
        let fs_driver = msb_tests::vhost_driver::FsDriver::connect(&sock, 1).unwrap();
        fs_driver.init().unwrap();
        let e = fs_driver.mkdir(ROOT_ID, b"made", 0o755).unwrap();
        assert!(e.nodeid != 0);
        drop(fs_driver);
        // The frontend went away: the server ends, and so does the monitor,
        // which removes the socket.
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "{status}: {}",
            fs::read_to_string(&log).unwrap()
        );
        assert!(!sock.exists());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(share.join("made")).unwrap().uid(), 65534);
    });
}

/// `Name:\tvalue` of `/proc/PID/status`.
fn status_field(pid: u32, name: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in status of {pid}"))
        .trim()
        .to_string()
}

fn caps_hex(caps: &[u32]) -> String {
    format!("{:016x}", caps.iter().fold(0u64, |m, c| m | 1 << c))
}

#[test]
fn server_runs_filtered_with_only_the_capabilities_its_policies_need() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    const CHOWN: u32 = 0;
    const DAC_OVERRIDE: u32 = 1;
    const DAC_READ_SEARCH: u32 = 2;
    const FOWNER: u32 = 3;
    const FSETID: u32 = 4;
    const SETGID: u32 = 6;
    const SETUID: u32 = 7;
    let cases: [(&[&str], &[u32], &str); 4] = [
        (&[], &[DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER], "2"),
        (
            &["--stat-virtualization", "off"],
            &[
                CHOWN,
                DAC_OVERRIDE,
                DAC_READ_SEARCH,
                FOWNER,
                FSETID,
                SETGID,
                SETUID,
            ],
            "2",
        ),
        (
            &["--stat-virtualization", "off", "--readonly"],
            &[DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER],
            "2",
        ),
        (
            &["--seccomp", "none", "--sandbox", "none"],
            &[DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER],
            "0",
        ),
    ];
    for (args, caps, seccomp) in cases {
        let d = Daemon::start(args).expect("daemon");
        let server = d.server_pid().unwrap();
        let want = if root { caps_hex(caps) } else { caps_hex(&[]) };
        assert_eq!(status_field(server, "CapEff"), want, "{args:?}");
        assert_eq!(status_field(server, "CapPrm"), want, "{args:?}");
        assert_eq!(status_field(server, "CapInh"), caps_hex(&[]), "{args:?}");
        assert_eq!(status_field(server, "CapAmb"), caps_hex(&[]), "{args:?}");
        if root {
            assert_eq!(status_field(server, "CapBnd"), caps_hex(&[]), "{args:?}");
        }
        assert_eq!(status_field(server, "NoNewPrivs"), "1", "{args:?}");
        assert_eq!(status_field(server, "Seccomp"), seccomp, "{args:?}");
        if seccomp == "2" {
            // The allow-list and the clone3 → ENOSYS filter.
            assert_eq!(status_field(server, "Seccomp_filters"), "2", "{args:?}");
        }
        // Requests (threads, files) still work under the filter.
        let fs = d.connect(2).expect("connect");
        match fs.mkdir(ROOT_ID, b"dir", 0o755) {
            Ok(e) => assert!(e.nodeid != 0),
            Err(e) => assert_eq!(e.errno(), Some(libc::EROFS), "{args:?}: {e}"),
        }
        assert!(fs.list(ROOT_ID).is_ok());
    }
}

#[test]
fn without_a_sandbox_the_filtered_server_still_cleans_up() {
    // vhost-user: the server removes its own socket (statx + unlink are on
    // its allow-list for that).
    let mut d = Daemon::start(&["--sandbox", "none"]).expect("daemon");
    assert_eq!(status_field(d.server_pid().unwrap(), "Seccomp"), "2");
    d.signal(libc::SIGTERM).unwrap();
    let status = d.wait_exit(Duration::from_secs(10)).unwrap().expect("exit");
    assert!(status.success(), "{status}: {}", d.log_tail(2000));
    assert!(!d.socket().exists(), "socket left behind");
}

/// Whether `dir` is a mount point (per /proc/self/mountinfo).
fn mounted(dir: &Path) -> bool {
    let want = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

#[test]
fn fuse_mount_without_a_sandbox_is_unmounted_by_its_monitor() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: no FUSE mount; skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    let mnt = fs::canonicalize(tmp.path()).unwrap().join("mnt");
    fs::create_dir(&share).unwrap();
    fs::create_dir(&mnt).unwrap();
    fs::write(share.join("f"), b"hi").unwrap();
    let child = Command::new(daemon_binary().unwrap())
        .arg("--shared-dir")
        .arg(&share)
        .arg("--fuse-mount")
        .arg(&mnt)
        .args(["--sandbox", "none"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed (and the mount lazily detached) however the test ends.
    let mut child = KillOnDrop(child, mnt.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mounted(&mnt) {
        assert!(Instant::now() < deadline, "never mounted");
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"hi");
    // The filtered server may not unmount: its monitor does.
    assert_eq!(chain(child.id()).len(), 2);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!mounted(&mnt), "left mounted");
}

/// A daemon child with a FUSE mount, killed (server first, then monitor)
/// and its mount detached when dropped, so a failing test leaves nothing.
struct KillOnDrop(std::process::Child, std::path::PathBuf);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            for pid in chain(self.0.id()).into_iter().rev() {
                // SAFETY: kill(2) on our own child and its descendants.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            let _ = self.0.wait();
        }
        if mounted(&self.1) {
            let _ = Command::new("umount").arg("-l").arg(&self.1).status();
        }
    }
}
