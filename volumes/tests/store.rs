//! The volume store through its public API: create/get/list/remove, disk
//! volumes, labels, leases (live and stale), provisioning modes, and
//! recovery from every state a crash can leave.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::params;
use volumes::{CreateOptions, Error, LeaseRequest, Mode, Provision, Store, VolumeKind, DISK_IMAGE};

fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path().join("home")).unwrap();
    (d, s)
}

fn dir_opts() -> CreateOptions {
    CreateOptions::default()
}

fn disk_opts(size: u32) -> CreateOptions {
    CreateOptions {
        kind: Some(VolumeKind::Disk),
        size_mib: Some(size),
        ..Default::default()
    }
}

fn req(target: &str, readonly: bool) -> LeaseRequest {
    LeaseRequest {
        holder: "test".into(),
        target: Some(target.into()),
        readonly,
    }
}

/// The invariant after any crash and recovery: every volume row is ready
/// and has its directory, every entry under volumes/ (but the dot dirs) has
/// a row, and the work dirs are empty.
fn assert_consistent(home: &Path) {
    let conn = rusqlite::Connection::open(home.join("db/msb.db")).unwrap();
    let mut st = conn.prepare("SELECT name, state FROM volumes").unwrap();
    let rows: BTreeMap<String, String> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (name, state) in &rows {
        assert_eq!(state, "ready", "volume {name}");
        assert!(
            home.join("volumes").join(name).is_dir(),
            "{name} has no dir"
        );
    }
    for e in std::fs::read_dir(home.join("volumes")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') {
            assert!(rows.contains_key(&name), "directory {name} has no record");
        }
    }
    for dot in [".staging", ".trash"] {
        let left: Vec<_> = std::fs::read_dir(home.join("volumes").join(dot))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{dot} not empty: {left:?}");
    }
}

#[test]
fn create_get_list_remove_a_dir_volume() {
    let (_d, mut s) = store();
    let mut opts = dir_opts();
    opts.quota_mib = Some(64);
    opts.labels.insert("env".into(), "prod".into());
    let h = s.create("data", &opts).unwrap();
    assert_eq!(h.name, "data");
    assert_eq!(h.path, s.home().join("volumes/data"));
    assert!(h.path.is_dir());
    assert_eq!(h.kind, VolumeKind::Dir);
    assert_eq!(h.quota_mib, Some(64));
    assert_eq!(h.capacity_bytes, None);
    assert_eq!((h.disk_format.clone(), h.disk_fstype.clone()), (None, None));
    assert_eq!(h.labels.get("env").map(String::as_str), Some("prod"));
    assert!((volumes::rfc3339(h.created_at)).starts_with("20"));
    assert!(h.in_use_by.is_empty() && !h.in_use());
    assert_eq!(h.used_bytes, 0);
    std::fs::write(h.path.join("f"), vec![0u8; 1234]).unwrap();
    assert_eq!(s.get("data").unwrap().used_bytes, 1234);
    assert!(matches!(
        s.create("data", &dir_opts()),
        Err(Error::AlreadyExists(_))
    ));
    s.create("other", &dir_opts()).unwrap();
    let names: Vec<String> = s.list().unwrap().into_iter().map(|h| h.name).collect();
    assert_eq!(names, ["data", "other"]);
    let filter = [("env".to_string(), "prod".to_string())];
    let prod: Vec<String> = s
        .list()
        .unwrap()
        .into_iter()
        .filter(|h| h.has_labels(&filter))
        .map(|h| h.name)
        .collect();
    assert_eq!(prod, ["data"]);
    s.remove("data").unwrap();
    assert!(!h.path.exists());
    assert!(matches!(s.get("data"), Err(Error::NotFound(_))));
    assert!(matches!(s.remove("data"), Err(Error::NotFound(_))));
    // The name is free again.
    s.create("data", &dir_opts()).unwrap();
    assert_consistent(s.home());
}

#[test]
fn bad_names_and_options_are_usage_errors_naming_them() {
    let (_d, mut s) = store();
    for bad in ["", "..", "a/b", "a\0b", "-x", ".hidden", &"n".repeat(64)] {
        let e = s.create(bad, &dir_opts()).unwrap_err();
        assert!(
            matches!(e, Error::InvalidName { .. }) && e.is_usage(),
            "{bad:?}: {e}"
        );
        assert!(s.get(bad).unwrap_err().is_usage());
    }
    let e = s.create(
        "d",
        &CreateOptions {
            kind: Some(VolumeKind::Disk),
            ..Default::default()
        },
    );
    assert!(e.unwrap_err().to_string().contains("needs a size"));
    let mut q = disk_opts(16);
    q.quota_mib = Some(4);
    assert!(s.create("d", &q).unwrap_err().is_usage());
    assert!(s.list().unwrap().is_empty(), "nothing was created");
}

#[test]
fn disk_volumes_are_formatted_ext4_images() {
    let (_d, mut s) = store();
    let h = s.create("blk", &disk_opts(16)).unwrap();
    let img = h.disk_image().unwrap();
    assert_eq!(img, h.path.join(DISK_IMAGE));
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 16 << 20);
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(&bytes[1080..1082], &[0x53, 0xef], "ext4 superblock magic");
    assert_eq!(h.capacity_bytes, Some(16 << 20));
    assert_eq!(h.disk_format.as_deref(), Some("raw"));
    assert_eq!(h.disk_fstype.as_deref(), Some("ext4"));
    assert_eq!(h.quota_mib, None);
    assert!(
        h.used_bytes > 0 && h.used_bytes < 16 << 20,
        "{}",
        h.used_bytes
    );
    assert!(s.fs("blk").unwrap_err().to_string().contains("disk volume"));
    s.remove("blk").unwrap();
    assert!(!h.path.exists());
}

#[test]
fn leases_block_removal_only_while_their_launcher_lives() {
    let (_d, mut s) = store();
    s.create("v", &dir_opts()).unwrap();
    let lease = s.lease("v", &req("/data", false)).unwrap();
    let h = s.get("v").unwrap();
    assert!(h.in_use());
    assert_eq!(h.in_use_by[0].target.as_deref(), Some("/data"));
    assert_eq!(h.in_use_by[0].pid, std::process::id());
    let e = s.remove("v").unwrap_err();
    assert!(matches!(e, Error::InUse { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{e}"
    );
    // Dir volumes take any number of leases.
    let second = s.lease("v", &req("/other", true)).unwrap();
    drop(lease);
    assert!(s.remove("v").is_err());
    second.release().unwrap();
    assert!(!s.get("v").unwrap().in_use());
    // A lease left by a launcher that is gone (same pid, other start time).
    let conn = rusqlite::Connection::open(s.db_path()).unwrap();
    conn.execute(
        "INSERT INTO leases (volume, pid, start_time, holder, readonly, acquired_at) \
         VALUES ('v', ?1, 1, 'crashed msb run', 0, 0)",
        params![std::process::id()],
    )
    .unwrap();
    let h = s.get("v").unwrap();
    assert_eq!(h.in_use_by.len(), 1);
    assert!(!h.in_use_by[0].live && !h.in_use());
    s.remove("v").unwrap();
    assert!(matches!(
        s.lease("v", &req("/x", false)),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn disk_volumes_take_one_writer_or_many_readers() {
    let (_d, mut s) = store();
    s.create("blk", &disk_opts(8)).unwrap();
    let w = s.lease("blk", &req("/a", false)).unwrap();
    let e = s.lease("blk", &req("/b", true)).unwrap_err();
    assert!(e.to_string().contains("one VM at a time"), "{e}");
    assert!(s.lease("blk", &req("/b", false)).is_err());
    drop(w);
    let r1 = s.lease("blk", &req("/a", true)).unwrap();
    let _r2 = s.lease("blk", &req("/b", true)).unwrap();
    assert!(s.lease("blk", &req("/c", false)).is_err());
    drop(r1);
}

#[test]
fn provisioning_modes() {
    let (_d, mut s) = store();
    let p = |mode, kind, size_mib, quota_mib| Provision {
        mode,
        kind,
        size_mib,
        quota_mib,
    };
    assert!(matches!(
        s.provision("v", &p(Mode::Existing, None, None, None)),
        Err(Error::NotFound(_))
    ));
    let h = s
        .provision("v", &p(Mode::Create, None, None, Some(32)))
        .unwrap();
    assert_eq!(h.quota_mib, Some(32));
    assert!(matches!(
        s.provision("v", &p(Mode::Create, None, None, Some(32))),
        Err(Error::AlreadyExists(_))
    ));
    // ensure-exists reuses a matching volume…
    s.provision(
        "v",
        &p(Mode::EnsureExists, Some(VolumeKind::Dir), None, Some(32)),
    )
    .unwrap();
    s.provision("v", &p(Mode::EnsureExists, None, None, None))
        .unwrap();
    // …and refuses a different one, changing nothing.
    for (kind, size, quota, needle) in [
        (Some(VolumeKind::Disk), Some(8), None, "kind disk"),
        (None, None, Some(64), "quota 64 MiB"),
        (None, None, Some(0), "no quota"),
        (None, Some(8), None, "size 8 MiB"),
    ] {
        let e = s
            .provision("v", &p(Mode::EnsureExists, kind, size, quota))
            .unwrap_err();
        assert!(matches!(e, Error::Mismatch { .. }), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
    assert!(s
        .provision("v", &p(Mode::Existing, None, None, Some(1)))
        .is_err());
    assert_eq!(
        s.get("v").unwrap().quota_mib,
        Some(32),
        "metadata unchanged"
    );
    // ensure-exists creates a missing one, disk included.
    let d = s
        .provision(
            "d",
            &p(Mode::EnsureExists, Some(VolumeKind::Disk), Some(8), None),
        )
        .unwrap();
    assert_eq!(d.capacity_bytes, Some(8 << 20));
    s.provision(
        "d",
        &p(Mode::EnsureExists, Some(VolumeKind::Disk), None, None),
    )
    .unwrap();
    assert!("sometimes".parse::<Mode>().unwrap_err().is_usage());
}

#[test]
fn concurrent_creates_in_threads_have_one_winner() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    Store::open(&home).unwrap();
    for round in 0..10 {
        let name = format!("race{round}");
        let results: Vec<Result<_, Error>> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let (home, name) = (home.clone(), name.clone());
                    sc.spawn(move || Store::open(home)?.create(&name, &CreateOptions::default()))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(matches!(r, Error::AlreadyExists(_)), "{r}");
        }
    }
    assert_consistent(&home);
}

/// Writes a row as a crashed process would have left it.
fn crashed_row(home: &Path, name: &str, state: &str, work: &Path) {
    let conn = rusqlite::Connection::open(home.join("db/msb.db")).unwrap();
    conn.execute(
        "INSERT OR REPLACE INTO volumes (name, kind, labels, created_at, state, op_pid, \
         op_start, work_path) VALUES (?1, 'dir', '{}', 0, ?2, ?3, 1, ?4)",
        params![name, state, std::process::id(), work.to_string_lossy()],
    )
    .unwrap();
}

#[test]
fn recovery_undoes_or_finishes_crashed_operations() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    let mut s = Store::open(&home).unwrap();
    let vols = home.join("volumes");
    // Killed after reserving, before the rename: staging exists.
    let st1 = vols.join(".staging/a.1");
    std::fs::create_dir(&st1).unwrap();
    crashed_row(&home, "a", "creating", &st1);
    // Killed after the rename, before publishing: the dir is in place.
    std::fs::create_dir(vols.join("b")).unwrap();
    crashed_row(&home, "b", "creating", &vols.join(".staging/b.1"));
    // Killed while removing, before the rename.
    s.create("c", &dir_opts()).unwrap();
    crashed_row(&home, "c", "removing", &vols.join(".trash/c.1"));
    // Killed inside the first transaction: a staging dir no row names.
    std::fs::create_dir(vols.join(".staging/d.9")).unwrap();
    // A creating row naming a live process (this one) is left alone.
    let st2 = vols.join(".staging/e.1");
    std::fs::create_dir(&st2).unwrap();
    let me = volumes::ProcessId::current();
    rusqlite::Connection::open(home.join("db/msb.db"))
        .unwrap()
        .execute(
            "INSERT INTO volumes (name, kind, labels, created_at, state, op_pid, op_start, \
             work_path) VALUES ('e', 'dir', '{}', 0, 'creating', ?1, ?2, ?3)",
            params![me.pid, me.start_time as i64, st2.to_string_lossy()],
        )
        .unwrap();
    // Invisible meanwhile.
    assert!(s.list().unwrap().is_empty());
    assert!(matches!(
        s.create("e", &dir_opts()),
        Err(Error::AlreadyExists(_))
    ));
    let mut s = Store::open(&home).unwrap();
    let r = s.recover().unwrap();
    assert!(r.is_empty(), "the first open recovered everything: {r:?}");
    assert!(st2.is_dir(), "a live create is not touched");
    let conn = rusqlite::Connection::open(home.join("db/msb.db")).unwrap();
    conn.execute("DELETE FROM volumes WHERE name = 'e'", [])
        .unwrap();
    std::fs::remove_dir(&st2).unwrap();
    assert_consistent(&home);
    for n in ["a", "b", "c", "d"] {
        s.create(n, &dir_opts()).unwrap();
    }
    assert_consistent(&home);
}

#[test]
fn a_foreign_directory_is_never_taken_over() {
    let (_d, mut s) = store();
    let foreign = s.home().join("volumes/mine");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("precious"), "data").unwrap();
    let e = s.create("mine", &dir_opts()).unwrap_err();
    assert!(e.to_string().contains("not a registered volume"), "{e}");
    Store::open(s.home()).unwrap();
    assert!(foreign.join("precious").exists());
}

#[test]
fn volume_fs_of_a_store_volume_uses_its_quota_file() {
    let (_d, mut s) = store();
    let mut opts = dir_opts();
    opts.quota_mib = Some(1);
    s.create("q", &opts).unwrap();
    let qf = s.quota_file("q");
    assert!(
        !qf.starts_with(s.volume_path("q")),
        "outside the served dir"
    );
    let fs = s.fs("q").unwrap();
    fs.write("a", vec![0u8; 1 << 20]).unwrap();
    let e = fs.write("b", b"x").unwrap_err();
    assert_eq!(
        e.io_error().and_then(|e| e.raw_os_error()),
        Some(libc::ENOSPC)
    );
    assert!(qf.is_file(), "the accounting file the daemons share");
    drop(fs);
    s.remove("q").unwrap();
    assert!(!qf.exists(), "removed with the volume");
}
