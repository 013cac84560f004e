"""The finetuning loop: data -> sharded train steps -> logs, validation, checkpoints; resumable and preemptible.

``train_and_evaluate(cfg, workdir)`` (``configs/finetune.py`` documents every setting):

* **Start**: resume from ``<workdir>/checkpoints`` when it holds a step (train state, data-iterator state); else
  initialise from ``cfg.init_from`` with ``io.loader.load_model``: '' (random), ``hf:PATH_OR_ID``,
  ``metaseq:FILE`` or ``ckpt:DIR`` (parameters only, a fresh optimizer).
* **Data**: ``cfg.data.corpus`` = 'synthetic' or corpus names read with ``data.finetune.read_corpora`` from
  ``cfg.data.finetune_dir``; formatted by ``format_example(ex, cfg.mode)``; packed into ``[batch, seq_len]`` rows by
  ``data.pipeline``; each process reads only its shard and the global batch is assembled with
  ``to_global_batch``. Validation: each corpus's validation split (first ``max_eval_examples``) and the dev set:
  the registry's dev tasks found in ``cfg.data.niv2_dir``, first ``data.dev_eval_instances`` instances rendered with
  ``data.dev_eval_template`` (T1 = the finetuning prompt; '' disables) with target " " + first reference
  (``train.records.load_dev_sets``); absent task files are skipped and named in the log.
* **Tokenizer**: the one saved in the workdir (resume), else ``cfg.tokenizer``, else the one beside ``init_from``,
  else (random init) a SentencePiece model of the model's vocabulary size trained on the training texts. It is saved
  in ``<workdir>/checkpoints/tokenizer`` with the config.
* **Logs** every ``log_every`` steps (stdout, ``<workdir>/metrics.jsonl``, TensorBoard under ``<workdir>/tb``):
  loss (token-weighted over the interval), learning_rate, grad_norm, target_tokens_per_s, padded_tokens_per_s,
  packing_efficiency (real / padded tokens), step_time_s, tflops_per_device, mfu (formula: ``alert_jax.train.flops``),
  truncated_examples. Validation records (every ``eval_every`` steps): val_loss, val_ppl (token-weighted over the
  corpora only), per-corpus ``val_loss/<name>``, ``val_ppl/<name>``; dev_loss, dev_ppl (token-weighted over the dev
  tasks), per-task ``dev_loss/<task>``, ``dev_ppl/<task>``.
* **Checkpoints** every ``checkpoint_every`` steps and at the end (async orbax; latest k + the best by
  ``train.best_metric``: 'val_loss' or 'dev_loss'; both losses are stored with each evaluated step).
  SIGTERM: the current step is checkpointed, then the loop returns. A non-finite loss raises
  :class:`NonFiniteLossError` naming the step; no checkpoint is written after it (the last good one stays).

The run is set up in named steps (``train.run.setup_run``: mesh and batch sizes, checkpointer and resume point,
records, tokenizer, parameters, optimizer and shardings, input pipelines, train state) and stepped by
:class:`Trainer`, whose cadence is a list of hooks called after every step (:class:`LogHook`,
:class:`EvalCheckpointHook`, :class:`StopHook`, :class:`ProfileHook`); a non-finite loss is checked one step late,
while the next step runs, and before anything is logged or saved.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Mapping
from typing import Any, Protocol

import jax
import ml_collections

from alert_jax.data import pipeline
from alert_jax.io.files import absolute
from alert_jax.io.profiler import ProfileTrace, trace_dir
from alert_jax.io.workdir import remove_if_empty, workdir_lock
from alert_jax.parallel import distributed
from alert_jax.parallel.distributed import print_primary
from alert_jax.train import dev_score, flops, settings
from alert_jax.train.metrics import MetricsWriter, progress_line, train_record
from alert_jax.train.records import Corpora
from alert_jax.train.run import NoGoodCheckpointError, TrainRun, setup_run

STOP_REASONS = {"sigterm": "SIGTERM", "sigint": "SIGINT", "stop_at_step": "train.stop_at_step"}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


class StoppedEarly(Exception):  # noqa: N818 - a stop with a checkpoint saved, not an error
    """The run stopped before ``train.num_steps`` with a checkpoint saved (or none left to resume from): rerun."""


# ---------------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------------


def evaluate(eval_step: Any, params: Any, eval_sets: Mapping[str, Any], mesh: jax.sharding.Mesh,
             prefix: str = "val") -> dict[str, float]:
    """``<prefix>_loss`` (token-weighted over all sets), ``<prefix>_ppl``, ``<prefix>_loss/<name>`` and
    ``<prefix>_ppl/<name>`` per set. ``eval_sets``: name -> iterable of process-local ``[batch, seq_len]`` batches;
    prefix 'val' = the corpora's validation splits, 'dev' = the dev tasks."""
    out: dict[str, float] = {}
    total_loss, total_tokens = 0.0, 0.0
    for name, batches in eval_sets.items():
        sums = []
        for batch in batches:
            sums.append(eval_step(params, pipeline.to_global_batch(batch, mesh)))
        loss = sum(float(s) for s, _ in sums)
        tokens = sum(float(n) for _, n in sums)
        if tokens:
            out[f"{prefix}_loss/{name}"] = loss / tokens
            out[f"{prefix}_ppl/{name}"] = math.exp(min(loss / tokens, 50.0))
        total_loss += loss
        total_tokens += tokens
    if total_tokens:
        out[f"{prefix}_loss"] = total_loss / total_tokens
        out[f"{prefix}_ppl"] = math.exp(min(out[f"{prefix}_loss"], 50.0))
    return out


def _selection_metrics(metrics: Mapping[str, float], best_metric: str) -> dict[str, float] | None:
    """The metrics stored with a checkpoint (``val_loss``, ``dev_loss``, ``dev_score``); None when the selection
    metric is absent."""
    kept = {k: float(metrics[k]) for k in settings.BEST_METRICS if k in metrics}
    return kept if best_metric in kept else None


# ---------------------------------------------------------------------------------------------------------------------
# The step loop and its cadence
# ---------------------------------------------------------------------------------------------------------------------


class _StopSignals:
    """Records SIGTERM and SIGINT (the loop checkpoints and stops at the next step boundary; a second SIGINT
    interrupts at once). Single-process runs only: in a multi-process job JAX's preemption service owns SIGTERM
    (``StopHook``)."""

    SIGNALS = {signal.SIGTERM: "sigterm", signal.SIGINT: "sigint"}

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        if signum == signal.SIGINT and self.received == "sigint":
            raise KeyboardInterrupt
        self.received = self.SIGNALS[signum]
        if signum == signal.SIGINT:
            print_primary("SIGINT: saving a checkpoint at the end of this step (press Ctrl-C again to quit at once)")

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _due(step: int, every: int, last: bool) -> bool:
    """A cadence ``every`` steps (0 = never) that also fires at the last step."""
    return last or (every > 0 and step % every == 0)


class Hook(Protocol):
    """Called after every step; returns a reason to stop ('sigterm', 'stop_at_step') or None."""

    def __call__(self, trainer: Trainer, step: int, last: bool) -> str | None: ...


class LogHook:
    """Logs the training record of the steps since the last log: at the first step of this invocation, every
    ``train.log_every`` steps and at the last step."""

    def __call__(self, trainer: Trainer, step: int, last: bool) -> None:
        if step == trainer.start_step + 1 or _due(step, int(trainer.t.log_every), last):
            trainer.log(step)


class EvalCheckpointHook:
    """Validation every ``train.eval_every`` steps, the dev-set score every ``train.dev_every`` steps (when dev
    tasks are scored) and checkpoints every ``train.checkpoint_every`` steps and at every dev-scored step (a
    selection candidate); all at the last step. A checkpoint of an evaluated step carries its selection metrics.
    Their time is kept out of the throughput of the next log."""

    def __call__(self, trainer: Trainer, step: int, last: bool) -> None:
        t = trainer.t
        eval_now = _due(step, int(t.eval_every), last)
        dev_now = trainer.run.dev_generation is not None and _due(step, int(t.dev_every), last)
        ckpt_now = dev_now or _due(step, int(t.checkpoint_every), last)
        if not (eval_now or ckpt_now):
            return
        trainer.check_pending()  # also waits for this step, whose time belongs to training
        paused = time.perf_counter()
        metrics = trainer.evaluate(step) if eval_now else {}
        if dev_now:
            metrics = {**metrics, **trainer.score_dev(step)}
        if ckpt_now:
            trainer.save(step, _selection_metrics(metrics, trainer.run.ckpt.best_metric))
        trainer.interval_start += time.perf_counter() - paused


class StopHook:
    """Stops with a checkpoint of the current step at ``train.stop_at_step``, on SIGTERM / SIGINT (one process), or
    at the step JAX's preemption service agrees on after any process of a multi-process job got SIGTERM (the
    processes exchange nothing in the steps before a notice)."""

    def __init__(self, signals: _StopSignals | None):
        self.signals = signals

    def __call__(self, trainer: Trainer, step: int, last: bool) -> str | None:
        t = trainer.t
        stop = "stop_at_step" if step == int(t.stop_at_step) < int(t.num_steps) else None
        if stop is None:
            if self.signals is not None:
                stop = self.signals.received
            elif distributed.reached_preemption_point(step):
                stop = "sigterm"
        if stop is not None:
            trainer.check_pending()
            print_primary(f"{STOP_REASONS[stop]}: saving a checkpoint of step {step} and stopping")
            trainer.save(step)
        return stop


class ProfileHook:
    """A ``jax.profiler`` trace of the ``train.profile_steps`` steps (0 = none) after the first step of this
    invocation (which compiles), in ``<workdir>/profile/train`` (``io.profiler``). Runs after the other hooks, so a
    traced step's logging, validation or checkpoint is in the trace too; :meth:`close` ends a trace the loop left
    early."""

    def __init__(self, steps: int, directory: str | os.PathLike):
        self.steps = int(steps)
        self.trace = ProfileTrace(directory)

    def __call__(self, trainer: Trainer, step: int, last: bool) -> None:
        if self.steps <= 0:
            return
        first = trainer.start_step + 1
        if step == first and not last:
            self.trace.start(trainer.run.state)
        elif step >= first + self.steps or last:
            self.trace.stop(trainer.run.state)

    def close(self) -> None:
        self.trace.stop()


class Trainer:
    """The step loop over a :class:`TrainRun`; logging, validation, checkpoints and stopping are its hooks."""

    def __init__(self, run: TrainRun):
        self.run = run
        self.t = run.cfg.train
        self.writer = MetricsWriter(run.workdir, tensorboard=bool(self.t.tensorboard), resumed_from=run.resume_step)
        device = jax.devices()[0]
        cpu_peak = None
        if device.platform == "cpu" and bool(self.t.measure_cpu_peak):
            cpu_peak = flops.measure_matmul_peak(512)
        self.peak = flops.peak_flops(device, cpu_peak=cpu_peak)
        self.step_flops = flops.train_step_flops(run.model_cfg, run.global_batch, run.seq_len)
        self.summary: dict[str, Any] = {"losses": {}, "last_eval": {}, "last_dev_score": {}, "checkpoint_steps": []}
        self.last_saved = run.resume_step
        self.start_step = 0
        self.interval: list[dict[str, jax.Array]] = []
        self.interval_start = time.perf_counter()
        self.pending: tuple[int, dict[str, jax.Array]] | None = None

    def save(self, step: int, metrics: dict[str, float] | None = None) -> None:
        if self.last_saved == step:
            return
        r = self.run
        r.ckpt.save(step, r.state, r.cfg, r.inputs.train_iter, metrics=metrics)
        self.last_saved = step
        self.summary["checkpoint_steps"].append(step)

    def evaluate(self, step: int) -> dict[str, float]:
        """Validation (``val_*``, the corpora) and dev-set (``dev_*``) losses of the current params, logged."""
        r = self.run
        if not r.inputs.eval_sets and not r.inputs.dev_sets:
            return {}
        t0 = time.perf_counter()
        metrics = evaluate(r.eval_step, r.state.params, r.inputs.eval_sets, r.mesh, prefix="val")
        metrics.update(evaluate(r.eval_step, r.state.params, r.inputs.dev_sets, r.mesh, prefix="dev"))
        metrics["eval_time_s"] = time.perf_counter() - t0
        self.writer.write(step, "eval", metrics)
        self.summary["last_eval"] = metrics
        parts = []
        for prefix in ("val", "dev"):
            if f"{prefix}_loss" in metrics:
                per = ", ".join(f"{k.split('/', 1)[1]} {v:.3f}" for k, v in metrics.items()
                                if k.startswith(f"{prefix}_loss/"))
                parts.append(f"{prefix}_loss {metrics[f'{prefix}_loss']:.4f} ppl {metrics[f'{prefix}_ppl']:.2f} "
                             f"({per})")
        print_primary(f"step {step}: {' | '.join(parts)}")
        return metrics

    def score_dev(self, step: int) -> dict[str, float]:
        """The dev-set score by generation (``train.dev_score``) of the current params, logged."""
        r = self.run
        t0 = time.perf_counter()
        metrics = dev_score.dev_scores(r.dev_generation, r.parts, r.state.params, r.tokenizer, r.mesh,
                                       seed=int(r.cfg.seed))
        metrics["dev_score_time_s"] = time.perf_counter() - t0
        self.writer.write(step, "dev_score", metrics)
        self.summary["last_dev_score"] = metrics
        per = ", ".join(f"{k.split('/', 1)[1]} {v:.1f}" for k, v in metrics.items() if k.startswith("dev_score/"))
        print_primary(f"step {step}: dev_score {metrics['dev_score']:.1f} ({per})")
        return metrics

    def check_pending(self) -> None:
        """Raises :class:`NonFiniteLossError` when the newest step's loss is not finite (waits for it)."""
        if self.pending is None:
            return
        step, metrics = self.pending
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            where = (f"the last good checkpoint is step {self.last_saved} in {self.run.ckpt.directory}"
                     if self.last_saved is not None else "no checkpoint was saved")
            raise NonFiniteLossError(f"non-finite training loss ({loss}) at step {step}; stopping without saving "
                                     f"({where})")

    def log(self, step: int) -> None:
        """Logs the steps since the last log and starts a new interval."""
        self.check_pending()
        r = self.run
        elapsed = time.perf_counter() - self.interval_start
        record = train_record(jax.device_get(self.interval), elapsed, len(self.interval), r.global_batch,
                              r.seq_len, self.step_flops, jax.device_count(), self.peak)
        record["truncated_examples"] = int(getattr(r.inputs.train_iter.stats, "truncated", 0))
        self.writer.write(step, "train", record)
        self.summary["losses"][step] = record["loss"]
        print_primary(progress_line(step, int(self.t.num_steps), record, step == self.start_step + 1))
        self.interval, self.interval_start = [], time.perf_counter()

    def loop(self) -> str:
        """Trains to ``num_steps``; returns why it stopped: 'done', 'data' (the iterator ended) or one of
        :data:`STOP_REASONS` (a checkpoint of the stopping step is saved)."""
        r, t = self.run, self.t
        num_steps = int(t.num_steps)
        step = self.start_step = int(jax.device_get(r.state.step))
        if bool(t.eval_at_start) and r.resume_step is None:
            self.evaluate(step)  # the starting point's validation loss (e.g. the pretrained model's)
        self.interval_start = time.perf_counter()
        signals = _StopSignals() if jax.process_count() == 1 else None
        profile = ProfileHook(int(t.profile_steps), trace_dir(r.workdir, "train"))
        with signals or contextlib.nullcontext(), contextlib.closing(profile):
            hooks: list[Hook] = [LogHook(), EvalCheckpointHook(), StopHook(signals), profile]
            while step < num_steps:
                try:
                    local = next(r.inputs.train_iter)
                except StopIteration:
                    print_primary(f"training data exhausted at step {step}")
                    return "data"
                r.state, metrics = r.train_step(r.state, pipeline.to_global_batch(local, r.mesh))
                step += 1
                self.check_pending()  # the previous step's loss, checked while this step runs
                self.pending = (step, metrics)
                self.interval.append(metrics)
                for hook in hooks:
                    stop = hook(self, step, step == num_steps)
                    if stop is not None:
                        return stop
            self.check_pending()
        return "done"

    def close(self) -> None:
        self.run.ckpt.close()  # waits for pending asynchronous saves
        self.writer.close()


def train_and_evaluate(
    cfg: ml_collections.ConfigDict, workdir: str | os.PathLike, corpora: Corpora | None = None
) -> dict[str, Any]:
    """Runs (or resumes) training as configured; returns a summary dict.

    ``cfg`` is validated first (``train.settings.validate``: a bad setting raises ``TrainConfigError`` before
    anything is written); the run then holds the workdir's lock (``io.workdir``: a second run on it refuses). A run
    that fails on its inputs before writing anything leaves no workdir behind.

    ``corpora`` replaces the records named by ``cfg.data.corpus`` (e.g. generated pretraining text); resuming needs
    the same records in the same order.

    Summary keys: ``step`` (last step), ``stopped`` ('done' | 'data' | a key of :data:`STOP_REASONS`), ``losses``
    ({step: loss} of the logged steps of this invocation), ``last_eval`` (latest validation metrics),
    ``checkpoint_steps``. Raises :class:`NonFiniteLossError` on a NaN/Inf loss (after pending saves complete).
    """
    settings.validate(cfg, jax.device_count())
    workdir = absolute(workdir)
    try:
        with workdir_lock(workdir):
            try:
                run = setup_run(cfg, workdir, corpora)
            except NoGoodCheckpointError as e:
                raise StoppedEarly(str(e)) from None
            trainer = Trainer(run)
            try:
                stopped = trainer.loop()
            finally:
                trainer.close()
    except BaseException:
        remove_if_empty(workdir)
        raise
    return {**trainer.summary, "step": int(jax.device_get(run.state.step)), "stopped": stopped}
