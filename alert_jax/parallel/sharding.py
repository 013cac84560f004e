"""Mesh construction, THE logical-axis rule table and THE fit rule.

Every array in alert-jax names its dimensions with *logical* axis names; this module is the one place that maps them
to the physical mesh axes ``('data', 'fsdp', 'tensor')``:

=========  ==================  ============================================================
logical    mesh axis           used by
=========  ==================  ============================================================
batch      ('data', 'fsdp')    activations and input batches ``[batch, length]``
length     None                sequence dimension (replicated)
embed      'fsdp'              model dimension of every weight matrix (FSDP / ZeRO-3)
mlp        'tensor'            FFN hidden dimension (fc1 output, fc2 input)
heads      'tensor'            attention heads
kv         None                per-head dimension
vocab      'tensor'            vocabulary dimension of the (tied) embedding
layers     None                the stacked-layer dimension of scanned weights
=========  ==================  ============================================================

A mesh axis of size 1 makes its rules no-ops, so the same table serves 1 CPU, 8 fake devices, or a pod.

**The fit rule** (:func:`logical_spec`, used for parameters, activations, the KV cache and the planner alike): a mesh
axis is used at most once per array (a later dimension that maps to an axis already taken stays unsplit on it); then,
per dimension, the mapped mesh axes are kept in rule order while the product of the kept sizes divides the dimension,
and an axis that would not divide it is skipped. Example on a mesh ``data=2, fsdp=4``: ``batch`` of 8 rows ->
``('data', 'fsdp')``; 6 rows -> ``'data'`` (fsdp's 4 would leave 6 / 8); 3 rows -> unsplit. So odd test shapes still
run, and a dimension is never split unevenly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES: tuple[str, str, str] = ("data", "fsdp", "tensor")

# The one rule table (ordered). Changing a mapping here changes it everywhere.
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("layers", None),
)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int | None = None) -> tuple[int, int, int]:
    """Resolves a ``(data, fsdp, tensor)`` shape where at most one entry is ``-1`` ("fill with the rest").

    >>> resolve_mesh_shape((-1, 2, 1), num_devices=8)
    (4, 2, 1)
    """
    if num_devices is None:
        num_devices = jax.device_count()
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh shape {shape} must have {len(MESH_AXES)} entries for axes {MESH_AXES}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
    known = math.prod(s for s in shape if s != -1)
    if known <= 0 or num_devices % known:
        raise ValueError(f"mesh shape {shape} does not divide the {num_devices} available devices")
    resolved = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(resolved) != num_devices:
        raise ValueError(
            f"mesh shape {shape} resolves to {resolved} = {math.prod(resolved)} devices, "
            f"but {num_devices} devices are available"
        )
    return resolved  # type: ignore[return-value]


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the ``('data', 'fsdp', 'tensor')`` mesh with Auto axis types (sharding propagated by XLA)."""
    devices = list(jax.devices()) if devices is None else list(devices)
    resolved = resolve_mesh_shape(shape, len(devices))
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(resolved, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)
    return Mesh(np.asarray(devices).reshape(resolved), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def logical_spec(
    names: Sequence[str | None] | None,
    shape: Sequence[int] | None = None,
    mesh_axes: Mapping[str, int] | None = None,
    rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES,
) -> PartitionSpec:
    """THE fit rule (module docstring): logical axis names -> ``PartitionSpec``.

    Args:
      names: one logical name (or ``None``) per dimension; unknown names and ``None`` replicate. ``None`` for the
        whole tuple: replicated.
      shape: the array's shape; with ``mesh_axes``, mesh axes that do not divide a dimension are skipped for it.
        Without ``shape`` the spec is the rule table's mapping alone.
      mesh_axes: ``{mesh axis: size}`` of the mesh (concrete or abstract); axes absent from it are skipped.
    """
    if names is None:
        return PartitionSpec()
    table = dict(rules)
    used: set[str] = set()
    dims = [None] * len(names) if shape is None else list(shape)
    out = []
    for name, dim in zip(names, dims):
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        if mesh_axes is not None:
            axes = tuple(a for a in axes if a in mesh_axes)
        if dim is not None and mesh_axes is not None:
            kept, size = [], 1
            for a in axes:
                if dim % (size * mesh_axes[a]) == 0:
                    kept.append(a)
                    size *= mesh_axes[a]
            axes = tuple(kept)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def logical_sharding(
    mesh: Mesh,
    names: Sequence[str | None] | None,
    shape: Sequence[int] | None = None,
    rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES,
) -> NamedSharding:
    """``NamedSharding`` on ``mesh`` for an array whose dimensions carry the given logical names (and, when given,
    this ``shape``: the fit rule then drops mesh axes that do not divide a dimension)."""
    return NamedSharding(mesh, logical_spec(names, shape, dict(mesh.shape), rules))


def batch_sharding(mesh: Mesh, rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES) -> NamedSharding:
    """Sharding of a ``[batch, length]`` input array."""
    return logical_sharding(mesh, ("batch", "length"), rules=rules)


def batch_shards(mesh: Mesh) -> int:
    """Number of pieces a ``[batch, ...]`` array is split into (data x fsdp)."""
    return int(mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` of ``x`` by its logical names under the active mesh (the fit rule with ``x``'s
    shape); a no-op outside :func:`use_mesh` / ``jax.set_mesh``."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    spec = logical_spec(names, x.shape, dict(zip(mesh.axis_names, mesh.axis_sizes)))
    return jax.lax.with_sharding_constraint(x, spec)


@contextlib.contextmanager
def use_mesh(mesh: Mesh) -> Iterator[Mesh]:
    """Activates ``mesh`` (``jax.set_mesh``) and the rule table (``nnx.logical_axis_rules``) for tracing and running
    programs whose arrays carry logical names."""
    with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
        yield mesh
