//! `msb volume …` as a user runs it: every command, its output (table and
//! JSON), every error with its exit status, leases blocking `rm`, and
//! host-side file access. Each test has its own `MSB_HOME`. The process
//! level races and crashes are in `volume_crash.rs`.

mod volume_common;

use volume_common::{Home, USAGE};

#[test]
fn create_ls_inspect_rm() {
    let h = Home::new();
    h.ok(&[
        "create", "cache", "--quota", "64", "--label", "env=prod", "--label", "team=ci",
    ])
    .stdout_is("cache\n");
    h.ok(&["create", "blk", "--kind", "disk", "--size", "16"]);
    h.ok(&["create", "plain"]);
    let ls = h.ok(&["ls"]).stdout;
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines.len(), 4, "{ls}");
    for col in [
        "NAME", "KIND", "QUOTA", "USED", "CAPACITY", "CREATED", "IN USE",
    ] {
        assert!(lines[0].contains(col), "{ls}");
    }
    let blk: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(blk[..2], ["blk", "disk"], "{ls}");
    assert!(lines[1].contains("16 MiB"), "{ls}");
    assert!(
        lines[2].starts_with("cache") && lines[2].contains("64 MiB"),
        "{ls}"
    );
    assert!(lines[3].starts_with("plain"), "{ls}");
    // Label filter, table and JSON.
    let only = h.ok(&["ls", "--label", "env=prod"]).stdout;
    assert_eq!(only.lines().count(), 2, "{only}");
    let none = h
        .ok(&["ls", "--label", "env=prod", "--label", "team=web"])
        .stdout;
    assert_eq!(none.lines().count(), 1, "{none}");
    let json = h.json(&["ls", "--label", "team=ci", "--json"]);
    assert_eq!(json.as_array().map(Vec::len), Some(1));
    assert_eq!(json[0]["name"], "cache");
    // inspect: every VolumeHandle field.
    let j = h.json(&["inspect", "blk", "--json"]);
    for key in [
        "name",
        "path",
        "kind",
        "quota_mib",
        "used_bytes",
        "capacity_bytes",
        "disk_format",
        "disk_fstype",
        "labels",
        "created_at",
        "in_use_by",
    ] {
        assert!(j.get(key).is_some(), "inspect --json lacks {key}: {j}");
    }
    assert_eq!(j["kind"], "disk");
    assert_eq!(j["capacity_bytes"], 16 << 20);
    assert_eq!(j["disk_format"], "raw");
    assert_eq!(j["disk_fstype"], "ext4");
    assert_eq!(j["quota_mib"], serde_json::Value::Null);
    assert_eq!(j["path"], h.path().join("volumes/blk").to_str().unwrap());
    assert!(j["created_at"].as_str().unwrap().ends_with('Z'));
    let c = h.json(&["inspect", "cache", "--json"]);
    assert_eq!(c["quota_mib"], 64);
    assert_eq!(c["labels"]["team"], "ci");
    assert_eq!(c["capacity_bytes"], serde_json::Value::Null);
    let text = h.ok(&["inspect", "cache"]).stdout;
    for line in [
        "name:           cache",
        "kind:           dir",
        "quota_mib:      64",
    ] {
        assert!(text.contains(line), "{text}");
    }
    assert!(text.contains("labels:         env=prod, team=ci"), "{text}");
    // rm several at once.
    h.ok(&["rm", "cache", "blk"]).stdout_is("cache\nblk\n");
    assert!(!h.path().join("volumes/blk").exists());
    assert_eq!(h.json(&["ls", "--json"]).as_array().map(Vec::len), Some(1));
    // list is an alias of ls, remove of rm.
    h.ok(&["list"]);
    h.ok(&["remove", "plain"]);
}

#[test]
fn refusals_exit_1_and_name_the_volume() {
    let h = Home::new();
    h.ok(&["create", "v"]);
    h.fails(&["create", "v"], 1, "volume \"v\" already exists");
    for cmd in [
        &["inspect", "nope"][..],
        &["rm", "nope"],
        &["fs", "nope", "ls"],
    ] {
        h.fails(cmd, 1, "volume \"nope\" not found");
    }
    // rm goes on with the others and reports the failure.
    h.ok(&["create", "w"]);
    let out = h.run(&["rm", "v", "nope", "w"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stdout, "v\nw\n");
    assert!(out.stderr.contains("\"nope\" not found"), "{out:?}");
    h.ok(&["create", "d", "--kind", "disk", "--size", "8"]);
    h.fails(&["fs", "d", "ls"], 1, "disk volume");
}

#[test]
fn usage_errors_exit_2_and_name_the_input() {
    let h = Home::new();
    let cases: &[(&[&str], &str)] = &[
        (&["create", "a/b"], "invalid volume name \"a/b\""),
        (&["create", ".."], "invalid volume name \"..\""),
        (&["create", "-x"], "-x"),
        (&["create", &"n".repeat(64)], "at most 63"),
        (&["create", "d", "--kind", "disk"], "needs a size"),
        (
            &["create", "d", "--kind", "disk", "--size", "4"],
            "at least 8 MiB",
        ),
        (
            &[
                "create", "d", "--kind", "disk", "--size", "8", "--quota", "4",
            ],
            "only dir volumes have a quota",
        ),
        (
            &["create", "d", "--size", "8"],
            "only disk volumes have a size",
        ),
        (&["create", "d", "--kind", "blk"], "blk"),
        (&["create", "d", "--quota", "lots"], "lots"),
        (&["create", "d", "--label", "novalue"], "KEY=VALUE"),
        (
            &["create", "d", "--label", "bad key=v"],
            "label \"bad key\"",
        ),
        (&["ls", "--label", "x"], "KEY=VALUE"),
        (&["inspect"], "NAME"),
        (&["rm"], "NAME"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        h.fails(args, USAGE, needle);
    }
    // Nothing was created by any of them.
    assert_eq!(h.json(&["ls", "--json"]), serde_json::json!([]));
}

#[test]
fn fs_reads_and_writes_the_volume() {
    let h = Home::new();
    h.ok(&["create", "v"]);
    h.ok(&["fs", "v", "write", "seed.txt", "hello"]);
    h.ok(&["fs", "v", "read", "seed.txt"]).stdout_is("hello");
    h.ok(&["fs", "v", "mkdir", "a/b/c"]);
    h.ok_stdin(
        &["fs", "v", "write", "a/b/c/from-stdin"],
        b"piped\n\x00bytes",
    );
    assert_eq!(
        std::fs::read(h.path().join("volumes/v/a/b/c/from-stdin")).unwrap(),
        b"piped\n\x00bytes"
    );
    h.ok(&["fs", "v", "exists", "a/b"]).stdout_is("true\n");
    let no = h.run(&["fs", "v", "exists", "a/x"]);
    assert_eq!((no.code, no.stdout.as_str()), (1, "false\n"), "{no:?}");
    let ls = h.ok(&["fs", "v", "ls"]).stdout;
    assert!(
        ls.contains("dir") && ls.contains("a") && ls.contains("seed.txt"),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.starts_with("file") && l.contains(" 5 ")),
        "{ls}"
    );
    let j = h.json(&["fs", "v", "ls", "a/b/c", "--json"]);
    assert_eq!(j[0]["name"], "from-stdin");
    assert_eq!(j[0]["kind"], "file");
    assert_eq!(j[0]["size"], 12);
    h.fails(&["fs", "v", "rm", "a"], 1, "not empty");
    h.ok(&["fs", "v", "rm", "seed.txt"]);
    h.ok(&["fs", "v", "rm", "-r", "a"]);
    h.ok(&["fs", "v", "ls"]).stdout_is("TYPE  SIZE  NAME\n");
    h.fails(&["fs", "v", "read", "missing"], 1, "read \"missing\"");
    h.fails(&["fs", "v", "rm", "missing"], 1, "\"missing\"");
    // Paths out of the volume are usage errors naming the path.
    let outside = h.path().join("outside-secret");
    std::fs::write(&outside, "secret").unwrap();
    std::os::unix::fs::symlink(&outside, h.path().join("volumes/v/link")).unwrap();
    for p in ["/etc/passwd", "../../outside-secret", "link", "x/../../y"] {
        h.fails(&["fs", "v", "read", p], USAGE, "escapes the volume root");
        h.fails(
            &["fs", "v", "write", p, "pwned"],
            USAGE,
            "escapes the volume root",
        );
    }
    h.fails(&["fs", "v", "rm", ""], USAGE, "volume root");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
}

#[test]
fn fs_writes_count_against_the_quota() {
    let h = Home::new();
    h.ok(&["create", "q", "--quota", "1"]);
    h.ok_stdin(&["fs", "q", "write", "a"], &vec![7u8; 700 << 10]);
    h.fails_stdin(
        &["fs", "q", "write", "b"],
        &vec![7u8; 400 << 10],
        1,
        "No space left",
    );
    h.fails(&["fs", "q", "exists", "b"], 1, "");
    h.ok_stdin(&["fs", "q", "write", "b"], &vec![7u8; 300 << 10]);
    h.ok(&["fs", "q", "rm", "a"]);
    h.ok_stdin(&["fs", "q", "write", "c"], &vec![7u8; 700 << 10]);
    let j = h.json(&["inspect", "q", "--json"]);
    assert_eq!(j["used_bytes"], 1000 << 10);
}

#[test]
fn rm_is_refused_while_a_live_launcher_holds_a_lease() {
    let h = Home::new();
    h.ok(&["create", "busy"]);
    let mut store = volumes::Store::open(h.path()).unwrap();
    let lease = store
        .lease(
            "busy",
            &volumes::LeaseRequest {
                holder: "msb run".into(),
                target: Some("/data".into()),
                readonly: false,
            },
        )
        .unwrap();
    let me = std::process::id();
    h.fails(
        &["rm", "busy"],
        1,
        &format!("in use by msb run (pid {me}) at /data"),
    );
    assert!(h.ok(&["ls"]).stdout.contains("1 VM"));
    let j = h.json(&["inspect", "busy", "--json"]);
    assert_eq!(j["in_use_by"][0]["pid"], me);
    assert_eq!(j["in_use_by"][0]["live"], true);
    assert!(h
        .ok(&["inspect", "busy"])
        .stdout
        .contains("in_use_by:      msb run"));
    drop(lease);
    h.ok(&["rm", "busy"]);
}

#[test]
fn a_lease_left_by_a_dead_launcher_does_not_block_rm() {
    let h = Home::new();
    h.ok(&["create", "orphaned"]);
    // A process that existed and is gone: its pid and start time.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = volumes::ProcessId::of(child.id()).unwrap();
    child.wait().unwrap();
    let conn = rusqlite::Connection::open(h.path().join("db/msb.db")).unwrap();
    conn.execute(
        "INSERT INTO leases (volume, pid, start_time, holder, target, readonly, acquired_at) \
         VALUES ('orphaned', ?1, ?2, 'msb run', '/data', 0, 0)",
        rusqlite::params![dead.pid, dead.start_time as i64],
    )
    .unwrap();
    drop(conn);
    // Shown as stale, not in use; removal goes ahead.
    assert!(!h.ok(&["ls"]).stdout.contains("1 VM"));
    let j = h.json(&["inspect", "orphaned", "--json"]);
    assert_eq!(j["in_use_by"][0]["live"], false, "{j}");
    assert!(h.ok(&["inspect", "orphaned"]).stdout.contains("[stale]"));
    h.ok(&["rm", "orphaned"]);
}
