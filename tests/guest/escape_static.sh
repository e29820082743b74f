# Guest side of tests/tests/guest_escape.rs (static links and `..` walks).
# Env: SENT (sentinel file name, outside the share), OUTSIDE_ABS (host path of
# the directory holding it), PROBE (a unique name to write through etc_link).
# Listings (names only: link texts may name the sentinel) go to /mnt/guest-listing.log and reads to /mnt/guest-read.log for
# the host to scan; the guest never learns the sentinel's contents.
. /lib/msb-test.sh
L=/tmp/listing.log
R=/tmp/read.log
: >"$L"
: >"$R"
lst() { ls -1a "$@" >>"$L" 2>/dev/null; }

# The link to /etc is resolved by the guest: it reaches the guest's own /etc.
expect "etc_link text" "$(readlink /mnt/etc_link)" "/etc"
expect "read via etc_link reaches the guest /etc" "$(cat /mnt/etc_link/msb-guest-release)" "msb test guest"
run "write via etc_link" sh -c "echo probe > /mnt/etc_link/$PROBE"
expect "the write landed in the guest /etc" "$(cat "/etc/$PROBE")" "probe"
lst /mnt/etc_link/

# Links the host planted that point outside the share.
expect "up_link text" "$(readlink /mnt/up_link)" "../outside"
expect "up_link2 text" "$(readlink /mnt/sub/up_link2)" "../../outside"
expect "abs_link text" "$(readlink /mnt/abs_link)" "$OUTSIDE_ABS"
for l in up_link abs_link sub/up_link2 sub/deep/up3 sub/deep; do
  [ "$l" = sub/deep ] && l=sub/deep/../../../outside
  must_fail "read through $l" sh -c "cat /mnt/$l/\$SENT >>$R"
  must_fail "stat through $l" stat "/mnt/$l/$SENT"
  must_fail "write through $l" sh -c "echo pwned > /mnt/$l/\$SENT"
  must_fail "create through $l" sh -c "echo pwned > /mnt/$l/created-by-guest"
  must_fail "mkdir through $l" mkdir "/mnt/$l/dir-by-guest"
  lst "/mnt/$l/"
done
must_fail "read file_link" sh -c "cat /mnt/file_link >>$R"
must_fail "write file_link" sh -c "echo pwned > /mnt/file_link"
must_fail "append file_link" sh -c "echo pwned >> /mnt/file_link"

# `..` walks from the mount root and from inside the share.
must_fail "cat /mnt/../outside" sh -c "cat /mnt/../outside/\$SENT >>$R"
must_fail "cat /mnt/sub/../../outside" sh -c "cat /mnt/sub/../../outside/\$SENT >>$R"
must_fail "cat host absolute path" sh -c "cat $OUTSIDE_ABS/\$SENT >>$R"
must_fail "relative walk from sub/deep" sh -c "cd /mnt/sub/deep && cat ../../../../outside/\$SENT >>$R"
must_fail "relative walk from root" sh -c "cd /mnt && cat ../outside/\$SENT >>$R"
lst /mnt/.. /mnt/../.. /mnt/sub/deep/../../.. /mnt/sub/..
expect "/mnt/.. is the guest root" "$(ls /mnt/.. | grep -c '^init$')" 1
expect "/mnt/sub/../.. is the guest root" "$(ls /mnt/sub/../.. | grep -c '^init$')" 1

# Links the guest makes, pointing out; hard link of an outward symlink.
run "guest symlink out (relative)" ln -s ../outside /mnt/g_up
run "guest symlink out (absolute)" ln -s "$OUTSIDE_ABS/$SENT" /mnt/g_abs
must_fail "read through g_up" sh -c "cat /mnt/g_up/\$SENT >>$R"
must_fail "read through g_abs" sh -c "cat /mnt/g_abs >>$R"
must_fail "write through g_abs" sh -c "echo pwned > /mnt/g_abs"
run "hard link of up_link" ln /mnt/up_link /mnt/g_hard
expect "hard link keeps the link text" "$(readlink /mnt/g_hard)" "../outside"
must_fail "read through g_hard" sh -c "cat /mnt/g_hard/\$SENT >>$R"
run "make tomove" sh -c "echo x > /mnt/tomove"
must_fail "rename into up_link" mv /mnt/tomove /mnt/up_link/moved
must_fail "rename into abs_link" mv /mnt/tomove /mnt/abs_link/moved
run "move up_link deeper" mv /mnt/up_link /mnt/sub/deep/up_moved
must_fail "read through the moved link" sh -c "cat /mnt/sub/deep/up_moved/\$SENT >>$R"

# Whole-share walks.
find /mnt >>"$L" 2>/dev/null
ls -1aR /mnt >>"$L" 2>/dev/null
find -L /mnt >>"$L" 2>/dev/null
cat /mnt/* /mnt/*/* /mnt/*/*/* >>"$R" 2>/dev/null

result sentinel_name_listed "$(grep -c "$SENT" "$L")"
result listing_lines "$(wc -l <"$L")"
run "save listing" cp "$L" /mnt/guest-listing.log
run "save reads" cp "$R" /mnt/guest-read.log
msb_finish
