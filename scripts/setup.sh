#!/usr/bin/env bash
# Create ./.venv with sbi-mflow installed (editable); `setup.sh test` adds the test tools.
# torch is installed first, pinned (TORCH_SPEC, default torch==2.13.0), unless the venv
# already has one: a bare "torch" requirement would otherwise pull a multi-GB CUDA build
# on machines that cannot use it. GPU users: TORCH_SPEC="torch" (or your CUDA wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q --no-compile "${TORCH_SPEC:-torch==2.13.0}" 2>&1 | grep -v "^WARNING: Location" || true
fi
# --no-compile: the demo needs byte code only for what it imports; the tests get it below
extras=${1:+[$1]}
python -m pip install -q --no-compile -e ".${extras}" 2>&1 | grep -v "^WARNING: Location" || true
if [ -n "${1:-}" ]; then
  # the tests start many Python processes: give them byte code (skipped where it is current;
  # nothing else writes it when PYTHONDONTWRITEBYTECODE is set)
  python -m compileall -q -j 0 "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
fi
python -c "import sbi_mflow, simulators, torch; print('sbi-mflow', sbi_mflow.__version__, 'torch', torch.__version__)"
