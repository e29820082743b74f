//! VolumeFs against a host thread that keeps swapping a directory of the
//! volume for a symlink leading outside (absolute and `../` links), during
//! 10,000 operations of every kind. No operation may read, create, change
//! or delete anything outside: a sentinel, victims and a canary directory
//! beside the volume are checked throughout and at the end.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use volumes::{EntryKind, Error, VolumeFs};

const OPS: usize = 10_000;

fn check_outside(outside: &Path) {
    assert_eq!(
        std::fs::read_to_string(outside.join("sentinel")).unwrap(),
        "secret",
        "the sentinel outside was changed"
    );
    assert!(
        outside.join("victim").is_file(),
        "a file outside was removed"
    );
    assert!(
        outside.join("victimdir/x").is_file(),
        "a tree outside was removed"
    );
    let mut names: Vec<String> = std::fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["sentinel", "victim", "victimdir"],
        "something was created outside"
    );
}

/// Deletes whatever is at `p` (the operations' own `mkdir -p` may recreate
/// `d` while it is swapped out).
fn clear(p: &Path) {
    // Errors (the operations adding entries meanwhile) are retried by the
    // caller's loop.
    let _ = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(_) => Ok(()),
    };
}

/// Swaps `vol/d` between the real directory and a symlink out until
/// `stop`; counts swaps.
fn swapper(vol: PathBuf, outside: PathBuf, stop: &AtomicBool, swaps: &AtomicU64) {
    let d = vol.join("d");
    let real = vol.join("d_real");
    let mut absolute = true;
    while !stop.load(Ordering::Relaxed) {
        std::fs::rename(&d, &real).unwrap();
        loop {
            let linked = if absolute {
                symlink(&outside, &d)
            } else {
                symlink("../outside", &d)
            };
            if linked.is_ok() {
                break;
            }
            clear(&d);
        }
        absolute = !absolute;
        std::thread::yield_now();
        loop {
            clear(&d);
            if volumes_rename_noreplace(&real, &d) {
                break;
            }
        }
        swaps.fetch_add(1, Ordering::Relaxed);
        std::thread::yield_now();
    }
}

/// rename(2) without replacing an existing target; false when one exists.
fn volumes_rename_noreplace(from: &Path, to: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let f = std::ffi::CString::new(from.as_os_str().as_bytes()).unwrap();
    let t = std::ffi::CString::new(to.as_os_str().as_bytes()).unwrap();
    // SAFETY: two valid NUL-terminated paths; AT_FDCWD needs no fd.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    rc == 0
}

#[test]
fn swapping_a_directory_for_a_symlink_never_lets_an_operation_escape() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("victimdir")).unwrap();
    std::fs::write(outside.join("sentinel"), "secret").unwrap();
    std::fs::write(outside.join("victim"), "keep me").unwrap();
    std::fs::write(outside.join("victimdir/x"), "keep me too").unwrap();
    let vol = tmp.path().join("vol");
    std::fs::create_dir_all(vol.join("d")).unwrap();
    std::fs::write(vol.join("d/inside"), "inside").unwrap();
    let fs = VolumeFs::open(&vol, None).unwrap();

    let stop = AtomicBool::new(false);
    let swaps = AtomicU64::new(0);
    let (mut ok, mut escapes, mut other) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| swapper(vol.clone(), outside.clone(), &stop, &swaps));
        for i in 0..OPS {
            // Every result is either a confined success, a PathEscape, or a
            // plain error of the moment (ENOENT while `d` is being swapped).
            let escaped: Result<(), String> = match i % 9 {
                0 => match fs.read("d/sentinel") {
                    Ok(data) => Err(format!("read the sentinel: {data:?}")),
                    Err(_) => Ok(()),
                },
                1 => match fs.exists("d/sentinel") {
                    Ok(true) => Err("exists saw the sentinel".into()),
                    _ => Ok(()),
                },
                2 => fs.write("d/w", b"pwned").map(drop).or(Ok(())),
                3 => fs.mkdir("d/m/n").map(drop).or(Ok(())),
                4 => fs.remove("d/victim").map(drop).or(Ok(())),
                5 => fs.remove_all("d/victimdir").map(drop).or(Ok(())),
                6 => match fs.read_dir("d") {
                    Ok(list) if list.iter().any(|e| e.name == "sentinel") => {
                        Err("listed the outside directory".into())
                    }
                    _ => Ok(()),
                },
                7 => match fs.read_string("d/inside") {
                    Ok(t) => {
                        assert_eq!(t, "inside");
                        Ok(())
                    }
                    Err(_) => Ok(()),
                },
                _ => {
                    let _ = fs.remove_all("d/m");
                    let _ = fs.remove("d/w");
                    Ok(())
                }
            };
            if let Err(what) = escaped {
                stop.store(true, Ordering::Relaxed);
                panic!("operation {i} escaped the volume: {what}");
            }
            // Tally how the operation went, to show the race was real.
            match fs.exists("d/inside") {
                Ok(true) => ok += 1,
                Err(Error::PathEscape { .. }) => escapes += 1,
                _ => other += 1,
            }
            if i % 1000 == 0 {
                check_outside(&outside);
            }
            // Let the swapper run between operations too (2 shared cores).
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    check_outside(&outside);
    let swaps = swaps.load(Ordering::Relaxed);
    eprintln!(
        "{OPS} operations in {:.2?} against {swaps} swaps: {ok} inside, {escapes} refused as \
         PathEscape, {other} missing mid-swap",
        started.elapsed()
    );
    assert!(swaps > 20, "the swapper barely ran ({swaps} swaps)");
    assert!(
        escapes > 0,
        "no operation ever met the symlink: the race was not exercised"
    );
    assert!(ok > 0, "no operation ever met the real directory");
    // The volume still works and holds only what was written inside.
    let entries = fs.read_dir("d").unwrap();
    assert!(entries
        .iter()
        .any(|e| e.name == "inside" && e.kind == EntryKind::File));
    assert!(entries.iter().all(|e| e.name != "sentinel"));
}
