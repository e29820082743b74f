//! The agent's channels to the host, served until a Shutdown.
//!
//! - A virtio-serial port (QEMU): one device node for the VM's lifetime. A
//!   read of 0 bytes means no host is connected to the port's chardev; the
//!   agent waits [`PORT_RETRY`] and serves the port again, as a new
//!   connection (the host starts over with Hello).
//! - vsock (cloud-hypervisor's hybrid vsock): listen on a port, serve each
//!   accepted connection in turn.
//!
//! When a connection ends, its sessions are killed (nobody can read their
//! output any more). A frame a session thread was already writing when a
//! virtio-serial host went away may reach the next host.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use super::{serve, AgentOptions, ServeEnd};
use crate::config::AgentChannel;
use crate::init::process::find_port;

/// Pause before serving a virtio-serial port that had no host again.
pub const PORT_RETRY: Duration = Duration::from_millis(20);

/// Serves `channel` until a Shutdown request has been carried out. Fails
/// only when the channel cannot be opened at all.
pub fn serve_forever(channel: &AgentChannel, options: &AgentOptions) -> Result<(), String> {
    match channel {
        AgentChannel::Port { name } => serve_port(name, options),
        AgentChannel::Vsock { port } => serve_vsock(*port, options),
    }
}

fn report(what: &str, e: &io::Error) {
    eprintln!("msb-init agent: {what}: {e}");
}

fn serve_port(name: &str, options: &AgentOptions) -> Result<(), String> {
    let path = find_port(name)?;
    let port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| format!("agent port {path}: {e}"))?;
    loop {
        let ends = port.try_clone().and_then(|r| Ok((r, port.try_clone()?)));
        let (reader, writer) = ends.map_err(|e| format!("agent port {path}: {e}"))?;
        match serve(reader, writer, options) {
            Ok(ServeEnd::Shutdown) => return Ok(()),
            Ok(ServeEnd::Disconnected) => {}
            Err(e) => report(&format!("connection on {path} ended"), &e),
        }
        std::thread::sleep(PORT_RETRY);
    }
}

fn check(ret: libc::c_int, what: &str) -> Result<libc::c_int, String> {
    if ret < 0 {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    } else {
        Ok(ret)
    }
}

/// A listening `AF_VSOCK` stream socket on `port`, any CID.
fn vsock_listen(port: u32) -> Result<OwnedFd, String> {
    let what = format!("vsock port {port}");
    let flags = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: socket takes no pointers; the fd returned is ours alone.
    let fd = check(unsafe { libc::socket(libc::AF_VSOCK, flags, 0) }, &what)?;
    // SAFETY: fd was just created and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    let addr_ptr = (&addr as *const libc::sockaddr_vm).cast();
    // SAFETY: bind reads `len` bytes of a valid sockaddr_vm.
    let bound = unsafe { libc::bind(sock.as_raw_fd(), addr_ptr, len) };
    check(bound, &what)?;
    // SAFETY: listen on our own socket; no pointers.
    check(unsafe { libc::listen(sock.as_raw_fd(), 4) }, &what)?;
    Ok(sock)
}

fn serve_vsock(port: u32, options: &AgentOptions) -> Result<(), String> {
    let listener = vsock_listen(port)?;
    loop {
        // SAFETY: accept4 with null address pointers (the peer is not
        // needed); the fd returned is ours alone.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                report(&format!("accept on vsock port {port}"), &e);
                std::thread::sleep(PORT_RETRY);
            }
            continue;
        }
        // SAFETY: fd was just returned by accept4 and is owned by nobody else.
        let conn = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let reader = match conn.try_clone() {
            Ok(r) => r,
            Err(e) => {
                report("vsock connection", &e);
                continue;
            }
        };
        match serve(reader, conn, options) {
            Ok(ServeEnd::Shutdown) => return Ok(()),
            Ok(ServeEnd::Disconnected) => {}
            Err(e) => report(&format!("connection on vsock port {port} ended"), &e),
        }
    }
}
