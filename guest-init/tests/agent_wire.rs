//! The agent's connection: handshake, heartbeat, malformed input answered
//! with errors (never a crash or a hang), unknown and duplicate sessions,
//! Shutdown, and a host that goes away.

mod common;

use std::time::Duration;

use common::{gone_within, request, Agent};
use guest_init::agent::ServeEnd;
use guest_init::protocol::{
    ErrorReply, Frame, Hello, Kind, Ready, ShutdownRequest, SignalRequest, MAX_PAYLOAD,
    PROTOCOL_VERSION,
};

fn error_text(f: &Frame) -> String {
    assert_eq!(f.kind, Kind::Error, "{f:?}");
    f.parse::<ErrorReply>().unwrap().message
}

#[test]
fn hello_is_answered_with_ready_and_a_wrong_version_is_refused() {
    let agent = Agent::connect(common::options());
    // Nothing but Hello and Ping before the handshake.
    agent.send(&Frame::json(Kind::Exec, 3, &request(&["true"])));
    let e = agent.next_other();
    assert_eq!(e.session, 3);
    assert!(error_text(&e).contains("Hello first"));

    agent.send(&Frame::json(Kind::Hello, 0, &Hello { version: 99 }));
    let e = error_text(&agent.next_other());
    assert!(
        e.contains("99") && e.contains(&PROTOCOL_VERSION.to_string()),
        "{e}"
    );

    agent.send(&Frame::json(
        Kind::Hello,
        0,
        &Hello {
            version: PROTOCOL_VERSION,
        },
    ));
    let ready = agent.next_other();
    assert_eq!(ready.kind, Kind::Ready);
    let ready: Ready = ready.parse().unwrap();
    assert_eq!(ready.version, PROTOCOL_VERSION);
    assert!(ready.uptime_ms > 0);
}

#[test]
fn ping_is_answered_while_execs_run() {
    let agent = Agent::start();
    let busy = agent.exec(&request(&[
        "sh",
        "-c",
        "yes | head -c 300000000 >/dev/null; sleep 30",
    ]));
    busy.started();
    for i in 0..20u32 {
        let payload = i.to_le_bytes().to_vec();
        agent.send(&Frame::data(Kind::Ping, 0, &payload));
        let pong = agent.next_other();
        assert_eq!((pong.kind, pong.payload), (Kind::Pong, payload));
    }
    busy.send_json(Kind::Signal, &SignalRequest { signal: 9 });
    assert_eq!(busy.finish().exited().signal, Some(9));
}

#[test]
fn malformed_frames_get_errors_and_the_agent_serves_on() {
    let agent = Agent::start();
    // Too short to hold a header.
    agent.send_raw(&[3, 0, 0, 0, b'a', b'b', b'c']);
    assert!(error_text(&agent.next_other()).contains("shorter than its header"));
    // Unknown kind, answered for its session.
    let mut unknown = 7u32.to_le_bytes().to_vec();
    unknown.push(200);
    unknown.extend_from_slice(&41u32.to_le_bytes());
    unknown.extend_from_slice(b"zz");
    agent.send_raw(&unknown);
    let e = agent.next_other();
    assert_eq!(e.session, 41);
    assert!(error_text(&e).contains("unknown frame kind 200"));
    // Longer than allowed: read through and refused.
    let len = (5 + MAX_PAYLOAD + 1) as u32;
    let mut big = len.to_le_bytes().to_vec();
    big.push(Kind::Stdin as u8);
    big.extend_from_slice(&42u32.to_le_bytes());
    big.resize(big.len() + MAX_PAYLOAD + 1, 0xEE);
    agent.send_raw(&big);
    let e = agent.next_other();
    assert_eq!(e.session, 42);
    assert!(error_text(&e).contains("exceeds"));
    // Bad JSON, unknown fields, an empty argv, a reply kind sent to the agent.
    for (kind, payload, want) in [
        (Kind::Exec, &b"{not json"[..], "bad Exec frame"),
        (
            Kind::Exec,
            br#"{"argv":["true"],"rootkit":1}"#,
            "unknown field",
        ),
        (Kind::Fs, br#"{"op":"explode","path":"/"}"#, "bad Fs frame"),
        (Kind::Exec, br#"{"argv":[]}"#, "empty argv"),
        (Kind::Signal, b"[]", "bad Signal frame"),
        (Kind::Stdout, b"data", "from the agent to the host"),
    ] {
        agent.send(&Frame::data(kind, 43, payload));
        let e = agent.next_other();
        assert_eq!(e.session, 43);
        let text = error_text(&e);
        assert!(text.contains(want), "{kind:?}: {text}");
    }
    // Session 0 is the connection.
    agent.send(&Frame::json(Kind::Exec, 0, &request(&["true"])));
    assert!(error_text(&agent.next_other()).contains("session 0"));
    // Still serving.
    agent.send(&Frame::data(Kind::Ping, 0, b"alive"));
    assert_eq!(agent.next_other().payload, b"alive");
    let o = agent.run(&["echo", "fine"]);
    assert_eq!(o.out(), "fine\n");
}

#[test]
fn unknown_and_duplicate_sessions_are_errors() {
    let agent = Agent::start();
    let stray = agent.session_with_id(999);
    stray.send(Kind::Stdin, b"x".to_vec());
    assert!(stray.error().contains("no session 999"));
    stray.send_json(Kind::Signal, &SignalRequest { signal: 15 });
    assert!(stray.error().contains("no session 999"));

    let long = agent.exec(&request(&["sleep", "30"]));
    long.started();
    long.send_json(Kind::Exec, &request(&["true"]));
    assert!(long.error().contains("already in use"));
    long.send(Kind::Stdin, b"x".to_vec());
    assert!(long.error().contains("takes no stdin"));
    long.send_json(Kind::Signal, &SignalRequest { signal: 0 });
    assert!(long.error().contains("no signal number 0"));
    long.send_json(Kind::Signal, &SignalRequest { signal: 15 });
    assert_eq!(long.finish().exited().signal, Some(15));
    // Frames for a session that just ended are dropped quietly.
    long.send_json(Kind::Signal, &SignalRequest { signal: 15 });
    assert!(long.next_within(Duration::from_millis(300)).is_none());
    // Its id can be used again.
    let again = agent.session_with_id(long.id);
    drop(long);
    again.send_json(Kind::Exec, &request(&["echo", "again"]));
    assert_eq!(again.finish().out(), "again\n");
}

#[test]
fn shutdown_terms_then_kills_and_ends_serving() {
    let agent = Agent::start();
    let polite = agent.exec(&request(&["sleep", "30"]));
    let polite_pid = polite.started();
    // Ignores SIGTERM: needs the SIGKILL after the grace.
    let stubborn = agent.exec(&request(&[
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 1; done",
    ]));
    let stubborn_pid = stubborn.started();
    assert_eq!(stubborn.next().payload, b"ready\n");
    agent.send(&Frame::json(
        Kind::Shutdown,
        0,
        &ShutdownRequest { grace_ms: 300 },
    ));
    assert_eq!(polite.finish().exited().signal, Some(15));
    assert_eq!(stubborn.finish().exited().signal, Some(9));
    assert!(gone_within(polite_pid, Duration::from_secs(10)));
    assert!(gone_within(stubborn_pid, Duration::from_secs(10)));
    drop((polite, stubborn));
    assert_eq!(agent.join().unwrap(), ServeEnd::Shutdown);
}

#[test]
fn a_host_that_goes_away_ends_its_sessions() {
    let agent = Agent::start();
    let s = agent.exec(&request(&["sleep", "30"]));
    let pid = s.started();
    drop(s);
    assert_eq!(agent.close().unwrap(), ServeEnd::Disconnected);
    assert!(
        gone_within(pid, Duration::from_secs(10)),
        "pid {pid} still runs"
    );
}

#[test]
fn a_stream_cut_inside_a_frame_is_an_error_not_a_hang() {
    let agent = Agent::start();
    agent.send_raw(&[100, 0, 0, 0, Kind::Ping as u8]);
    let end = agent.close();
    assert_eq!(end.unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
}
