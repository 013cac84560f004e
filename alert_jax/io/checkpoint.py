"""Checkpoints: orbax ``CheckpointManager`` (async) over the train state, the data-iterator state and the config.

Layout of a checkpoint directory (``<workdir>/checkpoints``)::

    checkpoints/
      config.json          the resolved app config (also inside every step)
      tokenizer/           save_tokenizer() output: the tokenizer the model was trained with
      <step>/state/        TrainState (step, params, opt_state, rng), one array file set per leaf, sharded writes
      <step>/data/         grain iterator state, one JSON file per process (process_<i>-of-<n>.json)
      <step>/config/       the config as JSON
      <step>/metrics/      {'val_loss', 'dev_loss', 'dev_score', ...} when the step was evaluated ("keep the best")
      <step>/integrity.json  size and digest of every other file of the step (the seal, see below)
      damaged/<step>[-k]/  steps that failed verification or restore, moved aside for inspection (never restored)

Retention: the latest ``keep`` steps, the best step by ``best_metric`` (``keep_best``; the training config's
``train.best_metric``, 'val_loss' by default: lowest, except ``dev_score``: highest; :func:`locate` reads it from
``config.json``) and, with ``keep_period`` > 0, every step that is a multiple of it. :func:`locate` can also pick the
best step by another stored metric or the latest (``SELECTIONS``, ``ckpt:DIR@best_dev_score``). All processes call
``save``/``restore`` (orbax coordinates); only process 0 writes the config/tokenizer files. Restores go straight into
the target shardings given by an abstract tree of ``jax.ShapeDtypeStruct`` s (see ``train.state.abstract_state``).
Loading a model from a checkpoint (``init_from='ckpt:DIR'``) is ``io.loader``'s job; sealing and verifying a step's
files is ``io.integrity``'s.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as ocm

from alert_jax.io import orbax_noise
from alert_jax.io.files import absolute, is_url, move_folder
from alert_jax.io.integrity import (
    INTEGRITY_FILE,
    UNSEALED,
    CheckpointDamagedError,
    Verification,
    check_before_loading,
    first_line,
    seal_step,
    verify_agreed,
)
from alert_jax.io.weight_files import CheckpointError

log = logging.getLogger(__name__)

STATE_ITEM = "state"
DATA_ITEM = "data"
CONFIG_ITEM = "config"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"
CHECKPOINTS_SUBDIR = "checkpoints"
DEFAULT_BEST_METRIC = "val_loss"
HIGHER_IS_BETTER = frozenset({"dev_score"})  # stored metrics ranked highest-first; the others (losses) lowest-first
# locate(select=...): 'best' = the run's train.best_metric; 'best_<metric>' = that stored metric; 'latest'
SELECTIONS = ("best", "best_val_loss", "best_dev_loss", "best_dev_score", "latest")
DAMAGED_SUBDIR = "damaged"
_ORBAX_TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's temporary step folder: <step>.orbax-checkpoint-tmp


class CheckpointNotFoundError(FileNotFoundError):
    """No alert_jax checkpoint where one was expected."""


class CheckpointWriteError(RuntimeError):
    """Writing checkpoint files failed (a full disk, a file-size limit, lost storage). Steps saved before the
    failing one are complete and sealed; the failing one never gets its final name (orbax renames a step only once
    all of it is written), so a rerun resumes from the newest complete step once there is room."""


@contextlib.contextmanager
def _writing(directory: epath.Path) -> Iterator[None]:
    """Turns a failed write under ``directory`` into :class:`CheckpointWriteError` with one readable line.
    tensorstore reports I/O failures (ENOSPC, EFBIG) as ValueError with a status code; orbax may re-raise them from
    a later ``save`` or ``wait_until_finished``, as the background write of an earlier step."""
    try:
        yield
    except (OSError, ValueError) as e:
        log.debug("checkpoint write failed", exc_info=True)
        raise CheckpointWriteError(
            f"writing a checkpoint in {directory} failed: {_write_failure(e)}; the steps saved before it are intact: "
            "free space and rerun the same command to resume") from e


def _write_failure(e: BaseException) -> str:
    """The OS error of a failed write (``File too large (errno 27)``) where one is named, else ``first_line(e)``:
    tensorstore puts the errno at the end of a message that runs to hundreds of characters of paths."""
    if isinstance(e, OSError) and e.errno:
        return f"{e.strerror} (errno {e.errno}): {e.filename}"
    found = re.search(r"os_error_code='(\d+)'", str(e))
    if found:
        errno = int(found.group(1))
        path = re.search(r'Failed writing: "([^"]+)"', str(e))
        return f"{os.strerror(errno)} (errno {errno})" + (f" writing {path.group(1)}" if path else "")
    return first_line(e)


class CheckpointRestoreError(CheckpointError):
    """No step could be restored, and the failures are not known to be damage (see
    :meth:`Checkpointer.restore_newest_good`): nothing was moved aside. The message holds the first line of each
    orbax exception; the one of a step that verified is also chained."""


def config_to_dict(cfg: ml_collections.ConfigDict) -> dict:
    """JSON-safe dict of a config (tuples become lists)."""
    return json.loads(cfg.to_json_best_effort())


def config_from_dict(d: dict) -> ml_collections.ConfigDict:
    """Inverse of :func:`config_to_dict`; ``mesh.shape`` is turned back into a tuple."""
    d = json.loads(json.dumps(d))  # deep copy
    if isinstance(d.get("mesh"), dict) and isinstance(d["mesh"].get("shape"), list):
        d["mesh"]["shape"] = tuple(d["mesh"]["shape"])
    return ml_collections.ConfigDict(d)


def _in_flight_folder(root: epath.Path, step: int) -> epath.Path | None:
    """The folder orbax is finishing for ``step``: ``<step>.orbax-checkpoint-tmp[...]`` (rename-based storage, e.g.
    POSIX), else an unsealed ``<step>`` (storage where orbax writes in place and adds a commit marker, e.g. GCS)."""
    prefix = f"{step}{_ORBAX_TMP_SUFFIX}"
    tmp = [p for p in root.iterdir() if p.name.startswith(prefix) and p.is_dir()]
    if tmp:
        return max(tmp, key=lambda p: p.stat().mtime if is_url(p) else os.stat(p).st_mtime)
    final = root / str(step)
    if final.is_dir() and not (final / INTEGRITY_FILE).is_file():
        return final
    return None


def _damaged_destination(damaged: epath.Path, step: int) -> epath.Path:
    """``damaged/<step>``, or ``damaged/<step>-2``, ``-3``, ... when a step of that number was set aside before."""
    dest, k = damaged / str(step), 2
    while dest.exists():
        dest, k = damaged / f"{step}-{k}", k + 1
    return dest


def _sync(name: str) -> None:
    """A barrier over all processes (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _iterator_state(data_iterator: Any | None) -> Any:
    get = getattr(data_iterator, "get_state", None)
    return get() if callable(get) else None


def _set_iterator_state(data_iterator: Any | None, state: Any) -> None:
    if state is not None and callable(getattr(data_iterator, "set_state", None)):
        data_iterator.set_state(state)


def _log_primary(message: str) -> None:
    if jax.process_index() == 0:
        log.warning("%s", message)


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` with the three items above, sealing every saved step.

    Args:
      directory: the checkpoints folder (created).
      keep: how many of the latest steps to keep.
      keep_best: also keep the best step by ``best_metric``.
      async_save: write arrays in a background thread (``wait()`` before reading them back or exiting).
      best_metric: the key of the ``metrics`` passed to :meth:`save` that ranks steps ("best" = lowest, or highest
        for :data:`HIGHER_IS_BETTER`); steps saved earlier without it (e.g. under another setting) rank last.
      keep_period: > 0: also keep every step that is a multiple of it (every selection candidate of a run that
        evaluates at such steps).
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, keep_best: bool = True, async_save: bool = True,
                 best_metric: str = DEFAULT_BEST_METRIC, keep_period: int = 0):
        orbax_noise.install()
        self.directory = absolute(directory)
        self.best_metric = str(best_metric)
        self.async_save = bool(async_save)
        # steps whose save this process started and that are not sealed yet (process 0 only, which seals)
        self._unsealed: set[int] = set()
        self._lock = threading.Lock()
        rank = _metric_fn(self.best_metric)
        policies: list[Any] = [ocm.LatestN(n=max(int(keep), 1))]
        if int(keep_period) > 0:
            policies.append(ocm.EveryNSteps(interval_steps=int(keep_period)))
        if keep_best:
            policies.append(
                ocm.BestN(get_metric_fn=rank, reverse=True, n=1, keep_checkpoints_without_metrics=False)
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocm.AnyPreservationPolicy(policies),
            best_fn=rank,
            best_mode="min",
            enable_async_checkpointing=self.async_save,
            # runs on process 0 in the background save thread once every process's files are committed, before
            # the temporary folder is renamed to <step>: the seal is part of the step from its first appearance
            async_options=ocp.AsyncOptions(post_finalization_callback=self._seal_in_flight) if self.async_save
            else None,
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
        """The best step by ``best_metric`` (the latest step when none was evaluated)."""
        return self.manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    @property
    def damaged_directory(self) -> epath.Path:
        """Where :meth:`restore_newest_good` moves damaged steps (``<checkpoints>/damaged``)."""
        return self.directory / DAMAGED_SUBDIR

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
        without ``best_metric`` raise ValueError naming it (``train.best_metric``). The step is sealed
        (``integrity.json``) by process 0 when its write completes (module docstring).
        """
        step = int(step)
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
        primary = jax.process_index() == 0
        if primary:
            with self._lock:
                self._unsealed.add(step)  # before the save starts: its background callback looks for it
        try:
            with _writing(self.directory):
                saved = self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)
        except BaseException:
            with self._lock:
                self._unsealed.discard(step)
            raise
        if not saved:
            with self._lock:
                self._unsealed.discard(step)
        elif primary and not self.async_save:
            self._seal_finished()  # a synchronous save is complete (and renamed) when save() returns
        return saved

    def verify(self, step: int) -> Verification:
        """Checks the files of ``step`` against its ``integrity.json`` (every process checks its share of the files;
        all processes get the same verdict). Reads every byte of the step once, shared over the processes."""
        return verify_agreed(self.directory / str(int(step)))

    def restore(
        self,
        step: int,
        abstract_state: Any,
        data_iterator: Any | None = None,
        *,
        verify: bool = True,
    ) -> tuple[Any, ml_collections.ConfigDict]:
        """``(state, config)`` of ``step``; the state is placed with the shardings of ``abstract_state`` (a tree of
        ``jax.ShapeDtypeStruct`` with ``sharding``). ``data_iterator`` (if given) is set to the saved position.

        With ``verify`` (the default) the step's files are first checked against its ``integrity.json``: a mismatch
        raises :class:`CheckpointDamagedError` (nothing is moved; see :meth:`restore_newest_good` for the fallback),
        a step without one (saved by an older version) is restored with a logged warning. Errors of the restore
        itself (orbax / tensorstore) propagate unchanged."""
        step = int(step)
        if verify:
            check = self.verify(step)
            if check.damaged:
                raise CheckpointDamagedError(step, check.reason, self.directory / str(step))
            if check.status == UNSEALED:
                _log_primary(f"checkpoint step {step} restored unverified: {check.reason}")
        return self._restore(step, abstract_state, data_iterator)

    def restore_newest_good(
        self,
        abstract_state: Any,
        data_iterator: Any | None = None,
    ) -> tuple[int, Any, ml_collections.ConfigDict] | None:
        """Restores the newest step that verifies and restores: ``(step, state, config)``, or None when no step is
        left (none saved, or every one damaged).

        Steps are tried newest first. A step whose files differ from its ``integrity.json`` (a flipped byte, a
        truncated, missing or unreadable file, an unreadable ``integrity.json``) is *damaged*: it is reported in one
        log line (WARNING, process 0) naming the step and the reason (the file and what differs), moved to
        ``<checkpoints>/damaged/<step>`` (``-2``, ``-3``, ... when that exists; kept for inspection, no longer listed
        by this manager, :func:`locate` or :meth:`latest_step`), and the next newest step is tried. A step without
        ``integrity.json`` (saved by an older version, or interrupted between a synchronous save and its seal) is
        restored with a one-line warning that it cannot be verified; if its restore raises (truncated / deleted files
        raise in tensorstore) it counts as damaged -- moved aside with the exception's first line as the reason --
        once an older step restores into the same ``abstract_state``, which shows that the target was right.

        Returns:
          ``(step, state, config)``: ``state`` placed with the shardings of ``abstract_state``; ``data_iterator``
          (if given) set to that step's saved position. ``None``: no good step; ``data_iterator`` is left as it was
          and the caller starts nothing from this folder -- ``train.run`` prints a one-line error and exits with
          ``apps.exits.STOPPED`` (the damaged steps are in ``damaged/``).

        Raises:
          CheckpointRestoreError (a ``CheckpointError``): a step whose files verified fails to restore (the
            ``abstract_state`` / ``data_iterator`` do not match what was saved: a changed model, optimizer or data
            pipeline -- not damage, so nothing is moved), or no step restored and the failures were all on steps
            that cannot be verified (damage and a mismatched target cannot be told apart: nothing is moved). The
            message holds each failure's first line; a verified step's orbax exception is chained. With several
            processes, also an unverifiable step whose restore raises on this process: orbax's restore holds
            collective barriers that the failing process skipped, so no agreed fallback is possible (the message
            says which folder to move aside). Steps saved by this version are sealed, so they never get there.

        Every process must call it: verification is collective (each process digests its share of the files and all
        get one verdict), process 0 moves folders and the others wait for it.
        """
        self.manager.reload()
        initial = _iterator_state(data_iterator)
        suspects: list[tuple[int, str]] = []  # unverifiable steps whose restore raised, newest first
        for step in sorted(self.all_steps(), reverse=True):
            check = self.verify(step)
            if check.damaged:
                self._set_aside(step, check.reason)
                continue
            try:
                state, cfg = self._restore(step, abstract_state, data_iterator)
            except Exception as e:  # orbax / tensorstore raise many types: classified below
                reason = f"its restore failed: {first_line(e)}"
                gc.collect()  # closes the abandoned per-array reads now (their echoes are dropped: orbax_noise)
                _set_iterator_state(data_iterator, initial)
                if check.ok:
                    raise CheckpointRestoreError(
                        f"checkpoint step {step} at {self.directory} matches its {INTEGRITY_FILE} but {reason} -- the "
                        f"state or data pipeline to restore does not match the saved one (changed model, optimizer "
                        f"or data settings?); nothing was moved aside") from e
                if jax.process_count() > 1:
                    # orbax's restore has collective barriers that a process which raised has skipped, so the
                    # processes cannot agree on a fallback: stop, naming what to do (sealed steps never get here)
                    raise CheckpointRestoreError(
                        f"checkpoint step {step} at {self.directory} cannot be verified (no {INTEGRITY_FILE}) and "
                        f"{reason} on process {jax.process_index()}; with several processes a step that fails to "
                        f"restore cannot be set aside automatically: move {self.directory / str(step)} into "
                        f"{self.damaged_directory} and rerun") from e
                suspects.append((step, reason))
                continue
            for bad, reason in suspects:
                self._set_aside(bad, f"cannot be verified (no {INTEGRITY_FILE}) and {reason}; "
                                     f"step {step} restored into the same target")
            if check.status == UNSEALED:
                _log_primary(f"checkpoint step {step} restored unverified: {check.reason}")
            return step, state, cfg
        _set_iterator_state(data_iterator, initial)
        if suspects:
            listed = "; ".join(f"step {s}: {r}" for s, r in suspects)
            raise CheckpointRestoreError(
                f"no checkpoint in {self.directory} restores, and the steps that failed cannot be verified (no "
                f"{INTEGRITY_FILE}, saved by an older version): {listed} -- damaged files or a state that does not "
                f"match the saved one; nothing was moved aside")
        return None

    def restore_params(self, step: int, abstract_params: Any, *, verify: bool = True) -> Any:
        """Only the ``params`` of the saved TrainState (no optimizer state is read). ``verify``: as in
        :meth:`restore` (the check reads every file of the step, optimizer moments included)."""
        if verify:
            check_before_loading(self.directory, int(step))
        return _restore_params(self.manager, step, abstract_params)

    def write_extras(self, config: ml_collections.ConfigDict, tokenizer: Any | None = None) -> None:
        """``config.json`` and the tokenizer beside the steps (process 0 only)."""
        if jax.process_index() != 0:
            return
        from alert_jax.io.tokenizers import save_tokenizer

        with _writing(self.directory):
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / CONFIG_FILE).write_text(json.dumps(config_to_dict(config), indent=2))
            if tokenizer is not None:
                save_tokenizer(tokenizer, self.directory / TOKENIZER_DIR)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are written and sealed (and old steps deleted). Raises
        :class:`CheckpointWriteError` when a background write failed."""
        with _writing(self.directory):
            self.manager.wait_until_finished()
        self._seal_finished()

    def close(self) -> None:
        """:meth:`wait`, then releases orbax's threads."""
        self.wait()
        self.manager.close()

    # -- internals -----------------------------------------------------------------------------------------------

    def _restore(self, step: int, abstract_state: Any,
                 data_iterator: Any | None) -> tuple[Any, ml_collections.ConfigDict]:
        """The unverified orbax restore of the three items (see :meth:`restore`)."""
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
        items: dict[str, Any] = {
            STATE_ITEM: ocp.args.PyTreeRestore(item=abstract_state, restore_args=restore_args),
            CONFIG_ITEM: ocp.args.JsonRestore(),
        }
        if data_iterator is not None:
            items[DATA_ITEM] = grain.checkpoint.CheckpointRestore(data_iterator)
        out = self.manager.restore(int(step), args=ocp.args.Composite(**items))
        return out[STATE_ITEM], config_from_dict(out[CONFIG_ITEM])

    def _seal_in_flight(self) -> None:
        """orbax's ``post_finalization_callback`` (process 0, background save thread): seals the step being saved,
        still in its temporary folder. Orbax runs one save at a time, so that step is the newest started one that
        has a folder (a later ``save`` call is still waiting for this one). Never raises: a failure leaves the step
        unsealed (restorable, not verifiable) with a warning, rather than failing the save."""
        try:
            with self._lock:
                pending = sorted(self._unsealed, reverse=True)
            for step in pending:
                folder = _in_flight_folder(self.directory, step)
                if folder is None:
                    continue
                seal_step(folder)
                with self._lock:
                    self._unsealed.discard(step)
                return
            if pending:
                log.warning("checkpoint: no folder found to seal for steps %s; they stay unverifiable", pending)
        except Exception as e:  # noqa: BLE001 -- must not fail the save
            log.warning("checkpoint: could not seal the step being saved (%s); it stays unverifiable", first_line(e))

    def _seal_finished(self) -> None:
        """Seals the finished steps this process saved that are not sealed yet (synchronous saves, or a failed
        background seal). Only called when no save is in flight, so no folder is being written or deleted."""
        with self._lock:
            pending, self._unsealed = sorted(self._unsealed), set()
        for step in pending:
            folder = self.directory / str(step)
            if folder.is_dir() and not (folder / INTEGRITY_FILE).is_file():
                try:
                    seal_step(folder)
                except Exception as e:  # noqa: BLE001 -- the step stays restorable, only unverifiable
                    log.warning("checkpoint step %d: could not be sealed (%s); it stays unverifiable", step,
                                first_line(e))

    def _set_aside(self, step: int, reason: str) -> epath.Path:
        """Moves the damaged ``step`` to ``damaged/`` (process 0; the others wait), logs the one line, and re-reads the
        step list. Returns the new folder."""
        src = self.directory / str(step)
        dest = _damaged_destination(self.damaged_directory, step)
        if jax.process_index() == 0:
            move_folder(src, dest)
            log.warning("checkpoint step %d is damaged: %s; moved to %s", step, reason, dest)
        _sync(f"alert_jax_checkpoint_set_aside_{step}")
        self.manager.reload()
        return dest


def _metric_fn(name: str) -> Any:
    """Ranking function over a step's saved metrics, lowest = best: ``metrics[name]`` (negated for
    :data:`HIGHER_IS_BETTER`); +inf (never best) when it lacks ``name`` or the value is not finite."""
    sign = -1.0 if name in HIGHER_IS_BETTER else 1.0

    def rank(metrics: Any) -> float:
        try:
            value = sign * float(metrics[name])
        except (KeyError, TypeError, ValueError):
            return float("inf")
        return value if math.isfinite(value) else float("inf")

    return rank


def saved_best_metric(root: str | os.PathLike) -> str:
    """``train.best_metric`` of the run whose checkpoints folder is ``root`` (its ``config.json``), else the default."""
    f = epath.Path(root) / CONFIG_FILE
    try:
        train = json.loads(f.read_text()).get("train") or {}
    except (OSError, ValueError):
        return DEFAULT_BEST_METRIC
    return str(train.get("best_metric") or DEFAULT_BEST_METRIC)


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _restore_params(manager: ocp.CheckpointManager, step: int, abstract_params: Any) -> Any:
    target = {"params": abstract_params}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    args = ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True)
    out = manager.restore(int(step), args=ocp.args.Composite(**{STATE_ITEM: args}))
    return out[STATE_ITEM]["params"]


# ---------------------------------------------------------------------------------------------------------------------
# Locating and loading checkpoints for evaluation ('ckpt:DIR')
# ---------------------------------------------------------------------------------------------------------------------


def locate(path: str | os.PathLike, select: str = "best") -> tuple[epath.Path, int]:
    """``(checkpoints folder, step)`` for a workdir, a checkpoints folder or one step folder.

    In a checkpoints folder ``select`` picks the step (:data:`SELECTIONS`): ``'best'`` = the best by the run's
    ``train.best_metric``, else the latest; ``'best_val_loss'`` / ``'best_dev_loss'`` (lowest) or
    ``'best_dev_score'`` (highest) among the kept steps that stored that metric (ties: the latest step, the one
    retention keeps);
    ``'latest'``. A step folder is itself, whatever ``select``. Steps moved to ``damaged/`` by
    :meth:`Checkpointer.restore_newest_good` are not candidates. Raises :class:`CheckpointNotFoundError` naming the
    path when there is no step, or no kept step stored the metric ``select`` asks for.
    """
    if select not in SELECTIONS:
        raise CheckpointNotFoundError(f"checkpoint selection {select!r} for {path}: expected one of "
                                      f"{', '.join(SELECTIONS)}")
    p = absolute(epath.Path(path).expanduser())
    if (p / CHECKPOINTS_SUBDIR).is_dir():
        p = p / CHECKPOINTS_SUBDIR
    if p.name.isdigit() and (p / STATE_ITEM).is_dir():
        return p.parent, int(p.name)
    if not p.is_dir():
        raise CheckpointNotFoundError(f"checkpoint path {p} does not exist")
    steps = sorted(int(c.name) for c in p.iterdir() if c.name.isdigit() and (c / STATE_ITEM).is_dir())
    if not steps:
        damaged = p / DAMAGED_SUBDIR
        aside = sorted(c.name for c in damaged.iterdir()) if damaged.is_dir() else []
        note = f" ({len(aside)} damaged step(s) set aside in {damaged}: {', '.join(aside)})" if aside else ""
        raise CheckpointNotFoundError(f"no alert_jax checkpoint steps (folders <step>/{STATE_ITEM}) in {p}{note}")
    if select == "latest":
        return p, steps[-1]
    metric = saved_best_metric(p) if select == "best" else select.removeprefix("best_")
    stored, rank = stored_metrics(p), _metric_fn(metric)
    value, newest_first = min((rank(stored.get(s, {})), -s) for s in steps)  # ties: the latest, as retention keeps
    if math.isfinite(value):
        return p, -newest_first
    if select == "best":  # a run that never evaluated (or not by its best_metric): its latest step
        return p, steps[-1]
    raise CheckpointNotFoundError(f"checkpoint selection {select!r}: no kept step in {p} stored {metric!r} "
                                  f"(steps {', '.join(map(str, steps))}; dev_score needs train.dev_every > 0)")


def stored_metrics(root: str | os.PathLike) -> dict[int, dict[str, float]]:
    """Step -> the metrics saved with it (``{}`` when it was not evaluated) in the checkpoints folder ``root``."""
    mgr = ocp.CheckpointManager(epath.Path(root), options=ocp.CheckpointManagerOptions(read_only=True, create=False))
    try:
        return {int(s): dict(mgr.metrics(s) or {}) for s in mgr.all_steps()}
    finally:
        mgr.close()


def load_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config saved with the checkpoint at ``path`` (see :func:`locate`)."""
    root, step = locate(path)
    f = root / str(step) / CONFIG_ITEM / "metadata"
    if f.is_file():
        return config_from_dict(json.loads(f.read_text()))
    if (root / CONFIG_FILE).is_file():
        return config_from_dict(json.loads((root / CONFIG_FILE).read_text()))
    raise CheckpointNotFoundError(f"no config saved with checkpoint {root}/{step}")


def restore_params(root: str | os.PathLike, step: int, abstract_params: Any, *, verify: bool = True) -> Any:
    """The ``params`` of the TrainState saved as ``step`` in the checkpoints folder ``root`` (no optimizer state is
    read), placed with the shardings (and cast to the dtypes) of ``abstract_params``, a pure-dict tree of
    ``jax.ShapeDtypeStruct`` with ``sharding``.

    ``verify``: first check the step's files against its ``integrity.json`` (reads every file of the step once,
    optimizer moments included, shared over the processes): :class:`CheckpointDamagedError` (a ``CheckpointError``)
    when they differ, a one-line warning when the step has none. Nothing is moved aside here."""
    if verify:
        check_before_loading(absolute(root), int(step))
    mgr = ocp.CheckpointManager(epath.Path(root), options=ocp.CheckpointManagerOptions(read_only=True, create=False))
    try:
        params = _restore_params(mgr, step, abstract_params)
    finally:
        mgr.close()
    log.info("restored model parameters of step %d from %s", step, root)
    return params


def tokenizer_dir(path: str | os.PathLike) -> epath.Path:
    """The tokenizer folder stored beside the checkpoint at ``path``."""
    root, _ = locate(path)
    return root / TOKENIZER_DIR
