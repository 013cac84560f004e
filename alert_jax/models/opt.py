"""OPT in Flax NNX, numerically identical to metaseq / Hugging Face ``OPTForCausalLM``.

Structure (``D`` hidden size, ``E`` token-embedding width, ``F`` FFN width, ``N`` heads, ``H`` head dim,
``P`` max positions, ``V`` vocabulary, ``Lyr`` layers)::

    token_embedding     [V, E]          ('vocab', 'embed')       tied with the LM head
    position_embedding  [P + 2, D]      (None, 'embed')          row = position + 2 (OPT's offset); padding row 1
    project_in_kernel   [E, D]          (None, 'embed')          only when E != D (opt-350m)
    project_out_kernel  [D, E]          ('embed', None)          only when E != D
    final_ln_scale/bias [D]             ('embed',)               only for pre-LN models
    layers.*            stacked along a leading 'layers' axis, applied with ``jax.lax.scan``; decoding reads a
                        per-layer copy in the decoding layout instead (:meth:`OPT.decode_layers`, models/decode_weights.py)

One block (pre-LN; post-LN moves each LayerNorm after its residual add)::

    h = h + dropout(out_proj(attention(q_proj(LN(h)) * H**-0.5, k_proj(LN(h)), v_proj(LN(h)))))
    h = h + dropout(fc2(relu(fc1(LN(h)))))

Parameter names end in ``kernel`` / ``embedding`` for matrices (weight-decayed) and ``bias`` / ``scale`` otherwise;
:func:`is_decayed` states that rule. Inputs follow the packing convention of ``alert_jax.data.pipeline``:
``tokens``, ``positions`` (0 at the first real token of each segment) and ``segment_ids`` (0 = padding), all
``[batch, length]`` int32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from alert_jax.models import decode_weights
from alert_jax.models.attention import attention, cached_attention, make_attention_mask
from alert_jax.models.sizes import OPTConfig
from alert_jax.parallel.sharding import LOGICAL_AXIS_RULES, logical_sharding, logical_to_spec

LN_EPS = 1e-5
INIT_STD = 0.02
POSITION_OFFSET = 2  # OPT's learned table reserves rows 0 and 1 (row 1 = padding)

# name -> (logical axes, initializer kind); shapes come from _layer_shapes.
LAYER_PARAMS: dict[str, tuple[tuple[str | None, ...], str]] = {
    "attn_ln_scale": (("layers", "embed"), "ones"),
    "attn_ln_bias": (("layers", "embed"), "zeros"),
    "q_kernel": (("layers", "embed", "heads", "kv"), "normal"),
    "q_bias": (("layers", "heads", "kv"), "zeros"),
    "k_kernel": (("layers", "embed", "heads", "kv"), "normal"),
    "k_bias": (("layers", "heads", "kv"), "zeros"),
    "v_kernel": (("layers", "embed", "heads", "kv"), "normal"),
    "v_bias": (("layers", "heads", "kv"), "zeros"),
    "out_kernel": (("layers", "heads", "kv", "embed"), "normal"),
    "out_bias": (("layers", "embed"), "zeros"),
    "ffn_ln_scale": (("layers", "embed"), "ones"),
    "ffn_ln_bias": (("layers", "embed"), "zeros"),
    "fc1_kernel": (("layers", "embed", "mlp"), "normal"),
    "fc1_bias": (("layers", "mlp"), "zeros"),
    "fc2_kernel": (("layers", "mlp", "embed"), "normal"),
    "fc2_bias": (("layers", "embed"), "zeros"),
}

_INITS: dict[str, Callable[..., jax.Array]] = {
    "ones": nnx.initializers.ones,
    "zeros": nnx.initializers.zeros,
    "normal": nnx.initializers.normal(INIT_STD),
}

_REMAT_POLICIES: dict[str, Any] = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "save_dots": jax.checkpoint_policies.dots_saveable,
    "save_dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _layer_shapes(c: OPTConfig) -> dict[str, tuple[int, ...]]:
    L, D, N, H, F = c.num_layers, c.hidden_size, c.num_heads, c.head_dim, c.ffn_dim
    return {
        "attn_ln_scale": (L, D),
        "attn_ln_bias": (L, D),
        "q_kernel": (L, D, N, H),
        "q_bias": (L, N, H),
        "k_kernel": (L, D, N, H),
        "k_bias": (L, N, H),
        "v_kernel": (L, D, N, H),
        "v_bias": (L, N, H),
        "out_kernel": (L, N, H, D),
        "out_bias": (L, D),
        "ffn_ln_scale": (L, D),
        "ffn_ln_bias": (L, D),
        "fc1_kernel": (L, D, F),
        "fc1_bias": (L, F),
        "fc2_kernel": (L, F, D),
        "fc2_bias": (L, D),
    }


def is_decayed(path: Sequence[Any]) -> bool:
    """Weight-decay rule: matrices (names ending in ``kernel`` or ``embedding``) decay; biases and LayerNorm
    scales/biases never do. ``path`` is an nnx state path, e.g. ``('layers', 'fc1_kernel')``."""
    return str(path[-1]).endswith(("kernel", "embedding"))


@flax.struct.dataclass
class KVCache:
    """Preallocated decoding cache; a pytree, so it passes through ``jax.jit`` and ``lax.while_loop``.

    Attributes:
      k, v: one ``[batch, heads, max_len, head_dim]`` array per layer (tuples of ``num_layers``), in the compute
        dtype. Separate buffers per layer let each step update and read a layer's cache in place (slicing one
        stacked array would copy the layer's cache every step); heads before columns let attention batch over
        contiguous ``(batch, heads)`` without transposing it.
      segment_ids: ``[batch, max_len]`` int32, 0 = empty column or padding (never attended to).
      positions: ``[batch, max_len]`` int32, the position each filled column was written with (per row, so a
        left-padded batch keeps each row's own positions).
      index: int32 scalar, the next free column (shared by all rows: rows are left-padded to end together).
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    segment_ids: jax.Array
    positions: jax.Array
    index: jax.Array

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]


KV_CACHE_LOGICAL_AXES = KVCache(  # of each layer's k / v array
    k=("batch", "heads", "length", "kv"),  # type: ignore[arg-type]
    v=("batch", "heads", "length", "kv"),  # type: ignore[arg-type]
    segment_ids=("batch", "length"),  # type: ignore[arg-type]
    positions=("batch", "length"),  # type: ignore[arg-type]
    index=(),  # type: ignore[arg-type]
)


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------------------------


def _constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names when a mesh is active; dimensions that do not divide the
    mesh axes they map to stay replicated. A no-op without a mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
    spec = []
    for dim, entry in zip(x.shape, logical_to_spec(names)):
        axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
        axes = tuple(a for a in axes if a in sizes)
        if not axes or dim % math.prod(sizes[a] for a in axes):
            spec.append(None)
        else:
            spec.append(axes[0] if len(axes) == 1 else axes)
    return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(*spec))


def _precision(dtype: Any) -> jax.lax.Precision | None:
    """float32 compute means float32 products: HIGHEST stops GPUs (TF32) and TPUs (bf16 passes) from rounding
    them silently (HF parity on a GPU needs it). 16-bit compute uses the backend's default."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """LayerNorm over the last axis with statistics in fp32 (eps 1e-5, biased variance as in torch)."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + LN_EPS)
    y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(x.dtype)


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    if key is None or rate <= 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _block(
    c: OPTConfig,
    p: dict[str, jax.Array],
    h: jax.Array,
    mask: jax.Array,
    key: jax.Array | None,
    cache: tuple[jax.Array, jax.Array, jax.Array] | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """One decoder block on ``h [B, T, D]``; ``p`` is one layer's weights in either layout of
    :mod:`alert_jax.models.decode_weights` (stored, or decoding).

    ``cache`` = (this layer's k ``[B, N, S, H]``, v, write index): the new keys/values are written in place at
    columns ``index .. index+T-1`` and attention runs over all S columns; the updated (k, v) are returned.
    """
    dt = h.dtype
    prec = _precision(dt)
    p = {name: a.astype(dt) for name, a in p.items()}
    if key is not None:
        k_attn, k_out, k_ffn = jax.random.split(key, 3)
    else:
        k_attn = k_out = k_ffn = None

    residual = h
    x = _layer_norm(h, p["attn_ln_scale"], p["attn_ln_bias"]) if c.do_layer_norm_before else h
    q, k, v = decode_weights.project_qkv(p, x, prec)
    q = q * jnp.asarray(c.head_dim**-0.5, dt)
    q = _constrain(q, ("batch", "length", "heads", "kv"))
    if cache is None:
        o = attention(
            q,
            k,
            v,
            mask,
            impl=c.attention_impl,
            dropout_rate=c.attention_dropout if k_attn is not None else 0.0,
            dropout_key=k_attn,
            causal_self_attention=True,
            precision=prec,
        )
        new_cache = None
    else:  # decoding is bandwidth-bound: one explicit pass over this layer's cache, whatever attention_impl says
        k_cache, v_cache, index = cache
        k_cache = jax.lax.dynamic_update_slice(k_cache, jnp.swapaxes(k, 1, 2).astype(k_cache.dtype), (0, 0, index, 0))
        v_cache = jax.lax.dynamic_update_slice(v_cache, jnp.swapaxes(v, 1, 2).astype(v_cache.dtype), (0, 0, index, 0))
        o = cached_attention(q, k_cache.astype(dt), v_cache.astype(dt), mask, precision=prec)
        new_cache = (k_cache, v_cache)
    o = decode_weights.project_out(p, o, prec)
    h = residual + _dropout(o, c.dropout, k_out)
    if not c.do_layer_norm_before:
        h = _layer_norm(h, p["attn_ln_scale"], p["attn_ln_bias"])

    residual = h
    x = _layer_norm(h, p["ffn_ln_scale"], p["ffn_ln_bias"]) if c.do_layer_norm_before else h
    x = _constrain(jax.nn.relu(decode_weights.dense(p, "fc1", x, prec)), ("batch", "length", "mlp"))
    x = decode_weights.dense(p, "fc2", x, prec)
    h = residual + _dropout(x, c.dropout, k_ffn)
    if not c.do_layer_norm_before:
        h = _layer_norm(h, p["ffn_ln_scale"], p["ffn_ln_bias"])
    h = _constrain(h, ("batch", "length", "embed"))
    return h, new_cache


def _dropout_key(rngs: nnx.Rngs | jax.Array | None, deterministic: bool, config: OPTConfig) -> jax.Array | None:
    if deterministic or (config.dropout <= 0.0 and config.attention_dropout <= 0.0):
        return None
    if rngs is None:
        raise ValueError("OPT(..., deterministic=False) needs rngs (an nnx.Rngs or a jax PRNG key) for dropout")
    if isinstance(rngs, nnx.Rngs):
        return rngs.dropout()
    return jnp.asarray(rngs)


# ----------------------------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------------------------


def _param(rngs: nnx.Rngs, shape: tuple[int, ...], names: tuple[str | None, ...], init: str, dtype: Any) -> nnx.Param:
    """A Param carrying its logical axis names. Eager sharding is off on every Param, so a model built with or
    without an active mesh has the same pytree metadata; sharded placement is done explicitly (create_model,
    param_shardings, convert.from_hf)."""
    return nnx.Param(_INITS[init](rngs.params(), shape, dtype), out_sharding=names, eager_sharding=False)


class OPTLayers(nnx.Module):
    """All decoder blocks' parameters, stacked along a leading ``layers`` axis (see ``LAYER_PARAMS``)."""

    def __init__(self, config: OPTConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.param_dtype)
        for name, shape in _layer_shapes(config).items():
            names, init = LAYER_PARAMS[name]
            setattr(self, name, _param(rngs, shape, names, init, dtype))

    def arrays(self) -> dict[str, jax.Array]:
        return {name: getattr(self, name)[...] for name in LAYER_PARAMS}


class OPT(nnx.Module):
    """OPT decoder with tied LM head. See the module docstring for parameter layout."""

    def __init__(self, config: OPTConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        dtype = jnp.dtype(c.param_dtype)
        self.token_embedding = _param(rngs, (c.vocab_size, c.embed_dim), ("vocab", "embed"), "normal", dtype)
        self.position_embedding = _param(
            rngs, (c.max_position_embeddings + POSITION_OFFSET, c.hidden_size), (None, "embed"), "normal", dtype
        )
        self.project_in_kernel = (
            _param(rngs, (c.embed_dim, c.hidden_size), (None, "embed"), "normal", dtype)
            if c.has_projection
            else None
        )
        self.project_out_kernel = (
            _param(rngs, (c.hidden_size, c.embed_dim), ("embed", None), "normal", dtype)
            if c.has_projection
            else None
        )
        if c.has_final_layer_norm:
            self.final_ln_scale = _param(rngs, (c.hidden_size,), ("embed",), "ones", dtype)
            self.final_ln_bias = _param(rngs, (c.hidden_size,), ("embed",), "zeros", dtype)
        else:
            self.final_ln_scale = None
            self.final_ln_bias = None
        self.layers = OPTLayers(c, rngs=rngs)

    # -- pieces ------------------------------------------------------------------------------------------------

    @property
    def _dtype(self) -> jnp.dtype:
        return jnp.dtype(self.config.dtype)

    def _embed(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> jax.Array:
        """``[B, T]`` ints -> ``[B, T, D]``: token embedding (projected in) + learned position (row pos + 2;
        padding uses row 1 like HF). Out-of-range ids give NaN (``jnp.take``'s fill mode), never a silent clip."""
        dt = self._dtype
        # Gather the table's embed dim first (FSDP all-gather): a lookup into an embed-sharded table would give an
        # embed-sharded output that XLA must fully rematerialize to reach the batch-sharded activation layout.
        table = _constrain(self.token_embedding[...], ("vocab", None))
        x = jnp.take(table, tokens, axis=0).astype(dt)
        if self.project_in_kernel is not None:
            x = jnp.matmul(x, self.project_in_kernel[...].astype(dt), precision=_precision(dt))
        rows = jnp.where(segment_ids != 0, positions + POSITION_OFFSET, POSITION_OFFSET - 1)
        x = x + jnp.take(self.position_embedding[...], rows, axis=0).astype(dt)
        return _constrain(x, ("batch", "length", "embed"))

    def _head(self, h: jax.Array, few_rows: bool = False) -> jax.Array:
        """``[B, T, D]`` -> float32 logits ``[B, T, V]`` (final LN if pre-LN, project out, tied embedding).
        ``few_rows`` (decode steps): the ``[V, E]`` table as the row operand (``decode_weights.rows_last``)."""
        dt = self._dtype
        prec = _precision(dt)
        if self.final_ln_scale is not None:
            h = _layer_norm(h, self.final_ln_scale[...], self.final_ln_bias[...])
        if self.project_out_kernel is not None:
            h = jnp.matmul(h, self.project_out_kernel[...].astype(dt), precision=prec)
        table = self.token_embedding[...].astype(dt)
        if few_rows:
            B, T, E = h.shape
            logits = decode_weights.rows_last("ve,me->vm", table, h.reshape(B * T, E), prec, jnp.float32)
            logits = logits.reshape(B, T, -1)
        else:
            logits = jnp.einsum("bte,ve->btv", h, table, preferred_element_type=jnp.float32, precision=prec)
        return _constrain(logits, ("batch", "length", "vocab"))

    def _scan_layers(self, h: jax.Array, mask: jax.Array, key: jax.Array | None) -> jax.Array:
        """The full forward's blocks: one ``lax.scan`` over the stacked layer weights (and per-layer dropout keys)."""
        c = self.config
        keys = None if key is None else jax.random.split(key, c.num_layers)

        def body(carry, xs):
            p, k = xs
            out, _ = _block(c, p, carry, mask, k)
            return out, None

        if c.remat_policy != "none":
            body = jax.checkpoint(body, policy=_REMAT_POLICIES[c.remat_policy], prevent_cse=False)
        h, _ = jax.lax.scan(body, h, (self.layers.arrays(), keys), unroll=min(int(c.scan_unroll), c.num_layers))
        return h

    # -- public API --------------------------------------------------------------------------------------------

    def __call__(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | jax.Array | None = None,
    ) -> jax.Array:
        """Full forward pass.

        Args:
          tokens, positions, segment_ids: int32 ``[B, L]``. ``positions`` start at 0 at the first real token of
            each segment (the model adds OPT's offset of 2); ``segment_ids`` 0 marks padding.
          deterministic: False enables dropout (``config.dropout`` on residual branches, ``config.attention_dropout``
            on attention probabilities); then ``rngs`` (nnx.Rngs with a 'dropout' or 'default' stream, or a key)
            is required.
        Returns:
          float32 logits ``[B, L, vocab_size]``. Rows of padding carry finite garbage.
        """
        tokens, positions, segment_ids = (jnp.asarray(a, jnp.int32) for a in (tokens, positions, segment_ids))
        key = _dropout_key(rngs, deterministic, self.config)
        h = self._embed(tokens, positions, segment_ids)
        cols = jnp.arange(tokens.shape[1], dtype=jnp.int32)
        mask = make_attention_mask(segment_ids, segment_ids, cols, cols)
        h = self._scan_layers(h, mask, key)
        return self._head(h)

    def init_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty cache for ``batch_size`` rows of up to ``max_len`` columns (padding + prompt + generated).
        Positions written into it must stay below ``config.max_position_embeddings``."""
        c = self.config
        shape = (batch_size, c.num_heads, max_len, c.head_dim)

        def empty(names):
            return tuple(_constrain(jnp.zeros(shape, self._dtype), names) for _ in range(c.num_layers))

        ids = jnp.zeros((batch_size, max_len), jnp.int32)
        return KVCache(
            k=empty(KV_CACHE_LOGICAL_AXES.k),
            v=empty(KV_CACHE_LOGICAL_AXES.v),
            segment_ids=ids,
            positions=ids,
            index=jnp.zeros((), jnp.int32),
        )

    def decode_layers(self) -> list[dict[str, jax.Array]]:
        """The block weights in the decoding layout (:func:`alert_jax.models.decode_weights.decode_layers`): one dict
        per layer, output dims first, q/k/v stacked, in the compute dtype.

        For decoding loops: make them once, outside the loop, and pass them to :meth:`decode` as ``layers``. They
        are new buffers (one more copy of the block weights while they live); made inside a loop they would be
        rebuilt, i.e. copied, on every step.
        """
        return decode_weights.decode_layers(self.layers.arrays(), self.config.num_layers, self._dtype)

    def decode(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array,
        cache: KVCache,
        layers: list[dict[str, jax.Array]] | None = None,
    ) -> tuple[jax.Array, KVCache]:
        """Runs ``T`` new tokens per row against the cache (prefill: T = prompt length; steps: T = 1).

        ``tokens``/``positions``/``segment_ids`` ``[B, T]`` are written at columns ``cache.index .. index+T-1`` of
        every row (rows are LEFT-padded so they all end at the same column; padding has segment id 0). A query at
        column ``c`` attends to filled columns ``<= c`` with its own nonzero segment id. The caller keeps
        ``index + T <= cache.max_len`` (a write past the end would be clamped by ``dynamic_update_slice``).

        The blocks run one after the other (unrolled, not scanned: each layer reads its own weight and cache buffers
        in place; a scan would slice both out of stacked arrays, i.e. copy them, every step). ``layers``: the
        weights from :meth:`decode_layers`, made once outside the caller's loop; ``None`` slices the stored layout
        here, one layer at a time (XLA copies each slice: slower, but never a second copy of all the weights).

        Returns float32 logits ``[B, T, V]`` (equal to the full forward's for the same tokens) and the new cache.
        Always deterministic (no dropout).
        """
        tokens, positions, segment_ids = (jnp.asarray(a, jnp.int32) for a in (tokens, positions, segment_ids))
        T = tokens.shape[1]
        index = jnp.asarray(cache.index, jnp.int32)
        seg = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids, (0, index))
        pos = jax.lax.dynamic_update_slice(cache.positions, positions, (0, index))
        q_cols = index + jnp.arange(T, dtype=jnp.int32)
        kv_cols = jnp.arange(cache.max_len, dtype=jnp.int32)
        mask = make_attention_mask(segment_ids, seg, q_cols, kv_cols)
        h = self._embed(tokens, positions, segment_ids)
        if layers is None:
            stacked = self.layers.arrays()
            layers = [{name: a[i] for name, a in stacked.items()} for i in range(self.config.num_layers)]
        if len(layers) != self.config.num_layers or len(cache.k) != self.config.num_layers:
            raise ValueError(f"decode: got weights for {len(layers)} layers and a cache of {len(cache.k)}; the model "
                             f"has {self.config.num_layers}")
        ks, vs = [], []
        for p, k, v in zip(layers, cache.k, cache.v):
            h, (k, v) = _block(self.config, p, h, mask, None, (k, v, index))
            ks.append(k)
            vs.append(v)
        logits = self._head(h, few_rows=T == 1)
        return logits, KVCache(k=tuple(ks), v=tuple(vs), segment_ids=seg, positions=pos, index=index + T)


# ----------------------------------------------------------------------------------------------------------------
# Construction helpers
# ----------------------------------------------------------------------------------------------------------------


def param_shardings(model: OPT | nnx.State, mesh: jax.sharding.Mesh) -> nnx.State:
    """``NamedSharding`` per Param (same pytree structure as ``nnx.state(model, nnx.Param)``), from each Param's
    logical axis names through THE rule table. Works on abstract models too; use it for jit in/out shardings."""
    state = model if isinstance(model, nnx.State) else nnx.state(model, nnx.Param)
    return jax.tree.map(
        lambda v: v.replace(logical_sharding(mesh, v.get_metadata().get("out_sharding"))),
        state,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


def create_model(config: OPTConfig, mesh: jax.sharding.Mesh | None = None, rngs_seed: int = 0) -> OPT:
    """A randomly initialised OPT (N(0, 0.02) matrices, zero biases, unit LN scales).

    Params are created by one jitted program whose outputs are sharded on ``mesh`` by their logical names, so no
    device ever holds an unsharded copy (``mesh=None``: the default device).
    """
    graphdef, abstract_state = nnx.split(abstract_model(config))
    shardings = None if mesh is None else param_shardings(abstract_state, mesh)

    def init() -> nnx.State:
        return nnx.state(OPT(config, rngs=nnx.Rngs(rngs_seed)))

    if mesh is None:
        state = jax.jit(init)()
    else:
        with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
            state = jax.jit(init, out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def abstract_model(config: OPTConfig) -> OPT:
    """The model with ``jax.ShapeDtypeStruct`` leaves (``nnx.eval_shape``): shapes, dtypes and logical names,
    nothing allocated."""
    return nnx.eval_shape(lambda: OPT(config, rngs=nnx.Rngs(0)))


def param_logical_axes(model: OPT) -> dict[tuple[str, ...], tuple[str | None, ...]]:
    """``{state path: logical axis names}`` of every Param."""
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        out[tuple(str(p) for p in path)] = tuple(var.get_metadata().get("out_sharding") or ())
    return out


def count_params(config: OPTConfig) -> int:
    """Number of parameters, from abstract shapes only (safe for 175b on a laptop)."""
    state = nnx.state(abstract_model(config), nnx.Param)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state))
