"""Where a run's records come from (``data.source``): the raw files, or the TFDS datasets launch/prepare.py wrote.

* ``'raw'``: every process parses the files named by ``data.finetune_dir`` / ``data.niv2_dir`` (small runs);
* ``'tfds'``: the ``alert_finetune`` / ``alert_eval`` array_record datasets in ``data.tfds_dir`` (local or gs://),
  written once by ``launch/prepare.py``; training reads only this process's shard of the training split.

Both give the same records, so the same batches and prompts; everything after the record source is shared
(``data.pipeline``, ``eval.runner``). Training's side is ``train.records``; evaluation's is :func:`task_store`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import ml_collections
from etils import epath

from alert_jax.data import niv2

__all__ = ["SOURCES", "DataSourceError", "TaskStore", "data_source", "folder_store", "task_store"]

SOURCES = ("raw", "tfds")


class DataSourceError(ValueError):
    """``data.source`` / ``data.tfds_dir`` / ``data.niv2_dir`` cannot give the records (the message names the
    setting)."""


def data_source(cfg: ml_collections.ConfigDict) -> str:
    """``cfg.data.source``, checked: 'raw', or 'tfds' with a non-empty ``data.tfds_dir``."""
    source = str(cfg.data.get("source", "raw"))
    if source not in SOURCES:
        raise DataSourceError(f"data.source={source!r}: use one of {', '.join(SOURCES)}")
    if source == "tfds" and not str(cfg.data.get("tfds_dir", "")):
        raise DataSourceError("data.source='tfds' but data.tfds_dir is empty: set --config.data.tfds_dir (or "
                              "ALERT_JAX_TFDS_DIR) to the folder launch/prepare.py wrote, or use "
                              "--config.data.source=raw")
    return source


@dataclasses.dataclass(frozen=True)
class TaskStore:
    """The NIV2 tasks a run can evaluate: ``names`` available, ``load(name)`` -> :class:`niv2.Task`, and ``where``
    they are (for messages)."""

    names: list[str]
    load: Callable[[str], niv2.Task]
    where: str

    def available(self, tasks: Sequence[str]) -> tuple[list[str], list[str]]:
        """``(present, missing)``: the ``tasks`` this store holds and those it does not, each in the order given."""
        have = set(self.names)
        wanted = list(dict.fromkeys(tasks))
        return [t for t in wanted if t in have], [t for t in wanted if t not in have]


def folder_store(niv2_dir: str | os.PathLike) -> TaskStore:
    """The task files in ``niv2_dir`` (a task folder or an NIV2 checkout; not a folder -> FileNotFoundError)."""
    return TaskStore(niv2.list_tasks(niv2_dir), lambda name: niv2.load_task(name, niv2_dir), str(niv2_dir))


def task_store(cfg: ml_collections.ConfigDict) -> TaskStore:
    """The tasks of ``cfg.data.source``: the task files in ``data.niv2_dir`` ('raw') or the ``alert_eval`` dataset in
    ``data.tfds_dir`` ('tfds'; the same tasks, hence the same prompts)."""
    if data_source(cfg) == "tfds":
        from alert_jax.data.tfds import alert_eval

        tfds_dir = str(cfg.data.tfds_dir)
        try:
            stored = alert_eval.load_tasks(tfds_dir)
        except FileNotFoundError as err:
            raise DataSourceError(f"data.tfds_dir={tfds_dir!r}: {err}; write it with launch/prepare.py "
                                  "--what=eval") from None
        return TaskStore(list(stored), stored.__getitem__, f"the alert_eval dataset in data.tfds_dir={tfds_dir}")
    niv2_dir = str(cfg.data.niv2_dir or "")
    if not niv2_dir or not epath.Path(niv2_dir).is_dir():
        raise DataSourceError(f"data.niv2_dir={niv2_dir!r} is not a folder of NIV2 task files "
                              "(--config.data.niv2_dir)")
    return folder_store(niv2_dir)
