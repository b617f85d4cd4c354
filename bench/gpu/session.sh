#!/usr/bin/env bash
# Issue 31's GPU figures in one call on a lent machine (the `device` tool): bench/scale.py at the real sizes,
# the goals first, each of them with its trace summarised, then the XLA flags tried on the 1.3B transformer.
#
#   here:  make gpu-wheels                      # .whl/: what the machine's image lacks (bench/gpu/carried.txt)
#   there: run(command="bash bench/gpu/session.sh", carry=[".whl"], timeout_s=590)
#
# Results under $OUT: scale.jsonl (one JSON line a run, its flags and profile summary inside), log.txt (all
# output) and machine.txt (the GPU, its driver, the versions). Runs go in order until BUDGET seconds are
# spent; a run that would start with less than a minute left is skipped and logged, and FROM=N starts at
# the Nth run (1-based) to finish in a second call. Rehearse on a CPU with the reduced models (WHEELS: a folder of
# wheels for that Python, or none to use its own packages):
#   PYTHON=.venv/bin/python WHEELS=none OUT=/tmp/rehearsal BIG=dalle_cpu MID=dalle_cpu UNET=unet_cpu \
#     bash bench/gpu/session.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu_session} BUDGET=${BUDGET:-540} FROM=${FROM:-1} PYTHON=${PYTHON:-python3} WHEELS=${WHEELS:-.whl}
BIG=${BIG:-dalle_1.3b} MID=${MID:-dalle_350m} UNET=${UNET:-unet_192}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1
  "$PYTHON" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__,
                                                'optax', optax.__version__, jax.devices())"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt"

runs=(  # XLA_FLAGS | bench/scale.py's arguments. The transformers in float32 take the einsum attention, whose
        # [batch, heads, 1280, 1280] probabilities kept for the backward need more than 141 GB by XLA's plan
        # of the step on a CPU (bench/plan_scale.py --meshes 1x1x1: 1.3B 180 GB, 350M 164; with remat=dots 45
        # and 30): they run with remat=dots.
        # In bfloat16 they take cuDNN's fused attention, which keeps none; run 9 is there should it not.
  "|--models $BIG --dtypes bfloat16 --profile /tmp/trace"
  "|--models $UNET --dtypes bfloat16 --profile /tmp/trace"
  "--xla_gpu_enable_triton_gemm=false|--models $BIG --dtypes bfloat16"
  "|--models $MID --dtypes bfloat16"
  "|--models $BIG,$MID --dtypes float32 --remat dots"
  "|--models $UNET --dtypes float32"
  "--xla_gpu_enable_command_buffer=|--models $BIG,$UNET --dtypes bfloat16"
  "--xla_gpu_enable_latency_hiding_scheduler=true|--models $BIG --dtypes bfloat16"
  "|--models $BIG --dtypes bfloat16 --remat dots"
)
start=$SECONDS
for i in "${!runs[@]}"; do
  (( i + 1 < FROM )) && continue
  flags=${runs[$i]%%|*} arguments=${runs[$i]#*|}
  left=$(( BUDGET - (SECONDS - start) ))
  if (( left < 60 )); then
    echo "run $((i + 1)) skipped, ${left} s left: XLA_FLAGS='$flags' $arguments" | tee -a "$OUT/log.txt"
    continue
  fi
  echo "== run $((i + 1)) at $((SECONDS - start)) s: XLA_FLAGS='$flags' $arguments" | tee -a "$OUT/log.txt"
  logged=$(wc -l < "$OUT/log.txt")
  # shellcheck disable=SC2086  # the arguments are words
  XLA_FLAGS="$flags" timeout "$left" "$PYTHON" bench/scale.py --steps 10 --out "$OUT/scale.jsonl" $arguments \
    >> "$OUT/log.txt" 2>&1 || echo "run $((i + 1)) failed or ran out of time: exit $?" | tee -a "$OUT/log.txt"
  tail -n +$(( logged + 1 )) "$OUT/log.txt" | grep -E "^\| (dalle|unet)_|, traced |no profile summary"
done
rm -rf /tmp/trace  # too large to bring back: their summaries are in scale.jsonl
echo "done at $((SECONDS - start)) s"
