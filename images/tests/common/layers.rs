//! Layer tarballs written entry by entry, hostile ones included (raw
//! names the `tar` crate's own path setters would refuse).

use tar::{EntryType, Header};

/// A layer tarball under construction.
pub struct LayerTar {
    builder: tar::Builder<Vec<u8>>,
    pax: Vec<(String, Vec<u8>)>,
}

impl Default for LayerTar {
    fn default() -> Self {
        LayerTar {
            builder: tar::Builder::new(Vec::new()),
            pax: Vec::new(),
        }
    }
}

fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

/// Writes `name` straight into the header's name field (no checks).
fn raw_name(h: &mut Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    assert!(name.len() < field.len(), "raw names must fit 100 bytes");
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
}

fn raw_link(h: &mut Header, target: &[u8]) {
    let field = &mut h.as_old_mut().linkname;
    field.fill(0);
    field[..target.len()].copy_from_slice(target);
}

impl LayerTar {
    /// An empty layer.
    pub fn new() -> LayerTar {
        LayerTar::default()
    }

    /// Adds PAX records (`SCHILY.xattr.NAME` etc.) to the next entry.
    pub fn pax(mut self, key: &str, value: &[u8]) -> Self {
        self.pax.push((key.to_string(), value.to_vec()));
        self
    }

    fn append(&mut self, mut h: Header, name: &[u8], link: Option<&[u8]>, data: &[u8]) {
        if !self.pax.is_empty() {
            let mut body = Vec::new();
            for (k, v) in self.pax.drain(..) {
                let rest = format!(" {k}=").len() + v.len() + 1;
                let mut len = rest + 1;
                while len.to_string().len() + rest != len {
                    len += 1;
                }
                body.extend_from_slice(format!("{len} {k}=").as_bytes());
                body.extend_from_slice(&v);
                body.push(b'\n');
            }
            let mut ph = header(EntryType::XHeader, 0o644, 0, 0, body.len() as u64);
            raw_name(&mut ph, b"PaxHeaders/entry");
            ph.set_cksum();
            self.builder.append(&ph, &body[..]).unwrap();
        }
        raw_name(&mut h, name);
        if let Some(l) = link {
            raw_link(&mut h, l);
        }
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
    }

    /// A directory.
    pub fn dir(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        self.append(
            header(EntryType::Directory, mode, uid, gid, 0),
            path.as_bytes(),
            None,
            b"",
        );
        self
    }

    /// A regular file.
    pub fn file(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let h = header(EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.append(h, path.as_bytes(), None, data);
        self
    }

    /// A symlink.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let h = header(EntryType::Symlink, 0o777, 0, 0, 0);
        self.append(h, path.as_bytes(), Some(target.as_bytes()), b"");
        self
    }

    /// A hard link to `target`.
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let h = header(EntryType::Link, 0o644, 0, 0, 0);
        self.append(h, path.as_bytes(), Some(target.as_bytes()), b"");
        self
    }

    /// A device node or fifo.
    pub fn special(
        mut self,
        path: &str,
        kind: EntryType,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> Self {
        let mut h = header(kind, mode, 0, 0, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.append(h, path.as_bytes(), None, b"");
        self
    }

    /// Any entry with raw name and link bytes (hostile layers).
    pub fn raw(mut self, kind: EntryType, name: &[u8], link: Option<&[u8]>, data: &[u8]) -> Self {
        let h = header(kind, 0o644, 0, 0, data.len() as u64);
        self.append(h, name, link, data);
        self
    }

    /// The finished tar.
    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}
