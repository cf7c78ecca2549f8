#!/usr/bin/env bash
# Size and start time of a hallmark binary, for BENCHMARKS.md:
#   scripts/binary-size-start.sh target/release/hallmark [RUNS]
# Prints the file size, the size of its debug sections, the mean wall time
# of `hallmark --version` (process start: loading and relocating the binary)
# over RUNS runs, and the mean time from `hallmark up` on a fresh directory to
# its env file (server and agent ready: keys generated, SQLite migrated) over
# 5 runs. Warm page cache; run it on an otherwise idle machine.
set -euo pipefail
bin=$(realpath "${1:?usage: binary-size-start.sh BINARY [RUNS]}")
runs=${2:-50}
ms() { echo $(( $(date +%s%N) / 1000000 )); }
size=$(stat -c %s "$bin")
debug=$(size -A "$bin" | awk '$1 ~ /^\.debug/ { s += $2 } END { print s + 0 }')
"$bin" --version >/dev/null
start=$(ms)
for _ in $(seq "$runs"); do "$bin" --version >/dev/null; done
version_ms=$(awk -v t=$(( $(ms) - start )) -v n="$runs" 'BEGIN { printf "%.1f", t / n }')
total=0
for i in 1 2 3 4 5; do
    dir=$(mktemp -d /tmp/hallmark-start.XXXXXX)
    t0=$(ms)
    "$bin" up --data-dir "$dir/d" --admin-listen 127.0.0.1:0 >/dev/null 2>&1 &
    pid=$!
    until [ -s "$dir/d/env" ]; do sleep 0.005; done
    total=$(( total + $(ms) - t0 ))
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
done
printf 'binary %s\nsize %d bytes (%.1f MB), debug sections %d bytes (%.1f MB)\n' \
    "$bin" "$size" "$(echo "$size / 1000000" | bc -l)" "$debug" "$(echo "$debug / 1000000" | bc -l)"
printf 'hallmark --version: %s ms mean over %d runs\nhallmark up to ready: %d ms mean over 5 runs\n' \
    "$version_ms" "$runs" $(( total / 5 ))
