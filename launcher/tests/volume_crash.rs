//! `msb volume create` and `rm` against other processes and SIGKILL:
//! - two processes creating one name at once: exactly one succeeds;
//! - a create or rm killed at each named step (`MSB_VOLUMES_CRASH_AT`),
//!   and at random moments (many times, dir and disk volumes), leaves no
//!   half volume: straight after the kill every directory under volumes/
//!   has its record and every visible record its complete volume; after
//!   the next command's recovery the store is exactly consistent and the
//!   name can be created again.
//!
//! `MSB_TEST_SEED` repeats a run of the random test; `MSB_TEST_KILLS` sets
//! its number of rounds per kind (default 100).

mod volume_common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use volume_common::Home;

/// One row of the metadata table.
#[derive(Debug)]
struct Row {
    kind: String,
    size_mib: Option<u32>,
    state: String,
}

fn rows(home: &Path) -> BTreeMap<String, Row> {
    let conn = rusqlite::Connection::open(home.join("db/msb.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let mut st = conn
        .prepare("SELECT name, kind, size_mib, state FROM volumes")
        .unwrap();
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Row {
                    kind: r.get(1)?,
                    size_mib: r.get(2)?,
                    state: r.get(3)?,
                },
            ))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// Names of the entries directly under volumes/ (the dot dirs aside).
fn volume_dirs(home: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(home.join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The volume `name` is whole: its directory, and for a disk volume an
/// image of the recorded size with an ext4 superblock.
#[track_caller]
fn assert_complete(home: &Path, name: &str, row: &Row) {
    let dir = home.join("volumes").join(name);
    assert!(dir.is_dir(), "record {name} has no directory");
    if row.kind == "disk" {
        let img = dir.join("disk.raw");
        let data = std::fs::read(&img).unwrap_or_default();
        let size = u64::from(row.size_mib.unwrap_or(0)) << 20;
        assert_eq!(data.len() as u64, size, "{name}: image size");
        assert_eq!(
            &data[1080..1082],
            &[0x53, 0xef],
            "{name}: no ext4 superblock"
        );
    }
}

/// Straight after a kill, before any recovery.
#[track_caller]
fn assert_no_half_volume(home: &Path) {
    let rows = rows(home);
    for d in volume_dirs(home) {
        assert!(rows.contains_key(&d), "directory {d} without a record");
    }
    for (name, row) in &rows {
        if row.state == "ready" {
            assert_complete(home, name, row);
        }
    }
}

/// After recovery: records and directories match one to one, all ready,
/// all whole, and the work directories are empty. Returns the names.
#[track_caller]
fn assert_recovered(home: &Path) -> Vec<String> {
    let rows = rows(home);
    let names: Vec<String> = rows.keys().cloned().collect();
    assert_eq!(volume_dirs(home), names, "records vs directories");
    for (name, row) in &rows {
        assert_eq!(row.state, "ready", "{name} left {}", row.state);
        assert_complete(home, name, row);
    }
    for dot in [".staging", ".trash"] {
        let left: Vec<_> = std::fs::read_dir(home.join("volumes").join(dot))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "{dot} not empty: {left:?}");
    }
    names
}

fn kind_args(kind: &str) -> Vec<&'static str> {
    match kind {
        "disk" => vec!["--kind", "disk", "--size", "8"],
        _ => vec!["--kind", "dir", "--quota", "4"],
    }
}

#[test]
fn two_processes_creating_one_name_at_once_one_wins() {
    let h = Home::new();
    h.ok(&["ls"]);
    let started = Instant::now();
    let mut rounds = 0;
    for (kind, n) in [("dir", 30), ("disk", 10)] {
        for i in 0..n {
            let name = format!("{kind}{i}");
            let mut args = vec!["create", name.as_str()];
            args.extend(kind_args(kind));
            let children: Vec<_> = (0..2)
                .map(|_| h.command(&args).stdin(Stdio::null()).spawn().unwrap())
                .collect();
            let outs: Vec<_> = children
                .into_iter()
                .map(|c| c.wait_with_output().unwrap())
                .collect();
            let codes: Vec<i32> = outs.iter().map(|o| o.status.code().unwrap_or(-1)).collect();
            let winners = codes.iter().filter(|c| **c == 0).count();
            assert_eq!(winners, 1, "{name}: {outs:?}");
            let loser = outs.iter().find(|o| !o.status.success()).unwrap();
            assert_eq!(loser.status.code(), Some(1));
            let err = String::from_utf8_lossy(&loser.stderr);
            assert!(err.contains("already exists"), "{name}: {err}");
            rounds += 1;
        }
    }
    assert_eq!(assert_recovered(h.path()).len(), rounds);
    eprintln!(
        "{rounds} races, one winner each, in {:.2?}",
        started.elapsed()
    );
}

#[test]
fn a_create_or_rm_killed_at_each_step_leaves_no_half_volume() {
    let h = Home::new();
    for kind in ["dir", "disk"] {
        for point in ["create-reserved", "create-populated", "create-renamed"] {
            let mut args = vec!["create", "v"];
            args.extend(kind_args(kind));
            let st = h
                .spawn(&args, &[("MSB_VOLUMES_CRASH_AT", point)])
                .wait()
                .unwrap();
            assert_eq!(st.signal(), Some(libc::SIGKILL), "{kind} {point}: {st:?}");
            assert_no_half_volume(h.path());
            // The next command recovers: the create is undone.
            assert_eq!(
                h.json(&["ls", "--json"]),
                serde_json::json!([]),
                "{kind} {point}"
            );
            assert!(assert_recovered(h.path()).is_empty());
            h.ok(&args);
            h.ok(&["rm", "v"]);
        }
        for point in ["remove-marked", "remove-renamed"] {
            let mut args = vec!["create", "v"];
            args.extend(kind_args(kind));
            h.ok(&args);
            let st = h
                .spawn(&["rm", "v"], &[("MSB_VOLUMES_CRASH_AT", point)])
                .wait()
                .unwrap();
            assert_eq!(st.signal(), Some(libc::SIGKILL), "{kind} {point}: {st:?}");
            assert_no_half_volume(h.path());
            // The removal is finished by the next command.
            assert_eq!(
                h.json(&["ls", "--json"]),
                serde_json::json!([]),
                "{kind} {point}"
            );
            assert!(assert_recovered(h.path()).is_empty());
            h.ok(&args);
            h.ok(&["rm", "v"]);
        }
    }
}

/// xorshift64*, seeded per run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("MSB_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9e37_79b9)
        })
}

/// Runs `msb volume ARGS` and SIGKILLs it after `delay` unless it ended;
/// true when it was killed.
fn run_and_kill(h: &Home, args: &[&str], delay: Duration) -> bool {
    let mut child = h.spawn(args, &[]);
    std::thread::sleep(delay);
    let _ = child.kill();
    let st = child.wait().unwrap();
    st.signal() == Some(libc::SIGKILL)
}

/// How long an uninterrupted `msb volume ARGS` takes here.
fn duration_of(h: &Home, args: &[&str]) -> Duration {
    let t = Instant::now();
    h.ok(args);
    t.elapsed()
}

#[test]
fn creates_and_rms_killed_at_random_moments_leave_no_half_volume() {
    let seed = seed();
    let rounds: usize = std::env::var("MSB_TEST_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut rng = Rng(seed);
    let h = Home::new();
    let started = Instant::now();
    let mut killed = [0usize; 2];
    for kind in ["dir", "disk"] {
        let mut create = vec!["create", "v"];
        create.extend(kind_args(kind));
        // Kill anywhere from before msb starts to just after it finishes.
        let span = duration_of(&h, &create) + duration_of(&h, &["rm", "v"]);
        let window = (span.as_micros() as u64).max(2_000) * 3 / 4;
        for round in 0..rounds {
            let what = format!("{kind} round {round} (MSB_TEST_SEED={seed})");
            let delay = Duration::from_micros(rng.below(window));
            if run_and_kill(&h, &create, delay) {
                killed[0] += 1;
            }
            assert_no_half_volume(h.path());
            let mut store = volumes::Store::open(h.path()).expect(&what);
            let names = assert_recovered(h.path());
            // The name is usable: a whole volume or none.
            if names.is_empty() {
                store.create("v", &options(kind)).expect(&what);
            }
            drop(store);
            // Now kill an rm.
            let delay = Duration::from_micros(rng.below(window));
            if run_and_kill(&h, &["rm", "v"], delay) {
                killed[1] += 1;
            }
            assert_no_half_volume(h.path());
            let mut store = volumes::Store::open(h.path()).expect(&what);
            if !assert_recovered(h.path()).is_empty() {
                store.remove("v").expect(&what);
            }
            assert!(assert_recovered(h.path()).is_empty(), "{what}");
        }
    }
    eprintln!(
        "{} rounds (seed {seed}) in {:.2?}: {} creates and {} rms killed before they ended",
        rounds * 2,
        started.elapsed(),
        killed[0],
        killed[1]
    );
    assert!(
        killed[0] > 0 && killed[1] > 0,
        "no kill landed mid-operation"
    );
}

fn options(kind: &str) -> volumes::CreateOptions {
    match kind {
        "disk" => volumes::CreateOptions {
            kind: Some(volumes::VolumeKind::Disk),
            size_mib: Some(8),
            ..Default::default()
        },
        _ => volumes::CreateOptions {
            quota_mib: Some(4),
            ..Default::default()
        },
    }
}
