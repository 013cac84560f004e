"""Helpers shared by the CPU benchmark scripts ``decode.py`` and ``train_step.py``: machine load and call timing.

The scripts put the repository root on ``sys.path`` themselves (so ``alert_jax`` and this module import when they
run as ``python benchmarks/<script>.py``), then ``from benchmarks.common import ...``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

__all__ = ["load_avg", "time_calls"]


def load_avg() -> str:
    """``os.getloadavg()`` as ``'1.00 0.50 0.25'`` (1, 5, 15 minutes), ``'n/a'`` where the OS has none; printed
    with every benchmark so a busy shared machine shows in the numbers."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def time_calls(fn: Callable[[], object], repeats: int, *, warmup: int = 1, label: str | None = None) -> list[float]:
    """Calls ``fn`` ``warmup`` times untimed (compilation, allocator warm-up), then ``repeats`` times timed; returns
    the ``repeats`` wall times in seconds. ``fn`` must block until its work is done (e.g. ``block_until_ready``).
    With ``label``, prints every call's time as ``  {label}: warm-up step i/n ...s`` / ``timed step i/n ...s``."""
    for i in range(warmup):
        t0 = time.perf_counter()
        fn()
        if label:
            print(f"  {label}: warm-up step {i + 1}/{warmup} {time.perf_counter() - t0:.2f}s", flush=True)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if label:
            print(f"  {label}: timed step {i + 1}/{repeats} {times[-1]:.2f}s", flush=True)
    return times
