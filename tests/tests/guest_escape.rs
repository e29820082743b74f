//! Escape tests through a real guest: symlinks in the share pointing out of it,
//! `..` walks, and a directory swapped for an outward symlink by a host thread
//! while the guest works in it. A sentinel file outside the share must never
//! be read, written or listed, and nothing may be created outside.
//! Needs `scripts/setup.sh` and a built daemon; see `msb_tests::qemu`.

use std::fs::{self, FileTimes};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use msb_tests::qemu::{start_daemon, Daemon, GuestConfig, GuestOutcome};

/// `root/share` is shared (root is the daemon's temporary dir, which also
/// holds its socket and log); `root/outside/<name>` is the sentinel.
struct Layout {
    root: PathBuf,
    share: PathBuf,
    outside: PathBuf,
    sentinel: PathBuf,
    name: String,
    token: String,
    before: fs::Metadata,
    atime_works: bool,
}

const OLD_ATIME: u64 = 1_000_000_000;
const OLD_MTIME: u64 = 1_100_000_000;

fn set_old_times(path: &Path) {
    let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    let times = FileTimes::new()
        .set_accessed(at(OLD_ATIME))
        .set_modified(at(OLD_MTIME));
    fs::File::open(path)
        .and_then(|f| f.set_times(times))
        .expect("set times");
}

fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), nanos)
}

impl Layout {
    fn new(daemon: &Daemon) -> Layout {
        let root = daemon.root().to_path_buf();
        let share = daemon.shared_dir().to_path_buf();
        let outside = root.join("outside");
        fs::create_dir(&outside).expect("mkdir outside");
        let id = unique();
        let name = format!("msb-sentinel-{id}.txt");
        let token = format!("SENTINEL-CONTENT-{id}");
        let sentinel = outside.join(&name);
        fs::write(&sentinel, format!("{token}\n")).expect("write sentinel");
        // atime older than mtime: under relatime (or strictatime) any read of
        // the sentinel or listing of its directory moves atime. Check that
        // this host filesystem really does so on a control file.
        let control = root.join("control");
        fs::write(&control, b"control").expect("write control");
        set_old_times(&control);
        fs::read(&control).expect("read control");
        let atime_works = fs::metadata(&control).expect("stat control").atime() as u64 != OLD_ATIME;
        if !atime_works {
            eprintln!("note: atime is not updated on this host filesystem; atime checks skipped");
        }
        fs::remove_file(&control).expect("rm control");
        set_old_times(&sentinel);
        set_old_times(&outside);
        let before = fs::metadata(&sentinel).expect("stat sentinel");
        Layout {
            root,
            share,
            outside,
            sentinel,
            name,
            token,
            before,
            atime_works,
        }
    }

    /// Asserts the sentinel and the directories around the share are exactly
    /// as created, and that `texts` (guest output) never show its contents.
    fn assert_untouched(&self, out: &GuestOutcome, texts: &[(&str, String)]) {
        let report = out.report();
        let now = fs::metadata(&self.sentinel).expect("sentinel must still exist");
        let dir = fs::metadata(&self.outside).expect("outside dir");
        if self.atime_works {
            assert_eq!(
                now.atime() as u64,
                OLD_ATIME,
                "the sentinel was READ (atime moved)\n{report}"
            );
            assert_eq!(
                dir.atime() as u64,
                OLD_ATIME,
                "the outside dir was LISTED (atime moved)\n{report}"
            );
        }
        assert_eq!(
            now.mtime() as u64,
            OLD_MTIME,
            "the sentinel was WRITTEN (mtime moved)\n{report}"
        );
        assert_eq!(
            dir.mtime() as u64,
            OLD_MTIME,
            "the outside dir was MODIFIED (mtime moved)\n{report}"
        );
        assert_eq!(
            (now.ino(), now.size(), now.ctime(), now.nlink()),
            (
                self.before.ino(),
                self.before.size(),
                self.before.ctime(),
                self.before.nlink()
            ),
            "sentinel inode metadata changed\n{report}"
        );
        assert_eq!(
            fs::read_to_string(&self.sentinel).expect("read sentinel"),
            format!("{}\n", self.token)
        );
        let names = |p: &Path| {
            let mut v: Vec<String> = fs::read_dir(p)
                .expect("read_dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(&self.outside),
            vec![self.name.clone()],
            "something was created outside\n{report}"
        );
        // The daemon's own files (socket, log, a pid file) live there too.
        let mut around = names(&self.root);
        around.retain(|n| n != "share" && n != "daemon.log" && !n.starts_with("vhost.sock"));
        assert_eq!(
            around,
            vec!["outside".to_string()],
            "something was created next to the share\n{report}"
        );
        assert!(
            !out.serial.contains(&self.token),
            "the sentinel's contents appeared on the guest console\n{report}"
        );
        for (what, text) in texts {
            assert!(
                !text.contains(&self.token),
                "the sentinel's contents appear in {what}\n{report}"
            );
        }
    }

    fn guest_log(&self, name: &str, out: &GuestOutcome) -> String {
        fs::read(self.share.join(name))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| {
                panic!(
                    "guest log {name} missing from the share: {e}\n{}",
                    out.report()
                )
            })
    }
}

/// Symlinks to /etc and to ../outside, ../../outside (relative and absolute), hard links
/// of them, renames into them and `..` walks from the mount root.
#[test]
fn guest_symlinks_and_dotdot_stay_inside_the_share() {
    let daemon = start_daemon(&[]).expect("start virtiofsd-msb");
    let l = Layout::new(&daemon);
    let probe = format!("msb-escape-probe-{}", unique());
    fs::create_dir_all(l.share.join("sub/deep")).expect("mkdir sub/deep");
    symlink("/etc", l.share.join("etc_link")).expect("etc_link");
    symlink("../outside", l.share.join("up_link")).expect("up_link");
    symlink("../../outside", l.share.join("sub/up_link2")).expect("up_link2");
    symlink("../../../outside", l.share.join("sub/deep/up3")).expect("up3");
    symlink(&l.outside, l.share.join("abs_link")).expect("abs_link");
    let file_link = format!("../outside/{}", l.name);
    symlink(file_link, l.share.join("file_link")).expect("file_link");
    fs::write(l.share.join("sub/inside.txt"), b"INSIDE\n").expect("inside.txt");

    let out = GuestConfig::new(include_str!("../guest/escape_static.sh"))
        .daemon(daemon)
        .env("SENT", &l.name)
        .env("OUTSIDE_ABS", l.outside.to_string_lossy())
        .env("PROBE", &probe)
        .timeout(Duration::from_secs(90))
        .run()
        .expect("guest harness");
    eprintln!(
        "guest_escape static: boot {:?} s, end {:?} s, wall {:.1?}",
        out.boot_secs, out.end_secs, out.elapsed
    );
    out.assert_passed();
    let listing = l.guest_log("guest-listing.log", &out);
    let reads = l.guest_log("guest-read.log", &out);
    assert!(
        !listing.contains(&l.name),
        "the sentinel was LISTED in the guest:\n{listing}"
    );
    assert_eq!(out.result("sentinel_name_listed"), "0");
    assert!(
        reads.contains("INSIDE"),
        "the whole-share read did not see sub/inside.txt\n{}",
        out.report()
    );
    l.assert_untouched(
        &out,
        &[("guest-listing.log", listing), ("guest-read.log", reads)],
    );
    assert!(
        !Path::new("/etc").join(&probe).exists(),
        "a write through etc_link reached the HOST /etc/{probe}"
    );
    // The guest's links are symlinks on the host, never followed.
    assert_eq!(
        fs::read_link(l.share.join("g_up")).expect("g_up"),
        Path::new("../outside")
    );
    assert_eq!(
        fs::read_link(l.share.join("g_hard")).expect("g_hard"),
        Path::new("../outside")
    );
    assert_eq!(
        fs::read_link(l.share.join("sub/deep/up_moved")).expect("up_moved"),
        Path::new("../outside")
    );
    assert!(
        fs::symlink_metadata(l.share.join("up_link")).is_err(),
        "up_link was moved away"
    );
    assert_eq!(
        fs::read(l.share.join("tomove")).expect("tomove stays"),
        b"x\n"
    );
}

/// renameat2(RENAME_EXCHANGE) of `a` and `b`.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let a = std::ffi::CString::new(a.as_os_str().as_bytes()).expect("no NUL");
    let b = std::ffi::CString::new(b.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: both are valid NUL-terminated paths that live across the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

const MIN_SWAPS: u64 = 1000;

/// Swaps swapA/swapB with outward symlinks until the guest is done; returns
/// the number of exchanges.
fn swapper(share: &Path, stop: &AtomicBool) -> u64 {
    let ready = share.join("race-ready");
    while !ready.exists() {
        if stop.load(Ordering::Relaxed) {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pairs = [
        (share.join("swapA"), share.join("swapA.alt")),
        (share.join("swapB"), share.join("swapB.alt")),
    ];
    let (done, stop_file) = (share.join("race-done"), share.join("race-stop"));
    let mut swaps = 0u64;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed)
        && !done.exists()
        && started.elapsed() < Duration::from_secs(80)
    {
        for (a, b) in &pairs {
            exchange(a, b)
                .unwrap_or_else(|e| panic!("host: exchange {} {}: {e}", a.display(), b.display()));
            swaps += 1;
        }
        if swaps >= 2 * MIN_SWAPS && !stop_file.exists() {
            fs::write(&stop_file, b"").expect("write race-stop");
        }
        // Every other round leaves symlinks in place: hold them briefly and
        // the directories longer, so a guest whose entry cache (1 s) caught
        // a symlink gets a directory at its next lookups while the swaps
        // still race its walk.
        let symlinks_now = (swaps / 2) % 2 == 1;
        std::thread::sleep(Duration::from_micros(if symlinks_now { 300 } else { 1500 }));
    }
    swaps
}

/// A host thread swaps two directories of the share for symlinks to the
/// outside directory (1,000+ exchanges) while the guest walks, lists, reads
/// and writes in them.
#[test]
fn guest_walk_during_dir_symlink_swaps_stays_inside() {
    let daemon = start_daemon(&[]).expect("start virtiofsd-msb");
    let l = Layout::new(&daemon);
    for (dir, link) in [
        ("swapA", PathBuf::from("../outside")),
        ("swapB", l.outside.clone()),
    ] {
        fs::create_dir(l.share.join(dir)).expect("mkdir swap dir");
        fs::write(
            l.share.join(dir).join("inside.txt"),
            format!("INSIDE-{dir}\n"),
        )
        .expect("inside.txt");
        symlink(link, l.share.join(format!("{dir}.alt"))).expect("alt symlink");
    }
    let guest = GuestConfig::new(include_str!("../guest/escape_race.sh"))
        .daemon(daemon)
        .env("SENT", &l.name)
        .env("MIN_ITERS", "60")
        .env("MIN_SECS", "3")
        .env("MAX_SECS", "40")
        .timeout(Duration::from_secs(90))
        .start()
        .expect("guest harness");
    let stop = AtomicBool::new(false);
    let (out, swaps) = std::thread::scope(|s| {
        let swapper = s.spawn(|| swapper(&l.share, &stop));
        let out = guest.wait();
        stop.store(true, Ordering::Relaxed);
        (out, swapper.join())
    });
    let swaps = swaps.unwrap_or_else(|_| panic!("swapper thread failed\n{}", out.report()));
    eprintln!(
        "guest_escape race: {swaps} exchanges, {} guest iterations, {} inside reads; boot {:?} s, end {:?} s, wall {:.1?}",
        out.results().get("iterations").map_or("?", String::as_str),
        out.results().get("inside_reads").map_or("?", String::as_str),
        out.boot_secs,
        out.end_secs,
        out.elapsed
    );
    out.assert_passed();
    assert!(
        swaps >= MIN_SWAPS,
        "only {swaps} exchanges happened during the guest loop\n{}",
        out.report()
    );
    assert_eq!(out.result("sentinel_hits"), "0");
    assert_eq!(out.result("sentinel_name_listed"), "0");
    let listing = l.guest_log("guest-listing.log", &out);
    let reads = l.guest_log("guest-read.log", &out);
    let errors = l.guest_log("guest-errors.log", &out);
    assert!(
        !listing.contains(&l.name),
        "the sentinel was LISTED in the guest\n{}",
        out.report()
    );
    // The guest read through the swapped directory (which side it caught
    // depends on timing: under load it may see only one of them).
    assert!(
        reads.contains("INSIDE-swapA") || reads.contains("INSIDE-swapB"),
        "{}",
        out.report()
    );
    l.assert_untouched(
        &out,
        &[
            ("guest-listing.log", listing),
            ("guest-read.log", reads),
            ("guest-errors.log", errors),
        ],
    );
}
