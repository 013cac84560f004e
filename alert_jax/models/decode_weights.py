"""The decoder block's weights as the block code reads them, and the weights a decode step reads.

Shapes: ``B`` batch, ``T`` tokens per row, ``M = B * T`` rows, ``D`` hidden size, ``N`` heads, ``H`` head dim,
``F`` FFN width, ``V`` vocabulary, ``E`` token-embedding width.

Two layouts of one block, each a pytree with the same four products (:meth:`project_qkv`, :meth:`project_out`,
:meth:`fc1`, :meth:`fc2`), so the block code (``models/opt.py``) runs either without asking which it has:

* :class:`StoredBlock` -- the parameters as stored in ``OPT.layers`` and in checkpoints, input dims first:
  ``q/k/v_kernel [D, N, H]``, ``out_kernel [N, H, D]``, ``fc1_kernel [D, F]``, ``fc2_kernel [F, D]``. With a leading
  ``[layers]`` axis it is the whole stack (training's layer scan slices it).
* :class:`WeightFirstBlock` -- output dims first, as torch's ``Linear.weight``: ``qkv_kernel [3, N, H, D]`` (q, k, v
  stacked: one product reads all three), ``out_kernel [D, N * H]`` (a plain matrix: with separate ``N, H`` axes XLA
  may pick the ``H, N`` order and transpose the weight every step), ``fc1_kernel [F, D]``, ``fc2_kernel [D, F]``.

Why a second layout: a decode step multiplies a handful of rows (batch x 1 token) by every weight. XLA:CPU runs
``W @ x^T`` (weight as the row operand) about twice as fast as ``x @ W`` for 8 rows (``benchmarks/RESULTS.md``); an
optimization barrier keeps XLA from folding the transpose back into the slow form. GPU and TPU matmul libraries take
either operand transposed at no cost. So :func:`weight_first_backend` -- the one place this is decided -- picks the
layout: weight-first on CPU only, and even there a product of more than :data:`FEW_ROWS` rows (a prefill) runs the
plain way on the transposed weight.

:class:`DecodeWeights` is what ``OPT.decode`` reads, built once per ``eval.generate.Generator`` by
:func:`build_decode_weights`. It holds either per-layer buffers (one more copy of the block weights in the compute
dtype, each read in place every step: a scan over the stacked weights would copy every layer's slice every step) or
the stored stack itself (no copy; each step slices it, which XLA materialises). That choice is the caller's
(``eval.unstack_layers``); the layout of the per-layer buffers is :func:`weight_first_backend`'s.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

# Products of at most this many rows run weight-first in a WeightFirstBlock (decode steps); more rows (a prefill)
# use the plain product, which is as fast or faster there.
FEW_ROWS = 64


def weight_first_backend() -> bool:
    """Whether per-layer decoding weights take the :class:`WeightFirstBlock` layout: on XLA:CPU only."""
    return jax.default_backend() == "cpu"


def _weight_first(spec: str, w: jax.Array, x: jax.Array, precision: Any, preferred: Any = None) -> jax.Array:
    """``einsum(spec, w, x)`` for a weight-first ``spec`` whose output ends with ``x``'s leading (row) axis ``m``,
    returned with ``m`` in front: e.g. ``'nk,mk->nm'`` gives ``x @ w.T`` as ``[M, N]``.

    Computed weight-first (optimization barrier, then the axis move) for at most :data:`FEW_ROWS` rows; otherwise as
    the plain ``x``-first product."""
    ins, out = spec.split("->")
    w_spec, x_spec = ins.split(",")
    if x.shape[0] > FEW_ROWS:
        return jnp.einsum(f"{x_spec},{w_spec}->{out[-1]}{out[:-1]}", x, w, precision=precision,
                          preferred_element_type=preferred)
    y = jnp.einsum(spec, w, x, precision=precision, preferred_element_type=preferred)
    return jnp.moveaxis(jax.lax.optimization_barrier(y), -1, 0)


@flax.struct.dataclass
class StoredBlock:
    """One block's parameters in the stored layout (or all blocks', with a leading ``[layers]`` axis)."""

    attn_ln_scale: jax.Array  # [D]
    attn_ln_bias: jax.Array  # [D]
    q_kernel: jax.Array  # [D, N, H]
    q_bias: jax.Array  # [N, H]
    k_kernel: jax.Array
    k_bias: jax.Array
    v_kernel: jax.Array
    v_bias: jax.Array
    out_kernel: jax.Array  # [N, H, D]
    out_bias: jax.Array  # [D]
    ffn_ln_scale: jax.Array  # [D]
    ffn_ln_bias: jax.Array  # [D]
    fc1_kernel: jax.Array  # [D, F]
    fc1_bias: jax.Array  # [F]
    fc2_kernel: jax.Array  # [F, D]
    fc2_bias: jax.Array  # [D]

    def layer(self, i: int) -> StoredBlock:
        """Layer ``i`` of a stacked block (a slice: XLA copies it)."""
        return jax.tree.map(lambda a: a[i], self)

    def project_qkv(self, x: jax.Array, precision: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``x [B, T, D]`` -> ``q, k, v [B, T, N, H]`` with their biases (``q`` not yet scaled)."""
        return tuple(  # type: ignore[return-value]
            jnp.einsum("btd,dnh->btnh", x, kernel, precision=precision) + bias
            for kernel, bias in ((self.q_kernel, self.q_bias), (self.k_kernel, self.k_bias),
                                 (self.v_kernel, self.v_bias))
        )

    def project_out(self, o: jax.Array, precision: Any) -> jax.Array:
        """Attention output ``o [B, T, N, H]`` -> ``[B, T, D]`` with ``out_bias``."""
        return jnp.einsum("btnh,nhd->btd", o, self.out_kernel, precision=precision) + self.out_bias

    def fc1(self, x: jax.Array, precision: Any) -> jax.Array:
        """``[B, T, D]`` -> ``[B, T, F]`` (before the ReLU)."""
        return jnp.einsum("btk,kn->btn", x, self.fc1_kernel, precision=precision) + self.fc1_bias

    def fc2(self, x: jax.Array, precision: Any) -> jax.Array:
        """``[B, T, F]`` -> ``[B, T, D]``."""
        return jnp.einsum("btk,kn->btn", x, self.fc2_kernel, precision=precision) + self.fc2_bias


@flax.struct.dataclass
class WeightFirstBlock:
    """One block's weights output dims first (module docstring); LayerNorm parameters and biases as stored, except
    ``qkv_bias [3, N, H]``."""

    attn_ln_scale: jax.Array
    attn_ln_bias: jax.Array
    qkv_kernel: jax.Array  # [3, N, H, D]
    qkv_bias: jax.Array  # [3, N, H]
    out_kernel: jax.Array  # [D, N * H]
    out_bias: jax.Array
    ffn_ln_scale: jax.Array
    ffn_ln_bias: jax.Array
    fc1_kernel: jax.Array  # [F, D]
    fc1_bias: jax.Array
    fc2_kernel: jax.Array  # [D, F]
    fc2_bias: jax.Array

    @classmethod
    def from_stored(cls, p: StoredBlock) -> WeightFirstBlock:
        """The same weights, output dims first (new buffers under ``jit``)."""
        n, h, d = p.out_kernel.shape
        return cls(
            attn_ln_scale=p.attn_ln_scale, attn_ln_bias=p.attn_ln_bias,
            qkv_kernel=jnp.stack([jnp.moveaxis(k, 0, -1) for k in (p.q_kernel, p.k_kernel, p.v_kernel)]),
            qkv_bias=jnp.stack([p.q_bias, p.k_bias, p.v_bias]),
            out_kernel=p.out_kernel.reshape(n * h, d).T, out_bias=p.out_bias,
            ffn_ln_scale=p.ffn_ln_scale, ffn_ln_bias=p.ffn_ln_bias,
            fc1_kernel=p.fc1_kernel.T, fc1_bias=p.fc1_bias, fc2_kernel=p.fc2_kernel.T, fc2_bias=p.fc2_bias,
        )

    def project_qkv(self, x: jax.Array, precision: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        B, T, D = x.shape
        qkv = _weight_first("cnhd,md->cnhm", self.qkv_kernel, x.reshape(B * T, D), precision)  # [M, 3, N, H]
        qkv = qkv.reshape(B, T, *qkv.shape[1:]) + self.qkv_bias
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

    def project_out(self, o: jax.Array, precision: Any) -> jax.Array:
        B, T, N, H = o.shape
        y = _weight_first("dk,mk->dm", self.out_kernel, o.reshape(B * T, N * H), precision)
        return y.reshape(B, T, -1) + self.out_bias

    def fc1(self, x: jax.Array, precision: Any) -> jax.Array:
        return self._dense(self.fc1_kernel, self.fc1_bias, x, precision)

    def fc2(self, x: jax.Array, precision: Any) -> jax.Array:
        return self._dense(self.fc2_kernel, self.fc2_bias, x, precision)

    @staticmethod
    def _dense(kernel: jax.Array, bias: jax.Array, x: jax.Array, precision: Any) -> jax.Array:
        B, T, K = x.shape
        return _weight_first("nk,mk->nm", kernel, x.reshape(B * T, K), precision).reshape(B, T, -1) + bias


Block = StoredBlock | WeightFirstBlock


@flax.struct.dataclass
class DecodeWeights:
    """The block weights ``OPT.decode`` reads: per-layer ``blocks``, or the ``stacked`` stored parameters sliced inside
    every step (exactly one of the two is set). ``weight_first``: few-row products run weight-first -- the per-layer
    blocks are :class:`WeightFirstBlock` s and :meth:`lm_head` multiplies weight-first."""

    blocks: tuple[Block, ...] | None = None
    stacked: StoredBlock | None = None
    weight_first: bool = flax.struct.field(pytree_node=False, default=False)

    @property
    def num_layers(self) -> int:
        return len(self.blocks) if self.blocks is not None else int(self.stacked.q_kernel.shape[0])

    def block(self, i: int) -> Block:
        return self.blocks[i] if self.blocks is not None else self.stacked.layer(i)

    def lm_head(self, h: jax.Array, table: jax.Array, precision: Any) -> jax.Array:
        """float32 logits ``[B, T, V]`` of the final hidden states ``h [B, T, E]`` against the tied table ``[V, E]``
        (already output dims first: weight-first needs no copy of it)."""
        if not self.weight_first:
            return jnp.einsum("bte,ve->btv", h, table, preferred_element_type=jnp.float32, precision=precision)
        B, T, E = h.shape
        logits = _weight_first("ve,me->vm", table, h.reshape(B * T, E), precision, jnp.float32)
        return logits.reshape(B, T, -1)


def build_decode_weights(stacked: StoredBlock, dtype: Any, *, per_layer: bool) -> DecodeWeights:
    """:class:`DecodeWeights` of the stored stack ``stacked`` (``[layers, ...]`` leaves).

    ``per_layer``: one buffer set per layer, cast to ``dtype`` (the compute dtype: fp32 master weights decoded in
    bf16 are then not re-cast every step) and laid out by :func:`weight_first_backend`. Under ``jit`` these are new
    buffers (one more copy of the block weights): build them once, outside any decode loop. ``per_layer=False``:
    the stack itself, no copy.
    """
    weight_first = weight_first_backend()
    if not per_layer:
        return DecodeWeights(stacked=stacked, weight_first=weight_first)
    cast = jax.tree.map(lambda a: a.astype(dtype), stacked)
    blocks = []
    for i in range(int(stacked.q_kernel.shape[0])):
        block = cast.layer(i)
        blocks.append(WeightFirstBlock.from_stored(block) if weight_first else block)
    return DecodeWeights(blocks=tuple(blocks), weight_first=weight_first)
