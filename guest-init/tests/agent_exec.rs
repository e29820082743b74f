//! Exec sessions of the agent, served over a unix socket on the host:
//! exit codes, signals, stdin, separate streams, large output, timeouts,
//! concurrency, and commands that cannot start.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{gone_within, request, Agent};
use guest_init::protocol::{Kind, SignalRequest};

#[test]
fn exit_codes_come_back() {
    let agent = Agent::start();
    let ok = agent.run(&["true"]);
    assert!(ok.pid > 0);
    assert_eq!(ok.exited().code, Some(0));
    assert_eq!(ok.exited().signal, None);
    let three = agent.run(&["sh", "-c", "exit 3"]);
    assert_eq!(three.exited().code, Some(3));
    assert!(!three.exited().timed_out);
}

#[test]
fn a_signal_death_is_reported_as_the_signal() {
    let agent = Agent::start();
    let o = agent.run(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!((o.exited().code, o.exited().signal), (None, Some(15)));
}

#[test]
fn signal_frames_reach_the_process_group() {
    let agent = Agent::start();
    // The shell waits for its child: both are in the session's group.
    let s = agent.exec(&request(&["sh", "-c", "sleep 30; echo not reached"]));
    let pid = s.started();
    s.send_json(Kind::Signal, &SignalRequest { signal: 15 });
    let o = s.finish();
    assert_eq!(o.exited().signal, Some(15), "{o:?}");
    assert!(o.stdout.is_empty());
    assert!(gone_within(pid, Duration::from_secs(10)));
}

#[test]
fn stdin_is_forwarded_and_closed() {
    let agent = Agent::start();
    let mut req = request(&["cat"]);
    req.stdin = true;
    let s = agent.exec(&req);
    s.started();
    // More than the pipe and the stdin queue hold at once.
    let input: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    s.stdin(&input[..1_000]);
    s.stdin(&input[1_000..]);
    s.eof();
    let o = s.finish();
    assert_eq!(o.exited().code, Some(0));
    assert_eq!(o.stdout.len(), input.len());
    assert!(o.stdout == input, "stdin came back altered");
}

#[test]
fn stdin_reads_empty_unless_forwarded() {
    let agent = Agent::start();
    let o = agent.run(&["cat"]);
    assert_eq!(o.exited().code, Some(0));
    assert!(o.stdout.is_empty());
}

#[test]
fn stdout_and_stderr_are_separate_and_ordered() {
    let agent = Agent::start();
    let script = "i=1; while [ $i -le 300 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done";
    let o = agent.run(&["sh", "-c", script]);
    assert_eq!(o.exited().code, Some(0));
    let want = |p: &str| (1..=300).map(|i| format!("{p}{i}\n")).collect::<String>();
    assert_eq!(o.out(), want("out"));
    assert_eq!(o.err(), want("err"));
}

#[test]
fn large_output_arrives_whole_and_in_order() {
    let agent = Agent::start();
    let n = 9_000_000u64;
    let o = agent.run(&["seq", "1", &n.to_string()]);
    assert_eq!(o.exited().code, Some(0), "{}", o.err());
    assert!(o.stdout.len() >= 64 << 20, "only {} bytes", o.stdout.len());
    let mut expected = 1u64;
    for line in o.stdout.split(|&b| b == b'\n') {
        if expected > n {
            assert!(line.is_empty(), "trailing data after {n}");
            break;
        }
        let got: u64 = std::str::from_utf8(line).unwrap().parse().unwrap();
        assert_eq!(got, expected, "line {expected} lost or reordered");
        expected += 1;
    }
    assert_eq!(expected, n + 1, "output ended at line {expected}");
}

#[test]
fn environment_workdir_and_home() {
    let agent = Agent::start_with(guest_init::agent::AgentOptions {
        env: vec!["SANDBOX=yes".into(), "FOO=sandbox".into()],
        ..common::options()
    });
    let mut req = request(&["sh", "-c", "echo $FOO $SANDBOX; pwd; echo ${PATH%%:*}"]);
    req.env = vec!["FOO=request".into()];
    req.workdir = Some("/tmp".into());
    let o = agent.exec(&req).finish();
    assert_eq!(o.exited().code, Some(0), "{}", o.err());
    assert_eq!(o.out(), "request yes\n/tmp\n/usr/local/sbin\n");
}

#[test]
fn uid_and_gid_are_switched() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("uid_and_gid_are_switched: not root, cannot switch users; skipped");
        return;
    }
    let agent = Agent::start();
    let mut req = request(&["sh", "-c", "echo $(id -u):$(id -g):$(id -G):$HOME"]);
    req.uid = Some(65534);
    req.gid = Some(65533);
    let o = agent.exec(&req).finish();
    assert_eq!(o.out(), "65534:65533:65533:/\n", "{}", o.err());
}

#[test]
fn a_timeout_kills_the_group() {
    let agent = Agent::start();
    let mut req = request(&["sh", "-c", "sleep 30 & sleep 30"]);
    req.timeout_ms = Some(300);
    let o = agent.exec(&req).finish();
    let e = o.exited();
    assert!(e.timed_out, "{e:?}");
    assert_eq!((e.code, e.signal), (None, Some(9)));
}

#[test]
fn eight_concurrent_execs() {
    let agent = Agent::start();
    std::thread::scope(|scope| {
        let runs: Vec<_> = (0..8)
            .map(|i| {
                let agent = &agent;
                scope.spawn(move || {
                    let script = format!("seq 1 20000 | sed s/^/{i}:/; echo done{i} >&2; exit {i}");
                    (i, agent.run(&["sh", "-c", &script]))
                })
            })
            .collect();
        for run in runs {
            let (i, o) = run.join().unwrap();
            assert_eq!(o.exited().code, Some(i));
            let want: String = (1..=20000).map(|n| format!("{i}:{n}\n")).collect();
            assert!(
                o.out() == want,
                "exec {i}: wrong stdout ({} bytes)",
                o.stdout.len()
            );
            assert_eq!(o.err(), format!("done{i}\n"));
        }
    });
}

#[test]
fn unknown_command_is_127() {
    let agent = Agent::start();
    let o = agent.run(&["no-such-command-here", "x"]);
    assert_eq!(o.pid, 0, "it must not start");
    assert_eq!(o.exited().code, Some(127));
    assert_eq!(
        o.exited().error.as_deref(),
        Some("no-such-command-here: command not found")
    );
    let o = agent.run(&["/no/such/file"]);
    assert_eq!(o.exited().code, Some(127));
}

#[test]
fn what_cannot_run_is_126() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let agent = Agent::start();
    let o = agent.run(&[plain.to_str().unwrap()]);
    assert_eq!(o.exited().code, Some(126));
    let error = o.exited().error.clone().unwrap();
    assert!(
        error.contains("plain.sh") && error.contains("not executable"),
        "{error}"
    );

    let o = agent.run(&[dir.path().to_str().unwrap()]);
    assert_eq!(o.exited().code, Some(126));
    assert!(o
        .exited()
        .error
        .as_ref()
        .unwrap()
        .contains("is a directory"));

    let mut req = request(&["true"]);
    req.workdir = Some("/no/such/dir".into());
    let o = agent.exec(&req).finish();
    assert_eq!(o.exited().code, Some(126));
    assert!(o
        .exited()
        .error
        .as_ref()
        .unwrap()
        .contains("workdir /no/such/dir"));

    let mut req = request(&["true"]);
    req.uid = Some(u32::MAX);
    let o = agent.exec(&req).finish();
    assert_eq!(o.exited().code, Some(126));
    assert!(o
        .exited()
        .error
        .as_ref()
        .unwrap()
        .contains("uid 4294967295"));

    // The agent serves on.
    assert_eq!(agent.run(&["true"]).exited().code, Some(0));
}

#[test]
fn exec_failures_after_the_fork_race_no_reaping() {
    // A missing interpreter fails in execve, after the fork: std reaps that
    // child itself, so the agent's reaper must not take it first (std would
    // panic). Many at once, with other processes ending meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bad-interpreter");
    std::fs::write(&script, "#!/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = Agent::start();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..25 {
                    assert_eq!(agent.run(&["true"]).exited().code, Some(0));
                }
            });
            scope.spawn(|| {
                for _ in 0..25 {
                    let o = agent.run(&[script.to_str().unwrap()]);
                    assert!(o.errors.is_empty(), "{:?}", o.errors);
                    assert_eq!(o.exited().code, Some(126));
                    let error = o.exited().error.clone().unwrap();
                    assert!(error.contains("cannot run"), "{error}");
                }
            });
        }
    });
}

#[test]
fn a_background_process_does_not_hold_exited_back() {
    let agent = Agent::start();
    // The background subshell keeps stdout open and writes after the main
    // process ended: Exited comes without waiting for it.
    let o = agent.run(&["sh", "-c", "(sleep 3; echo late) & echo done"]);
    // The background subshell is still in the session's process group.
    // SAFETY: kill takes no pointers.
    unsafe { libc::kill(-(o.pid as i32), libc::SIGKILL) };
    assert_eq!(o.exited().code, Some(0));
    assert_eq!(o.out(), "done\n");
}
