//! Static guest helpers (`tests/guest/<name>.rs`, std only) built on the
//! host with plain `rustc` (`crt-static`, glibc's static libc), for tests
//! that put them into a guest.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `tests/guest/<name>.rs` into `dir/<name>` (unless a build newer
/// than the source is there) and returns its path; the error holds rustc's
/// output.
pub fn build_static_helper(name: &str, dir: &Path) -> Result<PathBuf, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let src = workspace.join(format!("tests/guest/{name}.rs"));
    let out = dir.join(name);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(source)) = (modified(&out), modified(&src)) {
        if built > source {
            return Ok(out);
        }
    }
    let output = Command::new("rustc")
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=2",
            "-C",
            "debuginfo=0",
        ])
        .args(["-C", "target-feature=+crt-static"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .args(["--crate-name", &name.replace('-', "_")])
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "rustc {} failed ({}):\n{}",
            src.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(out)
}
