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

The run is set up in named steps (:func:`setup_run`: mesh and batch sizes, checkpointer and resume point, records,
tokenizer, parameters, optimizer and shardings, input pipelines, train state) and stepped by :class:`Trainer`, whose
cadence is a list of hooks called after every step (:class:`LogHook`, :class:`EvalCheckpointHook`,
:class:`StopHook`); a non-finite loss is checked one step late, while the next step runs, and before anything is
logged or saved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol

import jax
import ml_collections

from alert_jax.data import pipeline
from alert_jax.io import checkpoint as ckpt_lib
from alert_jax.io import loader, tokenizers
from alert_jax.models.opt import ModelParts, abstract_model, split_model
from alert_jax.models.sizes import ARCHITECTURE_FIELDS, OPTConfig, model_config_from
from alert_jax.parallel import distributed, param_sharding
from alert_jax.parallel.sharding import batch_shards, make_mesh
from alert_jax.train import flops
from alert_jax.train import optimizer as opt_lib
from alert_jax.train import state as state_lib
from alert_jax.train import step as step_lib
from alert_jax.train.metrics import MetricsWriter, progress_line, train_record
from alert_jax.train.records import Corpora, load_corpora, load_dev_sets

log = logging.getLogger(__name__)

BEST_METRICS = ("val_loss", "dev_loss")  # train.best_metric choices
TOKENIZER_WORKDIR = "tokenizer"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


def _print(msg: str) -> None:
    if distributed.is_primary():
        print(msg, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Setup, one named step per function
# ---------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Batching:
    """Rows per step: the global batch, this process's share, and the validation batch's share."""

    global_batch: int
    local_batch: int
    local_eval_batch: int


def batching(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Batching:
    """Batch sizes after the divisibility checks (microbatches over the mesh's batch shards, rows over the
    data-reading processes)."""
    t = cfg.train
    batch, k = int(t.batch_size), int(t.grad_accum_steps)
    shards = batch_shards(mesh)
    micro = batch // max(k, 1)
    if batch % k or micro % shards:
        raise ValueError(f"train.batch_size={batch} must split into train.grad_accum_steps={k} microbatches whose "
                         f"size ({batch}/{k}) is a multiple of the {shards} batch shards (mesh data x fsdp)")
    eval_batch = int(t.eval_batch_size) or micro
    if eval_batch % shards:
        raise ValueError(f"train.eval_batch_size={eval_batch} must be a multiple of the {shards} batch shards")
    _, shard_count = pipeline.process_shard(mesh)
    if batch % shard_count or eval_batch % shard_count:
        raise ValueError(f"batch sizes {batch}/{eval_batch} must divide over the {shard_count} data-reading processes")
    return Batching(batch, batch // shard_count, eval_batch // shard_count)


def _best_metric(cfg: ml_collections.ConfigDict) -> str:
    name = str(cfg.train.best_metric)
    if name not in BEST_METRICS:
        raise ValueError(f"train.best_metric={name!r} is not a metric the loop computes; choose one of "
                         f"{', '.join(BEST_METRICS)}")
    return name


def _check_best_metric(cfg: ml_collections.ConfigDict, best_metric: str, corpora: Corpora,
                       dev_records: Mapping[str, Any]) -> None:
    """``dev_loss`` selection needs dev sets (an error otherwise); ``val_loss`` without validation sets keeps no best
    checkpoint (a note)."""
    if not bool(cfg.train.keep_best):
        return
    if best_metric == "dev_loss" and not dev_records:
        raise ValueError("train.best_metric='dev_loss' but no dev set is evaluated (data.niv2_dir is empty, holds no "
                         "dev task file, or data.dev_eval_template=''); set data.niv2_dir or train.best_metric="
                         "'val_loss'")
    if best_metric == "val_loss" and not corpora.validation:
        _print("note: no validation sets, so train.keep_best keeps no best checkpoint (train.best_metric='val_loss')")


def _checkpointer(cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> ckpt_lib.Checkpointer:
    t = cfg.train
    return ckpt_lib.Checkpointer(workdir / ckpt_lib.CHECKPOINTS_SUBDIR, keep=int(t.keep_checkpoints),
                                 keep_best=bool(t.keep_best), async_save=bool(t.async_checkpointing),
                                 best_metric=_best_metric(cfg))


def _adopt_saved_architecture(cfg: ml_collections.ConfigDict, workdir: pathlib.Path, step: int) -> None:
    """On resume the saved run's architecture wins (it may have come from an HF checkpoint)."""
    saved = ckpt_lib.load_config(workdir / ckpt_lib.CHECKPOINTS_SUBDIR / str(step))
    for f in ARCHITECTURE_FIELDS:
        if f in saved.model:
            cfg.model[f] = saved.model[f]


def _record_architecture(cfg: ml_collections.ConfigDict, model_cfg: OPTConfig) -> None:
    """Writes the actual architecture into ``cfg.model`` so a checkpoint's config rebuilds the same model."""
    for f in ARCHITECTURE_FIELDS:
        cfg.model[f] = getattr(model_cfg.arch, f)


def resolve_tokenizer(cfg: ml_collections.ConfigDict, workdir: pathlib.Path, texts: list[str], vocab_size: int) -> Any:
    """The tokenizer of this run: the workdir's (resume), ``cfg.tokenizer``, the one beside ``init_from``, or (random
    init) a SentencePiece model of ``vocab_size`` pieces trained on ``texts`` (process 0 trains, all read)."""
    saved = workdir / ckpt_lib.CHECKPOINTS_SUBDIR / ckpt_lib.TOKENIZER_DIR
    if saved.is_dir():
        return tokenizers.load_tokenizer(str(saved))
    init = loader.InitFrom.parse(cfg.init_from)
    found = loader.find_tokenizer(init, str(cfg.tokenizer))
    if found is not None:
        return found
    if init.kind:
        raise ValueError(f"init_from={str(init)!r} carries no tokenizer: set --config.tokenizer")
    path = workdir / TOKENIZER_WORKDIR / "tokenizer.model"
    if distributed.is_primary() and not path.is_file():
        _print(f"training a SentencePiece tokenizer ({vocab_size} pieces) on {len(texts)} texts -> {path}")
        tokenizers.train_sentencepiece(texts, vocab_size, path)
    distributed.barrier("tokenizer")
    return tokenizers.load_tokenizer(f"sp:{path}")


def init_params(cfg: ml_collections.ConfigDict, model_cfg: OPTConfig, mesh: jax.sharding.Mesh) -> tuple[OPTConfig, Any]:
    """``(model config, params pure dict)`` of a fresh run: ``cfg.init_from`` through ``io.loader.load_model``."""
    loaded = loader.load_model(cfg.init_from, model_cfg, mesh, seed=int(cfg.seed))
    _, params = split_model(loaded.model)
    return loaded.model.config, params


@dataclasses.dataclass
class Optimization:
    """The optimizer, its weight-decay mask and the shardings of the whole train state."""

    tx: Any
    mask: Any
    shardings: state_lib.TrainState
    replicated_fraction: float


def _optimization(cfg: ml_collections.ConfigDict, parts: ModelParts, mesh: jax.sharding.Mesh) -> Optimization:
    mask = opt_lib.decay_mask(parts.abstract_params(), parts.names, str(cfg.optimizer.weight_decay_mask))
    tx = opt_lib.make_optimizer(cfg, mask=mask)
    shardings = state_lib.state_shardings(parts, tx, mesh)
    replicated = param_sharding.check_sufficiently_sharded(
        parts.abstract_params(), shardings.params, mesh, float(cfg.train.max_replicated_fraction)
    )
    return Optimization(tx, mask, shardings, replicated)


@dataclasses.dataclass
class Inputs:
    """The input pipelines: training batches and the validation (corpora) and dev-set batches."""

    train_iter: Any
    eval_sets: dict[str, Any]  # corpus name -> EvalBatches (val_loss)
    dev_sets: dict[str, Any]  # dev task name -> EvalBatches (dev_loss)


def _inputs(cfg: ml_collections.ConfigDict, corpora: Corpora, dev_records: Mapping[str, list[tuple[str, str]]],
            tokenizer: Any, sizes: Batching, mesh: jax.sharding.Mesh) -> Inputs:
    d = cfg.data
    seq_len = int(d.seq_len)
    shard_index, shard_count = pipeline.process_shard(mesh)
    train_iter = pipeline.make_train_iterator(
        corpora.train, tokenizer, seq_len=seq_len, batch_size=sizes.local_batch, seed=int(cfg.seed),
        loss_on_prompt=bool(d.loss_on_prompt), shard_index=shard_index, shard_count=shard_count,
        pack_chunk_examples=int(d.pack_chunk_examples), num_threads=int(d.num_threads),
    )

    def eval_batches(records: list[tuple[str, str]]) -> pipeline.EvalBatches:
        return pipeline.make_eval_iterator(records, tokenizer, seq_len=seq_len, batch_size=sizes.local_eval_batch,
                                           loss_on_prompt=bool(d.loss_on_prompt), shard_index=shard_index,
                                           shard_count=shard_count)

    return Inputs(train_iter, {n: eval_batches(r) for n, r in corpora.validation.items()},
                  {n: eval_batches(r) for n, r in dev_records.items()})


@dataclasses.dataclass
class TrainRun:
    """Everything a training run needs, built by :func:`setup_run` (state and iterators are live objects)."""

    cfg: ml_collections.ConfigDict
    workdir: pathlib.Path
    mesh: jax.sharding.Mesh
    model_cfg: OPTConfig
    parts: ModelParts
    state: state_lib.TrainState
    train_step: Any
    eval_step: Any
    inputs: Inputs
    ckpt: ckpt_lib.Checkpointer
    resume_step: int | None
    global_batch: int
    seq_len: int


def setup_run(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike, corpora: Corpora | None = None) -> TrainRun:
    """Mesh, data, tokenizer, model, optimizer, state (fresh or resumed), jitted steps and the checkpointer.

    ``corpora``: the ``(prompt, target)`` records to train / validate on; default :func:`load_corpora` of the config.
    """
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = ml_collections.ConfigDict(cfg.to_dict())  # private, unlocked copy
    mesh = make_mesh(tuple(cfg.mesh.shape))
    sizes = batching(cfg, mesh)
    seq_len = int(cfg.data.seq_len)
    ckpt = _checkpointer(cfg, workdir)
    resume_step = ckpt.latest_step()
    if resume_step is not None:
        _adopt_saved_architecture(cfg, workdir, resume_step)
    model_cfg = model_config_from(cfg)

    corpora = load_corpora(cfg) if corpora is None else corpora
    dev_records, dev_note = load_dev_sets(cfg)
    _print(dev_note)
    _check_best_metric(cfg, ckpt.best_metric, corpora, dev_records)
    texts = [p + t for p, t in corpora.train[: int(cfg.data.tokenizer_train_texts)]]
    tokenizer = resolve_tokenizer(cfg, workdir, texts, model_cfg.arch.vocab_size)

    params = None
    if resume_step is None:
        model_cfg, params = init_params(cfg, model_cfg, mesh)
    _record_architecture(cfg, model_cfg)
    if tokenizer.vocab_size > model_cfg.arch.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but the model's vocabulary is "
                         f"{model_cfg.arch.vocab_size} (model.size={cfg.model.size}); use a matching tokenizer")
    parts, _ = split_model(abstract_model(model_cfg))
    optim = _optimization(cfg, parts, mesh)
    inputs = _inputs(cfg, corpora, dev_records, tokenizer, sizes, mesh)
    if resume_step is not None:
        abstract = state_lib.abstract_state(parts, optim.tx, optim.shardings)
        state, _ = ckpt.restore(resume_step, abstract, inputs.train_iter)
        _print(f"resumed from {ckpt.directory}/{resume_step}")
    else:
        state = state_lib.create_train_state(params, optim.tx, optim.shardings, int(cfg.seed))
        del params
    ckpt.write_extras(cfg, tokenizer)
    if distributed.is_primary():
        (workdir / "config.json").write_text(json.dumps(ckpt_lib.config_to_dict(cfg), indent=2))

    t_cfg = cfg.train
    decayed, total = opt_lib.count_decayed(parts.abstract_params(), optim.mask)
    _print(f"model {cfg.model.size}: {total:,} params ({decayed:,} weight-decayed); mesh {dict(mesh.shape)} on "
           f"{jax.device_count()} devices / {jax.process_count()} processes; replicated params "
           f"{100 * optim.replicated_fraction:.2f}%; batch {sizes.global_batch} x {seq_len} tokens, "
           f"{t_cfg.grad_accum_steps} microbatches; {len(corpora.train)} training examples, validation: "
           f"{ {k: len(v) for k, v in corpora.validation.items()} }")
    return TrainRun(
        cfg=cfg, workdir=workdir, mesh=mesh, model_cfg=model_cfg, parts=parts, state=state,
        train_step=step_lib.make_train_step(parts, optim.tx, mesh, optim.shardings,
                                            grad_accum_steps=int(t_cfg.grad_accum_steps),
                                            schedule=opt_lib.make_schedule(cfg),
                                            dropout_rng_impl=str(t_cfg.dropout_rng_impl)),
        eval_step=step_lib.make_eval_step(parts, mesh, optim.shardings.params),
        inputs=inputs, ckpt=ckpt, resume_step=resume_step, global_batch=sizes.global_batch, seq_len=seq_len,
    )


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
    """The losses stored with a checkpoint (``val_loss``, ``dev_loss``); None when the selection metric is absent."""
    kept = {k: float(metrics[k]) for k in BEST_METRICS if k in metrics}
    return kept if best_metric in kept else None


# ---------------------------------------------------------------------------------------------------------------------
# The step loop and its cadence
# ---------------------------------------------------------------------------------------------------------------------


class _SigTerm:
    """Records SIGTERM (the loop checkpoints and returns at the next step boundary)."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


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
    """Validation every ``train.eval_every`` steps and checkpoints every ``train.checkpoint_every`` steps (both at
    the last step); a checkpoint of an evaluated step carries its selection losses. Their time is kept out of the
    throughput of the next log."""

    def __call__(self, trainer: Trainer, step: int, last: bool) -> None:
        t = trainer.t
        eval_now, ckpt_now = _due(step, int(t.eval_every), last), _due(step, int(t.checkpoint_every), last)
        if not (eval_now or ckpt_now):
            return
        trainer.check_pending()  # also waits for this step, whose time belongs to training
        paused = time.perf_counter()
        metrics = trainer.evaluate(step) if eval_now else {}
        if ckpt_now:
            trainer.save(step, _selection_metrics(metrics, trainer.run.ckpt.best_metric))
        trainer.interval_start += time.perf_counter() - paused


class StopHook:
    """Stops with a checkpoint of the current step at ``train.stop_at_step`` or when any process got SIGTERM."""

    def __init__(self, sigterm: _SigTerm):
        self.sigterm = sigterm

    def __call__(self, trainer: Trainer, step: int, last: bool) -> str | None:
        t = trainer.t
        stop = "stop_at_step" if step == int(t.stop_at_step) < int(t.num_steps) else None
        if stop is None and distributed.any_process(self.sigterm.received):
            stop = "sigterm"
        if stop is not None:
            trainer.check_pending()
            _print(f"{'SIGTERM' if stop == 'sigterm' else 'train.stop_at_step'}: saving a checkpoint of step {step} "
                   "and stopping")
            trainer.save(step)
        return stop


class Trainer:
    """The step loop over a :class:`TrainRun`; logging, validation, checkpoints and stopping are its hooks."""

    def __init__(self, run: TrainRun):
        self.run = run
        self.t = run.cfg.train
        self.writer = MetricsWriter(run.workdir, tensorboard=bool(self.t.tensorboard))
        device = jax.devices()[0]
        cpu_peak = None
        if device.platform == "cpu" and bool(self.t.measure_cpu_peak):
            cpu_peak = flops.measure_matmul_peak(512)
        self.peak = flops.peak_flops(device, cpu_peak=cpu_peak)
        self.step_flops = flops.train_step_flops(run.model_cfg, run.global_batch, run.seq_len)
        self.summary: dict[str, Any] = {"losses": {}, "last_eval": {}, "checkpoint_steps": []}
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
        _print(f"step {step}: {' | '.join(parts)}")
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
        _print(progress_line(step, int(self.t.num_steps), record, step == self.start_step + 1))
        self.interval, self.interval_start = [], time.perf_counter()

    def loop(self) -> str:
        """Trains to ``num_steps``; returns why it stopped ('done' | 'sigterm' | 'stop_at_step' | 'data')."""
        r, t = self.run, self.t
        num_steps = int(t.num_steps)
        step = self.start_step = int(jax.device_get(r.state.step))
        if bool(t.eval_at_start) and r.resume_step is None:
            self.evaluate(step)  # the starting point's validation loss (e.g. the pretrained model's)
        self.interval_start = time.perf_counter()
        with _SigTerm() as sigterm:
            hooks: list[Hook] = [LogHook(), EvalCheckpointHook(), StopHook(sigterm)]
            while step < num_steps:
                try:
                    local = next(r.inputs.train_iter)
                except StopIteration:
                    _print(f"training data exhausted at step {step}")
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

    ``corpora`` replaces the records named by ``cfg.data.corpus`` (e.g. generated pretraining text); resuming needs
    the same records in the same order.

    Summary keys: ``step`` (last step), ``stopped`` ('done' | 'sigterm' | 'stop_at_step' | 'data'), ``losses``
    ({step: loss} of the logged steps of this invocation), ``last_eval`` (latest validation metrics),
    ``checkpoint_steps``. Raises :class:`NonFiniteLossError` on a NaN/Inf loss (after pending saves complete).
    """
    run = setup_run(cfg, workdir, corpora)
    trainer = Trainer(run)
    try:
        stopped = trainer.loop()
    finally:
        trainer.close()
    return {**trainer.summary, "step": int(jax.device_get(run.state.step)), "stopped": stopped}


def main_exit_code(fn: Any) -> int:
    """Runs ``fn()``; a :class:`NonFiniteLossError` becomes exit code 1 with its message on stderr."""
    try:
        fn()
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0
