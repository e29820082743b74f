//! The other files an image names, judged: refused with `backing=deny`;
//! with `backing=allow`, each must be a plain file inside the top image's
//! directory (after following symlinks), and backing files are checked the
//! same way down the chain.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::probe::{probe, read_at, External, ExternalKind, Probe};
use super::{vmdk, BackingPolicy};

/// Longest backing chain followed.
const MAX_CHAIN: usize = 16;

/// Where QEMU looks for `name` named by the image at `referrer`: `name`
/// itself when absolute, else beside the referrer.
fn joined(referrer: &Path, name: &str) -> PathBuf {
    let dir = referrer.parent().unwrap_or(Path::new("/"));
    dir.join(name)
}

/// Whether `name`, named by `image`, is `image` itself (a sparse VMDK's
/// own extent).
pub(super) fn names_itself(image: &Path, name: &str) -> bool {
    !name.is_empty()
        && std::fs::canonicalize(joined(image, name))
            .is_ok_and(|p| std::fs::canonicalize(image).is_ok_and(|i| i == p))
}

/// Whether QEMU would read `name` as `protocol:…` rather than a file
/// (a `:` before any `/`, e.g. `json:{…}`, `nbd:…`).
fn has_protocol(name: &str) -> bool {
    name.find([':', '/'])
        .is_some_and(|i| name.as_bytes()[i] == b':')
}

fn describe(e: &External) -> String {
    format!("{} {:?}", e.kind.describe(), e.name)
}

/// Applies `policy` to what `image` names (see the module doc).
pub(super) fn check_externals(
    image: &Path,
    probe_of_image: &Probe,
    policy: BackingPolicy,
) -> Result<(), String> {
    let Some(first) = probe_of_image.externals.first() else {
        return Ok(());
    };
    if policy == BackingPolicy::Deny {
        let more = match probe_of_image.externals.len() - 1 {
            0 => String::new(),
            n => format!(" and {n} more file(s)"),
        };
        return Err(format!(
            "this {} image names a {}{more}, which QEMU would open as well; msb opens only the \
             image unless the mount says backing=allow (files inside {} only)",
            probe_of_image.format,
            describe(first),
            jail_of(image).display()
        ));
    }
    let jail = jail_of(image);
    let mut seen = HashSet::from([image.to_path_buf()]);
    let mut pending: Vec<(PathBuf, External, usize)> = probe_of_image
        .externals
        .iter()
        .map(|e| (image.to_path_buf(), e.clone(), 1))
        .collect();
    while let Some((referrer, ext, depth)) = pending.pop() {
        let path = resolve(&referrer, &ext, &jail)?;
        if ext.kind != ExternalKind::Backing {
            check_extent(&path, &ext)?;
            continue;
        }
        if !seen.insert(path.clone()) {
            return Err(format!(
                "{} makes a loop in the backing chain",
                describe(&ext)
            ));
        }
        if depth > MAX_CHAIN {
            return Err(format!("backing chain longer than {MAX_CHAIN} images"));
        }
        let below =
            probe(&path).map_err(|m| format!("{} ({}): {m}", describe(&ext), path.display()))?;
        for e in below.externals {
            pending.push((path.clone(), e, depth + 1));
        }
    }
    Ok(())
}

/// The directory every file an image names must lie in.
fn jail_of(image: &Path) -> PathBuf {
    image.parent().unwrap_or(Path::new("/")).to_path_buf()
}

/// The real path of `ext` (named by `referrer`), if it is a regular file
/// inside `jail`.
fn resolve(referrer: &Path, ext: &External, jail: &Path) -> Result<PathBuf, String> {
    let what = describe(ext);
    if ext.name.is_empty() {
        return Err(format!("the image names an empty {}", ext.kind.describe()));
    }
    if has_protocol(&ext.name) {
        return Err(format!(
            "{what} is not a plain file name (QEMU would read it as a protocol)"
        ));
    }
    let path =
        std::fs::canonicalize(joined(referrer, &ext.name)).map_err(|e| format!("{what}: {e}"))?;
    if !path.starts_with(jail) {
        return Err(format!(
            "{what} is {}, outside the image's directory {}; msb follows none there (move it \
             beside the image, or rebase the image with qemu-img rebase)",
            path.display(),
            jail.display()
        ));
    }
    let meta = std::fs::metadata(&path).map_err(|e| format!("{what}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{what} ({}) is not a regular file", path.display()));
    }
    Ok(path)
}

/// An extent or data file holds data; a sparse VMDK extent must not name
/// more files itself.
fn check_extent(path: &Path, ext: &External) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", describe(ext)))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if vmdk::is_sparse(&read_at(&file, 0, 4)?) {
        let nested = vmdk::sparse_externals(&file, len)?;
        if let Some(n) = nested.iter().find(|n| !names_itself(path, &n.name)) {
            return Err(format!(
                "{} names a {} in turn; nested VMDK descriptors are not supported",
                describe(ext),
                describe(n)
            ));
        }
    }
    Ok(())
}
