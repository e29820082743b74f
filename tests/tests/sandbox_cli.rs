//! Sandboxes that stay up, through the CLI, in real VMs (QEMU TCG here):
//! the seeds' writer/reader flow on one named volume, exec semantics
//! (codes, signals, stdin, separate streams, 64 MiB of output, pty,
//! timeout, concurrency, 127/126), `msb cp`, stop/start/rm, and faults
//! (supervisor or VMM killed, two creates of one name). Each test has its
//! own `MSB_HOME` and checks that nothing is left running.

use std::time::Duration;

use msb_tests::sandbox_env::SandboxEnv;

const CLEAN_WITHIN: Duration = Duration::from_secs(20);

#[test]
fn seeds_writer_and_reader_share_a_named_volume() {
    let env = SandboxEnv::new("sb-seeds");
    env.msb(&["volume", "create", "shared-data"]).expect(0);
    env.msb(&["create", "writer", "-v", "shared-data:/data"])
        .expect(0);
    env.msb(&[
        "exec",
        "writer",
        "--",
        "sh",
        "-c",
        "echo 'hello' > /data/message.txt",
    ])
    .expect(0);
    env.msb(&[
        "create",
        "reader",
        "--mount",
        "type=volume,src=shared-data,dst=/data,ro",
    ])
    .expect(0);
    // Both are up at the same time.
    assert_eq!(env.status("writer"), "running");
    assert_eq!(env.status("reader"), "running");
    let read = env
        .msb(&["exec", "reader", "--", "cat", "/data/message.txt"])
        .expect(0);
    assert_eq!(read.stdout, "hello\n", "{}", read.describe());
    let denied = env.msb(&[
        "exec",
        "reader",
        "--",
        "sh",
        "-c",
        "echo x > /data/message.txt",
    ]);
    assert_ne!(denied.code, 0, "{}", denied.describe());
    assert!(denied.stderr.contains("Read-only"), "{}", denied.describe());
    // The writer sees its own file; the volume is leased while they run.
    let rm = env.msb(&["volume", "rm", "shared-data"]);
    assert_ne!(rm.code, 0, "{}", rm.describe());
    assert!(rm.stderr.contains("in use"), "{}", rm.describe());
    env.msb(&["stop", "writer", "reader"]).expect(0);
    assert_eq!(env.status("writer"), "stopped");
    assert_eq!(env.status("reader"), "stopped");
    env.assert_clean(CLEAN_WITHIN);
    env.msb(&["volume", "rm", "shared-data"]).expect(0);
    env.msb(&["rm", "writer", "reader"]).expect(0);
    assert!(env.list().is_empty());
}

#[test]
fn exec_codes_streams_stdin_and_big_output() {
    let env = SandboxEnv::new("sb-exec");
    env.msb(&["create", "box"]).expect(0);
    let sh = |script: &str| env.msb(&["exec", "box", "--", "sh", "-c", script]);
    assert_eq!(sh("exit 3").code, 3);
    assert_eq!(sh("kill -9 $$").code, 128 + 9);
    let streams = sh("echo out; echo err >&2; echo out2").expect(0);
    assert_eq!(streams.stdout, "out\nout2\n");
    assert_eq!(streams.stderr, "err\n");
    let nf = env.msb(&["exec", "box", "--", "no-such-command"]);
    assert_eq!(nf.code, 127, "{}", nf.describe());
    assert!(nf.stderr.contains("not found"), "{}", nf.describe());
    let noexec = sh("printf 'x' > /tmp/f; chmod 644 /tmp/f");
    assert_eq!(noexec.code, 0);
    assert_eq!(env.msb(&["exec", "box", "--", "/tmp/f"]).code, 126);
    // stdin only with -i.
    let echo = env
        .msb_stdin(&["exec", "-i", "box", "--", "cat"], Some(b"hi there\n"))
        .expect(0);
    assert_eq!(echo.stdout, "hi there\n");
    let closed = env
        .msb_stdin(&["exec", "box", "--", "cat"], Some(b"ignored\n"))
        .expect(0);
    assert_eq!(closed.stdout, "");
    // Environment, workdir, user.
    let ctx = env
        .msb(&[
            "exec",
            "-e",
            "FOO=bar",
            "-w",
            "/tmp",
            "-u",
            "1000:100",
            "box",
            "--",
            "sh",
            "-c",
            "echo $FOO $(pwd) $(id -u) $(id -g)",
        ])
        .expect(0);
    assert_eq!(ctx.stdout, "bar /tmp 1000 100\n");
    // Timeout.
    let slow = env.msb(&["exec", "--timeout", "2", "box", "--", "sleep", "60"]);
    assert_eq!(slow.code, 124, "{}", slow.describe());
    // Over 64 MiB through one exec, nothing lost or reordered.
    let big = env
        .msb(&["exec", "box", "--", "seq", "1", "9000000"])
        .expect(0);
    assert!(big.stdout.len() >= 64 << 20, "{} bytes", big.stdout.len());
    let mut expected = 1u64;
    for line in big.stdout.lines() {
        assert_eq!(
            line.parse::<u64>().ok(),
            Some(expected),
            "at line {expected}"
        );
        expected += 1;
    }
    assert_eq!(expected, 9_000_001);
    // A pty when asked.
    let tty = env
        .msb(&["exec", "-t", "box", "--", "sh", "-c", "tty; stty size"])
        .expect(0);
    assert!(tty.stdout.contains("/dev/pts/"), "{}", tty.describe());
    assert!(tty.stdout.contains("24 80"), "{}", tty.describe());
    env.msb(&["rm", "-f", "box"]).expect(0);
    env.assert_clean(CLEAN_WITHIN);
}

#[test]
fn eight_concurrent_execs_into_one_sandbox() {
    let env = SandboxEnv::new("sb-conc");
    env.msb(&["create", "box"]).expect(0);
    std::thread::scope(|s| {
        let runs: Vec<_> = (0..8)
            .map(|i| {
                let env = &env;
                s.spawn(move || {
                    let script = format!("sleep 0.5; echo run-{i}; exit {i}");
                    env.msb(&["exec", "box", "--", "sh", "-c", &script])
                })
            })
            .collect();
        for (i, r) in runs.into_iter().enumerate() {
            let r = r.join().expect("exec thread");
            assert_eq!(r.code, i as i32, "{}", r.describe());
            assert_eq!(r.stdout, format!("run-{i}\n"), "{}", r.describe());
        }
    });
    env.msb(&["rm", "-f", "box"]).expect(0);
    env.assert_clean(CLEAN_WITHIN);
}

#[test]
fn cp_in_and_out_keeps_contents_and_modes() {
    let env = SandboxEnv::new("sb-cp");
    let src = env.mkdir("tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    env.msb(&["create", "box"]).expect(0);
    let tree = src.to_string_lossy().into_owned();
    env.msb(&["cp", &tree, "box:/tmp/"]).expect(0);
    let ran = env
        .msb(&["exec", "box", "--", "/tmp/tree/run.sh"])
        .expect(0);
    assert_eq!(ran.stdout, "ran\n");
    env.msb(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo beta > /tmp/tree/sub/b.txt",
    ])
    .expect(0);
    let back = env.dir().join("back");
    env.msb(&["cp", "box:/tmp/tree", &back.to_string_lossy()])
        .expect(0);
    assert_eq!(
        std::fs::read_to_string(back.join("sub/a.txt")).unwrap(),
        "alpha\n"
    );
    assert_eq!(
        std::fs::read_to_string(back.join("sub/b.txt")).unwrap(),
        "beta\n"
    );
    let mode = std::fs::metadata(back.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let bad = env.msb(&["cp", "box:/nonexistent", &back.to_string_lossy()]);
    assert_ne!(bad.code, 0, "{}", bad.describe());
    env.msb(&["rm", "-f", "box"]).expect(0);
    env.assert_clean(CLEAN_WITHIN);
}

/// The pid of the first process of this environment whose command line
/// holds `needle`.
fn pid_of(env: &SandboxEnv, needle: &str) -> i32 {
    msb_tests::msb_proc::processes_mentioning(env.dir())
        .into_iter()
        .find(|p| p.cmdline.contains(needle))
        .map(|p| p.pid)
        .unwrap_or_else(|| panic!("no process with {needle:?}: {:#?}", env.leftovers()))
}

#[test]
fn killed_supervisor_or_vmm_leaves_nothing_and_start_brings_it_back() {
    let env = SandboxEnv::new("sb-fault");
    env.msb(&["volume", "create", "v"]).expect(0);
    env.msb(&["create", "box", "-v", "v:/v"]).expect(0);
    let held = env.msb(&["volume", "inspect", "v", "--json"]).expect(0);
    assert!(
        held.stdout.contains("\"sandbox box\""),
        "{}",
        held.describe()
    );
    for victim in ["sandbox-supervisor", "qemu-system", "virtiofsd-msb"] {
        let pid = pid_of(&env, victim);
        // SAFETY: kill(2) with plain integers on a process of this test.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while env.status("box") != "crashed" {
            assert!(
                std::time::Instant::now() < end,
                "box never showed as crashed"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        env.assert_clean(CLEAN_WITHIN);
        let info = env.msb(&["inspect", "box"]).expect(0);
        assert!(info.stdout.contains("\"reason\""), "{}", info.describe());
        // The crashed holder's lease is gone or marked stale.
        let ls = env.msb(&["volume", "inspect", "v", "--json"]).expect(0);
        assert!(!ls.stdout.contains("\"live\": true"), "{}", ls.describe());
        if victim == "virtiofsd-msb" {
            // Its lease no longer blocks: a stale holder.
            env.msb(&["volume", "rm", "v"]).expect(0);
            break;
        }
        env.msb(&["start", "box"]).expect(0);
        let ok = env.msb(&["exec", "box", "--", "echo", "back"]).expect(0);
        assert_eq!(ok.stdout, "back\n", "after killing {victim}");
    }
    env.msb(&["rm", "box"]).expect(0);
    env.assert_clean(CLEAN_WITHIN);
}

#[test]
fn two_creates_of_one_name_exactly_one_wins_and_bad_input_creates_nothing() {
    let env = SandboxEnv::new("sb-race");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| env.msb(&["create", "same"]));
        let b = s.spawn(|| env.msb(&["create", "same"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let codes = [a.code, b.code];
    assert!(
        codes.contains(&0) && codes.iter().filter(|c| **c == 0).count() == 1,
        "{}\n{}",
        a.describe(),
        b.describe()
    );
    let loser = if a.code == 0 { &b } else { &a };
    assert!(
        loser.stderr.contains("already exists"),
        "{}",
        loser.describe()
    );
    for (args, needle) in [
        (vec!["create", "../x"], "sandbox name"),
        (vec!["create", "ok", "-v", "./missing:/m"], "missing"),
        (vec!["create", "ok", "--tmpfs", "rel"], "rel"),
        (vec!["exec", "nope", "--", "true"], "not found"),
        (vec!["start", "same"], "running"),
    ] {
        let r = env.msb(&args);
        assert_eq!(r.code, 2, "{}", r.describe());
        assert!(r.stderr.contains(needle), "{needle:?}: {}", r.describe());
    }
    assert_eq!(env.list().len(), 1);
    let rm = env.msb(&["rm", "same"]);
    assert_eq!(rm.code, 2, "{}", rm.describe());
    env.msb(&["rm", "-f", "same"]).expect(0);
    env.assert_clean(CLEAN_WITHIN);
}

#[test]
fn msb_run_i_forwards_stdin_through_the_agent() {
    let env = SandboxEnv::new("run-i");
    let cat = env
        .msb_stdin(&["run", "-i", "--", "cat"], Some(b"hi from the host\n"))
        .expect(0);
    assert_eq!(cat.stdout, "hi from the host\n", "{}", cat.describe());
    let code = env.msb_stdin(
        &[
            "run",
            "-i",
            "--",
            "sh",
            "-c",
            "read a; echo got $a; echo e >&2; exit 5",
        ],
        Some(b"x\n"),
    );
    assert_eq!(code.code, 5, "{}", code.describe());
    assert_eq!(code.stdout, "got x\n");
    assert_eq!(code.stderr, "e\n");
    // Without -i stdin stays empty, as before.
    let plain = env
        .msb_stdin(&["run", "--", "cat"], Some(b"ignored\n"))
        .expect(0);
    assert_eq!(plain.stdout, "");
    env.assert_clean(CLEAN_WITHIN);
}

#[test]
fn an_agent_that_stops_answering_is_reported_unhealthy() {
    let env = SandboxEnv::new("sb-health");
    env.msb(&["create", "box"]).expect(0);
    let vmm = pid_of(&env, "qemu-system");
    // SAFETY: kill(2) with plain integers on a process of this test.
    assert_eq!(unsafe { libc::kill(vmm, libc::SIGSTOP) }, 0);
    let wait_for = |want: &str| {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let st = env.status("box");
            if st == want {
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "status {st}, wanted {want}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    wait_for("unhealthy");
    let info = env.msb(&["inspect", "box"]).expect(0);
    assert!(
        info.stdout.contains("has not answered"),
        "{}",
        info.describe()
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(vmm, libc::SIGCONT) }, 0);
    wait_for("running");
    env.msb(&["exec", "box", "--", "true"]).expect(0);
    env.msb(&["rm", "-f", "box"]).expect(0);
    env.assert_clean(CLEAN_WITHIN);
}

#[test]
fn eight_sandboxes_up_at_once_each_answering() {
    let env = SandboxEnv::new("sb-eight");
    let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    for n in &names {
        env.msb(&["create", n, "--memory", "256M"]).expect(0);
    }
    let running = env
        .list()
        .iter()
        .filter(|v| v["status"] == "running")
        .count();
    assert_eq!(running, 8);
    std::thread::scope(|s| {
        let runs: Vec<_> = names
            .iter()
            .map(|n| {
                let env = &env;
                s.spawn(move || env.msb(&["exec", n, "--", "sh", "-c", &format!("echo {n}")]))
            })
            .collect();
        for (n, r) in names.iter().zip(runs) {
            let r = r.join().expect("exec thread").expect(0);
            assert_eq!(r.stdout, format!("{n}\n"));
        }
    });
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    env.msb(&args).expect(0);
    env.assert_clean(CLEAN_WITHIN);
}
