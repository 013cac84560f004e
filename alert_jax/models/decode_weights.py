"""The decoder block's matrix products, in the two weight layouts the model uses.

Shapes: ``B`` batch, ``T`` tokens per row, ``M = B * T`` rows, ``D`` hidden size, ``N`` heads, ``H`` head dim,
``F`` FFN width.

* **Stored layout** (the parameters in ``OPT.layers`` and in checkpoints; training and full forwards): input dims
  first -- ``q/k/v_kernel [D, N, H]``, ``out_kernel [N, H, D]``, ``fc1_kernel [D, F]``, ``fc2_kernel [F, D]``.
* **Decoding layout** (:func:`decode_layers`; made once per decode call, or once per
  ``eval.generate.Generator``): output dims first, as torch's ``Linear.weight`` --
  ``qkv_kernel_t [3, N, H, D]`` (q, k, v stacked: one product reads all three), ``qkv_bias [3, N, H]``,
  ``out_kernel_t [D, N * H]``, ``fc1_kernel_t [F, D]``, ``fc2_kernel_t [D, F]``; LayerNorm parameters and the other
  biases as stored. One dict per layer, so a decode step reads each layer's weights in place. The out-projection is
a plain matrix: with separate ``N, H`` axes XLA may pick the ``H, N`` order for the product and transpose (copy) the
weight on every step.

Why a second layout: a decode step multiplies a handful of rows (batch x 1 token) by every weight, so each product
is a thin matrix times a large one. XLA:CPU's kernels run ``W @ x^T`` (weight as the row operand, output
``[out, M]``) about twice as fast as ``x @ W`` for 8 rows (``benchmarks/RESULTS.md``). :func:`rows_last` computes
that form for few rows and moves the ``M`` axis to the front; an optimization barrier stops XLA from folding the
move back into the product (which would pick the slow kernel again). Many rows (a prefill), and other backends
(cuBLAS takes either operand transposed at no cost), get the plain product.

Every function accepts either layout (it tells them apart by the ``*_t`` keys), so the same block code runs both.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

# Stored-layout names that the decoding layout keeps as they are (one layer's slice).
# Row counts up to which XLA:CPU's weight-first product wins (decode steps); prefill blocks use the plain one.
FEW_ROWS = 64

_UNCHANGED = ("attn_ln_scale", "attn_ln_bias", "out_bias", "ffn_ln_scale", "ffn_ln_bias", "fc1_bias", "fc2_bias")


def decode_layers(stacked: dict[str, jax.Array], num_layers: int, dtype: Any = None) -> list[dict[str, jax.Array]]:
    """The stacked ``[layers, ...]`` stored-layout block weights -> one decoding-layout dict per layer, cast to
    ``dtype`` (the compute dtype; ``None`` keeps the stored one).

    Under ``jit`` the results are new buffers (one more copy of the block weights while they live): make them once,
    outside any decode loop, not per step. Casting here too means fp32 master weights decoded in bf16 are not
    re-cast (read in fp32, written in bf16) on every step.
    """
    if dtype is not None:
        stacked = {name: a.astype(dtype) for name, a in stacked.items()}
    layers = []
    for i in range(num_layers):
        p = {name: stacked[name][i] for name in _UNCHANGED}
        p["qkv_kernel_t"] = jnp.stack([jnp.moveaxis(stacked[f"{n}_kernel"][i], 0, -1) for n in "qkv"])
        p["qkv_bias"] = jnp.stack([stacked[f"{n}_bias"][i] for n in "qkv"])
        n, h, d = stacked["out_kernel"].shape[1:]
        p["out_kernel_t"] = stacked["out_kernel"][i].reshape(n * h, d).T
        p["fc1_kernel_t"] = stacked["fc1_kernel"][i].T
        p["fc2_kernel_t"] = stacked["fc2_kernel"][i].T
        layers.append(p)
    return layers


def rows_last(spec: str, w: jax.Array, x: jax.Array, precision: Any, preferred: Any = None) -> jax.Array:
    """``einsum(spec, w, x)`` for a weight-first ``spec`` whose output ends with ``x``'s leading (row) axis ``m``,
    returned with ``m`` in front: e.g. ``'nk,mk->nm'`` gives ``x @ w.T`` as ``[M, N]``.

    Computed weight-first (optimization barrier, then the axis move) only on CPU and for at most
    :data:`FEW_ROWS` rows; otherwise as the plain ``x``-first product, which is as fast or faster there.
    """
    ins, out = spec.split("->")
    w_spec, x_spec = ins.split(",")
    if x.shape[0] > FEW_ROWS or jax.default_backend() != "cpu":
        return jnp.einsum(f"{x_spec},{w_spec}->{out[-1]}{out[:-1]}", x, w, precision=precision,
                          preferred_element_type=preferred)
    y = jnp.einsum(spec, w, x, precision=precision, preferred_element_type=preferred)
    return jnp.moveaxis(jax.lax.optimization_barrier(y), -1, 0)


def project_qkv(p: dict[str, jax.Array], x: jax.Array, precision: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``x [B, T, D]`` -> ``q, k, v [B, T, N, H]`` with their biases (``q`` not yet scaled)."""
    if "qkv_kernel_t" in p:
        B, T, D = x.shape
        qkv = rows_last("cnhd,md->cnhm", p["qkv_kernel_t"], x.reshape(B * T, D), precision)  # [M, 3, N, H]
        qkv = qkv.reshape(B, T, *qkv.shape[1:]) + p["qkv_bias"]
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q, k, v = (
        jnp.einsum("btd,dnh->btnh", x, p[f"{n}_kernel"], precision=precision) + p[f"{n}_bias"] for n in "qkv"
    )
    return q, k, v


def project_out(p: dict[str, jax.Array], o: jax.Array, precision: Any) -> jax.Array:
    """Attention output ``o [B, T, N, H]`` -> ``[B, T, D]`` with ``out_bias``."""
    if "out_kernel_t" in p:
        B, T, N, H = o.shape
        y = rows_last("dk,mk->dm", p["out_kernel_t"], o.reshape(B * T, N * H), precision)
        return y.reshape(B, T, -1) + p["out_bias"]
    return jnp.einsum("btnh,nhd->btd", o, p["out_kernel"], precision=precision) + p["out_bias"]


def dense(p: dict[str, jax.Array], name: str, x: jax.Array, precision: Any) -> jax.Array:
    """``x [B, T, K]`` times the 2-D kernel ``name`` (``'fc1'``: K = D -> F; ``'fc2'``: F -> D), plus its bias."""
    if f"{name}_kernel_t" in p:
        B, T, K = x.shape
        y = rows_last("nk,mk->nm", p[f"{name}_kernel_t"], x.reshape(B * T, K), precision)
        return y.reshape(B, T, -1) + p[f"{name}_bias"]
    return jnp.einsum("btk,kn->btn", x, p[f"{name}_kernel"], precision=precision) + p[f"{name}_bias"]
