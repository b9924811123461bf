#!/usr/bin/env bash
# `make demo`: installs what is missing, builds the release binary and runs the demo with
# everything embedded (mock Kafka broker, schema registry, private Postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
data="${TRADESTREAM_DEMO_DATA:-../shared/data/nasdaq-daily.csv}"
if [ ! -f "$data" ]; then
  echo "demo: $data not found: the demo replays the NASDAQ daily file from shared/data (set TRADESTREAM_DEMO_DATA to another OHLCV CSV)." >&2
  exit 1
fi
cargo build --release --locked --bin tradestream
exec target/release/tradestream demo --data "$data" "$@"
