"""What made a set of predictions, and whether a predictions file may be reused.

Every predictions record carries ``provenance`` = ``{checkpoint_path, checkpoint_step, task_digest, answer_options,
code_version}`` (``answer_options``: the options its prompts listed, None for none)
and ``scores.json``'s ``metadata`` holds ``checkpoint_path`` /
``checkpoint_step`` (resolved by ``io.loader.checkpoint_identity`` before any weights are read: for ``ckpt:`` the
checkpoints folder and the step restored), ``task_digests`` (sha256 of each task file's bytes), ``code_version``
(:func:`code_version`), ``versions`` (:func:`package_versions`), ``devices`` (:func:`device_summary`) and
``predictions_code_versions`` (the code versions that made the predictions scored). A complete file is reused only
when its checkpoint path, step, task digest and answer options (:data:`REUSE_KEYS`) equal the current ones (a
registry that declares other options, or ``eval.max_options`` turning a task into a classification task, changes the
prompts; a record without ``answer_options`` was made without options); otherwise it is
**recomputed**, with one warning line per kind of change naming it (e.g. ``checkpoint_step: 7 -> 9``). Recomputing
rather than refusing is deliberate: "train further, evaluate the same workdir again" is the ordinary way to score a
newer step, and the files are then overwritten with results that say which step made them, so nothing stale is ever
scored. A file without recorded provenance counts as a mismatch. The code version, package versions and devices do
**not** force a recompute (a commit that does not touch decoding would otherwise discard every result, and a dirty
working tree changes with every edit): a reused file made by another code version is reported in one warning line
and listed in ``predictions_code_versions``; ``eval.overwrite=True`` recomputes everything. A model loaded here is
pinned to the identified checkpoint (the ``ckpt:`` step folder) and checked against it, so a step saved meanwhile by
a running training cannot slip in (``eval.runner.load_model_and_tokenizer``); a model passed to ``eval.runner.evaluate``
is taken to be the one ``init_from`` names.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import json
import pathlib
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

import alert_jax
from alert_jax.io import loader

REUSE_KEYS: tuple[str, ...] = ("checkpoint_path", "checkpoint_step", "task_digest", "answer_options")
"""The keys of a record's ``provenance`` that must equal the current run's for its predictions file to be reused."""

_VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "orbax-checkpoint", "numpy")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``alert_jax.__version__``, plus ``+git.<commit>`` when the package is tracked in a git working tree and
    ``.dirty`` when that tree has uncommitted changes to tracked files or untracked files in the package; never
    fails (no git, not a checkout, a timeout: the package version alone). Computed once per process."""
    pkg = pathlib.Path(alert_jax.__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(pkg), *args], capture_output=True, text=True,
                              timeout=20, check=True).stdout

    try:
        git("ls-files", "--error-unmatch", "__init__.py")  # fails unless the package is tracked here
        commit = git("rev-parse", "HEAD").strip()
        top = pathlib.Path(git("rev-parse", "--show-toplevel").strip())
        rel = pkg.relative_to(top.resolve()).as_posix() + "/"
        status = git("status", "--porcelain").splitlines()
    except (OSError, subprocess.SubprocessError, ValueError):
        return alert_jax.__version__
    dirty = any(not line.startswith("??") or line[3:].startswith(rel) for line in status if line.strip())
    return f"{alert_jax.__version__}+git.{commit}" + (".dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    """Installed versions (``importlib.metadata``) of the packages that decide the numbers: jax, jaxlib, flax,
    orbax-checkpoint, numpy, and transformers when this process has imported it; None for one not installed."""
    names = list(_VERSIONED_PACKAGES) + (["transformers"] if "transformers" in sys.modules else [])
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_summary(mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
    """``{platform, device_kind, count, process_count}`` of the devices decoding runs on (the mesh's, else all)."""
    devices = list(mesh.devices.flat) if mesh is not None else jax.devices()
    return {"platform": devices[0].platform, "device_kind": devices[0].device_kind, "count": len(devices),
            "process_count": jax.process_count()}


def _agree_step(step: int | None) -> int | None:
    """Process 0's checkpoint step on every process (a training saving meanwhile cannot split the processes)."""
    if jax.process_count() == 1:
        return step
    from jax.experimental import multihost_utils

    value = int(multihost_utils.broadcast_one_to_all(np.asarray(-1 if step is None else step, np.int32)))
    return None if value < 0 else value


@dataclasses.dataclass(frozen=True)
class Provenance:
    """What made (or would make) a run's predictions: the resolved checkpoint (``io.loader.checkpoint_identity``),
    the code version, the package versions and the devices. Task digests are per task (``niv2.Task.digest``)."""

    checkpoint_path: str
    checkpoint_step: int | None
    code_version: str
    versions: dict[str, str | None]
    devices: dict[str, Any]

    @classmethod
    def current(cls, cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None) -> Provenance:
        """The provenance of evaluating ``cfg.init_from`` here; reads no weights (raises as the loader does for a
        missing checkpoint)."""
        path, step = loader.checkpoint_identity(str(cfg.init_from))
        return cls(path, _agree_step(step), code_version(), package_versions(), device_summary(mesh))

    def record(self, task_digest: str, answer_options: Sequence[str] | None = None) -> dict[str, Any]:
        """The compact provenance stored in each predictions record of a task whose file has ``task_digest`` and
        whose prompts list ``answer_options`` (None: no options block)."""
        return {"checkpoint_path": self.checkpoint_path, "checkpoint_step": self.checkpoint_step,
                "task_digest": task_digest, "answer_options": list(answer_options) if answer_options else None,
                "code_version": self.code_version}

    def metadata(self, task_digests: Mapping[str, str]) -> dict[str, Any]:
        """The provenance fields of ``scores.json``'s metadata."""
        return {"checkpoint_path": self.checkpoint_path, "checkpoint_step": self.checkpoint_step,
                "task_digests": dict(task_digests), "code_version": self.code_version,
                "versions": dict(self.versions), "devices": dict(self.devices)}


def provenance_changes(records: Sequence[Mapping[str, Any]], expected: Mapping[str, Any]) -> str:
    """'' when every record's ``provenance`` matches ``expected`` on :data:`REUSE_KEYS`, else what changed
    (``'checkpoint_step: 7 -> 9'``; ``'no provenance recorded'`` for records without one)."""
    recorded = [r.get("provenance") for r in records]
    if not recorded or any(not isinstance(p, Mapping) for p in recorded):
        return "no provenance recorded"

    def show(key: str, value: Any) -> str:
        return f"{value[:12]}..." if key == "task_digest" and isinstance(value, str) and value else json.dumps(value)

    changes = []
    for key in REUSE_KEYS:
        old = sorted({show(key, p.get(key)) for p in recorded})
        if old != [show(key, expected.get(key))] or any(p.get(key) != expected.get(key) for p in recorded):
            changes.append(f"{key}: {' | '.join(old)} -> {show(key, expected.get(key))}")
    return "; ".join(changes)
