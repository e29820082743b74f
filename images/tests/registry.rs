//! Pulls from a real registry (Debian's `docker-registry` on a loopback
//! port; images built here and pushed with `skopeo`): by tag and digest,
//! platform choice from an index, corrupted blobs (also one whose tar is
//! intact: layers unpack while they download), shared layers, resume, rm
//! while in use, prune.

mod common;

use std::sync::{Arc, Mutex};

use common::{oci_layout, oci_multi_platform, rt, store_listing, ImageSpec, LayerTar, Registry};
use images::{Error, Event, Platform, PullOptions, Store};

fn layer(name: &str, body: &[u8]) -> Vec<u8> {
    LayerTar::new()
        .dir("etc", 0o755, 0, 0)
        .file(&format!("etc/{name}"), body, 0o644, 0, 0)
        .finish()
}

fn base() -> Vec<u8> {
    LayerTar::new()
        .dir("./", 0o755, 0, 0)
        .dir("bin", 0o755, 0, 0)
        .file("bin/tool", &vec![7u8; 300_000], 0o755, 0, 0)
        .file("bin/su", b"su", 0o4755, 0, 0)
        .finish()
}

/// Pushes a two-layer image as `repo:tag`; returns the layout dir.
fn push(reg: &Registry, repo_tag: &str, top: Vec<u8>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    oci_layout(dir.path(), &[("t", &ImageSpec::new(vec![base(), top]))]);
    reg.push(dir.path(), "t", repo_tag, false);
    dir
}

#[test]
fn pull_by_tag_then_by_digest() {
    let reg = Registry::start();
    push(&reg, "team/app:1", layer("version", b"1"));
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    let rt = rt();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let opts = PullOptions {
        progress: Arc::new(move |e: &Event| sink.lock().unwrap().push(format!("{e:?}"))),
        ..PullOptions::default()
    };
    let img = rt
        .block_on(store.pull(&reg.reference("team/app:1"), &opts))
        .unwrap();
    assert_eq!(img.names, vec![reg.reference("team/app:1")]);
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.platform, "linux/amd64");
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| e.starts_with("Downloading")));
    let root = store.root(&img).unwrap();
    assert_eq!(std::fs::read(root.path.join("etc/version")).unwrap(), b"1");
    assert_eq!(
        common::record(&root.path.join("bin/su")),
        Some((0, 0, libc::S_IFREG | 0o4755, 0))
    );

    let by_digest = format!("{}@{}", reg.reference("team/app"), img.manifest_digest);
    let again = rt
        .block_on(store.pull(&by_digest, &PullOptions::default()))
        .unwrap();
    assert_eq!(again.id, img.id);
    assert_eq!(again.names.len(), 2, "{:?}", again.names);
    assert_eq!(store.inspect(&by_digest).unwrap().id, img.id);
    assert_eq!(store.inspect(&img.id.0.hex()[..8]).unwrap().id, img.id);
    assert_eq!(store.list().unwrap().len(), 1);

    let wrong = format!("{}@sha256:{}", reg.reference("team/app"), "0".repeat(64));
    let err = rt
        .block_on(store.pull(&wrong, &PullOptions::default()))
        .unwrap_err();
    assert!(matches!(err, Error::Registry { .. }), "{err}");
    let err = rt
        .block_on(store.pull(&reg.reference("team/missing:1"), &PullOptions::default()))
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}

#[test]
fn an_index_gives_the_wanted_platform() {
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut amd = ImageSpec::new(vec![layer("arch", b"amd64")]);
    amd.arch = "amd64".into();
    let mut arm = ImageSpec::new(vec![layer("arch", b"arm64")]);
    arm.arch = "arm64".into();
    let index_digest = oci_multi_platform(dir.path(), "multi", &[&arm, &amd]);
    reg.push(dir.path(), "multi", "multi/img:1", true);
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    let rt = rt();
    let reference = reg.reference("multi/img:1");
    let img = rt
        .block_on(store.pull(&reference, &PullOptions::default()))
        .unwrap();
    assert_eq!(img.platform, "linux/amd64");
    assert_eq!(img.index_digest.as_ref(), Some(&index_digest));
    let root = store.root(&img).unwrap();
    assert_eq!(std::fs::read(root.path.join("etc/arch")).unwrap(), b"amd64");

    let arm_opts = PullOptions {
        platform: Some(Platform::parse("linux/arm64").unwrap()),
        ..PullOptions::default()
    };
    let arm_img = rt.block_on(store.pull(&reference, &arm_opts)).unwrap();
    assert_eq!(arm_img.platform, "linux/arm64");
    let root = store.root(&arm_img).unwrap();
    assert_eq!(std::fs::read(root.path.join("etc/arch")).unwrap(), b"arm64");
    // The tag now names the arm64 image; the amd64 one is garbage.
    assert_eq!(store.list().unwrap().len(), 1);
    let freed = store.prune(false, |_| false).unwrap();
    assert!(
        freed.blobs >= 3 && freed.layers == 1 && freed.roots == 1,
        "{freed:?}"
    );

    let s390 = PullOptions {
        platform: Some(Platform::parse("linux/s390x").unwrap()),
        ..PullOptions::default()
    };
    let err = rt.block_on(store.pull(&reference, &s390)).unwrap_err();
    match err {
        Error::NoPlatform { available, .. } => {
            assert!(available.contains("linux/arm64"), "{available}")
        }
        other => panic!("{other}"),
    }
}

/// The digest of layer `i` of the image in layout `dir`.
fn layer_digest(dir: &std::path::Path, i: usize) -> String {
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mdigest = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("blobs/sha256").join(&mdigest[7..])).unwrap(),
    )
    .unwrap();
    manifest["layers"][i]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_blob_that_does_not_match_is_never_unpacked_into_the_store() {
    // Layers unpack while they download: a blob whose tar is intact but
    // whose bytes are not the ones the manifest names (here the gzip
    // header's mtime, which no checksum inside gzip covers) must not leave
    // its layer behind, although its diff ID matches.
    let reg = Registry::start();
    let dir = push(&reg, "swap/img:1", layer("x", b"x"));
    let digest = layer_digest(dir.path(), 0);
    let data = reg.blob_file(&digest[7..]);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[4] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    let err = rt()
        .block_on(store.pull(&reg.reference("swap/img:1"), &PullOptions::default()))
        .unwrap_err();
    match &err {
        Error::DigestMismatch { expected, .. } => assert_eq!(expected, &digest),
        other => panic!("want a digest mismatch, got {other}"),
    }
    let diff_id = images::Digest::of(&base());
    assert!(
        !store.paths().layer(&diff_id).exists(),
        "the layer of an unverified blob was committed"
    );
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_corrupted_blob_fails_the_pull_and_stores_nothing() {
    let reg = Registry::start();
    let dir = push(&reg, "bad/img:1", layer("x", b"x"));
    // Flip bytes of the base layer blob inside the registry's storage.
    let layer_digest = layer_digest(dir.path(), 0);
    let data = reg.blob_file(&layer_digest[7..]);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    let before = store_listing(home.path());
    let err = rt()
        .block_on(store.pull(&reg.reference("bad/img:1"), &PullOptions::default()))
        .unwrap_err();
    match &err {
        Error::DigestMismatch { expected, .. } => assert_eq!(expected, &layer_digest),
        other => panic!("want a digest mismatch, got {other}"),
    }
    let after = store_listing(home.path());
    let new: Vec<_> = after.difference(&before).collect();
    // The config and the good layer may be stored (verified, reusable),
    // or the good layer's interrupted download kept for a resume; the bad
    // blob, its partial file, a staging tree, layer or index entry not.
    for p in &new {
        let s = p.to_string_lossy();
        assert!(!s.contains(&layer_digest[7..]), "bad blob left: {s}");
        let resumable = s.starts_with("tmp/") && s.ends_with(".partial");
        assert!(
            !s.starts_with("tmp/") || resumable,
            "temporary file left: {s}"
        );
    }
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn shared_layers_are_fetched_once_and_downloads_resume() {
    let reg = Registry::start();
    push(&reg, "shared/a:1", layer("a", b"a"));
    push(&reg, "shared/b:1", layer("b", b"b"));
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    let rt = rt();
    let a = rt
        .block_on(store.pull(&reg.reference("shared/a:1"), &PullOptions::default()))
        .unwrap();

    // An interrupted download of b's top layer: half the blob is there.
    let dir = tempfile::tempdir().unwrap();
    oci_layout(
        dir.path(),
        &[("t", &ImageSpec::new(vec![base(), layer("b", b"b")]))],
    );
    let top = std::fs::read_dir(dir.path().join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| common::gzip(&layer("b", b"b")) == std::fs::read(p).unwrap())
        .unwrap();
    let bytes = std::fs::read(&top).unwrap();
    let partial = home.path().join("images/tmp").join(format!(
        "{}.partial",
        top.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&partial, &bytes[..bytes.len() / 2]).unwrap();

    let present = Arc::new(Mutex::new(Vec::new()));
    let sink = present.clone();
    let opts = PullOptions {
        progress: Arc::new(move |e: &Event| {
            if let Event::LayerPresent { digest } = e {
                sink.lock().unwrap().push(digest.clone());
            }
        }),
        ..PullOptions::default()
    };
    let b = rt
        .block_on(store.pull(&reg.reference("shared/b:1"), &opts))
        .unwrap();
    assert_eq!(*present.lock().unwrap(), vec![a.layers[0].digest.clone()]);
    assert!(!partial.exists(), "the partial download was completed");
    assert_eq!(
        std::fs::read_dir(home.path().join("images/layers/sha256"))
            .unwrap()
            .count(),
        3
    );
    let (ra, rb) = (store.root(&a).unwrap(), store.root(&b).unwrap());
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &std::path::Path| std::fs::metadata(p.join("bin/tool")).unwrap().ino();
    assert_eq!(ino(&ra.path), ino(&rb.path));
    assert_eq!(std::fs::read(rb.path.join("etc/b")).unwrap(), b"b");
}

#[test]
fn rm_is_refused_while_in_use_and_prune_collects() {
    let reg = Registry::start();
    push(&reg, "rm/img:1", layer("v", b"1"));
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    let rt = rt();
    let reference = reg.reference("rm/img:1");
    let img = rt
        .block_on(store.pull(&reference, &PullOptions::default()))
        .unwrap();
    store.root(&img).unwrap();
    let err = store.remove(&reference, |id| id == &img.id).unwrap_err();
    assert!(matches!(err, Error::InUse(_)), "{err}");
    assert!(store.inspect(&reference).is_ok());

    // A second name: removing one name only untags.
    let tagged = store.tag(&img, "local/alias:2").unwrap();
    assert_eq!(tagged.names.len(), 2);
    let r = store.remove("local/alias:2", |_| true).unwrap();
    assert!(!r.deleted);

    // The tag moves to a new image: the old one is garbage for prune.
    push(&reg, "rm/img:1", layer("v", b"2"));
    let new = rt
        .block_on(store.pull(&reference, &PullOptions::default()))
        .unwrap();
    assert_ne!(new.id, img.id);
    let report = store.prune(false, |_| false).unwrap();
    assert_eq!((report.layers, report.roots), (1, 1), "{report:?}");
    assert!(!home
        .path()
        .join("images/roots")
        .join(img.id.0.hex())
        .exists());

    let removed = store.remove(&reference, |_| false).unwrap();
    assert!(removed.deleted);
    assert!(matches!(store.inspect(&reference), Err(Error::NotFound(_))));
    for dir in ["blobs/sha256", "layers/sha256", "roots", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(home.path().join("images").join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "left behind in {dir}: {left:?}");
    }
    assert_eq!(store.prune(true, |_| false).unwrap().images.len(), 0);
}
