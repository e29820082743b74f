# Guest side of tests/tests/guest_fs.rs: file operations on the virtiofs share
# (cwd /mnt). Needs HOST_TEXT (contents of the host-made /mnt/host_made.txt).
# The host checks the final state of /mnt/work afterwards; keep the two in step.
. /lib/msb-test.sh
W=/mnt/work

expect "read a host-made file" "$(cat /mnt/host_made.txt)" "$HOST_TEXT"
run "mkdir work" mkdir "$W"
run "mkdir -p dir/sub/deeper" mkdir -p "$W/dir/sub/deeper"
expect "new dir is a dir" "$(stat -c %F "$W/dir/sub")" "directory"

# create, write, read back, append
run "create+write" sh -c "echo 'hello virtiofs' > $W/hello.txt"
expect "read back" "$(cat "$W/hello.txt")" "hello virtiofs"
run "append" sh -c "echo 'second line' >> $W/hello.txt"
expect "read after append" "$(cat "$W/hello.txt")" "hello virtiofs
second line"
expect "size after append" "$(stat -c %s "$W/hello.txt")" 27

# larger files: 20000 lines of text, 1 MiB of 'z', a write in the middle
run "write seq" sh -c "seq 1 20000 > $W/seq.txt"
run "read back seq" sh -c "seq 1 20000 | cmp - $W/seq.txt"
run "write 1 MiB" sh -c "dd if=/dev/zero bs=65536 count=16 2>/dev/null | tr '\\000' z > $W/big.bin"
expect "1 MiB size" "$(stat -c %s "$W/big.bin")" 1048576
run "write in the middle" sh -c "printf XYZ | dd of=$W/big.bin bs=1 seek=1000 conv=notrunc 2>/dev/null"
expect "read the middle" "$(dd if="$W/big.bin" bs=1 skip=998 count=7 2>/dev/null)" "zzXYZzz"
expect "size kept" "$(stat -c %s "$W/big.bin")" 1048576

# rename: a file, into a subdir, a directory, over an existing file
run "rename file" mv "$W/hello.txt" "$W/renamed.txt"
must_fail "old name gone" test -e "$W/hello.txt"
expect "renamed contents" "$(head -n 1 "$W/renamed.txt")" "hello virtiofs"
run "rename into subdir" mv "$W/seq.txt" "$W/dir/sub/seq.txt"
run "rename directory" mv "$W/dir/sub/deeper" "$W/dir/moved"
run "make victim" sh -c "echo old > $W/victim.txt && echo new > $W/src.txt"
run "rename over a file" mv "$W/src.txt" "$W/victim.txt"
expect "replaced contents" "$(cat "$W/victim.txt")" "new"
must_fail "rename source gone" test -e "$W/src.txt"

# hard links: one removed later, one kept for the host to see
run "hard link" ln "$W/renamed.txt" "$W/hard.txt"
expect "link count 2" "$(stat -c %h "$W/renamed.txt")" 2
expect "same inode" "$(stat -c %i "$W/hard.txt")" "$(stat -c %i "$W/renamed.txt")"
run "write through hard link" sh -c "echo 'via link' >> $W/hard.txt"
expect "visible through the other name" "$(tail -n 1 "$W/renamed.txt")" "via link"
run "kept hard link" ln "$W/dir/sub/seq.txt" "$W/seq.hard"

# symlinks
run "symlink" ln -s renamed.txt "$W/sym"
expect "readlink" "$(readlink "$W/sym")" "renamed.txt"
expect "read through symlink" "$(head -n 1 "$W/sym")" "hello virtiofs"
expect "lstat type" "$(stat -c %F "$W/sym")" "symbolic link"
run "dir symlink" ln -s ../work/dir/sub "$W/dirlink"
expect "list through dir symlink" "$(ls "$W/dirlink")" "seq.txt"
run "dangling symlink" ln -s /nonexistent/target "$W/dangling"
expect "dangling readlink" "$(readlink "$W/dangling")" "/nonexistent/target"
must_fail "dangling does not resolve" cat "$W/dangling"

# listing: many entries (several readdir batches), then one listing
run "mkdir many" mkdir "$W/many"
i=0
while [ "$i" -lt 300 ]; do
  : >"$W/many/entry-$i" || fail "create many/entry-$i"
  i=$((i + 1))
done
expect "300 entries listed" "$(ls "$W/many" | wc -l)" 300
expect "ls -l lists 300" "$(ls -l "$W/many" | grep -c entry-)" 300
expect "find finds 300" "$(find "$W/many" -type f | wc -l)" 300

# chmod
run "chmod 640" chmod 640 "$W/renamed.txt"
expect "mode 640" "$(stat -c %a "$W/renamed.txt")" 640
run "chmod dir 711" chmod 711 "$W/dir"
expect "dir mode 711" "$(stat -c %a "$W/dir")" 711
run "chmod 600" chmod 600 "$W/big.bin"
expect "mode 600" "$(stat -c %a "$W/big.bin")" 600

# truncate, grow (sparse), O_TRUNC, fallocate
run "truncate shrink" truncate -s 5 "$W/renamed.txt"
expect "truncated contents" "$(cat "$W/renamed.txt")" "hello"
expect "truncated via the other link" "$(stat -c %s "$W/hard.txt")" 5
run "truncate grow" truncate -s 100000 "$W/sparse.bin"
expect "sparse size" "$(stat -c %s "$W/sparse.bin")" 100000
expect "sparse reads zeros" "$(tr -d '\000' <"$W/sparse.bin" | wc -c)" 0
run "O_TRUNC" sh -c "echo data > $W/otrunc.txt && : > $W/otrunc.txt"
expect "O_TRUNC size" "$(stat -c %s "$W/otrunc.txt")" 0
run "fallocate" fallocate -l 65536 "$W/falloc.bin"
expect "fallocate size" "$(stat -c %s "$W/falloc.bin")" 65536

# timestamps
run "touch -d" touch -d "2001-02-03 04:05:06" "$W/renamed.txt"
expect "mtime set" "$(stat -c %Y "$W/renamed.txt")" 981173106

# flock (static helper /bin/msb-lock; POSIX locks have their own test)
run "flock semantics" msb-lock flock-selftest "$W/lockfile"

# removal
run "unlink hard link" rm "$W/hard.txt"
expect "link count back to 1" "$(stat -c %h "$W/renamed.txt")" 1
run "rm -r many" rm -r "$W/many"
must_fail "many gone" test -e "$W/many"
run "rmdir" rmdir "$W/dir/moved"
must_fail "rmdir non-empty" rmdir "$W/dir"
run "rm dangling symlink" rm "$W/dangling"
exec 3<"$W/victim.txt"
run "unlink an open file" rm "$W/victim.txt"
expect "read the unlinked open file" "$(cat <&3)" "new"
exec 3<&-
must_fail "unlinked file gone" test -e "$W/victim.txt"

# statfs
run "statfs" df /mnt

# drop the guest page cache and re-read through the daemon
run "drop caches" sh -c "sync && echo 3 > /proc/sys/vm/drop_caches"
run "re-read seq" sh -c "seq 1 20000 | cmp - $W/dir/sub/seq.txt"
expect "re-read the middle" "$(dd if="$W/big.bin" bs=1 skip=998 count=7 2>/dev/null)" "zzXYZzz"

result listing "$(cd "$W" && find . | sort | tr '\n' ' ')"
result renamed_mode "$(stat -c %a "$W/renamed.txt")"
result seq_inode "$(stat -c %i "$W/dir/sub/seq.txt")"
msb_finish
