#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run with a timeout per step. Logs, benchmark JSON
# and figures are packed into $OUT/gpu_results.tgz, with every step's tail in
# $OUT/summary.log. Prepare the wheels once on a networked machine:
#   bash ../shared/gpu/wheels.sh scikit-dimension==0.3.4
# then run this on the GPU machine from the repository root:  bash scripts/gpu_checks.sh
# STEPS selects the steps (default: all, in this order); T_<STEP> overrides a step's limit.
#   gpu_tests       the `gpu` tests
#   calibration     benchmarks/calibration.py, our posterior sampled on CUDA (DEMO_MODEL: a
#                   saved demo model, else the demo is trained first)
#   table2_epochs   Table 2's manifold rows at 10^5 simulations for a few epochs: the cost
#                   per epoch of the paper's budget on this GPU (compiled steps)
#   profile         the compiled and eager training steps (benchmarks/profile_step.py)
#   demo            sbi-mflow demo --device cuda
set -u
OUT=${OUT:-gpu-out}
WORK=${WORK:-/tmp/gpu-work}
STEPS=${STEPS:-"gpu_tests calibration table2_epochs profile demo"}
mkdir -p "$OUT" "$WORK/logs" "$WORK/results"
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

run_gpu_tests() {
  step gpu_tests "${T_GPU_TESTS:-150}" $PY -m pytest -m gpu -q -p no:cacheprovider \
    tests/test_gpu.py tests/test_posterior_gpu.py tests/test_sim_particle_decay.py \
    tests/test_sim_polynomial_surface.py tests/test_sim_sphere.py -k "not demo_runs_on_cuda"
}
run_calibration() {
  step calibration "${T_CALIBRATION:-200}" $PY -m benchmarks.calibration --methods mflow \
    --sampling-device cuda --loop-observations 1 --out "$WORK/results/calibration" \
    ${DEMO_MODEL:+--model "$DEMO_MODEL"}
}
run_table2_epochs() {
  step table2_epochs "${T_TABLE2_EPOCHS:-170}" $PY -m benchmarks.paper_table2 --device cuda \
    --simulations 100000 --epochs "${TABLE2_EPOCHS:-2}" --density-epochs 1 \
    --rows ${TABLE2_ROWS:-mflow-seq fom af} --seeds 0 --generate 1000 \
    --cache "$WORK/results/table2_epochs"
}
run_profile() {
  step profile_compiled "${T_PROFILE:-140}" $PY -m benchmarks.profile_step --device cuda \
    --batches 100 1024 --hidden 128 --threads 8 --compile --kinds manifold density
}
run_demo() {
  step demo "${T_DEMO:-140}" $PY -m sbi_mflow.cli demo --device cuda --out "$WORK/demo" --quiet
}

{ nvidia-smi; $PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } \
  > "$WORK/logs/env.log" 2>&1
head -n 20 "$WORK/logs/env.log" | tee "$OUT/summary.log"
for name in $STEPS; do "run_$name"; done
cp "$WORK"/results/calibration/*.json "$OUT/" 2>/dev/null
tar czf "$OUT/gpu_results.tgz" -C "$WORK" logs results demo 2>/dev/null
ls -la "$OUT"
