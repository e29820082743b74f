//! The daemon binary as an operator meets it: flags, bad input, stopping.
//! Each case runs the real `virtiofsd-msb` and checks its exit status,
//! message and the socket file it leaves (or not).

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use msb_tests::daemon_proc::daemon_binary;

fn run(args: &[&str]) -> Output {
    let bin = daemon_binary().expect("daemon binary");
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("virtiofsd-msb {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn print_capabilities_is_vhost_user_json() {
    let o = run(&["--print-capabilities"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["type"], "fs", "{text}");
}

#[test]
fn bad_input_is_a_clear_error_and_a_nonzero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("s.sock");
    let sock = sock.to_str().unwrap();

    let o = run(&["--socket-path", sock, "--shared-dir", "/no/such/dir"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("/no/such/dir"), "{}", stderr(&o));
    assert!(!Path::new(sock).exists(), "no socket left behind");

    let o = run(&[
        "--socket-path",
        sock,
        "--shared-dir",
        "/tmp",
        "--bogus-flag",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--bogus-flag"), "{}", stderr(&o));

    let o = run(&["--fd", "77", "--shared-dir", "/tmp"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("77"), "{}", stderr(&o));

    let o = run(&[
        "--socket-path",
        sock,
        "--shared-dir",
        "/tmp",
        "--cache",
        "sometimes",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("sometimes"), "{}", stderr(&o));

    // A live listener on the path: refused, and its socket left alone.
    let _busy = UnixListener::bind(sock).unwrap();
    let o = run(&["--socket-path", sock, "--shared-dir", "/tmp"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(sock), "{}", stderr(&o));
    assert!(
        Path::new(sock).exists(),
        "the other listener's socket stays"
    );
}

#[test]
fn sigterm_ends_the_daemon_cleanly_and_removes_its_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("s.sock");
    let bin = daemon_binary().expect("daemon binary");
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut child = Command::new(&bin)
            .arg("--socket-path")
            .arg(&sock)
            .args(["--shared-dir", "/tmp"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn daemon");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "socket never appeared");
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill takes plain integers; the child is ours and unreaped.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "daemon ignored signal {signal}");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.code(), Some(0), "signal {signal}");
        assert!(!sock.exists(), "socket removed after signal {signal}");
    }
}
