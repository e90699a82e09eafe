#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run with a timeout per step. Logs, benchmark JSON
# and the demo's output are packed into $OUT/gpu_results.tgz, with every step's tail in
# $OUT/summary.log. Prepare the wheels once on a networked machine:
#   bash ../shared/gpu/wheels.sh pytest pluggy iniconfig pygments packaging
# then run this on the GPU machine from the repository root:  bash scripts/gpu_checks.sh
set -u
OUT=${OUT:-gpu-out}
WORK=${WORK:-/tmp/gpu-work}
mkdir -p "$OUT" "$WORK/logs"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl > "$WORK/logs/install.log" 2>&1 || tail -5 "$WORK/logs/install.log"
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
PY=${PY:-python3}

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
  local rc=$?
  { echo "== $name: rc=$rc, $((SECONDS - start)) s"; tail -n 25 "$WORK/logs/$name.log"; } \
    | tee -a "$OUT/summary.log"
}

{ nvidia-smi; $PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } \
  > "$WORK/logs/env.log" 2>&1
head -n 20 "$WORK/logs/env.log" | tee "$OUT/summary.log"
step gpu_tests "${T_TESTS:-150}" $PY -m pytest -m gpu -q -p no:cacheprovider tests \
  -k "not demo_runs_on_cuda"
step profile_cuda_compiled "${T_COMPILED:-140}" $PY benchmarks/profile_step.py --device cuda \
  --batches 128 1024 --hidden 128 --threads 8 --compile --kinds manifold density
step profile_cpu "${T_CPU:-50}" $PY benchmarks/profile_step.py --device cpu \
  --batches 128 1024 --hidden 128 --threads "$(nproc)" --steps 10 --kinds manifold density \
  --label allcores
step demo "${T_DEMO:-140}" $PY -m sbi_mflow.cli demo --device cuda --out "$WORK/demo" --quiet
step profile_cuda "${T_PROFILE:-60}" $PY benchmarks/profile_step.py --device cuda \
  --batches 128 1024 4096 --hidden 128 --threads 8
tar czf "$OUT/gpu_results.tgz" benchmarks/results "$WORK/logs" "$WORK/demo" 2>/dev/null
ls -la "$OUT"
