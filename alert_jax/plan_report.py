"""Text of a memory plan (:func:`format_plan`) and the byte-size helpers it and ``launch/plan.py`` use.

Split from ``alert_jax/plan.py`` (which re-exports every name here): this module only formats numbers that the
planner already measured; it compiles nothing and imports no JAX. :func:`format_plan` lines starting with
``verdict:`` are the machine-checkable summary; the last line says how far the numbers carry to other backends.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: plan.py imports this module
    from alert_jax.plan import MemoryPlan

__all__ = ["CPU_NOTE", "format_bytes", "format_plan", "parse_bytes"]

CPU_NOTE = (
    "note: compiled for {platform}; arguments (params, optimizer state, batch) are exact for any backend, but "
    "temporaries/activations are XLA:{platform_upper}'s: XLA:CPU runs bf16 math in fp32 (bf16 activations count ~2x), "
    "fuses less and schedules FSDP all-gathers differently, so GPU/TPU activations are usually smaller; for exact "
    "numbers run launch/plan.py on the target backend."
)

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_bytes(text: str | int | float) -> int:
    """``'80GiB'`` -> 85899345920; ``'141GB'`` / ``'141e9'`` / ``'16G'`` (decimal) also accepted."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read a memory size from {text!r}; use e.g. 80GiB, 141GB, 16e9")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_bytes(n: float | None) -> str:
    """``n`` bytes as ``'1.50 GiB'`` / MiB / KiB (2 decimals) or ``'12 B'``; ``'n/a'`` for None."""
    if n is None:
        return "n/a"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _pct(n: int, usable: int | None) -> str:
    return "" if not usable else f" ({100.0 * n / usable:.0f}% of usable)"


def format_plan(p: MemoryPlan) -> str:
    """Human-readable report; the lines starting with ``verdict:`` are the machine-checkable summary."""
    mesh = ",".join(f"{k}:{v}" for k, v in p.mesh_shape.items())
    n_dev = math.prod(p.mesh_shape.values())
    c = p.model
    usable = p.usable_bytes
    lines = [
        f"plan: opt-{p.size} on mesh {mesh} ({n_dev} {p.platform} device(s)); model dtype {c.dtype}, params "
        f"{c.param_dtype}, remat {c.remat_policy}, attention {c.attention_impl}",
    ]
    if p.device_memory is not None:
        lines.append(
            f"device memory {format_bytes(p.device_memory)} x usable fraction {p.usable_fraction:g} = "
            f"{format_bytes(usable)} usable per device"
        )
    lines.append("per device:")
    if p.train is not None:
        t, m = p.train, p.train.compiled
        lines += [
            f"  train step: batch {t.batch_size} x {t.seq_len} tokens in {t.grad_accum_steps} microbatch(es) of "
            f"{t.micro_batch} rows (compiled in {m.compile_seconds:.1f}s)",
            f"    params            {format_bytes(t.params_bytes):>12}   (analytic, shard shapes x dtype)",
            f"    optimizer state   {format_bytes(t.opt_state_bytes):>12}   (analytic)",
            f"    gradients         {format_bytes(t.grads_bytes):>12}   (analytic: fp32 accumulator; part of temp)",
            f"    batch             {format_bytes(t.batch_bytes):>12}   (analytic)",
            f"    compiled: arguments {format_bytes(m.argument_bytes)}, outputs {format_bytes(m.output_bytes)}, "
            f"aliased (donated) {format_bytes(m.alias_bytes)}, temp {format_bytes(m.temp_bytes)}",
            f"    activations & other temporaries {format_bytes(t.activations_bytes)} (temp - gradients)",
            f"    peak = arguments + outputs - aliased + temp = {format_bytes(t.peak_bytes)}"
            f"{_pct(t.peak_bytes, usable)}",
        ]
        if usable is not None:
            word = "FITS" if p.train_fits else "DOES NOT FIT"
            lines.append(f"verdict: train step {word}: peak {format_bytes(t.peak_bytes)} vs {format_bytes(usable)} usable")
    else:
        lines.append(f"verdict: train step CANNOT BE COMPILED HERE: {p.train_error}")
    if p.fit is not None:
        f = p.fit
        pts = ", ".join(f"{r} rows -> {format_bytes(b)}" for r, b in f.points)
        if f.max_micro_batch:
            capped = " = the whole batch (search capped there)" if f.max_rows and f.max_micro_batch >= f.max_rows else ""
            lines.append(
                f"verdict: largest micro-batch that fits: {f.max_micro_batch} rows ({f.max_micro_batch // f.rows_step}"
                f" per device){capped}{'' if f.verified else ' (extrapolated, not verified)'}"
            )
            if p.train is not None:
                k = f.accumulation_for(p.train.batch_size)
                lines.append(
                    f"  for train.batch_size={p.train.batch_size}: "
                    + (f"train.grad_accum_steps={k} (microbatch {p.train.batch_size // k})" if k else
                       "no divisor of the batch fits; change train.batch_size")
                )
            fit_text = (
                "" if math.isnan(f.bytes_per_row) else
                f"; linear fit {format_bytes(f.fixed_bytes)} + {format_bytes(f.bytes_per_row)} per global row"
            )
            lines.append(f"  method: compiled peaks {pts}{fit_text}")
        else:
            lines.append(
                f"verdict: largest micro-batch that fits: NONE (one row per device needs {format_bytes(f.points[0][1])}"
                f" > {format_bytes(f.usable_bytes)}): shard further (more fsdp/tensor), remat, or a smaller seq_len"
            )
    elif p.fit_error:
        lines.append(f"verdict: micro-batch search CANNOT BE COMPILED HERE: {p.fit_error}")
    if p.decode is not None:
        d, m = p.decode, p.decode.compiled
        lines += [
            f"  decode: batch {d.batch_size}, prompt {d.prompt_len} + {d.max_new_tokens} new tokens, {d.dtype} weights "
            f"(compiled in {m.compile_seconds:.1f}s)",
            f"    weights {format_bytes(d.params_bytes)}, KV cache {format_bytes(d.kv_cache_bytes)} (analytic); "
            f"compiled: arguments {format_bytes(m.argument_bytes)}, temp {format_bytes(m.temp_bytes)}, "
            f"peak {format_bytes(d.peak_bytes)}{_pct(d.peak_bytes, usable)}",
        ]
        if usable is not None:
            word = "FITS" if p.decode_fits else "DOES NOT FIT"
            lines.append(f"verdict: decode {word}: peak {format_bytes(d.peak_bytes)} vs {format_bytes(usable)} usable")
    elif p.decode_error:
        lines.append(f"verdict: decode CANNOT BE COMPILED HERE: {p.decode_error}")
    lines.append(CPU_NOTE.format(platform=p.platform, platform_upper=p.platform.upper()) if p.platform == "cpu" else
                 f"note: compiled for {p.platform}: these are the numbers XLA will allocate on this backend.")
    return "\n".join(lines)
