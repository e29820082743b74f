//! The source tree the guest unpacks: a deterministic tree of small files
//! (sizes like a source checkout's: mostly a few KiB, some larger), packed
//! with the host's `tar` into an archive the guest's busybox extracts.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

/// Lays out `files` files in directories of about 25 under `dir` (two
/// levels), with text-like contents; returns the total size in bytes.
pub fn generate(dir: &Path, files: usize) -> io::Result<u64> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words = [
        "fn ",
        "let ",
        "match ",
        "impl ",
        "struct ",
        "return ",
        "self",
        "{\n",
        "}\n",
        "(",
        ")",
        ";\n",
        "io::Result",
        "Vec<u8>",
        "usize",
        "// ",
        "pub ",
        "mod ",
        "use ",
        "=> ",
    ];
    let mut total = 0u64;
    for i in 0..files {
        let sub = dir
            .join(format!("d{:02}", i / 500))
            .join(format!("m{:03}", (i / 25) % 20));
        fs::create_dir_all(&sub)?;
        // Mostly 0.5-8 KiB, one file in 16 up to 64 KiB.
        let r = next();
        let size = if r % 16 == 0 {
            8192 + (r >> 8) % (56 * 1024)
        } else {
            512 + (r >> 8) % 7680
        };
        let mut text = Vec::with_capacity(size as usize + 16);
        while (text.len() as u64) < size {
            text.extend_from_slice(words[(next() % words.len() as u64) as usize].as_bytes());
        }
        let mut f = fs::File::create(sub.join(format!("f{i:05}.rs")))?;
        f.write_all(&text)?;
        total += text.len() as u64;
    }
    Ok(total)
}

/// Packs the contents of `dir` into the tar archive `out`.
pub fn pack(dir: &Path, out: &Path) -> io::Result<()> {
    let status = Command::new("tar")
        .arg("-cf")
        .arg(out)
        .arg("--owner=0")
        .arg("--group=0")
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("tar -cf exited with {status}")))
    }
}
