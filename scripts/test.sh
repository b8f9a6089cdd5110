#!/usr/bin/env bash
# Set up (once) and run the checks: ruff lint, ruff format check, pytest.
#   scripts/test.sh                 # everything, as CI runs it
#   scripts/test.sh -m "not slow"   # extra arguments go to pytest
#   scripts/test.sh -n 0 tests/test_tree.py   # one process (pytest-xdist off), e.g. to debug
# pytest runs in $TEST_WORKERS processes (default 2, CI's core count) with pytest-xdist;
# tests marked xdist_group("cluster") (Ray and multi-worker TF clusters) share one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadgroup "$@"
