//! Finding what a run needs on the host: guest kernel, initramfs, and the
//! `virtiofsd-msb` binary.
//!
//! Search order for the guest images: the flag (or `MSB_KERNEL` /
//! `MSB_INITRAMFS`), then `<dir of msb>/../guest/` (a workspace build:
//! `target/release/msb` → `target/guest/`), then `/usr/share/msb/`.
//! The default kernel is msb's own (`msb-kernel/vmlinux`, built by
//! `scripts/build-kernel.sh`, everything built in); its initramfs holds no
//! modules. A kernel given with `--kernel` that has modules (Debian's cloud
//! kernel from `scripts/fetch-kernel.sh`) needs an initramfs with them: one
//! named `msb-initramfs.cpio` next to that kernel is taken before the
//! default (`scripts/build-initramfs.sh --kernel-dir DIR` puts it there).
//! The daemon is looked for next to `msb`, then on `PATH`.

use std::path::{Path, PathBuf};

use crate::exit::RunError;

/// Host files a run needs.
#[derive(Debug, Clone)]
pub struct Assets {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Default initramfs (msb-init + busybox + modules).
    pub initramfs: PathBuf,
    /// The virtio-fs daemon.
    pub daemon: PathBuf,
}

fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}

fn guest_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = exe_dir() {
        dirs.push(d.join("../guest"));
        // target/<triple>/release/msb → target/guest
        dirs.push(d.join("../../guest"));
    }
    dirs.push(PathBuf::from("/usr/share/msb"));
    dirs
}

/// Where the default kernel is, relative to a guest directory.
pub const DEFAULT_KERNEL: &str = "msb-kernel/vmlinux";
/// File name of an initramfs, in a guest directory or next to a kernel.
pub const INITRAMFS_NAME: &str = "msb-initramfs.cpio";

/// The initramfs made for `kernel`: [`INITRAMFS_NAME`] in its directory.
fn initramfs_beside(kernel: &Path) -> Option<PathBuf> {
    let p = kernel.parent()?.join(INITRAMFS_NAME);
    p.is_file().then_some(p)
}

fn find_guest_file(given: Option<&Path>, rels: &[&str], what: &str) -> Result<PathBuf, RunError> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(RunError::usage(format!(
                "{what} {}: no such file",
                p.display()
            )))
        };
    }
    let candidates: Vec<PathBuf> = guest_dirs()
        .iter()
        .flat_map(|d| rels.iter().map(move |r| d.join(r)))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            RunError::launcher(format!(
                "no {what} found (looked at {}); run scripts/setup.sh or pass --{}",
                looked.join(", "),
                what.replace(' ', "-")
            ))
        })
}

/// The `virtiofsd-msb` binary: next to this program or one directory up
/// (a program using the `msb` library from cargo's `examples/`), else on
/// `PATH`.
pub fn find_daemon() -> Result<PathBuf, RunError> {
    if let Some(p) = std::env::var_os("MSB_DAEMON_BIN") {
        return Ok(PathBuf::from(p));
    }
    let beside = exe_dir().and_then(|d| {
        [d.join("virtiofsd-msb"), d.join("../virtiofsd-msb")]
            .into_iter()
            .find(|p| p.is_file())
    });
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("virtiofsd-msb"))
                .find(|p| p.is_file())
        })
    };
    beside.or_else(on_path).ok_or_else(|| {
        RunError::launcher(
            "virtiofsd-msb not found next to msb or on PATH; build it with `cargo build --release -p virtiofsd-msb`",
        )
    })
}

impl Assets {
    /// Resolves every asset; `kernel`/`initramfs` (else `$MSB_KERNEL` /
    /// `$MSB_INITRAMFS`, as on the command line) override the defaults.
    pub fn locate(kernel: Option<&Path>, initramfs: Option<&Path>) -> Result<Assets, RunError> {
        let from_env = |var: &str| std::env::var_os(var).map(PathBuf::from);
        let (env_kernel, env_initramfs) = (from_env("MSB_KERNEL"), from_env("MSB_INITRAMFS"));
        let kernel = kernel.or(env_kernel.as_deref());
        let initramfs = initramfs.or(env_initramfs.as_deref());
        // An uncompressed ELF with a PVH entry: no decompression, no
        // real-mode setup.
        let kernel_path = find_guest_file(kernel, &[DEFAULT_KERNEL], "kernel")?;
        let beside = match (kernel, initramfs) {
            (Some(_), None) => initramfs_beside(&kernel_path),
            _ => None,
        };
        let initramfs = match beside {
            Some(p) => p,
            None => find_guest_file(initramfs, &[INITRAMFS_NAME], "initramfs")?,
        };
        Ok(Assets {
            kernel: kernel_path,
            initramfs,
            daemon: find_daemon()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_beside_a_kernel_is_found_only_when_there() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        std::fs::write(&kernel, b"k").unwrap();
        assert_eq!(initramfs_beside(&kernel), None);
        let initramfs = dir.path().join(INITRAMFS_NAME);
        std::fs::write(&initramfs, b"i").unwrap();
        assert_eq!(initramfs_beside(&kernel), Some(initramfs));
    }

    #[test]
    fn given_files_are_kept_or_named_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let given = dir.path().join("other.cpio.gz");
        std::fs::write(&given, b"o").unwrap();
        let found = find_guest_file(Some(&given), &[INITRAMFS_NAME], "initramfs").unwrap();
        assert_eq!(found, given);
        let missing = dir.path().join("vmlinux");
        let err = find_guest_file(Some(&missing), &[DEFAULT_KERNEL], "kernel").unwrap_err();
        assert!(
            err.message.contains(&missing.display().to_string()),
            "{}",
            err.message
        );
    }
}
