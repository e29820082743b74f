use super::*;
use std::io::Write;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Views `buf` as guest-memory-like slices of the given lengths.
fn slices<'a>(buf: &'a mut [u8], lens: &[usize]) -> Vec<FileVolatileSlice<'a>> {
    let mut out = Vec::new();
    let mut at = 0;
    for &len in lens {
        // SAFETY: the pieces are disjoint parts of `buf`, which outlives them.
        out.push(unsafe { FileVolatileSlice::from_raw_ptr(buf.as_mut_ptr().add(at), len) });
        at += len;
    }
    out
}

fn temp_with(data: &[u8]) -> (tempfile::TempDir, File) {
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("f"))
        .unwrap();
    f.write_all(data).unwrap();
    (dir, f)
}

const ODD: [usize; 4] = [4096, 300_000, 1, 1_000_000];

/// Starts `crew`'s helpers and waits until `n` of them wait for work.
fn wait_idle(crew: &CopyCrew, n: usize) {
    assert!(crew.sender().is_some(), "no helper started");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while crew.idle.load(Ordering::Acquire) < n {
        assert!(std::time::Instant::now() < deadline, "helpers never idle");
        std::thread::yield_now();
    }
}

#[test]
fn a_split_read_returns_what_one_read_would() {
    let data = pattern(2 << 20, 7);
    let (_dir, mut f) = temp_with(&data);
    let crew = CopyCrew::new(3);
    wait_idle(&crew, 2);
    let total: usize = ODD.iter().sum();
    let mut buf = vec![0u8; total];
    let n = crew
        .file(&mut f)
        .read_vectored_at_volatile(&slices(&mut buf, &ODD), 12_345)
        .unwrap();
    assert_eq!(n, total);
    assert_eq!(buf, data[12_345..12_345 + total]);
}

#[test]
fn a_split_read_past_the_end_is_short() {
    let data = pattern(700 * 1024 + 3, 1);
    let (_dir, f) = temp_with(&data);
    let crew = CopyCrew::new(4);
    wait_idle(&crew, 3);
    let mut buf = vec![0u8; 1 << 20];
    let n = crew
        .run(f.as_raw_fd(), &slices(&mut buf, &[1 << 20]), 0)
        .expect("idle helpers: the read is split")
        .unwrap();
    assert_eq!(n, data.len());
    assert_eq!(buf[..n], data[..]);
}

#[test]
fn small_requests_and_a_crew_of_one_are_not_split() {
    let data = pattern(MIN_SPLIT, 2);
    let (_dir, f) = temp_with(&data);
    let mut buf = vec![0u8; MIN_SPLIT - 1];
    let s = slices(&mut buf, &[MIN_SPLIT - 1]);
    assert!(CopyCrew::new(4).run(f.as_raw_fd(), &s, 0).is_none());
    let mut buf = vec![0u8; MIN_SPLIT];
    let s = slices(&mut buf, &[MIN_SPLIT]);
    assert!(CopyCrew::new(1).run(f.as_raw_fd(), &s, 0).is_none());
    assert!(CopyCrew::new(2)
        .run(f.as_raw_fd(), &s, u64::MAX - 10)
        .is_none());
}

#[test]
fn a_task_runs_on_an_idle_helper() {
    let crew = CopyCrew::new(2);
    assert!(
        !crew.has_idle_helper(),
        "helpers start with the first split"
    );
    wait_idle(&crew, 1);
    assert!(crew.has_idle_helper());
    let (tx, rx) = mpsc::channel();
    let task: Task = Box::new(move || {
        let _ = tx.send(std::thread::current().name().map(str::to_owned));
    });
    assert!(crew.try_offload(task).is_ok());
    let name = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(name.as_deref(), Some("copy-1"));
}

#[test]
fn a_busy_crew_gives_tasks_back_and_reads_alone() {
    let data = pattern(MIN_SPLIT * 2, 5);
    let (_dir, f) = temp_with(&data);
    let crew = CopyCrew::new(2);
    wait_idle(&crew, 1);
    let (release, hold) = mpsc::channel::<()>();
    let (started_tx, started) = mpsc::channel::<()>();
    let blocker: Task = Box::new(move || {
        let _ = started_tx.send(());
        let _ = hold.recv();
    });
    assert!(crew.try_offload(blocker).is_ok());
    started.recv().unwrap();
    // The only helper is busy: a second task comes back, a large read is
    // not split (its piece would wait behind the task).
    let (ran_tx, ran) = mpsc::channel::<()>();
    let task: Task = Box::new(move || {
        let _ = ran_tx.send(());
    });
    assert!(!crew.has_idle_helper());
    let back = crew.try_offload(task).expect_err("no helper is idle");
    let mut buf = vec![0u8; MIN_SPLIT * 2];
    assert!(crew
        .run(f.as_raw_fd(), &slices(&mut buf, &[MIN_SPLIT * 2]), 0)
        .is_none());
    back();
    ran.recv().unwrap();
    release.send(()).unwrap();
    wait_idle(&crew, 1);
    let n = crew
        .run(f.as_raw_fd(), &slices(&mut buf, &[MIN_SPLIT * 2]), 0)
        .expect("the helper is idle again: the read is split")
        .unwrap();
    assert_eq!(buf[..n], data[..]);
}

#[test]
fn pieces_are_aligned_consecutive_and_cover_the_request() {
    let total: usize = ODD.iter().sum();
    let mut buf = vec![0u8; total];
    let s = slices(&mut buf, &ODD);
    let pieces = cut(-1, &s, 100, 3);
    assert_eq!(pieces.len(), 3);
    assert_eq!(pieces.iter().map(Piece::len).sum::<usize>(), total);
    let mut at = 100;
    for p in &pieces[..2] {
        assert_eq!(p.len() % PIECE_ALIGN, 0);
        assert_eq!(p.offset, at);
        at += p.len() as u64;
    }
    assert_eq!(pieces[2].offset, at);
}

#[test]
fn the_result_is_the_gap_free_prefix() {
    let ok = |n| Some(Ok(n));
    let err = || Some(Err(io::Error::from_raw_os_error(libc::ENOSPC)));
    assert_eq!(join(&[4, 4, 4], vec![ok(4), ok(4), ok(4)]).unwrap(), 12);
    assert_eq!(join(&[4, 4, 4], vec![ok(4), ok(1), ok(4)]).unwrap(), 5);
    assert_eq!(join(&[4, 4, 4], vec![ok(4), err(), ok(4)]).unwrap(), 4);
    assert_eq!(
        join(&[4, 4], vec![err(), ok(4)])
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOSPC)
    );
    assert_eq!(
        join(&[4, 4], vec![ok(4), None]).unwrap(),
        4,
        "a lost piece ends the prefix"
    );
}

#[test]
fn advance_skips_whole_and_partial_iovecs() {
    let mut a = [0u8; 10];
    let mut iov = vec![
        libc::iovec {
            iov_base: a.as_mut_ptr().cast(),
            iov_len: 4,
        },
        libc::iovec {
            iov_base: a[4..].as_mut_ptr().cast(),
            iov_len: 6,
        },
    ];
    advance(&mut iov, 5);
    assert_eq!(iov.len(), 1);
    assert_eq!(iov[0].iov_len, 5);
    assert_eq!(iov[0].iov_base as usize, a.as_ptr() as usize + 5);
}
