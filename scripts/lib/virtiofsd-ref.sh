#!/usr/bin/env bash
# The reference daemon the benchmarks compare with: virtiofsd 1.14.0 from
# crates.io, installed once under target/bench/ (building it needs
# libseccomp-dev, libcap-ng-dev and pkg-config; ~1 minute). Idempotent.
# Prints the binary's path on stdout.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
root="$top/target/bench/virtiofsd-1.14.0"
bin="$root/bin/virtiofsd"
if [ "$("$bin" --version 2>/dev/null || true)" != "virtiofsd 1.14.0" ]; then
  printf 'virtiofsd-ref: cargo install virtiofsd 1.14.0 into %s\n' "$root" >&2
  cargo install --locked -q --force virtiofsd --version 1.14.0 --root "$root" >&2
fi
printf '%s\n' "$bin"
