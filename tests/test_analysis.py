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
    traits = {"T1": {"shares_layout": True, "shares_explanations": False},
              "T4": {"shares_layout": False, "shares_explanations": False}}
    gains = templates.template_gains(base, tuned, traits)
    assert gains.per_template == {"T1": 15.0, "T4": 1.0}
    layout = gains.groups["shares_layout"]
    assert (layout.sharing, layout.other) == (["T1"], ["T4"])
    assert layout.sharing_gain == 15.0 and layout.other_gain == 1.0 and layout.gap == 14.0
    explained = gains.groups["shares_explanations"]
    assert explained.sharing == [] and math.isnan(explained.sharing_gain) and explained.other_gain == 8.0


def test_template_gains_group_by_the_registered_templates_flags():
    """Default grouping = the flags of data/templates.py; gains of 1..5 for T1..T5, means computed by hand."""
    from alert_jax.data.templates import TEMPLATES

    names = ["T1", "T2", "T3", "T4", "T5"]
    base = {("d", t): 0.0 for t in names}
    tuned = {("d", t): float(i + 1) for i, t in enumerate(names)}
    gains = templates.template_gains(base, tuned)
    assert list(gains.groups) == ["shares_layout", "shares_definition", "shares_explanations"]
    for trait, group in gains.groups.items():
        assert group.sharing == [t for t in names if getattr(TEMPLATES[t], trait)]
        assert group.other == [t for t in names if not getattr(TEMPLATES[t], trait)]
    layout = gains.groups["shares_layout"]  # T1, T2, T3 vs T4, T5
    assert layout.sharing_gain == pytest.approx((1 + 2 + 3) / 3) and layout.other_gain == pytest.approx(4.5)
    explained = gains.groups["shares_explanations"]  # T3 vs the rest
    assert explained.sharing_gain == 3.0 and explained.other_gain == pytest.approx((1 + 2 + 4 + 5) / 4)


def test_finetune_vocabulary_per_variant():
    """FT's vocabulary has prompts and answers only; CoT's adds the rationales (what each variant trained on)."""
    from alert_jax.data.examples import RationaleExample

    corpus = [RationaleExample("gsm8k", "How many apples remain?", "Seven minus three leaves four.", "4"),
              RationaleExample("gsm8k", "Is a whale a fish?", "Whales breathe air through lungs.", "no")]
    ft = overlap.vocabulary(overlap.finetune_texts(corpus, "ft"))
    cot = overlap.vocabulary(overlap.finetune_texts(corpus, "cot"))
    rationale_only = {"seven", "minus", "three", "leaves", "whales", "breathe", "air", "through", "lungs"}
    assert ft.isdisjoint(rationale_only) and rationale_only <= cot
    assert {"apples", "remain", "whale", "fish", "4", "no"} <= ft and ft <= cot
    # an evaluation dataset about lungs overlaps with the CoT corpus only
    rows = {v: overlap.overlap_vs_gain({"d": ["lungs breathe"]}, overlap.finetune_texts(corpus, v), {"d": 0},
                                       {"d": 1})[0][0] for v in ("ft", "cot")}
    assert rows["ft"].overlap == 0.0 and rows["cot"].overlap == 1.0
    with pytest.raises(ValueError, match="variant"):
        overlap.finetune_texts(corpus, "pretrained")


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
    # the grouping by finetuning traits is printed, naming the templates of each group (T1 vs T4 here)
    layout = result["templates"]["tiny-cot"]["groups"]["shares_layout"]
    assert (layout["sharing"], layout["other"], layout["gap"]) == (["T1"], ["T4"], -1.5)
    md = (out / "analysis.md").read_text()
    assert "| tiny-cot | shares_layout | T1 | 1.5 | T4 | 3.0 | -1.5 |" in md
    assert "| tiny-cot | shares_explanations | - | - | T1, T4 | 2.2 | - |" in md


def test_overlap_analysis_uses_each_variants_vocabulary(tmp_path):
    """FT and CoT runs with the same gains but different finetuning texts get different overlaps."""
    from alert_jax.analysis import report

    for name, scale in (("tiny-pretrained", 1.0), ("tiny-ft", 2.0), ("tiny-cot", 2.0)):
        _fake_run(tmp_path / name, scale)
    runs = report.load_runs([str(tmp_path / n) for n in ("tiny-pretrained", "tiny-ft", "tiny-cot")])
    eval_texts = {"task080_piqa_answer_generation": ["apples lungs"], "task1388_cb_entailment": ["lungs air"]}
    texts = {"ft": ["apples"], "cot": ["apples lungs air"]}
    result = report.write_analysis(runs, tmp_path / "out", metrics=["exact_match"], eval_texts=eval_texts,
                                   finetune_texts=texts)
    rows = {k: [r["overlap"] for r in v["rows"]] for k, v in result["metrics"]["exact_match"]["overlap"].items()}
    assert rows == {"tiny-ft": [0.5, 0.0], "tiny-cot": [1.0, 1.0]}
    md = (tmp_path / "out" / "analysis.md").read_text()
    assert "| tiny-ft | prompts + answers | 2 |" in md and "| tiny-cot | prompts + rationales + answers | 2 |" in md


def test_run_labels_from_names_and_flags(tmp_path):
    from alert_jax.analysis import report

    assert report.label_from_name("x/1p3b-ft/eval") == ("1.3b", "ft")
    assert report.label_from_name("x/tiny-postln-cot") == ("tiny-postln", "cot")
    _fake_run(tmp_path / "somewhere", 1.0)
    with pytest.raises(ValueError, match="--labels"):
        report.load_runs([str(tmp_path / "somewhere")])
    (run,) = report.load_runs([str(tmp_path / "somewhere")], ["13b:ft"])
    assert (run.size, run.variant) == ("13b", "ft")
