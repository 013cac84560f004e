"""Paired bootstrap intervals of model differences: OPT-CoT - OPT, OPT-FT - OPT, OPT-CoT - OPT-FT per size.

Per-instance values come from each run's predictions files (``predictions/<task>/<template>.jsonl`` beside its
``scores.json``), matched by task, template and instance id, each scored from its ``prediction`` + ``references``
as the evaluation runner scores them for ``scores.json`` (``metrics.instance_scores``). For each dataset both runs are
resampled with the same indices (``eval.bootstrap.dataset_draws``: seeded by the seed and the dataset name, on the
instances both runs scored under every template both evaluated); each resample's difference is the difference of the
two runs' aggregates computed as ``scores.json``'s (max over templates per dataset, mean over the group's datasets).
Groups (:func:`groups_of`): ``overall``, ``in_domain``, ``held_out`` and each skill of the first run's scores.

Result per comparison and group: ``{"diff": point estimate, "ci95": [lo, hi], "datasets": number used}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath

from alert_jax.eval import bootstrap
from alert_jax.eval import metrics as metrics_lib

COMPARISONS = (("cot", "pretrained"), ("ft", "pretrained"), ("cot", "ft"))  # (variant, minus variant)

Values = dict[str, dict[str, dict[str, float]]]  # task -> template -> instance id -> value (x100)


def instance_values(folder: epath.Path, scores: Mapping[str, Any], metric: str) -> Values:
    """Per-instance values of ``metric`` from the predictions files in ``folder`` (the ``scores.json`` folder) for
    the tasks and templates ``scores`` lists; files that are missing are left out."""
    out: Values = {}
    for task, entry in scores.get("datasets", {}).items():
        for template in entry.get("templates", {}):
            path = folder / "predictions" / task / f"{template}.jsonl"
            if not path.is_file():
                continue
            records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            scored = metrics_lib.instance_scores([r["prediction"] for r in records],
                                                 [r["references"] for r in records])[metric]
            out.setdefault(task, {})[template] = {str(r["id"]): v for r, v in zip(records, scored)}
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


def groups_of(scores: Mapping[str, Any]) -> dict[str, list[str]]:
    """Group -> dataset names of a ``scores.json``: ``overall``, ``in_domain``, ``held_out`` (those evaluated) and
    each skill."""
    out = {g: list(scores[g]["datasets"]) for g in ("overall", "in_domain", "held_out") if scores.get(g)}
    return out | {skill: list(g.get("datasets", [])) for skill, g in (scores.get("skills") or {}).items()}


def compare_variants(values: Mapping[str, Values], groups: Mapping[str, Sequence[str]], labels: Mapping[str, str], *,
                     resamples: int = bootstrap.DEFAULT_RESAMPLES,
                     seed: int = bootstrap.DEFAULT_SEED) -> dict[str, dict[str, dict[str, Any]]]:
    """``'OPT-CoT - OPT'`` (``labels``: variant -> name) -> :func:`paired_differences`, for each pair of
    :data:`COMPARISONS` whose two variants are in ``values`` (variant -> per-instance values) and share instances."""
    out = {}
    for left, right in COMPARISONS:
        if left in values and right in values:
            diffs = paired_differences(values[left], values[right], groups, resamples=resamples, seed=seed)
            if diffs:
                out[f"{labels[left]} - {labels[right]}"] = diffs
    return out


def run_differences(runs: Sequence[Any], folders: Sequence[epath.Path], metric: str, labels: Mapping[str, str], *,
                    resamples: int = bootstrap.DEFAULT_RESAMPLES,
                    seed: int = bootstrap.DEFAULT_SEED) -> dict[str, dict[str, dict[str, Any]]]:
    """size -> :func:`compare_variants` of that size's runs (``runs[i]``: ``size``, ``variant``, ``scores``; its
    ``scores.json`` in ``folders[i]``), grouped by the first run of the size (:func:`groups_of`)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for size in dict.fromkeys(r.size for r in runs):
        of_size = [(r, epath.Path(f)) for r, f in zip(runs, folders) if r.size == size]
        values = {r.variant: instance_values(f, r.scores, metric) for r, f in of_size}
        diffs = compare_variants(values, groups_of(of_size[0][0].scores), labels, resamples=resamples, seed=seed)
        if diffs:
            out[size] = diffs
    return out
