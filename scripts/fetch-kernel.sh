#!/usr/bin/env bash
# Downloads Debian's cloud kernel and unpacks it under target/guest/kernel:
# vmlinuz, and lib/modules/<version> with a generated modules.dep.
# Prints nothing and does nothing when the kernel is already there.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dest="${MSB_GUEST_DIR:-$top/target/guest}/kernel"
if [ -f "$dest/vmlinuz" ] && [ -f "$dest/version" ]; then
  exit 0
fi
log() { printf 'fetch-kernel: %s\n' "$*" >&2; }
pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$pkg" ] || { log "cannot resolve linux-image-cloud-amd64 (apt-get update?)"; exit 1; }
log "downloading $pkg"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -qq "$pkg")
mkdir -p "$work/x"
dpkg-deb -x "$work"/*.deb "$work/x"
version=$(ls "$work/x/lib/modules" | head -n1)
depmod -b "$work/x" "$version"
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/lib/modules"
cp "$work/x/boot/vmlinuz-$version" "$dest.tmp/vmlinuz"
mv "$work/x/lib/modules/$version" "$dest.tmp/lib/modules/$version"
echo "$version" > "$dest.tmp/version"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
log "kernel $version in $dest"
