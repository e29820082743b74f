#!/usr/bin/env bash
# Builds msb's guest kernel from Debian's linux-source-6.1 package with the
# configuration in scripts/guest-kernel/config (a fragment applied on top of
# `make allnoconfig`; see that file), and installs it as
#
#   $MSB_GUEST_DIR/msb-kernel/vmlinux   uncompressed ELF with a PVH entry
#                                       (QEMU and cloud-hypervisor boot it
#                                       directly, no decompression)
#   $MSB_GUEST_DIR/msb-kernel/version   kernel release, e.g. 6.1.192-msb
#   $MSB_GUEST_DIR/msb-kernel/config    the full .config
#   $MSB_GUEST_DIR/msb-kernel/lib/modules/<release>/modules.builtin
#                                       what is built in, and an empty
#                                       modules.dep: the kernel has no
#                                       modules, and the initramfs builders
#                                       check against these what they expect
#   $MSB_GUEST_DIR/msb-kernel/stamp     the cache key of this build
#
# MSB_GUEST_DIR defaults to <workspace>/target/guest, where `msb run` and the
# tests look. The cache key is a hash of the config fragment, this script,
# the linux-source-6.1 package version and the compiler version: when the
# installed kernel has the same key, the script does nothing. The source
# tree and the objects are kept in $MSB_GUEST_DIR/msb-kernel-build, so a
# config change rebuilds only what it touches.
#
# Installs what it needs with apt-get when missing (linux-source-6.1 and the
# build tools). Cold build: ~7 minutes on 2 cores.
#
# Usage: scripts/build-kernel.sh [--force]
#   --force   rebuild and reinstall even when the cache key matches
# Env: MSB_KERNEL_JOBS  parallel make jobs (default: nproc)
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
guest_dir="${MSB_GUEST_DIR:-$top/target/guest}"
dest="$guest_dir/msb-kernel"
build="$guest_dir/msb-kernel-build"
fragment="$top/scripts/guest-kernel/config"
self="$top/scripts/build-kernel.sh"
src_pkg=linux-source-6.1
tarball=/usr/src/$src_pkg.tar.xz
log() { printf 'build-kernel: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

force=0
case "${1:-}" in
  "") ;;
  --force) force=1 ;;
  -h | --help)
    sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//; /^set -e/d'
    exit 0
    ;;
  *) die "unknown argument $1 (see --help)" ;;
esac
[ -f "$fragment" ] || die "no kernel config fragment at $fragment"

# Build tools and the source package, from Debian, when missing.
need_pkgs=("$src_pkg" make gcc bc bison flex libelf-dev libssl-dev xz-utils)
missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o Acquire::Retries=3 update -qq
  $SUDO apt-get -o Acquire::Retries=3 install -y -qq "${missing[@]}" >/dev/null
fi
[ -f "$tarball" ] || die "$tarball missing although $src_pkg is installed"

src_version=$(dpkg-query -W -f='${Version}' "$src_pkg")
key=$(
  {
    echo "$src_pkg $src_version"
    gcc --version | head -n1
    sha256sum "$fragment" "$self" | cut -d' ' -f1
  } | sha256sum | cut -d' ' -f1
)
installed() { [ -f "$dest/vmlinux" ] && [ -f "$dest/stamp" ] && [ "$(cat "$dest/stamp")" = "$key" ]; }
if [ "$force" = 0 ] && installed; then
  exit 0
fi

# One builder at a time (setup.sh and a test harness may race).
mkdir -p "$guest_dir"
exec 9>"$guest_dir/msb-kernel.lock"
if command -v flock >/dev/null; then flock 9; fi
if [ "$force" = 0 ] && installed; then
  exit 0
fi

# Source tree, unpacked once per source package version.
tree="$build/src"
if [ "$(cat "$build/src.version" 2>/dev/null)" != "$src_version" ]; then
  log "unpacking $src_pkg $src_version"
  rm -rf "$build"
  mkdir -p "$build"
  tar -xJf "$tarball" -C "$build"
  mv "$build/$src_pkg" "$tree"
  echo "$src_version" >"$build/src.version"
fi

# Configure: allnoconfig with the fragment forced in, then defaults for
# whatever the fragment leaves open.
obj="$build/obj"
mkdir -p "$obj"
kmake() { make -s -C "$tree" O="$obj" ARCH=x86_64 "$@"; }
KCONFIG_ALLCONFIG="$fragment" kmake allnoconfig >/dev/null
kmake olddefconfig >/dev/null

# Every line of the fragment must have survived (a typo, or an option whose
# dependencies are not met, is dropped silently by Kconfig).
dropped=()
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) grep -qxF "$line" "$obj/.config" || dropped+=("$line") ;;
    "# CONFIG_"*" is not set")
      sym=${line#\# }
      sym=${sym%% *}
      grep -q "^$sym=" "$obj/.config" && dropped+=("$line")
      ;;
  esac
done <"$fragment"
[ ${#dropped[@]} -eq 0 ] ||
  die "Kconfig did not keep these lines of $fragment (dependencies not met or misspelt): ${dropped[*]}"

jobs=${MSB_KERNEL_JOBS:-$(nproc)}
log "building vmlinux ($src_pkg $src_version, $jobs jobs; a cold build takes minutes)"
start=$(date +%s)
kmake -j"$jobs" vmlinux >"$build/make.log" 2>&1 ||
  die "kernel build failed; the end of $build/make.log:
$(tail -n 30 "$build/make.log")"
release=$(kmake kernelrelease)

rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/lib/modules/$release"
cp "$obj/vmlinux" "$dest.tmp/vmlinux"
cp "$obj/.config" "$dest.tmp/config"
cp "$obj/modules.builtin" "$dest.tmp/lib/modules/$release/modules.builtin"
: >"$dest.tmp/lib/modules/$release/modules.dep"
echo "$release" >"$dest.tmp/version"
echo "$key" >"$dest.tmp/stamp"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
log "kernel $release in $dest ($(($(date +%s) - start)) s)"
