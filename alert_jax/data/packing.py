"""Tokenizing (prompt, target) pairs and packing them first-fit into fixed-length rows (pure numpy, no jax).

One example is the token sequence ``tokens = [bos] + prompt_ids + target_ids + [eos]``. It is trained as next-token
prediction: ``inputs = tokens[:-1]``, ``targets = tokens[1:]``, so an example occupies ``len(tokens) - 1`` columns of
a row. ``loss_mask[j] = 1`` exactly where ``targets[j]`` is one of ``target_ids + [eos]`` (with
``loss_on_prompt=True``: everywhere, i.e. the prompt tokens are trained too; ``bos`` is never a target).

Packing puts several examples side by side in one row of ``seq_len`` columns. Every row carries (all ``[seq_len]``):

* ``inputs`` / ``targets`` int32: the tokens; padding columns hold ``pad_id`` in both,
* ``segment_ids`` int32: ``1, 2, ...`` for the 1st, 2nd, ... example of the row, ``0`` on padding,
* ``positions`` int32: position of the token inside its own example, restarting at 0 for every segment, 0 on padding,
* ``loss_mask`` float32: as above, 0 on padding.

Worked example (t5x style; ``B`` = bos, ``E`` = eos, ``P`` = pad; ``seq_len = 8``). Example A has prompt ``a1 a2`` and
target ``a3`` (tokens ``B a1 a2 a3 E``, 4 columns), example B has prompt ``b1`` and target ``b2`` (tokens
``B b1 b2 E``, 3 columns). Packed into one row::

    inputs      = [B  a1 a2 a3 B  b1 b2 P]
    targets     = [a1 a2 a3 E  b1 b2 E  P]
    segment_ids = [1  1  1  1  2  2  2  0]
    positions   = [0  1  2  3  0  1  2  0]
    loss_mask   = [0  0  1  1  0  1  1  0]

The model attends only within a segment (same nonzero segment id, causal) and adds OPT's position offset itself.
Masks are never inferred from token values (OPT's bos and eos are the same id, 2; pad is 1).

Truncation: an example with more than ``seq_len`` columns is cut from the LEFT of the prompt (``bos`` is kept); if the
target alone is still too long, the target is cut from the right (its ``eos`` is then dropped, so the model is not
taught to stop early). Truncated examples are counted in :class:`PackingStats`.

First-fit with a bounded window: rows are filled in the order examples arrive; an example goes into the FIRST open
row with enough free columns. At most ``max_open_rows`` rows are open at once: when a new row is needed and the
window is full, the fullest open row is closed (a row is also closed as soon as it is exactly full). The window bounds
the cost to ``O(num_examples * max_open_rows)`` vectorised comparisons and keeps memory constant when streaming;
``max_open_rows=None`` means unbounded (classic first-fit), ``0`` means one example per row (no packing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

__all__ = [
    "DEFAULT_MAX_OPEN_ROWS",
    "ROW_FIELDS",
    "PackedRows",
    "PackingStats",
    "build_example",
    "empty_rows",
    "pack_examples",
    "tokenize_example",
]

ROW_FIELDS: tuple[str, ...] = ("inputs", "targets", "segment_ids", "positions", "loss_mask")
DEFAULT_MAX_OPEN_ROWS = 64


class _Encoder(Protocol):  # the part of alert_jax.io.tokenizers.Tokenizer used here
    bos_id: int
    eos_id: int

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]: ...


# ---------------------------------------------------------------------------------------------------------------------
# One example
# ---------------------------------------------------------------------------------------------------------------------


def build_example(
    prompt_ids: Sequence[int],
    target_ids: Sequence[int],
    *,
    bos_id: int,
    eos_id: int,
    seq_len: int,
    loss_on_prompt: bool = False,
) -> dict[str, np.ndarray]:
    """Builds one training example from token ids (see the module docstring for the layout and truncation rule).

    Returns a dict with ``inputs`` / ``targets`` int32 ``[n]``, ``loss_mask`` float32 ``[n]`` (``n <= seq_len``,
    ``n = len(prompt) + len(target) + 1`` when nothing is cut) and ``truncated`` int32 scalar = number of tokens cut.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    prompt = np.asarray(prompt_ids, dtype=np.int32).reshape(-1)
    target = np.asarray(target_ids, dtype=np.int32).reshape(-1)
    eos = np.asarray([eos_id], dtype=np.int32)
    excess = len(prompt) + len(target) + 1 - seq_len
    cut = max(excess, 0)
    if excess > 0:
        from_prompt = min(excess, len(prompt))
        prompt = prompt[from_prompt:]
        excess -= from_prompt
        if excess > 0:  # the target alone does not fit: keep its beginning, drop its end and the eos
            keep = len(target) + 1 - excess
            target, eos = target[:keep], eos[:0]
    tokens = np.concatenate([np.asarray([bos_id], np.int32), prompt, target, eos])
    n = len(tokens) - 1
    loss_mask = np.ones(n, np.float32) if loss_on_prompt else (np.arange(n) >= len(prompt)).astype(np.float32)
    return {
        "inputs": tokens[:-1],
        "targets": tokens[1:],
        "loss_mask": loss_mask,
        "truncated": np.int32(cut),
    }


def tokenize_example(
    prompt: str,
    target: str,
    tokenizer: _Encoder,
    seq_len: int,
    loss_on_prompt: bool = False,
) -> dict[str, np.ndarray]:
    """Encodes ``prompt`` and ``target`` separately (no bos added by the tokenizer) and calls :func:`build_example`.

    Encoding the two texts separately keeps the prompt/target boundary exact (the loss mask never depends on how a
    tokenizer would merge across the boundary). The target text usually starts with a space (``" 42"``).
    """
    return build_example(
        tokenizer.encode(prompt, add_bos=False),
        tokenizer.encode(target, add_bos=False),
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
        seq_len=seq_len,
        loss_on_prompt=loss_on_prompt,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PackingStats:
    """Counts over packed rows. ``efficiency = tokens / (rows * seq_len)`` (non-pad share of all columns)."""

    rows: int = 0
    examples: int = 0
    tokens: int = 0
    capacity: int = 0
    truncated: int = 0  # examples that were cut to fit seq_len

    @property
    def efficiency(self) -> float:
        return self.tokens / self.capacity if self.capacity else 0.0

    def __add__(self, other: PackingStats) -> PackingStats:
        fields = dataclasses.fields(self)
        return PackingStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields})

    def to_dict(self) -> dict[str, int]:
        """JSON-serialisable counts (for iterator state and logs)."""
        return {f.name: int(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PackingStats:
        return cls(**{f.name: int(data.get(f.name, 0)) for f in dataclasses.fields(cls)})

    def __str__(self) -> str:
        return (
            f"{self.rows} rows, {self.examples} examples, {self.tokens}/{self.capacity} tokens "
            f"(efficiency {self.efficiency:.2%}), {self.truncated} truncated"
        )


@dataclasses.dataclass
class PackedRows:
    """Result of :func:`pack_examples`.

    ``arrays``: the :data:`ROW_FIELDS`, each ``[rows, seq_len]``. Per row (``[rows]``): ``row_tokens`` (non-pad
    columns), ``row_examples`` (segments), ``row_truncated`` (truncated examples). Per input example
    (``[num_examples]``): ``example_row``, ``example_offset`` (first column) and ``example_segment`` (its segment id).
    """

    arrays: dict[str, np.ndarray]
    row_tokens: np.ndarray
    row_examples: np.ndarray
    row_truncated: np.ndarray
    example_row: np.ndarray
    example_offset: np.ndarray
    example_segment: np.ndarray

    @property
    def num_rows(self) -> int:
        return int(self.row_tokens.shape[0])

    def row_stats(self, start: int = 0, stop: int | None = None) -> PackingStats:
        """Stats of rows ``[start, stop)``."""
        sl = slice(start, stop)
        rows = int(self.row_tokens[sl].shape[0])
        seq_len = int(self.arrays["inputs"].shape[1])
        return PackingStats(
            rows=rows,
            examples=int(self.row_examples[sl].sum()),
            tokens=int(self.row_tokens[sl].sum()),
            capacity=rows * seq_len,
            truncated=int(self.row_truncated[sl].sum()),
        )

    @property
    def stats(self) -> PackingStats:
        return self.row_stats()


def empty_rows(num_rows: int, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """All-padding rows ``[num_rows, seq_len]``: pad tokens, segment 0, position 0, zero loss."""
    return {
        "inputs": np.full((num_rows, seq_len), pad_id, np.int32),
        "targets": np.full((num_rows, seq_len), pad_id, np.int32),
        "segment_ids": np.zeros((num_rows, seq_len), np.int32),
        "positions": np.zeros((num_rows, seq_len), np.int32),
        "loss_mask": np.zeros((num_rows, seq_len), np.float32),
    }


def _assign_rows(lengths: np.ndarray, seq_len: int, max_open_rows: int | None) -> tuple[np.ndarray, np.ndarray]:
    """First-fit placement: returns ``(row, offset)`` per example; rows are numbered in order of creation.

    ``max_open_rows=0`` means no packing: one example per row.
    """
    n = len(lengths)
    if max_open_rows == 0:
        return np.arange(n, dtype=np.int64), np.zeros(n, np.int64)
    example_row = np.empty(n, np.int64)
    example_offset = np.empty(n, np.int64)
    window = n if max_open_rows is None else max(1, int(max_open_rows))
    # Open rows in creation order: free columns and global row number. Arrays with a live prefix of size `k`.
    free = np.empty(window, np.int64)
    ids = np.empty(window, np.int64)
    k = 0
    num_rows = 0
    for i, length in enumerate(lengths.tolist()):
        slot = -1
        if k:
            fits = free[:k] >= length
            slot = int(np.argmax(fits))
            if not fits[slot]:
                slot = -1
        if slot < 0:
            if k == window:  # close the fullest open row to make room
                close = int(np.argmin(free[:k]))
                free[close : k - 1] = free[close + 1 : k]
                ids[close : k - 1] = ids[close + 1 : k]
                k -= 1
            free[k], ids[k] = seq_len, num_rows
            slot, k, num_rows = k, k + 1, num_rows + 1
        example_row[i] = ids[slot]
        example_offset[i] = seq_len - free[slot]
        free[slot] -= length
        if free[slot] == 0:  # exactly full: close it so later searches skip it
            free[slot : k - 1] = free[slot + 1 : k]
            ids[slot : k - 1] = ids[slot + 1 : k]
            k -= 1
    return example_row, example_offset


def pack_examples(
    examples: Sequence[Mapping[str, np.ndarray]],
    seq_len: int,
    pad_id: int,
    max_open_rows: int | None = DEFAULT_MAX_OPEN_ROWS,
) -> PackedRows:
    """Packs tokenized examples (from :func:`build_example`) first-fit into rows of ``seq_len`` columns.

    Deterministic: the same examples in the same order always give the same rows. Every example lands in exactly one
    row, whole (examples are at most ``seq_len`` long; a longer one is an error naming its index). Rows are returned
    in order of creation. ``max_open_rows``: size of the first-fit window (``None`` = unbounded, ``0`` = no packing,
    one example per row).
    """
    lengths = np.asarray([len(ex["inputs"]) for ex in examples], np.int64)
    if len(lengths) and (lengths.max() > seq_len or lengths.min() < 1):
        bad = int(np.flatnonzero((lengths > seq_len) | (lengths < 1))[0])
        raise ValueError(
            f"example {bad} has {int(lengths[bad])} tokens; packing needs 1..seq_len={seq_len} "
            "(tokenize with the same seq_len so long examples are truncated)"
        )
    example_row, example_offset = _assign_rows(lengths, seq_len, max_open_rows)
    num_rows = int(example_row.max()) + 1 if len(lengths) else 0
    arrays = empty_rows(num_rows, seq_len, pad_id)
    segments_so_far = np.zeros(num_rows, np.int64)
    example_segment = np.empty(len(lengths), np.int64)
    row_truncated = np.zeros(num_rows, np.int64)
    row_tokens = np.zeros(num_rows, np.int64)
    positions = np.arange(seq_len, dtype=np.int32)
    for i, ex in enumerate(examples):
        r, o, n = int(example_row[i]), int(example_offset[i]), int(lengths[i])
        segments_so_far[r] += 1
        example_segment[i] = segments_so_far[r]
        sl = slice(o, o + n)
        arrays["inputs"][r, sl] = ex["inputs"]
        arrays["targets"][r, sl] = ex["targets"]
        arrays["loss_mask"][r, sl] = ex["loss_mask"]
        arrays["segment_ids"][r, sl] = segments_so_far[r]
        arrays["positions"][r, sl] = positions[:n]
        row_tokens[r] += n
        row_truncated[r] += int(np.asarray(ex.get("truncated", 0)) > 0)
    return PackedRows(
        arrays=arrays,
        row_tokens=row_tokens,
        row_examples=segments_so_far,
        row_truncated=row_truncated,
        example_row=example_row,
        example_offset=example_offset,
        example_segment=example_segment,
    )
