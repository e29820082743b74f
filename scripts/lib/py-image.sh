#!/usr/bin/env bash
# The Debian bookworm + python3 test image, built once and cached under
# target/images/: `mmdebstrap --variant=apt --include=python3-minimal
# bookworm` (about 15 s and 190 MB, needs a Debian mirror) gives rootfs.tar;
# from it an OCI layout (one uncompressed layer: the tar itself; tag `py`;
# Cmd python3) and, on request, the unpacked tree (for `msb run --rootfs`).
# The cache is keyed by suite, variant, package list and mmdebstrap's
# version; a lock keeps parallel callers from building it twice.
#
# Usage: scripts/lib/py-image.sh tar|layout|tree   (prints the path)
set -euo pipefail

what=${1:-layout}
case "$what" in tar|layout|tree) ;; *) echo "usage: $0 tar|layout|tree" >&2; exit 2 ;; esac
top=$(cd "$(dirname "$0")/../.." && pwd)
suite=bookworm variant=apt packages=python3-minimal
command -v mmdebstrap >/dev/null || { echo "py-image: mmdebstrap missing (scripts/setup.sh)" >&2; exit 1; }
key=$(printf '%s\n' "$suite" "$variant" "$packages" "$(mmdebstrap --version)" | sha256sum | cut -c1-16)
dir=$top/target/images/py-$key
mkdir -p "$dir"
exec 9>"$dir.lock"
flock 9

if [ ! -f "$dir/rootfs.tar" ]; then
  echo "py-image: building $suite + $packages with mmdebstrap (cached in $dir)" >&2
  # The mirror sometimes fails a download mid-build (a CI run lost its
  # dist-upgrade step once); three tries, 10 s and 30 s apart.
  for try in 1 2 3; do
    if mmdebstrap --quiet --aptopt='Acquire::Retries "3"' --format=tar --variant="$variant" --include="$packages" "$suite" "$dir/rootfs.tar.tmp" >&2; then
      break
    fi
    rm -f "$dir/rootfs.tar.tmp"
    [ "$try" = 3 ] && { echo "py-image: mmdebstrap failed 3 times (is the Debian mirror reachable?)" >&2; exit 1; }
    pause=$((try == 1 ? 10 : 30))
    echo "py-image: mmdebstrap failed (try $try of 3); again in ${pause}s" >&2
    sleep "$pause"
  done
  mv "$dir/rootfs.tar.tmp" "$dir/rootfs.tar"
fi

if [ "$what" = layout ] && [ ! -f "$dir/layout/index.json" ]; then
  rm -rf "$dir/layout.tmp"
  blobs=$dir/layout.tmp/blobs/sha256
  mkdir -p "$blobs"
  # Stores stdin as a blob; prints "sha256:HEX SIZE" once it is stored
  # (the caller's `read` returns on that line, so nothing may follow it;
  # each call has its own temporary file).
  put() {
    local tmp hex size
    tmp=$(mktemp "$dir/layout.tmp/blob.XXXXXX")
    cat >"$tmp"
    hex=$(sha256sum "$tmp" | cut -d' ' -f1)
    size=$(stat -c %s "$tmp")
    mv "$tmp" "$blobs/$hex"
    echo "sha256:$hex $size"
  }
  lhex=$(sha256sum "$dir/rootfs.tar" | cut -d' ' -f1)
  lsize=$(stat -c %s "$dir/rootfs.tar")
  ln "$dir/rootfs.tar" "$blobs/$lhex" 2>/dev/null || cp "$dir/rootfs.tar" "$blobs/$lhex"
  path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  read -r cd cs < <(printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=%s","LANG=C.UTF-8"],"Cmd":["python3"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$path" "$lhex" | put)
  read -r md ms < <(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cd" "$cs" "$lhex" "$lsize" | put)
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"py"}}]}' \
    "$md" "$ms" >"$dir/layout.tmp/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/layout.tmp/oci-layout"
  rm -rf "$dir/layout"
  mv "$dir/layout.tmp" "$dir/layout"
fi

if [ "$what" = tree ] && [ ! -d "$dir/tree" ]; then
  rm -rf "$dir/tree.tmp"
  mkdir "$dir/tree.tmp"
  tar -C "$dir/tree.tmp" --numeric-owner --same-permissions -xf "$dir/rootfs.tar"
  mv "$dir/tree.tmp" "$dir/tree"
fi

case "$what" in
  tar) echo "$dir/rootfs.tar" ;;
  layout) echo "$dir/layout" ;;
  tree) echo "$dir/tree" ;;
esac
