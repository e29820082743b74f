#!/bin/sh
# PID 1 of the test initramfs (built by scripts/build-test-initramfs.sh).
#
# Mounts proc/sys/dev, loads the modules listed in /etc/msb-modules (in that
# order), mounts the virtiofs tag named by `msb.tag=` on the kernel command line
# at /mnt, runs /test.sh (added per test as a second cpio archive) with /mnt as
# its working directory, then prints one end marker on the console:
#
#   MSB-TEST-END status=<exit status of /test.sh> uptime=<seconds>
#
# and powers off. Status 125 means the share could not be mounted, 126 that
# there was no /test.sh. Other kernel command line words it reads:
#   msb.mountopts=<opts>   extra `mount -o` options for the share
#   msb.debug=1            `set -x` while running /test.sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1
mkdir -p /tmp /mnt /run

say() { echo "msb-init: $*"; }

# param NAME: value of NAME=value on the kernel command line, empty if absent.
param() {
  for word in $(cat /proc/cmdline); do
    case "$word" in
      "$1"=*) echo "${word#*=}"; return 0 ;;
    esac
  done
  return 1
}

for m in $(cat /etc/msb-modules); do
  insmod "/lib/modules/$m.ko" || say "MSB-INSMOD-FAILED $m"
done

status=
tag=$(param msb.tag)
if [ -n "$tag" ]; then
  opts=$(param msb.mountopts)
  tries=0
  # The device is probed when virtio_pci/virtiofs load; retry briefly anyway.
  until err=$(mount -t virtiofs ${opts:+-o "$opts"} "$tag" /mnt 2>&1); do
    tries=$((tries + 1))
    if [ "$tries" -ge 10 ]; then
      say "MSB-MOUNT-FAILED tag=$tag error: $err"
      status=125
      break
    fi
    sleep 0.1
  done
  [ -z "$status" ] && say "mounted virtiofs tag $tag at /mnt"
else
  say "no msb.tag= on the kernel command line: nothing mounted at /mnt"
fi

if [ -z "$status" ]; then
  if [ -f /test.sh ]; then
    echo "MSB-TEST-BEGIN uptime=$(cut -d' ' -f1 /proc/uptime)"
    if [ "$(param msb.debug)" = 1 ]; then
      (cd /mnt && sh -x /test.sh)
    else
      (cd /mnt && sh /test.sh)
    fi
    status=$?
  else
    say "no /test.sh in the initramfs"
    status=126
  fi
fi

sync
echo "MSB-TEST-END status=$status uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
# poweroff should not return; if it does, force it through sysrq.
sleep 2
echo o >/proc/sysrq-trigger
sleep 10
