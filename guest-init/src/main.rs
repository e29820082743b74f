//! `msb-init`: PID 1 of the micro-VM guest (see `guest_init::init`).
//!
//! Run as anything but PID 1 it refuses, so it cannot power off a host.

fn main() {
    if std::process::id() != 1 {
        eprintln!("msb-init: must run as PID 1 inside an msb guest");
        std::process::exit(2);
    }
    guest_init::init::run_as_pid1()
}
