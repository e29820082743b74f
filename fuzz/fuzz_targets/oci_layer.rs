//! The OCI layer unpacker (`images::unpack::ensure_layer_from`) on
//! arbitrary blobs (plain, gzip or zstd tar streams), into a fresh store in
//! a temporary directory. The diff ID given is the digest of the input, so
//! an uncompressed tar that unpacks is committed like a real layer.
//!
//! Oracles, besides panics and sanitizer reports: nothing may be created,
//! changed or removed outside the store's directory (a sentinel directory
//! next to it, reachable through `..` or an absolute symlink target, stays
//! as it was).

#![no_main]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use images::paths::Paths;
use images::Digest;
use libfuzzer_sys::fuzz_target;

fn listing(dir: &Path) -> Vec<(String, i64, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.mtime(),
                m.size(),
            )
        })
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::Builder::new()
        .prefix("msb-fuzz-oci-")
        .tempdir()
        .unwrap();
    let home = tmp.path().join("home");
    let sentinel = tmp.path().join("sentinel");
    std::fs::create_dir(&sentinel).unwrap();
    std::fs::write(sentinel.join("keep"), b"must stay").unwrap();
    let before = listing(&sentinel);
    let paths = Paths::new(&home);
    paths.create_dirs().unwrap();
    let digest = Digest::of(data);
    let mut blob: &[u8] = data;
    let _ = images::unpack::ensure_layer_from(&paths, &mut blob, &digest, &digest);
    assert_eq!(listing(&sentinel), before, "the sentinel directory changed");
    let mut top: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top.sort();
    assert_eq!(
        top,
        ["home", "sentinel"],
        "something appeared next to the store"
    );
});
