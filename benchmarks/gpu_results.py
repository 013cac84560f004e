"""Results bookkeeping of ``benchmarks/gpu_bench.py``: the JSON record rewritten after every measurement and its
readable summary table (``OUT/gpu_bench.json``, ``OUT/gpu_bench.txt``), so a crash or timeout keeps what was measured.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
import traceback
from typing import Any

# ----------------------------------------------------------------------------------------------------------------
# Results bookkeeping
# ----------------------------------------------------------------------------------------------------------------


class Results:
    """Accumulates results and rewrites ``gpu_bench.json`` / ``gpu_bench.txt`` after every update."""

    def __init__(self, out: pathlib.Path, budget_s: float):
        self.out = out
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.data: dict[str, Any] = {"meta": {}, "ceilings": {}, "train": [], "decode": [], "errors": []}
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def error(self, phase: str, e: BaseException) -> None:
        text = f"{type(e).__name__}: {e}"
        self.data["errors"].append({"phase": phase, "error": text[:2000], "traceback": traceback.format_exc()[-3000:]})
        print(f"[{phase}] ERROR {text[:500]}", flush=True)
        self.save()

    def save(self) -> None:
        self.data["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        (self.out / "gpu_bench.json").write_text(json.dumps(self.data, indent=1, default=str))
        (self.out / "gpu_bench.txt").write_text(summary(self.data))


def _f(x: Any, fmt: str = "{:.1f}") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def summary(d: dict[str, Any]) -> str:
    m, c = d["meta"], d["ceilings"]
    lines = [
        f"device: {m.get('device_kind')} ({m.get('platform')}), jax {m.get('jax')}, flax {m.get('flax')}, "
        f"smoke={m.get('smoke')}, elapsed {m.get('elapsed_s')}s",
        f"ceilings: bf16 matmul n={c.get('matmul_n')}: {_f(c.get('matmul_tflops'))} TFLOP/s "
        f"(best of {c.get('matmul_trials')} trials); device bandwidth {_f(c.get('bandwidth_gbs'), '{:.0f}')} GB/s "
        f"(scale {_f(c.get('scale_gbs'), '{:.0f}')}, copy {_f(c.get('copy_gbs'), '{:.0f}')})",
        "",
        "train (OPT-{size}, seq {seq}, batch {batch}):".format(
            size=m.get("train_size"), seq=m.get("train_seq"), batch=m.get("train_batch")
        ),
        f"  {'remat':<10} {'attn':<6} {'dropout rng':<12} {'micro':>5} {'compile s':>9} {'step ms':>9} {'tokens/s':>10} "
        f"{'MFU%':>6} {'%mm peak':>8} {'XLA peak GiB':>12} {'alloc peak GiB':>14}  status",
    ]
    for r in d["train"]:
        lines.append(
            f"  {r['remat']:<10} {r['attention']:<6} {r.get('dropout_rng', '-'):<12} {r['micro_batch']:>5} {_f(r.get('compile_s')):>9} "
            f"{_f(r.get('step_ms')):>9} {_f(r.get('tokens_per_s'), '{:.0f}'):>10} "
            f"{_f(r.get('mfu_pct')):>6} {_f(r.get('mfu_vs_matmul_pct')):>8} "
            f"{_f(r.get('xla_peak_gib'), '{:.2f}'):>12} {_f(r.get('allocator_peak_gib'), '{:.2f}'):>14}  "
            f"{r.get('status')}"
        )
    lines += [
        "",
        f"decode (OPT-{m.get('decode_size')}, bf16 weights, prompt {m.get('decode_prompt')} + "
        f"{m.get('decode_new')} new tokens):",
        f"  {'batch':>5} {'unstack':>7} {'e2e s':>7} {'gen tok/s':>10} {'step ms':>8} {'roofline ms (whole/filled cache)':>33} "
        f"{'% of roofline':>13}  status",
    ]
    for r in d["decode"]:
        roof = f"{_f(r.get('roofline_ms_whole_cache'), '{:.3f}')}/{_f(r.get('roofline_ms_filled'), '{:.3f}')}"
        lines.append(
            f"  {r['batch']:>5} {int(r.get('unstack', 1)):>7} {_f(r.get('e2e_s'), '{:.3f}'):>7} {_f(r.get('gen_tokens_per_s'), '{:.0f}'):>10} "
            f"{_f(r.get('step_ms'), '{:.3f}'):>8} {roof:>33} {_f(r.get('roofline_pct')):>13}  {r.get('status')}"
        )
    if d["train"]:
        lines.insert(lines.index("") + 3, "  (XLA peak: compiled program, arguments + outputs - aliased + temp; alloc peak: the "
                     "allocator's peak_bytes_in_use, cumulative over the run so far)")
    if d["errors"]:
        lines += ["", "errors:"] + [f"  [{e['phase']}] {e['error'][:300]}" for e in d["errors"]]
    return "\n".join(lines) + "\n"


def is_oom(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text
