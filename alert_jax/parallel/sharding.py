"""Mesh construction and THE logical-axis rule table.

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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
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


def logical_to_spec(
    names: Sequence[str | None] | None, rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES
) -> PartitionSpec:
    """Maps logical axis names to a ``PartitionSpec`` with the rule table; unknown or ``None`` names replicate.

    A mesh axis is used at most once per spec (later dimensions that would reuse it are replicated).
    """
    if names is None:
        return PartitionSpec()
    table = dict(rules)
    used: set[str] = set()
    out = []
    for name in names:
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def logical_sharding(
    mesh: Mesh, names: Sequence[str | None] | None, rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES
) -> NamedSharding:
    """``NamedSharding`` for an array whose dimensions carry the given logical names."""
    return NamedSharding(mesh, logical_to_spec(names, rules))


def batch_sharding(mesh: Mesh, rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES) -> NamedSharding:
    """Sharding of a ``[batch, length]`` input array."""
    return logical_sharding(mesh, ("batch", "length"), rules)
