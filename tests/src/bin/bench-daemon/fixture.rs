//! The shared directory every figure runs on, laid out once per run and
//! served by each fresh daemon in turn (so all of them see the same files,
//! warm in the host page cache).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A 4 KiB file whose attributes `getattr` asks for.
pub const SMALL: &str = "small";
/// A directory of [`NAMES`] empty files, for `lookup` and `readdirplus`.
pub const NAMES_DIR: &str = "names";
/// Entries in [`NAMES_DIR`].
pub const NAMES: usize = 1000;
/// The file random and sequential reads read.
pub const READ_FILE: &str = "data";
/// The file random and sequential writes write.
pub const WRITE_FILE: &str = "wdata";
/// Size of [`READ_FILE`] and [`WRITE_FILE`].
pub const DATA_BYTES: u64 = 64 << 20;
/// Where `create+unlink` creates and removes its files.
pub const SCRATCH_DIR: &str = "scratch";

/// Name of entry `i` of [`NAMES_DIR`].
pub fn name_of(i: usize) -> String {
    format!("f{i:04}")
}

/// Lays out the share under `root` (created if missing).
pub fn create(root: &Path) -> io::Result<PathBuf> {
    let share = root.join("share");
    fs::create_dir_all(share.join(NAMES_DIR))?;
    fs::create_dir_all(share.join(SCRATCH_DIR))?;
    fs::write(share.join(SMALL), vec![7u8; 4096])?;
    for i in 0..NAMES {
        File::create(share.join(NAMES_DIR).join(name_of(i)))?;
    }
    for name in [READ_FILE, WRITE_FILE] {
        let mut f = File::create(share.join(name))?;
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        for _ in 0..DATA_BYTES >> 20 {
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
    }
    Ok(share)
}
