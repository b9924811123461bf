#!/usr/bin/env bash
# `make test`: checks, builds, starts one private Postgres for the whole run, runs every test
# (unit, Postgres, Kafka on the mock cluster, end to end) and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build"
cargo build --workspace --all-targets --locked

echo "== deployment files (offline: compose, Helm, Kubernetes schemas, checkov, CLI)"
scripts/validate-deploy.sh

work=$(mktemp -d /tmp/tradestream-test.XXXXXX)
# The private cluster runs as an unprivileged user when we are root: it must reach its data dir.
chmod 755 "$work"
pg_pid=""
cleanup() {
  if [ -n "$pg_pid" ] && kill -0 "$pg_pid" 2>/dev/null; then
    kill -TERM "$pg_pid" 2>/dev/null || true
    wait "$pg_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [ -z "${TRADESTREAM_TEST_DATABASE_URL:-}" ]; then
  echo "== private Postgres for the tests"
  target/debug/tradestream postgres --pg-data-dir "$work/pg" >"$work/pg.out" 2>"$work/pg.log" &
  pg_pid=$!
  for _ in $(seq 1 120); do
    url=$(sed -n 's/^database_url: //p' "$work/pg.out")
    [ -n "$url" ] && break
    if ! kill -0 "$pg_pid" 2>/dev/null; then cat "$work/pg.log" >&2; echo "test: private Postgres failed to start" >&2; exit 1; fi
    sleep 0.5
  done
  [ -n "${url:-}" ] || { cat "$work/pg.log" >&2; echo "test: private Postgres did not report its URL" >&2; exit 1; }
  export TRADESTREAM_TEST_DATABASE_URL="$url"
  echo "   $url"
fi

echo "== tests"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"

echo "== REST API fuzz (schemathesis from PyPI, driven by /openapi.json)"
scripts/api-fuzz.sh
