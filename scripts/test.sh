#!/usr/bin/env bash
# Command 2 of the README: set up ./.venv with the test extra (idempotent), run the
# linter, then the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh test
export PATH="$root/.venv/bin:$PATH"  # the monailabel launcher runs `python` from PATH
python -m ruff check .            # lint (config in pyproject.toml); a finding fails the run before the tests
python -m ruff format --check .   # and the format: run `ruff format .` to fix
exec python -m pytest "$@"
