#!/usr/bin/env bash
# Replaces what lies between the lines `<!-- NAME:begin -->` and
# `<!-- NAME:end -->` of README.md with the contents of FILE.
# Usage: scripts/lib/readme-section.sh NAME FILE
set -euo pipefail
name=$1 file=$2
readme="$(cd "$(dirname "$0")/../.." && pwd)/README.md"
begin="<!-- $name:begin -->"
end="<!-- $name:end -->"
grep -qxF "$begin" "$readme" && grep -qxF "$end" "$readme" ||
  { echo "readme-section: README.md lacks the $begin / $end lines" >&2; exit 1; }
awk -v b="$begin" -v e="$end" -v f="$file" '
  $0 == b { print; while ((getline line < f) > 0) print line; skip = 1; next }
  $0 == e { skip = 0 }
  !skip { print }' "$readme" >"$readme.tmp"
mv "$readme.tmp" "$readme"
echo "readme-section: README.md $name section updated" >&2
