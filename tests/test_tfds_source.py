"""``data.source='tfds'``: the datasets launch/prepare.py writes, read by training and evaluation.

* raw files and the prepared ``alert_finetune`` give identical training batches (every field, two data shards,
  several batches; token ids stored at prepare time and text-only datasets alike) and identical validation batches;
* launch/prepare.py writes both datasets (synthetic corpus + synthetic tasks); a tiny run with ``data.source=tfds``
  trains, and evaluates from the prepared ``alert_eval``: the tasks (hence prompts) equal those of the task files;
* the finetuning dev set (dev-loss records, dev-score instances and prompts) read from ``alert_eval`` with
  ``data.niv2_dir=''`` equals the raw path's from the task files; no dev task in ``data.tfds_dir`` = missing files;
* errors: an empty or unprepared ``data.tfds_dir``, token ids of another tokenizer, a dataset prepared from other
  corpus settings; the paper-size presets read TFDS, tiny reads the raw files.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT

from alert_jax.data import pipeline, registry, synthetic, templates
from alert_jax.data.sources import DataSourceError
from alert_jax.io import tokenizers
from alert_jax.train import records
from alert_jax.train.settings import TrainConfigError

pytest.importorskip("tensorflow_datasets")

FIELDS = ("inputs", "targets", "segment_ids", "positions", "loss_mask")
CONTEXT, NEW_TOKENS = 128, 4  # the tiny model's positions; tokens generated per evaluated instance


def _tiny(tokenizer: str = "", **data):
    from configs import finetune

    cfg = finetune.get_config("tiny,cot")
    cfg.tokenizer = tokenizer
    cfg.data.update({"synthetic_train_examples": 120, "synthetic_valid_examples": 30, "max_eval_examples": 12,
                     "niv2_dir": "", **data})
    return cfg


def _as_tfds(cfg, tfds_dir):
    c = cfg.copy_and_resolve_references()
    c.data.source, c.data.tfds_dir = "tfds", str(tfds_dir)
    return c


def _assert_same_batches(a, b, count):
    for i in range(count):
        x, y = next(a), next(b)
        for k in FIELDS:
            np.testing.assert_array_equal(x[k], y[k], err_msg=f"batch {i} field {k}")


def test_tfds_and_raw_give_identical_batches(launch_env, tmp_path):
    from alert_jax.apps import prepare

    tok = tokenizers.load_tokenizer(launch_env["tokenizer"])
    cfg = _tiny(tokenizer=launch_env["tokenizer"])
    prepare.prepare_finetune(cfg, tmp_path / "ids")
    text_only = _tiny()  # no tokenizer configured: records are text, tokenized when read
    prepare.prepare_finetune(text_only, tmp_path / "text")

    raw = records.load_corpora(cfg)
    with_ids = records.load_corpora(_as_tfds(cfg, tmp_path / "ids"))
    text = records.load_corpora(_as_tfds(text_only, tmp_path / "text"))
    assert with_ids.tokenizer_fingerprint == tokenizers.fingerprint(tok) and not text.tokenizer_fingerprint
    prompt_ids, target_ids = with_ids.train[0]["token_ids"]  # the stored-ids path is the one exercised
    assert (list(prompt_ids), list(target_ids)) == (tok.encode(raw.train[0][0]), tok.encode(raw.train[0][1]))
    assert "token_ids" not in text.train[0]
    assert len(raw.train) == len(with_ids.train) == len(text.train) == 120
    assert [pipeline.record_to_pair(r) for r in with_ids.train[:]] == raw.train

    def train_iter(source, shard):
        return pipeline.make_train_iterator(source, tok, seq_len=128, batch_size=3, seed=7, shard_index=shard,
                                            shard_count=2, pack_chunk_examples=16, num_threads=0)

    for shard in (0, 1):
        _assert_same_batches(train_iter(raw.train, shard), train_iter(with_ids.train, shard), 6)
        _assert_same_batches(train_iter(raw.train, shard), train_iter(text.train, shard), 6)
    # the iterator state (saved in checkpoints) is the same on both paths: a run resumes exactly on either
    running = train_iter(with_ids.train, 1)
    _assert_same_batches(running, train_iter(raw.train, 1), 4)
    resumed = train_iter(raw.train, 1)
    resumed.set_state(json.loads(json.dumps(running.get_state())))
    _assert_same_batches(running, resumed, 4)
    for corpora in (with_ids, text):
        assert {k: len(v) for k, v in corpora.validation.items()} == {"synthetic": 12}
        for name, recs in raw.validation.items():
            want = pipeline.make_eval_iterator(recs, tok, seq_len=128, batch_size=4, shard_index=1, shard_count=2)
            got = pipeline.make_eval_iterator(corpora.validation[name], tok, seq_len=128, batch_size=4,
                                              shard_index=1, shard_count=2)
            assert len(want) == len(got)
            _assert_same_batches(iter(want), iter(got), len(want))


def test_prepare_then_tiny_run_trains_and_evaluates_from_tfds(launch_env, tmp_path):
    from alert_jax.eval import runner
    from alert_jax.train import loop
    from configs import evaluate as eval_config

    tasks_dir = tmp_path / "tasks"
    synthetic.write_synthetic_tasks(tasks_dir, seed=0, instances_per_task=3)
    chosen = [d.name for d in synthetic.synthetic_registry().datasets[:2]]
    data = tmp_path / "tfds"
    cmd = [sys.executable, str(REPO_ROOT / "launch" / "prepare.py"),
           f"--config={REPO_ROOT}/configs/finetune.py:tiny,cot", f"--config.tokenizer={launch_env['tokenizer']}",
           "--config.data.synthetic_train_examples=120", "--config.data.synthetic_valid_examples=30",
           f"--config.data.niv2_dir={tasks_dir}", f"--out={data}",
           "--registry=synthetic", f"--tasks={','.join(chosen)}", "--modes=ft,cot"]
    proc = subprocess.run(cmd, env=launch_env["env"], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("alert_")]
    dev = len(synthetic.synthetic_registry().dev_set)
    assert len(lines) == 3
    for line, mode in zip(lines, ("ft", "cot")):
        assert f"alert_finetune/{mode}: {{'train': 120, 'validation': 30}} records, token ids of" in line
        assert (data / "alert_finetune" / mode).is_dir()
    assert f"alert_eval: {{'test': {3 * (2 + dev)}}} records of {2 + dev} tasks" in lines[2]

    cfg = _as_tfds(_tiny(tokenizer=launch_env["tokenizer"], synthetic_train_examples=120), data)
    cfg.train.update(num_steps=2, log_every=1, eval_every=2, checkpoint_every=2, keep_checkpoints=1,
                     async_checkpointing=False, tensorboard=False, measure_cpu_peak=False)
    workdir = tmp_path / "run"
    summary = loop.train_and_evaluate(cfg, workdir)
    assert summary["stopped"] == "done" and summary["step"] == 2
    assert math.isfinite(summary["last_eval"]["val_loss/synthetic"])

    def eval_cfg(source: str):
        e = eval_config.get_config("tiny")
        e.init_from, e.data.source = f"ckpt:{workdir}/checkpoints", source
        e.data.niv2_dir, e.data.tfds_dir = (str(tasks_dir), "") if source == "raw" else ("", str(data))
        e.eval.update(tasks=",".join(chosen), templates="T1,T3", registry="synthetic", max_instances=2,
                      max_new_tokens=NEW_TOKENS, bootstrap_resamples=0, figures=False,
                      buckets=str(CONTEXT - NEW_TOKENS))
        return e

    # the tasks evaluation reads from alert_eval are those of the task files, so are the prompts it renders
    stored, files = runner.resolve_eval_tasks(eval_cfg("tfds")), runner.resolve_eval_tasks(eval_cfg("raw"))
    assert stored.present == files.present == chosen and stored.options == files.options
    for name in chosen:
        got, want = stored.tasks[name], files.tasks[name]
        for field in ("definition", "positive_examples", "categories", "reasoning", "source", "digest"):
            assert getattr(got, field) == getattr(want, field), (name, field)
        assert got.instances == want.instances and stored.instances[name] == files.instances[name]
        assert want.digest and len(want.instances) == 3

    tok = tokenizers.load_tokenizer(str(workdir / "checkpoints" / "tokenizer"))

    def count_tokens(text: str) -> int:  # as the runner fits prompts to the context
        return len(tok.encode(text, add_bos=True))

    scores = runner.evaluate(eval_cfg("tfds"), tmp_path / "eval")
    assert list(scores["datasets"]) == chosen
    for name in chosen:
        for template in ("T1", "T3"):
            path = tmp_path / "eval" / "predictions" / name / f"{template}.jsonl"
            preds = [json.loads(line) for line in path.read_text().splitlines()]
            want = [templates.render(template, files.tasks[name], inst, options=files.options[name],
                                     count_tokens=count_tokens, max_tokens=CONTEXT - NEW_TOKENS).text
                    for inst in files.instances[name]]
            assert [p["prompt"] for p in preds] == want and all(p["finish"] != "overflow" for p in preds)


def _write_dev_tasks(folder):
    """Two of the registry's three dev tasks (the second is absent on purpose), with demonstrations and labels."""
    folder.mkdir(parents=True)
    labels = ["Entailment", "Neutral", "Contradiction"]
    for k, name in enumerate((registry.DEV_SET[0], registry.DEV_SET[2])):
        task = {"Definition": [f"Dev task {k}: decide the relation."], "Categories": ["Textual Entailment"],
                "Positive Examples": [{"input": "Premise: A. Hypothesis: A.", "output": "Entailment",
                                       "explanation": "the same"}], "Negative Examples": [],
                "Instances": [{"id": f"{name}-{i}", "input": f"Premise: p{i}. Hypothesis: h{i}.",
                               "output": [labels[(i + k) % 3], "other"]} for i in range(4)]}
        (folder / f"{name}.json").write_text(json.dumps(task))
    return folder


def test_dev_sets_come_from_alert_eval(tmp_path):
    from alert_jax.apps import prepare
    from alert_jax.train import dev_score

    raw = _tiny(niv2_dir=str(_write_dev_tasks(tmp_path / "tasks")), dev_eval_instances=3, dev_generate_instances=2)
    raw.train.dev_every = 1
    prepare.prepare_eval(raw, tmp_path / "tfds", tasks="dev")
    stored = _as_tfds(raw, tmp_path / "tfds")
    stored.data.niv2_dir = ""  # the dev tasks can only come from alert_eval
    present = [registry.DEV_SET[0], registry.DEV_SET[2]]

    want, want_note = records.load_dev_sets(raw)
    got, got_note = records.load_dev_sets(stored)
    assert list(want) == present and [len(r) for r in want.values()] == [3, 3]
    assert "\nOptions: Contradiction, Entailment, Neutral, other\nOutput:" in want[present[0]][0][0]
    assert got == want
    assert registry.DEV_SET[1] in got_note and registry.DEV_SET[1] in want_note  # the missing task is named

    want_gen, _ = dev_score.load_dev_generation(raw)
    got_gen, got_gen_note = dev_score.load_dev_generation(stored)
    assert list(got_gen.tasks) == list(want_gen.tasks) == present and registry.DEV_SET[1] in got_gen_note
    assert got_gen.instances == want_gen.instances and got_gen.options == want_gen.options
    assert [len(v) for v in got_gen.instances.values()] == [2, 2]
    for name in present:  # the prompts generation renders (the demonstrations too, for few-shot templates)
        for template in ("T1", "T3"):
            def prompts(dev, template=template, name=name):
                return [templates.render(template, dev.tasks[name], inst, options=dev.options[name]).text
                        for inst in dev.instances[name]]
            assert prompts(got_gen) == prompts(want_gen)
        assert got_gen.tasks[name].positive_examples == want_gen.tasks[name].positive_examples

    # raw without a folder: no dev set, as before; tfds with no dev task prepared (here: no alert_eval at all) is
    # treated as missing task files
    assert records.load_dev_sets(_tiny()) == ({}, "no dev-set validation: data.niv2_dir is empty (set it, or "
                                                  "ALERT_JAX_NIV2_DIR, to the NIV2 task files to also report dev_loss)")
    empty = _as_tfds(_tiny(), tmp_path / "nothing")
    empty.train.dev_every = 1
    dev, note = records.load_dev_sets(empty)
    assert dev == {} and note.endswith(f"per task): none; skipped, no task file in data.tfds_dir={tmp_path}/nothing "
                                       "(no alert_eval dataset: launch/prepare.py --what=eval writes it): "
                                       + ", ".join(registry.DEV_SET))
    assert dev_score.load_dev_generation(empty) == (None, f"dev-set score off: no dev task file "
                                                          f"({', '.join(registry.DEV_SET)}) in data.tfds_dir="
                                                          f"{tmp_path}/nothing (no alert_eval dataset: "
                                                          "launch/prepare.py --what=eval writes it)")


def test_errors_name_the_setting(launch_env, tmp_path):
    from alert_jax.apps import prepare

    cmd = [sys.executable, str(REPO_ROOT / "launch" / "prepare.py"), f"--out={tmp_path / 'x'}", "--what=finetune,rag"]
    proc = subprocess.run(cmd, env=launch_env["env"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "prepare: error: --what=finetune,rag: choose from finetune, eval"), proc.stderr[-2000:]
    assert not (tmp_path / "x").exists()

    with pytest.raises(DataSourceError, match=r"data\.source='tfds' but data\.tfds_dir is empty"):
        records.load_corpora(_as_tfds(_tiny(), ""))
    with pytest.raises(DataSourceError, match=r"data\.source='s3': use one of raw, tfds"):
        records.load_corpora(_tiny(source="s3"))
    with pytest.raises(TrainConfigError, match=r"data\.tfds_dir=.*nowhere.*launch/prepare\.py"):
        records.load_corpora(_as_tfds(_tiny(), tmp_path / "nowhere"))

    cfg = _tiny(tokenizer=launch_env["tokenizer"])
    prepare.prepare_finetune(cfg, tmp_path / "d")
    corpora = records.load_corpora(_as_tfds(cfg, tmp_path / "d"))
    other = tokenizers.train_sentencepiece([p + t for p, t in map(pipeline.record_to_pair, corpora.train[:60])], 400,
                                           tmp_path / "other" / "tokenizer.model")
    with pytest.raises(TrainConfigError, match=r"holds token ids of tokenizer SentencePieceTokenizer.*sha256:.*but "
                                               r"this run uses SentencePieceTokenizer.*other.*sha256:"):
        records.check_token_ids(corpora, other)
    records.check_token_ids(corpora, tokenizers.load_tokenizer(launch_env["tokenizer"]))  # the same one: accepted
    with pytest.raises(TrainConfigError, match=r"prepared from other inputs \(data\.synthetic_seed: prepared 0, "
                                               r"this run 5\)"):
        records.load_corpora(_as_tfds(_tiny(synthetic_seed=5), tmp_path / "d"))


def test_paper_size_presets_read_tfds():
    from configs import finetune

    assert finetune.get_config("tiny,cot").data.source == "raw"
    assert finetune.get_config("350m,ft").data.source == "raw"
    for size in ("1.3b", "13b", "175b"):
        cfg = finetune.get_config(f"{size},cot")
        assert cfg.data.source == "tfds"
        cfg.data.tfds_dir = ""
        with pytest.raises(DataSourceError, match="data.tfds_dir is empty"):
            records.load_corpora(cfg)
