"""What a training config may hold, and what may change when a run resumes.

:func:`validate` checks every numeric and enum setting of a ``configs/finetune.py`` config before anything is
written, and raises :class:`TrainConfigError` with one line naming the setting and the accepted values. Checks that
need the data or the checkpoint (a missing corpus, a tokenizer larger than the vocabulary) happen where those are
read.

:func:`check_resume` compares the config of a resumed run with the one its latest checkpoint was saved with. A run
that resumes with settings that change the optimisation (:data:`RESUME_LOCKED`: the model, the optimizer and its
schedule, the batch, the data and its order) would continue a different experiment under the same workdir, so it is
refused unless each changed setting is named in ``train.resume_overrides`` (comma-separated dotted names, e.g.
``train.num_steps`` to train further). Logging, evaluation and checkpoint cadence, the mesh and paths of data that
is only evaluated, the tokenizer setting (a resumed run uses the one saved in its workdir) may change freely.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import ml_collections

from alert_jax.models.sizes import model_config_from
from alert_jax.parallel.sharding import resolve_mesh_shape
from alert_jax.train.optimizer import WEIGHT_DECAY_MASKS
from alert_jax.train.step import DROPOUT_RNG_IMPLS

BEST_METRICS = ("val_loss", "dev_loss", "dev_score")  # train.best_metric choices (io.checkpoint ranks them)
MODES = ("ft", "cot")

# Settings whose change on resume changes the optimisation; a prefix covers every key below it.
RESUME_LOCKED: tuple[str, ...] = (
    "seed", "mode", "init_from", "model", "optimizer",
    "train.batch_size", "train.grad_accum_steps", "train.num_steps", "train.dropout_rng_impl",
    "data.corpus", "data.train_split", "data.seq_len", "data.loss_on_prompt",
    "data.pack_chunk_examples", "data.synthetic_seed", "data.synthetic_train_examples",
)


class TrainConfigError(ValueError):
    """A training setting that cannot work; the message names it and what is accepted."""


def _value(cfg: ml_collections.ConfigDict, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node[part]
    return node


def number(cfg: ml_collections.ConfigDict, key: str, *, error: type[ValueError] = TrainConfigError) -> float:
    """The finite number at dotted ``key``; else ``error`` naming the setting."""
    node = _value(cfg, key)
    try:
        value = float(node)
    except (TypeError, ValueError):
        raise error(f"{key}={node!r}: must be a number") from None
    if not math.isfinite(value):
        raise error(f"{key}={node!r}: must be finite")
    return value


def at_least(cfg: ml_collections.ConfigDict, key: str, low: float, *, integer: bool = True,
             error: type[ValueError] = TrainConfigError) -> None:
    """``cfg[key] >= low`` (and an integer unless ``integer=False``); else ``error`` naming the setting."""
    value = number(cfg, key, error=error)
    if value < low or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise error(f"{key}={value:g}: must be {kind} >= {low:g}")


def in_range(cfg: ml_collections.ConfigDict, key: str, low: float, high: float, *, low_open: bool = False,
             high_open: bool = False, error: type[ValueError] = TrainConfigError) -> None:
    """``cfg[key]`` in the interval from ``low`` to ``high`` (closed unless said open); else ``error``."""
    value = number(cfg, key, error=error)
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise error(f"{key}={value:g}: must be in {shown}")


def one_of(cfg: ml_collections.ConfigDict, key: str, choices: tuple[str, ...], *,
           error: type[ValueError] = TrainConfigError) -> None:
    """``str(cfg[key])`` is one of ``choices``; else ``error`` listing them."""
    value = str(_value(cfg, key))
    if value not in choices:
        raise error(f"{key}={value!r}: must be one of {', '.join(choices)}")


def validate(cfg: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raises :class:`TrainConfigError` for the first setting that cannot work (module docstring)."""
    if number(cfg, "optimizer.learning_rate") <= 0:
        raise TrainConfigError(f"optimizer.learning_rate={cfg.optimizer.learning_rate}: must be > 0")
    at_least(cfg, "optimizer.warmup_steps", 0)
    in_range(cfg, "optimizer.end_lr_fraction", 0, 1)
    in_range(cfg, "optimizer.b1", 0, 1, high_open=True)
    in_range(cfg, "optimizer.b2", 0, 1, high_open=True)
    if number(cfg, "optimizer.eps") <= 0:
        raise TrainConfigError(f"optimizer.eps={cfg.optimizer.eps}: must be > 0")
    at_least(cfg, "optimizer.weight_decay", 0, integer=False)
    number(cfg, "optimizer.clip_norm")  # <= 0 disables clipping
    one_of(cfg, "optimizer.weight_decay_mask", WEIGHT_DECAY_MASKS)
    for key in ("train.batch_size", "train.grad_accum_steps", "train.num_steps", "train.log_every",
                "train.keep_checkpoints", "data.pack_chunk_examples", "data.num_threads"):
        at_least(cfg, key, 1)
    for key in ("train.eval_batch_size", "train.eval_every", "train.checkpoint_every", "train.stop_at_step",
                "train.dev_every", "train.keep_period", "train.profile_steps", "data.max_eval_examples",
                "data.dev_eval_instances", "data.dev_max_options", "data.tokenizer_train_texts"):
        at_least(cfg, key, 0)
    for key in ("data.dev_generate_instances", "data.dev_generate_max_new_tokens"):
        at_least(cfg, key, 1)
    at_least(cfg, "data.seq_len", 2)
    in_range(cfg, "train.max_replicated_fraction", 0, 1)
    one_of(cfg, "mode", MODES)
    one_of(cfg, "train.best_metric", BEST_METRICS)
    if str(cfg.train.best_metric) == "dev_score" and bool(cfg.train.keep_best) and int(cfg.train.dev_every) <= 0:
        raise TrainConfigError("train.best_metric='dev_score' needs train.dev_every > 0 (steps between dev scores)")
    one_of(cfg, "train.dropout_rng_impl", DROPOUT_RNG_IMPLS)
    try:
        model = model_config_from(cfg)
    except ValueError as e:
        raise TrainConfigError(str(e)) from None
    if int(cfg.data.seq_len) > model.arch.max_position_embeddings:
        raise TrainConfigError(f"data.seq_len={cfg.data.seq_len}: longer than the model's "
                               f"max_position_embeddings={model.arch.max_position_embeddings}")
    _check_batch(cfg, num_devices)


def mesh_sizes(cfg: ml_collections.ConfigDict, num_devices: int, *,
               error: type[ValueError] = TrainConfigError) -> tuple[int, int, int]:
    """``(data, fsdp, tensor)`` of ``mesh.shape`` for ``num_devices`` (``parallel.sharding.resolve_mesh_shape``);
    else ``error`` naming the setting."""
    try:
        return resolve_mesh_shape(tuple(cfg.mesh.shape), num_devices)
    except (TypeError, ValueError) as e:
        raise error(f"mesh.shape={tuple(cfg.mesh.shape)}: {e}") from None


def _check_batch(cfg: ml_collections.ConfigDict, num_devices: int) -> None:
    """Microbatches split over the mesh's batch shards (data x fsdp)."""
    data, fsdp, _ = mesh_sizes(cfg, num_devices)
    batch, k = int(cfg.train.batch_size), int(cfg.train.grad_accum_steps)
    if batch % k or (batch // k) % (data * fsdp):
        raise TrainConfigError(f"train.batch_size={batch}: must split into train.grad_accum_steps={k} microbatches "
                               f"of a multiple of the {data * fsdp} batch shards (mesh data x fsdp)")
    eval_batch = int(cfg.train.eval_batch_size) or batch // k
    if eval_batch % (data * fsdp):
        raise TrainConfigError(f"train.eval_batch_size={eval_batch}: must be a multiple of the {data * fsdp} batch "
                               "shards (mesh data x fsdp)")


def _flat(d: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flat(value, name + ".")
        else:
            yield name, value


def _locked(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_LOCKED)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def check_resume(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Raises :class:`TrainConfigError` naming every :data:`RESUME_LOCKED` setting that differs between the saved
    config and ``current`` (both JSON-like dicts) and is not named in ``current``'s ``train.resume_overrides``;
    returns the overridden changes as ``'key: old -> new'`` lines (for the log)."""
    old, new = dict(_flat(saved)), dict(_flat(current))
    overrides = {s.strip() for s in str(current.get("train", {}).get("resume_overrides", "")).split(",") if s.strip()}
    changed = [k for k in sorted(set(old) | set(new)) if _locked(k) and not _same(old.get(k), new.get(k))]
    refused = [k for k in changed if not any(k == o or k.startswith(o + ".") for o in overrides)]
    if refused:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in refused)
        raise TrainConfigError(
            f"resuming with settings that change the optimisation ({shown}); use a new --workdir, or name them in "
            f"--config.train.resume_overrides={','.join(refused)} to continue this run with them"
        )
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed]
