"""Paired bootstrap intervals of model differences: OPT-CoT - OPT, OPT-FT - OPT, OPT-CoT - OPT-FT per size.

Per-instance values come from each run's predictions files (``predictions/<task>/<template>.jsonl`` beside its
``scores.json``), matched by task, template and instance id; a record without the metric in its ``scores`` (written
before the metric existed) is scored from its ``prediction`` + ``references``. For each dataset both runs are
resampled with the same indices (``eval.bootstrap.dataset_draws``: seeded by the seed and the dataset name, on the
instances both runs scored under every template both evaluated); each resample's difference is the difference of the
two runs' aggregates computed as ``scores.json``'s (max over templates per dataset, mean over the group's datasets).
Groups: ``overall`` (the first run's ``overall`` datasets) and each skill.

Result per comparison and group: ``{"diff": point estimate, "ci95": [lo, hi], "datasets": number used}``.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from alert_jax.eval import bootstrap
from alert_jax.eval import metrics as metrics_lib

COMPARISONS = (("cot", "pretrained"), ("ft", "pretrained"), ("cot", "ft"))  # (variant, minus variant)

Values = dict[str, dict[str, dict[str, float]]]  # task -> template -> instance id -> value (x100)


def instance_values(folder: pathlib.Path, scores: Mapping[str, Any], metric: str) -> Values:
    """Per-instance values of ``metric`` from the predictions files in ``folder`` (the ``scores.json`` folder) for
    the tasks and templates ``scores`` lists; files that are missing are left out."""
    out: Values = {}
    for task, entry in scores.get("datasets", {}).items():
        for template in entry.get("templates", {}):
            path = folder / "predictions" / task / f"{template}.jsonl"
            if not path.is_file():
                continue
            values = {}
            for line in path.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                r = json.loads(line)
                stored = (r.get("scores") or {}).get(metric)
                values[str(r["id"])] = float(stored) if stored is not None else \
                    metrics_lib.instance_scores([r["prediction"]], [r["references"]])[metric][0]
            out.setdefault(task, {})[template] = values
    return out


def _dataset(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]], task: str,
             resamples: int, seed: int) -> tuple[float, np.ndarray] | None:
    """(point difference, [resamples] differences) of the max over templates, or None without common instances."""
    templates = [t for t in a if t in b]
    if not templates:
        return None
    ids = [i for i in a[templates[0]] if all(i in a[t] and i in b[t] for t in templates)]
    if not ids:
        return None

    def draws(values: Mapping[str, Mapping[str, float]], n: int) -> np.ndarray:
        per_t = {t: {"m": [values[t][i] for i in ids]} for t in templates}
        return bootstrap.dataset_draws(per_t, {t: ids for t in templates}, resamples=n, seed=seed, key=task,
                                       order=ids)["max"]["m"]

    point = float(draws(a, 0)[0] - draws(b, 0)[0])
    return point, draws(a, resamples) - draws(b, resamples)


def paired_differences(a: Values, b: Values, groups: Mapping[str, Sequence[str]], *,
                       resamples: int = bootstrap.DEFAULT_RESAMPLES,
                       seed: int = bootstrap.DEFAULT_SEED) -> dict[str, dict[str, Any]]:
    """group -> ``{"diff", "ci95", "datasets"}`` of run ``a`` minus run ``b`` (module docstring)."""
    per_dataset = {task: d for task in a if task in b
                   if (d := _dataset(a[task], b[task], task, resamples, seed)) is not None}
    out = {}
    for group, names in groups.items():
        used = [n for n in names if n in per_dataset]
        if not used:
            continue
        point = float(np.mean([per_dataset[n][0] for n in used]))
        diffs = np.mean([per_dataset[n][1] for n in used], axis=0)
        out[group] = {"diff": point, "ci95": bootstrap.interval(diffs), "datasets": len(used)}
    return out


def run_differences(runs: Sequence[Any], folders: Sequence[pathlib.Path], metric: str, labels: Mapping[str, str], *,
                    resamples: int = bootstrap.DEFAULT_RESAMPLES,
                    seed: int = bootstrap.DEFAULT_SEED) -> dict[str, dict[str, dict[str, Any]]]:
    """size -> ``'OPT-CoT - OPT'`` (``labels``: variant -> name) -> :func:`paired_differences`, for the comparisons
    whose two runs of that size (``runs[i]``: ``size``, ``variant``, ``scores``; its ``scores.json`` in
    ``folders[i]``) both have predictions files."""
    by_label = {(r.size, r.variant): (r, pathlib.Path(f)) for r, f in zip(runs, folders)}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for size in dict.fromkeys(r.size for r in runs):
        for left, right in COMPARISONS:
            if (size, left) not in by_label or (size, right) not in by_label:
                continue
            (ra, fa), (rb, fb) = by_label[(size, left)], by_label[(size, right)]
            va, vb = instance_values(fa, ra.scores, metric), instance_values(fb, rb.scores, metric)
            groups = {"overall": list((ra.scores.get("overall") or {}).get("datasets", []))}
            groups |= {skill: list(g.get("datasets", [])) for skill, g in (ra.scores.get("skills") or {}).items()}
            diffs = paired_differences(va, vb, groups, resamples=resamples, seed=seed)
            if diffs:
                out.setdefault(size, {})[f"{labels[left]} - {labels[right]}"] = diffs
    return out
