"""AdamW, the learning-rate schedule and the weight-decay mask, all read from ``cfg.optimizer``.

Settings (``configs/finetune.py`` fills them; every one is required):

===================  ==============================================================================================
learning_rate        peak learning rate (reached at the end of warmup)
warmup_steps         linear warmup 0 -> peak over this many steps
num_steps            ``cfg.train.num_steps``; after warmup the rate decays linearly to peak * end_lr_fraction at it
end_lr_fraction      final rate as a fraction of the peak (0.1 = decay to 10 %)
b1, b2, eps          Adam moments (paper / OPT: 0.9, 0.95, 1e-8)
weight_decay         decoupled decay coefficient (0.1)
weight_decay_mask    'matrices': kernels and embedding tables (token and position) decay; biases and LayerNorm
                     scales/biases never do.  'all': everything decays.  'none': nothing decays.
clip_norm            global gradient-norm clip (1.0); <= 0 disables
moment_dtype         dtype of Adam's first/second moments ('float32')
===================  ==============================================================================================

How 'matrices' is decided: a parameter is a *matrix* when its name is not a bias / LayerNorm parameter
(leaf name ``bias``/``scale`` or a path component naming a norm) AND it has at least 2 dimensions once the stacked
``layers`` axis is discounted. The name test is what excludes OPT's q/k/v biases, whose per-layer shape
``[heads, head_dim]`` is 2-D; the ndim test excludes any other vector. The layer axis is recognised from the
parameter's logical axis names when given (``logical_names``), else from a path component called ``layers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax

from alert_jax.parallel.param_sharding import LogicalNames

if TYPE_CHECKING:  # only in annotations: the training code imports without ml_collections
    import ml_collections

WEIGHT_DECAY_MASKS: tuple[str, ...] = ("matrices", "all", "none")  # optimizer.weight_decay_mask choices

# A path component (module or leaf name) that marks a LayerNorm parameter.
_NORM_RE = re.compile(r"norm|(^|_)ln(_|\d|$)", re.IGNORECASE)
_NO_DECAY_LEAVES = frozenset({"bias", "scale", "b", "g", "gamma", "beta"})


def make_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then linear decay to
    ``learning_rate * end_lr_fraction`` at ``cfg.train.num_steps`` (held constant afterwards).

    The schedule is evaluated at the optimizer's update count, i.e. the update that produces step ``s + 1`` uses
    ``schedule(s)``; step 0 therefore has learning rate 0 when ``warmup_steps > 0``.
    """
    o = cfg.optimizer
    peak = float(o.learning_rate)
    warmup = int(o.warmup_steps)
    total = int(cfg.train.num_steps)
    end = peak * float(o.end_lr_fraction)
    if warmup < 0 or total <= 0:
        raise ValueError(f"optimizer.warmup_steps={warmup} must be >= 0 and train.num_steps={total} > 0")
    decay_steps = max(total - warmup, 1)
    decay = optax.linear_schedule(peak, end, decay_steps)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _path_names(path: Sequence[Any]) -> list[str]:
    out = []
    for k in path:
        key = getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
        out.append(str(key))
    return out


def is_decayed(path_names: Sequence[str], ndim: int, logical_names: Sequence[str | None] | None = None) -> bool:
    """Whether the parameter at ``path_names`` (module path + leaf name) with ``ndim`` dims gets weight decay
    under the 'matrices' policy (see the module docstring)."""
    leaf = path_names[-1].lower() if path_names else ""
    if leaf in _NO_DECAY_LEAVES or leaf.endswith("_bias") or leaf.endswith("_scale"):
        return False
    if any(_NORM_RE.search(p) for p in path_names):
        return False
    if logical_names is not None:
        stacked = "layers" in tuple(logical_names)
    else:
        stacked = any(p == "layers" for p in path_names[:-1])
    return ndim - (1 if stacked else 0) >= 2


def decay_mask(params: Any, logical_names: Any | None = None, policy: str = "matrices") -> Any:
    """Tree of bools shaped like ``params``: True where weight decay applies.

    Args:
      params: a pytree of arrays / ``ShapeDtypeStruct`` (e.g. the pure-dict parameters of an OPT model).
      logical_names: optional tree with the same structure whose leaves are tuples of logical axis names
        (wrapped as :class:`LogicalNames` leaves), used to recognise the stacked ``layers`` axis.
      policy: 'matrices' | 'all' | 'none'.
    """
    if policy not in WEIGHT_DECAY_MASKS:
        raise ValueError(f"optimizer.weight_decay_mask={policy!r}: expected 'matrices', 'all' or 'none'")
    if policy != "matrices":
        return jax.tree.map(lambda _: policy == "all", params)
    names_by_path: dict[tuple[str, ...], Sequence[str | None]] = {}
    if logical_names is not None:
        for path, names in jax.tree_util.tree_flatten_with_path(
            logical_names, is_leaf=lambda x: isinstance(x, LogicalNames)
        )[0]:
            names_by_path[tuple(_path_names(path))] = tuple(names)

    def f(path, leaf):
        p = _path_names(path)
        return is_decayed(p, len(jnp.shape(leaf)), names_by_path.get(tuple(p)))

    return jax.tree_util.tree_map_with_path(f, params)


def make_optimizer(
    cfg: ml_collections.ConfigDict,
    *,
    mask: Any | Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    """AdamW with global-norm clipping and the schedule of :func:`make_schedule`.

    Chain: ``clip_by_global_norm(clip_norm)`` -> ``adamw(schedule, b1, b2, eps, weight_decay, mask)``. Moments are
    kept in ``moment_dtype`` (fp32) whatever the parameter dtype.

    Args:
      cfg: the app config (reads ``cfg.optimizer`` and ``cfg.train.num_steps``).
      mask: weight-decay mask tree (or a callable params -> mask); default: :func:`decay_mask` with the policy
        ``cfg.optimizer.weight_decay_mask`` computed from the parameter paths.
    """
    o = cfg.optimizer
    if mask is None:
        policy = str(o.weight_decay_mask)
        mask = lambda params: decay_mask(params, policy=policy)  # noqa: E731
    chain = []
    if float(o.clip_norm) > 0:
        chain.append(optax.clip_by_global_norm(float(o.clip_norm)))
    chain.append(
        optax.adamw(
            make_schedule(cfg),
            b1=float(o.b1),
            b2=float(o.b2),
            eps=float(o.eps),
            mu_dtype=jnp.dtype(str(o.moment_dtype)),
            weight_decay=float(o.weight_decay),
            mask=mask,
        )
    )
    # optax's ``mu_dtype`` covers the first moment; the second follows the gradient dtype, which is the parameter
    # dtype (fp32 master weights), so both moments are fp32 with the default settings.
    return optax.chain(*chain)


def count_decayed(params: Any, mask: Any) -> tuple[int, int]:
    """(decayed, total) parameter counts, for logging the decay choice."""
    leaves = jax.tree.leaves(params)
    flags = jax.tree.leaves(mask)
    total = sum(int(jnp.size(x)) for x in leaves)
    decayed = sum(int(jnp.size(x)) for x, m in zip(leaves, flags) if m)
    return decayed, total


def describe_mask(params: Mapping[str, Any], mask: Any) -> list[str]:
    """Human-readable 'path: decay|no-decay' lines (one per parameter)."""
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_m = jax.tree.leaves(mask)
    return [f"{'/'.join(_path_names(p))}: {'decay' if m else 'no-decay'}" for (p, _), m in zip(flat_p, flat_m)]
