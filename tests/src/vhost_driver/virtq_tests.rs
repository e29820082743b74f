//! Checks the hand-written driver side against virtio-queue's device side.

use super::*;
use crate::vhost_driver::memory::SharedMemory;
use std::sync::Arc;
use std::thread;
use virtio_queue::{Queue, QueueT};

const SIZE: u16 = 16;

fn setup() -> (Arc<SharedMemory>, SplitQueue) {
    let mem = Arc::new(SharedMemory::new(GuestAddress(0), 1 << 20).unwrap());
    let layout = QueueLayout::new(GuestAddress(0), SIZE, 64 * 1024);
    let q = SplitQueue::new(1, layout, mem.mem()).unwrap();
    (mem, q)
}

/// A device that, per kick, answers every available chain by writing the
/// reversed readable bytes into the writable buffers.
fn spawn_device(
    mem: Arc<SharedMemory>,
    layout: QueueLayout,
    kick: EventFd,
    call: EventFd,
    rounds: usize,
) -> thread::JoinHandle<Vec<Vec<(u64, u32, bool)>>> {
    thread::spawn(move || {
        let mut q = Queue::new(SIZE).unwrap();
        q.set_size(layout.size);
        q.try_set_desc_table_address(layout.desc).unwrap();
        q.try_set_avail_ring_address(layout.avail).unwrap();
        q.try_set_used_ring_address(layout.used).unwrap();
        q.set_ready(true);
        let m = mem.mem();
        let mut seen = Vec::new();
        for _ in 0..rounds {
            // Blocking wait for the kick: the fd is non-blocking, so poll.
            while kick.read().is_err() {
                thread::sleep(Duration::from_millis(1));
            }
            while let Some(chain) = q.pop_descriptor_chain(m) {
                let head = chain.head_index();
                let descs: Vec<_> = chain.clone().collect();
                seen.push(
                    descs
                        .iter()
                        .map(|d| (d.addr().0, d.len(), d.is_write_only()))
                        .collect(),
                );
                let mut input = Vec::new();
                for d in descs.iter().filter(|d| !d.is_write_only()) {
                    let mut b = vec![0u8; d.len() as usize];
                    m.read_slice(&mut b, d.addr()).unwrap();
                    input.extend(b);
                }
                input.reverse();
                let mut written = 0u32;
                let mut src = &input[..];
                for d in descs.iter().filter(|d| d.is_write_only()) {
                    let n = src.len().min(d.len() as usize);
                    m.write_slice(&src[..n], d.addr()).unwrap();
                    src = &src[n..];
                    written += n as u32;
                }
                q.add_used(m, head, written).unwrap();
            }
            call.write(1).unwrap();
        }
        seen
    })
}

fn clone_fd(fd: &EventFd) -> EventFd {
    fd.try_clone().unwrap()
}

#[test]
fn layout_is_aligned_and_disjoint() {
    let l = QueueLayout::new(GuestAddress(100), 256, 8192);
    assert_eq!(l.desc.0 % 4096, 0);
    assert_eq!(l.avail.0, l.desc.0 + 16 * 256);
    assert_eq!(l.used.0 % 4, 0);
    assert!(l.used.0 >= l.avail.0 + 6 + 2 * 256);
    assert!(l.arena.0 >= l.used.0 + 6 + 8 * 256);
    assert_eq!(l.arena.0 % 4096, 0);
    assert_eq!(l.end().0, l.arena.0 + 8192);
}

#[test]
fn device_sees_our_chains_and_we_read_its_replies() {
    let (mem, mut q) = setup();
    let layout = *q.layout();
    let dev = spawn_device(
        mem.clone(),
        layout,
        clone_fd(q.kick_fd()),
        clone_fd(q.call_fd()),
        2,
    );
    let chains = vec![
        vec![Segment::Readable(b"hello".to_vec()), Segment::Writable(16)],
        vec![
            Segment::Readable(b"ab".to_vec()),
            Segment::Readable(b"cd".to_vec()),
            Segment::Writable(3),
            Segment::Writable(3),
        ],
    ];
    let out = q
        .exchange(mem.mem(), &chains, Duration::from_secs(10))
        .unwrap();
    assert_eq!(out[0].used_len, 5);
    assert_eq!(out[0].written, b"olleh");
    assert_eq!(out[1].used_len, 4);
    assert_eq!(out[1].written, b"dcba");
    // A second exchange reuses descriptors and arena and keeps indices going.
    let out = q
        .exchange(
            mem.mem(),
            &[vec![
                Segment::Readable(b"xyz".to_vec()),
                Segment::Writable(2),
            ]],
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(out[0].written, b"zy");
    assert_eq!(q.completed(), 3);
    let seen = dev.join().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].len(), 4);
    assert!(!seen[1][1].2 && seen[1][2].2);
}

#[test]
fn ring_indices_wrap() {
    let (mem, mut q) = setup();
    let layout = *q.layout();
    let rounds = 3 * usize::from(SIZE) + 1;
    let dev = spawn_device(
        mem.clone(),
        layout,
        clone_fd(q.kick_fd()),
        clone_fd(q.call_fd()),
        rounds,
    );
    for i in 0..rounds {
        let msg = format!("m{i}").into_bytes();
        let out = q
            .exchange(
                mem.mem(),
                &[vec![Segment::Readable(msg.clone()), Segment::Writable(8)]],
                Duration::from_secs(10),
            )
            .unwrap();
        let mut want = msg;
        want.reverse();
        assert_eq!(out[0].written, want);
    }
    dev.join().unwrap();
}

#[test]
fn silent_device_times_out_and_breaks_the_queue() {
    let (mem, mut q) = setup();
    let err = q
        .exchange(
            mem.mem(),
            &[vec![Segment::Readable(vec![1]), Segment::Writable(4)]],
            Duration::from_millis(100),
        )
        .unwrap_err();
    assert!(
        matches!(err, DriverError::Timeout { queue: 1, .. }),
        "{err}"
    );
    assert!(q.broken().is_some());
    let err = q
        .exchange(
            mem.mem(),
            &[vec![Segment::Writable(4)]],
            Duration::from_millis(10),
        )
        .unwrap_err();
    assert!(matches!(err, DriverError::QueueBroken { .. }), "{err}");
}

#[test]
fn oversized_requests_are_refused_before_posting() {
    let (mem, mut q) = setup();
    let too_many = vec![vec![Segment::Writable(1); usize::from(SIZE) + 1]];
    assert!(matches!(
        q.exchange(mem.mem(), &too_many, Duration::from_millis(10)),
        Err(DriverError::Request(_))
    ));
    let too_big = vec![vec![Segment::Writable(128 * 1024)]];
    assert!(matches!(
        q.exchange(mem.mem(), &too_big, Duration::from_millis(10)),
        Err(DriverError::Request(_))
    ));
    assert!(q.broken().is_none());
}
