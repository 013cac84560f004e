#!/usr/bin/env bash
# Where the GPU time goes: profiles OPT-1.3B training (2 steps) and 1-token decoding (batch 1 and 128) with
# jax.profiler (weights sliced once per call, and per step at batch 1), saves the optimized HLO, and re-times
# training with cuBLAS-only GEMMs. Everything lands in one
# archive, OUT/diagnose.tgz (Perfetto traces, HLO text, gpu_bench.json/txt per run); the trace summaries
# (benchmarks/trace_summary.py) are printed.   bash benchmarks/gpu_diagnose.sh      (about 3 minutes on one H200)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_diagnose_out}"; D=/tmp/diagnose; rm -rf "$D"; mkdir -p "$OUT" "$D"
PY="${PYTHON:-python3}"; BW="${BANDWIDTH_GBS:-4156}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
run() { local name=$1 limit=$2; shift 2; echo "=== $name"; timeout --kill-after=10 "$limit" "$PY" benchmarks/gpu_bench.py \
  --out="$D/$name" --budget_s=$((limit - 15)) --bandwidth_gbs="$BW" ${DIAG_ARGS:-} "$@" 2>&1 | tail -n 14; }
run profile 150 --phases=train,decode --train_variants=save_dots:cudnn:8:unsafe_rbg --decode_configs=1:1:0,1:0:0,128:1:0 --trace
XLA_FLAGS="--xla_gpu_enable_triton_gemm=false" run cublas_only 75 --phases=train --train_variants=save_dots:cudnn:8:unsafe_rbg
for t in "$D"/profile/*_trace.json.gz; do "$PY" benchmarks/trace_summary.py "$t" --top=14 | cut -c1-150; done
tar czf "$OUT/diagnose.tgz" -C "$D" . && ls -la "$OUT"
