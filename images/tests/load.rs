//! `load` of archives made by a real tool (`skopeo copy` to
//! docker-archive and oci-archive), plain and gzip-compressed.

mod common;

use std::path::Path;
use std::process::Command;

use common::{oci_layout, ImageSpec, LayerTar};
use images::{LoadOptions, Store};

fn skopeo(from: String, to: String) {
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", &from, &to])
        .output()
        .expect("run skopeo (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn layout(dir: &Path) {
    let base = LayerTar::new()
        .dir("etc", 0o755, 0, 0)
        .file("etc/os", b"base", 0o644, 0, 0)
        .file("etc/gone", b"x", 0o644, 0, 0)
        .finish();
    let top = LayerTar::new()
        .file("etc/.wh.gone", b"", 0o644, 0, 0)
        .file("etc/app", b"app", 0o755, 0, 0)
        .finish();
    oci_layout(dir, &[("t", &ImageSpec::new(vec![base, top]))]);
}

fn check_root(store: &Store, img: &images::Image) {
    let root = store.root(img).unwrap();
    assert_eq!(std::fs::read(root.path.join("etc/os")).unwrap(), b"base");
    assert_eq!(std::fs::read(root.path.join("etc/app")).unwrap(), b"app");
    assert!(!root.path.join("etc/gone").exists());
    assert_eq!(root.config.cmd, vec!["/bin/sh".to_string()]);
}

#[test]
fn docker_archive_from_skopeo() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    layout(&dir);
    let archive = work.path().join("app.tar");
    skopeo(
        format!("oci:{}:t", dir.display()),
        format!("docker-archive:{}:team/app:1", archive.display()),
    );
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    let imgs = store.load(&archive, &LoadOptions::default()).unwrap();
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0].names, vec!["docker.io/team/app:1".to_string()]);
    check_root(&store, &imgs[0]);

    // The same archive gzipped loads to the same image.
    let gz = work.path().join("app.tar.gz");
    std::fs::write(&gz, common::gzip(&std::fs::read(&archive).unwrap())).unwrap();
    let again = store.load(&gz, &LoadOptions::default()).unwrap();
    assert_eq!(again[0].id, imgs[0].id);
    assert_eq!(store.list().unwrap().len(), 1);
    assert!(std::fs::read_dir(home.path().join("images/tmp"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn oci_archive_from_skopeo_with_a_name() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    layout(&dir);
    let archive = work.path().join("app.oci.tar");
    skopeo(
        format!("oci:{}:t", dir.display()),
        format!("oci-archive:{}:v2", archive.display()),
    );
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    // A bare tag and no name: the image is loaded untagged.
    let plain = store.load(&archive, &LoadOptions::default()).unwrap();
    assert!(plain[0].names.is_empty());
    let opts = LoadOptions {
        name: Some("team/oci".into()),
        platform: None,
    };
    let named = store.load(&archive, &opts).unwrap();
    assert_eq!(named[0].names, vec!["docker.io/team/oci:v2".to_string()]);
    assert_eq!(named[0].id, plain[0].id);
    assert_eq!(
        store.list().unwrap().len(),
        1,
        "naming it replaced the untagged entry"
    );
    check_root(&store, &named[0]);
    let by_id = store.inspect(&named[0].id.0.hex()[..12]).unwrap();
    assert_eq!(by_id.names, named[0].names);
}

#[test]
fn garbage_is_refused_clearly() {
    let work = tempfile::tempdir().unwrap();
    let junk = work.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar at all").unwrap();
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    let err = store.load(&junk, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("junk.tar"), "{err}");
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = store.load(&empty, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("neither an OCI layout"), "{err}");
}
