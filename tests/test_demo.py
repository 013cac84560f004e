"""The offline demo (alert_jax/apps/demo/run.py, launch/demo.py, configs/demo.py).

* fast: the comparison / report helpers on hand-made per-model scores (numbers checked against the inputs), the
  stage fingerprints (resume refuses changed settings), and the configs;
* smoke (unmarked): the reduced preset shrunk further (mathematics only, two templates) end to end through
  ``launch/demo.py`` in a subprocess, then a second run that must skip every stage;
* slow: the reduced preset over all 20 datasets x 5 templates (scores.json holds 3 models x 20 x 5), and the full
  default demo command, which must finish within 15 minutes with CoT > pretrained on mathematics.

The subprocesses run without the 8 fake devices of conftest (one CPU device, like the README command).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
from helpers import REPO_ROOT, subprocess_env

from alert_jax.apps.demo import comparison as comparison_lib
from alert_jax.apps.demo import run as demo
from alert_jax.eval import report as report_lib
from configs import demo as demo_config  # configs/: a top-level folder of the checkout (setup.cfg's pythonpath)

TEMPLATES = ("T1", "T2", "T3", "T4", "T5")


def _run_demo(workdir: pathlib.Path, *overrides: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    env = subprocess_env()  # one CPU device
    cmd = [sys.executable, str(REPO_ROOT / "launch" / "demo.py"), f"--workdir={workdir}", *overrides]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.time() - t0
    assert proc.returncode == 0, f"demo failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc, elapsed


def _skipped_stages(stdout: str) -> set[str]:
    return set(re.findall(r"^--- (\S+): skipped", stdout, flags=re.M))


def _ran_stages(stdout: str) -> set[str]:
    return set(re.findall(r"^--- (\S+): done in", stdout, flags=re.M))


ALL_STAGES = {"data", "tokenizer", "pretrain", "finetune-ft", "finetune-cot", "evaluate-opt", "evaluate-opt-ft",
              "evaluate-opt-cot", "report"}


# ---------------------------------------------------------------------------------------------------------------------
# Fast unit tests
# ---------------------------------------------------------------------------------------------------------------------


def _scores_for(values: dict[str, dict[str, float]]) -> dict:
    """A runner-style scores dict from ``{task: {template: exact_match}}`` (relaxed = EM, ROUGE-L = EM / 2)."""
    from alert_jax.data import synthetic

    results = {
        task: {t: report_lib.TemplateResult(scores={"exact_match": v, "relaxed_match": v, "rougeL": v / 2}, n=4)
               for t, v in per_t.items()}
        for task, per_t in values.items()
    }
    return report_lib.aggregate(results, registry=synthetic.synthetic_registry())


def test_comparison_and_report_pick_the_right_numbers():
    math_tasks = ("synth_math_add_sub", "synth_math_two_step")
    other = "synth_spatial_people"
    opt = {t: {tpl: 0.0 for tpl in TEMPLATES} for t in (*math_tasks, other)}
    ft = {t: {tpl: 10.0 * i for i, tpl in enumerate(TEMPLATES)} for t in (*math_tasks, other)}
    cot = {math_tasks[0]: {"T1": 50.0, "T2": 25.0, "T3": 75.0, "T4": 0.0, "T5": 25.0},
           math_tasks[1]: {"T1": 25.0, "T2": 0.0, "T3": 0.0, "T4": 0.0, "T5": 0.0},
           other: {tpl: 5.0 for tpl in TEMPLATES}}
    comparison = comparison_lib.build_comparison({"opt": _scores_for(opt), "opt-ft": _scores_for(ft),
                                                  "opt-cot": _scores_for(cot)})
    # skill score = mean over the skill's datasets of the max over templates
    assert comparison["skills"]["mathematics"]["exact_match"] == {"opt": 0.0, "opt-ft": 40.0, "opt-cot": 50.0}
    assert comparison["skills"]["mathematics"]["rougeL"]["opt-cot"] == pytest.approx(25.0)
    assert comparison["datasets"][math_tasks[0]]["templates"]["T3"]["exact_match"]["opt-cot"] == 75.0
    # per-template mean over the 3 datasets
    assert comparison["templates_mean"]["T1"]["exact_match"]["opt-cot"] == pytest.approx((50 + 25 + 5) / 3)
    # two bare means decide nothing: without paired intervals no claim is made
    assert comparison["effect"]["cot_beats_pretrained"] is None
    line = comparison_lib.effect_line(comparison)
    assert line.startswith("CoT vs pretrained on mathematics: 50.0 vs 0.0")
    text = comparison_lib.render_report(comparison, {"preset": "test"})
    assert "CoT beats the pretrained model: not judged" in text
    assert f"| {math_tasks[0]} | mathematics | 0.0 / 40.0 / 75.0 | 0.0 / 0.0 / 50.0 |" in text  # max, then T1
    assert "| mathematics | in-domain | 0.0 | 40.0 | 50.0 |" in text

    def judged(lo: float) -> dict:
        diffs = {"OPT-CoT - OPT": {"mathematics": {"diff": 50.0, "ci95": [lo, 60.0], "datasets": 2}},
                 "OPT-CoT - OPT-FT": {"mathematics": {"diff": 10.0, "ci95": [-20.0, 35.0], "datasets": 2}}}
        return comparison_lib.build_comparison({"opt": _scores_for(opt), "opt-ft": _scores_for(ft),
                                                "opt-cot": _scores_for(cot)}, differences=diffs)

    above, spans = judged(10.0), judged(-5.0)
    assert above["effect"]["cot_beats_pretrained"] is True and spans["effect"]["cot_beats_pretrained"] is False
    assert "OPT-CoT - OPT +50.0 [10.0, 60.0], OPT-CoT - OPT-FT +10.0 [-20.0, 35.0]" in comparison_lib.effect_line(above)
    assert "CoT beats the pretrained model: yes" in comparison_lib.render_report(above, {})
    spans_text = comparison_lib.render_report(spans, {})
    assert "CoT beats the pretrained model: NO" in spans_text
    assert "| mathematics | +50.0 [-5.0, 60.0] | +10.0 [-20.0, 35.0] |" in spans_text  # paired differences table


def test_finished_stage_with_other_settings_is_refused(tmp_path):
    paths = demo.DemoPaths(tmp_path)
    settings = {"pretrain": {"num_steps": 300, "learning_rate": 0.003}}
    assert demo._stage_state(paths, "pretrain", settings) is None
    demo._mark_done(paths, "pretrain", settings, 12.0)
    assert demo._stage_state(paths, "pretrain", settings)["seconds"] == 12.0
    with pytest.raises(demo.DemoError, match=r"pretrain\.num_steps"):
        demo._stage_state(paths, "pretrain", {"pretrain": {"num_steps": 301, "learning_rate": 0.003}})


def test_configs_build_valid_train_and_eval_configs(tmp_path):
    from alert_jax.models.sizes import model_config_from

    with pytest.raises(ValueError, match="unknown preset"):
        demo_config.get_config("huge")
    for preset in demo_config.PRESETS:
        cfg = demo_config.get_config(preset)
        paths = demo.DemoPaths(tmp_path)
        mc = model_config_from(cfg)
        assert cfg.demo.tokenizer_vocab_size <= mc.arch.vocab_size
        for model in comparison_lib.MODELS:
            t = demo.train_config(cfg, paths, model)
            assert model_config_from(t) == mc
            assert t.init_from == ("" if model == "opt" else f"ckpt:{paths.checkpoints('opt')}")
            e = demo.eval_config(cfg, paths, model)
            assert e.init_from == f"ckpt:{paths.checkpoints(model)}"
            assert e.eval.max_new_tokens + 320 <= mc.arch.max_position_embeddings  # longest T3 prompt + generation


# ---------------------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------------------

SMOKE = ("--config=configs/demo.py:reduced", "--config.eval.tasks=mathematics", "--config.eval.templates=T1,T3",
         "--config.pretrain.num_steps=4", "--config.finetune.num_steps=2", "--config.demo.pretrain_documents=400",
         "--config.demo.finetune_examples=100", "--config.eval.max_instances=1")


def test_smoke_demo_end_to_end_and_resume(tmp_path):
    proc, _ = _run_demo(tmp_path, *SMOKE, timeout=600)
    assert _ran_stages(proc.stdout) == ALL_STAGES
    assert "CoT vs pretrained on mathematics:" in proc.stdout
    for f in ("report.md", "scores.json", "figures/skills_exact_match.png", "figures/templates_rougeL.png",
              "eval/opt-cot/predictions/synth_math_add_sub/T3.jsonl", "runs/opt/metrics.jsonl"):
        assert (tmp_path / f).is_file(), f
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert set(scores["models"]) == set(comparison_lib.MODELS)
    for m in comparison_lib.MODELS:
        assert set(scores["models"][m]["datasets"]) == {"synth_math_add_sub", "synth_math_two_step"}
    assert "CoT vs pretrained on mathematics:" in (tmp_path / "report.md").read_text()
    # the paired difference's point estimate is the difference of the two models' skill scores; its interval holds it
    effect = scores["comparison"]["effect"]
    d = effect["differences"]["OPT-CoT - OPT"]
    assert d["diff"] == pytest.approx(effect["opt-cot"] - effect["opt"]) and d["ci95"][0] <= d["diff"] <= d["ci95"][1]
    assert effect["cot_beats_pretrained"] is (d["ci95"][0] > 0)

    again, _ = _run_demo(tmp_path, *SMOKE, timeout=300)
    assert _skipped_stages(again.stdout) == ALL_STAGES
    assert json.loads((tmp_path / "scores.json").read_text())["comparison"] == scores["comparison"]


@pytest.mark.slow
def test_reduced_demo_covers_3_models_x_20_datasets_x_5_templates(tmp_path):
    proc, elapsed = _run_demo(tmp_path, "--config=configs/demo.py:reduced", timeout=900)
    assert _ran_stages(proc.stdout) == ALL_STAGES
    scores = json.loads((tmp_path / "scores.json").read_text())
    from alert_jax.data import synthetic

    for m in comparison_lib.MODELS:
        datasets = scores["models"][m]["datasets"]
        assert list(datasets) == list(synthetic.TASK_NAMES)
        for task in datasets.values():
            assert sorted(task["templates"]) == list(TEMPLATES)
            assert all(r["n"] == 2 for r in task["templates"].values())
    assert len(scores["comparison"]["datasets"]) == 20
    report = (tmp_path / "report.md").read_text()
    assert "CoT vs pretrained on mathematics:" in report
    assert "| skill | kind | OPT | OPT-FT | OPT-CoT |" in report
    assert report.count("| synth_math_two_step | mathematics |") == 3  # one per metric
    for metric in comparison_lib.METRICS:
        assert (tmp_path / "figures" / f"skills_{metric}.png").is_file()
    again, _ = _run_demo(tmp_path, "--config=configs/demo.py:reduced", timeout=300)
    assert _skipped_stages(again.stdout) == ALL_STAGES
    print(f"reduced demo: {elapsed:.0f}s")


@pytest.mark.slow
def test_default_demo_under_15_minutes_and_cot_beats_pretrained_on_math(tmp_path):
    proc, elapsed = _run_demo(tmp_path, timeout=20 * 60)
    load = os.getloadavg()
    assert elapsed < 15 * 60, f"default demo took {elapsed:.0f}s (load average {load})"
    effect = json.loads((tmp_path / "scores.json").read_text())["comparison"]["effect"]
    assert effect["skill"] == "mathematics"
    assert effect["opt-cot"] > effect["opt"], effect
    assert "CoT vs pretrained on mathematics:" in (tmp_path / "report.md").read_text()
