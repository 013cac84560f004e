"""CPU dry run of benchmarks/gpu_bench.py (``--smoke``: tiny sizes, few steps) so every code path the GPU run takes
(ceilings, AOT-compiled train steps with an error path, decode_batch + single decode step + roofline) runs here."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from helpers import REPO_ROOT, subprocess_env


def test_gpu_bench_smoke(tmp_path):
    env = subprocess_env(pythonpath=True, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_bench.py"), "--smoke", f"--out={tmp_path}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_bench.json").read_text())
    text = (tmp_path / "gpu_bench.txt").read_text()

    c = data["ceilings"]
    assert c["matmul_tflops"] > 0 and c["bandwidth_gbs"] > 0

    by_variant = {(r["remat"], r["attention"]): r for r in data["train"]}
    ok = by_variant[("full", "xla")]
    assert ok["status"] == "ok", ok
    assert ok["tokens_per_s"] > 0 and math.isfinite(ok["loss"]) and ok["xla_peak_gib"] > 0
    # tokens/s and MFU agree with the step time and perf.py's FLOP formula
    assert abs(ok["tokens_per_s"] - 4 * 64 / (ok["step_ms"] / 1e3)) < 1e-6 * ok["tokens_per_s"]
    assert abs(ok["mfu_pct"] / 100 - ok["flops_per_step"] / (ok["step_ms"] / 1e3) / 989e12) < 1e-9
    # cuDNN attention cannot run on CPU: reported as an error, and the run went on
    bad = by_variant[("save_dots", "cudnn")]
    assert bad["status"].startswith("error") and "NVIDIA GPU" in bad["status"]
    assert [e["phase"] for e in data["errors"]] == ["train save_dots/cudnn/unsafe_rbg/micro2"]
    assert ok["grad_accum_steps"] == 2 and ok["dropout_rng"] == "threefry2x32"

    unstacked, stacked = data["decode"]
    assert unstacked["status"] == stacked["status"] == "ok", data["decode"]
    assert (unstacked["unstack"], stacked["unstack"]) == (True, False)
    assert unstacked["steps"] == 8 and unstacked["gen_tokens_per_s"] > 0 and unstacked["step_ms"] > 0
    assert "e2e_s" not in stacked and stacked["step_ms"] > 0  # step timing only
    assert unstacked["roofline_ms_whole_cache"] >= unstacked["roofline_ms_filled"] > 0
    assert "train (OPT-tiny" in text and "decode (OPT-tiny" in text
