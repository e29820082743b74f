#!/usr/bin/env bash
# Serves a host directory to a VM with virtiofsd-msb and shows the guest
# using it: boots msb's guest kernel under QEMU (TCG) with the test
# initramfs, which mounts the share at /mnt; the guest lists it and reads
# hello.txt, and, when the share is writable, writes from-guest.txt, which
# the host then shows.
#
# Usage: scripts/demo-vm.sh [DIR]
#   DIR given: served read-only (--readonly), nothing in it is changed.
#   No DIR:    a fresh temporary directory with hello.txt, served read-write,
#              removed at the end.
# Needs scripts/setup.sh first (QEMU, guest kernel); runs as root or as a
# user who can read DIR. MSB_DAEMON_BIN overrides the daemon binary.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
guest_dir="${MSB_GUEST_DIR:-$top/target/guest}"
log() { printf 'demo-vm: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[ $# -le 1 ] || die "usage: $0 [DIR]"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found: run scripts/setup.sh"
kernel="$guest_dir/msb-kernel/vmlinux"
[ -f "$kernel" ] || die "no guest kernel at $kernel: run scripts/setup.sh"

# The daemon (release build) and the guest's initramfs.
if [ -n "${MSB_DAEMON_BIN:-}" ]; then
  daemon=$MSB_DAEMON_BIN
else
  log "building virtiofsd-msb (cargo build --release)"
  (cd "$top" && cargo build --release -q -p virtiofsd-msb --bin virtiofsd-msb)
  daemon="${CARGO_TARGET_DIR:-$top/target}/release/virtiofsd-msb"
fi
bash "$top/scripts/build-test-initramfs.sh"
initramfs="$guest_dir/test-initramfs.cpio.gz"

work=$(mktemp -d /tmp/msb-demo-XXXXXX)
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

readonly_flag=()
if [ $# -eq 1 ]; then
  share=$(cd "$1" && pwd) || die "$1: not a directory"
  readonly_flag=(--readonly)
else
  share="$work/share"
  mkdir -p "$share/subdir"
  echo "hello from the host ($(hostname))" >"$share/hello.txt"
  echo "a file in a subdirectory" >"$share/subdir/note.txt"
fi

# The guest's script, appended to the initramfs as a second cpio archive.
mkdir -p "$work/extra"
cat >"$work/extra/test.sh" <<'EOF'
echo "guest: kernel $(uname -r); the host directory is mounted at /mnt:"
grep ' /mnt ' /proc/mounts
ls -la /mnt
[ -f /mnt/hello.txt ] && echo "guest: hello.txt says: $(cat /mnt/hello.txt)"
if { echo "written by the guest (kernel $(uname -r))" >/mnt/from-guest.txt; } 2>/dev/null; then
  echo "guest: wrote /mnt/from-guest.txt"
else
  echo "guest: share is read-only: wrote nothing"
fi
exit 0
EOF
(cd "$work/extra" && echo test.sh | cpio -o -H newc --owner=0:0 --quiet | gzip) >"$work/extra.cpio.gz"
cat "$initramfs" "$work/extra.cpio.gz" >"$work/initrd.img"

sock="$work/vhost-fs.sock"
log "serving $share ${readonly_flag[*]:+(read-only) }with $daemon"
"$daemon" --socket-path "$sock" --shared-dir "$share" "${readonly_flag[@]}" \
  >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do
  [ -S "$sock" ] && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log" >&2; die "the daemon exited"; }
  sleep 0.1
done
[ -S "$sock" ] || { cat "$work/daemon.log" >&2; die "no socket $sock after 10 s"; }

log "booting the guest (QEMU TCG)"
status=0
timeout 180 qemu-system-x86_64 -accel tcg -nodefaults -display none -no-reboot \
  -m 512 -serial stdio \
  -kernel "$kernel" -initrd "$work/initrd.img" \
  -append "console=ttyS0 panic=-1 quiet msb.tag=demo" \
  -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \
  -chardev "socket,id=vfs0,path=$sock" \
  -device vhost-user-fs-pci,queue-size=1024,chardev=vfs0,tag=demo \
  </dev/null >"$work/serial.log" 2>"$work/qemu.err" || status=$?

# The guest's part of the console, without firmware noise.
tr -d '\r' <"$work/serial.log" | grep -a -v $'\e' |
  sed -n '/MSB-TEST-BEGIN/,/MSB-TEST-END/p' | grep -a -v '^MSB-TEST-BEGIN'
end=$(grep -a -o 'MSB-TEST-END status=[0-9]*' "$work/serial.log" || true)
if [ "$status" -ne 0 ] || [ "$end" != "MSB-TEST-END status=0" ]; then
  log "the guest did not finish (qemu exit $status, ${end:-no end marker}); console tail:"
  tail -n 30 "$work/serial.log" | grep -a -v $'\e' >&2 || true
  cat "$work/qemu.err" >&2
  log "daemon log:"
  tail -n 30 "$work/daemon.log" >&2
  exit 1
fi
if [ $# -eq 0 ] && [ -f "$share/from-guest.txt" ]; then
  echo "host: $share/from-guest.txt says: $(cat "$share/from-guest.txt")"
fi
log "done"
