#!/usr/bin/env bash
# Set up ./.venv and run the main job: `sbi-mflow demo` on the default simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sbi-mflow demo "$@"
