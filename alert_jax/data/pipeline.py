"""Input pipeline: records -> per-host shard -> seeded shuffle -> tokenize -> first-fit pack -> batch -> global arrays.

Built on grain's ``MapDataset`` / ``IterDataset``::

    MapDataset.source(records)[shard_index::shard_count]   # each host touches ONLY its own records
      .shuffle(seed).repeat(num_epochs)                     # a different (deterministic) order every epoch
      .map(tokenize)                                        # -> {inputs, targets, loss_mask, truncated}, [n] each
      .to_iter_dataset(ReadOptions(num_threads, prefetch))
    -> _PackIterDataset (first-fit over chunks of ``pack_chunk_examples`` examples, see packing.py)
    -> DataIterator (stacks ``batch_size`` rows)            # dict of numpy arrays, all [batch_size, seq_len]

Batches (per process) carry ``inputs``/``targets``/``segment_ids``/``positions`` int32 and ``loss_mask`` float32, all
``[batch_size, seq_len]``, laid out as described in :mod:`alert_jax.data.packing`. :func:`to_global_batch` turns them
into global ``jax.Array`` s sharded along the batch with ``sharding.batch_sharding(mesh)``.

Checkpointing: :class:`DataIterator` is a grain ``DatasetIterator``; ``get_state()`` is a small JSON-serialisable dict
(grain's orbax ``CheckpointHandler`` can save it) and ``set_state()`` makes a fresh iterator continue with exactly the
batches the uninterrupted one would have produced. Packing is done per chunk of examples; the state records the parent
(grain) state at the start of the current chunk and how many rows of it were already emitted, so restoring re-reads
and re-packs that one chunk (packing is deterministic) and skips the emitted rows. Rows never span two chunks, so the
only packing loss beyond first-fit is the last, partially filled rows of each chunk.

Records are ``(prompt, target)`` pairs or mappings with ``prompt`` and ``target`` (``str`` or utf-8 ``bytes``, as read
back from the ``alert_finetune`` TFDS data source), optionally with checked ``token_ids`` (see
:func:`tokenize_record`). The source is a list or any random-access sequence (``alert_finetune.FinetuneRecords`` over
array_record): the stages after it are the same for both.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

from alert_jax.data.packing import (
    DEFAULT_MAX_OPEN_ROWS,
    ROW_FIELDS,
    PackedRows,
    PackingStats,
    build_example,
    empty_rows,
    pack_examples,
    tokenize_example,
)
from alert_jax.parallel.sharding import batch_sharding

__all__ = [
    "DataIterator",
    "EvalBatches",
    "PackingStats",
    "make_eval_iterator",
    "make_train_iterator",
    "process_shard",
    "record_to_pair",
    "records_from_examples",
    "to_global_batch",
    "tokenize_example",
    "tokenize_record",
]

DEFAULT_PACK_CHUNK_EXAMPLES = 4096
_STATE_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------------
# Records and sharding
# ---------------------------------------------------------------------------------------------------------------------


def _text(value: Any, where: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == () and isinstance(value.item(), bytes):
        return value.item().decode("utf-8")
    if isinstance(value, str):
        return value
    raise TypeError(f"{where}: expected str or utf-8 bytes, got {type(value).__name__}")


def record_to_pair(record: Any) -> tuple[str, str]:
    """``(prompt, target)`` of a record: a 2-sequence, or a mapping with ``prompt`` and ``target`` keys."""
    if isinstance(record, Mapping):
        if "prompt" not in record or "target" not in record:
            raise KeyError(f"record has keys {sorted(record)}; a training record needs 'prompt' and 'target'")
        return _text(record["prompt"], "record['prompt']"), _text(record["target"], "record['target']")
    if isinstance(record, Sequence) and not isinstance(record, (str, bytes)) and len(record) == 2:
        return _text(record[0], "record[0] (prompt)"), _text(record[1], "record[1] (target)")
    raise TypeError(f"unsupported record {type(record).__name__}: use (prompt, target) or {{'prompt', 'target'}}")


def records_from_examples(examples: Sequence[Any], mode: str) -> list[tuple[str, str]]:
    """``(prompt, target)`` records of ``RationaleExample`` s formatted by
    ``data.finetune.format_example(ex, mode)``."""
    from alert_jax.data.finetune import format_example  # lazy: only needed for this convenience

    return [format_example(ex, mode) for ex in examples]


def tokenize_record(record: Any, *, tokenizer: Any, seq_len: int, loss_on_prompt: bool = False) -> dict[str, Any]:
    """:func:`tokenize_example` of a record (see :func:`record_to_pair`). A mapping with ``token_ids`` =
    ``(prompt ids, target ids)`` made by this tokenizer (``alert_finetune.FinetuneRecords`` of a dataset whose
    tokenizer fingerprint was checked) is built from those ids instead: the same example, without re-encoding."""
    if isinstance(record, Mapping) and "token_ids" in record:
        prompt_ids, target_ids = record["token_ids"]
        return build_example(prompt_ids, target_ids, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
                             seq_len=seq_len, loss_on_prompt=loss_on_prompt)
    prompt, target = record_to_pair(record)
    return tokenize_example(prompt, target, tokenizer, seq_len, loss_on_prompt=loss_on_prompt)


def process_shard(mesh: jax.sharding.Mesh | None = None) -> tuple[int, int]:
    """``(shard_index, shard_count)`` of the data this process must read.

    Without a mesh: ``(jax.process_index(), jax.process_count())``. With a mesh, processes whose devices hold the same
    rows of a batch-sharded array (e.g. a ``tensor`` axis spanning hosts) are replicas and get the same shard; the
    shards are numbered in order of the rows they hold, so ``shard_count`` can be smaller than the process count.
    """
    if mesh is None:
        return jax.process_index(), jax.process_count()
    sharding = batch_sharding(mesh)
    rows = math.prod(mesh.shape.values())
    blocks: dict[int, set[int]] = collections.defaultdict(set)
    for device, index in sharding.devices_indices_map((rows, 1)).items():
        blocks[device.process_index].add(index[0].start or 0)
    keys = {p: tuple(sorted(b)) for p, b in blocks.items()}
    unique = sorted(set(keys.values()))
    return unique.index(keys[jax.process_index()]), len(unique)


def _resolve_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None and shard_count is None:
        return jax.process_index(), jax.process_count()
    if shard_index is None or shard_count is None:
        raise ValueError("give both shard_index and shard_count, or neither (defaults: this jax process)")
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
    return int(shard_index), int(shard_count)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpointable packing stage
# ---------------------------------------------------------------------------------------------------------------------


class _PackDatasetIterator(grain.DatasetIterator):
    """Yields packed rows (dict of ``[seq_len]`` arrays), packing ``chunk_examples`` parent examples at a time."""

    def __init__(
        self, parent: grain.DatasetIterator, *, seq_len: int, pad_id: int, chunk_examples: int,
        max_open_rows: int | None,
    ):
        super().__init__(parent)
        self._seq_len, self._pad_id = seq_len, pad_id
        self._chunk_examples, self._max_open_rows = chunk_examples, max_open_rows
        self._chunk_start: dict[str, Any] = {}
        self._packed: PackedRows | None = None
        self._next_row = 0
        self.stats = PackingStats()

    def _load_chunk(self) -> bool:
        self._chunk_start = copy.deepcopy(self._parent.get_state())
        examples = []
        for _ in range(self._chunk_examples):
            try:
                examples.append(next(self._parent))
            except StopIteration:
                break
        if not examples:
            self._packed = None
            return False
        self._packed = pack_examples(examples, self._seq_len, self._pad_id, self._max_open_rows)
        self._next_row = 0
        return True

    def __next__(self) -> dict[str, np.ndarray]:
        if self._packed is None and not self._load_chunk():
            raise StopIteration
        assert self._packed is not None
        r = self._next_row
        row = {k: v[r] for k, v in self._packed.arrays.items()}
        self.stats += self._packed.row_stats(r, r + 1)
        self._next_row += 1
        if self._next_row == self._packed.num_rows:
            self._packed = None  # the next chunk starts at the parent's current state
        return row

    def get_state(self) -> dict[str, Any]:
        if self._packed is None:
            return {"chunk_start": copy.deepcopy(self._parent.get_state()), "rows_emitted": 0,
                    "stats": self.stats.to_dict()}
        return {"chunk_start": copy.deepcopy(self._chunk_start), "rows_emitted": self._next_row,
                "stats": self.stats.to_dict()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(copy.deepcopy(state["chunk_start"]))
        self._packed, self._next_row = None, 0
        self.stats = PackingStats.from_dict(state.get("stats", {}))
        emitted = int(state["rows_emitted"])
        if emitted:
            if not self._load_chunk() or emitted > self._packed.num_rows:  # type: ignore[union-attr]
                raise ValueError(f"iterator state says {emitted} rows of the current chunk were emitted, but "
                                 "re-packing that chunk gives fewer: the data or pipeline settings changed")
            self._next_row = emitted
            if emitted == self._packed.num_rows:  # type: ignore[union-attr]
                self._packed = None


class _PackIterDataset(grain.IterDataset):
    def __init__(self, parent: grain.IterDataset, **kwargs: Any):
        super().__init__(parent)
        self._kwargs = kwargs

    def __iter__(self) -> _PackDatasetIterator:
        return _PackDatasetIterator(self._parent.__iter__(), **self._kwargs)


class DataIterator(grain.DatasetIterator):
    """Iterator of per-process batches: dicts of numpy arrays ``[batch_size, seq_len]`` (fields in packing.py).

    ``get_state()`` / ``set_state()`` are JSON-serialisable; the state also records the pipeline settings and
    ``set_state`` refuses a state written with different ones (seq_len, batch size, seed, shard, ...). ``stats`` are
    the :class:`PackingStats` of every row emitted so far (restored with the state); log ``stats.truncated``.
    With ``drop_remainder=False`` a final short batch is completed with all-padding rows (zero loss).
    """

    def __init__(self, rows: _PackDatasetIterator, *, batch_size: int, settings: dict[str, Any], drop_remainder: bool):
        super().__init__(rows)
        self._rows = rows
        self.batch_size = batch_size
        self.seq_len = int(settings["seq_len"])
        self._pad_id = int(settings["pad_id"])
        self.settings = settings
        self._drop_remainder = drop_remainder

    @property
    def stats(self) -> PackingStats:
        return self._rows.stats

    def __next__(self) -> dict[str, np.ndarray]:
        rows = []
        for _ in range(self.batch_size):
            try:
                rows.append(next(self._rows))
            except StopIteration:
                break
        if not rows or (len(rows) < self.batch_size and self._drop_remainder):
            raise StopIteration
        batch = {k: np.stack([r[k] for r in rows]) for k in ROW_FIELDS}
        if len(rows) < self.batch_size:
            pad = empty_rows(self.batch_size - len(rows), self.seq_len, self._pad_id)
            batch = {k: np.concatenate([batch[k], pad[k]]) for k in ROW_FIELDS}
        return batch

    def get_state(self) -> dict[str, Any]:
        return {"version": _STATE_VERSION, "settings": dict(self.settings), "rows": self._rows.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        saved = state.get("settings", {})
        diff = {k: (saved.get(k), v) for k, v in self.settings.items() if saved.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise ValueError(f"data iterator state was saved with different pipeline settings ({detail}); "
                             "restore with the same data, seq_len, batch size, seed and process layout")
        self._rows.set_state(state["rows"])


def make_train_iterator(
    source: Sequence[Any],
    tokenizer: Any,
    *,
    seq_len: int,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    loss_on_prompt: bool = False,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    pack_chunk_examples: int = DEFAULT_PACK_CHUNK_EXAMPLES,
    max_open_rows: int | None = DEFAULT_MAX_OPEN_ROWS,
    num_threads: int = 2,
    prefetch: int = 256,
) -> DataIterator:
    """Training batches for THIS process: ``batch_size`` packed rows of ``seq_len`` per batch.

    Args:
      source: random-access records (a list, or a ``tfds.data_source`` split / grain ``ArrayRecordDataSource``).
      tokenizer: has ``encode(text, add_bos=False)``, ``bos_id``, ``eos_id``, ``pad_id``.
      batch_size: rows per batch on this process (global batch = this x number of data shards).
      seed: shuffle seed; every epoch is reshuffled deterministically from it.
      num_epochs: ``None`` repeats forever (the trainer decides the number of steps).
      shard_index, shard_count: this process's data shard (default: jax process index/count; with tensor- or
        replica-parallel hosts use :func:`process_shard(mesh) <process_shard>`). Shards are strided
        (``records[shard_index::shard_count]``), disjoint, and together cover the whole source.
      pack_chunk_examples: examples packed together (larger = fewer partially filled rows, later first batch).
      max_open_rows: first-fit window inside a chunk (see packing.py; 0 = one example per row).
      num_threads, prefetch: grain read threads and prefetch buffer (tokenization runs there, overlapping the
        training step; ``num_threads=0`` reads synchronously in ``next()``).
    """
    if seq_len < 2 or batch_size < 1:
        raise ValueError(f"need seq_len >= 2 and batch_size >= 1, got seq_len={seq_len}, batch_size={batch_size}")
    shard_index, shard_count = _resolve_shard(shard_index, shard_count)
    num_records = len(source)
    ds = grain.MapDataset.source(source)[shard_index::shard_count]
    if len(ds) == 0:
        raise ValueError(f"data shard {shard_index} of {shard_count} is empty: the source has {num_records} records")
    if shuffle:
        ds = ds.shuffle(seed=int(seed) % 2**32)
    ds = ds.repeat(num_epochs)
    ds = ds.map(functools.partial(tokenize_record, tokenizer=tokenizer, seq_len=seq_len, loss_on_prompt=loss_on_prompt))
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
    packed = _PackIterDataset(it_ds, seq_len=seq_len, pad_id=int(tokenizer.pad_id),
                              chunk_examples=int(pack_chunk_examples), max_open_rows=max_open_rows)
    settings = {
        "num_records": num_records, "shard_index": shard_index, "shard_count": shard_count, "seed": int(seed),
        "shuffle": bool(shuffle), "num_epochs": num_epochs, "seq_len": int(seq_len), "batch_size": int(batch_size),
        "loss_on_prompt": bool(loss_on_prompt), "pad_id": int(tokenizer.pad_id),
        "pack_chunk_examples": int(pack_chunk_examples), "max_open_rows": max_open_rows,
    }
    return DataIterator(iter(packed), batch_size=int(batch_size), settings=settings, drop_remainder=drop_remainder)


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation: one deterministic pass
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class EvalBatches:
    """One deterministic pass over a (sharded) evaluation set; iterate it as often as needed.

    ``len()`` batches of ``[batch_size, seq_len]``; the final batch (and any batches added to reach ``num_batches``)
    is completed with all-padding rows: pad tokens, segment 0, zero ``loss_mask``.
    """

    rows: dict[str, np.ndarray]
    batch_size: int
    num_batches: int
    pad_id: int
    stats: PackingStats

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        num_rows, seq_len = self.rows["inputs"].shape
        for b in range(self.num_batches):
            lo, hi = min(b * self.batch_size, num_rows), min((b + 1) * self.batch_size, num_rows)
            batch = {k: v[lo:hi].copy() for k, v in self.rows.items()}
            if hi - lo < self.batch_size:
                pad = empty_rows(self.batch_size - (hi - lo), seq_len, self.pad_id)
                batch = {k: np.concatenate([batch[k], pad[k]]) for k in ROW_FIELDS}
            yield batch


def make_eval_iterator(
    source: Sequence[Any],
    tokenizer: Any,
    *,
    seq_len: int,
    batch_size: int,
    loss_on_prompt: bool = False,
    shard_index: int | None = None,
    shard_count: int | None = None,
    pack: bool = True,
    max_open_rows: int | None = DEFAULT_MAX_OPEN_ROWS,
    num_batches: int | None = None,
) -> EvalBatches:
    """Validation batches of this process's shard, in source order (no shuffle), packed first-fit unless ``pack=False``.

    Every process must run the same number of eval steps: ``num_batches`` pads with empty batches up to that count
    (an error if the shard needs more). When it is ``None`` and there are several jax processes, the count is agreed
    as the maximum over processes (a collective; every process must call this together).
    """
    shard_index, shard_count = _resolve_shard(shard_index, shard_count)
    examples = [
        tokenize_record(source[i], tokenizer=tokenizer, seq_len=seq_len, loss_on_prompt=loss_on_prompt)
        for i in range(shard_index, len(source), shard_count)
    ]
    packed = pack_examples(examples, seq_len, int(tokenizer.pad_id), max_open_rows if pack else 0)
    needed = -(-packed.num_rows // batch_size)
    if num_batches is None:
        num_batches = needed
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            num_batches = int(np.max(multihost_utils.process_allgather(np.asarray(needed, np.int64))))
    elif num_batches < needed:
        raise ValueError(f"num_batches={num_batches} is too small: shard {shard_index}/{shard_count} needs {needed}")
    return EvalBatches(packed.arrays, int(batch_size), int(num_batches), int(tokenizer.pad_id), packed.stats)


# ---------------------------------------------------------------------------------------------------------------------
# Global arrays
# ---------------------------------------------------------------------------------------------------------------------


def to_global_batch(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """Process-local ``[local_batch, seq_len]`` arrays -> global ``jax.Array`` s sharded by ``batch_sharding(mesh)``.

    Each process passes only its own rows (the shard from :func:`process_shard`); the global batch is
    ``local_batch x shard_count`` rows. ``local_batch`` must be divisible by the number of batch blocks this process's
    devices hold.
    """
    sharding = batch_sharding(mesh)
    local_blocks, shard_count = _batch_blocks(mesh)
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        if value.ndim < 1 or value.shape[0] % local_blocks:
            raise ValueError(f"batch field {name!r} has shape {value.shape}: its first (batch) dimension must be "
                             f"divisible by {local_blocks}, the batch shards this process holds on mesh "
                             f"{dict(mesh.shape)}")
        global_shape = (value.shape[0] * shard_count, *value.shape[1:])
        out[name] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


@functools.lru_cache(maxsize=16)
def _batch_blocks(mesh: jax.sharding.Mesh) -> tuple[int, int]:
    """(batch blocks held by this process, number of distinct data shards) for ``batch_sharding(mesh)``."""
    spec0 = batch_sharding(mesh).spec[0] if len(batch_sharding(mesh).spec) else None
    axes = () if spec0 is None else (spec0,) if isinstance(spec0, str) else tuple(spec0)
    blocks = math.prod(mesh.shape[a] for a in axes)
    _, shard_count = process_shard(mesh)
    return blocks // shard_count, shard_count
