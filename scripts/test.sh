#!/usr/bin/env bash
# The project's test command (README, .ci/run). Runs as root on Debian 12:
#   1. scripts/setup.sh (idempotent: packages, cargo tools, guest kernel,
#      test initramfs)
#   2. cargo fmt --check, cargo clippy -D warnings
#   3. release build of every binary (the tests run the real daemon)
#   4. cargo test --workspace --release: unit tests, the vhost-user driver
#      tests, real QEMU guests, pjdfstest and fsx through the host FUSE mode.
#   5. an 80-second fuzz smoke run (fuzz/: 20 s per cargo-fuzz target).
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

step "fuzz smoke run: 20 s per target (fuzz/, cargo-fuzz on nightly)"
if cargo +nightly --version >/dev/null 2>&1; then
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  for target in fuse_request virtio_chain agent_frame oci_layer; do
    # New inputs go to the scratch dir; the corpus in the repo is only read.
    mkdir -p "$scratch/$target"
    (cd fuzz && cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time=20 -timeout=10 -rss_limit_mb=4096)
  done
else
  echo "no nightly toolchain (rustup toolchain install nightly): fuzz smoke run NOT run" >&2
fi

step "all tests passed in $((SECONDS - t0)) s"
