#!/usr/bin/env bash
# `make crash`: the crash harness at full scale (issue 4): every processor as its own process,
# SIGKILLed at random moments and restarted, then compared with two clean runs over the same
# input (tests/crash.rs). Sizes come from the environment; the defaults here are the issue's
# figures (>= 50k market-data records, >= 20 kills). `make test` runs the same test smaller.
#
#   TRADESTREAM_CRASH_RECORDS     market-data records (default 50000)
#   TRADESTREAM_CRASH_KILLS       SIGKILLs in the crash run (default 24)
#   TRADESTREAM_CRASH_SYMBOLS     synthetic symbols (default 8)
#   TRADESTREAM_CRASH_PARTITIONS  partitions per topic (default 6: the mock broker keeps only
#                                 64 MiB per partition, and the harness reads every topic whole)
#   TRADESTREAM_CRASH_RATE        records/s published, 0 = as fast as possible (default 1000)
#   TRADESTREAM_CRASH_SEED        seed of the kill schedule (default 1)
#   TRADESTREAM_CRASH_CLEAN_RUNS  1 or 2 clean runs to compare with (default 2)
#   TRADESTREAM_CRASH_KEEP_LOGS   set to keep every process's log
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export TRADESTREAM_CRASH_RECORDS="${TRADESTREAM_CRASH_RECORDS:-50000}"
export TRADESTREAM_CRASH_KILLS="${TRADESTREAM_CRASH_KILLS:-24}"
export TRADESTREAM_CRASH_SYMBOLS="${TRADESTREAM_CRASH_SYMBOLS:-8}"
export TRADESTREAM_CRASH_PARTITIONS="${TRADESTREAM_CRASH_PARTITIONS:-6}"
export TRADESTREAM_CRASH_RATE="${TRADESTREAM_CRASH_RATE:-1000}"
echo "== crash harness: $TRADESTREAM_CRASH_RECORDS records, $TRADESTREAM_CRASH_KILLS kills, $TRADESTREAM_CRASH_PARTITIONS partitions"
cargo build --locked
exec cargo test --locked --test crash -- --nocapture --test-threads=1
