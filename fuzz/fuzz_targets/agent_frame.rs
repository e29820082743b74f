//! The agent protocol decoder (`guest-init`'s `protocol::read_frame`) on
//! arbitrary byte streams: frames are read until the stream ends or is cut,
//! each frame's payload is decoded as the message its kind names, and a
//! frame read back from its own encoding must be the same frame.

#![no_main]

use std::io::Cursor;

use guest_init::protocol::{
    encode, read_frame, ErrorReply, ExecRequest, Exited, Frame, FsReply, FsRequest, Hello,
    Incoming, Kind, Ready, ShutdownRequest, SignalRequest, Started, WindowSize,
};
use libfuzzer_sys::fuzz_target;

/// Decodes the payload as the message `frame.kind` carries (errors are
/// fine: the agent answers them with an Error frame).
fn decode_body(frame: &Frame) {
    let _ = match frame.kind {
        Kind::Hello => frame.parse::<Hello>().map(drop),
        Kind::Exec => frame.parse::<ExecRequest>().map(drop),
        Kind::Resize => frame.parse::<WindowSize>().map(drop),
        Kind::Signal => frame.parse::<SignalRequest>().map(drop),
        Kind::Shutdown => frame.parse::<ShutdownRequest>().map(drop),
        Kind::Fs => frame.parse::<FsRequest>().map(drop),
        Kind::Ready => frame.parse::<Ready>().map(drop),
        Kind::Started => frame.parse::<Started>().map(drop),
        Kind::Exited => frame.parse::<Exited>().map(drop),
        Kind::Error => frame.parse::<ErrorReply>().map(drop),
        Kind::FsDone => frame.parse::<FsReply>().map(drop),
        Kind::Ping | Kind::Pong | Kind::Stdin | Kind::Stdout | Kind::Stderr => Ok(()),
    };
}

fuzz_target!(|data: &[u8]| {
    let mut r = Cursor::new(data);
    // Every frame consumes at least its 4-byte length: this terminates.
    for _ in 0..=data.len() / 4 {
        match read_frame(&mut r) {
            Ok(Incoming::Frame(frame)) => {
                decode_body(&frame);
                let bytes = encode(&frame).expect("a decoded frame encodes");
                match read_frame(&mut Cursor::new(&bytes)) {
                    Ok(Incoming::Frame(again)) => assert_eq!(again, frame),
                    other => panic!("re-read of an encoded frame: {other:?}"),
                }
            }
            Ok(Incoming::Malformed { .. }) => {}
            Ok(Incoming::End) | Err(_) => return,
        }
    }
});
