"""Resume is exact; a SIGKILLed run resumes from its last checkpoint; SIGTERM checkpoints the current step.

Runs ``launch/train.py`` in subprocesses (the shared tokenizer / compilation cache: the ``launch_env`` fixture of
conftest.py; ``launch_cmd`` / ``run_launch`` / ``read_metrics``: helpers.py).
"""

from __future__ import annotations

import signal
import subprocess
import time

import jax
import numpy as np
import pytest
from helpers import launch_cmd, read_metrics, restore_checkpoint, run_launch

COMMON = ("--config.train.log_every=1", "--config.train.eval_every=0")


def _steps(ckpts) -> list[int]:
    return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []


def _params(path) -> list[np.ndarray]:
    model, _ = restore_checkpoint(path)
    from flax import nnx

    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


@pytest.mark.slow
def test_stop_and_resume_is_exact(launch_env, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_launch(launch_env, straight, "--config.train.num_steps=6", "--config.train.checkpoint_every=3", *COMMON,
               "--config.model.dropout=0.1")
    proc = run_launch(launch_env, split, "--config.train.num_steps=6", "--config.train.checkpoint_every=3",
                      "--config.train.stop_at_step=3", *COMMON, "--config.model.dropout=0.1")
    assert "stopped at step 3" in proc.stdout
    assert _steps(split / "checkpoints") == [3]
    proc = run_launch(launch_env, split, "--config.train.num_steps=6", "--config.train.checkpoint_every=3", *COMMON,
                      "--config.model.dropout=0.1")
    assert "resumed from" in proc.stdout and "/checkpoints/3" in proc.stdout

    a = {r["step"]: r["loss"] for r in read_metrics(straight)}
    b = {r["step"]: r["loss"] for r in read_metrics(split)}
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    assert [a[s] for s in range(1, 7)] == [b[s] for s in range(1, 7)]  # bitwise (same program, same devices)
    for x, y in zip(_params(straight / "checkpoints" / "6"), _params(split / "checkpoints" / "6")):
        np.testing.assert_array_equal(x, y)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> None:
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended early (rc {proc.returncode}): {proc.stdout.read()[-3000:]}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.2)


def _start(launch_env, workdir, *overrides) -> subprocess.Popen:
    return subprocess.Popen(launch_cmd(launch_env, workdir, *overrides), env=launch_env["env"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigkill_resumes_from_last_checkpoint(launch_env, tmp_path):
    workdir = tmp_path / "killed"
    ckpts = workdir / "checkpoints"
    proc = _start(launch_env, workdir, "--config.train.num_steps=100000", "--config.train.checkpoint_every=2", *COMMON)
    _wait_for(lambda: any(s >= 4 for s in _steps(ckpts)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    last = max(_steps(ckpts))
    logged = max(r["step"] for r in read_metrics(workdir))
    assert logged >= last
    proc = run_launch(launch_env, workdir, f"--config.train.num_steps={last + 2}",
                      "--config.train.checkpoint_every=2", *COMMON)
    assert f"resumed from {ckpts}/{last}" in proc.stdout
    steps_after = [r["step"] for r in read_metrics(workdir)]
    # the resumed run continues at last + 1: at most the steps after the last checkpoint were lost (and redone)
    assert steps_after[-2:] == [last + 1, last + 2]
    assert last + 2 in _steps(ckpts)


def test_sigterm_saves_current_step(launch_env, tmp_path):
    workdir = tmp_path / "terminated"
    proc = _start(launch_env, workdir, "--config.train.num_steps=100000", "--config.train.checkpoint_every=0",
                  *COMMON)
    _wait_for(lambda: (workdir / "metrics.jsonl").is_file() and any(
        r["step"] >= 2 for r in read_metrics(workdir)), proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "stopped by SIGTERM at step" in out, out[-3000:]
    step = int(out.split("stopped by SIGTERM at step ")[1].split()[0])
    assert step >= 2
    assert _steps(workdir / "checkpoints") == [step]
    assert max(r["step"] for r in read_metrics(workdir)) <= step
    from alert_jax.io import checkpoint

    assert checkpoint.locate(workdir) == (workdir / "checkpoints", step)

