"""The train state pytree and how it is built and sharded.

The parameters are the pure dict of an OPT split by ``models.opt.split_model`` (its static half, ``ModelParts``,
turns them back into a module inside traced functions).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alert_jax.models.opt import ModelParts
from alert_jax.parallel import param_sharding


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (a pytree; every leaf a ``jax.Array``).

    Attributes:
      step: int32 scalar, number of optimizer updates applied so far.
      params: pure dict of parameter arrays (fp32 master weights), sharded by the rule table.
      opt_state: optax state (Adam moments shaped and sharded like ``params``).
      rng: uint32 ``[2]`` base PRNG key; the dropout key of step ``s``, microbatch ``i`` is
        ``fold_in(fold_in(rng, s), i)``, so a resumed run draws the same masks.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def state_shardings(parts: ModelParts, tx: optax.GradientTransformation, mesh: Mesh) -> TrainState:
    """A :class:`TrainState` whose leaves are the ``NamedSharding`` s of the corresponding state arrays."""
    p_shard = parts.shardings(mesh)
    abstract_opt = jax.eval_shape(tx.init, parts.abstract_params())
    rep = NamedSharding(mesh, PartitionSpec())
    return TrainState(
        step=rep,
        params=p_shard,
        opt_state=param_sharding.opt_state_shardings(tx, abstract_opt, p_shard, mesh),
        rng=rep,
    )


def abstract_state(parts: ModelParts, tx: optax.GradientTransformation, shardings: TrainState) -> TrainState:
    """ShapeDtypeStruct tree of the train state carrying ``shardings`` (restore target; nothing allocated)."""
    params = parts.abstract_params()
    shapes = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=params,
        opt_state=jax.eval_shape(tx.init, params),
        rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    return param_sharding.abstract_with_shardings(shapes, shardings)


def place(tree: Any, shardings: Any) -> Any:
    """Puts a tree of host (numpy) or device arrays onto ``shardings``; works with several processes (host arrays
    must then hold the same global value on every process; device arrays are resharded with ``jax.device_put``)."""

    def one(x, s):
        if isinstance(x, jax.Array):
            return jax.device_put(x, s)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    return jax.tree.map(one, tree, shardings)


def create_train_state(
    params: Any,
    tx: optax.GradientTransformation,
    shardings: TrainState,
    seed: int,
) -> TrainState:
    """A step-0 state from (possibly differently placed) ``params``: the params are resharded onto
    ``shardings.params`` and the optimizer state is created directly sharded (under jit)."""
    params = place(params, shardings.params)

    def init(p):
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=p,
            opt_state=tx.init(p),
            rng=jax.random.PRNGKey(seed),
        )

    return jax.jit(init, in_shardings=(shardings.params,), out_shardings=shardings)(params)
