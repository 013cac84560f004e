"""Sharded safetensors files as Hugging Face writes them: the shard plan (a pure function of names, shapes, dtype and
a size limit) and a writer that streams one tensor at a time.

Layout (transformers' ``save_pretrained``): one shard is ``model.safetensors`` with no index; several are
``model-00001-of-0000N.safetensors`` ... with ``model.safetensors.index.json`` =
``{"metadata": {"total_size": <bytes of all tensors>}, "weight_map": {tensor name: shard file}}``.

**Size limit.** Unlike transformers, which counts tensor bytes only, a shard's limit here bounds the whole file: the
tensor bytes plus an upper bound of its safetensors header (8-byte length + JSON entries, :func:`header_bound`), so
every shard file is at most ``max_bytes`` on disk. Tensors are packed greedily in the given order; a tensor that alone
exceeds the limit cannot be split and is refused (:class:`ShardPlanError`), never written oversized.

**Streaming.** A safetensors file is ``<u64 little-endian header length><JSON header><tensor bytes back to back>``;
the header needs only names, dtypes and shapes, so :func:`write_shards` writes it first and then each tensor as it
is produced: host memory holds one tensor, not one shard. A shard for a bucket (``gs://``) is streamed into a local
temporary file the same way, then uploaded in chunks (:func:`alert_jax.io.files.copy_file`): the object appears only
once complete, and memory still holds one tensor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import BinaryIO

import numpy as np
from etils import epath

from alert_jax.io.files import atomic_write_text, copy_file, is_url

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# safetensors' dtype codes of the dtypes an export may be written in.
DTYPE_CODES: dict[str, str] = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_METADATA = {"format": "pt"}  # what torch-based readers (transformers) expect in ``__metadata__``
_HEADER_FIXED = 8 + len(json.dumps({"__metadata__": _METADATA})) + 8  # length prefix, metadata, alignment padding


class ShardPlanError(ValueError):
    """A size limit that cannot be parsed or met, or tensors that do not form a valid plan."""


def parse_size(text: str | int) -> int:
    """Bytes of a size written as Hugging Face's ``max_shard_size``: ``'5GB'`` = 5 * 10**9 (decimal units, as HF),
    ``'500MB'``, ``'1.5GB'``, ``'10GiB'`` = 10 * 2**30 (binary units), or a plain number of bytes. A lowercase final
    ``b`` (HF: bits) is refused."""
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
        unit = m.group(2).upper() if m else None
        # Hugging Face reads a lowercase final 'b' ('5Gb') as bits; refused here rather than guessed.
        if m is None or unit not in _UNITS or m.group(2).endswith("b"):
            raise ShardPlanError(
                f"max_shard_size={text!r}: expected a size like '5GB', '500MB', '10GiB' or a number of bytes (units "
                f"{', '.join(u for u in _UNITS if u)}; GB = 10**9 bytes, as Hugging Face)")
        value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ShardPlanError(f"max_shard_size={text!r}: must be positive")
    return value


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One tensor to write: its name in the file, its shape and its dtype (a :data:`DTYPE_CODES` key)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(_numpy_dtype(self.dtype)).itemsize


@dataclasses.dataclass(frozen=True)
class Shard:
    """One file of a plan: its name, its tensors in file order, and the bytes of those tensors."""

    file: str
    tensors: tuple[TensorSpec, ...]

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def file_bytes_bound(self) -> int:
        """An upper bound of the file's size: tensor bytes + :func:`header_bound`."""
        return self.tensor_bytes + header_bound(self.tensors)


def _numpy_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPE_CODES:
        raise ShardPlanError(f"dtype {dtype!r} cannot be written; expected one of {', '.join(DTYPE_CODES)}")
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def _entry(spec: TensorSpec, begin: int, end: int) -> dict:
    return {"dtype": DTYPE_CODES[spec.dtype], "shape": list(spec.shape), "data_offsets": [begin, end]}


def header_bound(tensors: Iterable[TensorSpec]) -> int:
    """Upper bound of the bytes a safetensors header for ``tensors`` takes (offsets counted at 16 digits each)."""
    big = 10**15
    return _HEADER_FIXED + sum(len(json.dumps({t.name: _entry(t, big, big)})) for t in tensors)


def plan_shards(tensors: Sequence[TensorSpec], max_bytes: int) -> list[Shard]:
    """Greedy packing of ``tensors`` (kept in order) into shards whose files are at most ``max_bytes`` each.

    Returns one :class:`Shard` named ``model.safetensors`` when everything fits one file, else shards named
    ``model-0000i-of-0000N.safetensors``. Raises :class:`ShardPlanError` for duplicate names or a tensor that alone
    does not fit ``max_bytes``.
    """
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ShardPlanError(f"tensor names appear twice: {', '.join(dup[:5])}")
    groups: list[list[TensorSpec]] = []
    size = 0
    for t in tensors:
        alone = t.nbytes + header_bound([t])  # the file this tensor would make by itself
        if alone > max_bytes:
            raise ShardPlanError(f"tensor {t.name} {list(t.shape)} in {t.dtype} takes {alone} bytes with its header, "
                                 f"more than max_shard_size ({max_bytes} bytes); raise max_shard_size")
        added = alone - _HEADER_FIXED  # what it adds to a file that already has its fixed header part
        if not groups or size + added > max_bytes:
            groups.append([])
            size = _HEADER_FIXED
        groups[-1].append(t)
        size += added
    if len(groups) <= 1:
        return [Shard(SINGLE_FILE, tuple(groups[0] if groups else ()))]
    n = len(groups)
    return [Shard(f"model-{i + 1:05d}-of-{n:05d}.safetensors", tuple(g)) for i, g in enumerate(groups)]


def index_dict(shards: Sequence[Shard]) -> dict:
    """``model.safetensors.index.json``'s content for a plan of several shards."""
    return {"metadata": {"total_size": sum(s.tensor_bytes for s in shards)},
            "weight_map": {t.name: s.file for s in shards for t in s.tensors}}


def _header(shard: Shard) -> bytes:
    entries: dict = {"__metadata__": _METADATA}
    offset = 0
    for t in shard.tensors:
        entries[t.name] = _entry(t, offset, offset + t.nbytes)
        offset += t.nbytes
    raw = json.dumps(entries, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data to 8 bytes with trailing spaces
    return len(raw).to_bytes(8, "little") + raw


def _stream(f: BinaryIO, shard: Shard, get: Callable[[str], np.ndarray]) -> None:
    f.write(_header(shard))
    for t in shard.tensors:
        array = np.asarray(get(t.name))
        if tuple(array.shape) != t.shape:
            raise ShardPlanError(f"tensor {t.name}: got shape {tuple(array.shape)}, planned {t.shape}")
        f.write(np.ascontiguousarray(array.astype(_numpy_dtype(t.dtype), copy=False)).tobytes())


def write_shard(directory: epath.Path, shard: Shard, get: Callable[[str], np.ndarray]) -> epath.Path:
    """Writes ``shard`` into ``directory`` (a local folder or a bucket URL), asking ``get(name)`` for each tensor in
    turn (cast to the planned dtype; its shape must be the planned one). Written to a temporary file first, then
    renamed (locally) or uploaded (a bucket), so no partial shard appears under its name."""
    path = directory / shard.file
    if is_url(path):
        with tempfile.TemporaryDirectory(prefix="alert_jax_shard_") as tmp:
            local = pathlib.Path(tmp) / shard.file
            with open(local, "wb") as f:
                _stream(f, shard, get)
            copy_file(local, path)
        return path
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        _stream(f, shard, get)
    os.replace(tmp, path)
    return path


def write_shards(
    directory: str | os.PathLike,
    shards: Sequence[Shard],
    get: Callable[[str], np.ndarray],
    *,
    progress: Callable[[int, int, epath.Path], None] | None = None,
) -> list[epath.Path]:
    """Writes every shard of a plan (one tensor in memory at a time), then the index when there are several;
    ``progress(i, n, path)`` after shard ``i`` of ``n``. Returns the written paths (index last)."""
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for i, shard in enumerate(shards):
        written.append(write_shard(directory, shard, get))
        if progress is not None:
            progress(i + 1, len(shards), written[-1])
    if len(shards) > 1:
        index = directory / INDEX_FILE
        atomic_write_text(index, json.dumps(index_dict(shards), indent=2) + "\n")
        written.append(index)
    return written
