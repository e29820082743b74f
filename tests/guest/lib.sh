# Shell helpers for guest test scripts (busybox sh). The harness
# (tests/src/qemu.rs) installs this file as /lib/msb-test.sh in the per-test
# archive; test scripts start with `. /lib/msb-test.sh` and end with
# `msb_finish`. Line protocol on the console, parsed by the harness:
#   MSB-RESULT key=value   a value for the host to compare
#   MSB-OK what            a guest-side check that held
#   MSB-FAIL what: detail  a guest-side check that did not
# The script's exit status is the number of failed checks (capped at 100).

msb_fails=0

# result KEY VALUE: report VALUE (one line; newlines become '|').
result() {
  printf 'MSB-RESULT %s=%s\n' "$1" "$(printf '%s' "$2" | tr '\n' '|')"
}

# fail WHAT...: record a failed check.
fail() {
  echo "MSB-FAIL $*"
  msb_fails=$((msb_fails + 1))
}

# ok WHAT...: record a check that held.
ok() {
  echo "MSB-OK $*"
}

# run WHAT CMD...: run CMD; a non-zero exit is a failed check (output shown).
run() {
  msb_what=$1
  shift
  if msb_out=$("$@" 2>&1); then
    ok "$msb_what"
  else
    msb_rc=$?
    fail "$msb_what: exit $msb_rc: $(printf '%s' "$msb_out" | tr '\n' '|')"
  fi
}

# must_fail WHAT CMD...: CMD must exit non-zero.
must_fail() {
  msb_what=$1
  shift
  if msb_out=$("$@" 2>&1); then
    fail "$msb_what: unexpectedly succeeded: $(printf '%s' "$msb_out" | tr '\n' '|')"
  else
    ok "$msb_what"
  fi
}

# expect WHAT ACTUAL EXPECTED: string equality.
expect() {
  if [ "$2" = "$3" ]; then
    ok "$1"
  else
    fail "$1: got '$(printf '%s' "$2" | tr '\n' '|')', want '$(printf '%s' "$3" | tr '\n' '|')'"
  fi
}

# msb_finish: sync and exit with the number of failed checks.
msb_finish() {
  sync
  echo "MSB-CHECKS failed=$msb_fails"
  [ "$msb_fails" -gt 100 ] && msb_fails=100
  exit "$msb_fails"
}
