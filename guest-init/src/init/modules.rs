//! Kernel modules from the initramfs, loaded in dependency order.
//!
//! The initramfs builder resolves the order from the kernel's modules.dep
//! and writes it to [`MODULE_LIST`], one path per line, so nothing here is
//! tied to one kernel version. A list starts with `# kernel <release>`: a
//! list made for another kernel than the running one is refused with a
//! message saying so (its modules would not load). msb's own kernel has
//! everything built in; its initramfs has no lists at all.

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

/// Where the running kernel's release is read (procfs is mounted first).
const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

/// Prefix of the line naming the kernel a list was made for.
const KERNEL_LINE: &str = "# kernel ";

/// Loads every module named in `list` (relative to `root`), in order. A
/// missing list means a kernel with everything built in.
pub fn load_all(root: &Path, list: &Path) -> Result<usize, String> {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(format!("{}: {e}", list.display())),
    };
    if let Some(wanted) = list_kernel(&text) {
        let running =
            std::fs::read_to_string(OSRELEASE).map_err(|e| format!("{OSRELEASE}: {e}"))?;
        check_kernel(list, wanted, running.trim())?;
    }
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

/// The release named by a list's `# kernel <release>` line, if it has one.
fn list_kernel(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(KERNEL_LINE))
        .map(str::trim)
        .filter(|r| !r.is_empty())
}

/// Refuses a module list made for another kernel than the running one.
fn check_kernel(list: &Path, wanted: &str, running: &str) -> Result<(), String> {
    if wanted == running {
        return Ok(());
    }
    Err(format!(
        "{}: the initramfs holds modules for kernel {wanted}, but the guest runs {running}; \
         use an initramfs built for this kernel (scripts/build-initramfs.sh --kernel-dir DIR)",
        list.display()
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_line_is_found_and_checked() {
        let text = "# kernel 6.1.0-57-cloud-amd64\n# comment\n/lib/modules/x/a.ko\n";
        assert_eq!(list_kernel(text), Some("6.1.0-57-cloud-amd64"));
        assert_eq!(list_kernel("/lib/modules/x/a.ko\n"), None);
        let list = Path::new("/etc/msb/modules");
        assert!(check_kernel(list, "6.1.0-57-cloud-amd64", "6.1.0-57-cloud-amd64").is_ok());
        let err = check_kernel(list, "6.1.0-57-cloud-amd64", "6.1.192-msb").unwrap_err();
        assert!(
            err.contains("6.1.0-57-cloud-amd64") && err.contains("6.1.192-msb"),
            "{err}"
        );
    }

    #[test]
    fn missing_list_loads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_all(dir.path(), &dir.path().join("none")), Ok(0));
    }
}
