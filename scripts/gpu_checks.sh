#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run with a timeout per step; logs and benchmark
# JSON go to $OUT (default ./gpu-out). Prepare the wheels once on a networked machine:
#   bash ../shared/gpu/wheels.sh          (sbi's stack for Python 3.12 into ./.whl)
# then run this on the GPU machine from the repository root:  bash scripts/gpu_checks.sh
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT/logs"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl > "$OUT/logs/install.log" 2>&1 || tail -5 "$OUT/logs/install.log"
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
PY=${PY:-python3}

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc, $((SECONDS - start)) s"
  tail -n 12 "$OUT/logs/$name.log"
}

{ nvidia-smi; $PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } \
  > "$OUT/logs/env.log" 2>&1
head -n 20 "$OUT/logs/env.log"
step gpu_tests "${T_TESTS:-150}" $PY -m pytest -m gpu -q -p no:cacheprovider -x tests \
  -k "not demo_runs_on_cuda"
step profile_cuda "${T_PROFILE:-90}" $PY benchmarks/profile_step.py --device cuda \
  --batches 128 1024 4096 --hidden 128 --threads 8
step profile_cuda_compiled "${T_COMPILED:-200}" $PY benchmarks/profile_step.py --device cuda \
  --batches 128 1024 --hidden 128 --threads 8 --compile --kinds manifold density
step profile_cpu "${T_CPU:-90}" $PY benchmarks/profile_step.py --device cpu \
  --batches 128 1024 --hidden 128 --threads "$(nproc)" --steps 10 --label allcores
step demo "${T_DEMO:-200}" $PY -m sbi_mflow.cli demo --device cuda --out "$OUT/demo" --quiet
tar czf "$OUT/results.tgz" benchmarks/results "$OUT/logs" "$OUT/demo" 2>/dev/null
ls -la "$OUT"
