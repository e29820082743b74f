//! Guest paths as the sandbox sees them.
//!
//! Without a rootfs the sandbox's `/` is the agent's and a guest path is
//! used as it is. With one (commands chroot into it), the agent resolves a
//! path's parent directory inside the root with `openat2(RESOLVE_IN_ROOT)`
//! (absolute symlinks and `..` stay inside) and reaches the last component
//! through `/proc/self/fd/N/NAME`. A symlink as the last component is
//! followed by the kernel from the agent's root: operations that follow it
//! (read, write) see the target an absolute link names outside the rootfs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// The sandbox's root and working directory.
pub struct GuestRoot {
    /// The rootfs directory, when commands run in one.
    dir: Option<OwnedFd>,
    /// Directory relative paths start from.
    workdir: String,
}

/// Where the agent reaches one guest path.
pub struct Located {
    /// Keeps the resolved parent directory open while `path` is used.
    _parent: Option<OwnedFd>,
    /// A path the agent can use with ordinary file calls.
    pub path: PathBuf,
}

impl GuestRoot {
    /// The sandbox root at `root` ("" for `/`); relative paths start at
    /// `workdir` (default `/`).
    pub fn open(root: &str, workdir: Option<&str>) -> io::Result<GuestRoot> {
        let dir = if root.is_empty() {
            None
        } else {
            let c = CString::new(root)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "root holds a NUL"))?;
            let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
            // SAFETY: a valid NUL-terminated path; the fd returned is ours alone.
            let fd = unsafe { libc::open(c.as_ptr(), flags) };
            if fd < 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(e.kind(), format!("rootfs {root}: {e}")));
            }
            // SAFETY: fd was just opened and is owned by nobody else.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        Ok(GuestRoot {
            dir,
            workdir: workdir.unwrap_or("/").to_string(),
        })
    }

    /// The sandbox's working directory.
    pub fn workdir(&self) -> &str {
        &self.workdir
    }

    /// `path` as a clean absolute guest path: relative ones start at
    /// `base` (default: the sandbox workdir); `.` and `..` are resolved
    /// lexically, as `docker cp` does (`/a/link/..` is `/a`). Empty paths
    /// and NUL bytes are refused.
    pub fn absolute(&self, path: &str, base: Option<&str>) -> Result<String, String> {
        if path.is_empty() {
            return Err("empty path".into());
        }
        if path.contains('\0') {
            return Err(format!("path {path:?} holds a NUL byte"));
        }
        let joined = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{path}", base.unwrap_or(&self.workdir))
        };
        Ok(format!("/{}", components(&joined).join("/")))
    }

    /// Where the agent reaches the absolute guest path `abs`.
    pub fn locate(&self, abs: &str) -> io::Result<Located> {
        let Some(root) = &self.dir else {
            return Ok(Located {
                _parent: None,
                path: PathBuf::from(abs),
            });
        };
        let mut parts = components(abs);
        let Some(last) = parts.pop() else {
            return Ok(Located {
                _parent: None,
                path: PathBuf::from(format!("/proc/self/fd/{}", root.as_raw_fd())),
            });
        };
        let parent = open_in_root(root, &format!("/{}", parts.join("/")))?;
        let path = PathBuf::from(format!("/proc/self/fd/{}/{last}", parent.as_raw_fd()));
        Ok(Located {
            _parent: Some(parent),
            path,
        })
    }
}

/// The names in `path`, with `.` dropped and `..` taking one away (never
/// above the root).
fn components(path: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    parts
}

/// Opens directory `path` (O_PATH) resolved inside `root`.
fn open_in_root(root: &OwnedFd, path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL"))?;
    // SAFETY: open_how is plain data (three integers); zeroed is valid.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT;
    // SAFETY: openat2 gets a valid dirfd, a NUL-terminated path and an
    // open_how of the size passed; the fd returned is ours alone.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat2 and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

#[cfg(test)]
mod tests {
    use super::GuestRoot;

    #[test]
    fn paths_are_made_absolute_and_clean() {
        let root = GuestRoot::open("", Some("/work")).unwrap();
        let abs = |p: &str| root.absolute(p, None);
        assert_eq!(abs("/a/./b//c/").unwrap(), "/a/b/c");
        assert_eq!(abs("x/y").unwrap(), "/work/x/y");
        assert_eq!(abs("../../..").unwrap(), "/");
        assert_eq!(abs("/a/..").unwrap(), "/");
        assert_eq!(root.absolute("f", Some("/tmp")).unwrap(), "/tmp/f");
        assert!(abs("").is_err());
        assert!(abs("a\0b").unwrap_err().contains("NUL"));
    }
}
