//! Does KVM really run guests here? A `/dev/kvm` that opens is not enough:
//! on this project's PVM-flavoured hosts it opens, creates VMs, runs real
//! mode, 32-bit protected mode and 64-bit long mode code set up through
//! `KVM_SET_SREGS` (all checked by hand), and still the Linux kernel hangs
//! before printing anything under `qemu -accel kvm`. So there are two probes:
//!
//! - [`ioctl_probe`] (milliseconds, no files needed): in a forked child,
//!   `KVM_CREATE_VM`, one 64 KiB memory slot just below 4 GiB holding at the
//!   reset vector the real-mode code `mov al, 0x2a; add al, 0x0b; out 0x10,
//!   al; hlt`, `KVM_CREATE_VCPU` (a fresh vCPU starts at the reset vector),
//!   `KVM_RUN`: it must exit with an `out` of `0x35` to port `0x10`, then
//!   with `hlt`. It rules out a missing, inaccessible or broken `/dev/kvm`.
//!   The child makes only raw system calls (no allocation, no locks), as
//!   required after `fork` in a multi-threaded process.
//! - [`boot_probe`] (about a second where KVM works): boots the real guest
//!   kernel under `qemu -accel kvm -cpu host` with no initramfs; it must
//!   reach its "Kernel panic - not syncing: VFS: Unable to mount root fs"
//!   (`panic=-1` + `-no-reboot` then end QEMU). That is the test that fails
//!   on PVM hosts.
//!
//! Both wait up to a deadline, then SIGKILL the child; neither blocks on a
//! stuck child.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the KVM probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProbe {
    /// The guest code ran and exited exactly as expected.
    Usable,
    /// KVM is missing or misbehaves; the text says how (for logs).
    Unusable(String),
}

impl KvmProbe {
    /// True for [`KvmProbe::Usable`].
    pub fn is_usable(&self) -> bool {
        matches!(self, KvmProbe::Usable)
    }
}

// ioctl numbers from <linux/kvm.h> (type 0xAE).
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xAE04;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
const KVM_RUN: libc::c_ulong = 0xAE80;
// _IOW(0xAE, 0x46, struct kvm_userspace_memory_region), a 32-byte struct.
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_AE46;
const KVM_API_VERSION: libc::c_int = 12;
const KVM_EXIT_IO: u32 = 2;
const KVM_EXIT_HLT: u32 = 5;
const KVM_EXIT_IO_OUT: u8 = 1;

/// `struct kvm_userspace_memory_region`.
#[repr(C)]
struct MemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

/// Guest memory slot: the top 64 KiB below 4 GiB.
const SLOT_GPA: u64 = 0xFFFF_0000;
const SLOT_SIZE: usize = 0x1_0000;
/// Offset of the reset vector (0xffff_fff0) in the slot.
const RESET_OFFSET: usize = 0xFFF0;
/// mov al, 0x2a; add al, 0x0b; out 0x10, al; hlt
const CODE: [u8; 7] = [0xB0, 0x2A, 0x04, 0x0B, 0xE6, 0x10, 0xF4];
const PROBE_PORT: u16 = 0x10;
const PROBE_VALUE: u8 = 0x35;

/// Child exit codes, one per failing step (see [`step_name`]).
const STEP_OK: i32 = 0;
const STEP_OPEN: i32 = 10;
const STEP_API: i32 = 11;
const STEP_VM: i32 = 12;
const STEP_MEM: i32 = 13;
const STEP_SLOT: i32 = 14;
const STEP_VCPU: i32 = 15;
const STEP_RUNMAP: i32 = 16;
const STEP_RUN1: i32 = 17;
const STEP_EXIT1: i32 = 18;
const STEP_RUN2: i32 = 19;
const STEP_EXIT2: i32 = 20;

fn step_name(code: i32) -> &'static str {
    match code {
        STEP_OPEN => "cannot open /dev/kvm",
        STEP_API => "unexpected KVM API version",
        STEP_VM => "KVM_CREATE_VM failed",
        STEP_MEM => "cannot map guest memory",
        STEP_SLOT => "KVM_SET_USER_MEMORY_REGION failed",
        STEP_VCPU => "KVM_CREATE_VCPU failed",
        STEP_RUNMAP => "cannot map the vCPU run area",
        STEP_RUN1 => "first KVM_RUN failed",
        STEP_EXIT1 => "guest code did not exit with the expected port write",
        STEP_RUN2 => "second KVM_RUN failed",
        STEP_EXIT2 => "guest code did not halt",
        _ => "unknown failure",
    }
}

/// Runs the ioctl probe in a child process, waiting at most `timeout`.
pub fn ioctl_probe(timeout: Duration) -> KvmProbe {
    // Cheap early answer without forking: no device, or no permission.
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return KvmProbe::Unusable(format!("/dev/kvm: {e}"));
    }
    // SAFETY: fork has no memory-safety preconditions. The child only runs
    // `child_probe`, which makes raw system calls on local data and ends
    // with `_exit`, so it never touches state another thread may have held
    // (allocator, locks) at the time of the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return KvmProbe::Unusable(format!(
            "fork for the KVM probe: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        let code = child_probe();
        // SAFETY: _exit ends the child at once, without running atexit
        // handlers or destructors that belong to the parent's state.
        unsafe { libc::_exit(code) };
    }
    wait_child(pid, timeout)
}

/// Polls the child until it exits or `timeout` passes (then kills it).
fn wait_child(pid: libc::pid_t, timeout: Duration) -> KvmProbe {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid on our own child with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(status) {
                match libc::WEXITSTATUS(status) {
                    STEP_OK => KvmProbe::Usable,
                    code => KvmProbe::Unusable(step_name(code).to_string()),
                }
            } else {
                KvmProbe::Unusable(format!(
                    "probe child killed by signal {}",
                    libc::WTERMSIG(status)
                ))
            };
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return KvmProbe::Unusable(format!("waitpid for the KVM probe: {e}"));
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: kill on our own, not yet reaped child (its pid cannot have
    // been reused).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap_later(pid);
    KvmProbe::Unusable(format!(
        "guest code did not finish within {} ms (KVM hangs)",
        timeout.as_millis()
    ))
}

/// Reaps a killed child without blocking the caller: a child stuck in the
/// kernel may take a while to die.
fn reap_later(pid: libc::pid_t) {
    let reap = move || {
        let mut status: libc::c_int = 0;
        // SAFETY: blocking waitpid on our own child with a valid out pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    };
    if std::thread::Builder::new()
        .name("kvm-probe-reaper".into())
        .spawn(reap)
        .is_err()
    {
        tracing::debug!("could not start a reaper thread for KVM probe pid {pid}");
    }
}

/// The probe proper; returns a `STEP_*` code. Runs in the forked child:
/// raw system calls only, nothing that allocates or locks. Descriptors and
/// mappings are left for `_exit` to release.
fn child_probe() -> i32 {
    // SAFETY: every call is a plain system call on
    // descriptors this function opened, with pointers to live local data or
    // to mappings it created and checked for MAP_FAILED; the mapped guest
    // memory is SLOT_SIZE bytes, so the code written at RESET_OFFSET fits
    // (RESET_OFFSET + CODE.len() <= SLOT_SIZE), and the kvm_run area is at
    // least as large as the fields read from it (KVM_GET_VCPU_MMAP_SIZE is
    // checked to be >= 64 bytes).
    unsafe {
        let kvm = libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if kvm < 0 {
            return STEP_OPEN;
        }
        if libc::ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION {
            return STEP_API;
        }
        let vm = libc::ioctl(kvm, KVM_CREATE_VM, 0);
        if vm < 0 {
            return STEP_VM;
        }
        let mem = libc::mmap(
            std::ptr::null_mut(),
            SLOT_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if mem == libc::MAP_FAILED {
            return STEP_MEM;
        }
        let code_at = (mem as *mut u8).add(RESET_OFFSET);
        std::ptr::copy_nonoverlapping(CODE.as_ptr(), code_at, CODE.len());
        let region = MemoryRegion {
            slot: 0,
            flags: 0,
            guest_phys_addr: SLOT_GPA,
            memory_size: SLOT_SIZE as u64,
            userspace_addr: mem as u64,
        };
        if libc::ioctl(
            vm,
            KVM_SET_USER_MEMORY_REGION,
            &region as *const MemoryRegion,
        ) < 0
        {
            return STEP_SLOT;
        }
        let vcpu = libc::ioctl(vm, KVM_CREATE_VCPU, 0);
        if vcpu < 0 {
            return STEP_VCPU;
        }
        let run_size = libc::ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
        if run_size < 64 {
            return STEP_RUNMAP;
        }
        let run = libc::mmap(
            std::ptr::null_mut(),
            run_size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            vcpu,
            0,
        );
        if run == libc::MAP_FAILED {
            return STEP_RUNMAP;
        }
        let run = run as *const u8;
        if libc::ioctl(vcpu, KVM_RUN, 0) < 0 {
            return STEP_RUN1;
        }
        // struct kvm_run: exit_reason (u32) at 8; for KVM_EXIT_IO the union
        // at 32 holds direction (u8), size (u8), port (u16), count (u32),
        // data_offset (u64, from the start of kvm_run).
        let exit_reason = std::ptr::read_unaligned(run.add(8) as *const u32);
        let direction = *run.add(32);
        let size = *run.add(33);
        let port = std::ptr::read_unaligned(run.add(34) as *const u16);
        let count = std::ptr::read_unaligned(run.add(36) as *const u32);
        let data_offset = std::ptr::read_unaligned(run.add(40) as *const u64);
        if exit_reason != KVM_EXIT_IO
            || direction != KVM_EXIT_IO_OUT
            || size != 1
            || port != PROBE_PORT
            || count != 1
            || data_offset >= run_size as u64
            || *run.add(data_offset as usize) != PROBE_VALUE
        {
            return STEP_EXIT1;
        }
        if libc::ioctl(vcpu, KVM_RUN, 0) < 0 {
            return STEP_RUN2;
        }
        if std::ptr::read_unaligned(run.add(8) as *const u32) != KVM_EXIT_HLT {
            return STEP_EXIT2;
        }
        STEP_OK
    }
}

/// Kernel command line of the boot probe: no init, no root, a tiny log.
const BOOT_PROBE_CMDLINE: &str = "console=ttyS0 loglevel=1 panic=-1 rdinit=/msb-kvm-probe-no-init";

/// Boots `kernel` under `qemu -accel kvm` with no initramfs and waits up to
/// `timeout` for the kernel's panic banner (it cannot find a root file
/// system) and QEMU's exit.
pub fn boot_probe(qemu: &Path, kernel: &Path, timeout: Duration) -> KvmProbe {
    let mut cmd = Command::new(qemu);
    cmd.args(["-accel", "kvm", "-cpu", "host", "-m", "128M", "-smp", "1"])
        .args(["-nographic", "-nodefaults", "-no-user-config", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", BOOT_PROBE_CMDLINE, "-serial", "stdio"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::process::prepare(&mut cmd, None);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return KvmProbe::Unusable(format!("start {}: {e}", qemu.display())),
    };
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(p) = pipe {
                // At most 64 KiB is kept; the rest is drained so QEMU never blocks.
                let mut limited = p.take(64 * 1024);
                let _ = limited.read_to_end(&mut text);
                let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    match status {
        None => KvmProbe::Unusable(format!(
            "the guest kernel did not boot within {} ms under KVM",
            timeout.as_millis()
        )),
        Some(_) if out.contains(super::qemu::PANIC_BANNER) => KvmProbe::Usable,
        Some(st) => KvmProbe::Unusable(format!(
            "qemu -accel kvm ended ({st}) before the kernel ran: {}",
            err.lines().next().unwrap_or("no message")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_answers_within_its_deadline() {
        let start = Instant::now();
        let result = ioctl_probe(Duration::from_millis(1500));
        // Whatever the host, the answer comes in bounded time.
        assert!(start.elapsed() < Duration::from_secs(3), "{result:?}");
        eprintln!("KVM ioctl probe on this host: {result:?}");
    }

    #[test]
    fn memory_region_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<MemoryRegion>(), 32);
        assert!(RESET_OFFSET + CODE.len() <= SLOT_SIZE);
        assert_eq!(0x2Au8 + 0x0B, PROBE_VALUE);
    }
}
