"""Helpers shared by the ``alert_eval`` and ``alert_finetune`` TFDS builders (no TensorFlow needed).

The builders write ``array_record`` files with TFDS's own generator/writer (``download_and_prepare``), which works
without TensorFlow installed; everything is read back with ``tfds.data_source`` / ``builder.as_data_source()`` or,
without importing our builder classes, with :func:`load_split` (``tfds.builder_from_directory``). Records come back as
dicts of numpy values, text as utf-8 ``bytes`` (:func:`text` decodes).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["FILE_FORMAT", "dataset_dir", "examples_dict", "load_split", "prepare", "text", "texts"]

FILE_FORMAT = "array_record"


def prepare(
    builder: tfds.core.DatasetBuilder, manual_dir: str | os.PathLike | None = None, overwrite: bool = False
) -> tfds.core.DatasetBuilder:
    """Generates the dataset files of ``builder`` and returns the builder.

    Existing prepared files of the same name/config/version are reused unless ``overwrite`` (then regenerated).
    """
    mode = tfds.download.GenerateMode
    config = tfds.download.DownloadConfig(
        manual_dir=None if manual_dir is None else os.fspath(manual_dir),
        download_mode=mode.FORCE_REDOWNLOAD if overwrite else mode.REUSE_DATASET_IF_EXISTS,
    )
    builder.download_and_prepare(download_config=config)
    return builder


def dataset_dir(data_dir: str | os.PathLike, name: str, config: str | None = None, version: str | None = None) -> str:
    """``data_dir/name[/config]/version`` of a prepared dataset (the newest version when ``version`` is None)."""
    root = pathlib.Path(data_dir) / name
    if config:
        root = root / config
    if version is None:
        versions = sorted(
            (p for p in root.glob("*") if (p / "dataset_info.json").is_file()),
            key=lambda p: tuple(int(x) for x in p.name.split(".") if x.isdigit()),
        )
        if not versions:
            raise FileNotFoundError(f"no prepared TFDS dataset under {root} (build it first, e.g. with build_* helpers)")
        return os.fspath(versions[-1])
    path = root / version
    if not (path / "dataset_info.json").is_file():
        raise FileNotFoundError(f"no prepared TFDS dataset at {path}")
    return os.fspath(path)


def load_split(
    data_dir: str | os.PathLike, name: str, split: str, config: str | None = None, version: str | None = None
) -> Any:
    """Random-access data source (``len``, ``[i]``) of one split, read with ``tfds.builder_from_directory``."""
    builder = tfds.builder_from_directory(dataset_dir(data_dir, name, config, version))
    return builder.as_data_source(split=split)


def text(value: Any) -> str:
    """A TFDS text value (utf-8 ``bytes``, ``str`` or 0-d array of either) as ``str``."""
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def texts(values: Any) -> list[str]:
    """A TFDS ``Sequence(Text())`` value as a list of ``str``."""
    return [text(v) for v in values]


def examples_dict(values: Mapping[str, Any]) -> list[dict[str, str]]:
    """A TFDS ``Sequence({...: Text()})`` value (dict of lists) as a list of dicts of ``str``."""
    keys = list(values)
    n = len(values[keys[0]]) if keys else 0
    return [{k: text(values[k][i]) for k in keys} for i in range(n)]
