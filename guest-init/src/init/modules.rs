//! Kernel modules from the initramfs, loaded in dependency order.
//!
//! The initramfs builder resolves the order from the kernel's modules.dep
//! and writes it to [`MODULE_LIST`], one path per line, so nothing here is
//! tied to one kernel version.

use std::io;
use std::path::Path;

use super::sys;

/// File listing the modules to load at boot, in order.
pub const MODULE_LIST: &str = "/etc/msb/modules";

/// Directory of per-filesystem lists: `<dir>/<fstype>` names, like
/// [`MODULE_LIST`], the modules to load before mounting a disk of that type.
/// Large filesystem modules (xfs, btrfs) are loaded only when a disk needs
/// them: loading them at every boot costs over a second under TCG.
pub const FSTYPE_MODULE_DIR: &str = "/etc/msb/modules.d";

/// Loads every module named in `list` (relative to `root`), in order. A
/// missing list means a kernel with everything built in.
pub fn load_all(root: &Path, list: &Path) -> Result<usize, String> {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", list.display())),
    };
    let mut loaded = 0;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let path = root.join(line.trim_start_matches('/'));
        sys::load_module(&path).map_err(|e| format!("module {}: {e}", path.display()))?;
        loaded += 1;
    }
    Ok(loaded)
}

/// Loads the modules listed in [`FSTYPE_MODULE_DIR`]`/<fstype>` (from the
/// initramfs root), if there is such a list: built-in filesystems have none.
pub fn load_for_fstype(fstype: &str) -> Result<usize, String> {
    if fstype.is_empty()
        || !fstype
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!("invalid filesystem type {fstype:?}"));
    }
    load_all(Path::new("/"), &Path::new(FSTYPE_MODULE_DIR).join(fstype))
}
