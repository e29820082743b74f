#!/usr/bin/env bash
# Builds the default initramfs of `msb run` (the embedded default guest), an
# uncompressed newc cpio (the guest kernel unpacks it faster than a gzip'd one:
# ~40 ms of boot under TCG):
#   /init                 msb-init (crate guest-init), a static binary
#   /bin/busybox + applet symlinks (Debian's busybox-static), so
#                         `msb run -- sh -c '…'` works without a rootfs
#   /lib/modules/<version>/kernel/…  the guest kernel modules msb-init loads,
#                         when the kernel has modules: virtio (pci, mmio when
#                         the kernel has it), virtio_blk, virtio_console,
#                         fuse + virtiofs, pvpanic_pci (a guest panic then ends
#                         QEMU with a failure), xfs, btrfs, vfat (+ codepages),
#                         with every dependency. msb's own kernel
#                         (scripts/build-kernel.sh) has all of them built in:
#                         its initramfs holds no modules.
#   /etc/msb/modules      their paths, one a line, in load order (resolved
#                         from the kernel's modules.dep, scripts/lib/guest-modules.sh),
#                         after a `# kernel <release>` line; absent when
#                         nothing is to be loaded
#
# Usage: scripts/build-initramfs.sh [--kernel-dir DIR] [OUT]
#   DIR     the kernel the initramfs is for (a directory with `version` and
#           lib/modules/<version>/{modules.dep,modules.builtin}); default
#           $MSB_GUEST_DIR/msb-kernel (scripts/build-kernel.sh). Debian's
#           cloud kernel: $MSB_GUEST_DIR/kernel (scripts/fetch-kernel.sh).
#   OUT     defaults to $MSB_GUEST_DIR/msb-initramfs.cpio for the default
#           kernel, where `msb run` looks for it, and to
#           DIR/msb-initramfs.cpio for another one (`msb run --kernel
#           DIR/vmlinux` picks that one up). MSB_GUEST_DIR defaults to
#           <workspace>/target/guest.
# Idempotent: rebuilds only when an input changed (msb-init, busybox, the
# kernel's module set, this script); a stamp of the inputs is kept next to
# OUT. Needs the kernel (scripts/setup.sh).
# Env: MSB_INIT_BIN uses that msb-init binary instead of building one.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
guest_dir="${MSB_GUEST_DIR:-$top/target/guest}"
kdir="$guest_dir/msb-kernel"
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel-dir)
      [ $# -ge 2 ] || { echo "build-initramfs: --kernel-dir needs a directory" >&2; exit 2; }
      kdir=$(cd "$2" 2>/dev/null && pwd) || { echo "build-initramfs: no directory $2" >&2; exit 2; }
      shift 2
      ;;
    -*) echo "build-initramfs: unknown option $1" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "build-initramfs: one OUT only" >&2; exit 2; }; out=$1; shift ;;
  esac
done
if [ -z "$out" ]; then
  if [ "$kdir" = "$guest_dir/msb-kernel" ]; then
    out="$guest_dir/msb-initramfs.cpio"
  else
    out="$kdir/msb-initramfs.cpio"
  fi
fi
self="$top/scripts/build-initramfs.sh"
modlib="$top/scripts/lib/guest-modules.sh"
log() { printf 'build-initramfs: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}
# shellcheck source-path=SCRIPTDIR source=lib/guest-modules.sh
. "$modlib"

# Modules msb-init loads at every boot (dependencies are added from
# modules.dep; built-in ones are skipped; `?` marks a module the kernel may
# not have).
base_modules=(virtio_pci 'virtio_mmio?' virtio_blk virtio_console fuse virtiofs 'pvpanic_pci?')
# Filesystem modules, loaded by msb-init only before it mounts a disk of that
# type (loading xfs + btrfs at every boot costs ~1.5 s under TCG: raid6_pq
# benchmarks its algorithms, the modules are large). ext4 is built in.
declare -A fs_modules=(
  [xfs]="xfs"
  [btrfs]="btrfs"
  [vfat]="vfat nls_cp437 nls_ascii? nls_iso8859_1?"
  [overlay]="overlay"
)

[ -f "$kdir/version" ] ||
  die "no guest kernel in $kdir: run scripts/setup.sh (or scripts/build-kernel.sh)"
version=$(cat "$kdir/version")
moddir="$kdir/lib/modules/$version"
[ -f "$moddir/modules.dep" ] || die "no $moddir/modules.dep: rebuild the kernel (scripts/build-kernel.sh or scripts/fetch-kernel.sh)"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || die "busybox not found: install busybox-static (scripts/setup.sh)"
if command -v file >/dev/null && ! file -L "$busybox" | grep -q 'statically linked\|static-pie'; then
  die "$busybox is not static: install busybox-static (scripts/setup.sh)"
fi
command -v cpio >/dev/null || die "cpio not found: run scripts/setup.sh"

# msb-init, static (see FIELD-NOTES: --target keeps the static flag away from
# build scripts and proc macros). A no-op when it is up to date.
if [ -n "${MSB_INIT_BIN:-}" ]; then
  init_bin=$MSB_INIT_BIN
  [ -f "$init_bin" ] || die "MSB_INIT_BIN=$init_bin is not a file"
else
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
  command -v cargo >/dev/null || die "cargo not found (needed to build msb-init)"
  target_dir="${CARGO_TARGET_DIR:-$top/target}"
  case "$target_dir" in /*) ;; *) target_dir="$top/$target_dir" ;; esac
  (cd "$top" && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --quiet -p guest-init --bin msb-init \
      --target x86_64-unknown-linux-gnu) || die "building msb-init failed"
  init_bin="$target_dir/x86_64-unknown-linux-gnu/release/msb-init"
fi
if command -v file >/dev/null && ! file -L "$init_bin" | grep -q 'statically linked\|static-pie'; then
  die "$init_bin is not statically linked"
fi

# Resolve each list; all_modules is the union (name -> path under moddir).
declare -A all_modules=() fs_order=()
guest_modules_resolve "$moddir" "${base_modules[@]}" || die "cannot resolve the guest modules"
base_order=("${GUEST_MODULE_ORDER[@]}")
for name in "${GUEST_MODULE_ORDER[@]}"; do all_modules[$name]=${GUEST_MODULE_PATH[$name]}; done
for fs in $(printf '%s\n' "${!fs_modules[@]}" | LC_ALL=C sort); do
  read -r -a fs_wanted <<<"${fs_modules[$fs]}"
  guest_modules_resolve "$moddir" "${fs_wanted[@]}" || die "cannot resolve the $fs modules"
  fs_order[$fs]="${GUEST_MODULE_ORDER[*]}"
  for name in "${GUEST_MODULE_ORDER[@]}"; do all_modules[$name]=${GUEST_MODULE_PATH[$name]}; done
done
all_names=$(printf '%s\n' "${!all_modules[@]}" | LC_ALL=C sort)

# Stamp of every input: rebuild when any changes.
stamp=$(
  {
    echo "$version base: ${base_order[*]}"
    for fs in "${!fs_order[@]}"; do echo "$fs: ${fs_order[$fs]}"; done | LC_ALL=C sort
    sha256sum "$self" "$modlib" "$init_bin" "$moddir/modules.dep"
    [ ! -f "$moddir/modules.builtin" ] || sha256sum "$moddir/modules.builtin"
    for name in $all_names; do
      stat -L -c "%n %s %Y" "$moddir/${all_modules[$name]}"
    done
    stat -L -c '%s %Y' "$busybox"
  } | sha256sum | cut -d' ' -f1
)
fresh() { [ -f "$out" ] && [ -f "$out.stamp" ] && [ "$(cat "$out.stamp")" = "$stamp" ]; }
fresh && exit 0

# Serialise concurrent builders (parallel test binaries) on a lock file.
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
if command -v flock >/dev/null; then flock 9; fi
fresh && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,etc/msb,lib/modules,mnt,proc,root,run,sys,tmp}
chmod 755 "$root"
chmod 700 "$root/root"
chmod 1777 "$root/tmp"

# PID 1 (stripped: the release profile keeps line tables).
cp "$init_bin" "$root/init"
if command -v strip >/dev/null; then strip --strip-all "$root/init"; fi
chmod 755 "$root/init"

# busybox, each applet as a symlink where busybox --install would put it.
cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
while IFS= read -r applet; do
  applet=${applet#/}
  [ "$applet" = bin/busybox ] && continue
  case "$applet" in
    bin/* | sbin/* | usr/bin/* | usr/sbin/*) ;;
    *) continue ;;
  esac
  [ -e "$root/$applet" ] || [ -L "$root/$applet" ] && continue
  case "$applet" in
    usr/*) ln -s ../../bin/busybox "$root/$applet" ;;
    sbin/*) ln -s ../bin/busybox "$root/$applet" ;;
    *) ln -s busybox "$root/$applet" ;;
  esac
done < <("$busybox" --list-full)
[ -L "$root/bin/sh" ] || die "busybox has no sh applet"

# Minimal identity files for tools that look users up (id, ls -l).
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
echo "msb guest ($version)" >"$root/etc/msb/release"

# Modules, and their load order for msb-init: /etc/msb/modules (every boot)
# and /etc/msb/modules.d/<fstype> (before mounting a disk of that type). The
# lists hold paths inside the initramfs, one a line, dependencies first,
# after a `# kernel <release>` line (msb-init refuses a list made for another
# kernel). A list that would be empty (everything built in) is not written.
guest_path() {
  local rel=${all_modules[$1]}
  rel=${rel%.xz}
  rel=${rel%.zst}
  rel=${rel%.gz}
  printf '/lib/modules/%s/%s' "$version" "$rel"
}
for name in $all_names; do
  guest_modules_install "$moddir" "${all_modules[$name]}" "$root$(guest_path "$name")" ||
    die "cannot copy module $name"
done
write_list() { # FILE WHAT NAMES...
  local file=$1 what=$2 name
  shift 2
  [ $# -gt 0 ] || return 0
  mkdir -p "$(dirname "$file")"
  {
    echo "# kernel $version"
    echo "# Kernel modules msb-init loads $what, in this order."
    for name in "$@"; do guest_path "$name" && echo; done
  } >"$file"
}
write_list "$root/etc/msb/modules" "at boot" "${base_order[@]}"
for fs in "${!fs_order[@]}"; do
  read -r -a fs_names <<<"${fs_order[$fs]}"
  write_list "$root/etc/msb/modules.d/$fs" "before mounting $fs" "${fs_names[@]}"
done

(cd "$root" && find . -print0 | LC_ALL=C sort -z |
  cpio --null -o -H newc --owner=0:0 --quiet) >"$work/initramfs.cpio"
mv "$work/initramfs.cpio" "$out"
echo "$stamp" >"$out.stamp"
log "built $out ($(du -k "$out" | cut -f1) KiB; kernel $version; boot modules: ${base_order[*]:-none (built in)};$(
  for fs in "${!fs_order[@]}"; do printf ' %s: %s;' "$fs" "${fs_order[$fs]:-built in}"; done
))"
