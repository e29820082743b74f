#!/usr/bin/env bash
# Installs everything the project needs on a Debian 12 machine, idempotently:
# Debian packages, cargo tools (pjdfstest, fsx) and the guest kernel.
# Safe to run again; each step is skipped when already done.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { printf 'setup: %s\n' "$*" >&2; }

need_pkgs=(
  qemu-system-x86 busybox-static cpio e2fsprogs kmod attr fuse3
  libacl1-dev libseccomp-dev libcap-ng-dev pkg-config xfsprogs dosfstools
  util-linux procps lz4 btrfs-progs
  docker-registry skopeo umoci mmdebstrap apache2-utils openssl
  golang-go curl
)

missing=()
for p in "${need_pkgs[@]}" qemu-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
qemu_utils_ver=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)

if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # A mirror that fails one download mid-run is retried, not fatal.
  apt=(apt-get -o Acquire::Retries=3)
  $SUDO "${apt[@]}" update -qq
  # qemu-system-x86 (bookworm 7.2) conflicts with a backported qemu-utils 10.x:
  # install it alone first (apt replaces qemu-utils), then qemu-utils again.
  if ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q 'install ok installed'; then
    $SUDO "${apt[@]}" install -y -qq qemu-system-x86 >/dev/null
  fi
  rest=()
  for p in "${missing[@]}"; do [ "$p" = qemu-system-x86 ] || rest+=("$p"); done
  # qemu-utils may have been removed by the step above; ask for it again.
  rest+=(qemu-utils)
  $SUDO "${apt[@]}" install -y -qq "${rest[@]}" >/dev/null
else
  log "Debian packages present (qemu-utils $qemu_utils_ver)"
fi

# Rust toolchain: comes with the machine image (rustup); it cannot be fetched
# here, so only check for it.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v cargo >/dev/null ||
  { log "cargo not found: install a Rust toolchain (rustup, stable >= 1.85)"; exit 1; }
for sub in fmt clippy; do
  cargo "$sub" --version >/dev/null 2>&1 ||
    { log "cargo $sub missing: rustup component add ${sub/fmt/rustfmt}"; exit 1; }
done

# Reference test tools from crates.io, pinned: the tests parse their output.
tools=(pjdfstest@0.2.2 fsx@0.3.2)
for spec in "${tools[@]}"; do
  tool=${spec%@*} version=${spec#*@}
  have=$("$tool" --version 2>/dev/null || true)
  if [ "$have" != "$tool $version" ]; then
    log "cargo install $tool $version"
    cargo install --locked -q --force "$tool" --version "$version"
  fi
done

# cargo-fuzz for the fuzz smoke run of scripts/test.sh (fuzz/; it builds
# with the nightly toolchain, which the machine image may or may not have).
if [ "$(cargo-fuzz --version 2>/dev/null || true)" != "cargo-fuzz 0.13.2" ]; then
  log "cargo install cargo-fuzz 0.13.2"
  cargo install --locked -q --force cargo-fuzz --version 0.13.2
fi

# Reference daemon for scripts/bench-daemon and scripts/bench-guest-io:
# virtiofsd 1.14.0 under target/bench/ (skipped when already there).
"$here/lib/virtiofsd-ref.sh" >/dev/null

# Guest kernel built for msb (scripts/guest-kernel/config) into
# target/guest/msb-kernel; a no-op when the cached build is current (a cold
# build is ~8 CPU-minutes). Debian's cloud kernel, for `msb run --kernel`,
# is optional: scripts/fetch-kernel.sh.
"$here/build-kernel.sh"

# Initramfs for the real-guest tests (rebuilt only when its inputs change).
if [ -f "$here/build-test-initramfs.sh" ]; then
  bash "$here/build-test-initramfs.sh"
fi
log "done"
"$here/build-initramfs.sh" && (cd "$here/.." && cargo build --release --quiet -p virtiofsd-msb) # msb run: default initramfs (target/guest/msb-initramfs.cpio) + daemon next to target/release/msb
