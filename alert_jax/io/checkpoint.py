"""Checkpoints: orbax ``CheckpointManager`` (async) over the train state, the data-iterator state and the config.

Layout of a checkpoint directory (``<workdir>/checkpoints``)::

    checkpoints/
      config.json          the resolved app config (also inside every step)
      tokenizer/           save_tokenizer() output: the tokenizer the model was trained with
      <step>/state/        TrainState (step, params, opt_state, rng), one array file set per leaf, sharded writes
      <step>/data/         grain iterator state, one JSON file per process (process_<i>-of-<n>.json)
      <step>/config/       the config as JSON
      <step>/metrics/      {'val_loss': ..., 'dev_loss': ...} when the step was evaluated (drives "keep the best")

Retention: the latest ``keep`` steps plus the step with the lowest ``best_metric`` (``keep_best``; the training
config's ``train.best_metric``, 'val_loss' by default; :func:`locate` reads it from ``config.json``). All processes call
``save``/``restore`` (orbax coordinates); only process 0 writes the config/tokenizer files. Restores go straight into
the target shardings given by an abstract tree of ``jax.ShapeDtypeStruct`` s (see ``train.state.abstract_state``).
Loading a model from a checkpoint (``init_from='ckpt:DIR'``) is ``io.loader``'s job.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

STATE_ITEM = "state"
DATA_ITEM = "data"
CONFIG_ITEM = "config"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
CHECKPOINTS_SUBDIR = "checkpoints"
DEFAULT_BEST_METRIC = "val_loss"


class CheckpointNotFoundError(FileNotFoundError):
    """No alert_jax checkpoint where one was expected."""


def config_to_dict(cfg: ml_collections.ConfigDict) -> dict:
    """JSON-safe dict of a config (tuples become lists)."""
    return json.loads(cfg.to_json_best_effort())


def config_from_dict(d: dict) -> ml_collections.ConfigDict:
    """Inverse of :func:`config_to_dict`; ``mesh.shape`` is turned back into a tuple."""
    d = json.loads(json.dumps(d))  # deep copy
    if isinstance(d.get("mesh"), dict) and isinstance(d["mesh"].get("shape"), list):
        d["mesh"]["shape"] = tuple(d["mesh"]["shape"])
    return ml_collections.ConfigDict(d)


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` with the three items above.

    Args:
      directory: the checkpoints folder (created).
      keep: how many of the latest steps to keep.
      keep_best: also keep the step with the lowest ``best_metric``.
      async_save: write arrays in a background thread (``wait()`` before reading them back or exiting).
      best_metric: the key of the ``metrics`` passed to :meth:`save` that ranks steps ("best" = lowest); steps
        saved earlier without it (e.g. under another setting) rank last.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, keep_best: bool = True, async_save: bool = True,
                 best_metric: str = DEFAULT_BEST_METRIC):
        self.directory = pathlib.Path(directory).absolute()
        self.best_metric = str(best_metric)
        rank = _metric_fn(self.best_metric)
        policies: list[Any] = [ocm.LatestN(n=max(int(keep), 1))]
        if keep_best:
            policies.append(
                ocm.BestN(get_metric_fn=rank, reverse=True, n=1, keep_checkpoints_without_metrics=False)
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            best_fn=rank,
            best_mode="min",
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                STATE_ITEM: ocp.PyTreeCheckpointHandler(),
                DATA_ITEM: grain.checkpoint.CheckpointHandler(),
                CONFIG_ITEM: ocp.JsonCheckpointHandler(),
            },
        )

    # -- queries -------------------------------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """Step with the lowest ``best_metric`` (the latest step when none was evaluated)."""
        return self.manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    # -- save / restore ------------------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: Any,
        config: ml_collections.ConfigDict,
        data_iterator: Any | None = None,
        *,
        metrics: dict[str, float] | None = None,
        force: bool = True,
    ) -> bool:
        """Saves ``state`` (a pytree of jax.Arrays), this process's data-iterator state and the config as ``step``.

        Asynchronous: arrays are copied to host and written in the background; call :meth:`wait` before exiting.
        ``metrics`` (finite values, including ``best_metric``) make the step a candidate for "best"; metrics
        without ``best_metric`` raise ValueError naming it (``train.best_metric``).
        """
        items: dict[str, Any] = {
            STATE_ITEM: ocp.args.PyTreeSave(state),
            CONFIG_ITEM: ocp.args.JsonSave(config_to_dict(config)),
        }
        if data_iterator is not None:
            items[DATA_ITEM] = grain.checkpoint.CheckpointSave(data_iterator)
        if metrics is not None:
            if self.best_metric not in metrics:
                raise ValueError(f"checkpoint step {step}: metrics {sorted(metrics)} lack {self.best_metric!r}, the "
                                 f"metric that selects the best checkpoint (train.best_metric)")
            metrics = {k: float(v) for k, v in metrics.items()}
            if not all(map(_finite, metrics.values())):
                metrics = None
        return self.manager.save(int(step), args=ocp.args.Composite(**items), metrics=metrics, force=force)

    def restore(
        self,
        step: int,
        abstract_state: Any,
        data_iterator: Any | None = None,
    ) -> tuple[Any, ml_collections.ConfigDict]:
        """``(state, config)`` of ``step``; the state is placed with the shardings of ``abstract_state`` (a tree of
        ``jax.ShapeDtypeStruct`` with ``sharding``). ``data_iterator`` (if given) is set to the saved position."""
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
        items: dict[str, Any] = {
            STATE_ITEM: ocp.args.PyTreeRestore(item=abstract_state, restore_args=restore_args),
            CONFIG_ITEM: ocp.args.JsonRestore(),
        }
        if data_iterator is not None:
            items[DATA_ITEM] = grain.checkpoint.CheckpointRestore(data_iterator)
        out = self.manager.restore(int(step), args=ocp.args.Composite(**items))
        return out[STATE_ITEM], config_from_dict(out[CONFIG_ITEM])

    def restore_params(self, step: int, abstract_params: Any) -> Any:
        """Only the ``params`` of the saved TrainState (no optimizer state is read)."""
        return _restore_params(self.manager, step, abstract_params)

    def write_extras(self, config: ml_collections.ConfigDict, tokenizer: Any | None = None) -> None:
        """``config.json`` and the tokenizer beside the steps (process 0 only)."""
        if jax.process_index() != 0:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / CONFIG_FILE).write_text(json.dumps(config_to_dict(config), indent=2))
        if tokenizer is not None:
            from alert_jax.io.tokenizers import save_tokenizer

            save_tokenizer(tokenizer, self.directory / TOKENIZER_DIR)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are written (and old steps deleted)."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _metric_fn(name: str) -> Any:
    """Ranking function over a step's saved metrics: ``metrics[name]``; +inf (never best) when it lacks ``name``."""

    def rank(metrics: Any) -> float:
        try:
            return float(metrics[name])
        except (KeyError, TypeError):
            return float("inf")

    return rank


def saved_best_metric(root: str | os.PathLike) -> str:
    """``train.best_metric`` of the run whose checkpoints folder is ``root`` (its ``config.json``), else the default."""
    f = pathlib.Path(root) / CONFIG_FILE
    try:
        train = json.loads(f.read_text()).get("train") or {}
    except (OSError, ValueError):
        return DEFAULT_BEST_METRIC
    return str(train.get("best_metric") or DEFAULT_BEST_METRIC)


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def _restore_params(manager: ocp.CheckpointManager, step: int, abstract_params: Any) -> Any:
    target = {"params": abstract_params}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
    out = manager.restore(int(step), args=ocp.args.Composite(**{STATE_ITEM: args}))
    return out[STATE_ITEM]["params"]


# ---------------------------------------------------------------------------------------------------------------------
# Locating and loading checkpoints for evaluation ('ckpt:DIR')
# ---------------------------------------------------------------------------------------------------------------------


def locate(path: str | os.PathLike) -> tuple[pathlib.Path, int]:
    """``(checkpoints folder, step)`` for a workdir, a checkpoints folder (best step, else latest) or one step folder.

    Raises :class:`CheckpointNotFoundError` naming the path when there is none.
    """
    p = pathlib.Path(path).expanduser().absolute()
    if (p / CHECKPOINTS_SUBDIR).is_dir():
        p = p / CHECKPOINTS_SUBDIR
    if p.name.isdigit() and (p / STATE_ITEM).is_dir():
        return p.parent, int(p.name)
    if not p.is_dir():
        raise CheckpointNotFoundError(f"checkpoint path {p} does not exist")
    steps = sorted(int(c.name) for c in p.iterdir() if c.name.isdigit() and (c / STATE_ITEM).is_dir())
    if not steps:
        raise CheckpointNotFoundError(f"no alert_jax checkpoint steps (folders <step>/{STATE_ITEM}) in {p}")
    mgr = ocp.CheckpointManager(
        p, options=ocp.CheckpointManagerOptions(best_fn=_metric_fn(saved_best_metric(p)), best_mode="min",
                                                read_only=True, create=False)
    )
    step = mgr.best_step()
    mgr.close()
    return p, int(step if step is not None else steps[-1])


def load_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config saved with the checkpoint at ``path`` (see :func:`locate`)."""
    root, step = locate(path)
    f = root / str(step) / CONFIG_ITEM / "metadata"
    if f.is_file():
        return config_from_dict(json.loads(f.read_text()))
    if (root / CONFIG_FILE).is_file():
        return config_from_dict(json.loads((root / CONFIG_FILE).read_text()))
    raise CheckpointNotFoundError(f"no config saved with checkpoint {root}/{step}")


def restore_params(root: str | os.PathLike, step: int, abstract_params: Any) -> Any:
    """The ``params`` of the TrainState saved as ``step`` in the checkpoints folder ``root`` (no optimizer state is
    read), placed with the shardings (and cast to the dtypes) of ``abstract_params``, a pure-dict tree of
    ``jax.ShapeDtypeStruct`` with ``sharding``."""
    mgr = ocp.CheckpointManager(pathlib.Path(root), options=ocp.CheckpointManagerOptions(read_only=True, create=False))
    try:
        params = _restore_params(mgr, step, abstract_params)
    finally:
        mgr.close()
    logging.info("restored model parameters of step %d from %s", step, root)
    return params


def tokenizer_dir(path: str | os.PathLike) -> pathlib.Path:
    """The tokenizer folder stored beside the checkpoint at ``path``."""
    root, _ = locate(path)
    return root / TOKENIZER_DIR
