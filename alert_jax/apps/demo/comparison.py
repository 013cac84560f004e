"""The demo's comparison report: the three models' ``scores.json`` side by side (:func:`build_comparison`), the
headline line (:func:`effect_line`), ``report.md`` (:func:`render_report`) and the bar charts (:func:`write_figures`).

These functions only read the evaluation runner's score dicts and format them; they train, evaluate and read no
files (the stages are :mod:`alert_jax.apps.demo.run`). :data:`MODELS` is defined
here because its order is the report's column order and its values the column names.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MODELS", "METRICS", "METRIC_NAMES", "build_comparison", "effect_line", "verdict", "render_report",
           "write_figures"]

# model key -> display name; evaluation and report order
MODELS: dict[str, str] = {"opt": "OPT", "opt-ft": "OPT-FT", "opt-cot": "OPT-CoT"}
METRICS: tuple[str, ...] = ("exact_match", "relaxed_match", "rougeL")
METRIC_NAMES = {"exact_match": "exact match", "relaxed_match": "relaxed match", "rougeL": "ROUGE-L"}


def build_comparison(per_model: Mapping[str, Mapping[str, Any]], *, effect_skill: str = "mathematics",
                     effect_metric: str = "exact_match",
                     differences: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> dict[str, Any]:
    """Side-by-side view of the runner's ``scores.json`` of each model (keys of :data:`MODELS`).

    Returns ``{'skills': {skill: {metric: {model: score}}}, 'skills_ci95': {skill: {metric: {model: [lo, hi]}}},
    'datasets': {task: {'skill', 'in_domain', 'max': {metric: {model: score}}, 'templates': {T: {metric: {model:
    score}}}}}, 'templates': {T: {metric: {model: mean over datasets}}}, 'groups': {overall|in_domain|held_out:
    {metric: {model: score}}}, 'groups_ci95': (as skills_ci95), 'differences': ..., 'effect': {...}}``. Scores are
    x100; dataset and skill scores are the max over templates (the default aggregation); ``skills_ci95`` and
    ``groups_ci95`` hold the runner's bootstrap intervals of those.

    ``differences``: paired bootstrap differences of ``effect_metric`` (``analysis.paired.paired_differences``),
    ``{"OPT-CoT - OPT" | "OPT-FT - OPT" | "OPT-CoT - OPT-FT": {group: {"diff", "ci95", "datasets"}}}``. The effect's
    ``cot_beats_pretrained`` is True only when the 95% interval of OPT-CoT - OPT on the effect skill lies above 0;
    without ``differences`` it is None (no claim is made from two bare means).
    """
    models = [m for m in MODELS if m in per_model]
    first = per_model[models[0]]
    metrics = [m for m in METRICS if m in first["metrics"]] or list(first["metrics"])
    templates = list(first["templates"])

    def by_model(get: Callable[[Mapping[str, Any]], Any]) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for metric in metrics:
            out[metric] = {}
            for m in models:
                try:
                    v = get(per_model[m])
                    out[metric][m] = None if v is None else float(v[metric])
                except (KeyError, TypeError):
                    out[metric][m] = None
        return out

    skills = {s: by_model(lambda sc, s=s: sc["skills"][s]["max"]) for s in first["skills"]}
    skills_ci95 = {s: {metric: {m: ((per_model[m]["skills"].get(s) or {}).get("ci95") or {}).get("max", {}).get(metric)
                                for m in models} for metric in metrics} for s in first["skills"]}
    datasets = {}
    for task, d in first["datasets"].items():
        datasets[task] = {
            "skill": d.get("skill"), "in_domain": d.get("in_domain"),
            "max": by_model(lambda sc, t=task: sc["datasets"][t]["max"]),
            "templates": {tpl: by_model(lambda sc, t=task, tp=tpl: sc["datasets"][t]["templates"][tp]["scores"])
                          for tpl in templates},
        }
    template_means: dict[str, dict[str, dict[str, float | None]]] = {}
    for tpl in templates:
        template_means[tpl] = {}
        for metric in metrics:
            template_means[tpl][metric] = {}
            for m in models:
                vals = [datasets[t]["templates"][tpl][metric][m] for t in datasets]
                vals = [v for v in vals if v is not None]
                template_means[tpl][metric][m] = sum(vals) / len(vals) if vals else None
    groups = {g: by_model(lambda sc, g=g: (sc.get(g) or {}).get("max")) for g in ("overall", "in_domain", "held_out")}
    groups_ci95 = {g: {metric: {m: (((per_model[m].get(g) or {}).get("ci95") or {}).get("max") or {}).get(metric)
                                for m in models} for metric in metrics} for g in groups}
    differences = {label: dict(groups_) for label, groups_ in (differences or {}).items()}
    effect: dict[str, Any] = {"skill": effect_skill, "metric": effect_metric, "cot_beats_pretrained": None}
    if effect_skill in skills and effect_metric in metrics:
        effect.update(skills[effect_skill][effect_metric])
        effect["ci95"] = skills_ci95[effect_skill][effect_metric]
        effect["differences"] = {label: d[effect_skill] for label, d in differences.items() if effect_skill in d}
        cot_vs_pre = effect["differences"].get(f"{MODELS['opt-cot']} - {MODELS['opt']}")
        if cot_vs_pre is not None:
            effect["cot_beats_pretrained"] = bool(cot_vs_pre["ci95"][0] > 0)
    return {"models": models, "metrics": metrics, "templates": templates, "skills": skills, "skills_ci95": skills_ci95,
            "datasets": datasets, "templates_mean": template_means, "groups": groups, "groups_ci95": groups_ci95,
            "differences": differences,
            "effect": effect}


def _f(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def _ci(ci: Any) -> str:
    return f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else ""


def verdict(comparison: Mapping[str, Any]) -> str:
    """Whether OPT-CoT beats OPT on the effect skill, judged by the 95% interval of their paired difference."""
    beats = comparison["effect"].get("cot_beats_pretrained")
    if beats is None:
        return "not judged (no paired interval)"
    return "yes (the 95% interval of the difference excludes 0)" if beats else "NO (the interval includes 0 or less)"


def effect_line(comparison: Mapping[str, Any]) -> str:
    """``'CoT vs pretrained on mathematics: X [lo, hi] vs Y [lo, hi] (...)'`` with the paired differences' intervals
    when the comparison has them."""
    e = comparison["effect"]
    ci = e.get("ci95") or {}
    line = (f"CoT vs pretrained on {e['skill']}: {_f(e.get('opt-cot'))}{_ci(ci.get('opt-cot'))} vs "
            f"{_f(e.get('opt'))}{_ci(ci.get('opt'))} ({METRIC_NAMES.get(e['metric'], e['metric'])}, max over "
            f"templates, mean over the skill's datasets, 95% bootstrap intervals; "
            f"OPT-FT: {_f(e.get('opt-ft'))}{_ci(ci.get('opt-ft'))})")
    diffs = e.get("differences") or {}
    if diffs:
        line += "; paired differences: " + ", ".join(f"{label} {d['diff']:+.1f}{_ci(d['ci95'])}"
                                                     for label, d in diffs.items())
    return line


def render_report(comparison: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
    """``report.md``: the headline effect, then OPT / OPT-FT / OPT-CoT per group, skill, dataset and template."""
    models, metrics, templates = comparison["models"], comparison["metrics"], comparison["templates"]
    names = [MODELS[m] for m in models]
    e = comparison["effect"]
    lines = ["# ALERT demo: pretrained OPT vs OPT-FT vs OPT-CoT (synthetic data, tiny model)", ""]
    lines += [f"**{effect_line(comparison)}** -- CoT beats the pretrained model: {verdict(comparison)}.", ""]
    for metric in metrics:
        if metric != e["metric"] and e["skill"] in comparison["skills"]:
            v = comparison["skills"][e["skill"]][metric]
            lines.append(f"- {METRIC_NAMES.get(metric, metric)} on {e['skill']}: "
                         + ", ".join(f"{MODELS[m]} {_f(v.get(m))}" for m in models))
    lines += ["", "Scores are x100. A dataset's score is the max over templates T1-T5 (ALERT's default); a skill's is "
              "the mean over its two datasets. Models: **OPT** = the tiny model pretrained on generic synthetic text "
              "(never sees an answer), **OPT-FT** = finetuned on answers, **OPT-CoT** = finetuned on rationales + "
              "answers (in-domain skills only; held-out skills test transfer).", ""]
    lines += ["## Settings", ""] + [f"- **{k}**: {v}" for k, v in metadata.items()] + [""]
    for metric in metrics:
        mname = METRIC_NAMES.get(metric, metric)
        lines += [f"## {mname}", "", "### Per skill (max over templates)", ""]
        lines += ["| skill | kind | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
        for skill, v in comparison["skills"].items():
            kind = next((("in-domain" if d["in_domain"] else "held-out") for d in comparison["datasets"].values()
                         if d["skill"] == skill), "-")
            cis = comparison.get("skills_ci95", {}).get(skill, {}).get(metric, {})
            lines.append(f"| {skill} | {kind} | "
                         + " | ".join(_f(v[metric].get(m)) + _ci(cis.get(m)) for m in models) + " |")
        for g, v in comparison["groups"].items():
            cis = comparison.get("groups_ci95", {}).get(g, {}).get(metric, {})
            lines.append(f"| **{g}** | | " + " | ".join(_f(v[metric].get(m)) + _ci(cis.get(m)) for m in models) + " |")
        if metric == e["metric"] and comparison.get("differences"):
            lines += ["", "### Paired differences (same instances, 95% bootstrap interval)", ""]
            labels = list(comparison["differences"])
            lines += ["| group | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
            groups_ = dict.fromkeys(g for d in comparison["differences"].values() for g in d)
            for g in groups_:
                cells = [comparison["differences"][label].get(g) for label in labels]
                lines.append(f"| {g} | " + " | ".join(f"{c['diff']:+.1f}{_ci(c['ci95'])}" if c else "-"
                                                        for c in cells) + " |")
        lines += ["", "### Per template (mean over datasets)", ""]
        lines += ["| template | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for tpl in templates:
            v = comparison["templates_mean"][tpl][metric]
            lines.append(f"| {tpl} | " + " | ".join(_f(v.get(m)) for m in models) + " |")
        lines += ["", "### Per dataset and template (OPT / OPT-FT / OPT-CoT)", ""]
        lines += ["| dataset | skill | max | " + " | ".join(templates) + " |",
                  "|---|---|---|" + "---|" * len(templates)]
        for task, d in comparison["datasets"].items():
            cell = lambda v: " / ".join(_f(v[metric].get(m)) for m in models)  # noqa: E731
            lines.append(f"| {task} | {d['skill']} | {cell(d['max'])} | "
                         + " | ".join(cell(d["templates"][t]) for t in templates) + " |")
        lines.append("")
    lines += ["Per-model reports, predictions (`predictions/<task>/<template>.jsonl`) and heatmaps are under "
              "`eval/<model>/`; training logs (`metrics.jsonl`) under `runs/<model>/`.", ""]
    return "\n".join(lines)


def write_figures(comparison: Mapping[str, Any], folder: pathlib.Path) -> list[pathlib.Path]:
    """``skills_<metric>.png`` (per-skill bars of the three models) and ``templates_<metric>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    models = comparison["models"]
    written = []
    for metric in comparison["metrics"]:
        for kind, groups in (("skills", comparison["skills"]), ("templates", comparison["templates_mean"])):
            labels = list(groups)
            x = np.arange(len(labels))
            width = 0.8 / len(models)
            fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * len(labels) + 2), 4.0))
            for i, m in enumerate(models):
                vals = [(groups[g][metric].get(m) or 0.0) for g in labels]
                ax.bar(x + (i - (len(models) - 1) / 2) * width, vals, width, label=MODELS[m])
            ax.set_xticks(x, labels, fontsize=8, rotation=20 if kind == "skills" else 0)
            what = "max over templates" if kind == "skills" else "mean over datasets"
            ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} ({what})")
            ax.set_title(f"{METRIC_NAMES.get(metric, metric)} per {kind[:-1]}: OPT vs OPT-FT vs OPT-CoT")
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = folder / f"{kind}_{metric}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written
