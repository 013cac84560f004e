"""KV-cache decoding of batches of left-padded prompts (DESIGN.md section 6).

Two layers:

* :func:`decode_batch` -- the jitted core. One prefill of the ``[batch, prompt_len - 1]`` block with
  ``model.decode`` into a cache preallocated for ``prompt_len - 1 + max_new_tokens`` columns (its logits are unused,
  so the compiled program never computes the ``[batch, prompt_len, vocab]`` LM head), then a ``lax.while_loop`` of
  one-token steps -- the first feeds the last prompt token -- that ends when every row has ended (EOS, a stop token
  sequence, a stop string inside the last one or two generated tokens' text, or ``max_new_tokens``).
* :class:`Generator` -- the host side: builds the model's decoding weights once (``models.decode_weights``), sorts
  prompts by length, rounds each prompt length up to a *bucket* and the number of rows up to a fixed batch size
  (dummy rows), so decoding a whole task compiles a handful of times; puts the inputs on the mesh with
  ``batch_sharding``; returns per-prompt token lists in the caller's order.

Invariants
----------
* Prompts are LEFT-padded: every row's last prompt token sits in the last prompt column, so the first step feeds
  all rows' last prompt tokens at one cache column and every later step writes one shared column too.
* Positions are per row: a token's position is the number of real tokens before it in its row (never its column);
  padding has segment id 0 and position 0, real tokens segment id 1.
* Output rows hold the generated tokens, EOS excluded, then ``pad_id``. The tokens that complete a stop are
  *included* in the output (string truncation at the first stop string is done post hoc by
  :func:`truncate_at_stop`), because a device-side match is only a shortcut: the string rule is the definition.
  Stop checks see generated tokens only, never the prompt (see :mod:`alert_jax.eval.stops`).
* Rows are independent (attention never crosses rows), so a batch decodes exactly like its rows one at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alert_jax.eval.stops import StopPieces
from alert_jax.models.decode_weights import DecodeWeights, build_decode_weights
from alert_jax.models.opt import OPT
from alert_jax.parallel import sharding as sharding_lib

# Why a row stopped, as stored in ``DecodeResult.finish``.
FINISH_LENGTH, FINISH_EOS, FINISH_STOP = 0, 1, 2
FINISH_NAMES = {FINISH_LENGTH: "length", FINISH_EOS: "eos", FINISH_STOP: "stop"}


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """Decoding settings.

    ``temperature == 0`` is greedy (argmax, first index on ties, as ``torch.argmax``); otherwise tokens are sampled
    from ``softmax(logits / temperature)`` restricted to the smallest top-p nucleus.
    ``stop_sequences``: token-id sequences; a row ends once its *generated* tokens end with one of them.
    ``stop_pieces``: :class:`~alert_jax.eval.stops.StopPieces` from :func:`stop_piece_tables` (``None``: off); a
    row also ends once its newest generated token's text contains a stop string, or the previous generated token's
    text ends with a prefix of one and the newest token's text starts with the rest.

    Only ``max_new_tokens``, greedy-vs-sampling, nucleus-or-not and the (rounded-up) stop-table shapes are compiled
    in; ``eos_id``, ``pad_id``, the stop tokens and piece tables, ``temperature`` and ``top_p``
    are passed as arrays, so changing them does not recompile.
    """

    max_new_tokens: int = 64
    eos_id: int = 2
    pad_id: int = 1
    stop_sequences: tuple[tuple[int, ...], ...] = ()
    stop_pieces: StopPieces | None = None
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        seqs = tuple(tuple(int(t) for t in s) for s in self.stop_sequences)
        if any(len(s) == 0 for s in seqs):
            raise ValueError("stop_sequences may not contain an empty sequence")
        if any(t < 0 for s in seqs for t in s):
            raise ValueError("stop_sequences hold token ids, which are >= 0")
        object.__setattr__(self, "stop_sequences", tuple(dict.fromkeys(seqs)))
        if self.stop_pieces is not None and not isinstance(self.stop_pieces, StopPieces):
            raise TypeError(f"stop_pieces must be StopPieces (stop_piece_tables(...)) or None, "
                            f"got {type(self.stop_pieces).__name__}")

    def static(self) -> _Static:
        """The compiled-in part: stop tables are rounded up to multiples of 4 sequences x 8 tokens, piece tables
        to multiples of 4 rows (0 rows and 0 vocab without ``stop_pieces``: the check is compiled out)."""
        n = len(self.stop_sequences)
        pieces = self.stop_pieces
        piece_rows = 4 * math.ceil(pieces.rows / 4) if pieces is not None and pieces.rows else 0
        longest = max((len(s) for s in self.stop_sequences), default=0)
        return _Static(
            max_new_tokens=int(self.max_new_tokens),
            sample=self.temperature > 0,
            nucleus=self.temperature > 0 and self.top_p < 1,
            stop_rows=4 * max(1, math.ceil(n / 4)),
            stop_cols=8 * max(1, math.ceil(longest / 8)),
            piece_rows=piece_rows,
            piece_vocab=pieces.vocab_size if piece_rows else 0,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The non-static settings as arrays; stops right-aligned in a ``[stop_rows, stop_cols]`` table; piece tables
        ``piece_contains`` / ``piece_ends`` / ``piece_starts`` bool ``[piece_rows, piece_vocab]``, False-padded.
        Built once per options object (every decode call of a run passes the same tables)."""
        cached = self.__dict__.get("_arrays")
        if cached is None:
            cached = self._build_arrays()
            object.__setattr__(self, "_arrays", cached)  # not a field: equality and hashing are unaffected
        return cached

    def _build_arrays(self) -> dict[str, np.ndarray]:
        st = self.static()
        table = np.full((st.stop_rows, st.stop_cols), -2, np.int32)
        lengths = np.zeros((st.stop_rows,), np.int32)
        for i, seq in enumerate(self.stop_sequences):
            table[i, st.stop_cols - len(seq) :] = seq
            lengths[i] = len(seq)
        piece = {name: np.zeros((st.piece_rows, st.piece_vocab), bool) for name in ("contains", "ends", "starts")}
        if st.piece_rows:
            for name, full in piece.items():
                src = getattr(self.stop_pieces, name)
                full[: src.shape[0]] = src
        return {
            "eos_id": np.int32(self.eos_id),
            "pad_id": np.int32(self.pad_id),
            "stops": table,
            "stop_lengths": lengths,
            **{f"piece_{name}": arr for name, arr in piece.items()},
            "temperature": np.float32(max(self.temperature, 1e-6)),
            "top_p": np.float32(self.top_p),
        }


@dataclasses.dataclass(frozen=True)
class _Static:
    """The compiled-in part of :class:`DecodeOptions`."""

    max_new_tokens: int
    sample: bool
    nucleus: bool
    stop_rows: int
    stop_cols: int
    piece_rows: int = 0
    piece_vocab: int = 0


@dataclasses.dataclass
class DecodeResult:
    """Output of :func:`decode_batch` (a pytree of device arrays; replicated when decoded on a mesh).

    tokens: ``[batch, max_new_tokens]`` int32 generated ids, EOS excluded, ``pad_id`` after the end.
    lengths: ``[batch]`` int32 number of generated tokens before EOS (stop-sequence tokens are counted).
    finish: ``[batch]`` int32 ``FINISH_LENGTH`` / ``FINISH_EOS`` / ``FINISH_STOP``.
    steps: scalar int32, decode steps the loop ran (``<= max_new_tokens``; fewer when every row ended early).
    """

    tokens: Any
    lengths: Any
    finish: Any
    steps: Any


jax.tree_util.register_dataclass(DecodeResult, data_fields=["tokens", "lengths", "finish", "steps"], meta_fields=[])


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """``[batch, length]`` 0/1 real-token mask -> positions = number of real tokens before (0 on padding)."""
    mask = mask.astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0) * mask


def _nucleus_filter(logits: jax.Array, top_p: float) -> jax.Array:
    """Sets logits outside the smallest set of tokens whose probability reaches ``top_p`` to -inf. ``[B, V]``."""
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # probability mass of strictly more likely tokens
    keep = before < top_p  # always keeps the most likely token
    n_keep = jnp.sum(keep, axis=-1, keepdims=True)
    threshold = jnp.take_along_axis(sorted_logits, n_keep - 1, axis=-1)
    return jnp.where(logits >= threshold, logits, -jnp.inf)


def _select(logits: jax.Array, rng: jax.Array, static: _Static, dyn: dict[str, jax.Array]) -> jax.Array:
    """Next token ``[B]`` int32 from float32 logits ``[B, V]``."""
    if not static.sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / dyn["temperature"]
    if static.nucleus:
        logits = _nucleus_filter(logits, dyn["top_p"])
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _piece_stop(prev: jax.Array, tok: jax.Array, dyn: dict[str, jax.Array]) -> jax.Array:
    """``[B]`` bool: a stop string lies inside ``tok``'s text or across ``prev``'s and ``tok``'s (``[B]`` ids;
    ``prev`` -1 when ``tok`` is the first generated token). Ids outside ``[0, piece_vocab)`` match nothing."""

    def lookup(table: jax.Array, ids: jax.Array) -> jax.Array:  # [R, V] bool, [B] -> [B, R]
        vocab = table.shape[1]
        inside = (ids >= 0) & (ids < vocab)
        return jnp.take(table, jnp.clip(ids, 0, vocab - 1), axis=1).T & inside[:, None]

    within = lookup(dyn["piece_contains"], tok)  # [B, R]: row s, tok's text contains stop string s
    across = lookup(dyn["piece_ends"], prev) & lookup(dyn["piece_starts"], tok)  # split (s, k): s[:k] | s[k:]
    return jnp.any(within | across, axis=1)


def _decode_core(
    graphdef: Any,
    state: Any,
    weights: DecodeWeights,
    tokens: jax.Array,
    mask: jax.Array,
    active: jax.Array,
    rng: jax.Array,
    dyn: dict[str, jax.Array],
    *,
    static: _Static,
) -> DecodeResult:
    """Pure decode: prefill then a while loop of single-token steps. See :func:`decode_batch`."""
    model = nnx.merge(graphdef, state)
    batch, prompt_len = tokens.shape
    n_new = static.max_new_tokens
    eos_id, pad_id = dyn["eos_id"], dyn["pad_id"]
    mask = mask.astype(jnp.int32)
    tokens = tokens.astype(jnp.int32)
    positions = positions_from_mask(mask)
    lengths_in = jnp.sum(mask, axis=1)  # real prompt tokens per row

    # Prefill all prompt columns but the last, discarding the logits (so XLA drops the [B, P, V] LM head); the last
    # prompt token is fed by the first loop step, whose logits give generated token 0. Every row's last prompt
    # token is real (left padding), so all rows start generating at the same column.
    cache = model.init_cache(batch, prompt_len - 1 + n_new)
    if prompt_len > 1:
        _, cache = model.decode(tokens[:, :-1], positions[:, :-1], mask[:, :-1], cache, weights)
        cache = cache.constrain()

    # Stop table [S, C], right-aligned; column j of a stop of length n is checked iff j >= C - n.
    stops, stop_lengths = dyn["stops"], dyn["stop_lengths"]
    checked = jnp.arange(static.stop_cols)[None, :] >= (static.stop_cols - stop_lengths)[:, None]  # [S, C]

    def record(step, tok, carry):
        """Writes token ``tok`` [B] as generated token number ``step`` and updates the end-of-row bookkeeping."""
        out, lengths, finish, done, tail = carry
        tok = jnp.where(done, pad_id, tok)
        is_eos = (tok == eos_id) & ~done
        # tail: the last stop_cols generated tokens (-1 before the first), so prompts never match.
        tail = jnp.concatenate([tail[:, 1:], jnp.where(done, -1, tok)[:, None]], axis=1)
        same = (tail[:, None, :] == stops[None, :, :]) | ~checked[None]  # [B, S, C]
        hit = jnp.any(jnp.all(same, axis=2) & (stop_lengths > 0)[None, :], axis=1)
        if static.piece_rows:  # stop strings merged into the text of the last one or two generated tokens
            hit = hit | _piece_stop(tail[:, -2], tail[:, -1], dyn)
        is_stop = hit & ~done & ~is_eos
        written = jnp.where(is_eos, pad_id, tok)
        out = jax.lax.dynamic_update_slice(out, written[:, None], (0, step))
        lengths = lengths + (~done & ~is_eos).astype(jnp.int32)
        finish = jnp.where(is_eos, FINISH_EOS, jnp.where(is_stop, FINISH_STOP, finish))
        done = done | is_eos | is_stop
        return (out, lengths, finish, done, tail), tok

    init = (
        jnp.full((batch, n_new), pad_id, jnp.int32),
        jnp.zeros((batch,), jnp.int32),
        jnp.full((batch,), FINISH_LENGTH, jnp.int32),
        ~active.astype(bool),  # dummy rows are done from the start: they never keep the loop running
        jnp.full((batch, static.stop_cols), -1, jnp.int32),
    )

    def cond(loop):
        step, _, _, carry = loop
        return (step < n_new) & ~jnp.all(carry[3])

    def body(loop):
        step, last, cache, carry = loop
        pos = (lengths_in - 1 + step)[:, None]  # feeding the last prompt token (step 0) or generated token step-1
        step_logits, cache = model.decode(last[:, None], pos, jnp.ones_like(pos), cache, weights)
        cache = cache.constrain()
        tok = _select(step_logits[:, -1, :], jax.random.fold_in(rng, step), static, dyn)
        carry, tok = record(step, tok, carry)
        return step + 1, tok, cache, carry

    steps, _, _, carry = jax.lax.while_loop(cond, body, (jnp.int32(0), tokens[:, -1], cache, init))
    out, lengths, finish, _, _ = carry
    return DecodeResult(tokens=out, lengths=lengths, finish=finish, steps=steps)


@functools.lru_cache(maxsize=64)
def _compiled(graphdef: Any, static: _Static, mesh: Mesh | None) -> Callable:
    fn = functools.partial(_decode_core, graphdef, static=static)
    if mesh is None:
        return jax.jit(fn)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(fn, out_shardings=DecodeResult(replicated, replicated, replicated, replicated))


def compiled_function(model_or_graphdef: Any, options: DecodeOptions, mesh: Mesh | None = None) -> Callable:
    """The jitted decode function that :func:`decode_batch` uses for these settings (``_cache_size()`` tells how
    many shapes it has compiled)."""
    graphdef = nnx.split(model_or_graphdef)[0] if isinstance(model_or_graphdef, nnx.Module) else model_or_graphdef
    return _compiled(graphdef, options.static(), mesh)


def prepare_weights(
    model: nnx.Module | tuple[Any, Any], *, per_layer: bool = True, mesh: Mesh | None = None
) -> DecodeWeights:
    """The model's :class:`~alert_jax.models.decode_weights.DecodeWeights`, built once for many :func:`decode_batch`
    calls (the :class:`Generator` holds them). ``per_layer``: one buffer set per layer in the compute dtype and the
    backend's layout (one more copy of the block weights, sharded like the weights they come from); ``False``: the
    stored stack itself, sliced inside every step (no copy)."""
    graphdef, state = model if isinstance(model, tuple) else nnx.split(model)
    if not per_layer:
        stored = nnx.merge(graphdef, state).layers.stored()
        return build_decode_weights(stored, None, per_layer=False)
    fn = _weights_fn(graphdef)
    if mesh is None:
        return fn(state)
    with sharding_lib.use_mesh(mesh):
        return fn(state)


@functools.lru_cache(maxsize=8)
def _weights_fn(graphdef: Any) -> Callable:
    def build(state: Any) -> DecodeWeights:
        model = nnx.merge(graphdef, state)
        return build_decode_weights(model.layers.stored(), model.config.runtime.dtype, per_layer=True)

    return jax.jit(build)


def decode_batch(
    model: nnx.Module | tuple[Any, Any],
    weights: DecodeWeights,
    tokens: jax.Array | np.ndarray,
    mask: jax.Array | np.ndarray,
    options: DecodeOptions,
    *,
    active: jax.Array | np.ndarray | None = None,
    rng: jax.Array | None = None,
    mesh: Mesh | None = None,
) -> DecodeResult:
    """Decodes one batch of LEFT-padded prompts under ``jit``.

    Args:
      model: an ``OPT`` (anything with ``init_cache``/``decode`` per the contract) or its ``nnx.split`` pair
        ``(graphdef, state)`` (cheaper when called repeatedly: no split per call).
      weights: :func:`prepare_weights` of the same model, built once by the caller.
      tokens: ``[batch, prompt_len]`` int32 prompt ids, left-padded (any pad value).
      mask: ``[batch, prompt_len]`` 1 on real tokens, 0 on padding; every row needs >= 1 real token, and real
        tokens must be contiguous at the right end of the row.
      options: settings; one compile per ``(graphdef, options.static(), mesh, shapes)``.
      active: ``[batch]`` bool, False for filler rows (they count as ended from the start and generate nothing);
        default all True.
      rng: PRNG key for sampling (ignored when greedy).
      mesh: when given, the call runs under the mesh and the logical-axis rules; inputs should already be
        sharded (``batch_sharding``), outputs come back replicated (readable on every process).
    Returns:
      :class:`DecodeResult` of device arrays.
    """
    graphdef, state = model if isinstance(model, tuple) else nnx.split(model)
    if rng is None:
        rng = jax.random.key(0)
    if active is None:
        active = np.ones((np.shape(tokens)[0],), bool)
    fn = _compiled(graphdef, options.static(), mesh)
    dyn = options.arrays()
    if mesh is None:
        return fn(state, weights, tokens, mask, active, rng, dyn)
    with sharding_lib.use_mesh(mesh):
        return fn(state, weights, tokens, mask, active, rng, dyn)


# ----------------------------------------------------------------------------------------------------------------
# Host side: buckets, fixed batch sizes, ordering.


def default_buckets(max_len: int, smallest: int = 16) -> tuple[int, ...]:
    """Prompt-length buckets: powers of two and 1.5x powers of two from ``smallest`` up to ``max_len``.

    Padding waste is at most ~33% and a task spanning 16..2048 tokens compiles at most 14 shapes (usually 3-5).
    ``max_len`` itself is always the last bucket.
    """
    out = set()
    size = smallest
    while size < max_len:
        out.add(size)
        if size * 3 // 2 < max_len and size >= 32:
            out.add(size * 3 // 2)
        size *= 2
    out.add(max_len)
    return tuple(sorted(out))


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """Smallest bucket ``>= length``; ValueError naming the longest bucket when none fits."""
    for b in buckets:
        if length <= b:
            return b
    raise ValueError(f"prompt of {length} tokens is longer than the largest bucket {max(buckets)}")


@dataclasses.dataclass(frozen=True)
class Generation:
    """One prompt's continuation: ``tokens`` (EOS excluded) and why it ended (``'eos' | 'stop' | 'length'``)."""

    tokens: list[int]
    finish: str


class Generator:
    """Decodes lists of token-id prompts with bucketing and fixed batch sizes.

    Usage::

        options = DecodeOptions(max_new_tokens=64, stop_sequences=stop_token_sequences(stops, tok.encode),
                                stop_pieces=stop_piece_tables(stops, tok))  # tables: once per tokenizer
        gen = Generator(model, options, batch_size=8, mesh=mesh)
        outs = gen.generate([[2, 100, 200], [2, 7]])   # -> [Generation, ...] in input order

    ``batch_size`` is rounded up to a multiple of the mesh's batch axes (data x fsdp). Short final batches are
    filled with one-token dummy rows whose results are dropped. ``per_layer_weights`` (``eval.unstack_layers``): the
    generator holds per-layer decoding weights (:func:`prepare_weights`: one more copy of the block weights) for
    its lifetime; ``False`` decodes from the stored stack (less memory, slower steps).
    """

    def __init__(
        self,
        model: OPT,
        options: DecodeOptions,
        *,
        batch_size: int = 8,
        mesh: Mesh | None = None,
        buckets: Sequence[int] | None = None,
        max_prompt_len: int | None = None,
        seed: int = 0,
        per_layer_weights: bool = True,
    ) -> None:
        self.graphdef, self.state = nnx.split(model)
        self.options = options
        self.mesh = mesh
        self.weights = prepare_weights((self.graphdef, self.state), per_layer=per_layer_weights, mesh=mesh)
        shards = 1 if mesh is None else sharding_lib.batch_shards(mesh)
        self.batch_size = math.ceil(max(1, batch_size) / shards) * shards
        limit = model.config.arch.max_position_embeddings
        if max_prompt_len is None:
            max_prompt_len = limit - options.max_new_tokens
        if max_prompt_len < 1:
            raise ValueError(
                f"max_new_tokens={options.max_new_tokens} leaves no room for a prompt in a context of {limit}"
            )
        self.max_prompt_len = int(max_prompt_len)
        self.buckets = tuple(sorted(b for b in (buckets or ()) if 0 < b < self.max_prompt_len))
        self.buckets = self.buckets if buckets else default_buckets(self.max_prompt_len)
        if not self.buckets or self.buckets[-1] < self.max_prompt_len:
            self.buckets = self.buckets + (self.max_prompt_len,)
        self._rng = jax.random.key(seed)
        self._calls = 0
        self.compiled_shapes: set[tuple[int, int]] = set()  # (batch, bucket) shapes decoded: one program each

    def _put(self, array: np.ndarray) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(array)
        sharding = sharding_lib.logical_sharding(self.mesh, ("batch", "length")[: array.ndim], array.shape)
        # Every process holds the same full batch (prompts are rendered deterministically everywhere).
        return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])

    def generate(
        self, prompts: Sequence[Sequence[int]], *, progress: Callable[[int], None] | None = None
    ) -> list[Generation]:
        """Continuations of ``prompts`` (each a non-empty list of ids, at most ``max_prompt_len``) in input order.

        ``progress(n)`` is called after each batch with the number of real prompts it finished.
        """
        for i, p in enumerate(prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty (add BOS)")
            if len(p) > self.max_prompt_len:
                raise ValueError(
                    f"prompt {i} has {len(p)} tokens, more than max_prompt_len={self.max_prompt_len} "
                    f"(context minus max_new_tokens={self.options.max_new_tokens})"
                )
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        by_bucket: dict[int, list[int]] = {}
        for i in order:
            by_bucket.setdefault(bucket_for(len(prompts[i]), self.buckets), []).append(i)
        for bucket, idxs in sorted(by_bucket.items()):
            for start in range(0, len(idxs), self.batch_size):
                chunk = idxs[start : start + self.batch_size]
                tokens = np.full((self.batch_size, bucket), self.options.pad_id, np.int32)
                mask = np.zeros((self.batch_size, bucket), np.int32)
                active = np.arange(self.batch_size) < len(chunk)
                for row in range(self.batch_size):
                    ids = prompts[chunk[row]] if active[row] else [self.options.pad_id]  # one-token filler row
                    tokens[row, bucket - len(ids) :] = ids
                    mask[row, bucket - len(ids) :] = 1
                rng = jax.random.fold_in(self._rng, self._calls)
                self._calls += 1
                self.compiled_shapes.add((self.batch_size, bucket))
                res = decode_batch(
                    (self.graphdef, self.state), self.weights, self._put(tokens), self._put(mask), self.options,
                    active=self._put(active), rng=rng, mesh=self.mesh,
                )
                out, lengths, finish = (np.asarray(x) for x in (res.tokens, res.lengths, res.finish))
                for row, i in enumerate(chunk):
                    results[i] = Generation(
                        tokens=out[row, : lengths[row]].tolist(), finish=FINISH_NAMES[int(finish[row])]
                    )
                if progress is not None:
                    progress(len(chunk))
        return results  # type: ignore[return-value]
