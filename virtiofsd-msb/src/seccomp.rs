//! The seccomp filter (`--seccomp`): an allow-list of the system calls the
//! server makes once its walls are up, everything else killed (default),
//! logged, or trapped.
//!
//! The list was found by tracing the server (`strace -f`, counting only
//! calls made after `pivot_root`) through the daemon's whole test set:
//! vhost-user driver tests, host FUSE tests (pjdfstest, fsx, policies) and
//! real QEMU guests, then reading every entry against the code that makes
//! it. Arguments are checked where that removes a capability:
//! - `clone` only with `CLONE_THREAD` (threads, never a new process), and
//!   `clone3`, whose flags live in memory a filter cannot read, answers
//!   `ENOSYS` so the C library falls back to `clone`;
//! - `prctl` only `PR_SET_NAME` (thread names);
//! - no `ioctl`, `socket`, `connect`, `execve`, `mount`, `ptrace`, `kill` of
//!   other processes, `setuid` (only the per-thread fs ids), nor anything
//!   that changes namespaces, keys, modules or the clock.
//!
//! Set-up calls (the sandbox's `mount`, `pivot_root`, `chdir`, `umount2`)
//! happen before the filter goes on and are not allowed after.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// What happens to a call off the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompMode {
    /// Kill the whole process (`SECCOMP_RET_KILL_PROCESS`).
    Kill,
    /// Allow it, and log it to the kernel audit log (`SECCOMP_RET_LOG`).
    Log,
    /// Send SIGSYS: the daemon prints the call's number and it fails with
    /// `ENOSYS`.
    Trap,
    /// No filter.
    None,
}

impl SeccompMode {
    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SeccompMode::Kill => "kill",
            SeccompMode::Log => "log",
            SeccompMode::Trap => "trap",
            SeccompMode::None => "none",
        }
    }
}

/// The filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[error("--seccomp {mode}: {reason}")]
pub struct SeccompError {
    mode: &'static str,
    reason: String,
}

/// System calls allowed with any arguments.
const ALLOWED: &[libc::c_long] = &[
    // Files and directories, always relative to fds the daemon holds.
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_close,
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_newfstatat,
    // std's metadata: `--sandbox none` removes its socket file on the way
    // out (the sandboxed server leaves that to the monitor).
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_getdents64,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_symlinkat,
    libc::SYS_linkat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_readlinkat,
    libc::SYS_fchmodat,
    libc::SYS_fchownat,
    libc::SYS_utimensat,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_copy_file_range,
    libc::SYS_fcntl,
    libc::SYS_flock,
    // Extended attributes (the *xattrat calls by number: Linux 6.13).
    libc::SYS_getxattr,
    libc::SYS_setxattr,
    libc::SYS_listxattr,
    libc::SYS_removexattr,
    libc::SYS_fgetxattr,
    libc::SYS_fsetxattr,
    SYS_SETXATTRAT,
    SYS_GETXATTRAT,
    // The guest caller's fs ids for entries created without stat
    // virtualization (per thread, scoped).
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    // vhost-user: the frontend's socket, eventfds, guest memory.
    libc::SYS_accept4,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    // Threads, signals, time (the C library and Rust's std).
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_getrandom,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// `setxattrat`/`getxattrat` (Linux 6.13; one number on every
/// architecture).
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;

/// x86_64-only spellings the C library still uses (`renameat2` without
/// flags becomes `renameat`; `unlink(2)` of the socket file, as `statx`).
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[libc::c_long] = &[libc::SYS_renameat, libc::SYS_unlink];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_ARCH: &[libc::c_long] = &[];

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// Number of system calls the filter lets through (with or without
/// argument checks), for logs and the report.
pub fn allowed_count() -> usize {
    ALLOWED.len() + ALLOWED_ARCH.len() + 2
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(|e| e.to_string())
}

/// The allow-list as seccompiler rules: calls with an empty rule list are
/// allowed with any arguments.
fn rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .chain(ALLOWED_ARCH)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    let thread = libc::CLONE_THREAD as u64;
    let rule = |c: SeccompCondition| SeccompRule::new(vec![c]).map_err(|e| e.to_string());
    map.insert(
        libc::SYS_clone,
        vec![rule(cond(0, SeccompCmpOp::MaskedEq(thread), thread)?)?],
    );
    // Reaches the filter below, which answers ENOSYS.
    map.insert(libc::SYS_clone3, Vec::new());
    map.insert(
        libc::SYS_prctl,
        vec![rule(cond(0, SeccompCmpOp::Eq, libc::PR_SET_NAME as u64)?)?],
    );
    Ok(map)
}

/// The two filters: the allow-list, and `clone3` → `ENOSYS` (seccomp runs
/// every installed filter and the strictest answer wins).
pub fn programs(mode: SeccompMode) -> Result<Vec<BpfProgram>, SeccompError> {
    let err = |reason: String| SeccompError {
        mode: mode.as_str(),
        reason,
    };
    let mismatch = match mode {
        SeccompMode::None => return Ok(Vec::new()),
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Trap => SeccompAction::Trap,
    };
    let main = SeccompFilter::new(rules().map_err(err)?, mismatch, SeccompAction::Allow, ARCH)
        .map_err(|e| err(e.to_string()))?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        ARCH,
    )
    .map_err(|e| err(e.to_string()))?;
    // The allow-list goes on last: installing a filter takes a prctl it
    // does not allow.
    [clone3, main]
        .into_iter()
        .map(|f| BpfProgram::try_from(f).map_err(|e| err(e.to_string())))
        .collect()
}

/// Installs the filters for `mode` on the calling thread and every thread
/// it starts afterwards (call it before starting any). Sets
/// no-new-privileges, which seccomp requires.
pub fn install(mode: SeccompMode) -> Result<(), SeccompError> {
    let progs = programs(mode)?;
    if mode == SeccompMode::Trap {
        install_sigsys_handler();
    }
    for prog in &progs {
        seccompiler::apply_filter(prog).map_err(|e| SeccompError {
            mode: mode.as_str(),
            reason: e.to_string(),
        })?;
    }
    if mode != SeccompMode::None {
        tracing::debug!(allowed = allowed_count(), "seccomp filter installed");
    }
    Ok(())
}

/// `--seccomp trap`: a SIGSYS handler that reports the blocked call on
/// stderr and makes it fail with `ENOSYS`.
fn install_sigsys_handler() {
    // SAFETY: a zeroed sigaction with a valid handler address and flags;
    // the handler only does async-signal-safe work (see `on_sigsys`).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
    }
}

/// Offset of `si_syscall` in a SIGSYS `siginfo_t` (after the three ints,
/// padding and `si_call_addr`), the same on every 64-bit Linux.
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid SIGSYS siginfo, whose si_syscall
    // int lives at this offset.
    let nr = unsafe { *(info as *const u8).add(SI_SYSCALL_OFFSET).cast::<i32>() };
    let mut msg = *b"virtiofsd-msb: seccomp blocked system call           \n";
    let mut n = nr.unsigned_abs();
    let mut i = msg.len() - 2;
    loop {
        msg[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
        i -= 1;
    }
    // SAFETY: write(2) of a stack buffer is async-signal-safe.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    set_return(ctx, -(libc::ENOSYS as i64));
}

/// Sets the return value of the interrupted system call in `ctx`.
fn set_return(ctx: *mut libc::c_void, value: i64) {
    let uc = ctx.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes a valid ucontext for an SA_SIGINFO handler;
    // the return register is written back when the handler returns.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        {
            (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = value;
        }
        #[cfg(target_arch = "aarch64")]
        {
            (*uc).uc_mcontext.regs[0] = value as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child after installing `mode`'s filter;
    /// returns how the child ended (`waitpid` status).
    fn in_child(mode: SeccompMode, f: fn() -> i32) -> i32 {
        // SAFETY: the child only installs the filter, runs `f` (raw system
        // calls) and leaves with _exit; it never returns into the test
        // harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = match install(mode) {
                Ok(()) => f(),
                Err(_) => 99,
            };
            // SAFETY: ends the child without running the parent's handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    fn forbidden_socket() -> i32 {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        if fd >= 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        }
    }

    fn fork_a_process() -> i32 {
        // SAFETY: a raw clone without CLONE_THREAD: a fork; the child (if
        // one were made) exits at once.
        let r =
            unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
        if r == 0 {
            // SAFETY: leaves the forked child at once.
            unsafe { libc::_exit(0) };
        }
        7
    }

    fn allowed_work() -> i32 {
        // Threads, files, time: what the server does all day.
        let t = std::thread::spawn(|| std::fs::read_dir("/").map(|d| d.count()).unwrap_or(0));
        let entries = t.join().unwrap_or(0);
        let _ = std::time::SystemTime::now();
        if entries > 0 {
            0
        } else {
            1
        }
    }

    #[test]
    fn kill_mode_kills_a_forbidden_call() {
        let status = in_child(SeccompMode::Kill, forbidden_socket);
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
        let status = in_child(SeccompMode::Kill, fork_a_process);
        assert!(
            libc::WIFSIGNALED(status),
            "fork must be killed: {status:#x}"
        );
    }

    #[test]
    fn allowed_calls_and_threads_pass_in_kill_mode() {
        let status = in_child(SeccompMode::Kill, allowed_work);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }

    #[test]
    fn trap_mode_fails_the_call_with_enosys() {
        let status = in_child(SeccompMode::Trap, forbidden_socket);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), libc::ENOSYS);
    }

    #[test]
    fn log_mode_allows() {
        let status = in_child(SeccompMode::Log, forbidden_socket);
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }

    #[test]
    fn list_has_no_duplicates() {
        let mut all: Vec<_> = ALLOWED.iter().chain(ALLOWED_ARCH).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(programs(SeccompMode::None).unwrap().len(), 0);
        assert_eq!(programs(SeccompMode::Kill).unwrap().len(), 2);
    }
}
