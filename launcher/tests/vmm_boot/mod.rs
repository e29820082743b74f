//! Helpers for the real-boot tests of the VMM layer (`ch_real_boot.rs`,
//! `vmm_qemu_boot.rs`): guest assets, a test initramfs with a script
//! appended, FIFO capture, a `virtiofsd-msb` on a pre-bound socket, and
//! bounded waits.
//!
//! The guest is `target/guest/msb-kernel/vmlinux` (scripts/build-kernel.sh) with
//! `target/guest/test-initramfs.cpio.gz` (`scripts/build-test-initramfs.sh`,
//! run here when missing): its `/init` loads the virtio modules, mounts the
//! virtiofs tag given as `msb.tag=` at `/mnt` (when given), runs `/test.sh`
//! (appended here as a second cpio archive), prints
//! `MSB-TEST-END status=<n>` on the console and powers off.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use msb::vmm::{Accel, VmPlan};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("launcher/ has a parent")
        .to_path_buf()
}

/// Kernel and base initramfs of the test guest.
pub struct Guest {
    /// The kernel (an ELF with a PVH entry).
    pub kernel: PathBuf,
    /// Base test initramfs (gzip'd newc).
    pub initramfs: PathBuf,
    /// `lib/modules/<version>` of the kernel.
    pub modules: PathBuf,
}

/// Finds the test guest (`$MSB_GUEST_DIR`, default `target/guest`),
/// building the initramfs when it is missing; `Err` says what is missing.
pub fn guest() -> Result<Guest, String> {
    let dir = std::env::var_os("MSB_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/guest"));
    let kernel = dir.join("msb-kernel/vmlinux");
    if !kernel.is_file() {
        return Err(format!(
            "no guest kernel at {} (run scripts/setup.sh)",
            kernel.display()
        ));
    }
    let version = std::fs::read_to_string(dir.join("msb-kernel/version"))
        .map_err(|e| format!("{}: {e}", dir.join("msb-kernel/version").display()))?;
    let modules = dir.join("msb-kernel/lib/modules").join(version.trim());
    let initramfs = dir.join("test-initramfs.cpio.gz");
    let script = workspace().join("scripts/build-test-initramfs.sh");
    let built = Command::new(&script)
        .arg(&initramfs)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    if !built.status.success() || !initramfs.is_file() {
        return Err(format!(
            "could not build {}: {}",
            initramfs.display(),
            String::from_utf8_lossy(&built.stderr).trim()
        ));
    }
    Ok(Guest {
        kernel,
        initramfs,
        modules,
    })
}

/// One file of an appended cpio archive.
pub struct CpioFile {
    /// Path inside the guest, without the leading `/`.
    pub name: String,
    /// Permission bits.
    pub mode: u32,
    /// Contents.
    pub data: Vec<u8>,
}

/// A newc cpio archive of regular files (the kernel accepts an
/// uncompressed archive appended to a gzip'd one).
pub fn cpio(files: &[CpioFile]) -> Vec<u8> {
    fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        entry(
            &mut out,
            1000 + i as u32,
            &f.name,
            0o100000 | f.mode,
            &f.data,
        );
    }
    entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

/// Writes `base` followed by a cpio of `files` to `out`. The kernel only
/// looks for an appended archive at a 4-byte aligned offset (zero bytes
/// between archives are skipped), so `base` is padded first.
pub fn initramfs_with(base: &Path, files: &[CpioFile], out: &Path) -> io::Result<()> {
    let mut data = std::fs::read(base)?;
    data.resize(data.len().next_multiple_of(4), 0);
    data.extend_from_slice(&cpio(files));
    std::fs::write(out, data)
}

/// `/test.sh` with `body`.
pub fn test_script(body: &str) -> CpioFile {
    CpioFile {
        name: "test.sh".into(),
        mode: 0o755,
        data: body.as_bytes().to_vec(),
    }
}

/// A plan in `dir` with no shares or disks.
pub fn plan(dir: &Path, guest: &Guest, initramfs: &Path, cmdline: &str, accel: Accel) -> VmPlan {
    VmPlan {
        kernel: guest.kernel.clone(),
        initramfs: initramfs.to_path_buf(),
        cmdline: cmdline.into(),
        cpus: 1,
        memory_mib: 256,
        shares: Vec::new(),
        disks: Vec::new(),
        stdout_fifo: dir.join("stdout.fifo"),
        stderr_fifo: dir.join("stderr.fifo"),
        console_log: dir.join("console.log"),
        agent_socket: None,
        run_dir: dir.to_path_buf(),
        accel,
    }
}

/// Everything read from one FIFO, by a thread, until [`Capture::finish`].
/// The FIFO is opened read-write and non-blocking before the VMM starts
/// (so the VMM's write-only open does not block and no early EOF is seen).
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<u8>>,
}

impl Capture {
    /// Creates the FIFO at `path` and starts reading it.
    pub fn start(path: &Path) -> io::Result<Capture> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                let stopping = flag.load(Ordering::SeqCst);
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if stopping {
                            break;
                        }
                        let mut pfd = libc::pollfd {
                            fd: file.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd, bounded timeout.
                        unsafe { libc::poll(&mut pfd, 1, 20) };
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            out
        });
        Ok(Capture { stop, thread })
    }

    /// Drains what is left and returns everything read.
    pub fn finish(self) -> Vec<u8> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("capture thread")
    }
}

/// A `virtiofsd-msb` serving a directory on a socket bound beforehand
/// (passed as `--fd 3`, so the VMM cannot race its start). Killed on drop.
pub struct Daemon {
    child: Child,
    /// The socket for the VMM.
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts the workspace's `virtiofsd-msb` of the profile these tests were
    /// built with, else the other one (CI builds release only), or
    /// `$MSB_DAEMON_BIN`.
    pub fn start(shared: &Path, socket: &Path, log: &Path) -> Result<Daemon, String> {
        let profiles = if cfg!(debug_assertions) {
            ["debug", "release"]
        } else {
            ["release", "debug"]
        };
        let bin = std::env::var_os("MSB_DAEMON_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                profiles
                    .iter()
                    .map(|p| workspace().join("target").join(p).join("virtiofsd-msb"))
                    .find(|b| b.is_file())
            })
            .unwrap_or_else(|| workspace().join("target/release/virtiofsd-msb"));
        if !bin.is_file() {
            return Err(format!(
                "no daemon at {} (cargo build -p virtiofsd-msb)",
                bin.display()
            ));
        }
        let listener =
            UnixListener::bind(socket).map_err(|e| format!("bind {}: {e}", socket.display()))?;
        let fd = OwnedFd::from(listener);
        let raw = fd.as_raw_fd();
        let log = File::create(log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--fd", "3", "--shared-dir"])
            .arg(shared)
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: dup2/fcntl on plain integers between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if raw == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(raw, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
        drop(fd);
        Ok(Daemon {
            child,
            socket: socket.to_path_buf(),
        })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In `dir`: a `share/` holding `hello.txt` ("from-host\n") served by a
/// daemon on `fs.sock`, and a 1 MiB `disk.raw`; the daemon and the disk path.
pub fn share_and_disk(dir: &Path) -> Result<(Daemon, PathBuf), String> {
    let share = dir.join("share");
    std::fs::create_dir(&share).map_err(|e| e.to_string())?;
    std::fs::write(share.join("hello.txt"), "from-host\n").map_err(|e| e.to_string())?;
    let daemon = Daemon::start(&share, &dir.join("fs.sock"), &dir.join("daemon.log"))?;
    let disk = dir.join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).map_err(|e| e.to_string())?;
    Ok((daemon, disk))
}

/// Prints why a test is skipped. Written to the process's stderr directly
/// (not `eprintln!`, which the test harness captures), so it shows in a
/// plain `cargo test` run.
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(io::stderr(), "SKIPPED {test}: {why}");
}
