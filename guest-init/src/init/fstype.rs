//! Filesystem type detection from a block device's superblock.

/// The fstypes `msb-init` recognises, with where their magic lives.
const SIGNATURES: &[(&str, u64, &[u8])] = &[
    // ext2/3/4 share one magic; the ext4 driver mounts all three.
    ("ext4", 1024 + 56, &[0x53, 0xEF]),
    ("xfs", 0, b"XFSB"),
    ("btrfs", 65536 + 64, b"_BHRfS_M"),
    ("vfat", 82, b"FAT32   "),
    ("vfat", 54, b"FAT16   "),
    ("vfat", 54, b"FAT12   "),
    ("iso9660", 32769, b"CD001"),
    ("squashfs", 0, b"hsqs"),
];

/// How many leading bytes of a device [`detect`] needs.
pub const PROBE_LEN: usize = 65536 + 64 + 8;

/// Names the filesystem whose superblock starts `head` (the first
/// [`PROBE_LEN`] bytes of a device, or fewer for a small one).
pub fn detect(head: &[u8]) -> Option<&'static str> {
    SIGNATURES.iter().find_map(|(name, off, magic)| {
        let off = *off as usize;
        let field = head.get(off..off + magic.len())?;
        (field == *magic).then_some(*name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_each_magic_and_nothing_else() {
        let mut img = vec![0u8; PROBE_LEN];
        assert_eq!(detect(&img), None);
        img[1080] = 0x53;
        img[1081] = 0xEF;
        assert_eq!(detect(&img), Some("ext4"));
        let mut img = vec![0u8; PROBE_LEN];
        img[..4].copy_from_slice(b"XFSB");
        assert_eq!(detect(&img), Some("xfs"));
        let mut img = vec![0u8; PROBE_LEN];
        img[65600..65608].copy_from_slice(b"_BHRfS_M");
        assert_eq!(detect(&img), Some("btrfs"));
        let mut img = vec![0u8; 512];
        img[82..90].copy_from_slice(b"FAT32   ");
        assert_eq!(detect(&img), Some("vfat"));
        assert_eq!(detect(&img[..10]), None, "short heads are not misread");
    }
}
