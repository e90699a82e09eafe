#!/usr/bin/env bash
# Set up ./.venv and run the test suite (slow and GPU tests are deselected by default;
# pass pytest arguments through, e.g. `bash scripts/test.sh -m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest "$@"
