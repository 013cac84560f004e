"""Vocabulary overlap between a finetuning corpus and each evaluation dataset, and its correlation with the gain.

The paper's question: do finetuned models gain most on evaluation datasets whose *words* they saw during finetuning?
Vocabulary = the set of unigram types after the metrics' normalisation (lower-case, ASCII punctuation removed,
whitespace collapsed; ``alert_jax.eval.metrics.normalize_answer``). The overlap ratio of an evaluation dataset is
``|V_eval ∩ V_finetune| / |V_eval|`` (the share of its types that finetuning saw); 0 for an empty dataset.

Each finetuned variant has its own finetuning vocabulary, from the text it was trained on (:func:`finetune_texts`,
``data.finetune.format_example``): OPT-FT saw prompts and answers only, OPT-CoT also the rationales. So an
evaluation dataset whose words occur only in rationales overlaps with the CoT corpus and not with the FT one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

from alert_jax.data.examples import RationaleExample
from alert_jax.data.finetune import format_example
from alert_jax.eval.metrics import normalize_answer
from alert_jax.io.files import write_figure

FINETUNED_VARIANTS = ("ft", "cot")
"""The finetuned variants with a finetuning text (``format_example`` modes), as ``analysis.report`` names them."""


def vocabulary(texts: Iterable[str]) -> set[str]:
    """Unigram types of ``texts`` under the metrics' normalisation."""
    vocab: set[str] = set()
    for text in texts:
        vocab.update(normalize_answer(text).split())
    return vocab


def finetune_texts(examples: Iterable[RationaleExample], variant: str,
                   definitions: Mapping[str, str] | None = None) -> list[str]:
    """The text variant ``variant`` ('ft' or 'cot') was finetuned on, one string per example: the finetuning prompt
    followed by the target (``format_example``; ``definitions``: source -> definition where training used its own,
    e.g. ``synthetic.CORPUS_DEFINITIONS``). 'ft': definition, prompt and answer; 'cot': the same plus the
    rationale."""
    if variant not in FINETUNED_VARIANTS:
        raise ValueError(f"finetune_texts: variant must be one of {FINETUNED_VARIANTS}, got {variant!r}")
    defs = definitions or {}
    return ["".join(format_example(ex, variant, definition=defs.get(ex.source)))  # type: ignore[arg-type]
            for ex in examples]


def overlap_ratio(eval_vocab: set[str], finetune_vocab: set[str]) -> float:
    """Share of the evaluation dataset's types that also occur in the finetuning corpus (0 when it has none)."""
    return len(eval_vocab & finetune_vocab) / len(eval_vocab) if eval_vocab else 0.0


@dataclasses.dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation of two paired samples (NaN when undefined: fewer than 3 points or constant)."""

    n: int
    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float


def correlate(x: Sequence[float], y: Sequence[float]) -> Correlation:
    """Pearson r and Spearman rho (average ranks for ties) with two-sided p-values from scipy."""
    x_arr, y_arr = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x_arr.shape != y_arr.shape or x_arr.ndim != 1:
        raise ValueError(f"correlate needs two equal-length 1-d samples, got shapes {x_arr.shape} and {y_arr.shape}")
    n = len(x_arr)
    if n < 3 or np.ptp(x_arr) == 0 or np.ptp(y_arr) == 0:
        nan = float("nan")
        return Correlation(n, nan, nan, nan, nan)
    pearson = stats.pearsonr(x_arr, y_arr)
    spearman = stats.spearmanr(x_arr, y_arr)
    return Correlation(n, float(pearson.statistic), float(pearson.pvalue), float(spearman.statistic),
                       float(spearman.pvalue))


@dataclasses.dataclass(frozen=True)
class OverlapRow:
    dataset: str
    overlap: float
    gain: float


def overlap_vs_gain(
    eval_texts: Mapping[str, Iterable[str]],
    finetune_texts: Iterable[str],
    base_scores: Mapping[str, float],
    tuned_scores: Mapping[str, float],
) -> tuple[list[OverlapRow], Correlation]:
    """Per evaluation dataset: overlap ratio with the finetuning corpus and gain (tuned - base); their correlation.

    Only datasets present in all three mappings are used (in ``eval_texts`` order).
    """
    finetune_vocab = vocabulary(finetune_texts)
    rows = [
        OverlapRow(name, overlap_ratio(vocabulary(texts), finetune_vocab), tuned_scores[name] - base_scores[name])
        for name, texts in eval_texts.items()
        if name in base_scores and name in tuned_scores
    ]
    return rows, correlate([r.overlap for r in rows], [r.gain for r in rows])


def plot_overlap_vs_gain(series: Mapping[str, tuple[list[OverlapRow], Correlation]], path: str) -> None:
    """Scatter plot of overlap (x) vs gain (y), one colour per series (e.g. 'FT', 'CoT'), r/rho in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, (rows, corr) in series.items():
        ax.scatter([r.overlap for r in rows], [r.gain for r in rows],
                   label=f"{label} (r={corr.pearson_r:.2f}, rho={corr.spearman_rho:.2f})")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("vocabulary overlap with the finetuning corpus")
    ax.set_ylabel("gain over the pretrained model")
    ax.legend()
    fig.tight_layout()
    write_figure(fig, path, dpi=120)
    plt.close(fig)
