//! Requests left in flight on one queue while others on the same queue
//! are answered (a guest does not wait for a blocked lock before sending
//! its next request). Built on the driver's [`Window`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::Opcode;
use msb_tests::vhost_driver::window::{wait_any, Window};
use msb_tests::vhost_driver::{FsDriver, OUT_HEADER_LEN};

/// Room for each request and reply.
const SLOT_BYTES: u32 = 256;

/// Up to `slots` requests in flight on one request queue; the queue is
/// this value's until it is dropped.
pub struct InFlight<'a> {
    fs: &'a FsDriver,
    window: Window<'a>,
    /// Errno (0: success) of each slot whose reply came back and was not
    /// taken yet.
    answered: HashMap<usize, i32>,
}

impl<'a> InFlight<'a> {
    /// Takes request queue `queue` of `fs` with `slots` slots.
    pub fn new(fs: &'a FsDriver, queue: usize, slots: usize) -> InFlight<'a> {
        InFlight {
            fs,
            window: fs.window(queue, slots, SLOT_BYTES, SLOT_BYTES).unwrap(),
            answered: HashMap::new(),
        }
    }

    /// Sends `opcode` on `node` with `body` in slot `slot` at once.
    pub fn send(&mut self, slot: usize, opcode: Opcode, node: u64, body: &[u8]) {
        let (_, bytes) = self.fs.encode(opcode as u32, node, body);
        self.window
            .submit(slot, &bytes, bytes.len() as u32, SLOT_BYTES)
            .unwrap();
        self.window.flush().unwrap();
    }

    /// Collects every reply that came back.
    fn harvest(&mut self) {
        let mut back = Vec::new();
        self.window.harvest(|slot, _| back.push(slot)).unwrap();
        for slot in back {
            let mut header = [0u8; OUT_HEADER_LEN];
            self.window.read_reply(slot, &mut header).unwrap();
            let error = i32::from_le_bytes(header[4..8].try_into().unwrap());
            self.answered.insert(slot, -error);
        }
    }

    /// The errno (0: success) of slot `slot`'s reply, waiting up to `max`;
    /// `None` when it is still in flight then.
    pub fn wait(&mut self, slot: usize, max: Duration) -> Option<i32> {
        let deadline = Instant::now() + max;
        loop {
            self.harvest();
            if let Some(e) = self.answered.remove(&slot) {
                return Some(e);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if !self.window.arm().unwrap() {
                wait_any(std::slice::from_ref(&self.window), deadline - now).unwrap();
            }
        }
    }

    /// Requests still in flight.
    pub fn in_flight(&mut self) -> usize {
        self.harvest();
        self.window.in_flight()
    }
}
