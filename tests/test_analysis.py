"""Analysis functions against hand-computed values and numpy references."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT

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


def _fake_run(folder, scale: float):
    """A scores.json built by the evaluation's own aggregation from hand-made per-template scores."""
    from alert_jax.eval import report as eval_report
    from alert_jax.io.files import atomic_write_text

    results = {
        task: {t: eval_report.TemplateResult({"exact_match": scale * (i + 1) * (j + 1), "rougeL": 50.0}, n=4)
               for j, t in enumerate(["T1", "T4"])}
        for i, task in enumerate(["task080_piqa_answer_generation", "task1388_cb_entailment"])
    }
    folder.mkdir(parents=True)
    atomic_write_text(folder / "scores.json", json.dumps(eval_report.aggregate(results)))


def test_launch_analyze_tables_and_figures(tmp_path):
    _fake_run(tmp_path / "tiny-pretrained" / "eval", 1.0)
    _fake_run(tmp_path / "tiny-cot" / "eval", 2.0)
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "launch/analyze.py", f"--runs={tmp_path / 'tiny-pretrained'},{tmp_path / 'tiny-cot'}",
         f"--out={out}", "--metrics=exact_match"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    )
    result = json.loads((out / "analysis.json").read_text())["metrics"]["exact_match"]
    # overall = mean over the two datasets of the max over templates: base (2 + 4) / 2 = 3, cot twice that.
    assert result["scale"] == {"tiny": {"pretrained": 3.0, "cot": 6.0}}
    # gains per template: T1 mean((2-1), (4-2)) = 1.5, T4 mean((4-2), (8-4)) = 3
    assert result["templates"]["tiny-cot"]["per_template"] == {"T1": 1.5, "T4": 3.0}
    assert (out / "figures" / "scale_exact_match.png").stat().st_size > 0
    assert (out / "figures" / "templates_exact_match.png").stat().st_size > 0
    assert "| tiny | 3.0 | - | 6.0 |" in (out / "analysis.md").read_text()


def test_run_labels_from_names_and_flags(tmp_path):
    from alert_jax.analysis import report

    assert report.label_from_name("x/1p3b-ft/eval") == ("1.3b", "ft")
    assert report.label_from_name("x/tiny-postln-cot") == ("tiny-postln", "cot")
    _fake_run(tmp_path / "somewhere", 1.0)
    with pytest.raises(ValueError, match="--labels"):
        report.load_runs([str(tmp_path / "somewhere")])
    (run,) = report.load_runs([str(tmp_path / "somewhere")], ["13b:ft"])
    assert (run.size, run.variant) == ("13b", "ft")
