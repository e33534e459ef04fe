#!/usr/bin/env bash
# Install (if needed) and run the test suite: bash scripts/run_tests.sh [pytest args]
# The test files run in parallel on every core (pytest-xdist, a file's tests in one
# worker, so a file's module fixtures are built once); -n 0 runs them in this process.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "${RSKIP_VENV:-$root/.venv}/bin/python" -m pytest tests -n auto --dist loadfile "$@"
