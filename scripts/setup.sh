#!/usr/bin/env bash
# Installs everything the project needs on a Debian 12 machine, idempotently:
# Debian packages, cargo tools (pjdfstest, fsx) and the guest kernel.
# Safe to run again; each step is skipped when already done.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { printf 'setup: %s\n' "$*" >&2; }

need_pkgs=(
  qemu-system-x86 busybox-static cpio e2fsprogs kmod attr fuse3
  libacl1-dev libseccomp-dev libcap-ng-dev pkg-config xfsprogs dosfstools
  util-linux procps
)

missing=()
for p in "${need_pkgs[@]}" qemu-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
qemu_utils_ver=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)

if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # qemu-system-x86 (bookworm 7.2) conflicts with a backported qemu-utils 10.x:
  # install it alone first (apt replaces qemu-utils), then qemu-utils again.
  if ! dpkg-query -W -f='${Status}' qemu-system-x86 2>/dev/null | grep -q 'install ok installed'; then
    $SUDO apt-get install -y -qq qemu-system-x86 >/dev/null
  fi
  rest=()
  for p in "${missing[@]}"; do [ "$p" = qemu-system-x86 ] || rest+=("$p"); done
  # qemu-utils may have been removed by the step above; ask for it again.
  rest+=(qemu-utils)
  $SUDO apt-get install -y -qq "${rest[@]}" >/dev/null
else
  log "Debian packages present (qemu-utils $qemu_utils_ver)"
fi

# Reference test tools from crates.io.
export PATH="$HOME/.cargo/bin:$PATH"
for tool in pjdfstest fsx; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "cargo install $tool"
    cargo install --locked -q "$tool"
  fi
done

# Guest kernel (Debian's cloud kernel) into target/guest/.
"$here/fetch-kernel.sh"
log "done"
