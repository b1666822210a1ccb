#!/usr/bin/env bash
# What a device call would send: the working tree (tracked + untracked files git does not ignore) plus the carried
# paths, against the run tool's 64 MiB limit. Run it here before the call (a refused call still costs nothing, but
# finding out in the next session wastes its planning).
#   test/gpu/lib/carry-size.sh [CARRY_PATH ...]       exit 1 when over the limit
set -uo pipefail
cd "$(git rev-parse --show-toplevel)" || exit 2
limit=$((64 << 20))
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
total=$tree
printf '%10.2f MiB  working tree (tracked + untracked not ignored)\n' "$(echo "$tree / 1048576" | bc -l)"
for p in "$@"; do
  [ -e "$p" ] || { printf '%10s      %s (missing here: the call would drop it)\n' "-" "$p"; continue; }
  b=$(du -sbL "$p" | cut -f1); total=$((total + b))
  printf '%10.2f MiB  %s\n' "$(echo "$b / 1048576" | bc -l)" "$p"
done
printf '%10.2f MiB  total of %d MiB (%s)\n' "$(echo "$total / 1048576" | bc -l)" $((limit >> 20)) \
  "$([ $total -le $limit ] && echo "fits, $(( (limit - total) >> 10 )) KiB to spare" || echo "OVER by $(( (total - limit) >> 10 )) KiB")"
[ $total -le $limit ]
