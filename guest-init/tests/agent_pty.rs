//! Terminal sessions of the agent: a pty of the asked size, resizes,
//! Ctrl-C typed by the host, and end of input.

mod common;

use common::{request, Agent, Session};
use guest_init::protocol::{ExecRequest, Kind, WindowSize};

fn tty_request(argv: &[&str], rows: u16, cols: u16) -> ExecRequest {
    let mut req = request(argv);
    req.tty = Some(WindowSize { rows, cols });
    req.stdin = true;
    req
}

/// Reads the session's output until it contains `want`.
fn read_until(s: &Session<'_>, want: &str) -> String {
    let mut seen = Vec::new();
    loop {
        let f = s.next();
        assert_eq!(
            f.kind,
            Kind::Stdout,
            "{f:?}; output so far {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&f.payload);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if text.contains(want) {
            return text;
        }
    }
}

#[test]
fn the_process_gets_a_terminal_of_the_asked_size() {
    let agent = Agent::start();
    let o = agent
        .exec(&tty_request(
            &["sh", "-c", "tty; stty size; echo err >&2"],
            30,
            100,
        ))
        .finish();
    assert_eq!(o.exited().code, Some(0), "{}", o.out());
    let out = o.out();
    assert!(out.contains("/dev/pts/"), "{out:?}");
    // Both streams arrive merged on the terminal, with its line endings.
    assert!(out.contains("30 100\r\nerr\r\n"), "{out:?}");
    assert!(o.stderr.is_empty());
}

#[test]
fn a_resize_reaches_the_terminal() {
    let agent = Agent::start();
    let s = agent.exec(&tty_request(
        &["sh", "-c", "stty size; read x; stty size"],
        24,
        80,
    ));
    s.started();
    read_until(&s, "24 80");
    s.send_json(
        Kind::Resize,
        &WindowSize {
            rows: 40,
            cols: 120,
        },
    );
    s.stdin(b"go\n");
    read_until(&s, "40 120");
    let o = s.finish();
    assert_eq!(o.exited().code, Some(0));
}

#[test]
fn ctrl_c_from_the_host_interrupts_the_process() {
    let agent = Agent::start();
    let s = agent.exec(&tty_request(&["sleep", "30"], 24, 80));
    s.started();
    s.stdin(&[0x03]);
    let o = s.finish();
    assert_eq!(o.exited().signal, Some(libc::SIGINT), "{o:?}");
}

#[test]
fn input_is_typed_and_end_of_input_is_ctrl_d() {
    let agent = Agent::start();
    let s = agent.exec(&tty_request(&["cat"], 24, 80));
    s.started();
    s.stdin(b"typed line\n");
    read_until(&s, "typed line\r\ntyped line\r\n");
    s.eof();
    let o = s.finish();
    assert_eq!(o.exited().code, Some(0));
}

#[test]
fn resizing_a_session_without_a_terminal_is_an_error() {
    let agent = Agent::start();
    let mut req = request(&["cat"]);
    req.stdin = true;
    let s = agent.exec(&req);
    s.started();
    s.send_json(Kind::Resize, &WindowSize { rows: 1, cols: 1 });
    assert!(s.error().contains("no terminal"));
    s.eof();
    assert_eq!(s.finish().exited().code, Some(0));
}
