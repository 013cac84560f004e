"""Checkpoint integrity (io/checkpoint.py): every saved step is sealed with ``integrity.json``; a step whose files
were damaged (a flipped byte, a truncated or deleted file) is detected before it is restored, named in one log line,
moved to ``checkpoints/damaged/`` and the newest good step is restored instead -- with exactly its values and its
data-iterator position.

The saved run: steps 10, 20 and 30 of a tiny AdamW TrainState (different weights per step) and a grain iterator
that has consumed ``step`` elements, saved asynchronously (the training default) and closed, copied fresh into every
test. Array files are found by listing the step folder (OCDBT data files in ``d/`` folders).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import types

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from helpers import (
    array_data_files,
    flip_byte,
    model_config,
    random_params,
    truncate_file,
)

from alert_jax.io import checkpoint, integrity, orbax_noise
from alert_jax.models import opt as opt_model
from alert_jax.parallel.sharding import make_mesh
from alert_jax.train import state as state_lib

STEPS = (10, 20, 30)
LOGGER = "alert_jax.io.checkpoint"


def _iterator() -> grain.DatasetIterator:
    """A grain iterator over 0, 1, 2, ... (its position is what a checkpoint's ``data`` item holds)."""
    return iter(grain.MapDataset.range(1000).to_iter_dataset())


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    parts, _ = opt_model.split_model(opt_model.abstract_model(model_config()))
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    tx = optax.adamw(1e-3)
    shardings = state_lib.state_shardings(parts, tx, mesh)
    root = tmp_path_factory.mktemp("integrity") / "checkpoints"
    cfg = ml_collections.ConfigDict({"model": {"size": "tiny"}})
    ckpt = checkpoint.Checkpointer(root, keep=len(STEPS), keep_best=False)  # async, as in training
    it = _iterator()
    leaves = {}
    for k, step in enumerate(STEPS):
        state = state_lib.create_train_state(random_params(parts, seed=k), tx, shardings, seed=k)
        state = state.replace(step=jnp.asarray(step, jnp.int32))
        while next(it) < step - 1:  # the iterator has consumed `step` elements
            pass
        ckpt.save(step, state, cfg, it)
        leaves[step] = [np.asarray(x) for x in jax.tree.leaves(state)]
    ckpt.close()
    return {"root": root, "leaves": leaves, "abstract": state_lib.abstract_state(parts, tx, shardings),
            "parts": parts, "shardings": state_lib.state_shardings(parts, optax.sgd(0.1), mesh)}


@pytest.fixture
def run(saved, tmp_path) -> tuple:
    """A private copy of the saved checkpoints folder and a Checkpointer on it."""
    root = tmp_path / "checkpoints"
    shutil.copytree(saved["root"], root)
    return root, checkpoint.Checkpointer(root, keep=len(STEPS), keep_best=False)


def _assert_state(state, want: list[np.ndarray]) -> None:
    got = [np.asarray(x) for x in jax.tree.leaves(state)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and np.array_equal(g, w)


async def _read_array_index_and_device_put() -> None:
    """Named like orbax's per-array read coroutine (orbax/checkpoint/_src/serialization/serialization.py)."""


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def _flip(path):
    flip_byte(path)
    return "crc32"


def _truncate(path):
    truncate_file(path)
    return "bytes, sealed with"


def _delete(path):
    path.unlink()
    return "is missing"


@pytest.mark.parametrize("damage", [_flip, _truncate, _delete], ids=["flipped_byte", "truncated", "deleted"])
def test_damaged_newest_step_is_named_set_aside_and_the_previous_step_restored(saved, run, caplog, damage):
    root, ckpt = run
    victim = array_data_files(root / "30")[0]  # the largest array data file of the newest step
    rel = victim.relative_to(root / "30").as_posix()
    what = damage(victim)
    it = _iterator()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        step, state, cfg = ckpt.restore_newest_good(saved["abstract"], it)
    assert step == 20 and cfg.model.size == "tiny"
    _assert_state(state, saved["leaves"][20])
    assert next(it) == 20  # the data position of step 20, not of step 30
    lines = _warnings(caplog)
    assert len(lines) == 1, lines  # one line, naming the step, the file and what differs
    assert "step 30" in lines[0] and rel in lines[0] and what in lines[0] and "damaged/30" in lines[0]
    assert not (root / "30").exists() and (root / "damaged" / "30" / "state").is_dir()  # kept for inspection
    assert ckpt.all_steps() == [10, 20] and ckpt.latest_step() == 20
    assert checkpoint.locate(root) == (root, 20)  # evaluation's ckpt: loading no longer picks it
    assert checkpoint.load_config(root).model.size == "tiny"
    fresh = checkpoint.Checkpointer(root, keep=len(STEPS), keep_best=False)
    assert fresh.all_steps() == [10, 20]
    fresh.close()
    ckpt.close()


def test_clean_folder_restores_the_newest_step_and_every_step_is_sealed(saved, run, caplog):
    root, ckpt = run
    for step in STEPS:
        manifest = json.loads((root / str(step) / integrity.INTEGRITY_FILE).read_text())
        assert manifest["algorithm"] == integrity.DIGEST_ALGORITHM
        assert any(rel.startswith("state/") for rel in manifest["files"]) and "config/metadata" in manifest["files"]
        assert ckpt.verify(step).ok
    it = _iterator()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        step, state, _ = ckpt.restore_newest_good(saved["abstract"], it)
    assert step == 30 and next(it) == 30 and not _warnings(caplog)
    _assert_state(state, saved["leaves"][30])
    assert not (root / "damaged").exists()
    ckpt.close()


def test_all_steps_damaged_returns_none(saved, run, caplog):
    root, ckpt = run
    for step in STEPS:
        flip_byte(array_data_files(root / str(step))[0])
    it = _iterator()
    next(it)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert ckpt.restore_newest_good(saved["abstract"], it) is None
    assert next(it) == 1  # the iterator is left where it was
    assert sorted(p.name for p in (root / "damaged").iterdir()) == ["10", "20", "30"]
    named = [line.split(" is damaged")[0] for line in _warnings(caplog)]
    assert named == [f"checkpoint step {s}" for s in (30, 20, 10)]
    assert ckpt.all_steps() == []
    with pytest.raises(checkpoint.CheckpointNotFoundError, match=r"3 damaged step\(s\) set aside"):
        checkpoint.locate(root)
    ckpt.close()


def test_unverifiable_step_that_fails_to_restore_is_set_aside(saved, run, caplog):
    """A step without integrity.json (an older version's) whose file was truncated: its restore raises in tensorstore;
    it is set aside (one line, the exception's first line) once the previous step restores into the same target."""
    root, ckpt = run
    (root / "30" / integrity.INTEGRITY_FILE).unlink()
    assert ckpt.verify(30).status == integrity.UNSEALED
    truncate_file(array_data_files(root / "30")[0], 0.1)
    unraisable = []
    previous, sys.unraisablehook = sys.unraisablehook, unraisable.append
    orbax_noise.install()  # wraps the hook in place now, as it wraps the interpreter's in a launcher
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            step, state, _ = ckpt.restore_newest_good(saved["abstract"])
        # orbax abandons its other per-array read coroutines; when collected (at some later moment) each would
        # print two tracebacks through sys.unraisablehook: those, and only those, are dropped
        reader = _read_array_index_and_device_put()
        sys.unraisablehook(types.SimpleNamespace(object=reader, exc_type=Exception, exc_value=Exception("x"),
                                                 exc_traceback=None, err_msg=None))
        reader.close()
        other = types.SimpleNamespace(object=None, exc_type=RuntimeError, exc_value=RuntimeError("y"),
                                      exc_traceback=None, err_msg=None)
        sys.unraisablehook(other)
        # tensorstore completing a write on orbax's closed event loop: dropped as well
        sys.unraisablehook(types.SimpleNamespace(object=None, exc_type=RuntimeError,
                                                 exc_value=RuntimeError("Event loop is closed"),
                                                 exc_traceback=None, err_msg=None))
    finally:
        sys.unraisablehook = previous
    assert [u for u in unraisable if u.exc_type is RuntimeError] == [other]  # only that one passed on
    assert not [u for u in unraisable if getattr(u.object, "__name__", "") == "_read_array_index_and_device_put"]
    lines = _warnings(caplog)
    assert step == 20
    _assert_state(state, saved["leaves"][20])
    assert len(lines) == 1 and "step 30" in lines[0] and "cannot be verified" in lines[0]
    assert "restore failed" in lines[0] and "OUT_OF_RANGE" in lines[0] and "\n" not in lines[0]
    assert (root / "damaged" / "30").is_dir()
    ckpt.close()


def test_unverifiable_good_step_restores_with_a_warning(saved, run, caplog):
    root, ckpt = run
    (root / "30" / integrity.INTEGRITY_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        step, state, _ = ckpt.restore_newest_good(saved["abstract"])
    assert step == 30
    _assert_state(state, saved["leaves"][30])
    lines = _warnings(caplog)
    assert len(lines) == 1 and "step 30" in lines[0] and "unverified" in lines[0]
    ckpt.close()


def test_verified_step_that_does_not_match_the_target_is_an_error_not_damage(saved, run):
    """Restoring into another optimizer's state fails on a step whose files verify: a mismatch, so nothing is moved."""
    root, ckpt = run
    sgd = state_lib.abstract_state(saved["parts"], optax.sgd(0.1), saved["shardings"])
    with pytest.raises(checkpoint.CheckpointRestoreError, match=r"step 30 .* matches its integrity.json but"):
        ckpt.restore_newest_good(sgd)
    assert ckpt.all_steps() == list(STEPS) and not (root / "damaged").exists()
    ckpt.close()


def test_restore_and_params_loading_refuse_a_damaged_step(saved, run):
    root, ckpt = run
    flip_byte(array_data_files(root / "30")[0])
    assert ckpt.verify(30).damaged and ckpt.verify(20).ok
    with pytest.raises(integrity.CheckpointDamagedError, match=r"checkpoint step 30 .* is damaged: file state/"):
        ckpt.restore(30, saved["abstract"])
    _assert_state(ckpt.restore(20, saved["abstract"])[0], saved["leaves"][20])
    ckpt.close()
    params = saved["abstract"].params
    with pytest.raises(integrity.CheckpointDamagedError, match="step 30"):
        checkpoint.restore_params(root, 30, params)
    assert (root / "30").is_dir()  # plain restores never move anything
    (root / "30" / integrity.INTEGRITY_FILE).write_text("{not json")
    assert "integrity.json cannot be read" in integrity.verify_step(root / "30").reason


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_a_step_is_sealed_as_soon_as_its_save_is_complete(tmp_path, async_save):
    """Synchronous: when ``save`` returns. Asynchronous: inside orbax's save thread, before the step folder appears
    under its final name -- so without any later ``wait()`` / ``close()`` of ours."""
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints", async_save=async_save)
    ckpt.save(1, {"w": jnp.arange(8.0)}, ml_collections.ConfigDict({"model": {"size": "tiny"}}))
    ckpt.manager.wait_until_finished()  # orbax's own wait: the step is final
    assert (tmp_path / "checkpoints" / "1" / integrity.INTEGRITY_FILE).is_file() and ckpt.verify(1).ok
    ckpt.close()
