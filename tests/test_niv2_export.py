"""NIV2 cross-check files (alert_jax/eval/niv2_export.py): a real evaluation of a tiny random model on real task
files writes ``niv2/references.jsonl`` + ``niv2/predictions_<template>.jsonl``, and an independent implementation of
NIV2's default-track scorer (allenai/natural-instructions ``eval/automatic/evaluation.py``, written here from its
published definition) scores them exactly as ``scores.json``'s ``niv2_exact_match`` and ``rougeL``.
"""

from __future__ import annotations

import json
import string

import pytest
from helpers import EVAL_MODEL_MAX_POS
from rouge_score import rouge_scorer

from alert_jax.data import niv2
from alert_jax.eval import niv2_export, runner
from alert_jax.io import convert, tokenizers
from configs import evaluate as eval_config

TASKS = ["task080_piqa_answer_generation", "task513_argument_stance_classification", "task1388_cb_entailment"]
TEMPLATES = ["T1", "T4"]
NEW = 6

# ----------------------------------------------------------------------- NIV2's default-track scorer, independently

_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def _normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    return " ".join(s.split())


def niv2_scores_per_task(reference_file, prediction_file) -> dict[str, dict[str, float]]:
    """task_id -> {exact_match, rougeL}: max over references, mean x100 per task (missing prediction = '')."""
    refs = [json.loads(line) for line in reference_file.read_text(encoding="utf-8").splitlines()]
    preds = {}
    for line in prediction_file.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        preds[row["id"]] = row["prediction"]
    sums: dict[str, list[float]] = {}
    for ref in refs:
        assert ref.get("track", "default") == "default"
        pred = preds.get(ref["id"], "")
        em = max(float(_normalize(pred) == _normalize(r)) for r in ref["references"])
        rl = max(_SCORER.score(prediction=pred, target=r)["rougeL"].fmeasure for r in ref["references"])
        acc = sums.setdefault(ref["task_id"], [0.0, 0.0, 0])
        acc[0], acc[1], acc[2] = acc[0] + em, acc[1] + rl, acc[2] + 1
    return {task: {"exact_match": 100.0 * em / n, "rougeL": 100.0 * rl / n} for task, (em, rl, n) in sums.items()}


# --------------------------------------------------------------------------------------------------------- tests


def test_evaluation_writes_files_niv2_scores_identically(model_dir, niv2_tasks_dir, tmp_path):
    cfg = eval_config.get_config("tiny")
    cfg.eval.max_new_tokens, cfg.eval.max_instances = NEW, 4
    cfg.eval.tasks, cfg.eval.templates = ",".join(TASKS), ",".join(TEMPLATES)
    cfg.eval.buckets = str(EVAL_MODEL_MAX_POS - NEW)
    cfg.init_from, cfg.data.niv2_dir = f"hf:{model_dir}", str(niv2_tasks_dir)
    model, tok = convert.from_hf(model_dir), tokenizers.load_tokenizer(str(model_dir))
    workdir = tmp_path / "E"
    scores = runner.evaluate(cfg, workdir, model=model, tokenizer=tok)

    _check_against_niv2(workdir, scores, niv2_tasks_dir)

    # Predictions a random model does not make (exact, normalised-equal, CoT-formatted, partly overlapping), in
    # records written before rougeL_answer / niv2_exact_match existed: reused (same provenance), every metric scored
    # from prediction + references, and the NIV2 files follow them.
    for task in TASKS:
        for template in TEMPLATES:
            path = workdir / "predictions" / task / f"{template}.jsonl"
            records = [json.loads(x) for x in path.read_text().splitlines()]
            for k, r in enumerate(records):
                ref = r["references"][0]
                r["prediction"] = [ref, ref.upper() + "!", f"So the answer is {ref}.", "the " + ref][k % 4]
                r["scores"] = {m: r["scores"][m] for m in ("exact_match", "relaxed_match", "rougeL")}
            path.write_text("".join(json.dumps(r) + "\n" for r in records))
    again = runner.evaluate(cfg, workdir, model=model, tokenizer=tok)
    assert again["metadata"]["run"]["computed"] == 0
    _check_against_niv2(workdir, again, niv2_tasks_dir)
    for task in TASKS:
        s = again["datasets"][task]["templates"]["T1"]["scores"]
        assert s["niv2_exact_match"] == 50.0 and s["relaxed_match"] == 75.0 and 50.0 < s["rougeL"] < 100.0


def _check_against_niv2(workdir, scores, niv2_tasks_dir):
    refs = [json.loads(x) for x in (workdir / "niv2" / "references.jsonl").read_text().splitlines()]
    want = [(inst.id, inst.outputs, name) for name in TASKS
            for inst in niv2.load_task(name, niv2_tasks_dir).instances[:4]]
    assert [(r["id"], r["references"], r["task_id"]) for r in refs] == want
    assert len({r["id"] for r in refs}) == len(refs) and all(r["track"] == "default" for r in refs)
    assert all(r["task_category"] for r in refs)
    for template in TEMPLATES:
        path = workdir / "niv2" / f"predictions_{template}.jsonl"
        preds = [json.loads(x) for x in path.read_text().splitlines()]
        assert [p["id"] for p in preds] == [r["id"] for r in refs]
        assert all(set(p) == {"id", "prediction"} for p in preds)
        got = niv2_scores_per_task(workdir / "niv2" / "references.jsonl", path)
        assert set(got) == set(TASKS)
        for task in TASKS:
            ours = scores["datasets"][task]["templates"][template]["scores"]
            assert ours["niv2_exact_match"] == pytest.approx(got[task]["exact_match"], rel=0, abs=1e-9)
            assert ours["rougeL"] == pytest.approx(got[task]["rougeL"], rel=0, abs=1e-9)


def _write_records(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"id": i, "prediction": p, "references": r}) + "\n" for i, p, r in rows))


def test_colliding_ids_are_qualified_and_scores_follow(niv2_tasks_dir, tmp_path):
    """Two tasks with the same instance ids (custom files): ids become '<task>/<id>'; exact matches are scored."""
    tasks = {name: niv2.load_task(name, niv2_tasks_dir) for name in TASKS[:2]}
    paths = {}
    for name in tasks:
        rows = [("1", "So the answer is yes.", ["yes"]), ("2", "No!", ["no", "nope"]), ("3", "", ["maybe"])]
        for template in TEMPLATES:
            paths[(name, template)] = tmp_path / "p" / name / f"{template}.jsonl"
            _write_records(paths[(name, template)], rows)
    written = niv2_export.write_niv2_files(tmp_path / "niv2", tasks, TEMPLATES, paths)
    assert [p.name for p in written] == ["references.jsonl", "predictions_T1.jsonl", "predictions_T4.jsonl"]
    refs = [json.loads(x) for x in written[0].read_text().splitlines()]
    assert [r["id"] for r in refs] == [f"{n}/{i}" for n in tasks for i in "123"]
    got = niv2_scores_per_task(written[0], written[1])
    assert got[TASKS[0]]["exact_match"] == pytest.approx(100 / 3)  # only "No!" equals "no" once normalised

    _write_records(paths[(TASKS[0], "T4")], [("1", "x", ["yes"])])
    with pytest.raises(ValueError, match="other instances"):
        niv2_export.write_niv2_files(tmp_path / "niv2b", tasks, TEMPLATES, paths)
