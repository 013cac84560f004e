"""``launch/train.py`` end to end on the tiny config (subprocesses, as a user runs it), and the NaN-loss stop.

Speed: the tokenizer is trained once per session and passed with ``--config.tokenizer``; every subprocess shares a
persistent XLA compilation cache, so only the first run pays for compiling (the ``launch_env`` fixture of
conftest.py; ``run_launch`` / ``read_metrics`` in helpers.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import read_metrics, restore_checkpoint, run_launch

TRAIN_FIELDS = ("loss", "learning_rate", "grad_norm", "target_tokens_per_s", "padded_tokens_per_s",
                "packing_efficiency", "step_time_s", "tflops_per_device", "mfu", "truncated_examples")


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

    # Re-running in the same workdir resumes from the latest checkpoint (training further changes the schedule's
    # end: named in train.resume_overrides).
    proc = run_launch(launch_env, workdir, "--config.train.num_steps=6", "--config.train.log_every=1",
                      "--config.train.eval_every=0", "--config.train.checkpoint_every=0",
                      "--config.train.resume_overrides=train.num_steps")
    assert f"resumed from {ckpts}/4" in proc.stdout
    assert [r["step"] for r in read_metrics(workdir)][3:] == [5, 6]
    assert (ckpts / "6").is_dir()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(launch_env, tmp_path):
    workdir = tmp_path / "nan"
    # lr 0 for the first update (warmup), then an absurd rate: the loss of step 3 is non-finite.
    proc = run_launch(launch_env, workdir, "--config.optimizer.learning_rate=1e32", "--config.optimizer.warmup_steps=3",
                      "--config.train.num_steps=8", "--config.train.checkpoint_every=1",
                      "--config.train.log_every=1", "--config.train.eval_every=0", expect=1)
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


def test_profile_steps_trace_the_steps_after_the_first(launch_env, tmp_path):
    """``train.profile_steps=N``: a jax.profiler trace of steps 2..N+1 (step 1 compiles) in WORKDIR/profile/train."""
    workdir = tmp_path / "run"
    run_launch(launch_env, workdir, "--config.train.num_steps=3", "--config.train.profile_steps=1",
               "--config.train.eval_every=0", "--config.train.checkpoint_every=0")
    traces = list((workdir / "profile" / "train").rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0, sorted((workdir / "profile").rglob("*"))


def test_profile_hook_starts_after_the_first_step_and_stops_after_n():
    from types import SimpleNamespace

    from alert_jax.train.loop import ProfileHook

    events = []
    hook = ProfileHook(2, "unused")
    hook.trace = SimpleNamespace(start=lambda state: events.append(("start", state)),
                                 stop=lambda state=None: events.append(("stop", state)))
    trainer = SimpleNamespace(start_step=10, run=SimpleNamespace(state="S"))
    for step in range(11, 16):
        hook(trainer, step, last=step == 15)
    # started after step 11 (the compile), stopped once steps 12 and 13 ran; later calls only repeat the no-op stop
    assert events[:2] == [("start", "S"), ("stop", "S")] and len(events) >= 2
    off = ProfileHook(0, "unused")
    off.trace = SimpleNamespace(start=lambda state: events.append("never"), stop=lambda state=None: None)
    off(trainer, 11, last=False)
    assert "never" not in events
