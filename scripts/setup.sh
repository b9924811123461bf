#!/usr/bin/env bash
# Installs what building and running tradestream needs on Debian/Ubuntu, or says what is
# missing. Idempotent: installs nothing when everything is there.
set -euo pipefail

need_pkgs=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# librdkafka's cmake build: cmake, a C/C++ toolchain, and the libcurl, libssl, libsasl2, zlib headers.
for p in cmake build-essential pkg-config libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev; do
  have_pkg "$p" || need_pkgs+=("$p")
done
# The private Postgres cluster runs from the system's PostgreSQL binaries.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  need_pkgs+=(postgresql)
fi
have_pkg postgresql-client || command -v psql >/dev/null 2>&1 || need_pkgs+=(postgresql-client)
# `make test` checks the deployment files and fuzzes the API with tools from PyPI, each in a
# virtual environment of its own.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need_pkgs+=(python3 python3-venv)
fi

if [ ${#need_pkgs[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: missing ${need_pkgs[*]} and no apt-get here: install them with your package manager." >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "setup: missing ${need_pkgs[*]}; run as root or install them: apt-get install ${need_pkgs[*]}" >&2
      exit 1
    fi
  fi
  echo "setup: installing ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install Rust (https://rustup.rs) first." >&2
  exit 1
fi
