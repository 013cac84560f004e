"""The dev set during finetuning (DESIGN.md section 5): perplexity, the score by generation, and checkpoint
selection by ``train.best_metric`` and ``ckpt:DIR@SELECT``.

* dev records from the real NIV2 dev-task files: T1 prompts, " " + first reference, first N instances, missing tasks;
* a 3-step in-process run of ``loop.train_and_evaluate`` on the tiny config with hand-written dev task files: the
  reported ``dev_loss`` / ``dev_loss/<task>`` equal a numpy cross-entropy of the final parameters on the same
  records (built here by hand, one unpacked example at a time), and ``best_metric='dev_loss'`` keeps / locates the
  step with the lowest dev loss;
* the Checkpointer ranks by the chosen key (val and dev disagree on purpose); unknown / unusable choices raise;
  ``locate`` picks the best step by any stored metric or the latest; ``keep_period`` keeps every candidate;
* the dev score by generation (``train/dev_score.py``) of a tiny run equals the evaluation runner's exact match of
  the same checkpoint on the same dev instances, and ``best_metric='dev_score'`` keeps the highest-scoring step.
"""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest
from helpers import restore_checkpoint

from alert_jax.data import niv2, registry, templates
from alert_jax.train import records as records_lib

T1 = "Definition: {definition}\n\nInput: {input}\nOutput:"  # written out here, independently of templates.py


def _with_options(text: str, outputs: set[str]) -> str:
    """``text`` + the options line evaluation appends to a classification task's input (2 to 10 distinct outputs,
    sorted), else ``text`` unchanged."""
    labels = sorted(o.strip() for o in outputs if o.strip())
    return text + "\nOptions: " + ", ".join(labels) if 2 <= len(labels) <= 10 else text


# ---------------------------------------------------------------------------------------------------------------------
# Records from the real task files
# ---------------------------------------------------------------------------------------------------------------------


def test_dev_records_from_real_task_files(niv2_tasks_dir):
    present = [t for t in registry.DEV_SET if (niv2_tasks_dir / f"{t}.json").is_file()]
    if not present:
        pytest.skip("no dev task file in the shared NIV2 folder")
    for n in (5, 200):
        dev = records_lib.dev_records(niv2_tasks_dir, template="T1", max_instances=n)
        assert list(dev.records) == present
        assert dev.missing == [t for t in registry.DEV_SET if t not in present]
        for name, records in dev.records.items():
            task = niv2.load_task(niv2_tasks_dir / f"{name}.json")
            assert len(records) == min(n, len(task.instances))
            first = task.instances[0]
            outputs = {o for inst in task.instances for o in inst.outputs} | {e.output for e in task.positive_examples}
            options = registry.ALERT.answer_options(task, 10)
            assert records[0][0] == templates.render("T1", task, first, options=options).text
            assert records[0][0] == T1.format(definition=task.definition.strip(),
                                              input=_with_options(first.input.strip(), outputs))
            assert records[0][1] == " " + first.outputs[0].strip()
            last = task.instances[len(records) - 1]
            assert records[-1] == (templates.render("T1", task, last, options=options).text,
                                   " " + last.outputs[0].strip())
    everything = records_lib.dev_records(niv2_tasks_dir, max_instances=0)
    assert all(len(r) == len(niv2.load_task(niv2_tasks_dir / f"{t}.json").instances)
               for t, r in everything.records.items())


def test_dev_sets_disabled_or_without_folder_and_missing_named(tmp_path):
    from alert_jax.train.records import load_dev_sets

    cfg = _config(tmp_path, niv2_dir="")
    assert load_dev_sets(cfg)[0] == {} and "data.niv2_dir is empty" in load_dev_sets(cfg)[1]
    tasks = _write_dev_tasks(tmp_path / "tasks")
    cfg = _config(tmp_path, niv2_dir=str(tasks), dev_eval_template="")
    assert load_dev_sets(cfg) == ({}, "dev-set validation disabled (data.dev_eval_template='')")
    cfg = _config(tmp_path, niv2_dir=str(tasks))
    records, note = load_dev_sets(cfg)
    assert list(records) == list(DEV_TASKS) and [len(r) for r in records.values()] == [2, 2]  # capped at 2
    assert registry.DEV_SET[1] in note and registry.DEV_SET[1] not in records  # the missing task is named


# ---------------------------------------------------------------------------------------------------------------------
# A tiny run: dev_loss is the cross-entropy of the dev records
# ---------------------------------------------------------------------------------------------------------------------

DEV_TASKS = {  # two of the three registry dev tasks; the third (task118...) is absent on purpose
    registry.DEV_SET[0]: ("Answer the question about the dialogue.",
                          [("M: I bought 3 apples. W: Then I bought 2 more. Q: How many apples?", "5"),
                           ("M: The train leaves at noon. Q: When does the train leave?", "At noon"),
                           ("W: My cat is black. Q: What colour is the cat?", "black")]),
    registry.DEV_SET[2]: ("Decide whether the hypothesis follows from the premise: "
                          "Entailment, Neutral or Contradiction.",
                          [("Premise: Tom has 7 pens. Hypothesis: Tom has pens.", "Entailment"),
                           ("Premise: The sky is blue. Hypothesis: It rains.", " Neutral "),
                           ("Premise: Ann is asleep. Hypothesis: Ann is awake.", "Contradiction")]),
}


def _write_dev_tasks(folder: pathlib.Path) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (definition, pairs) in DEV_TASKS.items():
        data = {"Definition": [definition], "Positive Examples": [], "Negative Examples": [],
                "Instances": [{"id": f"{name}-{i}", "input": x, "output": [y, "other"]} for i, (x, y) in
                              enumerate(pairs)], "Categories": ["Question Answering"]}
        (folder / f"{name}.json").write_text(json.dumps(data))
    return folder


def _config(tmp_path: pathlib.Path, **data: object):
    from configs import finetune

    cfg = finetune.get_config("tiny,ft")
    cfg.data.update({"synthetic_train_examples": 200, "synthetic_valid_examples": 16, "max_eval_examples": 16,
                     "dev_eval_instances": 2, "niv2_dir": "", **data})
    cfg.train.update(num_steps=3, log_every=1, eval_every=1, checkpoint_every=1, keep_checkpoints=1,
                     async_checkpointing=False, tensorboard=False, measure_cpu_peak=False)
    return cfg


def _reference_losses(model, tok, records: list[tuple[str, str]]) -> tuple[float, float]:
    """(sum of target-token cross-entropies, number of target tokens): one unpacked row per record, numpy softmax."""
    loss, count = 0.0, 0
    for prompt, target in records:
        p, t = tok.encode(prompt), tok.encode(target)
        ids = np.asarray([tok.bos_id, *p, *t, tok.eos_id], np.int32)
        n = len(ids) - 1
        logits = np.asarray(model(ids[None, :-1], np.arange(n, dtype=np.int32)[None], np.ones((1, n), np.int32)),
                             np.float64)[0]
        logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        nll = logz - logits[np.arange(n), ids[1:]]
        scored = np.arange(n) >= len(p)  # positions whose next token is a target token or the eos
        loss += float(nll[scored].sum())
        count += int(scored.sum())
    return loss, count


@pytest.mark.slow
def test_train_reports_dev_loss_and_keeps_best_by_it(launch_env, tmp_path):  # launch_env: conftest.py (tokenizer)
    from alert_jax.io import checkpoint, tokenizers
    from alert_jax.train import loop

    tasks = _write_dev_tasks(tmp_path / "tasks")
    cfg = _config(tmp_path, niv2_dir=str(tasks))
    cfg.tokenizer = launch_env["tokenizer"]
    cfg.train.best_metric = "dev_loss"
    workdir = tmp_path / "run"
    summary = loop.train_and_evaluate(cfg, workdir)
    assert summary["stopped"] == "done" and summary["step"] == 3

    evals = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r for r in evals if r["kind"] == "eval"}
    assert sorted(evals) == [1, 2, 3]
    last = summary["last_eval"]
    for key in ("dev_loss", "dev_ppl", "val_loss", "val_ppl", *(f"dev_{m}/{t}" for m in ("loss", "ppl")
                                                                  for t in DEV_TASKS)):
        assert key in last and key in evals[3], key
    assert last["dev_loss"] == pytest.approx(evals[3]["dev_loss"])
    assert not any(k.startswith("dev_") and registry.DEV_SET[1] in k for k in last)  # the absent task
    assert "val_loss/synthetic" in last
    assert not any(k.startswith("val_") and any(t in k for t in DEV_TASKS) for k in last)  # val_ = corpora only

    # Independent recomputation with the final parameters (step 3 is the latest, always kept).
    ckpts = workdir / "checkpoints"
    model, _ = restore_checkpoint(ckpts / "3")
    tok = tokenizers.load_tokenizer(str(ckpts / "tokenizer"))
    total_loss, total_count = 0.0, 0
    for name, (definition, pairs) in DEV_TASKS.items():
        outputs = {y for _, y in pairs} | {"other"}  # every instance's outputs: [y, "other"]
        records = [(T1.format(definition=definition, input=_with_options(x, outputs)), " " + y.strip())
                   for x, y in pairs[:2]]
        loss, count = _reference_losses(model, tok, records)
        assert last[f"dev_loss/{name}"] == pytest.approx(loss / count, rel=2e-4)
        assert last[f"dev_ppl/{name}"] == pytest.approx(np.exp(loss / count), rel=5e-4)
        total_loss, total_count = total_loss + loss, total_count + count
    assert last["dev_loss"] == pytest.approx(total_loss / total_count, rel=2e-4)  # token-weighted over tasks
    assert last["dev_ppl"] == pytest.approx(np.exp(total_loss / total_count), rel=5e-4)

    # keep_checkpoints=1 + keep_best: the latest step and the lowest dev_loss survive; locate() picks the latter.
    best = min(evals, key=lambda s: evals[s]["dev_loss"])
    kept = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert kept == sorted({3, best})
    assert checkpoint.locate(workdir) == (ckpts, best)
    mgr = checkpoint.Checkpointer(ckpts, best_metric="dev_loss", async_save=False)
    try:
        assert mgr.best_step() == best
        for step in kept:  # both losses are stored with each evaluated step
            saved = mgr.manager.metrics(step)
            assert saved["dev_loss"] == pytest.approx(evals[step]["dev_loss"])
            assert saved["val_loss"] == pytest.approx(evals[step]["val_loss"])
    finally:
        mgr.close()


# ---------------------------------------------------------------------------------------------------------------------
# Best-metric selection
# ---------------------------------------------------------------------------------------------------------------------


def test_checkpointer_ranks_by_best_metric(tmp_path):
    import ml_collections

    from alert_jax.io import checkpoint

    state = {"w": jax.numpy.arange(4.0)}
    losses = {1: (1.0, 3.0), 2: (2.0, 1.0), 3: (3.0, 2.0), 4: (4.0, 5.0)}  # step: (val_loss, dev_loss)
    for metric, best in (("val_loss", 1), ("dev_loss", 2)):
        root = tmp_path / metric
        cfg = ml_collections.ConfigDict({"train": {"best_metric": metric}})
        ckpt = checkpoint.Checkpointer(root, keep=1, best_metric=metric, async_save=False)
        ckpt.write_extras(cfg)
        for step, (val, dev) in losses.items():
            ckpt.save(step, state, cfg, metrics={"val_loss": val, "dev_loss": dev})
        ckpt.wait()
        assert ckpt.best_step() == best
        assert sorted(ckpt.all_steps()) == sorted({best, 4})
        with pytest.raises(ValueError, match="train.best_metric"):
            ckpt.save(5, state, cfg, metrics={"other": 0.0})
        ckpt.close()
        assert checkpoint.locate(root) == (root.absolute(), best)  # read back from config.json's train.best_metric


def test_unknown_or_unusable_best_metric_raises(tmp_path):
    from alert_jax.train import loop

    cfg = _config(tmp_path)
    cfg.train.best_metric = "dev_acc"
    with pytest.raises(ValueError, match=r"train\.best_metric='dev_acc'.*val_loss, dev_loss, dev_score"):
        loop.train_and_evaluate(cfg, tmp_path / "a")
    cfg.train.best_metric = "dev_loss"  # niv2_dir is empty: no dev set to select by
    with pytest.raises(ValueError, match=r"train\.best_metric='dev_loss' but no dev set"):
        loop.train_and_evaluate(cfg, tmp_path / "b")
    cfg.train.best_metric = "dev_score"  # no train.dev_every: nothing would ever be scored
    with pytest.raises(ValueError, match=r"train\.best_metric='dev_score' needs train\.dev_every > 0"):
        loop.train_and_evaluate(cfg, tmp_path / "c")
    cfg.train.dev_every = 1  # ... and no task files to score
    with pytest.raises(ValueError, match=r"train\.best_metric='dev_score' but no dev set is scored"):
        loop.train_and_evaluate(cfg, tmp_path / "d")


def test_locate_picks_the_best_step_by_any_stored_metric_or_the_latest(tmp_path):
    import ml_collections

    from alert_jax.io import checkpoint, loader

    state = {"w": jax.numpy.arange(4.0)}
    metrics = {1: {"val_loss": 4.0, "dev_score": 10.0}, 2: {"val_loss": 3.0, "dev_score": 60.0},
               3: {"val_loss": 1.0, "dev_score": 30.0}, 4: {"val_loss": 2.0}}
    root = tmp_path / "ckpts"
    cfg = ml_collections.ConfigDict({"train": {"best_metric": "val_loss"}})
    ckpt = checkpoint.Checkpointer(root, keep=1, keep_period=1, async_save=False)  # keep_period 1: every step kept
    ckpt.write_extras(cfg)
    for step, m in metrics.items():
        ckpt.save(step, state, cfg, metrics=m)
    ckpt.close()
    assert sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) == [1, 2, 3, 4]
    root = root.absolute()
    picks = {s: checkpoint.locate(root, s)[1] for s in ("best", "best_val_loss", "best_dev_score", "latest")}
    assert picks == {"best": 3, "best_val_loss": 3, "best_dev_score": 2, "latest": 4}
    assert checkpoint.stored_metrics(root)[2] == metrics[2]
    assert loader.checkpoint_identity(f"ckpt:{root}@best_dev_score") == (str(root), 2)
    spec = loader.InitFrom.parse(f"ckpt:{root}@latest")
    assert (spec.location, spec.select, str(spec)) == (str(root), "latest", f"ckpt:{root}@latest")
    assert str(loader.InitFrom.parse(f"ckpt:{root}")) == f"ckpt:{root}"
    with pytest.raises(loader.CheckpointError, match="unknown checkpoint selection 'best_bleu'"):
        loader.InitFrom.parse(f"ckpt:{root}@best_bleu")
    with pytest.raises(checkpoint.CheckpointNotFoundError, match="stored 'dev_loss'"):
        checkpoint.locate(root, "best_dev_loss")  # no step stored it: refused, never a silent fallback

    # Ranked by dev_score (highest best), keep=1: the latest and the highest-scoring step survive.
    ranked = tmp_path / "by_dev_score"
    ckpt = checkpoint.Checkpointer(ranked, keep=1, best_metric="dev_score", async_save=False)
    for step, m in metrics.items():
        if "dev_score" in m:
            ckpt.save(step, state, cfg, metrics=m)
    ckpt.save(4, state, cfg, metrics={"val_loss": 2.0, "dev_score": 0.0})
    ckpt.wait()
    assert sorted(ckpt.all_steps()) == [2, 4] and ckpt.best_step() == 2
    ckpt.close()


@pytest.mark.slow
def test_dev_score_by_generation_equals_evaluation_of_the_checkpoint(launch_env, tmp_path):
    import dataclasses

    from alert_jax.eval import runner
    from alert_jax.io import checkpoint, tokenizers
    from alert_jax.models import opt
    from alert_jax.parallel.sharding import make_mesh
    from alert_jax.train import dev_score, loop
    from configs import evaluate as eval_config

    tasks = _write_dev_tasks(tmp_path / "tasks")
    cfg = _config(tmp_path, niv2_dir=str(tasks), dev_generate_instances=2, dev_generate_max_new_tokens=4)
    cfg.tokenizer = launch_env["tokenizer"]
    cfg.train.update(dev_every=2, best_metric="dev_score", keep_checkpoints=1, checkpoint_every=0)
    workdir = tmp_path / "run"
    summary = loop.train_and_evaluate(cfg, workdir)
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    dev = {r["step"]: r for r in rows if r["kind"] == "dev_score"}
    assert sorted(dev) == [2, 3]  # every 2 steps and at the last one; each scored step was checkpointed
    assert set(summary["last_dev_score"]) >= {"dev_score", *(f"dev_score/{t}" for t in DEV_TASKS)}
    for r in dev.values():
        assert r["dev_score"] == pytest.approx(np.mean([r[f"dev_score/{t}"] for t in DEV_TASKS]))
    best = max(dev, key=lambda s: (dev[s]["dev_score"], s))  # ties: the latest step
    ckpts = (workdir / "checkpoints").absolute()
    assert checkpoint.locate(ckpts, "best_dev_score") == (ckpts, best) == checkpoint.locate(ckpts)
    assert checkpoint.stored_metrics(ckpts)[3]["dev_score"] == pytest.approx(dev[3]["dev_score"])

    # The evaluation runner on the last step, same instances, template, options and budget: the same exact match.
    ev = eval_config.get_config("tiny")
    ev.init_from, ev.data.niv2_dir = f"ckpt:{ckpts}@latest", str(tasks)
    ev.eval.update(tasks="dev", templates="T1", max_instances=2, max_new_tokens=4, figures=False,
                   bootstrap_resamples=0)
    scores = runner.evaluate(ev, tmp_path / "eval")
    assert scores["metadata"]["checkpoint_step"] == 3
    for t in DEV_TASKS:
        assert scores["datasets"][t]["templates"]["T1"]["scores"]["exact_match"] == pytest.approx(
            dev[3][f"dev_score/{t}"])

    # Not only equal scores (a random model scores 0 on both sides): the same generations, and a score that moves.
    model, _ = restore_checkpoint(ckpts / "3")
    parts, params = opt.split_model(model)
    dev_set, _ = dev_score.load_dev_generation(cfg)
    tok = tokenizers.load_tokenizer(str(ckpts / "tokenizer"))
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    predicted = dev_score.dev_predictions(dev_set, parts, params, tok, mesh)
    for t in DEV_TASKS:
        evaluated = [json.loads(line) for line in (tmp_path / "eval" / "predictions" / t / "T1.jsonl").read_text()
                     .splitlines()]
        assert [r["prediction"] for r in predicted[t]] == [r["prediction"] for r in evaluated]
    # The first instance of each task now accepts exactly what the model answers (same prompts: the options were
    # fixed when the set was loaded), so its exact match is 100 and the task's score follows the other instance.
    hit = {t: [dataclasses.replace(predicted_inst, outputs=[r["answer"]]) if i == 0 else predicted_inst
               for i, (predicted_inst, r) in enumerate(zip(dev_set.instances[t], predicted[t]))] for t in DEV_TASKS}
    rescored = dev_score.dev_scores(dataclasses.replace(dev_set, instances=hit), parts, params, tok, mesh)
    for t in DEV_TASKS:
        second = predicted[t][1]
        expected = (100.0 + 100.0 * (second["answer"].strip() in {o.strip() for o in second["references"]})) / 2
        assert rescored[f"dev_score/{t}"] == pytest.approx(expected) and expected >= 50.0


def test_dev_generation_budget_longer_than_the_context_is_refused_before_training(launch_env, tmp_path):
    from alert_jax.train import loop

    cfg = _config(tmp_path, niv2_dir=str(_write_dev_tasks(tmp_path / "tasks")), dev_generate_max_new_tokens=128)
    cfg.tokenizer = launch_env["tokenizer"]
    cfg.train.dev_every = 1
    with pytest.raises(ValueError, match=r"data.dev_generate_max_new_tokens=128 leaves no room .* 128 positions"):
        loop.train_and_evaluate(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written
