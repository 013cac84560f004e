"""Where the time goes in a ``jax.profiler`` Perfetto trace (``perfetto_trace.json.gz``, e.g. from
``benchmarks/gpu_bench.py --trace``): per device, the busy time, the span from the first to the last event, the
number of kernels, and the kernels that take the most time (grouped by name, digits stripped so ``fusion.12`` and
``fusion.7`` count together unless ``--exact``).

    python benchmarks/trace_summary.py OUT/train_trace.json.gz [--top=25]

Device processes are those whose name contains ``/device:``; on CPU-only traces the host threads are summarised.
Busy time is the union of the events' intervals per device (overlapping streams are not double counted).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
from typing import Any


def load_events(path: str) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """``(complete events, pid -> process name)`` of a Chrome/Perfetto JSON trace (gzipped or not)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    return [e for e in events if e.get("ph") == "X" and "dur" in e], names


def busy_time(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``[start, end)`` intervals."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


def summarize(path: str, top: int = 25, exact: bool = False) -> str:
    events, names = load_events(path)
    device_pids = [pid for pid, name in names.items() if "/device:" in name]
    pids = device_pids or sorted({e["pid"] for e in events})
    lines = [f"trace {path}: {len(events)} events"]
    for pid in pids:
        evs = [e for e in events if e["pid"] == pid]
        if not evs:
            continue
        span = max(e["ts"] + e["dur"] for e in evs) - min(e["ts"] for e in evs)
        busy = busy_time([(e["ts"], e["ts"] + e["dur"]) for e in evs])
        by_name: dict[str, list[float]] = collections.defaultdict(list)
        for e in evs:
            key = e["name"] if exact else re.sub(r"[._]\d+", "", e["name"])
            by_name[key].append(e["dur"])
        total = sum(e["dur"] for e in evs)
        lines.append(f"{names.get(pid, pid)}: {len(evs)} events, busy {busy / 1e3:.2f} ms of a {span / 1e3:.2f} ms "
                     f"span ({100 * busy / max(span, 1e-9):.0f}%), sum of durations {total / 1e3:.2f} ms")
        lines.append(f"  {'ms':>9} {'%':>5} {'count':>6} {'mean us':>8}  name")
        for key, durs in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:top]:
            lines.append(f"  {sum(durs) / 1e3:9.3f} {100 * sum(durs) / max(total, 1e-9):5.1f} {len(durs):6d} "
                         f"{sum(durs) / len(durs):8.1f}  {key[:110]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("traces", nargs="+")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--exact", action="store_true", help="do not merge names that differ only in numbers")
    args = p.parse_args(argv)
    for path in args.traces:
        print(summarize(path, args.top, args.exact))
    return 0


if __name__ == "__main__":
    sys.exit(main())
