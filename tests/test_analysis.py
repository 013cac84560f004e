"""Analysis functions against hand-computed values and numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alert_jax.analysis import overlap, selection, templates


def test_vocabulary_normalises_like_the_metrics():
    assert overlap.vocabulary(["The cat, the DOG!", "  cat\tsat. "]) == {"the", "cat", "dog", "sat"}


def test_overlap_ratio_by_hand():
    assert overlap.overlap_ratio({"a", "b", "c", "d"}, {"b", "d", "x"}) == pytest.approx(0.5)
    assert overlap.overlap_ratio(set(), {"a"}) == 0.0


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), computed by brute force."""
    return np.array([np.mean(np.flatnonzero(np.sort(v) == x)) for x in v]) + 1


def test_correlations_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20)
    y = 0.5 * x + rng.normal(size=20)
    y[3] = y[5]  # a tie for the rank correlation
    corr = overlap.correlate(x, y)
    assert corr.n == 20
    assert corr.pearson_r == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert corr.spearman_rho == pytest.approx(np.corrcoef(_ranks(x), _ranks(y))[0, 1], abs=1e-12)
    assert 0 <= corr.pearson_p <= 1


def test_correlation_undefined_is_nan():
    assert math.isnan(overlap.correlate([1, 2], [3, 4]).pearson_r)
    assert math.isnan(overlap.correlate([1, 1, 1], [3, 4, 5]).spearman_rho)
    with pytest.raises(ValueError, match="equal-length"):
        overlap.correlate([1, 2, 3], [1, 2])


def test_overlap_vs_gain_rows():
    eval_texts = {"d1": ["red green"], "d2": ["blue cyan magenta yellow"], "d3": ["red"]}
    rows, corr = overlap.overlap_vs_gain(eval_texts, ["red green blue"], {"d1": 10, "d2": 10}, {"d1": 30, "d2": 15})
    assert [(r.dataset, r.overlap, r.gain) for r in rows] == [("d1", 1.0, 20), ("d2", 0.25, 5)]
    assert corr.n == 2


def test_template_gains_split_by_format():
    base = {("a", "T1"): 10.0, ("b", "T1"): 20.0, ("a", "T4"): 10.0, ("b", "T4"): 10.0, ("a", "T5"): 0.0}
    tuned = {("a", "T1"): 30.0, ("b", "T1"): 30.0, ("a", "T4"): 12.0, ("b", "T4"): 10.0, ("b", "T5"): 9.0}
    gains = templates.template_gains(base, tuned, finetuning_like=["T1", "T2"])
    assert gains.per_template == {"T1": 15.0, "T4": 1.0}
    assert gains.finetuning_like == 15.0 and gains.other == 1.0 and gains.gap == 14.0


def test_checkpoint_selection_criteria():
    records = [
        selection.CheckpointRecord(100, dev_score=40.0, validation_loss=2.0),
        selection.CheckpointRecord(200, dev_score=45.0, validation_loss=1.5),
        selection.CheckpointRecord(300, dev_score=45.0, validation_loss=1.4),
        selection.CheckpointRecord(400, dev_score=float("nan"), validation_loss=1.6),
    ]
    picked = selection.select_checkpoints(records)
    assert picked.by_dev_score == 200 and picked.by_perplexity == 300 and not picked.agree
    assert records[1].validation_perplexity == pytest.approx(math.exp(1.5))
    assert selection.select_checkpoints([]).by_dev_score is None
