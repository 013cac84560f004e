"""Per-device memory of an evaluation config (``configs/evaluate.py:SIZE``) on a mesh: its decode call as the
evaluation runs it, compiled from abstract shapes (``apps.plan.plan_decode``; nothing is allocated).

The call planned is the largest one the evaluation makes: ``eval.batch_size`` rows (rounded up to a multiple of data x
fsdp, as the ``Generator`` does), a prompt filling the context (``eval.context``, 0 = the model's positions) less
``eval.max_new_tokens``, and every row generating all of them; compute in ``model.dtype``, weights stored in
``model.param_dtype``, with the per-layer decoding copy of the weights when ``eval.unstack_layers`` is on. The
report and its ``verdict: decode ...`` line are :func:`alert_jax.apps.plan.format_plan`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jax.sharding import Mesh

from alert_jax.apps.plan import DEFAULT_USABLE_FRACTION, MemoryPlan, error_text, plan_decode
from alert_jax.io import loader
from alert_jax.models.sizes import model_config_from
from alert_jax.parallel.sharding import batch_shards


def is_evaluation_config(cfg: Any) -> bool:
    """An evaluation config has an ``eval`` section and no ``train`` one (a training config is ``apps.plan``'s)."""
    return "eval" in cfg and "train" not in cfg


def plan_evaluation(
    cfg: Any,
    mesh: Mesh,
    *,
    device_memory: int | None = None,
    usable_fraction: float = DEFAULT_USABLE_FRACTION,
    batch_size: int | None = None,
    prompt_len: int | None = None,
    max_new_tokens: int | None = None,
    dtype: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> MemoryPlan:
    """Plans the evaluation's decode call (module docstring) on ``mesh``; the arguments override the config's batch,
    prompt length, new tokens and dtype (weights and compute). A call that fails to lower or compile is recorded as
    ``decode_error``; a prompt that does not fit the model's positions raises ``ValueError``."""
    e = cfg.eval
    model_config = loader.resolve_config(str(cfg.init_from), model_config_from(cfg))
    shards = batch_shards(mesh)
    rows = -(-int(batch_size or e.batch_size) // shards) * shards
    max_pos = model_config.arch.max_position_embeddings
    new = int(max_new_tokens or e.max_new_tokens)
    prompt = int(prompt_len or (int(e.context) or max_pos) - new)
    if prompt < 1 or prompt + new > max_pos:
        raise ValueError(f"decode prompt {prompt} + {new} new tokens does not fit max_position_embeddings={max_pos} "
                         f"(eval.context={e.context}, eval.max_new_tokens={e.max_new_tokens})")
    result = MemoryPlan(
        size=str(cfg.model.size),
        model=model_config,
        mesh_shape={k: int(v) for k, v in mesh.shape.items()},
        platform=mesh.devices.flat[0].platform,
        device_memory=device_memory,
        usable_fraction=usable_fraction,
        train_planned=False,
    )
    compute, stored = dtype or model_config.runtime.dtype, dtype or model_config.runtime.param_dtype
    log(f"compiling the evaluation's decode: batch {rows}, prompt {prompt} + {new} new tokens, {stored} weights, "
        f"{compute} compute")
    try:
        result.decode = plan_decode(model_config, mesh, batch_size=rows, prompt_len=prompt, max_new_tokens=new,
                                    dtype=compute, param_dtype=stored, per_layer=bool(e.unstack_layers))
    except Exception as err:  # noqa: BLE001  (reported in the plan, as apps.plan does)
        result.decode_error = error_text(err)
    return result
