#!/usr/bin/env bash
# Builds the base initramfs for the real-guest tests (tests/tests/guest_*.rs):
#   busybox-static (every applet as a /bin symlink), the guest kernel modules
#   needed for virtio-pci + virtiofs (+ virtio_blk, virtio_console) when the
#   kernel has them as modules (msb's own kernel has them built in: then
#   /etc/msb-modules is empty), the static lock helper /bin/msb-lock
#   (tests/guest/msb-lock.rs) and /init (tests/guest/init.sh).
# The per-test script is not in it: the harness appends a second cpio archive
# holding /test.sh (the kernel unpacks concatenated archives in order).
#
# Usage: scripts/build-test-initramfs.sh [--kernel-dir DIR] [OUT]
#   DIR  the kernel (default $MSB_GUEST_DIR/msb-kernel, scripts/build-kernel.sh;
#        Debian's cloud kernel is $MSB_GUEST_DIR/kernel, scripts/fetch-kernel.sh)
#   OUT  defaults to $MSB_GUEST_DIR/test-initramfs.cpio.gz
#        (MSB_GUEST_DIR defaults to <workspace>/target/guest).
# Idempotent: does nothing when OUT was built from the same inputs (a stamp
# of the inputs is kept next to OUT). Needs the kernel from scripts/setup.sh.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
guest_dir="${MSB_GUEST_DIR:-$top/target/guest}"
log() { printf 'build-test-initramfs: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
kdir="$guest_dir/msb-kernel"
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel-dir)
      [ $# -ge 2 ] || die "--kernel-dir needs a directory"
      kdir=$(cd "$2" 2>/dev/null && pwd) || die "no directory $2"
      shift 2
      ;;
    -*) die "unknown option $1" ;;
    *) [ -z "$out" ] || die "one OUT only"; out=$1; shift ;;
  esac
done
out="${out:-$guest_dir/test-initramfs.cpio.gz}"

# Wanted modules, by file name. Dependencies are added from modules.dep and
# everything is loaded in dependency order; built-in ones are skipped.
wanted=(virtio_pci fuse virtiofs virtio_blk virtio_console)

[ -f "$kdir/version" ] ||
  die "no guest kernel in $kdir: run scripts/setup.sh (or scripts/build-kernel.sh)"
version=$(cat "$kdir/version")
moddir="$kdir/lib/modules/$version"
[ -f "$moddir/modules.dep" ] || die "no $moddir/modules.dep: run scripts/setup.sh"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || die "busybox not found: run scripts/setup.sh (package busybox-static)"
if command -v file >/dev/null && ! file -L "$busybox" | grep -q 'statically linked\|static-pie'; then
  die "$busybox is not static: install busybox-static (scripts/setup.sh)"
fi
command -v cpio >/dev/null || die "cpio not found: run scripts/setup.sh"
command -v rustc >/dev/null || die "rustc not found (needed for tests/guest/msb-lock.rs)"

init_src="$top/tests/guest/init.sh"
lock_src="$top/tests/guest/msb-lock.rs"
self="$top/scripts/build-test-initramfs.sh"
modlib="$top/scripts/lib/guest-modules.sh"
# shellcheck source-path=SCRIPTDIR source=lib/guest-modules.sh
. "$modlib"

# Stamp of every input: rebuild when any changes.
stamp=$(
  {
    echo "$version ${wanted[*]}"
    sha256sum "$self" "$modlib" "$init_src" "$lock_src" "$moddir/modules.dep"
    [ ! -f "$moddir/modules.builtin" ] || sha256sum "$moddir/modules.builtin"
    stat -L -c '%s %Y' "$busybox"
    rustc --version
  } | sha256sum | cut -d' ' -f1
)
if [ -f "$out" ] && [ -f "$out.stamp" ] && [ "$(cat "$out.stamp")" = "$stamp" ]; then
  exit 0
fi

# Serialise concurrent builders (parallel test binaries) on a lock file.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
if command -v flock >/dev/null; then flock 9; fi
if [ -f "$out" ] && [ -f "$out.stamp" ] && [ "$(cat "$out.stamp")" = "$stamp" ]; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,dev,etc,lib/modules,mnt,proc,run,sys,tmp}
chmod 755 "$root"
chmod 1777 "$root/tmp"

# busybox and its applets.
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
ln -s bin "$root/sbin"

# Modules: the load order is resolved from modules.dep by the shared helper.
guest_modules_resolve "$moddir" "${wanted[@]}" || die "cannot resolve guest modules"
order=("${GUEST_MODULE_ORDER[@]}")
for name in "${order[@]}"; do
  guest_modules_install "$moddir" "${GUEST_MODULE_PATH[$name]}" "$root/lib/modules/$name.ko" ||
    die "cannot copy module $name"
done
: >"$root/etc/msb-modules"
[ ${#order[@]} -eq 0 ] || printf '%s\n' "${order[@]}" >"$root/etc/msb-modules"
echo "msb test guest" >"$root/etc/msb-guest-release"

# The lock helper, a static std-only binary.
rustc --edition 2021 -C opt-level=s -C debuginfo=0 -C strip=symbols \
  -C target-feature=+crt-static --target x86_64-unknown-linux-gnu \
  --crate-name msb_lock "$lock_src" -o "$root/bin/msb-lock"

install -m 755 "$init_src" "$root/init"

(cd "$root" && find . -print0 | LC_ALL=C sort -z |
  cpio --null -o -H newc --owner=0:0 --quiet) | gzip -9 >"$work/initramfs.cpio.gz"
mv "$work/initramfs.cpio.gz" "$out"
echo "$stamp" >"$out.stamp"
log "built $out (kernel $version; modules: ${order[*]:-none, all built in})"
