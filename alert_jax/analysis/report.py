"""Gathers several evaluation runs (their ``scores.json``) into the paper's comparisons.

A *run* is one evaluated model: its ``scores.json`` (written by ``launch/evaluate.py``) plus a label
``(size, variant)`` with variant in ``pretrained`` / ``ft`` / ``cot``. Labels come from the run folder's name as
``launch/sweep.py`` writes it (``{size}-{variant}``, ``1p3b`` = ``1.3b``) or are given explicitly.

Outputs (``write_analysis``): ``analysis.json``, ``analysis.md`` and ``figures/`` with

* ``scale_<metric>.png``: Figure-4-style bars of OPT / OPT-FT / OPT-CoT per size (overall default score);
* ``templates_<metric>.png``: gain over the pretrained model per template (template memorization), with the mean
  gain of the templates sharing each trait of the finetuning prompt vs the others, and which templates those are;
* ``overlap_<metric>.png``: vocabulary overlap vs gain per dataset, when the texts are given (each finetuned
  variant against its own finetuning text: ``analysis.overlap.finetune_texts``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from etils import epath

from alert_jax.analysis import overlap as overlap_lib
from alert_jax.analysis import paired as paired_lib
from alert_jax.analysis import templates as templates_lib
from alert_jax.io.files import atomic_write_text, write_figure

VARIANTS = ("pretrained", "ft", "cot")
VARIANT_LABELS = {"pretrained": "OPT", "ft": "OPT-FT", "cot": "OPT-CoT"}
_VOCABULARY_OF = {"ft": "prompts + answers", "cot": "prompts + rationales + answers"}  # overlap.finetune_texts


@dataclasses.dataclass(frozen=True)
class RunScores:
    path: str
    size: str
    variant: str
    scores: dict[str, Any]

    def overall(self, metric: str) -> float:
        group = self.scores.get("overall") or {}
        return float((group.get("max") or {}).get(metric, math.nan))

    def dataset_scores(self, metric: str) -> dict[str, float]:
        """Dataset -> default (max over templates) score."""
        return {name: float(d["max"][metric]) for name, d in self.scores["datasets"].items() if metric in d["max"]}

    def template_scores(self, metric: str) -> dict[tuple[str, str], float]:
        """(dataset, template) -> score."""
        return {
            (name, t): float(r["scores"][metric])
            for name, d in self.scores["datasets"].items()
            for t, r in d["templates"].items()
            if metric in r["scores"]
        }


def find_scores(path: str | epath.Path) -> epath.Path:
    """``scores.json`` of a run folder: the folder itself, or its ``eval/`` sub-folder (sweep layout)."""
    path = epath.Path(path)
    for candidate in (path, path / "scores.json", path / "eval" / "scores.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no scores.json in {path} or {path / 'eval'}; run launch/evaluate.py for it first")


def label_from_name(path: str | epath.Path) -> tuple[str, str] | None:
    """``.../13b-cot`` or ``.../1p3b-ft/eval`` -> ('13b', 'cot') / ('1.3b', 'ft'); None if the name has no label."""
    path = epath.Path(path)
    for part in (path.name, path.parent.name) if path.name in ("eval", "scores.json") else (path.name,):
        size, sep, variant = part.rpartition("-")
        if sep and variant in VARIANTS and size:
            return re.sub(r"(\d)p(\d)", r"\1.\2", size), variant
    return None


def load_runs(paths: Sequence[str], labels: Sequence[str] = ()) -> list[RunScores]:
    """Loads each run's scores; ``labels`` (``'SIZE:VARIANT'`` per path) override names, else names are parsed."""
    if labels and len(labels) != len(paths):
        raise ValueError(f"--labels has {len(labels)} entries for {len(paths)} runs; give one SIZE:VARIANT per run")
    runs = []
    for i, path in enumerate(paths):
        scores_path = find_scores(path)
        if labels:
            size, sep, variant = labels[i].rpartition(":")
            if not sep or variant not in VARIANTS:
                raise ValueError(f"label {labels[i]!r} must be SIZE:VARIANT with VARIANT in {VARIANTS}")
            label = (size, variant)
        else:
            label = label_from_name(scores_path.parent if scores_path.name == "scores.json" else path)
            if label is None:
                raise ValueError(
                    f"cannot tell the size and variant of run {path}: name it SIZE-VARIANT (as launch/sweep.py does) "
                    f"or pass --labels=SIZE:VARIANT,..."
                )
        runs.append(RunScores(str(path), label[0], label[1], json.loads(scores_path.read_text())))
    return runs


def scale_table(runs: Iterable[RunScores], metric: str) -> dict[str, dict[str, float]]:
    """size -> variant -> overall default score (the data of Figure 4)."""
    table: dict[str, dict[str, float]] = {}
    for run in runs:
        table.setdefault(run.size, {})[run.variant] = run.overall(metric)
    return table


def _pairs(runs: Sequence[RunScores]) -> list[tuple[RunScores, RunScores]]:
    """(pretrained, tuned) pairs of the same size."""
    base = {r.size: r for r in runs if r.variant == "pretrained"}
    return [(base[r.size], r) for r in runs if r.variant != "pretrained" and r.size in base]


def template_memorization(
    runs: Sequence[RunScores], metric: str, traits: templates_lib.Traits | None = None
) -> dict[str, templates_lib.TemplateGains]:
    """'{size}-{variant}' -> per-template gains over the same size's pretrained run, grouped by each trait the
    templates share with the finetuning prompt (``traits``, default ``templates_lib.template_traits()``)."""
    traits = templates_lib.template_traits() if traits is None else traits
    return {
        f"{tuned.size}-{tuned.variant}": templates_lib.template_gains(
            base.template_scores(metric), tuned.template_scores(metric), traits)
        for base, tuned in _pairs(runs)
    }


def overlap_analysis(
    runs: Sequence[RunScores], metric: str, eval_texts: Mapping[str, Iterable[str]],
    finetune_texts: Mapping[str, Sequence[str]],
) -> dict[str, tuple[list[overlap_lib.OverlapRow], overlap_lib.Correlation]]:
    """'{size}-{variant}' -> (per-dataset overlap and gain, their correlation); ``finetune_texts`` maps a variant
    ('ft', 'cot') to the text it was finetuned on (``overlap.finetune_texts``), and each run is compared with its
    own variant's text (runs of a variant without text are left out)."""
    return {
        f"{tuned.size}-{tuned.variant}": overlap_lib.overlap_vs_gain(
            eval_texts, finetune_texts[tuned.variant], base.dataset_scores(metric), tuned.dataset_scores(metric))
        for base, tuned in _pairs(runs) if tuned.variant in finetune_texts
    }


def _fmt(x: float) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.1f}"


def _grouped_bars(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    path: epath.Path,
    *,
    figsize: tuple[float, float],
    zero_line: bool = False,
) -> None:
    """Saves a grouped bar chart: one group per category, one bar per series (``series[label][j]`` is the value of
    ``categories[j]``; NaN draws no bar), bars centred on their group, legend by series label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(categories))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=figsize)
    for i, (label, values) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, list(values), width, label=label)
    if zero_line:
        ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(x, categories)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    write_figure(fig, path, dpi=120)
    plt.close(fig)


def _plot_scale(table: Mapping[str, Mapping[str, float]], metric: str, path: epath.Path) -> None:
    sizes = list(table)
    series = {VARIANT_LABELS[v]: [table[s].get(v, math.nan) for s in sizes] for v in VARIANTS}
    _grouped_bars(sizes, series, f"{metric} (overall, max over templates)", path,
                  figsize=(max(4.5, 1.6 * len(sizes)), 3.8))


def _plot_templates(gains: Mapping[str, templates_lib.TemplateGains], metric: str, path: epath.Path) -> None:
    names = sorted({t for g in gains.values() for t in g.per_template})
    series = {label: [g.per_template.get(t, math.nan) for t in names] for label, g in gains.items()}
    _grouped_bars(names, series, f"{metric} gain over the pretrained model", path, figsize=(6, 3.8), zero_line=True)


def _gains_json(g: templates_lib.TemplateGains) -> dict[str, Any]:
    groups = {trait: dataclasses.asdict(gg) | {"gap": gg.gap} for trait, gg in g.groups.items()}
    return {"per_template": g.per_template, "groups": groups, "unclassified": g.unclassified}


def _group_lines(gains: Mapping[str, templates_lib.TemplateGains]) -> list[str]:
    """Markdown: mean gain of the templates sharing each trait with the finetuning prompt vs the others, naming
    the templates of each group."""
    lines = ["", "Grouped by what the templates share with the finetuning prompt (data/templates.py):", "",
             "| run | trait | sharing | gain | not sharing | gain | gap |", "|---|---|---|---:|---|---:|---:|"]
    for label, g in gains.items():
        lines += [f"| {label} | {gg.trait} | {', '.join(gg.sharing) or '-'} | {_fmt(gg.sharing_gain)} | "
                  f"{', '.join(gg.other) or '-'} | {_fmt(gg.other_gain)} | {_fmt(gg.gap)} |"
                  for gg in g.groups.values()]
        if g.unclassified:
            lines.append(f"| {label} | (no traits known) | {', '.join(g.unclassified)} | | | | |")
    return lines


def _difference_lines(diffs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """Markdown: each comparison's difference ``d [lo, hi]`` overall and per skill (paired bootstrap, 95%)."""
    if not diffs:
        return []
    groups = list(dict.fromkeys(g for by_cmp in diffs.values() for d in by_cmp.values() for g in d))
    lines = ["", "### Model differences (max over templates; 95% paired bootstrap interval)", "",
             "| size | difference | " + " | ".join(groups) + " |", "|---|---|" + "---:|" * len(groups)]
    for size, by_cmp in diffs.items():
        for name, d in by_cmp.items():
            cells = [f"{_fmt(d[g]['diff'])} [{_fmt(d[g]['ci95'][0])}, {_fmt(d[g]['ci95'][1])}]" if g in d else "-"
                     for g in groups]
            lines.append(f"| {size} | {name} | " + " | ".join(cells) + " |")
    return lines


def write_analysis(
    runs: Sequence[RunScores],
    out_dir: str | epath.Path,
    *,
    metrics: Sequence[str] = ("exact_match", "relaxed_match", "rougeL"),
    eval_texts: Mapping[str, Iterable[str]] | None = None,
    finetune_texts: Mapping[str, Sequence[str]] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Writes ``analysis.json``, ``analysis.md`` and ``figures/`` into ``out_dir``; returns the JSON content.
    ``finetune_texts``: variant -> finetuning text, see :func:`overlap_analysis`. ``resamples`` / ``seed``: the
    paired bootstrap of the model differences (``analysis.paired``; runs with predictions files only)."""
    out_dir = epath.Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"runs": [dataclasses.asdict(r) | {"scores": None} for r in runs], "metrics": {}}
    lines = ["# ALERT analysis", "", "Runs: " + ", ".join(f"`{r.size}-{r.variant}` ({r.path})" for r in runs), ""]
    for metric in metrics:
        table = scale_table(runs, metric)
        gains = template_memorization(runs, metric)
        entry: dict[str, Any] = {"scale": table, "templates": {k: _gains_json(g) for k, g in gains.items()}}
        lines += [f"## {metric}", "", "### Scale (overall, max over templates)", "",
                  "| size | " + " | ".join(VARIANT_LABELS[v] for v in VARIANTS) + " |", "|---|---:|---:|---:|"]
        lines += [f"| {s} | " + " | ".join(_fmt(row.get(v, math.nan)) for v in VARIANTS) + " |"
                  for s, row in table.items()]
        _plot_scale(table, metric, out_dir / "figures" / f"scale_{metric}.png")
        if gains:
            names = sorted({t for g in gains.values() for t in g.per_template})
            lines += ["", "### Template memorization (gain over the pretrained model per template)", "",
                      "| run | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
            lines += [f"| {label} | " + " | ".join(_fmt(g.per_template.get(t, math.nan)) for t in names) + " |"
                      for label, g in gains.items()]
            lines += _group_lines(gains)
            _plot_templates(gains, metric, out_dir / "figures" / f"templates_{metric}.png")
        if eval_texts is not None and finetune_texts is not None:
            overlaps = overlap_analysis(runs, metric, eval_texts, finetune_texts)
            entry["overlap"] = {k: {"rows": [dataclasses.asdict(r) for r in rows], "correlation": dataclasses.asdict(c)}
                                for k, (rows, c) in overlaps.items()}
            if overlaps:
                lines += ["", "### Vocabulary overlap vs gain", "",
                          "| run | finetuning vocabulary | datasets | Pearson r (p) | Spearman rho (p) |",
                          "|---|---|---:|---:|---:|"]
                for label, (rows, c) in overlaps.items():
                    vocab = _VOCABULARY_OF.get(label.rpartition("-")[2], "?")
                    lines.append(f"| {label} | {vocab} | {c.n} | {c.pearson_r:.3f} ({c.pearson_p:.3g}) | "
                                 f"{c.spearman_rho:.3f} ({c.spearman_p:.3g}) |")
                overlap_lib.plot_overlap_vs_gain(overlaps, str(out_dir / "figures" / f"overlap_{metric}.png"))
        entry["differences"] = paired_lib.run_differences(
            runs, [find_scores(r.path).parent for r in runs], metric, VARIANT_LABELS, resamples=resamples, seed=seed)
        lines += _difference_lines(entry["differences"])
        result["metrics"][metric] = entry
        lines.append("")
    atomic_write_text(out_dir / "analysis.json", json.dumps(result, indent=2, default=float) + "\n")
    atomic_write_text(out_dir / "analysis.md", "\n".join(lines) + "\n")
    return result
