"""Evaluation runner + report: launch/evaluate.py end to end on a tiny random model, resume, bad input, overflow,
and the provenance that decides reuse (a newer checkpoint step, changed task-file content, another code version).

The model (conftest.py's ``model_dir``) is a tiny random OPT written in HF format (``convert.to_hf``) beside a
SentencePiece tokenizer trained on the task texts, so ``--config.init_from=hf:DIR`` finds both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import subprocess
import sys

import pytest
from helpers import EVAL_MODEL_MAX_POS, REPO_ROOT, SUITE_DEVICES, subprocess_env

from alert_jax.data import niv2, synthetic
from alert_jax.data import registry as registry_lib
from alert_jax.eval import provenance, runner
from alert_jax.eval import report as report_lib
from alert_jax.io import convert, tokenizers
from alert_jax.models import opt, sizes
from configs import evaluate as eval_config

MAX_POS = EVAL_MODEL_MAX_POS  # the conftest ``model_dir`` fixture's context
NEW = 6
METRICS = ("exact_match", "relaxed_match", "rougeL", "rougeL_answer", "niv2_exact_match")  # scores.json's five
ALERT_METRICS = ("exact_match", "relaxed_match", "rougeL")  # report.md's and the figures' three
TASK = "task080_piqa_answer_generation"


def _cfg(**eval_overrides):
    cfg = eval_config.get_config("tiny")
    cfg.eval.max_new_tokens = NEW
    cfg.eval.max_instances = 3
    for k, v in eval_overrides.items():
        setattr(cfg.eval, k, v)
    return cfg


def _launch(workdir, *flags, timeout=240):
    cmd = [sys.executable, str(REPO_ROOT / "launch" / "evaluate.py"), "--config=configs/evaluate.py:tiny",
           f"--workdir={workdir}", *flags]
    env = subprocess_env(devices=SUITE_DEVICES, pythonpath=True)  # the test process's fake devices
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_launch_end_to_end_and_resume(model_dir, niv2_tasks_dir, tmp_path):
    workdir = tmp_path / "eval"
    flags = [f"--config.init_from=hf:{model_dir}", f"--config.data.niv2_dir={niv2_tasks_dir}",
             "--config.eval.tasks=all", "--config.eval.templates=T1,T4", "--config.eval.max_instances=3",
             f"--config.eval.max_new_tokens={NEW}", f"--config.eval.buckets={MAX_POS - NEW}"]
    first = _launch(workdir, *flags)
    assert first.returncode == 0, first.stderr[-3000:]

    present, missing = registry_lib.available(registry_lib.ALERT, niv2_tasks_dir, registry_lib.ALERT.names)
    assert present, "the fixture holds some registry tasks"
    scores = json.loads((workdir / "scores.json").read_text())
    assert scores["missing_tasks"] == missing
    assert sorted(scores["datasets"]) == sorted(present)
    assert scores["templates"] == ["T1", "T4"] and scores["metrics"] == sorted(METRICS)
    assert f"{2 * len(present)} template files computed, 0 reused" in first.stdout
    tok = tokenizers.load_tokenizer(str(model_dir))
    for task in present:
        instances = niv2.load_task(task, niv2_tasks_dir).instances[:3]
        entry = scores["datasets"][task]
        for template in ("T1", "T4"):
            records = [json.loads(x) for x in (workdir / "predictions" / task / f"{template}.jsonl").read_text()
                       .splitlines()]
            assert [r["id"] for r in records] == [i.id for i in instances]
            for r, inst in zip(records, instances):
                assert set(r) >= {"id", "prompt", "prediction", "answer", "references", "scores", "overflow"}
                assert r["references"] == inst.outputs
                options = scores["metadata"]["answer_options"][task]
                assert options is None or f"\nOptions: {', '.join(options)}\n" in r["prompt"]
                assert "\n\n" not in r["prediction"]  # cut at the stop string
                if not r["overflow"]:
                    assert len(tok.encode(r["prompt"], add_bos=True)) <= MAX_POS - NEW
            per_instance = {m: sum(r["scores"][m] for r in records) / len(records) for m in METRICS}
            for m in METRICS:
                assert math.isclose(entry["templates"][template]["scores"][m], per_instance[m], abs_tol=1e-9)
        for m in METRICS:  # the default score is the max over templates; mean alongside
            per_t = [entry["templates"][t]["scores"][m] for t in ("T1", "T4")]
            assert entry["max"][m] == max(per_t) == entry["default"][m]
            assert math.isclose(entry["mean"][m], sum(per_t) / 2)
    for skill, group in scores["skills"].items():
        names = [d.name for d in registry_lib.ALERT.datasets_for(skill) if d.name in present]
        assert group["datasets"] == names
        for m in METRICS:
            assert math.isclose(group["max"][m], sum(scores["datasets"][n]["max"][m] for n in names) / len(names))
    for m in METRICS:
        assert math.isclose(scores["overall"]["max"][m],
                            sum(scores["datasets"][n]["max"][m] for n in present) / len(present))
    assert scores["in_domain"]["datasets"] + scores["held_out"]["datasets"] == sorted(
        present, key=registry_lib.ALERT.names.index)
    report = (workdir / "report.md").read_text()
    assert all(t in report for t in present) and "max over templates" in report
    figures = sorted(p.name for p in (workdir / "figures").iterdir())
    assert figures == sorted(["skills.png"] + [f"heatmap_{m}.png" for m in ALERT_METRICS])
    assert all((workdir / "figures" / f).stat().st_size > 1000 for f in figures)

    # Second run: nothing recomputed, predictions files and figures untouched, same scores.
    files = sorted((workdir / "predictions").rglob("*.jsonl")) + sorted((workdir / "figures").iterdir())
    mtimes = [f.stat().st_mtime_ns for f in files]
    second = _launch(workdir, *flags)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"0 template files computed, {2 * len(present)} reused" in second.stdout
    assert "the model was not loaded" in second.stderr
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    again = json.loads((workdir / "scores.json").read_text())
    assert again["datasets"] == scores["datasets"]

    # A changed prediction setting on the same workdir is refused, naming the setting (before loading anything).
    changed = _cfg(tasks="all", templates="T1,T4", max_new_tokens=NEW + 1)
    changed.init_from, changed.data.niv2_dir = f"hf:{model_dir}", str(niv2_tasks_dir)
    with pytest.raises(runner.EvalConfigError, match=f"eval.max_new_tokens: {NEW} -> {NEW + 1}"):
        runner.evaluate(changed, workdir)


def test_bad_input_errors(niv2_tasks_dir, tmp_path):
    base = dict(tasks="task080_piqa_answer_generation", templates="T1")
    cfg = _cfg(**base)
    cfg.data.niv2_dir = str(niv2_tasks_dir)
    with pytest.raises(runner.EvalConfigError, match="unknown task or skill 'piqa_answers'.*Valid specs"):
        runner.evaluate(_with(cfg, tasks="piqa_answers"), tmp_path / "a")
    with pytest.raises(runner.EvalConfigError, match="unknown task.*'task080_piqa'.*Did you mean: task080_piqa_answer"):
        runner.evaluate(_with(cfg, tasks="task080_piqa"), tmp_path / "a")
    with pytest.raises(runner.EvalConfigError, match="unknown template 'T9'; valid templates: T1, T2, T3, T4, T5"):
        runner.evaluate(_with(cfg, templates="T1,T9"), tmp_path / "b")
    missing = tmp_path / "no_such_ckpt"
    cfg_ckpt = _with(cfg)
    cfg_ckpt.init_from = f"ckpt:{missing}"
    with pytest.raises(FileNotFoundError, match=f"checkpoint directory '{missing}' does not exist"):
        runner.evaluate(cfg_ckpt, tmp_path / "c")
    with pytest.raises(runner.EvalConfigError, match="data.niv2_dir"):
        bad = _with(cfg)
        bad.data.niv2_dir = str(tmp_path / "nope")
        runner.evaluate(bad, tmp_path / "d")
    with pytest.raises(runner.EvalConfigError, match="task966_ruletaker.*none of the requested tasks"):
        runner.evaluate(_with(cfg, tasks="task966_ruletaker_fact_checking_based_on_given_context"), tmp_path / "e")
    # An empty task file: the reader's error names the file, before any model is loaded.
    folder = tmp_path / "tasks"
    folder.mkdir()
    src = json.loads((niv2_tasks_dir / "task080_piqa_answer_generation.json").read_text())
    src["Instances"] = []
    (folder / "task080_piqa_answer_generation.json").write_text(json.dumps(src))
    empty = _with(cfg)
    empty.data.niv2_dir = str(folder)
    with pytest.raises(niv2.TaskFileError, match="task080_piqa_answer_generation.json"):
        runner.evaluate(empty, tmp_path / "f")
    assert not (tmp_path / "f" / "predictions").exists()
    # The launcher turns these into a one-line error and exit status 2.
    res = _launch(tmp_path / "g", f"--config.data.niv2_dir={niv2_tasks_dir}", f"--config.init_from=ckpt:{missing}",
                  "--config.eval.tasks=task080_piqa_answer_generation")
    assert res.returncode == 2 and str(missing) in res.stderr and "Traceback" not in res.stderr


def _with(cfg, **eval_overrides):
    c = cfg.copy_and_resolve_references()
    for k, v in eval_overrides.items():
        setattr(c.eval, k, v)
    return c


def test_synthetic_tasks_and_overflow(model_dir, tmp_path):
    """Synthetic tasks with the synthetic registry, plus one task whose definition alone cannot fit the context."""
    folder = tmp_path / "synth"
    synthetic.write_synthetic_tasks(folder, seed=0, instances_per_task=3)
    registry = synthetic.synthetic_registry()
    chosen = [registry.datasets[0].name, registry.datasets[-1].name]
    probe = json.loads((folder / f"{chosen[0]}.json").read_text())
    probe["Definition"] = [" ".join(["Answer the question about the numbers given below carefully."] * 200)]
    (folder / "task9999_overflow_probe.json").write_text(json.dumps(probe))

    model = convert.from_hf(model_dir)
    tok = tokenizers.load_tokenizer(str(model_dir))
    cfg = _cfg(tasks=",".join(chosen + ["task9999_overflow_probe"]), templates="T1", registry="synthetic",
               buckets="256")
    cfg.data.niv2_dir = str(folder)
    scores = runner.evaluate(cfg, tmp_path / "w", model=model, tokenizer=tok)

    assert list(scores["datasets"]) == chosen + ["task9999_overflow_probe"]
    assert set(scores["skills"]) == {registry.datasets[0].skill, registry.datasets[-1].skill}
    assert scores["overall"]["datasets"] == chosen  # the probe is not a registry dataset
    probe_entry = scores["datasets"]["task9999_overflow_probe"]
    assert probe_entry["n_overflow"] == 3 and scores["n_overflow"] == 3
    assert probe_entry["skill"] is None and all(v == 0.0 for v in probe_entry["max"].values())
    records = [json.loads(x) for x in (tmp_path / "w" / "predictions" / "task9999_overflow_probe" / "T1.jsonl")
               .read_text().splitlines()]
    assert all(r["overflow"] and r["prediction"] == "" and r["finish"] == "overflow" for r in records)
    assert "did not fit the context** (scored as empty predictions): 3" in (tmp_path / "w" / "report.md").read_text()
    for name in chosen:
        assert scores["datasets"][name]["n_overflow"] == 0

    with pytest.raises(runner.EvalConfigError, match="task9999_overflow_probe.*instance.*template 'T1'"):
        runner.evaluate(_with(cfg, on_overflow="error"), tmp_path / "w2", model=model, tokenizer=tok)


def test_aggregate_rules():
    tr = report_lib.TemplateResult
    results = {
        "a": {"T1": tr({"m": 10.0}, 5), "T2": tr({"m": 30.0}, 5)},
        "b": {"T1": tr({"m": 50.0}, 5, n_overflow=2, n_length=3)},
        "dev1": {"T1": tr({"m": 70.0}, 5, n_length=1)},
    }
    reg = registry_lib.Registry.from_config(["s1:a", "s2:b:held_out"], dev_set=["dev1"])
    s = report_lib.aggregate(results, registry=reg)
    assert s["datasets"]["a"]["max"] == {"m": 30.0} and s["datasets"]["a"]["mean"] == {"m": 20.0}
    assert s["overall"]["max"] == {"m": 40.0} and s["overall"]["mean"] == {"m": 35.0}
    assert s["in_domain"]["datasets"] == ["a"] and s["held_out"]["max"] == {"m": 50.0}
    assert s["dev"]["max"] == {"m": 70.0} and s["n_overflow"] == 2
    assert s["skills"]["s2"]["in_domain"] is False
    assert s["datasets"]["b"]["n_length"] == 3 and s["datasets"]["a"]["n_length"] == 0 and s["n_length"] == 4
    em = report_lib.aggregate({"b": {"T1": tr({"exact_match": 50.0}, 5, n_overflow=2, n_length=3)}}, registry=reg)
    md = report_lib.render_markdown(em).splitlines()
    assert any("cut at max_new_tokens" in line and line.endswith(": 3") for line in md)
    row_b = next(line for line in md if line.startswith("| b |"))
    assert row_b.endswith("| 5 | 2 | 3 |")  # n, overflow, hit length


def _save_step(directory, step, cfg, *, seed, tokenizer_dir, mesh, metrics=None):
    """Saves a random tiny model (``seed``) as ``step`` in the checkpoints folder ``directory``, with the app config,
    the tokenizer beside the steps and the selection ``metrics``, as a training run does; returns the model."""
    import optax

    from alert_jax.io import checkpoint
    from alert_jax.train import state as state_lib

    model = opt.create_model(sizes.model_config_from(cfg), None, rngs_seed=seed)
    parts, params = opt.split_model(model)
    tx = optax.sgd(0.1)
    train_state = state_lib.create_train_state(params, tx, state_lib.state_shardings(parts, tx, mesh), seed=0)
    ckpt = checkpoint.Checkpointer(directory, async_save=False)
    ckpt.save(step, train_state, cfg, metrics=metrics)
    ckpt.write_extras(cfg, tokenizers.load_tokenizer(str(tokenizer_dir)))  # config.json + tokenizer/ beside the steps
    ckpt.close()
    return model


def _one_device_mesh():
    import jax

    from alert_jax.parallel.sharding import make_mesh

    return make_mesh((1, 1, 1), devices=jax.devices()[:1])


def _records(workdir, task, template):
    return [json.loads(x) for x in (workdir / "predictions" / task / f"{template}.jsonl").read_text().splitlines()]


def _write_records(workdir, task, template, records):
    (workdir / "predictions" / task / f"{template}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_ckpt_init_loads_params_and_tokenizer(model_dir, tmp_path):
    """``init_from=ckpt:DIR`` restores the saved parameters and the tokenizer stored beside them."""
    import jax
    import numpy as np
    from flax import nnx

    cfg = _cfg()
    cfg.model.max_position_embeddings = MAX_POS
    mesh = _one_device_mesh()
    model = _save_step(tmp_path / "run" / "checkpoints", 7, cfg, seed=3, tokenizer_dir=model_dir, mesh=mesh)

    cfg.init_from = f"ckpt:{tmp_path / 'run'}"
    restored, tok = runner.load_model_and_tokenizer(cfg, mesh)
    want = jax.tree.leaves(nnx.state(model, nnx.Param))
    got = jax.tree.leaves(nnx.state(restored, nnx.Param))
    assert len(want) == len(got) and all(np.array_equal(a, b) for a, b in zip(want, got))
    assert tok.encode("Input: 3 apples") == tokenizers.load_tokenizer(str(model_dir)).encode("Input: 3 apples")
    # Pinned to the identity found before loading: the same step loads; a folder that no longer resolves to the
    # identity (replaced in between) is refused, naming both.
    pinned, _ = runner.load_model_and_tokenizer(cfg, mesh, checkpoint=(str(tmp_path / "run" / "checkpoints"), 7))
    assert all(np.array_equal(a, b) for a, b in zip(want, jax.tree.leaves(nnx.state(pinned, nnx.Param))))
    hf_cfg = _cfg()
    hf_cfg.init_from = f"hf:{model_dir}"
    with pytest.raises(runner.EvalConfigError, match="resolved to '/elsewhere'.*but loaded.*changed meanwhile"):
        runner.load_model_and_tokenizer(hf_cfg, mesh, checkpoint=("/elsewhere", None))


def test_answer_options_in_prompts_settings_and_reuse(model_dir, niv2_tasks_dir, tmp_path, caplog):
    """A classification task's options appear in every predictions prompt and in scores.json; turning them off is
    refused on the same workdir and, recomputed, gives the prompts rendered without options; options declared by
    the registry recompute the files (never a silent reuse)."""
    from alert_jax.data import templates

    task_name = "task513_argument_stance_classification"
    task = niv2.load_task(task_name, niv2_tasks_dir)
    model, tok = convert.from_hf(model_dir), tokenizers.load_tokenizer(str(model_dir))
    cfg = _cfg(tasks=task_name, templates="T2", max_instances=2, buckets=str(MAX_POS - NEW))
    cfg.init_from, cfg.data.niv2_dir = f"hf:{model_dir}", str(niv2_tasks_dir)
    workdir = tmp_path / "E"

    def prompts_rendered(options):
        def count(text):
            return len(tok.encode(text, add_bos=True))
        return [templates.render("T2", task, inst, count_tokens=count, max_tokens=MAX_POS - NEW, options=options).text
                for inst in task.instances[:2]]

    first = runner.evaluate(cfg, workdir, model=model, tokenizer=tok)
    meta = first["metadata"]
    assert (meta["append_options"], meta["max_options"]) == (True, 10)
    assert meta["answer_options"] == {task_name: ["against", "in favor"]}
    records = _records(workdir, task_name, "T2")
    assert [r["prompt"] for r in records] == prompts_rendered(["against", "in favor"])
    assert all(r["prompt"].endswith("\nOptions: against, in favor\nOutput:") for r in records)
    assert all(r["provenance"]["answer_options"] == ["against", "in favor"] for r in records)
    recorded = json.loads((workdir / "eval_config.json").read_text())
    assert (recorded["eval.append_options"], recorded["eval.max_options"]) == (True, 10)

    with pytest.raises(runner.EvalConfigError, match="eval.append_options: True -> False"):
        runner.evaluate(_with(cfg, append_options=False), workdir, model=model, tokenizer=tok)
    off = runner.evaluate(_with(cfg, append_options=False, overwrite=True), tmp_path / "off", model=model,
                          tokenizer=tok)
    assert off["metadata"]["answer_options"] == {task_name: None}
    assert [r["prompt"] for r in _records(tmp_path / "off", task_name, "T2")] == prompts_rendered(None)

    declared = tmp_path / "registry.json"
    declared.write_text(json.dumps({"datasets": [{"name": task_name, "skill": "argument", "in_domain": False,
                                                  "options": ["pro", "con"]}]}))
    with caplog.at_level(logging.WARNING, logger="alert_jax.eval"):
        again = runner.evaluate(_with(cfg, registry=str(declared)), workdir, model=model, tokenizer=tok)
    assert again["metadata"]["run"]["computed"] == 1 and "answer_options:" in caplog.text
    assert all(r["prompt"].endswith("\nOptions: con, pro\nOutput:") for r in _records(workdir, task_name, "T2"))

    with pytest.raises(runner.EvalConfigError, match="eval.max_options"):
        runner.validate(_with(cfg, max_options=1), 1)
    with pytest.raises(runner.EvalConfigError, match="eval.append_options"):
        runner.validate(_with(cfg, append_options=None), 1)


def test_evaluate_again_after_further_training(model_dir, niv2_tasks_dir, tmp_path, caplog):
    """Evaluate ``ckpt:W/checkpoints`` into E, save a later step with other parameters into the same folder (the
    run trained further), evaluate into E again: the new step is evaluated, not the older step's predictions reused,
    and ``scores.json`` / each record name the step."""
    mesh = _one_device_mesh()
    cfg = _cfg(tasks=TASK, templates="T1", max_instances=2, buckets=str(MAX_POS - NEW))
    cfg.model.max_position_embeddings = MAX_POS
    cfg.data.niv2_dir = str(niv2_tasks_dir)
    ckpts = tmp_path / "W" / "checkpoints"
    _save_step(ckpts, 7, cfg, seed=3, tokenizer_dir=model_dir, mesh=mesh)
    cfg.init_from = f"ckpt:{ckpts}"
    workdir = tmp_path / "E"

    first = runner.evaluate(cfg, workdir, mesh=mesh)
    meta = first["metadata"]
    digest = hashlib.sha256((niv2_tasks_dir / f"{TASK}.json").read_bytes()).hexdigest()
    assert (meta["checkpoint_path"], meta["checkpoint_step"]) == (str(ckpts), 7)
    assert meta["task_digests"] == {TASK: digest}
    assert meta["code_version"] == provenance.code_version() == meta["predictions_code_versions"][0]
    assert set(meta["versions"]) >= {"jax", "jaxlib", "flax", "orbax-checkpoint", "numpy"}
    assert meta["devices"]["count"] == 1 and meta["devices"]["process_count"] == 1 and meta["devices"]["platform"]
    stamp = {"checkpoint_path": str(ckpts), "checkpoint_step": 7, "task_digest": digest, "answer_options": None,
             "code_version": provenance.code_version()}
    assert all(r["provenance"] == stamp for r in _records(workdir, TASK, "T1"))

    _save_step(ckpts, 9, cfg, seed=4, tokenizer_dir=model_dir, mesh=mesh)  # the run trained further
    with caplog.at_level(logging.WARNING, logger="alert_jax.eval"):
        second = runner.evaluate(cfg, workdir, mesh=mesh)
    assert second["metadata"]["run"]["computed"] == 1 and second["metadata"]["run"]["reused"] == 0
    assert second["metadata"]["checkpoint_step"] == 9
    assert json.loads((workdir / "scores.json").read_text())["metadata"]["checkpoint_step"] == 9
    assert all(r["provenance"]["checkpoint_step"] == 9 for r in _records(workdir, TASK, "T1"))
    assert "checkpoint_step: 7 -> 9" in caplog.text
    assert "**checkpoint_step**: `9`" in (workdir / "report.md").read_text()

    third = runner.evaluate(cfg, workdir, mesh=mesh)  # same step again: reused
    assert third["metadata"]["run"]["computed"] == 0 and third["metadata"]["checkpoint_step"] == 9


def test_changed_task_file_or_missing_provenance_recomputes(model_dir, niv2_tasks_dir, tmp_path, caplog):
    """Same instance ids with other references in data.niv2_dir: recomputed and scored against the new references;
    records without provenance are recomputed; records of another code version are reused and reported."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    src = json.loads((niv2_tasks_dir / f"{TASK}.json").read_text(encoding="utf-8"))
    (folder / f"{TASK}.json").write_text(json.dumps(src), encoding="utf-8")
    model = convert.from_hf(model_dir)
    tok = tokenizers.load_tokenizer(str(model_dir))
    cfg = _cfg(tasks=TASK, templates="T1", max_instances=2, buckets=str(MAX_POS - NEW))
    cfg.data.niv2_dir = str(folder)
    workdir = tmp_path / "E"
    first = runner.evaluate(cfg, workdir, model=model, tokenizer=tok)
    assert first["metadata"]["checkpoint_path"] == "" and first["metadata"]["checkpoint_step"] is None

    for inst in src["Instances"][:2]:
        inst["output"] = [f"a new reference for {inst['id']}"]
    (folder / f"{TASK}.json").write_text(json.dumps(src), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="alert_jax.eval"):
        second = runner.evaluate(cfg, workdir, model=model, tokenizer=tok)
    assert second["metadata"]["run"]["computed"] == 1
    new_digest = hashlib.sha256((folder / f"{TASK}.json").read_bytes()).hexdigest()
    assert second["metadata"]["task_digests"] == {TASK: new_digest} != first["metadata"]["task_digests"]
    records = _records(workdir, TASK, "T1")
    assert [r["references"] for r in records] == [i["output"] for i in src["Instances"][:2]]
    assert all(r["provenance"]["task_digest"] == new_digest for r in records)
    assert "task_digest:" in caplog.text

    caplog.clear()
    _write_records(workdir, TASK, "T1", [{k: v for k, v in r.items() if k != "provenance"} for r in records])
    with caplog.at_level(logging.WARNING, logger="alert_jax.eval"):
        third = runner.evaluate(cfg, workdir, model=model, tokenizer=tok)
    assert third["metadata"]["run"]["computed"] == 1 and "no provenance recorded" in caplog.text

    caplog.clear()
    other = [dict(r, provenance=dict(r["provenance"], code_version="0.0.1+git.other")) for r in records]
    _write_records(workdir, TASK, "T1", other)
    with caplog.at_level(logging.WARNING, logger="alert_jax.eval"):
        fourth = runner.evaluate(cfg, workdir, model=model, tokenizer=tok)
    assert fourth["metadata"]["run"]["computed"] == 0
    assert fourth["metadata"]["predictions_code_versions"] == ["0.0.1+git.other"]
    assert fourth["metadata"]["code_version"] == provenance.code_version()
    assert "another code version (0.0.1+git.other: 1" in caplog.text


def test_sweep_evaluates_the_dev_selected_step(model_dir, niv2_tasks_dir, tmp_path):
    """The sweep's evaluation command of a finetuned run loads the step with the best dev score (2 here), not the
    latest (4) nor the best validation loss (4), and scores.json names it."""
    from alert_jax.apps import sweep
    from configs import sweep as sweep_config

    cfg = _cfg()
    cfg.model.max_position_embeddings = MAX_POS
    root = tmp_path / "sweep"
    for step, (val_loss, dev_score) in {2: (3.0, 50.0), 3: (2.0, 20.0), 4: (1.0, 10.0)}.items():
        _save_step(root / "tiny-ft" / "checkpoints", step, cfg, seed=step, tokenizer_dir=model_dir,
                   mesh=_one_device_mesh(), metrics={"val_loss": val_loss, "dev_score": dev_score})
    sc = sweep_config.get_config("tiny")
    sc.root, sc.variants = str(root), ("ft",)
    sc.eval_overrides = {"data": {"niv2_dir": str(niv2_tasks_dir)},
                         "eval": {"tasks": TASK, "templates": "T1", "max_instances": 2, "max_new_tokens": NEW,
                                  "buckets": str(MAX_POS - NEW)}}
    (run,) = sweep.expand_runs(sc)
    evaluate = run.commands[-1]
    proc = subprocess.run([sys.executable, *evaluate[1:]], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=subprocess_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((root / "tiny-ft" / "eval" / "scores.json").read_text())["metadata"]
    assert meta["checkpoint_step"] == 2 and meta["init_from"].endswith("checkpoints@best_dev_score")
    assert sweep.evaluated_checkpoint(run).endswith("-> step 2")
