//! `msb-init`: PID 1 of the guest.
//!
//! The guest init is tracked in the project's issues; until it lands the
//! test guests boot a busybox shell init (scripts/build-test-initramfs.sh).
//! Run outside a guest, this binary says so and exits with status 2.

fn main() {
    eprintln!("msb-init: the guest init is not built yet; test guests use scripts/build-test-initramfs.sh");
    std::process::exit(2);
}
