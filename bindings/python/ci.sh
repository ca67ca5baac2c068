#!/usr/bin/env bash
# Builds the Python package the way a user installs it (pip, maturin from the package index
# as the build backend) into a fresh virtual environment, and runs its tests.
#
#   bash bindings/python/ci.sh            # from anywhere
#   SHMBUS_PY_VENV=/tmp/v bash ci.sh      # another place for the environment
#
# Needs python3 (3.11 or later, with the venv module) and a Rust toolchain.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${SHMBUS_PY_VENV:-$here/.venv-ci}"
python="${PYTHON:-python3}"

rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "$here" pytest numpy
cd "$here"
"$venv/bin/python" -m pytest -q tests
