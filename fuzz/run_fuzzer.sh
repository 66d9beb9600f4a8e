#!/bin/sh
# Runs a libFuzzer binary for the ctest tests (fuzz/CMakeLists.txt).
#
#   run_fuzzer.sh BINARY SEED_DIR WORK_DIR SECONDS
#
# SECONDS > 0: copies the seeds into WORK_DIR/corpus (keeping inputs earlier
# runs added there) and fuzzes for SECONDS; crash, leak, timeout and OOM inputs
# are written to WORK_DIR/crashes/. SECONDS = 0: runs every seed once, no
# fuzzing. Exits non-zero if the fuzzer reports any failure.
set -eu
bin=$1 seeds=$2 work=$3 secs=$4

if [ "$secs" -eq 0 ]; then
  exec "$bin" "$seeds"/*
fi

mkdir -p "$work/corpus" "$work/crashes"
cp "$seeds"/* "$work/corpus/"
status=0
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/crashes/" "$work/corpus" || status=$?
if [ "$status" -ne 0 ]; then
  echo "fuzz: $(basename "$bin") failed (exit $status); reproducer(s) in $work/crashes/:" >&2
  ls -l "$work/crashes" >&2
  echo "rerun one with: $bin $work/crashes/<file>" >&2
fi
exit "$status"
