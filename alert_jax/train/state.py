"""The train state pytree and how it is built, sharded and turned back into a model.

An ``OPT`` module is split once into static parts (:class:`ModelParts`: the nnx graph definition, an abstract
template of its ``nnx.Param`` state carrying the logical axis names, and any non-parameter state) and its parameters
as a *pure dict* of arrays (``nnx.to_pure_dict``; e.g. ``params['layers']['fc1_kernel']`` is ``[layers, d, ffn]``).
Pure dicts keep optax, orbax and sharding trees simple; :meth:`ModelParts.build` merges them back into a module inside
traced functions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alert_jax.parallel import param_sharding
from alert_jax.parallel.sharding import LOGICAL_AXIS_RULES


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


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """The static half of an ``nnx.split`` OPT model (hashable by identity; safe to close over in jit).

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

    def build(self, params: Any) -> nnx.Module:
        """An ``OPT`` module whose parameters are the arrays (or tracers) of the pure dict ``params``."""
        state = jax.tree.map(lambda x: x, self.template)  # fresh Variable objects
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(self.graphdef, state, self.rest)

    def abstract_params(self) -> Any:
        """Pure dict of ``ShapeDtypeStruct`` (no shardings)."""
        return nnx.to_pure_dict(self.template, extract_fn=lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype))


def split_model(model: nnx.Module) -> tuple[ModelParts, Any]:
    """``(ModelParts, params pure dict)`` of a concrete (or abstract) model."""
    graphdef, params_state, rest = nnx.split(model, nnx.Param, ...)
    template = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params_state)
    parts = ModelParts(graphdef, template, rest, param_sharding.logical_names(params_state))
    return parts, nnx.to_pure_dict(params_state)


def param_shardings(parts: ModelParts, mesh: Mesh, rules: Any = LOGICAL_AXIS_RULES) -> Any:
    """Pure-dict tree of ``NamedSharding`` for the parameters on ``mesh``."""
    return param_sharding.param_shardings(parts.names, mesh, parts.abstract_params(), rules)


def state_shardings(
    parts: ModelParts, tx: optax.GradientTransformation, mesh: Mesh, rules: Any = LOGICAL_AXIS_RULES
) -> TrainState:
    """A :class:`TrainState` whose leaves are the ``NamedSharding`` s of the corresponding state arrays."""
    p_shard = param_shardings(parts, mesh, rules)
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
