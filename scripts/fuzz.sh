#!/usr/bin/env bash
# Runs Hallmark's fuzz targets (fuzz/fuzz_targets/*.rs) with libFuzzer on the
# stable toolchain: the build instruments code the way cargo-fuzz does
# (SanitizerCoverage, no sanitizer), so cargo-fuzz need not be installed.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 10 s, every target)
#
# HALLMARK_FUZZ_PROFILE=dev builds unoptimized (the test command's brief runs:
# a cold build takes a fraction of the release one, and a few seconds per
# target need no speed); the default, release, is for long runs.
#
# Each target starts from its committed seeds (fuzz/seeds/TARGET) and its
# growing corpus (fuzz/corpus/TARGET, not committed). A crash stops the run
# with a non-zero exit; the input is saved under fuzz/artifacts/TARGET/ and
# belongs in a regression test. The last column is what libFuzzer reports.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-10}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=($(ls fuzz_targets | sed 's/\.rs$//'))
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
echo "==> building ${#targets[@]} fuzz targets (instrumented, profile ${HALLMARK_FUZZ_PROFILE:-release})"
profile=${HALLMARK_FUZZ_PROFILE:-release}
out_dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
cargo build --profile "$profile" --quiet --target "$triple" --target-dir target $(printf -- '--bin %s ' "${targets[@]}")
printf '| target | seconds | executions | exec/s | corpus | result |\n|---|---:|---:|---:|---:|---|\n' > stats.md
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t" "seeds/$t"
    log=$(mktemp)
    if "target/$triple/$out_dir/$t" -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" "corpus/$t" "seeds/$t" >"$log" 2>&1; then
        result=ok
    else
        result="CRASH (see fuzz/artifacts/$t/)"
        status=1
        tail -30 "$log"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    corpus=$(ls "corpus/$t" | wc -l)
    printf '| %s | %s | %s | %s | %s | %s |\n' "$t" "$secs" "${runs:-?}" "${rate:-?}" "$corpus" "$result" | tee -a stats.md
    rm -f "$log"
done
echo "==> written to fuzz/stats.md"
exit $status
