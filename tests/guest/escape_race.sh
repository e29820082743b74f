# Guest side of tests/tests/guest_escape.rs (directory swapped for a symlink).
# The host exchanges /mnt/swapA and /mnt/swapB with symlinks to the outside
# directory (renameat2 RENAME_EXCHANGE) while this loop walks, lists, reads
# and writes in them. Env: SENT (sentinel name), MIN_ITERS, MIN_SECS (at
# least that long, so several of the guest's 1 s entry-cache periods pass),
# MAX_SECS.
# Handshake: the guest creates /mnt/race-ready, loops at least MIN_ITERS times
# and MIN_SECS seconds and until the host creates /mnt/race-stop (or MAX_SECS
# pass), then creates
# /mnt/race-done. Logs go to /mnt/guest-{listing,read,errors}.log.
. /lib/msb-test.sh
L=/tmp/listing.log
R=/tmp/read.log
E=/tmp/errors.log
: >"$L"
: >"$R"
: >"$E"
: >/mnt/race-ready || fail "create race-ready"
i=0
inside_reads=0
sentinel_hits=0
start=$(cut -d. -f1 /proc/uptime)
while :; do
  for d in swapA swapB; do
    ls -la "/mnt/$d/" >>"$L" 2>>"$E"
    find "/mnt/$d" >>"$L" 2>>"$E"
    cat "/mnt/$d/inside.txt" >>"$R" 2>>"$E" && inside_reads=$((inside_reads + 1))
    cat "/mnt/$d/$SENT" >>"$R" 2>>"$E" && sentinel_hits=$((sentinel_hits + 1))
    stat "/mnt/$d/$SENT" >/dev/null 2>&1 && sentinel_hits=$((sentinel_hits + 1))
    echo "guest-$i" >"/mnt/$d/g-$i.txt" 2>>"$E" && cat "/mnt/$d/g-$i.txt" >>"$R" 2>>"$E"
    rm -f "/mnt/$d/g-$i.txt" 2>>"$E"
    mkdir "/mnt/$d/gd-$i" 2>>"$E" && rmdir "/mnt/$d/gd-$i" 2>>"$E"
    # Work from inside the directory while it moves under us.
    (
      cd "/mnt/$d" 2>>"$E" || exit 0
      ls -la . .. >>"$L" 2>>"$E"
      cat "./$SENT" >>"$R" 2>>"$E" && echo "SENTINEL-HIT" >>"$R"
      cat inside.txt >>"$R" 2>>"$E"
      echo cwd >./g-cwd 2>>"$E" && rm -f ./g-cwd 2>>"$E"
      ls -la "../$d/" >>"$L" 2>>"$E"
    )
  done
  i=$((i + 1))
  now=$(cut -d. -f1 /proc/uptime)
  [ $((now - start)) -ge "$MAX_SECS" ] && break
  [ "$i" -ge "$MIN_ITERS" ] && [ $((now - start)) -ge "${MIN_SECS:-0}" ] && [ -e /mnt/race-stop ] && break
done
: >/mnt/race-done || fail "create race-done"

result iterations "$i"
result inside_reads "$inside_reads"
result sentinel_hits "$sentinel_hits"
result sentinel_name_listed "$(grep -c "$SENT" "$L")"
result listing_lines "$(wc -l <"$L")"
expect "sentinel never reached" "$sentinel_hits" 0
expect "no SENTINEL-HIT" "$(grep -c SENTINEL-HIT "$R")" 0
if [ "$inside_reads" -gt 0 ]; then ok "read inside.txt $inside_reads times"; else fail "never read inside.txt"; fi
run "save listing" cp "$L" /mnt/guest-listing.log
run "save reads" cp "$R" /mnt/guest-read.log
run "save errors" cp "$E" /mnt/guest-errors.log
msb_finish
