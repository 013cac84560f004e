"""Stop strings: the host-side rule (:func:`truncate_at_stop`) and the tables that let the decoder end rows early.

A prediction is defined as the generated text cut at the first stop string (:func:`truncate_at_stop`, on the host).
Ending a row on the device as soon as its text contains a stop string only saves time, so every device-side check
must be *sound* (never fire when the text does not contain the stop string) and should be as complete as is cheap:

* :func:`stop_token_sequences` -- exact token-id sequences spelling a stop string (its own encoding and the
  per-character one); catches stops spread over any number of tokens, but only with those exact ids.
* :func:`stop_piece_tables` -- per-vocabulary-id tables for stops that tokens merge with other text (a piece such
  as ``".\\n\\n"``, or ``"\\n"`` ending one piece and ``"\\n"`` starting the next): a row stops when its new token's
  text contains a stop string, or when the previous generated token's text ends with ``s[:k]`` and the new one's
  starts with ``s[k:]``. Stops spread over three or more tokens are left to the exact-sequence table.

Per-id text (:func:`piece_texts`) is read through the tokenizer's own ``decode`` of ``[anchor, id]`` minus the text
of ``[anchor]``, so that decoders which treat the first token specially (SentencePiece drops a leading space there)
give the text the piece has in the middle of a sequence. This assumes decoding is concatenative
(``decode(a + b) == decode(a) + decode(b)``) apart from incomplete UTF-8: byte-level BPE and SentencePiece are.
An id whose bytes are not complete UTF-8 decodes with U+FFFD in place of the partial character; the characters it
does spell are the same ones it spells in context (UTF-8 is self-synchronising), so a match on them is sound and a
character split over tokens is merely missed. Stop strings containing U+FFFD get no piece tables for that reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["StopPieces", "piece_texts", "stop_piece_tables", "stop_token_sequences", "truncate_at_stop"]

_ANCHOR_TEXT = "a"
_REPLACEMENT = "\ufffd"


@dataclasses.dataclass(frozen=True, eq=False)
class StopPieces:
    """Boolean vocabulary tables for stop strings merged into tokens (see the module docstring).

    contains: ``[num_strings, vocab]``; ``contains[s, i]`` -- the text of id ``i`` contains ``strings[s]``.
    ends, starts: ``[num_splits, vocab]``; for split ``j`` with ``splits[j] == (s, k)`` (``1 <= k < len(strings[s])``),
      ``ends[j, i]`` -- the text of id ``i`` ends with ``strings[s][:k]``; ``starts[j, i]`` -- it starts with
      ``strings[s][k:]``.
    strings, splits: labels of the rows (for messages and tests; the decoder reads only the arrays).

    Ids ``>= vocab`` (a model's embedding is often larger than its tokenizer's vocabulary) match nothing. Instances
    compare and hash by identity, so :class:`~alert_jax.eval.generate.DecodeOptions` holding one stays hashable.
    """

    contains: np.ndarray
    ends: np.ndarray
    starts: np.ndarray
    strings: tuple[str, ...] = ()
    splits: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("contains", "ends", "starts"):
            a = np.array(getattr(self, name), dtype=bool)  # a private copy
            if a.ndim != 2:
                raise ValueError(f"StopPieces.{name} must be [rows, vocab], got shape {a.shape}")
            a.setflags(write=False)
            arrays[name] = a
        vocab = {a.shape[1] for a in arrays.values()}
        if len(vocab) != 1:
            raise ValueError(f"StopPieces tables disagree on the vocabulary size: {sorted(vocab)}")
        if arrays["ends"].shape != arrays["starts"].shape:
            raise ValueError(f"StopPieces.ends {arrays['ends'].shape} and .starts {arrays['starts'].shape} differ")
        for name, a in arrays.items():
            object.__setattr__(self, name, a)

    @property
    def vocab_size(self) -> int:
        return int(self.contains.shape[1])

    @property
    def rows(self) -> int:
        """The larger of ``num_strings`` and ``num_splits`` (the decoder pads both to one row count)."""
        return int(max(self.contains.shape[0], self.ends.shape[0]))


def piece_texts(tokenizer: Any) -> list[str | None]:
    """Text of every id ``0 .. tokenizer.vocab_size - 1`` as it reads inside a sequence.

    ``decode([*anchor, id])`` minus ``decode(anchor)``, ``anchor = tokenizer.encode("a")``; ``""`` for ids that
    decode drops (pad, bos, eos); ``None`` when the anchor's text is not a prefix (an unusual decoder), which the
    tables treat as matching nothing.
    """
    anchor = [int(t) for t in tokenizer.encode(_ANCHOR_TEXT)]
    prefix = tokenizer.decode(anchor)
    out: list[str | None] = []
    for i in range(int(tokenizer.vocab_size)):
        full = tokenizer.decode([*anchor, i])
        out.append(full[len(prefix):] if full.startswith(prefix) else None)
    return out


def stop_piece_tables(
    stop_strings: Iterable[str], tokenizer: Any = None, *, texts: Sequence[str | None] | None = None
) -> StopPieces:
    """The :class:`StopPieces` tables of ``stop_strings`` over a tokenizer's vocabulary.

    Build once per (tokenizer, stop strings): it decodes every id (about a second for a 50k vocabulary). ``texts``
    (from :func:`piece_texts`) may be given instead of ``tokenizer``. Empty stop strings are ignored; a string
    containing U+FFFD gets all-False rows (see the module docstring). Memory: ``(num_strings + 2 * num_splits) *
    vocab`` bytes, e.g. 150 kB for ``"\\n\\n"`` over OPT's vocabulary.
    """
    if texts is None:
        if tokenizer is None:
            raise ValueError("stop_piece_tables needs a tokenizer or texts")
        texts = piece_texts(tokenizer)
    strings = tuple(dict.fromkeys(s for s in stop_strings if s))
    splits = tuple((si, k) for si, s in enumerate(strings) for k in range(1, len(s)))
    contains = np.zeros((len(strings), len(texts)), bool)
    ends = np.zeros((len(splits), len(texts)), bool)
    starts = np.zeros((len(splits), len(texts)), bool)
    usable = [_REPLACEMENT not in s for s in strings]
    for i, text in enumerate(texts):
        if not text:
            continue
        for si, s in enumerate(strings):
            contains[si, i] = usable[si] and s in text
        for j, (si, k) in enumerate(splits):
            s = strings[si]
            ends[j, i] = usable[si] and text.endswith(s[:k])
            starts[j, i] = usable[si] and text.startswith(s[k:])
    return StopPieces(contains=contains, ends=ends, starts=starts, strings=strings, splits=splits)


def stop_token_sequences(
    stop_strings: Iterable[str], encode: Callable[[str], list[int]]
) -> tuple[tuple[int, ...], ...]:
    """Token-id sequences that spell each stop string: its own encoding and the per-character encoding.

    (A byte-level BPE may write "\\n\\n" as one token or as two "\\n" tokens.) Only an early-exit shortcut: the
    prediction is still cut at the first stop *string* by :func:`truncate_at_stop`.
    """
    seqs: list[tuple[int, ...]] = []
    for s in stop_strings:
        if not s:
            continue
        for ids in (encode(s), [t for ch in s for t in encode(ch)]):
            if ids:
                seqs.append(tuple(int(t) for t in ids))
    return tuple(dict.fromkeys(seqs))


def truncate_at_stop(text: str, stop_strings: Iterable[str]) -> tuple[str, bool]:
    """``text`` up to the earliest occurrence of any stop string, and whether one was found."""
    cut = len(text)
    for s in stop_strings:
        if s:
            j = text.find(s)
            if 0 <= j < cut:
                cut = j
    return text[:cut], cut < len(text)
