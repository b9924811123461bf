#!/usr/bin/env bash
# `make bench`: the figures of docs/benchmarks.md. Builds the release binary, runs the three
# `tradestream bench` scenarios (mock broker, Avro through the schema registry, private
# Postgres) and then the core micro-benchmarks (`cargo bench`).
# BENCH_RECORDS / BENCH_SYMBOLS scale the pipeline scenario, BENCH_FEATURES_RECORDS the
# features one (two consumer tasks, one per core: BENCH_STREAM_TASKS), BENCH_LATENCY_RECORDS
# the latency one (fed at 1k records/s).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked --bin tradestream
bin=target/release/tradestream
records="${BENCH_RECORDS:-300000}"
symbols="${BENCH_SYMBOLS:-60}"
features_records="${BENCH_FEATURES_RECORDS:-1000000}"
tasks="${BENCH_STREAM_TASKS:-2}"
echo "== features processor: $features_records records through the mock broker, Avro in and out, $tasks tasks"
"$bin" bench features --records "$features_records" --symbols "$symbols" --stream-tasks "$tasks" --log-level warn
echo "== whole pipeline: $records market-data records, every stage and the sink"
"$bin" bench pipeline --records "$records" --symbols "$symbols" --log-level warn
echo "== latency at 1k records/s: bar produced -> its fill received"
"$bin" bench latency --records "${BENCH_LATENCY_RECORDS:-30000}" --symbols 10 --rate 1000 --kafka-linger-ms 0 --log-level warn
echo "== core micro-benchmarks (cargo bench)"
cargo bench --locked -p tradestream-features
cargo bench --locked -p tradestream-trading --bench trading_core
