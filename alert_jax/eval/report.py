"""Aggregation of evaluation scores -> ``scores.json``, ``report.md`` and ``figures/*.png`` (DESIGN.md section 6).

Input: per dataset (an NIV2 task) and template, a :class:`TemplateResult` = the mean over instances of each metric
(x100) plus counts. Aggregation rules:

* per dataset: every template's score, and per metric the ``max`` and the ``mean`` over the templates evaluated;
  the dataset's **default** score is the max over templates;
* per skill: the mean over the skill's datasets (of the max-over-templates scores, and separately of the means);
* ``overall`` / ``in_domain`` / ``held_out``: the mean over the evaluated *registry* datasets of that group;
  ``dev``: the mean over the evaluated dev-set tasks (checkpoint selection). Tasks outside the registry are listed
  per dataset only. A group with no evaluated dataset is ``null``.

**Uncertainty** (``bootstrap.py``): with ``resamples > 0`` and per-instance values in every ``TemplateResult``, each
template's ``scores`` has ``ci95: {metric: [lo, hi]}`` beside it, and each dataset and group ``ci95: {"max": {metric:
[lo, hi]}, "mean": {...}}`` beside its ``max`` / ``mean`` (95% percentile bootstrap; the report shows
``mean [lo, hi]``). ``scores.json`` holds every metric (``metrics.METRICS``); ``report.md`` ALERT's three.

Prompts that could not fit the context are scored as empty predictions (see ``runner.py``); their number is kept as
``n_overflow`` per template and summed per dataset and overall, and shown in the report. Generations cut at
``eval.max_new_tokens`` (no EOS or stop string: a rationale may end before its answer) are counted the same way as
``n_length``, with a per-dataset column in the report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath

from alert_jax.data import registry as registry_lib
from alert_jax.eval import bootstrap
from alert_jax.eval.metrics import ALERT_METRICS
from alert_jax.io.files import atomic_write_text, write_figure

AGGREGATIONS = ("max", "mean")


@dataclasses.dataclass
class TemplateResult:
    """Scores of one dataset under one template.

    scores: metric name -> mean over instances, x100. n: instances scored. n_overflow: prompts that did not fit the
    context even after dropping demonstrations and cutting the input (scored as empty predictions).
    n_truncated: prompts that fit only after dropping demonstrations or cutting input. n_length: generations that
    hit ``max_new_tokens`` without EOS or a stop string. ids / instance_scores: the instance ids and
    ``{metric: [n] per-instance values}`` (``metrics.instance_scores``) the bootstrap resamples; not in ``scores.json``.
    """

    scores: dict[str, float]
    n: int
    n_overflow: int = 0
    n_truncated: int = 0
    n_length: int = 0
    ids: list[str] = dataclasses.field(default_factory=list)
    instance_scores: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("ids", "instance_scores")}


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _combine(per_template: Mapping[str, Mapping[str, float]], how: str) -> dict[str, float]:
    metrics = sorted({m for s in per_template.values() for m in s})
    out = {}
    for m in metrics:
        vals = [s[m] for s in per_template.values() if m in s]
        out[m] = float(max(vals)) if how == "max" else float(sum(vals) / len(vals))
    return out


def _group(datasets: Mapping[str, Mapping[str, Any]], names: Sequence[str],
           draws: Mapping[str, Mapping[str, Any]]) -> dict[str, Any] | None:
    """Mean over ``names`` of each dataset's max / mean scores (and their intervals when every dataset has bootstrap
    ``draws``); None when ``names`` is empty."""
    names = [n for n in names if n in datasets]
    if not names:
        return None
    out: dict[str, Any] = {"datasets": list(names)}
    for how in AGGREGATIONS:
        metrics = sorted({m for n in names for m in datasets[n][how]})
        out[how] = {m: _mean([datasets[n][how][m] for n in names if m in datasets[n][how]]) for m in metrics}
    if all(n in draws for n in names):
        out["ci95"] = {how: bootstrap.intervals(bootstrap.group_draws([draws[n][how] for n in names]))
                       for how in AGGREGATIONS}
    return out


def _dataset_draws(task: str, per_template: Mapping[str, TemplateResult], resamples: int,
                   seed: int) -> dict[str, Any] | None:
    """Bootstrap draws of one dataset (``bootstrap.dataset_draws``), or None without per-instance values."""
    if resamples < 1 or not all(r.instance_scores and r.ids for r in per_template.values()):
        return None
    return bootstrap.dataset_draws({t: r.instance_scores for t, r in per_template.items()},
                                   {t: r.ids for t, r in per_template.items()}, resamples=resamples, seed=seed,
                                   key=task)


def aggregate(
    results: Mapping[str, Mapping[str, TemplateResult]],
    *,
    registry: registry_lib.Registry | None = None,
    metadata: Mapping[str, Any] | None = None,
    missing_tasks: Sequence[str] = (),
    resamples: int = bootstrap.DEFAULT_RESAMPLES,
    seed: int = bootstrap.DEFAULT_SEED,
) -> dict[str, Any]:
    """Builds the ``scores.json`` structure from ``results[task][template]``.

    ``resamples`` / ``seed``: the bootstrap intervals (module docstring; ``resamples=0``: none).

    Returns a dict with keys ``metadata``, ``default_aggregation`` ('max'), ``templates`` (evaluated, sorted),
    ``metrics``, ``datasets`` (task -> {skill, in_domain, dev, templates: {T: TemplateResult json}, max, mean,
    default, n_overflow, n_length}), ``skills`` (skill -> {datasets, in_domain, max, mean}), ``overall``,
    ``in_domain``, ``held_out``, ``dev`` (each {datasets, max, mean} or None), ``n_overflow`` and ``n_length``
    (totals) and ``missing_tasks``.
    """
    reg = registry or registry_lib.ALERT
    datasets: dict[str, dict[str, Any]] = {}
    draws: dict[str, dict[str, Any]] = {}
    for task, per_template in results.items():
        if not per_template:
            continue
        entry = reg.get(task)
        scores = {t: r.scores for t, r in per_template.items()}
        datasets[task] = {
            "skill": entry.skill if entry else None,
            "in_domain": entry.in_domain if entry else None,
            "dev": task in reg.dev_set,
            "templates": {t: per_template[t].to_json() for t in sorted(per_template)},
            "max": _combine(scores, "max"),
            "mean": _combine(scores, "mean"),
            "n_overflow": int(sum(r.n_overflow for r in per_template.values())),
            "n_length": int(sum(r.n_length for r in per_template.values())),
        }
        datasets[task]["default"] = dict(datasets[task]["max"])
        d = _dataset_draws(task, per_template, resamples, seed)
        if d is not None:
            draws[task] = d
            for t in datasets[task]["templates"]:
                datasets[task]["templates"][t]["ci95"] = bootstrap.intervals(d["templates"][t])
            datasets[task]["ci95"] = {how: bootstrap.intervals(d[how]) for how in AGGREGATIONS}
    registered = [n for n in reg.names if n in datasets]
    skills = {}
    for skill in reg.skills:
        names = [d.name for d in reg.datasets_for(skill) if d.name in datasets]
        group = _group(datasets, names, draws)
        if group is not None:
            group["in_domain"] = skill in reg.in_domain_skills
            skills[skill] = group
    return {
        "metadata": dict(metadata or {}),
        "default_aggregation": "max",
        "templates": sorted({t for r in results.values() for t in r}),
        "metrics": sorted({m for d in datasets.values() for m in d["max"]}),
        "datasets": datasets,
        "skills": skills,
        "overall": _group(datasets, registered, draws),
        "in_domain": _group(datasets, [n for n in registered if datasets[n]["in_domain"]], draws),
        "held_out": _group(datasets, [n for n in registered if not datasets[n]["in_domain"]], draws),
        "dev": _group(datasets, [n for n in reg.dev_set if n in datasets], draws),
        "n_overflow": int(sum(d["n_overflow"] for d in datasets.values())),
        "n_length": int(sum(d["n_length"] for d in datasets.values())),
        "missing_tasks": list(missing_tasks),
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def _report_metrics(scores: Mapping[str, Any]) -> list[str]:
    """The metrics report.md and the figures show: ALERT's three (``scores.json`` holds all)."""
    return [m for m in ALERT_METRICS if m in scores["metrics"]]


def _cell(entry: Mapping[str, Any], how: str | None, metric: str) -> str:
    """``mean [lo, hi]`` of ``entry[how][metric]`` (``entry['scores']`` when ``how`` is None) with its interval
    from ``entry['ci95']`` when present."""
    value = (entry["scores"] if how is None else entry[how]).get(metric)
    ci = entry.get("ci95") or {}
    ci = (ci if how is None else ci.get(how) or {}).get(metric)
    return _fmt(value) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")


def render_markdown(scores: Mapping[str, Any]) -> str:
    """``report.md``: summary groups, per-skill table, per-dataset table (max / mean / each template), for ALERT's
    three metrics, each score with its 95% bootstrap interval when ``scores`` has one (``mean [lo, hi]``)."""
    metrics = _report_metrics(scores)
    templates = scores["templates"]
    meta = scores.get("metadata", {})
    lines = ["# ALERT evaluation report", ""]
    for key in ("init_from", "checkpoint_path", "checkpoint_step", "code_version", "model_size", "max_instances",
                "max_new_tokens", "templates", "decoding"):
        if key in meta:
            lines.append(f"- **{key}**: `{meta[key]}`")
    lines += [
        "- **default score**: max over templates (mean over templates shown alongside)",
        f"- **prompts that did not fit the context** (scored as empty predictions): {scores['n_overflow']}",
        f"- **generations cut at max_new_tokens** (no EOS or stop string; all templates): {scores.get('n_length', 0)}",
    ]
    if scores.get("missing_tasks"):
        lines.append(f"- **tasks not evaluated (no task file)**: {', '.join(scores['missing_tasks'])}")
    lines += ["", "## Summary (max over templates / mean over templates)", ""]
    lines += ["| group | datasets | " + " | ".join(metrics) + " |", "|---|---:|" + "---:|" * len(metrics)]
    for group in ("overall", "in_domain", "held_out", "dev"):
        g = scores.get(group)
        if g:
            cells = [f"{_cell(g, 'max', m)} / {_cell(g, 'mean', m)}" for m in metrics]
            lines.append(f"| {group} | {len(g['datasets'])} | " + " | ".join(cells) + " |")
    if scores["skills"]:
        lines += ["", "## Per skill (max over templates / mean over templates)", ""]
        lines += ["| skill | kind | datasets | " + " | ".join(metrics) + " |"]
        lines += ["|---|---|---:|" + "---:|" * len(metrics)]
        for skill, g in scores["skills"].items():
            kind = "in-domain" if g["in_domain"] else "held-out"
            cells = [f"{_cell(g, 'max', m)} / {_cell(g, 'mean', m)}" for m in metrics]
            lines.append(f"| {skill} | {kind} | {len(g['datasets'])} | " + " | ".join(cells) + " |")
    for m in metrics:
        lines += ["", f"## Per dataset: {m}", ""]
        lines += ["| dataset | skill | max | mean | " + " | ".join(templates) + " | n | overflow | hit length |"]
        lines += ["|---|---|---:|---:|" + "---:|" * len(templates) + "---:|---:|---:|"]
        for task, d in scores["datasets"].items():
            per_t = [_cell(d["templates"][t], None, m) if t in d["templates"] else "-" for t in templates]
            n = max((d["templates"][t]["n"] for t in d["templates"]), default=0)
            skill = d["skill"] or ("dev" if d["dev"] else "-")
            lines.append(
                f"| {task} | {skill} | {_cell(d, 'max', m)} | {_cell(d, 'mean', m)} | "
                + " | ".join(per_t)
                + f" | {n} | {d['n_overflow']} | {d.get('n_length', 0)} |"
            )
    return "\n".join(lines) + "\n"


def write_figures(scores: Mapping[str, Any], folder: str | os.PathLike) -> list[epath.Path]:
    """``skills.png`` (per-skill grouped bars, one bar per ALERT metric, max over templates) and one
    ``heatmap_<metric>.png`` per metric (dataset x template). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder = epath.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    metrics = _report_metrics(scores)
    skills = scores["skills"]
    if skills and metrics:
        names = list(skills)
        fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names)), 4.0))
        width = 0.8 / len(metrics)
        x = np.arange(len(names))
        for i, m in enumerate(metrics):
            vals = [skills[s]["max"].get(m) or 0.0 for s in names]
            ax.bar(x + (i - (len(metrics) - 1) / 2) * width, vals, width, label=m)
        ax.set_xticks(x, [f"{s}\n({'in' if skills[s]['in_domain'] else 'held-out'})" for s in names], fontsize=8)
        ax.set_ylabel("score (max over templates)")
        ax.set_title("Per-skill scores")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = folder / "skills.png"
        write_figure(fig, path, dpi=100)
        plt.close(fig)
        written.append(path)
    templates = scores["templates"]
    tasks = list(scores["datasets"])
    for m in metrics:
        if not tasks or not templates:
            break
        grid = np.full((len(tasks), len(templates)), np.nan)
        for r, t in enumerate(tasks):
            for c, tpl in enumerate(templates):
                res = scores["datasets"][t]["templates"].get(tpl)
                if res is not None and m in res["scores"]:
                    grid[r, c] = res["scores"][m]
        fig, ax = plt.subplots(figsize=(2.0 + 0.9 * len(templates), 1.0 + 0.35 * len(tasks)))
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=100)
        ax.set_xticks(range(len(templates)), templates)
        ax.set_yticks(range(len(tasks)), [t[:48] for t in tasks], fontsize=7)
        for r in range(len(tasks)):
            for c in range(len(templates)):
                if not np.isnan(grid[r, c]):
                    ax.text(c, r, f"{grid[r, c]:.0f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_title(f"{m} per dataset x template")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        path = folder / f"heatmap_{m}.png"
        write_figure(fig, path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def figure_names(scores: Mapping[str, Any]) -> list[str]:
    """File names :func:`write_figures` produces for ``scores``."""
    names = ["skills.png"] if scores["skills"] and _report_metrics(scores) else []
    if scores["datasets"] and scores["templates"]:
        names += [f"heatmap_{m}.png" for m in _report_metrics(scores)]
    return names


def write_report(scores: Mapping[str, Any], workdir: str | os.PathLike, *, figures: bool = True) -> dict[str, Any]:
    """Writes ``scores.json``, ``report.md`` and (``figures=True``) ``figures/`` under ``workdir`` (atomically per
    file). Returns ``{'scores': path, 'report': path, 'figures': [paths written]}``.
    """
    workdir = epath.Path(workdir)
    atomic_write_text(workdir / "scores.json", json.dumps(scores, indent=2, sort_keys=False) + "\n")
    atomic_write_text(workdir / "report.md", render_markdown(scores))
    drawn = write_figures(scores, workdir / "figures") if figures else []
    return {"scores": workdir / "scores.json", "report": workdir / "report.md", "figures": drawn}
