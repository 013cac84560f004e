"""Attention masks and the three attention implementations, plus ``'auto'`` choosing one (pure functions of arrays).

Shapes: ``B`` batch, ``T`` query length, ``S`` key length, ``N`` heads, ``H`` head dim.

A query may attend to a key when all of these hold (see :func:`make_attention_mask`):

* causal: the key's column is at or before the query's column;
* same segment: both carry the same segment id (packed rows hold several examples);
* not padding: the query's segment id is nonzero (which, with "same segment", also excludes padding keys).

Queries that may attend to nothing (padding rows) still produce finite outputs: every implementation turns masked
logits into a large negative number, never ``-inf``, so a fully masked row softmaxes to a uniform distribution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG = -0.7 * float(jnp.finfo(jnp.float32).max)  # large but finite: fully masked rows give no NaN


def make_attention_mask(
    q_segment_ids: jax.Array,
    kv_segment_ids: jax.Array,
    q_columns: jax.Array,
    kv_columns: jax.Array,
) -> jax.Array:
    """Boolean mask ``[B, T, S]``: causal AND same segment AND query not padding.

    Args:
      q_segment_ids: ``[B, T]`` int, 0 = padding.
      kv_segment_ids: ``[B, S]`` int, 0 = padding / empty cache column.
      q_columns: ``[T]`` int, the absolute column of each query (its index in the row or in the KV cache).
      kv_columns: ``[S]`` int, the absolute column of each key.
    """
    causal = kv_columns[None, :] <= q_columns[:, None]  # [T, S]
    same = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]  # [B, T, S]
    real = (q_segment_ids != 0)[:, :, None]
    return causal[None] & same & real


def _reference_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    dropout_rate: float,
    dropout_key: jax.Array | None,
    precision: jax.lax.Precision | None = None,
    kv_layout: str = "bsnh",
) -> jax.Array:
    """Explicit einsum + fp32 softmax (+ dropout on the probabilities). ``q`` is already scaled; ``k``/``v`` are
    ``[B, S, N, H]`` (``kv_layout='bsnh'``) or ``[B, N, S, H]`` (``'bnsh'``, the KV-cache layout)."""
    logits = jnp.einsum(f"btnh,{kv_layout}->bnts", q, k, preferred_element_type=jnp.float32, precision=precision)
    logits = jnp.where(mask[:, None], logits, _NEG)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout_rate > 0.0 and dropout_key is not None:
        keep = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    return jnp.einsum(f"bnts,{kv_layout}->btnh", probs.astype(v.dtype), v, precision=precision)


def cached_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, precision: jax.lax.Precision | None = None
) -> jax.Array:
    """Attention of new queries over a KV cache: ``q [B, T, N, H]`` (already scaled), ``k, v [B, N, S, H]`` (heads
    before columns, the cache layout), ``mask [B, T, S]`` -> ``[B, T, N, H]``.

    The reference path batched over the cache's leading ``(B, N)``, so neither product has to transpose the cache
    (decoding reads the whole cache every step; a transposed copy would double that traffic).
    """
    return _reference_attention(q, k, v, mask, 0.0, None, precision, kv_layout="bnsh")


def _check_cudnn(q: jax.Array) -> None:
    backend = jax.default_backend()
    if backend != "gpu":
        raise ValueError(
            f"model.attention_impl='cudnn' needs an NVIDIA GPU (cuDNN flash attention), but the JAX backend is "
            f"{backend!r}; set model.attention_impl='xla' (or 'reference') on this machine"
        )
    if q.dtype not in (jnp.bfloat16, jnp.float16):
        raise ValueError(
            f"model.attention_impl='cudnn' needs a 16-bit compute dtype, but model.dtype gives {q.dtype}; "
            "set model.dtype='bfloat16' or model.attention_impl='xla'"
        )


def resolve_impl(impl: str, q: jax.Array, *, dropout_active: bool, precision: jax.lax.Precision | None) -> str:
    """The implementation ``impl='auto'`` runs for these queries (``q [B, T, N, H]``): ``'cudnn'`` where cuDNN's
    flash attention can run -- a GPU backend, 16-bit compute, a head dim that is a multiple of 8 up to 128, no
    active attention dropout and no precision request (fp32 compute asks for HIGHEST) -- else ``'xla'``. Any other
    ``impl`` is returned as it is."""
    if impl != "auto":
        return impl
    head_dim = q.shape[-1]
    cudnn_ok = (jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0
                and head_dim <= 128 and not dropout_active and precision is None)
    return "cudnn" if cudnn_ok else "xla"


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array,
    *,
    impl: str,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
    causal_self_attention: bool = False,
    precision: jax.lax.Precision | None = None,
) -> jax.Array:
    """Multi-head attention ``[B, T, N, H] x [B, S, N, H] -> [B, T, N, H]`` with a boolean ``mask [B, T, S]``.

    ``q`` must already carry OPT's ``head_dim ** -0.5`` scale (OPT scales the projected queries, bias included,
    before the product; doing the same keeps parity with HF/metaseq to the last bit in fp32).

    Attention dropout needs the probability matrix, which the fused kernels do not expose: with dropout active
    ('training' and ``dropout_rate > 0``), ``impl='xla'`` runs the explicit path (the same math XLA would run), and
    ``impl='cudnn'`` raises (set model.attention_dropout=0, as HF's released OPT configs do; the model config refuses
    the combination up front, models/sizes.py Runtime). ``impl='auto'``: see :func:`resolve_impl`.

    ``causal_self_attention`` says that ``T == S`` and query ``i`` sits at key column ``i``; cuDNN then also skips
    the blocks above the diagonal.

    ``precision`` (the model passes HIGHEST for float32 compute) applies to the explicit path;
    ``jax.nn.dot_product_attention`` takes none and would let GPUs round fp32 products to TF32, so with a precision
    set ``impl='xla'`` also runs the explicit path (the same einsum-softmax-einsum program XLA would build).
    """
    dropout_active = dropout_rate > 0.0 and dropout_key is not None
    impl = resolve_impl(impl, q, dropout_active=dropout_active, precision=precision)
    if impl == "reference":
        return _reference_attention(q, k, v, mask, dropout_rate, dropout_key, precision)
    if impl == "xla":
        if dropout_active or precision is not None:
            return _reference_attention(q, k, v, mask, dropout_rate, dropout_key, precision)
        out = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], scale=1.0, implementation="xla")
        return out.astype(v.dtype)
    if impl == "cudnn":
        _check_cudnn(q)
        if dropout_active:
            raise ValueError(
                "model.attention_impl='cudnn' does not support attention dropout; set model.attention_dropout=0.0 "
                "(HF's OPT configs use 0.0) or model.attention_impl='xla'"
            )
        return jax.nn.dot_product_attention(
            q, k, v, mask=mask[:, None], scale=1.0, is_causal=causal_self_attention, implementation="cudnn"
        )
    raise ValueError(f"model.attention_impl={impl!r} is not one of ('auto', 'xla', 'cudnn', 'reference')")
