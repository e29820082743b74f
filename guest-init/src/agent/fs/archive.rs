//! `copy_out` and `copy_in`: tar streams of files and trees (what `msb cp`
//! moves). Modes, symlinks and mtimes are kept; owners are numeric only
//! (no user database lookups: msb-init is a static binary).

use std::io::{self, Write};
use std::path::{Component, Path};
use std::time::{Duration, SystemTime};

use tar::{Archive, Builder, EntryType, HeaderMode};

use crate::agent::input::InputReader;
use crate::agent::sink::DataWriter;
use crate::agent::Shared;

/// Sends a tar stream of `at` (a file, symlink or directory tree; symlinks
/// are stored, not followed) as the session's data; entries are named
/// under `name`. Returns the stream's size.
pub fn copy_out(shared: &Shared, id: u32, at: &Path, name: &str) -> io::Result<u64> {
    let name = if name == "/" { "." } else { name };
    let meta = std::fs::symlink_metadata(at)?;
    let mut out = DataWriter::new(&shared.sink, id);
    {
        let mut tar = Builder::new(&mut out);
        tar.follow_symlinks(false);
        tar.mode(HeaderMode::Complete);
        if meta.is_dir() {
            tar.append_dir_all(name, at)?;
        } else {
            tar.append_path_with_name(at, name)?;
        }
        tar.finish()?;
    }
    out.flush()?;
    Ok(out.total)
}

/// Why an entry may not be unpacked, if it may not: its name (or a hard
/// link's target) is absolute or climbs out with `..`. (Writing through a
/// symlink that leads out is refused by the unpacker, which checks every
/// entry's resolved parent against the destination.)
fn escape(entry: &tar::Entry<'_, &mut InputReader>) -> Option<String> {
    let climbs = |p: &Path| {
        p.components().any(|c| {
            matches!(
                c,
                Component::RootDir | Component::Prefix(_) | Component::ParentDir
            )
        })
    };
    let path = entry.path().ok()?;
    if climbs(&path) {
        return Some(format!(
            "entry {:?} escapes the destination",
            path.display().to_string()
        ));
    }
    if entry.header().entry_type() == EntryType::Link {
        if let Ok(Some(target)) = entry.link_name() {
            if climbs(&target) {
                return Some(format!(
                    "hard link {:?} -> {:?} escapes the destination",
                    path.display().to_string(),
                    target.display().to_string()
                ));
            }
        }
    }
    None
}

/// Unpacks the tar stream of `input` into the directory `dest`. Returns the
/// bytes received. Stops at the first bad entry (what came before stays).
pub fn copy_in(dest: &Path, mut input: InputReader) -> Result<u64, String> {
    let meta = std::fs::metadata(dest).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    {
        let mut archive = Archive::new(&mut input);
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        archive.set_preserve_ownerships(false);
        archive.set_unpack_xattrs(false);
        archive.set_overwrite(true);
        // Directories last (deepest first), as tar's own unpack does: their
        // modes and mtimes then survive what is written inside them.
        let mut dirs = Vec::new();
        for entry in archive.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
            if let Some(why) = escape(&entry) {
                return Err(why);
            }
            if entry.header().entry_type() == EntryType::Directory {
                dirs.push(entry);
            } else {
                unpack(&mut entry, dest)?;
            }
        }
        dirs.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
        for mut dir in dirs {
            unpack(&mut dir, dest)?;
            // The unpacker keeps a directory's mode but not its mtime.
            set_dir_mtime(&dir, dest)?;
        }
    }
    // The host ends the stream with an empty frame: count what follows the
    // archive's end blocks too, then stop.
    input.drain().map_err(|e| e.to_string())?;
    Ok(input.total)
}

fn unpack(entry: &mut tar::Entry<'_, &mut InputReader>, dest: &Path) -> Result<(), String> {
    let name = entry.path_bytes();
    let name = String::from_utf8_lossy(&name).into_owned();
    match entry.unpack_in(dest) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("entry {name:?} escapes the destination")),
        Err(e) => Err(format!("entry {name:?}: {e}")),
    }
}

/// Gives the unpacked directory of `entry` the entry's mtime.
fn set_dir_mtime(entry: &tar::Entry<'_, &mut InputReader>, dest: &Path) -> Result<(), String> {
    let (Ok(path), Ok(mtime)) = (entry.path(), entry.header().mtime()) else {
        return Ok(());
    };
    let at = dest.join(&path);
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
    std::fs::File::open(&at)
        .and_then(|d| d.set_modified(time))
        .map_err(|e| {
            format!(
                "entry {:?}: setting its mtime: {e}",
                path.display().to_string()
            )
        })
}
