"""Loss, the jitted train step (gradient accumulation, sharded, donated state) and the eval step.

Batches are dicts of ``[batch, length]`` arrays (``inputs``, ``targets``, ``segment_ids``, ``positions`` int32 and
``loss_mask`` float32, see :mod:`alert_jax.data.packing`), sharded along the batch with ``batch_sharding(mesh)``.

Loss of a step = (sum over all target tokens of the global batch of the token cross-entropy) / (number of target
tokens in the global batch), where target tokens are those with ``loss_mask == 1``. With gradient accumulation the
batch is split into ``k`` strided microbatches (microbatch ``i`` = rows ``i, i+k, i+2k, ...``, so each stays spread
over the data axis); the per-microbatch *sums* of losses, gradients and token counts are accumulated with
``lax.scan`` and divided once at the end, so ``k`` does not change the result (up to float summation order).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alert_jax.parallel.sharding import batch_sharding, use_mesh
from alert_jax.train.state import ModelParts, TrainState

BATCH_FIELDS: tuple[str, ...] = ("inputs", "targets", "segment_ids", "positions", "loss_mask")
DROPOUT_RNG_IMPLS: tuple[str, ...] = ("threefry2x32", "rbg", "unsafe_rbg")

Batch = Mapping[str, jax.Array]


def loss_fn(
    model: nnx.Module,
    batch: Batch,
    *,
    deterministic: bool = True,
    rngs: nnx.Rngs | jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """``(sum of token cross-entropies over target tokens, number of target tokens)``, both float32 scalars.

    ``logits = model(inputs, positions, segment_ids)`` are float32 ``[B, L, V]``; the token loss is
    ``-log softmax(logits)[targets]`` weighted by ``loss_mask`` (padding and prompt tokens weigh 0).
    """
    logits = model(
        batch["inputs"], batch["positions"], batch["segment_ids"], deterministic=deterministic, rngs=rngs
    )
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["targets"])
    mask = batch["loss_mask"].astype(jnp.float32)
    return jnp.sum(ce * mask), jnp.sum(mask)


def dropout_key(base: jax.Array, step: jax.Array, micro: jax.Array, impl: str = "threefry2x32") -> jax.Array:
    """The dropout key of microbatch ``micro`` of step ``step``: ``fold_in(fold_in(base, step), micro)``.

    ``base`` is the train state's raw uint32 ``[2]`` threefry key. For ``impl='threefry2x32'`` that key is used as
    is (bitwise the same masks on every mesh and backend). ``'rbg'`` / ``'unsafe_rbg'`` draw the masks with XLA's
    RngBitGenerator, seeded by 4 words drawn from that key: several times cheaper than threefry for the
    ``[batch, length, embed]`` masks (on CPU about 1.5 s of a 125m step), still a pure function of
    ``(base, step, micro)`` so a resumed run draws the same masks, but the bits may differ between backends, XLA
    versions and meshes.
    """
    key = jax.random.fold_in(jax.random.fold_in(base, step), micro)
    if impl == "threefry2x32":
        return key
    if impl not in DROPOUT_RNG_IMPLS:
        raise ValueError(f"train.dropout_rng_impl={impl!r} is not one of {DROPOUT_RNG_IMPLS}")
    words = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape[-1]
    return jax.random.wrap_key_data(jax.random.bits(key, (words,), jnp.uint32), impl=impl)


def split_microbatches(batch: Batch, k: int) -> dict[str, jax.Array]:
    """``[B, ...]`` -> ``[k, B // k, ...]`` with microbatch ``i`` = rows ``i::k``."""
    out = {}
    for name, x in batch.items():
        b = x.shape[0]
        if b % k:
            raise ValueError(f"batch of {b} rows is not divisible by train.grad_accum_steps={k}")
        out[name] = jnp.swapaxes(x.reshape((b // k, k) + x.shape[1:]), 0, 1)
    return out


def make_train_step(
    parts: ModelParts,
    tx: optax.GradientTransformation,
    mesh: Mesh,
    shardings: TrainState,
    *,
    grad_accum_steps: int = 1,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    donate: bool = True,
    compiler_options: dict[str, Any] | None = None,
    dropout_rng_impl: str = "threefry2x32",
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds ``train_step(state, batch) -> (new_state, metrics)`` (jitted, state donated).

    ``metrics`` (float32 scalars, replicated): ``loss`` (mean token CE of the global batch), ``loss_sum``,
    ``target_tokens``, ``real_tokens`` (non-padding positions), ``grad_norm`` (global L2 norm of the averaged
    gradient, before clipping), ``learning_rate`` (the rate used for this update, when ``schedule`` is given).
    Dropout is on (``deterministic=False``); microbatch ``i`` uses ``dropout_key(state.rng, step, i,
    dropout_rng_impl)``. With one microbatch the gradients are used directly (no accumulator); with ``k`` they are
    summed in an fp32 accumulator by ``lax.scan``. Either way they are divided by the token count once.
    ``compiler_options`` go to ``jax.jit`` (tests use ``{'xla_backend_optimization_level': 0}`` to compile faster).
    """
    k = int(grad_accum_steps)
    if k < 1:
        raise ValueError(f"train.grad_accum_steps must be >= 1, got {k}")
    b_shard = batch_sharding(mesh)
    rep = NamedSharding(mesh, PartitionSpec())
    batch_shardings = {name: b_shard for name in BATCH_FIELDS}

    if dropout_rng_impl not in DROPOUT_RNG_IMPLS:
        raise ValueError(f"train.dropout_rng_impl={dropout_rng_impl!r} is not one of {DROPOUT_RNG_IMPLS}")

    def micro_loss(params, mb, key):
        model = parts.build(params)
        return loss_fn(model, mb, deterministic=False, rngs=key)

    grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

    def micro_grads(state: TrainState, mb: Batch, i: jax.Array):
        mb = {n: jax.lax.with_sharding_constraint(v, b_shard) for n, v in mb.items()}
        key = dropout_key(state.rng, state.step, i, dropout_rng_impl)
        (loss_sum, tokens), grads = grad_fn(state.params, mb, key)
        return jax.lax.with_sharding_constraint(grads, shardings.params), loss_sum, tokens

    def step(state: TrainState, batch: Batch):
        batch = {name: batch[name] for name in BATCH_FIELDS}
        if k == 1:
            grads, loss_sum, tokens = micro_grads(state, batch, jnp.int32(0))
        else:

            def body(carry, xs):
                grads_acc, loss_acc, tok_acc = carry
                grads, loss_sum, tokens = micro_grads(state, xs[1], xs[0])
                grads_acc = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grads_acc, grads)
                grads_acc = jax.lax.with_sharding_constraint(grads_acc, shardings.params)
                return (grads_acc, loss_acc + loss_sum, tok_acc + tokens), None

            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
            zeros = jax.lax.with_sharding_constraint(zeros, shardings.params)
            init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
            micro = split_microbatches(batch, k)
            (grads, loss_sum, tokens), _ = jax.lax.scan(body, init, (jnp.arange(k, dtype=jnp.int32), micro))
        denom = jnp.maximum(tokens, 1.0)
        grads = jax.tree.map(lambda g, p: (g * (1.0 / denom)).astype(p.dtype), grads, state.params)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        metrics = {
            "loss": loss_sum / denom,
            "loss_sum": loss_sum,
            "target_tokens": tokens,
            "real_tokens": jnp.sum(batch["segment_ids"] > 0).astype(jnp.float32),
            "grad_norm": grad_norm,
        }
        if schedule is not None:
            metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
        return new_state, metrics

    jitted = jax.jit(
        step,
        in_shardings=(shardings, batch_shardings),
        out_shardings=(shardings, rep),
        donate_argnums=(0,) if donate else (),
        compiler_options=compiler_options,
    )

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        with use_mesh(mesh):
            return jitted(state, {name: batch[name] for name in BATCH_FIELDS})

    train_step.jitted = jitted  # type: ignore[attr-defined]  # for .lower() / cost analysis
    return train_step


def make_eval_step(
    parts: ModelParts,
    mesh: Mesh,
    param_shardings: Any,
    *,
    compiler_options: dict[str, Any] | None = None,
) -> Callable[[Any, Batch], tuple[jax.Array, jax.Array]]:
    """Builds ``eval_step(params, batch) -> (sum of target-token CE, number of target tokens)`` (deterministic,
    jitted; params are not donated). Sum the pairs over batches and divide once for the validation loss."""
    b_shard = batch_sharding(mesh)
    rep = NamedSharding(mesh, PartitionSpec())

    def step(params, batch):
        return loss_fn(parts.build(params), batch, deterministic=True)

    jitted = jax.jit(
        step,
        in_shardings=(param_shardings, {name: b_shard for name in BATCH_FIELDS}),
        out_shardings=(rep, rep),
        compiler_options=compiler_options,
    )

    def eval_step(params: Any, batch: Batch) -> tuple[jax.Array, jax.Array]:
        with use_mesh(mesh):
            return jitted(params, {name: batch[name] for name in BATCH_FIELDS})

    return eval_step
