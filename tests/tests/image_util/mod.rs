//! Helpers of the `image_*` tests: OCI image layouts built from tar layers
//! written here (busybox-static for the programs), any image config; the
//! Debian + python3 image built once by `scripts/lib/py-image.sh` (cached
//! under `target/`); a real registry (Debian's `docker-registry`) with
//! optional htpasswd or token auth, pushed to with `skopeo`.

#![allow(dead_code)]

/// The registry helper the image-store tests use (one copy of it).
#[path = "../../../images/tests/common/registry.rs"]
pub mod registry;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// busybox applets linked in `/bin` of [`Layer::busybox`].
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "id", "pwd", "env", "stat", "touch", "mkdir", "true", "su",
];

/// One uncompressed layer tarball being written.
pub struct Layer {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer::new()
    }
}

impl Layer {
    /// An empty layer.
    pub fn new() -> Layer {
        Layer {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    fn add(
        mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        owner: (u64, u64),
        data: &[u8],
        link: Option<&str>,
    ) -> Layer {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        self.tar.append_data(&mut h, path, data).unwrap();
        self
    }

    /// A directory owned by root.
    pub fn dir(self, path: &str, mode: u32) -> Layer {
        self.add(path, tar::EntryType::Directory, mode, (0, 0), &[], None)
    }

    /// A directory with an owner.
    pub fn dir_owned(self, path: &str, mode: u32, uid: u64, gid: u64) -> Layer {
        self.add(path, tar::EntryType::Directory, mode, (uid, gid), &[], None)
    }

    /// A regular file owned by root.
    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> Layer {
        self.add(path, tar::EntryType::Regular, mode, (0, 0), data, None)
    }

    /// A symlink.
    pub fn symlink(self, path: &str, target: &str) -> Layer {
        self.add(
            path,
            tar::EntryType::Symlink,
            0o777,
            (0, 0),
            &[],
            Some(target),
        )
    }

    /// A root with busybox-static (`/bin/busybox`, applets as symlinks),
    /// `/etc`, `/tmp` (1777), `/root`, `/usr/bin`, all owned by root.
    pub fn busybox() -> Layer {
        let busybox = fs::read("/bin/busybox").expect("busybox-static (scripts/setup.sh)");
        let mut l = Layer::new();
        for d in ["bin", "etc", "root", "usr", "usr/bin"] {
            l = l.dir(d, 0o755);
        }
        l = l.dir("tmp", 0o1777).file("bin/busybox", 0o755, &busybox);
        for a in APPLETS {
            l = l.symlink(&format!("bin/{a}"), "busybox");
        }
        l
    }

    /// The tarball.
    pub fn finish(self) -> Vec<u8> {
        self.tar.into_inner().unwrap()
    }
}

use msb_tests::oci_image::{put_blob, write_index};

/// Writes an OCI layout at `layout` with one image tagged `tag`: the
/// uncompressed `layers` (bottom first) and `config` as the config's
/// `config` object (`Env`, `Entrypoint`, `Cmd`, `User`, `WorkingDir`).
pub fn write_layout(layout: &Path, tag: &str, layers: &[Vec<u8>], config: Value) {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        let (d, size) = put_blob(layout, l);
        diff_ids.push(d.clone());
        descs.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                          "digest": d, "size": size}),
        );
    }
    let config = json!({"architecture": "amd64", "os": "linux", "config": config,
                        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (cd, cs) = put_blob(layout, config.to_string().as_bytes());
    let manifest = json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": descs});
    let (md, ms) = put_blob(layout, manifest.to_string().as_bytes());
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    write_index(layout, &index);
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Debian bookworm + python3-minimal image (`scripts/lib/py-image.sh`,
/// built once and cached under `target/`): the OCI layout directory, its
/// tag is `py`.
pub fn python_layout() -> PathBuf {
    let script = workspace().join("scripts/lib/py-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("layout")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed (needs mmdebstrap and a Debian mirror; scripts/setup.sh):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Whether `tool` is on `PATH`; panics naming the package otherwise.
pub fn need(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} not installed: run scripts/setup.sh (Debian package {package})"
    );
}
