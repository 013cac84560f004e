"""Plain helper functions shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
from typing import Any


def restore_checkpoint(path: str | os.PathLike) -> tuple[Any, Any]:
    """``(model, saved app config)`` of the alert-jax checkpoint at ``path`` (workdir, checkpoints folder or step
    folder) on one device, with the saved run's own runtime settings: ``io.loader.load_model`` of ``ckpt:path``."""
    import jax

    from alert_jax.io import checkpoint, loader
    from alert_jax.models.sizes import model_config_from
    from alert_jax.parallel.sharding import make_mesh

    root, step = checkpoint.locate(path)
    cfg = checkpoint.load_config(root / str(step))
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    return loader.load_model(f"ckpt:{path}", model_config_from(cfg), mesh).model, cfg
