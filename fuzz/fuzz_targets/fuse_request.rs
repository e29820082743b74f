//! Raw FUSE requests into the daemon's dispatcher, over a real
//! `ConfinedFs` serving a temporary directory (strict stat
//! virtualization, xattrs, an 8 MiB quota).
//!
//! The input is a sequence of requests, each as long as its header's `len`
//! field says (cut to what is left), sent after a `FUSE_INIT`. State
//! (node ids, handles, files made) carries over between inputs, as in a
//! long guest session; every 4096 inputs the share is made afresh.
//!
//! Oracles, besides panics and sanitizer reports: a file and a directory
//! next to the share must never change, and nothing may appear next to it.

#![no_main]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, Reader};
use libfuzzer_sys::fuzz_target;
use virtiofsd_msb::filesystem::{ConfinedFs, FsConfig};
use virtiofsd_msb::policy::QuotaConfig;
use virtiofsd_msb::protocol::{Dispatcher, Outcome};

/// Inputs served by one share before it is made afresh.
const INPUTS_PER_SHARE: u32 = 4096;

/// Room for the largest reply (a 1 MiB read) plus its header.
const REPLY_BUF: usize = (1 << 20) + 4096;

struct Rig {
    dispatcher: Dispatcher<ConfinedFs>,
    sink: File,
    root: tempfile::TempDir,
    outside: Vec<(PathBuf, (i64, i64, u64))>,
    served: u32,
}

/// (mtime, mtime_nsec, size) of `p`.
fn stamp(p: &Path) -> (i64, i64, u64) {
    let m = std::fs::symlink_metadata(p).expect("outside entry vanished");
    (m.mtime(), m.mtime_nsec(), m.size())
}

impl Rig {
    fn new() -> Rig {
        let root = tempfile::Builder::new()
            .prefix("msb-fuzz-fuse-")
            .tempdir()
            .expect("tempdir");
        let share = root.path().join("share");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(share.join("d/e")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"outside the share").unwrap();
        std::fs::write(share.join("f"), b"hello, fuzzer").unwrap();
        std::fs::write(share.join("d/g"), vec![7u8; 9000]).unwrap();
        std::os::unix::fs::symlink("../outside/secret", share.join("out")).unwrap();
        std::os::unix::fs::symlink("/", share.join("slash")).unwrap();
        std::fs::hard_link(share.join("f"), share.join("f2")).unwrap();
        // A FIFO nobody writes to: opening or reading it must not hang.
        let fifo =
            std::ffi::CString::new(share.join("p").into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; mkfifo takes no other pointer.
        unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) };
        let mut config = FsConfig::new(share, 256);
        config.quota = Some(QuotaConfig {
            limit_bytes: 8 << 20,
            accounting_file: None,
        });
        let fs = ConfinedFs::new(config).expect("ConfinedFs");
        let watched = [
            outside.clone(),
            outside.join("secret"),
            root.path().to_path_buf(),
        ];
        Rig {
            dispatcher: Dispatcher::new(Arc::new(fs)),
            sink: File::options().write(true).open("/dev/null").unwrap(),
            outside: watched.iter().map(|p| (p.clone(), stamp(p))).collect(),
            root,
            served: 0,
        }
    }

    fn send(&self, msg: &[u8]) {
        let mut req = msg.to_vec();
        let mut out = vec![0u8; REPLY_BUF];
        let Ok(r) = Reader::<()>::from_fuse_buffer(FuseBuf::new(&mut req)) else {
            return;
        };
        let Ok(w) = FuseDevWriter::<()>::new(self.sink.as_raw_fd(), &mut out) else {
            return;
        };
        // A contended SETLKW (Outcome::Deferred) would wait for another
        // owner's unlock: it is dropped unanswered here.
        let _: Outcome = self.dispatcher.handle_message(r, w.into());
    }

    fn check_outside(&self) {
        for (p, before) in &self.outside {
            assert_eq!(&stamp(p), before, "{} changed", p.display());
        }
        let names: Vec<_> = std::fs::read_dir(self.root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "something appeared next to the share: {names:?}"
        );
    }
}

/// `FUSE_INIT` 7.36 asking for everything.
fn init_request() -> Vec<u8> {
    let mut body = Vec::new();
    for v in [7u32, 36, 1 << 20, u32::MAX, u32::MAX] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(&[0u8; 44]);
    header(26, 1, 0, &body)
}

fn header(opcode: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + body.len());
    v.extend_from_slice(&((40 + body.len()) as u32).to_le_bytes());
    v.extend_from_slice(&opcode.to_le_bytes());
    v.extend_from_slice(&unique.to_le_bytes());
    v.extend_from_slice(&nodeid.to_le_bytes());
    v.extend_from_slice(&[0u8; 16]); // uid, gid, pid, extlen, padding: root
    v.extend_from_slice(body);
    v
}

static RIG: Mutex<Option<Rig>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = RIG.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_none_or(|r| r.served >= INPUTS_PER_SHARE) {
        *guard = None;
        *guard = Some(Rig::new());
    }
    let rig = guard.as_mut().unwrap();
    rig.served += 1;
    rig.send(&init_request());
    let mut rest = data;
    while !rest.is_empty() {
        let len = if rest.len() >= 4 {
            u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize
        } else {
            rest.len()
        };
        let len = len.clamp(1, rest.len());
        rig.send(&rest[..len]);
        rest = &rest[len..];
    }
    rig.check_outside();
});
