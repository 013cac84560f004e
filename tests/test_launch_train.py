"""``launch/train.py`` end to end on the tiny config (subprocesses, as a user runs it), and the NaN-loss stop.

Speed: the tokenizer is trained once per session and passed with ``--config.tokenizer``; every subprocess shares a
persistent XLA compilation cache, so only the first run pays for compiling.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from helpers import restore_checkpoint  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
TRAIN_FIELDS = ("loss", "learning_rate", "grad_norm", "target_tokens_per_s", "padded_tokens_per_s",
                "packing_efficiency", "step_time_s", "tflops_per_device", "mfu", "truncated_examples")


@pytest.fixture(scope="session")
def launch_env(tmp_path_factory) -> dict:
    """Environment + tokenizer shared by all launch subprocesses."""
    from alert_jax.data.finetune import format_example
    from alert_jax.data.synthetic import synthetic_corpus
    from alert_jax.io.tokenizers import save_tokenizer, train_sentencepiece

    root = tmp_path_factory.mktemp("launch")
    texts = ["".join(format_example(ex, "cot")) for ex in synthetic_corpus(0, 2000)]
    tok = train_sentencepiece(texts, 1024, root / "sp" / "tokenizer.model")
    save_tokenizer(tok, root / "tokenizer")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # one CPU device per run (the tiny config's data-parallel mesh)
    env.update(JAX_COMPILATION_CACHE_DIR=str(root / "xla_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", TF_CPP_MIN_LOG_LEVEL="3")
    return {"env": env, "tokenizer": str(root / "tokenizer")}


def launch_cmd(launch_env: dict, workdir: pathlib.Path, *overrides: str, mode: str = "cot") -> list[str]:
    return [sys.executable, str(REPO / "launch" / "train.py"), f"--config={REPO}/configs/finetune.py:tiny,{mode}",
            f"--workdir={workdir}", f"--config.tokenizer={launch_env['tokenizer']}",
            "--config.data.synthetic_train_examples=400", "--config.data.max_eval_examples=32", *overrides]


def run_launch(launch_env: dict, workdir: pathlib.Path, *overrides: str, timeout: int = 600,
               check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(launch_cmd(launch_env, workdir, *overrides), env=launch_env["env"], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def read_metrics(workdir: pathlib.Path, kind: str = "train") -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.mark.slow
def test_launch_end_to_end_and_resume(launch_env, tmp_path):
    workdir = tmp_path / "run"
    proc = run_launch(launch_env, workdir, "--config.train.num_steps=4", "--config.train.log_every=2",
                      "--config.train.eval_every=2", "--config.train.checkpoint_every=2")
    assert "done: step 4" in proc.stdout
    assert "step 4/4 | loss" in proc.stdout  # progress output

    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["mode"] == "cot" and cfg["train"]["num_steps"] == 4 and cfg["model"]["hidden_size"] == 64
    train = read_metrics(workdir)
    assert [r["step"] for r in train] == [1, 2, 4]
    for r in train:
        missing = [f for f in TRAIN_FIELDS if f not in r]
        assert not missing, missing
        assert np.isfinite(r["loss"]) and 0 < r["packing_efficiency"] <= 1 and r["padded_tokens_per_s"] > 0
        assert r["tflops_per_device"] > 0 and 0 < r["mfu"] < 10
    evals = read_metrics(workdir, "eval")
    assert [r["step"] for r in evals] == [2, 4]
    assert all("val_loss" in r and "val_ppl" in r and "val_loss/synthetic" in r for r in evals)
    assert evals[1]["val_loss"] < evals[0]["val_loss"]  # lr 1e-3 on a fresh model: it learns
    assert any((workdir / "tb").iterdir())  # TensorBoard events

    ckpts = workdir / "checkpoints"
    assert {"2", "4", "config.json", "tokenizer"} <= {p.name for p in ckpts.iterdir()}

    from alert_jax.io import checkpoint
    from alert_jax.io.tokenizers import load_tokenizer

    model, mcfg = restore_checkpoint(workdir)
    assert mcfg.train.num_steps == 4 and model.config.arch.num_layers == 2
    tok = load_tokenizer(str(checkpoint.tokenizer_dir(workdir)))
    assert tok.vocab_size <= 1024 and tok.decode(tok.encode("So the answer is 7.")) == "So the answer is 7."

    # Re-running in the same workdir resumes from the latest checkpoint.
    proc = run_launch(launch_env, workdir, "--config.train.num_steps=6", "--config.train.log_every=1",
                      "--config.train.eval_every=0", "--config.train.checkpoint_every=0")
    assert f"resumed from {ckpts}/4" in proc.stdout
    assert [r["step"] for r in read_metrics(workdir)][3:] == [5, 6]
    assert (ckpts / "6").is_dir()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(launch_env, tmp_path):
    workdir = tmp_path / "nan"
    # lr 0 for the first update (warmup), then an absurd rate: the loss of step 3 is non-finite.
    proc = run_launch(launch_env, workdir, "--config.optimizer.learning_rate=1e32", "--config.optimizer.warmup_steps=3",
                      "--config.train.num_steps=8", "--config.train.checkpoint_every=1",
                      "--config.train.log_every=1", "--config.train.eval_every=0", check=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "non-finite training loss" in proc.stderr and "at step 3" in proc.stderr, proc.stderr[-2000:]
    ckpts = workdir / "checkpoints"
    steps = sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit())
    assert steps == [1, 2]  # nothing written at or after the bad step
    assert "last good checkpoint is step 2" in proc.stderr

    for step in steps:  # intact and restorable (their losses were finite when they were written)
        model, _ = restore_checkpoint(ckpts / str(step))
        assert np.isfinite(np.asarray(model.token_embedding[...])).all()
    emb = np.asarray(restore_checkpoint(ckpts / "1")[0].token_embedding[...])
    assert np.abs(emb).max() < 1  # the lr-0 update left the initial weights
