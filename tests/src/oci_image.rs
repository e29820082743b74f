//! Small real OCI images for tests, built from Debian's busybox-static: an
//! OCI image layout directory (one uncompressed layer) that `msb load`
//! takes. The public registries are not reachable from these machines, so
//! tests load such images under the names the seeds use (`alpine:latest`,
//! `python:3.12`) into their private `MSB_HOME`.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Applets linked to busybox in the image's `/bin`.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "df", "dd", "tail", "head", "id", "mkdir", "rm", "sleep", "seq",
    "wc", "stat", "touch", "chmod", "tty", "stty", "env", "pwd", "true", "false", "grep", "mount",
    "printf", "test", "[",
];

/// sha256 of `path` as hex, with `sha256sum` (coreutils).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum (coreutils)");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Stores `bytes` as a blob of the OCI layout at `layout`; returns
/// (digest, size).
pub fn put_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let tmp = layout.join("blob.tmp");
    fs::write(&tmp, bytes).unwrap();
    let hex = sha256_file(&tmp);
    fs::rename(&tmp, blobs.join(&hex)).unwrap();
    (format!("sha256:{hex}"), bytes.len())
}

/// Finishes the OCI layout at `layout`: its top-level `index` and the
/// `oci-layout` marker.
pub fn write_index(layout: &Path, index: &serde_json::Value) {
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

/// Writes an OCI layout at `dir` holding one image: busybox with its
/// applets in `/bin`, `/tmp` (1777), `/root`, `/etc/image-name` holding
/// `marker`, owned by root (as tar headers say; the loader records it).
pub fn busybox_layout(dir: &Path, marker: &str) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        tar.append_data(&mut h, path, data).unwrap();
    };
    for d in ["bin", "etc", "root", "usr", "usr/bin", "data", "app"] {
        add(d, tar::EntryType::Directory, 0o755, &[], None);
    }
    add("tmp", tar::EntryType::Directory, 0o1777, &[], None);
    let busybox = fs::read("/bin/busybox").expect("busybox-static (scripts/setup.sh)");
    add(
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        &busybox,
        None,
    );
    for a in APPLETS {
        add(
            &format!("bin/{a}"),
            tar::EntryType::Symlink,
            0o777,
            &[],
            Some("busybox"),
        );
    }
    add(
        "etc/image-name",
        tar::EntryType::Regular,
        0o644,
        format!("{marker}\n").as_bytes(),
        None,
    );
    let layer = tar.into_inner().unwrap();
    let (layer_digest, layer_size) = put_blob(dir, &layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    format!("IMAGE_MARKER={marker}")],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = put_blob(dir, config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put_blob(dir, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    });
    write_index(dir, &index);
}
