"""Shardings of parameters and optimizer state from the parameters' logical axis names, and the
"sufficiently sharded" check.

Parameters are handled as *pure dicts* (``nnx.to_pure_dict`` of the model's ``nnx.Param`` state: nested dicts of
arrays keyed by module path). Every ``nnx.Param`` of the OPT model carries its logical axis names in the variable
metadata ``out_sharding`` (e.g. fc1 ``('layers', 'embed', 'mlp')``); the rule table and the fit rule of
:mod:`alert_jax.parallel.sharding` map them to mesh axes (a mesh axis that does not divide a dimension is not used
for it, so odd test shapes still run; :func:`replicated_report` counts what that leaves replicated).

"Replicated" (for the check) means: the parameter is stored whole on every device, i.e. none of its dimensions is
split over a mesh axis of size > 1. On a mesh whose ``fsdp`` or ``tensor`` axis is > 1, training refuses to start
when such parameters exceed ``max_fraction`` (2 %) of all parameter bytes: it means the rule table misses a weight
and every device would hold a full copy (the classic silent OOM at scale).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from alert_jax.parallel.sharding import LOGICAL_AXIS_RULES, logical_spec

__all__ = [
    "InsufficientShardingError",
    "LogicalNames",
    "abstract_with_shardings",
    "check_sufficiently_sharded",
    "logical_names",
    "opt_state_shardings",
    "param_shardings",
    "replicated",
    "replicated_report",
]


class LogicalNames(tuple):
    """The logical axis names of one parameter, e.g. ``('layers', 'embed', 'mlp')``; a tuple subclass so that pytree
    utilities can treat it as ONE leaf (``is_leaf=lambda x: isinstance(x, LogicalNames)``)."""


class InsufficientShardingError(ValueError):
    """Too many parameter bytes would be replicated on an fsdp/tensor mesh."""


def _is_names(x: Any) -> bool:
    return isinstance(x, LogicalNames) or x is None


def logical_names(model_or_state: Any) -> dict:
    """Pure-dict tree (same structure as ``nnx.to_pure_dict`` of the params) of :class:`LogicalNames` leaves.

    Accepts an ``nnx.Module`` (its ``nnx.Param`` state is used) or an ``nnx.State`` of variables (abstract or
    concrete). A parameter without ``out_sharding`` metadata gets ``LogicalNames((None,) * ndim)`` (replicated).
    """
    state = nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module) else model_or_state

    def extract(v: Any) -> LogicalNames:
        meta = v.get_metadata() if isinstance(v, nnx.Variable) else {}
        names = meta.get("out_sharding") or meta.get("sharding_names") or meta.get("sharding")
        ndim = len(np.shape(v.get_value() if isinstance(v, nnx.Variable) else v))
        if not names:
            return LogicalNames((None,) * ndim)
        names = tuple(names)
        if len(names) != ndim:
            raise ValueError(f"parameter with logical names {names} has {ndim} dimensions")
        return LogicalNames(names)

    return nnx.to_pure_dict(state, extract_fn=extract)


def param_shardings(
    names: Any,
    shapes: Any,
    mesh: Mesh,
    rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES,
) -> Any:
    """Tree of ``NamedSharding`` for parameters whose logical names are ``names`` (from :func:`logical_names`) and
    whose shapes are ``shapes`` (same structure: arrays or ShapeDtypeStructs), by the fit rule."""
    axes = dict(mesh.shape)
    return jax.tree.map(
        lambda n, s: NamedSharding(mesh, logical_spec(n, np.shape(s), axes, rules)), names, shapes, is_leaf=_is_names
    )


def replicated(sharding: NamedSharding) -> bool:
    """True when no dimension is split over a mesh axis of size > 1."""
    mesh = sharding.mesh
    for entry in sharding.spec:
        axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
        if any(mesh.shape[a] > 1 for a in axes):
            return False
    return True


def _nbytes(x: Any) -> int:
    return int(math.prod(np.shape(x))) * np.dtype(x.dtype).itemsize


def replicated_report(params: Any, shardings: Any) -> tuple[float, list[tuple[str, int]]]:
    """(fraction of parameter bytes replicated, [(path, bytes)] of the replicated parameters, largest first)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    shards = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    if len(flat) != len(shards):
        raise ValueError(f"{len(flat)} parameters but {len(shards)} shardings")
    total = 0
    offenders = []
    for (path, x), s in zip(flat, shards):
        nbytes = _nbytes(x)
        total += nbytes
        if replicated(s):
            offenders.append((jax.tree_util.keystr(path), nbytes))
    offenders.sort(key=lambda t: -t[1])
    frac = sum(b for _, b in offenders) / max(total, 1)
    return frac, offenders


def check_sufficiently_sharded(params: Any, shardings: Any, mesh: Mesh, max_fraction: float = 0.02) -> float:
    """Raises :class:`InsufficientShardingError` when more than ``max_fraction`` of the parameter bytes would be
    replicated on a mesh with ``fsdp`` or ``tensor`` > 1. Returns the replicated fraction (0..1).

    ``params``: arrays or ShapeDtypeStructs (pure dict); ``shardings``: same structure, ``NamedSharding`` leaves.
    """
    frac, offenders = replicated_report(params, shardings)
    model_parallel = mesh.shape.get("fsdp", 1) > 1 or mesh.shape.get("tensor", 1) > 1
    if model_parallel and frac > max_fraction:
        worst = ", ".join(f"{p} ({b / 2**20:.2f} MiB)" for p, b in offenders[:8])
        raise InsufficientShardingError(
            f"{100 * frac:.1f}% of the parameter bytes would be replicated on every device of mesh "
            f"{dict(mesh.shape)} (limit {100 * max_fraction:.1f}%, setting train.max_replicated_fraction); "
            f"largest replicated parameters: {worst}. Check the logical axis names of these weights and the rule "
            f"table LOGICAL_AXIS_RULES in alert_jax/parallel/sharding.py."
        )
    return frac


def opt_state_shardings(tx: Any, abstract_opt_state: Any, shardings: Any, mesh: Mesh) -> Any:
    """Shardings of an optax state: every copy of the parameter tree inside it (Adam's moments) gets the parameters'
    shardings; everything else (step counts, ...) is replicated."""
    rep = NamedSharding(mesh, PartitionSpec())
    return optax.tree_utils.tree_map_params(
        tx,
        lambda _, s: s,
        abstract_opt_state,
        shardings,
        transform_non_params=lambda _: rep,
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
    """``ShapeDtypeStruct`` tree carrying the given shardings (target for orbax restore / AOT lowering)."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s),
        tree,
        shardings,
    )
