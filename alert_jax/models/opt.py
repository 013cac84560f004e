"""OPT in Flax NNX, numerically identical to metaseq / Hugging Face ``OPTForCausalLM``.

Structure (``D`` hidden size, ``E`` token-embedding width, ``F`` FFN width, ``N`` heads, ``H`` head dim,
``P`` max positions, ``V`` vocabulary, ``Lyr`` layers)::

    token_embedding     [V, E]          ('vocab', 'embed')       tied with the LM head
    position_embedding  [P + 2, D]      (None, 'embed')          row = position + 2 (OPT's offset); padding row 1
    project_in_kernel   [E, D]          (None, 'embed')          only when E != D (opt-350m)
    project_out_kernel  [D, E]          ('embed', None)          only when E != D
    final_ln_scale/bias [D]             ('embed',)               only for pre-LN models
    layers.*            stacked along a leading 'layers' axis (a ``decode_weights.StoredBlock``), applied with
                        ``jax.lax.scan``; decoding reads the ``decode_weights.DecodeWeights`` its caller built

One block (pre-LN; post-LN moves each LayerNorm after its residual add)::

    h = h + dropout(out_proj(attention(q_proj(LN(h)) * H**-0.5, k_proj(LN(h)), v_proj(LN(h)))))
    h = h + dropout(fc2(relu(fc1(LN(h)))))

Parameter names end in ``kernel`` / ``embedding`` for matrices (weight-decayed) and ``bias`` / ``scale`` otherwise
(the weight-decay rule is ``train.optimizer.is_decayed``). Inputs follow the packing convention of
``alert_jax.data.pipeline``: ``tokens``, ``positions`` (0 at the first real token of each segment) and
``segment_ids`` (0 = padding), all ``[batch, length]`` int32.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from alert_jax.models.attention import attention, cached_attention, make_attention_mask
from alert_jax.models.decode_weights import Block, DecodeWeights, StoredBlock
from alert_jax.models.sizes import OPTConfig
from alert_jax.parallel import param_sharding
from alert_jax.parallel.sharding import constrain, use_mesh

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
    L, D, N, H, F = c.arch.num_layers, c.arch.hidden_size, c.arch.num_heads, c.arch.head_dim, c.arch.ffn_dim
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

    def logical_axes(self) -> KVCache:
        """A cache-shaped tree whose leaves are the logical axis names of this cache's arrays (a name tuple is a
        pytree too, so map with ``is_leaf=lambda x: isinstance(x, LogicalNames)``)."""
        layer = param_sharding.LogicalNames(KV_LAYER_AXES)
        row = param_sharding.LogicalNames(("batch", "length"))
        return KVCache(k=(layer,) * len(self.k), v=(layer,) * len(self.v), segment_ids=row, positions=row,
                       index=param_sharding.LogicalNames(()))

    def constrain(self) -> KVCache:
        """Every array constrained to its logical axes under the active mesh (a no-op without one)."""
        return jax.tree.map(lambda x, names: constrain(x, names), self, self.logical_axes(),
                            is_leaf=lambda x: isinstance(x, param_sharding.LogicalNames))


KV_LAYER_AXES = ("batch", "heads", "length", "kv")  # of each layer's k / v array


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------------------------


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
    p: Block,
    h: jax.Array,
    mask: jax.Array,
    key: jax.Array | None,
    cache: tuple[jax.Array, jax.Array, jax.Array] | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """One decoder block on ``h [B, T, D]``; ``p`` is one layer's weights in either layout of
    :mod:`alert_jax.models.decode_weights`.

    ``cache`` = (this layer's k ``[B, N, S, H]``, v, write index): the new keys/values are written in place at
    columns ``index .. index+T-1`` and attention runs over all S columns; the updated (k, v) are returned.
    """
    dt = h.dtype
    prec = _precision(dt)
    p = jax.tree.map(lambda a: a.astype(dt), p)
    if key is not None:
        k_attn, k_out, k_ffn = jax.random.split(key, 3)
    else:
        k_attn = k_out = k_ffn = None

    residual = h
    x = _layer_norm(h, p.attn_ln_scale, p.attn_ln_bias) if c.arch.do_layer_norm_before else h
    q, k, v = p.project_qkv(x, prec)
    q = q * jnp.asarray(c.arch.head_dim**-0.5, dt)
    q = constrain(q, ("batch", "length", "heads", "kv"))
    if cache is None:
        o = attention(
            q,
            k,
            v,
            mask,
            impl=c.runtime.attention_impl,
            dropout_rate=c.runtime.attention_dropout if k_attn is not None else 0.0,
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
    o = p.project_out(o, prec)
    h = residual + _dropout(o, c.runtime.dropout, k_out)
    if not c.arch.do_layer_norm_before:
        h = _layer_norm(h, p.attn_ln_scale, p.attn_ln_bias)

    residual = h
    x = _layer_norm(h, p.ffn_ln_scale, p.ffn_ln_bias) if c.arch.do_layer_norm_before else h
    x = constrain(jax.nn.relu(p.fc1(x, prec)), ("batch", "length", "mlp"))
    x = p.fc2(x, prec)
    h = residual + _dropout(x, c.runtime.dropout, k_ffn)
    if not c.arch.do_layer_norm_before:
        h = _layer_norm(h, p.ffn_ln_scale, p.ffn_ln_bias)
    h = constrain(h, ("batch", "length", "embed"))
    return h, new_cache


def _dropout_key(rngs: nnx.Rngs | jax.Array | None, deterministic: bool, config: OPTConfig) -> jax.Array | None:
    if deterministic or (config.runtime.dropout <= 0.0 and config.runtime.attention_dropout <= 0.0):
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
    io.convert, io.checkpoint restores)."""
    return nnx.Param(_INITS[init](rngs.params(), shape, dtype), out_sharding=names, eager_sharding=False)


class OPTLayers(nnx.Module):
    """All decoder blocks' parameters, stacked along a leading ``layers`` axis (see ``LAYER_PARAMS``)."""

    def __init__(self, config: OPTConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(config.runtime.param_dtype)
        for name, shape in _layer_shapes(config).items():
            names, init = LAYER_PARAMS[name]
            setattr(self, name, _param(rngs, shape, names, init, dtype))

    def stored(self) -> StoredBlock:
        """The stacked ``[layers, ...]`` parameters as a :class:`~alert_jax.models.decode_weights.StoredBlock`."""
        return StoredBlock(**{name: getattr(self, name)[...] for name in LAYER_PARAMS})


class OPT(nnx.Module):
    """OPT decoder with tied LM head. See the module docstring for parameter layout."""

    def __init__(self, config: OPTConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        dtype = jnp.dtype(c.runtime.param_dtype)
        self.token_embedding = _param(rngs, (c.arch.vocab_size, c.arch.embed_dim), ("vocab", "embed"), "normal", dtype)
        self.position_embedding = _param(
            rngs, (c.arch.max_position_embeddings + POSITION_OFFSET, c.arch.hidden_size), (None, "embed"), "normal",
            dtype,
        )
        self.project_in_kernel = (
            _param(rngs, (c.arch.embed_dim, c.arch.hidden_size), (None, "embed"), "normal", dtype)
            if c.arch.has_projection
            else None
        )
        self.project_out_kernel = (
            _param(rngs, (c.arch.hidden_size, c.arch.embed_dim), ("embed", None), "normal", dtype)
            if c.arch.has_projection
            else None
        )
        if c.arch.has_final_layer_norm:
            self.final_ln_scale = _param(rngs, (c.arch.hidden_size,), ("embed",), "ones", dtype)
            self.final_ln_bias = _param(rngs, (c.arch.hidden_size,), ("embed",), "zeros", dtype)
        else:
            self.final_ln_scale = None
            self.final_ln_bias = None
        self.layers = OPTLayers(c, rngs=rngs)

    # -- pieces ------------------------------------------------------------------------------------------------

    @property
    def _dtype(self) -> jnp.dtype:
        return jnp.dtype(self.config.runtime.dtype)

    def _embed(self, tokens: jax.Array, positions: jax.Array, segment_ids: jax.Array) -> jax.Array:
        """``[B, T]`` ints -> ``[B, T, D]``: token embedding (projected in) + learned position (row pos + 2;
        padding uses row 1 like HF). Out-of-range ids give NaN (``jnp.take``'s fill mode), never a silent clip."""
        dt = self._dtype
        # Gather the table's embed dim first (FSDP all-gather): a lookup into an embed-sharded table would give an
        # embed-sharded output that XLA must fully rematerialize to reach the batch-sharded activation layout.
        table = constrain(self.token_embedding[...], ("vocab", None))
        x = jnp.take(table, tokens, axis=0).astype(dt)
        if self.project_in_kernel is not None:
            x = jnp.matmul(x, self.project_in_kernel[...].astype(dt), precision=_precision(dt))
        rows = jnp.where(segment_ids != 0, positions + POSITION_OFFSET, POSITION_OFFSET - 1)
        x = x + jnp.take(self.position_embedding[...], rows, axis=0).astype(dt)
        return constrain(x, ("batch", "length", "embed"))

    def _final(self, h: jax.Array) -> jax.Array:
        """``[B, T, D]`` -> ``[B, T, E]``: the final LayerNorm (pre-LN models) and ``project_out`` (opt-350m)."""
        if self.final_ln_scale is not None:
            h = _layer_norm(h, self.final_ln_scale[...], self.final_ln_bias[...])
        if self.project_out_kernel is not None:
            h = jnp.matmul(h, self.project_out_kernel[...].astype(self._dtype), precision=_precision(self._dtype))
        return h

    def _head(self, h: jax.Array) -> jax.Array:
        """``[B, T, D]`` -> float32 logits ``[B, T, V]`` against the tied token embedding."""
        dt = self._dtype
        table = self.token_embedding[...].astype(dt)
        logits = jnp.einsum("bte,ve->btv", self._final(h), table, preferred_element_type=jnp.float32,
                            precision=_precision(dt))
        return constrain(logits, ("batch", "length", "vocab"))

    def _scan_layers(self, h: jax.Array, mask: jax.Array, key: jax.Array | None) -> jax.Array:
        """The full forward's blocks: one ``lax.scan`` over the stacked layer weights (and per-layer dropout keys)."""
        c = self.config
        keys = None if key is None else jax.random.split(key, c.arch.num_layers)

        def body(carry, xs):
            p, k = xs
            out, _ = _block(c, p, carry, mask, k)
            return out, None

        if c.runtime.remat_policy != "none":
            body = jax.checkpoint(body, policy=_REMAT_POLICIES[c.runtime.remat_policy], prevent_cse=False)
        unroll = min(int(c.runtime.scan_unroll), c.arch.num_layers)
        h, _ = jax.lax.scan(body, h, (self.layers.stored(), keys), unroll=unroll)
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
          deterministic: False enables dropout (``config.runtime.dropout`` on residual branches,
            ``config.runtime.attention_dropout`` on attention probabilities); then ``rngs`` (nnx.Rngs with a
            'dropout' or 'default' stream, or a key) is required.
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
        Positions written into it must stay below ``config.arch.max_position_embeddings``."""
        c = self.config
        shape = (batch_size, c.arch.num_heads, max_len, c.arch.head_dim)

        def empty():
            return tuple(jnp.zeros(shape, self._dtype) for _ in range(c.arch.num_layers))

        ids = jnp.zeros((batch_size, max_len), jnp.int32)
        cache = KVCache(k=empty(), v=empty(), segment_ids=ids, positions=ids, index=jnp.zeros((), jnp.int32))
        return cache.constrain()

    def decode(
        self,
        tokens: jax.Array,
        positions: jax.Array,
        segment_ids: jax.Array,
        cache: KVCache,
        weights: DecodeWeights,
    ) -> tuple[jax.Array, KVCache]:
        """Runs ``T`` new tokens per row against the cache (prefill: T = prompt length; steps: T = 1).

        ``tokens``/``positions``/``segment_ids`` ``[B, T]`` are written at columns ``cache.index .. index+T-1`` of
        every row (rows are LEFT-padded so they all end at the same column; padding has segment id 0). A query at
        column ``c`` attends to filled columns ``<= c`` with its own nonzero segment id. The caller keeps
        ``index + T <= cache.max_len`` (a write past the end would be clamped by ``dynamic_update_slice``).

        ``weights``: this model's block weights as built once by the caller, outside its decode loop
        (``decode_weights.build_decode_weights``). The blocks run one after the other (unrolled, not scanned: each
        layer reads its own weight and cache buffers in place; a scan would slice both out of stacked arrays, i.e.
        copy them, every step).

        Returns float32 logits ``[B, T, V]`` (equal to the full forward's for the same tokens) and the new cache.
        Always deterministic (no dropout).
        """
        tokens, positions, segment_ids = (jnp.asarray(a, jnp.int32) for a in (tokens, positions, segment_ids))
        T = tokens.shape[1]
        n = self.config.arch.num_layers
        if weights.num_layers != n or len(cache.k) != n:
            raise ValueError(f"decode: got weights for {weights.num_layers} layers and a cache of {len(cache.k)}; "
                             f"the model has {n}")
        index = jnp.asarray(cache.index, jnp.int32)
        seg = jax.lax.dynamic_update_slice(cache.segment_ids, segment_ids, (0, index))
        pos = jax.lax.dynamic_update_slice(cache.positions, positions, (0, index))
        q_cols = index + jnp.arange(T, dtype=jnp.int32)
        kv_cols = jnp.arange(cache.max_len, dtype=jnp.int32)
        mask = make_attention_mask(segment_ids, seg, q_cols, kv_cols)
        h = self._embed(tokens, positions, segment_ids)
        ks, vs = [], []
        for i, (k, v) in enumerate(zip(cache.k, cache.v)):
            h, (k, v) = _block(self.config, weights.block(i), h, mask, None, (k, v, index))
            ks.append(k)
            vs.append(v)
        dt = self._dtype
        logits = weights.lm_head(self._final(h), self.token_embedding[...].astype(dt), _precision(dt))
        logits = constrain(logits, ("batch", "length", "vocab"))
        return logits, KVCache(k=tuple(ks), v=tuple(vs), segment_ids=seg, positions=pos, index=index + T)


# ----------------------------------------------------------------------------------------------------------------
# Construction helpers
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """The static half of an ``nnx.split`` OPT model (hashable by identity; safe to close over in jit).

    An ``OPT`` module is split once into these parts and its parameters as a *pure dict* of arrays
    (``nnx.to_pure_dict``; e.g. ``params['layers']['fc1_kernel']`` is ``[layers, d, ffn]``). Pure dicts keep optax,
    orbax and sharding trees simple; :meth:`build` merges them back into a module inside traced functions.

    Attributes:
      graphdef: the nnx graph definition.
      template: abstract ``nnx.State`` of the ``nnx.Param`` variables (ShapeDtypeStruct values, metadata kept).
      rest: the non-parameter state (normally empty), merged back unchanged.
      names: pure-dict tree of :class:`~alert_jax.parallel.param_sharding.LogicalNames` per parameter.
    """

    graphdef: Any
    template: Any
    rest: Any
    names: Any

    def build(self, params: Any) -> OPT:
        """An ``OPT`` module whose parameters are the arrays (or tracers) of the pure dict ``params``."""
        state = jax.tree.map(lambda x: x, self.template)  # fresh Variable objects
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(self.graphdef, state, self.rest)

    def abstract_params(self) -> Any:
        """Pure dict of ``ShapeDtypeStruct`` (no shardings)."""
        return nnx.to_pure_dict(self.template, extract_fn=lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype))

    def shardings(self, mesh: jax.sharding.Mesh) -> Any:
        """Pure dict of the parameters' ``NamedSharding`` s on ``mesh`` (``param_sharding.param_shardings``)."""
        return param_sharding.param_shardings(self.names, self.abstract_params(), mesh)


def split_model(model: nnx.Module) -> tuple[ModelParts, Any]:
    """``(ModelParts, params pure dict)`` of a concrete (or abstract) model."""
    graphdef, params_state, rest = nnx.split(model, nnx.Param, ...)
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params_state)
    parts = ModelParts(graphdef, template, rest, param_sharding.logical_names(params_state))
    return parts, nnx.to_pure_dict(params_state)


def abstract_model(config: OPTConfig) -> OPT:
    """The model with ``jax.ShapeDtypeStruct`` leaves (``nnx.eval_shape``): shapes, dtypes and logical names,
    nothing allocated."""
    return nnx.eval_shape(lambda: OPT(config, rngs=nnx.Rngs(0)))


def create_model(config: OPTConfig, mesh: jax.sharding.Mesh | None = None, rngs_seed: int = 0) -> OPT:
    """A randomly initialised OPT (N(0, 0.02) matrices, zero biases, unit LN scales).

    Params are created by one jitted program whose outputs are sharded on ``mesh`` by their logical names, so no
    device ever holds an unsharded copy (``mesh=None``: the default device).
    """
    parts, _ = split_model(abstract_model(config))

    def init() -> Any:
        return nnx.to_pure_dict(nnx.state(OPT(config, rngs=nnx.Rngs(rngs_seed)), nnx.Param))

    if mesh is None:
        return parts.build(jax.jit(init)())
    with use_mesh(mesh):
        return parts.build(jax.jit(init, out_shardings=parts.shardings(mesh))())


def count_params(config: OPTConfig) -> int:
    """Number of parameters, from abstract shapes only (safe for 175b on a laptop)."""
    state = nnx.state(abstract_model(config), nnx.Param)
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(state))
