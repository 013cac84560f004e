"""Helpers shared by the ``alert_eval`` and ``alert_finetune`` TFDS builders (no TensorFlow needed).

The builders write ``array_record`` files with TFDS's own generator/writer (``download_and_prepare``), which works
without TensorFlow installed; everything is read back with ``tfds.data_source`` / ``builder.as_data_source()`` or,
without importing our builder classes, with :func:`load_split` (``tfds.builder_from_directory``). Records come back as
dicts of numpy values, text as utf-8 ``bytes`` (:func:`text` decodes). Both builders derive from
:class:`LocalBuilder` (version, array_record default, ``code_path``, ``DatasetInfo`` shape).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

__all__ = ["FILE_FORMAT", "LocalBuilder", "dataset_dir", "examples_dict", "load_split", "prepare", "text", "texts"]

FILE_FORMAT = "array_record"


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the ALERT builders: built from local inputs (builder kwargs / ``manual_dir``), never downloads.

    Supplies the shared version ``1.0.0``, writes :data:`FILE_FORMAT` unless ``file_format=`` is given, points
    ``code_path`` at the subclass's own module, and builds the (unshuffled) ``DatasetInfo`` with :meth:`_local_info`.
    The class stays abstract (no ``_info``/``_split_generators``/``_generate_examples``) and is not registered
    as a dataset; each concrete subclass registers under its own name as usual.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's default needs the `importlib_resources` backport for builders defined inside a package.
        return epath.Path(inspect.getfile(cls))

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("file_format", FILE_FORMAT)
        super().__init__(**kwargs)

    def _local_info(self, description: str, features: Mapping[str, Any], **kwargs: Any) -> tfds.core.DatasetInfo:
        """``DatasetInfo`` with ``features`` (``{name: feature}``) in a ``FeaturesDict`` and shuffling disabled, so
        records keep generation order; ``kwargs`` (e.g. ``homepage``) pass through."""
        return tfds.core.DatasetInfo(
            builder=self,
            description=description,
            features=tfds.features.FeaturesDict(dict(features)),
            disable_shuffling=True,
            **kwargs,
        )


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
    root = epath.Path(data_dir) / name
    if config:
        root = root / config
    if version is None:
        versions = sorted(
            (p for p in root.glob("*") if (p / "dataset_info.json").is_file()),
            key=lambda p: tuple(int(x) for x in p.name.split(".") if x.isdigit()),
        )
        if not versions:
            raise FileNotFoundError(f"no prepared TFDS dataset under {root} (build it first, e.g. with build_* "
                                    "helpers)")
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
