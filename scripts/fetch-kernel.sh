#!/usr/bin/env bash
# Downloads Debian's cloud kernel and unpacks it under target/guest/kernel:
# vmlinuz, vmlinux (the same kernel uncompressed: QEMU and cloud-hypervisor
# boot it through PVH, skipping decompression), and lib/modules/<version>
# with a generated modules.dep; then builds msb's initramfs with its modules
# next to it (target/guest/kernel/msb-initramfs.cpio), which `msb run` takes
# with that kernel:
#   scripts/fetch-kernel.sh
#   msb run --kernel target/guest/kernel/vmlinux -- uname -r
# msb's default kernel is its own (scripts/build-kernel.sh); this one is the
# alternative that is not built here (`msb run -- true` takes ~2.2 s with it
# under TCG, ~0.75 s with msb's).
# Downloads nothing when the kernel is already there.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dest="${MSB_GUEST_DIR:-$top/target/guest}/kernel"
log() { printf 'fetch-kernel: %s\n' "$*" >&2; }

# vmlinux from the bzImage's LZ4 payload (Debian's cloud kernel uses LZ4).
extract_vmlinux() {
  local img=$1 out=$2 pos
  pos=$(grep -obUaP '\x02\x21\x4c\x18' "$img" | head -n1 | cut -d: -f1)
  [ -n "$pos" ] || { log "no LZ4 payload in $img; keeping the bzImage only"; return 0; }
  tail -c +$((pos + 1)) "$img" | lz4 -dc > "$out.tmp" 2>/dev/null || true
  if [ "$(head -c 4 "$out.tmp" | od -An -tx1 | tr -d ' ')" = "7f454c46" ]; then
    mv "$out.tmp" "$out"
    log "uncompressed kernel at $out"
  else
    rm -f "$out.tmp"
    log "could not unpack $img; keeping the bzImage only"
  fi
}

# The initramfs for this kernel (a no-op when it is current).
build_initramfs() {
  "$top/scripts/build-initramfs.sh" --kernel-dir "$dest"
}

if [ -f "$dest/vmlinuz" ] && [ -f "$dest/version" ]; then
  [ -f "$dest/vmlinux" ] || extract_vmlinux "$dest/vmlinuz" "$dest/vmlinux"
  build_initramfs
  exit 0
fi
pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$pkg" ] || { log "cannot resolve linux-image-cloud-amd64 (apt-get update?)"; exit 1; }
log "downloading $pkg"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get -o Acquire::Retries=3 download -qq "$pkg")
mkdir -p "$work/x"
dpkg-deb -x "$work"/*.deb "$work/x"
version=$(ls "$work/x/lib/modules" | head -n1)
depmod -b "$work/x" "$version"
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/lib/modules"
cp "$work/x/boot/vmlinuz-$version" "$dest.tmp/vmlinuz"
extract_vmlinux "$dest.tmp/vmlinuz" "$dest.tmp/vmlinux"
mv "$work/x/lib/modules/$version" "$dest.tmp/lib/modules/$version"
echo "$version" > "$dest.tmp/version"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
log "kernel $version in $dest"
build_initramfs
