//! A minimal writer for the "newc" cpio format, the one the Linux kernel
//! unpacks as an initramfs. Used to build the small per-test archive that is
//! appended to the cached base initramfs.

/// One regular file in the archive.
#[derive(Debug, Clone)]
pub struct CpioFile {
    /// Path inside the archive, without a leading `/` (e.g. `test.sh`).
    pub path: String,
    /// Permission bits (e.g. `0o755`); the file type bits are added.
    pub mode: u32,
    /// Contents.
    pub data: Vec<u8>,
}

/// Encodes `files` (and the directories leading to them, mode 0755) as one
/// newc archive ending with the `TRAILER!!!` record.
pub fn newc_archive(files: &[CpioFile]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1u32;
    let mut dirs: Vec<String> = Vec::new();
    for file in files {
        let path = file.path.trim_start_matches('/');
        let mut prefix = String::new();
        let components: Vec<&str> = path.split('/').collect();
        for dir in &components[..components.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(dir);
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
                push_entry(&mut out, ino, &prefix, 0o040_000 | 0o755, &[]);
                ino += 1;
            }
        }
        push_entry(
            &mut out,
            ino,
            path,
            0o100_000 | (file.mode & 0o7777),
            &file.data,
        );
        ino += 1;
    }
    push_entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

fn push_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
    let name_len = name.len() + 1;
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(data.len()).expect("cpio member larger than 4 GiB"),
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        u32::try_from(name_len).expect("cpio name too long"),
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() & 3 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_layout() {
        let a = newc_archive(&[CpioFile {
            path: "lib/x.sh".into(),
            mode: 0o644,
            data: b"abc".to_vec(),
        }]);
        assert_eq!(a.len() % 4, 0);
        let text = String::from_utf8_lossy(&a);
        assert!(text.starts_with("070701"));
        // The directory comes before the file, the trailer last.
        let dir = text.find("lib\0").unwrap();
        let file = text.find("lib/x.sh\0").unwrap();
        let trailer = text.find("TRAILER!!!\0").unwrap();
        assert!(dir < file && file < trailer);
        // Mode of the file: regular, 0644.
        assert!(text.contains(&format!("{:08x}", 0o100_644)));
    }
}
