"""The TFDS datasets of the scale data path (DESIGN.md section 4), written once and read by every host.

:func:`prepare_finetune` writes ``alert_finetune/<mode>``: the records a ``data.source='raw'`` run would read
(``train.records.read_corpus_examples`` of the same config: corpus, splits, synthetic settings), formatted for the
mode, with their token ids when the config names a tokenizer (``tokenizer`` or the one beside ``init_from``; else
text only, tokenized at read time) and the corpus settings in the metadata. Validation sets are written uncapped
(``data.max_eval_examples`` applies when reading).

:func:`prepare_eval` writes ``alert_eval``: every instance of the registry's tasks named by a task spec plus the
dev set, those with a file in ``data.niv2_dir``.

A run with ``data.source='tfds'`` and ``data.tfds_dir`` = the same folder then reads these (``train.records``,
``eval.runner``). Existing datasets in the folder are regenerated.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
from etils import epath

from alert_jax.data import registry as registry_lib

__all__ = ["prepare_eval", "prepare_finetune"]


def _split_counts(path: str) -> dict[str, int]:
    import tensorflow_datasets as tfds

    info = tfds.builder_from_directory(path).info
    return {name: int(split.num_examples) for name, split in info.splits.items()}


def prepare_finetune(cfg: ml_collections.ConfigDict, out: str | os.PathLike) -> dict[str, Any]:
    """Writes ``alert_finetune/<cfg.mode>`` under ``out``; returns ``{'path', 'splits': {split: records},
    'tokenizer'}`` ('' when text only)."""
    from alert_jax.data.tfds import alert_finetune
    from alert_jax.io import loader
    from alert_jax.train import records

    train, valid = records.read_corpus_examples(cfg)
    tokenizer = loader.find_tokenizer(str(cfg.init_from), str(cfg.tokenizer))
    path = alert_finetune.build(
        out, str(cfg.mode), examples={"train": train, "validation": [ex for v in valid.values() for ex in v]},
        tokenizer=tokenizer, inputs=records.corpus_inputs(cfg), overwrite=True,
    )
    return {"path": path, "splits": _split_counts(path), "tokenizer": "" if tokenizer is None else repr(tokenizer)}


def prepare_eval(cfg: ml_collections.ConfigDict, out: str | os.PathLike, *, tasks: str = "all",
                 registry: str = "") -> dict[str, Any]:
    """Writes ``alert_eval`` under ``out`` from ``cfg.data.niv2_dir``: the ``tasks`` spec (``registry.resolve_tasks``
    of ``registry``, an ``eval.registry`` spec) plus the dev set; tasks without a file are skipped and listed.
    Returns ``{'path', 'splits', 'tasks', 'missing'}``."""
    from alert_jax.data.tfds import alert_eval
    from alert_jax.eval.runner import EvalConfigError, build_registry

    niv2_dir = str(cfg.data.niv2_dir or "")
    if not niv2_dir or not epath.Path(niv2_dir).is_dir():  # a gs:// task folder too
        raise FileNotFoundError(f"data.niv2_dir={niv2_dir!r} is not a folder of NIV2 task files "
                                "(--config.data.niv2_dir)")
    reg = build_registry(registry)
    try:
        names = [*registry_lib.resolve_tasks(tasks, reg, allow_unregistered=True), *reg.dev_set]
    except ValueError as err:
        raise EvalConfigError(f"tasks={tasks!r}: {err}") from None
    present, missing = registry_lib.available(reg, niv2_dir, names)
    if not present:
        raise FileNotFoundError(f"none of the {len(names)} requested tasks has a file in {niv2_dir}")
    skills = {d.name: (d.skill, bool(d.in_domain)) for d in reg.datasets}
    path = alert_eval.build(out, niv2_dir, tasks=present, skills=skills, overwrite=True)
    return {"path": path, "splits": _split_counts(path), "tasks": present, "missing": missing}
