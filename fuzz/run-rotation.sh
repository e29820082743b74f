#!/bin/bash
# Runs the fuzz targets in turn, ROUNDS times, each for its share of
# seconds, appending "target seconds exit-status" lines to $LOG.
# Usage: fuzz/run-rotation.sh ROUNDS SECS_FUSE SECS_AGENT SECS_OCI [SECS_CHAIN]
set -u
cd "$(dirname "$0")"
LOG=${LOG:-/tmp/msb-fuzz-times.log}
rounds=$1
for _ in $(seq "$rounds"); do
  for spec in "fuse_request:$2" "agent_frame:$3" "oci_layer:$4" "virtio_chain:${5:-0}"; do
    [ "${spec##*:}" = 0 ] && continue
    t=${spec%%:*}; secs=${spec##*:}
    start=$(date +%s)
    nice -n 15 cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -timeout=10 \
      -rss_limit_mb=4096 -print_final_stats=1 > "/tmp/msb-fuzz-$t.out" 2>&1
    rc=$?
    echo "$t $(( $(date +%s) - start )) $rc" >> "$LOG"
    [ $rc -ne 0 ] && echo "$t FAILED rc=$rc; see /tmp/msb-fuzz-$t.out" >> "$LOG"
  done
done
