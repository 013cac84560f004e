"""Robustness probes of issue 15 that pass and must keep passing, one test each:

1. a run SIGKILLed three times (after a checkpoint, between checkpoints, while one is written) and rerun each time
   ends bitwise equal to an uninterrupted run, one ``metrics.jsonl`` row per step (slow);
2. a SIGKILL while orbax writes a checkpoint leaves a complete sealed step or only orbax's temporary folder, never a
   step that resumes to other numbers;
3. a malformed task file given to ``launch/evaluate.py`` is one stderr line naming the file, exit 2, no workdir;
4. a task name with a folder part or ``..`` never reads a file outside ``data.niv2_dir`` (nor does a download write
   outside its cache folder);
5. pickled weights (``hf:`` ``pytorch_model.bin``, ``metaseq:`` files) are refused, never executed;
6. a disk that fills up during a checkpoint write (simulated with ``RLIMIT_FSIZE``) fails the run with one line and
   exit 74 (``exits.WRITE_FAILED``) and leaves only steps that verify; the rerun resumes from the last good step
   and ends as if never interrupted.

Training runs are ``launch/train.py`` subprocesses on the tiny config (``launch_env`` of conftest.py, ``launch_cmd`` /
``run_launch`` / ``read_metrics`` of helpers.py), compared with one uninterrupted reference run of the same flags.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import pathlib
import pickle
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import (
    REPO_ROOT,
    launch_cmd,
    model_config,
    read_metrics,
    restore_checkpoint,
    run_launch,
    start_launch,
)

from alert_jax.apps import exits
from alert_jax.io.integrity import verify_step

NUM_STEPS = 12
COMMON = ("--config.train.log_every=1", "--config.train.eval_every=0", "--config.model.dropout=0.1")
FLAGS = (f"--config.train.num_steps={NUM_STEPS}", "--config.train.checkpoint_every=2", *COMMON)
ORBAX_TMP = ".orbax-checkpoint-tmp"  # orbax writes a step into <step>.orbax-checkpoint-tmp[...], then renames it


# ---------------------------------------------------------------------------------------------------------------------
# Training runs: helpers and the uninterrupted reference
# ---------------------------------------------------------------------------------------------------------------------


def _steps(ckpts) -> list[int]:
    """The step folders of a checkpoints folder (orbax's temporary folders are not steps)."""
    return sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) if ckpts.is_dir() else []


def _tmp_folders(ckpts) -> list[pathlib.Path]:
    return sorted(p for p in ckpts.iterdir() if ORBAX_TMP in p.name) if ckpts.is_dir() else []


def _logged_steps(workdir) -> list[int]:
    """Steps of the train rows of ``metrics.jsonl`` while a run may be appending to it (a partial last line is
    skipped)."""
    try:
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    steps = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("kind") == "train":
            steps.append(int(row["step"]))
    return steps


def _params(step_dir) -> list[np.ndarray]:
    model, _ = restore_checkpoint(step_dir)
    from flax import nnx

    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def _assert_all_steps_verify(ckpts) -> None:
    """Every step folder left is complete and sealed: its files match its integrity.json (a step that would restore
    other numbers than were saved fails here)."""
    for step in _steps(ckpts):
        check = verify_step(ckpts / str(step))
        assert check.ok, f"step {step}: {check.status} {check.reason}"


def _assert_same_as_reference(reference, workdir) -> None:
    """One train row per step, every logged loss and the final params bitwise equal to the reference run's."""
    ref, got = read_metrics(reference), read_metrics(workdir)
    assert [r["step"] for r in got] == list(range(1, NUM_STEPS + 1))  # one row per step
    assert [r["loss"] for r in got] == [r["loss"] for r in ref]  # bitwise (same program, same device)
    final = str(NUM_STEPS)
    for x, y in zip(_params(reference / "checkpoints" / final), _params(workdir / "checkpoints" / final), strict=True):
        np.testing.assert_array_equal(x, y)


def _kill_when(proc: subprocess.Popen, predicate, what: str, timeout: float = 600) -> str:
    """Polls ``predicate()`` every 2 ms (a checkpoint of the tiny model takes ~0.1 s), SIGKILLs ``proc`` as soon as
    it holds and returns the run's output; fails when the run ends first."""
    start = time.time()
    while True:
        try:
            if predicate():
                break
        except OSError:  # a folder renamed or deleted under the listing: look again
            pass
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before {what}: {proc.stdout.read()[-3000:]}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == -signal.SIGKILL, f"the run ended on its own (rc {proc.returncode}) at {what}"
    return out


def _writing_step_after(ckpts, step: int) -> bool:
    """True while orbax writes array data of a step newer than ``step`` into its temporary folder."""
    for tmp in _tmp_folders(ckpts):
        if int(tmp.name.split(".", 1)[0]) > step and any(p.parent.name == "d" for p in tmp.rglob("*")):
            return True
    return False


@pytest.fixture(scope="module")
def reference(launch_env, tmp_path_factory):
    """An uninterrupted run with ``FLAGS`` (dropout on: the data and dropout streams must resume exactly too)."""
    workdir = tmp_path_factory.mktemp("reference")
    run_launch(launch_env, workdir, *FLAGS)
    assert [r["step"] for r in read_metrics(workdir)] == list(range(1, NUM_STEPS + 1))
    return workdir


# ---------------------------------------------------------------------------------------------------------------------
# 1. SIGKILL three times, bitwise resume
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_three_times_resumes_bitwise(launch_env, tmp_path, reference):
    workdir = tmp_path / "killed"
    ckpts = workdir / "checkpoints"

    def newest() -> int:
        return max(_steps(ckpts), default=0)

    kill_points = [
        ("right after a checkpoint", lambda prev: newest() > prev),
        ("between checkpoints, rows logged past the newest one",
         lambda prev: newest() > prev and max(_logged_steps(workdir), default=0) > newest()),
        ("while the next checkpoint is written",
         lambda prev: newest() > prev and _writing_step_after(ckpts, newest())),
    ]
    last = 0
    for what, point in kill_points:
        proc = start_launch(launch_env, workdir, *FLAGS)
        out = _kill_when(proc, lambda point=point, prev=last: point(prev), what)
        if last:
            assert f"resumed from {ckpts}/{last}" in out, out[-3000:]
        _assert_all_steps_verify(ckpts)
        assert last < newest() < NUM_STEPS, (what, last, _steps(ckpts))
        last = newest()
    proc = run_launch(launch_env, workdir, *FLAGS)
    assert f"resumed from {ckpts}/{last}" in proc.stdout
    _assert_same_as_reference(reference, workdir)


# ---------------------------------------------------------------------------------------------------------------------
# 2. SIGKILL during a checkpoint write
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_during_checkpoint_write_leaves_no_wrong_step(launch_env, tmp_path, reference):
    workdir = tmp_path / "killed_in_write"
    ckpts = workdir / "checkpoints"
    seen: list[str] = []

    def writing() -> bool:  # step >= 4 (step 2 is complete then) with array data in its temporary folder
        if _writing_step_after(ckpts, 3):
            seen.extend(p.name for p in _tmp_folders(ckpts))
            return True
        return False

    _kill_when(start_launch(launch_env, workdir, *FLAGS), writing, "a checkpoint write of step 4 or later")
    killed = int(seen[0].split(".", 1)[0])
    steps = _steps(ckpts)
    # the step being written is either complete (renamed and sealed) or only in orbax's temporary folder
    assert killed in steps or any(p.name.startswith(f"{killed}{ORBAX_TMP}") for p in _tmp_folders(ckpts)), seen
    _assert_all_steps_verify(ckpts)
    assert steps and max(steps) < NUM_STEPS
    proc = run_launch(launch_env, workdir, *FLAGS)
    assert f"resumed from {ckpts}/{max(steps)}" in proc.stdout
    assert not _tmp_folders(ckpts)  # the interrupted write is cleaned up when its step is saved again
    _assert_same_as_reference(reference, workdir)


# ---------------------------------------------------------------------------------------------------------------------
# 6. Disk full during a checkpoint write
# ---------------------------------------------------------------------------------------------------------------------

FILE_SIZE_LIMIT = 64 * 1024  # above every other file a resumed run writes, below the array data files of a step
# runs ``sys.argv[2:]`` with files limited to ``sys.argv[1]`` bytes (a wrapper process: no preexec_fn in a threaded
# test process); writes past the limit fail with EFBIG instead of killing the process with SIGXFSZ
_LIMITED = ("import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); n = int(sys.argv[1]); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); os.execv(sys.argv[2], sys.argv[2:])")


@pytest.fixture(scope="module")
def disk_full(launch_env, tmp_path_factory, reference):
    """A run that saved step 2, resumed with writes beyond ``FILE_SIZE_LIMIT`` bytes per file failing (EFBIG, as a
    full disk fails them with ENOSPC): ``(workdir, the limited run's CompletedProcess)``.

    Without root a full file system cannot be made here; ``RLIMIT_FSIZE`` (SIGXFSZ ignored) makes ``write`` fail the
    same way once a file outgrows the limit, which every checkpoint of the tiny model's arrays does (each step holds
    data files of 100 KiB and more) and no other file of the run does. The limited run uses its own copy of the
    compilation cache: jax writes cache entries in place, and a cut-off entry must not reach the shared cache."""
    root = tmp_path_factory.mktemp("disk_full")
    workdir = root / "run"
    run_launch(launch_env, workdir, *FLAGS, "--config.train.stop_at_step=2", expect=exits.STOPPED)
    assert _steps(workdir / "checkpoints") == [2]
    env = dict(launch_env["env"])
    cache = pathlib.Path(env["JAX_COMPILATION_CACHE_DIR"])
    env["JAX_COMPILATION_CACHE_DIR"] = str(root / "xla_cache")
    if cache.is_dir():
        shutil.copytree(cache, root / "xla_cache")
    cmd = [sys.executable, "-c", _LIMITED, str(FILE_SIZE_LIMIT), *launch_cmd(launch_env, workdir, *FLAGS)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)
    return workdir, proc


@pytest.mark.slow
def test_disk_full_during_checkpoint_then_resume(launch_env, disk_full, reference):
    workdir, proc = disk_full
    ckpts = workdir / "checkpoints"
    out = proc.stdout + proc.stderr
    assert "File too large" in proc.stderr, out[-3000:]  # the simulation hit: a checkpoint write failed
    assert f"resumed from {ckpts}/2" in proc.stdout and max(_logged_steps(workdir)) > 2, out[-3000:]
    assert proc.returncode == exits.WRITE_FAILED, out[-3000:]  # neither "done" nor "checkpoint saved"
    assert _steps(ckpts) == [2]  # no step beyond the last good one appeared
    _assert_all_steps_verify(ckpts)
    rerun = run_launch(launch_env, workdir, *FLAGS)
    assert f"resumed from {ckpts}/2" in rerun.stdout
    _assert_same_as_reference(reference, workdir)


def test_disk_full_is_one_readable_line(disk_full):
    _, proc = disk_full
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines and lines[-1].startswith("train: error: ") and "File too large" in lines[-1], lines[-3:]
    assert proc.returncode == exits.WRITE_FAILED, lines[-3:]


# ---------------------------------------------------------------------------------------------------------------------
# 3. Malformed task files through launch/evaluate.py (the reader's own checks: test_niv2.py)
# ---------------------------------------------------------------------------------------------------------------------


def _task(n: int = 3) -> dict:
    return {"Definition": ["Repeat the input."], "Positive Examples": [], "Negative Examples": [],
            "Instances": [{"id": f"i{k}", "input": f"word {k}", "output": [f"word {k}"]} for k in range(n)]}


def _evaluate(launch_env, niv2_dir, workdir, *flags) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "launch/evaluate.py", "--config=configs/evaluate.py:tiny", f"--workdir={workdir}",
           f"--config.data.niv2_dir={niv2_dir}", "--config.eval.templates=T1", *flags]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=launch_env["env"], capture_output=True, text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess, app: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == exits.BAD_INPUT, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"{app}: error: "), lines[0]
    return lines[0]


def _without_output(task: dict) -> dict:
    task["Instances"][1].pop("output")
    return task


@pytest.mark.parametrize("content,fragments", [
    (json.dumps(_task(), indent=1)[:150], ["invalid JSON at line"]),
    (json.dumps(_without_output(_task())), ["'Instances'", "[1]", "missing 'output'"]),
], ids=["bad_json", "missing_field"])
def test_malformed_task_file_in_evaluate_is_one_line(launch_env, tmp_path, content, fragments):
    folder = tmp_path / "tasks"
    folder.mkdir()
    path = folder / "task9001_probe.json"
    path.write_text(content)
    workdir = tmp_path / "eval"
    line = _one_error_line(_evaluate(launch_env, folder, workdir, "--config.eval.tasks=task9001_probe"), "evaluate")
    assert str(path) in line and all(f in line for f in fragments), line
    assert not workdir.exists()


# ---------------------------------------------------------------------------------------------------------------------
# 4. Path traversal in task names
# ---------------------------------------------------------------------------------------------------------------------

SECRET = "SECRET-7f3a9c-not-for-the-evaluation"


def _traversal_layout(tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """``(niv2_dir, the file just outside it)``: a valid task file ``secret.json`` beside the task folder."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "task9001_ok.json").write_text(json.dumps(_task()))
    secret = tmp_path / "secret.json"
    task = _task()
    task["Definition"] = [SECRET]
    task["Instances"][0]["input"] = SECRET
    secret.write_text(json.dumps(task))
    return folder, secret


@pytest.mark.parametrize("relative", [True, False], ids=["dotdot", "absolute"])
def test_task_name_outside_niv2_dir_is_refused_by_evaluate(launch_env, tmp_path, relative):
    folder, secret = _traversal_layout(tmp_path)
    name = "../secret" if relative else str(secret.with_suffix(""))
    workdir = tmp_path / "eval"
    # the registry lists the name, so it gets past task-name validation to the file lookup
    proc = _evaluate(launch_env, folder, workdir, f"--config.eval.tasks={name}",
                     f"--config.eval.registry=logical:{name}")
    line = _one_error_line(proc, "evaluate")
    assert name in line, line
    assert SECRET not in proc.stdout + proc.stderr
    assert not workdir.exists()


def test_task_names_never_open_files_outside_niv2_dir(tmp_path, monkeypatch):
    from alert_jax.data import niv2
    from alert_jax.eval import runner
    from configs import evaluate as eval_config

    folder, secret = _traversal_layout(tmp_path)
    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            opened.append(os.path.realpath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)  # pathlib's read_bytes / read_text
    for name in ("../secret", "../secret.json", "sub/../../secret", str(secret), str(secret.with_suffix(""))):
        with pytest.raises(ValueError, match="folder part"):
            niv2.load_task(name, folder)
        with pytest.raises(niv2.TaskNotFoundError):  # looked up by its last part, inside niv2_dir only
            niv2.task_path(name, folder)
        assert niv2.load_tasks([name], folder, missing="skip") == {}
    for name in ("../secret", str(secret.with_suffix(""))):
        cfg = eval_config.get_config("tiny")
        cfg.data.niv2_dir = str(folder)
        cfg.eval.registry = f"logical:{name}"
        cfg.eval.tasks = name
        with pytest.raises(runner.EvalConfigError, match="no task file"):
            runner.resolve_eval_tasks(cfg)
    assert niv2.load_task("task9001_ok", folder).instances  # the spy sees reads (control)
    assert os.path.realpath(folder / "task9001_ok.json") in opened
    assert os.path.realpath(secret) not in opened


def test_download_cannot_write_outside_its_cache(tmp_path):
    from alert_jax.data import niv2

    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "task9001_escape.json").write_text(json.dumps(_task()))
    cache = tmp_path / "cache" / "inner"
    names = ["../task9001_escape", "../../task9001_escape.json", f"{tmp_path}/task9001_escape"]
    assert niv2.download_tasks(names, cache, base_url=remote.as_uri()) == [cache / "task9001_escape.json"]
    assert [p.name for p in cache.parent.iterdir()] == ["inner"]  # nothing written beside (or above) the cache
    assert not (tmp_path / "task9001_escape.json").exists()
    # the package extracts no archives (tar / zip), so there is no member path to escape through


# ---------------------------------------------------------------------------------------------------------------------
# 5. Pickled weights are never executed
# ---------------------------------------------------------------------------------------------------------------------


class _TouchOnUnpickle:
    """Unpickles to ``pathlib.Path(marker).touch()``: proof that the pickle was executed."""

    def __init__(self, marker: pathlib.Path):
        self.marker = pathlib.Path(marker)

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _write_pickle(path, obj, fmt: str) -> None:
    if fmt == "torch":
        import torch

        torch.save(obj, path)  # the zip format of torch >= 1.6 (what pytorch_model.bin files are)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)  # a bare pickle


def _unpickle_unsafely(path, fmt: str) -> None:
    if fmt == "torch":
        import torch

        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            pickle.load(f)  # noqa: S301 - the point: this is what must never happen inside the package


def _one_device_mesh():
    from alert_jax.parallel.sharding import make_mesh

    return make_mesh((1, 1, 1), devices=jax.devices()[:1])


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_pickled_hf_weights_are_refused_not_run(tmp_path, fmt):
    from alert_jax.io import convert, loader
    from alert_jax.io.weight_files import CheckpointError

    cfg = model_config()
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(convert.hf_config_dict(cfg)))
    marker = tmp_path / "executed"
    weights = folder / "pytorch_model.bin"
    _write_pickle(weights, {"model.decoder.embed_tokens.weight": _TouchOnUnpickle(marker)}, fmt)
    with pytest.raises(CheckpointError) as err:
        loader.load_model(f"hf:{folder}", cfg, _one_device_mesh())
    assert str(weights) in str(err.value)
    assert not marker.exists()
    _unpickle_unsafely(weights, fmt)  # control: the payload is live
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_pickled_metaseq_checkpoint_is_refused_not_run(tmp_path, fmt):
    from alert_jax.io import loader
    from alert_jax.io.weight_files import CheckpointError

    marker = tmp_path / "executed"
    file = tmp_path / "checkpoint.pt"
    _write_pickle(file, {"model": {"decoder.embed_tokens.weight": _TouchOnUnpickle(marker)},
                         "args": _TouchOnUnpickle(marker)}, fmt)
    with pytest.raises(CheckpointError) as err:
        loader.load_model(f"metaseq:{file}", model_config(), _one_device_mesh())
    assert str(file) in str(err.value) and "trust_pickle" in str(err.value)
    assert not marker.exists()
    _unpickle_unsafely(file, fmt)
    assert marker.exists()
