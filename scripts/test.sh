#!/usr/bin/env bash
# The project's test command (README, .ci/run). Runs as root on Debian 12:
#   1. scripts/setup.sh (idempotent: packages, cargo tools, guest kernel,
#      test initramfs)
#   2. cargo fmt --check, cargo clippy -D warnings
#   3. release build of every binary (the tests run the real daemon)
#   4. cargo test --workspace --release: unit tests, the vhost-user driver
#      tests, real QEMU guests, pjdfstest and fsx through the host FUSE mode.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test fsx`).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

step() { printf '\n==> %s\n' "$*" >&2; }
t0=$SECONDS

step "setup"
"$top/scripts/setup.sh"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build --release (binaries and the SDK examples)"
cargo build --workspace --release --bins --examples --locked

step "cargo test --release"
cargo test --workspace --release --locked --no-fail-fast "$@"

step "all tests passed in $((SECONDS - t0)) s"
