//! The format of an unpacked layer directory (`layers/sha256/<diff id>/`):
//! `tree/` holds the files, `whiteouts` and `opaque-dirs` the changes the
//! layer makes to the layers below it, as NUL-separated relative paths
//! (tar paths never hold NUL; an empty path is the layer root).

use std::path::Path;

use crate::error::{Error, Result};

/// The layer's files.
pub const TREE: &str = "tree";
/// Paths deleted from the lower layers (`.wh.NAME` entries).
pub const WHITEOUTS: &str = "whiteouts";
/// Directories whose lower content is hidden (`.wh..wh..opq` entries).
pub const OPAQUE: &str = "opaque-dirs";

/// A path as components.
pub type Components = Vec<Vec<u8>>;

/// What a layer changes below it, and how big it is.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    /// Paths the layer deletes.
    pub whiteouts: Vec<Components>,
    /// Directories the layer makes opaque.
    pub opaque: Vec<Components>,
    /// Entries unpacked.
    pub entries: u64,
    /// Bytes of file data unpacked.
    pub bytes: u64,
}

fn encode(paths: &[Components]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in paths {
        out.extend_from_slice(&p.join(&b'/'));
        out.push(0);
    }
    out
}

fn decode(bytes: &[u8]) -> Vec<Components> {
    let mut parts: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
    // Every path ends with a NUL: what follows the last one is empty.
    parts.pop();
    parts
        .into_iter()
        .map(|p| {
            p.split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        })
        .collect()
}

/// Writes the change lists into layer directory `dir`.
pub fn write_changes(dir: &Path, c: &Changes) -> Result<()> {
    for (name, list) in [(WHITEOUTS, &c.whiteouts), (OPAQUE, &c.opaque)] {
        let p = dir.join(name);
        std::fs::write(&p, encode(list)).map_err(|e| Error::io("write", &p, e))?;
    }
    Ok(())
}

/// Reads the change lists of layer directory `dir`.
pub fn read_changes(dir: &Path) -> Result<Changes> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read(&p).map_err(|e| Error::io("read", &p, e))
    };
    Ok(Changes {
        whiteouts: decode(&read(WHITEOUTS)?),
        opaque: decode(&read(OPAQUE)?),
        ..Changes::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let list = vec![
            vec![b"etc".to_vec(), b"x".to_vec()],
            vec![],
            vec![b"a b".to_vec()],
        ];
        assert_eq!(decode(&encode(&list)), list);
        assert!(decode(&encode(&[])).is_empty());
    }
}
