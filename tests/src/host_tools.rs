//! Host tools the tests drive (mkfs, debugfs, qemu-img) and small text
//! helpers; each panics with the tool's output when it fails.

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a host tool (mkfs.ext4, qemu-img, debugfs…) and returns its stdout;
/// panics with its output when it fails or cannot start (the message names
/// the Debian package scripts/setup.sh installs).
#[track_caller]
pub fn host_tool(program: &str, args: &[&OsStr]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (install it with scripts/setup.sh)"));
    assert!(
        out.status.success(),
        "{program} {:?} failed ({}):\n{}{}",
        args,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates a `size_mib` MiB raw image at `path` holding an empty ext4.
#[track_caller]
pub fn make_ext4_image(path: &Path, size_mib: u64) {
    let f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.set_len(size_mib << 20).expect("size the image");
    drop(f);
    host_tool(
        "mkfs.ext4",
        &[
            OsStr::new("-q"),
            OsStr::new("-F"),
            OsStr::new("-L"),
            OsStr::new("msbtest"),
            path.as_os_str(),
        ],
    );
}

/// The content of `file` (absolute, inside the filesystem) in the raw ext4
/// image `image`, read on the host with `debugfs -R 'cat FILE'`.
#[track_caller]
pub fn debugfs_cat(image: &Path, file: &str) -> String {
    host_tool(
        "debugfs",
        &[
            OsStr::new("-R"),
            OsStr::new(&format!("cat {file}")),
            image.as_os_str(),
        ],
    )
}

/// Converts a disk image with `qemu-img convert -O <format>`.
#[track_caller]
pub fn qemu_img_convert(src: &Path, format: &str, dst: &Path) {
    host_tool(
        "qemu-img",
        &[
            OsStr::new("convert"),
            OsStr::new("-O"),
            OsStr::new(format),
            src.as_os_str(),
            dst.as_os_str(),
        ],
    );
}

/// Writes `content` as the file `/name` of the raw ext4 image `image`
/// (`debugfs -w -R 'write HOST name'`).
#[track_caller]
pub fn debugfs_write(image: &Path, name: &str, content: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = dir.path().join("content");
    std::fs::write(&host, content).expect("write content");
    let cmd = format!("write {} {name}", host.display());
    host_tool(
        "debugfs",
        &[
            OsStr::new("-w"),
            OsStr::new("-R"),
            OsStr::new(&cmd),
            image.as_os_str(),
        ],
    );
}
