#!/usr/bin/env bash
# One-GPU benchmark of alert_jax (matmul/bandwidth ceilings, OPT-1.3B train steps, KV-cache decoding).
#
#   bash benchmarks/gpu.sh                # from the repo root on the GPU machine; results under $OUT
#
# Installs nothing from the network. If a folder .whl/ with wheels travelled with the repo (e.g. ml_collections),
# they are installed into /tmp/site first. Runs benchmarks/gpu_bench.py under a hard time limit (default 390 s,
# GPU_BENCH_LIMIT_S) with PYTHONPATH=. ; writes OUT/gpu_bench.json, OUT/gpu_bench.txt (summary),
# OUT/gpu_bench.log (full output) and OUT/env.txt (nvidia-smi, versions), and prints the summary last.
# Then (GPU_TESTS=1, the default) runs tests/test_model.py on the GPU (cuDNN attention vs XLA, bf16 vs fp32, KV cache)
# within 80 s, output in OUT/pytest_gpu.log. Whole script: under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_bench_out}"
mkdir -p "$OUT"
LIMIT="${GPU_BENCH_LIMIT_S:-390}"
PY="${PYTHON:-python3}"
start=$(date +%s)

extra=""
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && extra="/tmp/site:" || echo "gpu.sh: installing .whl/*.whl failed; continuing without them"
fi
export PYTHONPATH="${extra}$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# JAX preallocates this share of GPU memory (default 0.75); the 1.3B sweep wants more headroom.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"

{
  echo "date: $(date -u +%FT%TZ)"; uname -a
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw \
    --format=csv 2>&1 || echo "nvidia-smi not available"
  "$PY" -m pip list 2>/dev/null | grep -iE '^(jax|jaxlib|jax-cuda|flax|optax|numpy|ml.collections|orbax)' || true
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# Time budget inside Python leaves ~30 s under the hard limit for writing results.
timeout --signal=TERM --kill-after=20 "$LIMIT" \
  "$PY" benchmarks/gpu_bench.py --out="$OUT" --budget_s="$((LIMIT - 30))" "$@" 2>&1 | tee "$OUT/gpu_bench.log"
rc=${PIPESTATUS[0]}
echo "gpu.sh: gpu_bench.py exit status $rc after $(( $(date +%s) - start ))s (124 = hit the ${LIMIT}s limit)"
if [ "$rc" != 0 ] && [ -f "$OUT/gpu_bench.txt" ]; then
  echo "---- partial summary (OUT/gpu_bench.txt) ----"; cat "$OUT/gpu_bench.txt"
fi
if [ "${GPU_TESTS:-1}" = 1 ]; then
  timeout --kill-after=10 80 "$PY" -m pytest -q -p no:cacheprovider tests/test_model.py > "$OUT/pytest_gpu.log" 2>&1
  echo "gpu.sh: tests/test_model.py on the GPU: exit status $? (124 = timed out)"; tail -n 5 "$OUT/pytest_gpu.log"
fi
exit "$rc"
