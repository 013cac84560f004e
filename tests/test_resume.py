"""Resume is exact; a SIGKILLed run resumes from its last checkpoint; SIGTERM checkpoints the current step; a damaged
newest step is set aside and the run continues from the step before it, as if never interrupted.

Runs ``launch/train.py`` in subprocesses (the shared tokenizer / compilation cache: the ``launch_env`` fixture of
conftest.py; ``launch_cmd`` / ``run_launch`` / ``read_metrics``: helpers.py).
"""

from __future__ import annotations

import signal

import jax
import numpy as np
import pytest
from helpers import (
    array_data_files,
    flip_byte,
    read_metrics,
    restore_checkpoint,
    run_launch,
    start_launch,
    truncate_file,
    wait_for,
)

COMMON = ("--config.train.log_every=1", "--config.train.eval_every=0", "--config.model.dropout=0.1")


def _steps(ckpts) -> list[int]:
    return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []


def _params(path) -> list[np.ndarray]:
    model, _ = restore_checkpoint(path)
    from flax import nnx

    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


@pytest.fixture(scope="module")
def straight(launch_env, tmp_path_factory):
    """An uninterrupted 6-step run (dropout on, so the data and dropout streams must resume exactly too)."""
    workdir = tmp_path_factory.mktemp("straight")
    run_launch(launch_env, workdir, "--config.train.num_steps=6", "--config.train.checkpoint_every=3", *COMMON)
    return workdir


def _assert_same_run(a_dir, b_dir) -> None:
    a = {r["step"]: r["loss"] for r in read_metrics(a_dir)}
    b = {r["step"]: r["loss"] for r in read_metrics(b_dir)}
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]  # one row per step
    assert [a[s] for s in range(1, 7)] == [b[s] for s in range(1, 7)]  # bitwise (same program, same devices)
    for x, y in zip(_params(a_dir / "checkpoints" / "6"), _params(b_dir / "checkpoints" / "6")):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_stop_and_resume_is_exact(launch_env, tmp_path, straight):
    split = tmp_path / "split"
    proc = run_launch(launch_env, split, "--config.train.num_steps=6", "--config.train.checkpoint_every=3",
                      "--config.train.stop_at_step=3", *COMMON, expect=75)
    assert "stopped at step 3 (train.stop_at_step)" in proc.stderr
    assert _steps(split / "checkpoints") == [3]
    proc = run_launch(launch_env, split, "--config.train.num_steps=6", "--config.train.checkpoint_every=3", *COMMON)
    assert "resumed from" in proc.stdout and "/checkpoints/3" in proc.stdout
    _assert_same_run(straight, split)


@pytest.mark.parametrize("damage", [flip_byte, pytest.param(truncate_file, marks=pytest.mark.slow)],
                         ids=["flipped_byte", "truncated"])
def test_damaged_newest_step_falls_back_to_the_previous_one(launch_env, tmp_path, straight, damage):
    workdir = tmp_path / "damaged"
    ckpts = workdir / "checkpoints"
    run_launch(launch_env, workdir, "--config.train.num_steps=6", "--config.train.checkpoint_every=2",
               "--config.train.stop_at_step=4", *COMMON, expect=75)
    assert _steps(ckpts) == [2, 4]
    damage(array_data_files(ckpts / "4")[0])
    proc = run_launch(launch_env, workdir, "--config.train.num_steps=6", "--config.train.checkpoint_every=2", *COMMON)
    out = proc.stdout + proc.stderr
    assert "checkpoint step 4" in out and "damaged" in out, out[-3000:]  # named, with where it went
    assert f"resumed from {ckpts}/2" in proc.stdout
    assert (ckpts / "damaged" / "4").is_dir()  # kept for inspection
    assert _steps(ckpts) == [2, 4, 6]  # step 4 saved again by the resumed run
    _assert_same_run(straight, workdir)


def test_no_intact_checkpoint_is_one_line_and_the_early_stop_code(launch_env, tmp_path):
    workdir = tmp_path / "ruined"
    ckpts = workdir / "checkpoints"
    run_launch(launch_env, workdir, "--config.train.num_steps=4", "--config.train.checkpoint_every=2",
               "--config.train.stop_at_step=2", *COMMON, expect=75)
    flip_byte(array_data_files(ckpts / "2")[0])
    proc = run_launch(launch_env, workdir, "--config.train.num_steps=4", "--config.train.checkpoint_every=2", *COMMON,
                      expect=75)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train: no checkpoint in ") and "damaged" in last, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert _steps(ckpts) == [] and (ckpts / "damaged" / "2").is_dir()


@pytest.mark.slow
def test_sigkill_resumes_from_last_checkpoint(launch_env, tmp_path):
    workdir = tmp_path / "killed"
    ckpts = workdir / "checkpoints"
    proc = start_launch(launch_env, workdir, "--config.train.num_steps=100000", "--config.train.checkpoint_every=2",
                        *COMMON)
    wait_for(lambda: any(s >= 4 for s in _steps(ckpts)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    last = max(_steps(ckpts))
    logged = max(r["step"] for r in read_metrics(workdir))
    assert logged >= last
    proc = run_launch(launch_env, workdir, f"--config.train.num_steps={last + 2}",
                      "--config.train.checkpoint_every=2", "--config.train.resume_overrides=train.num_steps", *COMMON)
    assert f"resumed from {ckpts}/{last}" in proc.stdout
    steps_after = [r["step"] for r in read_metrics(workdir)]
    # the resumed run continues at last + 1: at most the steps after the last checkpoint were lost (and redone),
    # and the rows the killed run logged after its last checkpoint are gone: one row per step
    assert steps_after == list(range(1, last + 3))
    assert last + 2 in _steps(ckpts)


def test_sigterm_saves_current_step(launch_env, tmp_path):
    workdir = tmp_path / "terminated"
    proc = start_launch(launch_env, workdir, "--config.train.num_steps=100000", "--config.train.checkpoint_every=0",
                  *COMMON)
    wait_for(lambda: (workdir / "metrics.jsonl").is_file() and any(
        r["step"] >= 2 for r in read_metrics(workdir)), proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 75, out[-3000:]  # stopped early, checkpoint saved: rerun to continue
    assert "(SIGTERM); checkpoint saved" in out, out[-3000:]
    step = int(out.split("train: stopped at step ")[1].split()[0])
    assert step >= 2
    assert _steps(workdir / "checkpoints") == [step]
    assert max(r["step"] for r in read_metrics(workdir)) <= step
    from alert_jax.io import checkpoint

    assert checkpoint.locate(workdir) == (workdir / "checkpoints", step)

