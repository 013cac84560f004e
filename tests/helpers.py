"""Plain functions and constants shared by several test modules (pytest fixtures live in conftest.py).

* ``REPO_ROOT``, ``SUITE_DEVICES`` and ``subprocess_env``: the checkout root, the fake CPU device count conftest gives
  the test process, and the one way tests build the environment of a subprocess;
* ``shared_data_dir`` / ``real_task_files``: the read-only reference data (``$ALERT_JAX_DATA``) and its NIV2 task
  files, for parametrizing over them at collection time (fixtures that skip without the data are in conftest.py);
* ``launch_cmd`` / ``run_launch`` / ``read_metrics``: ``launch/train.py`` on the tiny config in a subprocess (with the
  ``launch_env`` fixture of conftest.py) and its ``metrics.jsonl``;
* ``FAST_COMPILE`` / ``train_cfg`` / ``model_config`` / ``random_params`` / ``packed_batch``: the tiny train-step
  setting of test_train_step.py, test_sharded_train.py and test_multihost.py;
* ``restore_checkpoint``: a saved run's model on one device;
* ``small_bpe``: a byte-level BPE tokenizer with OPT's special ids, what a Hugging Face export needs.

conftest.py imports this module before jax is imported, so nothing here imports jax (or alert_jax) at module level.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import ml_collections

    from alert_jax.models import opt as opt_model

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SUITE_DEVICES = 8  # fake CPU devices of the test process (conftest.py), so sharding tests can build meshes
EVAL_MODEL_MAX_POS = 384  # context of conftest.py's ``model_dir`` tiny evaluation model


# ---------------------------------------------------------------------------------------------------------------------
# Reference data
# ---------------------------------------------------------------------------------------------------------------------


def shared_data_dir() -> pathlib.Path:
    """Where the read-only reference data lives (``$ALERT_JAX_DATA`` or ``../shared/data``)."""
    return pathlib.Path(os.environ.get("ALERT_JAX_DATA", REPO_ROOT.parent / "shared" / "data"))


def real_task_files() -> list[str]:
    """File names of the real NIV2 task files in the shared data (none when it is absent)."""
    folder = shared_data_dir() / "niv2" / "tasks"
    return sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------------------------------
# Subprocesses
# ---------------------------------------------------------------------------------------------------------------------


def subprocess_env(*, devices: int | None = None, pythonpath: bool = False, **overrides: str | None) -> dict[str, str]:
    """Environment for a subprocess: a copy of ``os.environ`` with

    * ``XLA_FLAGS``: removed when ``devices`` is None (one CPU device), else
      ``--xla_force_host_platform_device_count=<devices>`` (``SUITE_DEVICES``: the same fake devices as the test
      process);
    * ``pythonpath=True``: the checkout root put first on ``PYTHONPATH`` (any existing entries follow it);
    * ``overrides`` applied last: a string sets the variable (``XLA_FLAGS`` among them), None removes it.
    """
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if devices is not None:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


# ---------------------------------------------------------------------------------------------------------------------
# launch/train.py in a subprocess (``launch_env``: the session fixture of conftest.py)
# ---------------------------------------------------------------------------------------------------------------------


def launch_cmd(launch_env: dict, workdir: pathlib.Path, *overrides: str, mode: str = "cot") -> list[str]:
    """The ``launch/train.py`` command line: tiny config, the session's tokenizer, a small synthetic corpus."""
    return [sys.executable, str(REPO_ROOT / "launch" / "train.py"),
            f"--config={REPO_ROOT}/configs/finetune.py:tiny,{mode}", f"--workdir={workdir}",
            f"--config.tokenizer={launch_env['tokenizer']}", "--config.data.synthetic_train_examples=400",
            "--config.data.max_eval_examples=32", *overrides]


def run_launch(launch_env: dict, workdir: pathlib.Path, *overrides: str, timeout: int = 600,
               expect: int | None = 0) -> subprocess.CompletedProcess:
    """Runs ``launch_cmd`` to the end and asserts its exit status is ``expect`` (None: any), showing the output's
    tail if not."""
    proc = subprocess.run(launch_cmd(launch_env, workdir, *overrides), env=launch_env["env"], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT)
    if expect is not None:
        assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Polls ``predicate()`` until true; fails (killing ``proc``) when ``proc`` ends first or after ``timeout``."""
    start = time.time()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"run ended early (rc {proc.returncode}): {proc.stdout.read()[-3000:]}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.2)


def start_launch(launch_env: dict, workdir: pathlib.Path, *overrides: str) -> subprocess.Popen:
    """Starts ``launch_cmd`` in the background, stdout and stderr merged into ``proc.stdout`` (text)."""
    return subprocess.Popen(launch_cmd(launch_env, workdir, *overrides), env=launch_env["env"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def read_metrics(workdir: pathlib.Path, kind: str = "train") -> list[dict]:
    """The records of one ``kind`` (train / eval) in ``workdir/metrics.jsonl``, in file order."""
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


# ---------------------------------------------------------------------------------------------------------------------
# Tiny train-step setting
# ---------------------------------------------------------------------------------------------------------------------

VOCAB = 512
FAST_COMPILE = {"xla_backend_optimization_level": 0}  # halves XLA:CPU compile time; same math


def train_cfg(**optimizer) -> ml_collections.ConfigDict:
    """The optimizer settings (these defaults updated by ``optimizer``) and a 10-step run."""
    import ml_collections

    o = dict(learning_rate=1e-3, warmup_steps=2, end_lr_fraction=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
             weight_decay_mask="matrices", clip_norm=1.0, moment_dtype="float32")
    o.update(optimizer)
    return ml_collections.ConfigDict({"optimizer": o, "train": {"num_steps": 10}})


def model_config(**kw):
    """The tiny model with 8 heads, ``VOCAB`` tokens, 64 positions and no dropout (unless ``kw`` says otherwise)."""
    from alert_jax.models.sizes import get_model_config

    base = dict(num_heads=8, vocab_size=VOCAB, max_position_embeddings=64, dropout=0.0, attention_dropout=0.0)
    base.update(kw)
    return get_model_config("tiny", **base)


def random_params(parts: opt_model.ModelParts, seed: int = 0) -> dict:
    """Random weights straight from numpy (no init compile): N(0, 0.02) matrices, LN scales near 1, small biases."""
    import jax

    rng = np.random.default_rng(seed)

    def init(path, s):
        name = str(path[-1].key)
        if name.endswith("_scale"):
            return (1.0 + 0.1 * rng.standard_normal(s.shape)).astype(np.float32)
        scale = 0.02 if name.endswith(("kernel", "embedding")) else 0.01
        return (scale * rng.standard_normal(s.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(init, parts.abstract_params())


def packed_batch(rows: int, seq_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    """First-fit packed rows of random examples with very uneven target lengths (some rows have few targets)."""
    from alert_jax.data.packing import build_example, pack_examples

    rng = np.random.default_rng(seed)
    examples = []
    for i in range(rows * 3):
        prompt = rng.integers(3, VOCAB, rng.integers(1, seq_len // 2))
        target = rng.integers(3, VOCAB, 1 + (i % 7) * (i % 3))
        examples.append(build_example(prompt, target, bos_id=2, eos_id=2, seq_len=seq_len))
    packed = pack_examples(examples, seq_len, pad_id=1)
    arrays = {k: v[:rows] for k, v in packed.arrays.items()}
    assert arrays["inputs"].shape == (rows, seq_len)
    return arrays


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------


def restore_checkpoint(path: str | os.PathLike) -> tuple[Any, Any]:
    """``(model, saved app config)`` of the alert-jax checkpoint at ``path`` (workdir, checkpoints folder or step
    folder) on one device, with the saved run's own runtime settings: ``io.loader.load_model`` of ``ckpt:path``."""
    import jax

    from alert_jax.io import checkpoint, loader
    from alert_jax.models.sizes import model_config_from
    from alert_jax.parallel.sharding import make_mesh

    root, step = checkpoint.locate(path)
    cfg = checkpoint.load_config(root / str(step))
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    return loader.load_model(f"ckpt:{path}", model_config_from(cfg), mesh).model, cfg


# ---------------------------------------------------------------------------------------------------------------------
# Damaging checkpoint files (test_checkpoint_integrity.py)
# ---------------------------------------------------------------------------------------------------------------------


def array_data_files(step_dir: str | os.PathLike) -> list[pathlib.Path]:
    """The array data files of a saved step, largest first: the OCDBT data files (in ``d/`` folders, e.g.
    ``<step>/state/ocdbt.process_0/d/``) under ``<step>/state``, found by listing the folder."""
    state = pathlib.Path(step_dir) / "state"
    files = [p for p in state.rglob("*") if p.is_file() and p.parent.name == "d"]
    return sorted(files, key=lambda p: (-p.stat().st_size, str(p)))


def flip_byte(path: str | os.PathLike, offset: int | None = None) -> int:
    """Inverts every bit of one byte of ``path`` (default: the middle one), in place; returns its offset."""
    p = pathlib.Path(path)
    data = bytearray(p.read_bytes())
    at = len(data) // 2 if offset is None else int(offset)
    data[at] ^= 0xFF
    p.write_bytes(bytes(data))
    return at


def truncate_file(path: str | os.PathLike, fraction: float = 0.5) -> int:
    """Cuts ``path`` to ``fraction`` of its size, in place; returns the new size."""
    p = pathlib.Path(path)
    size = int(p.stat().st_size * fraction)
    with open(p, "r+b") as f:
        f.truncate(size)
    return size


def small_bpe(vocab_size: int):
    """A byte-level BPE ``BPETokenizer`` of ``vocab_size`` ids trained on two sentences, with OPT's special ids
    (<s> 0, <pad> 1, </s> 2, <unk> 3)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from alert_jax.io import tokenizers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["the cat sat on the mat", "So the answer is 7."] * 20, trainer)
    return tokenizers.BPETokenizer(backend)
