"""The finetuning loop: data -> sharded train steps -> logs, validation, checkpoints; resumable and preemptible.

``train_and_evaluate(cfg, workdir)`` (``configs/finetune.py`` documents every setting):

* **Start**: resume from ``<workdir>/checkpoints`` when it holds a step (train state, data-iterator state); else
  initialise from ``cfg.init_from``: '' (random), ``hf:PATH_OR_ID`` / ``metaseq:FILE`` (``convert.resolve_init``) or
  ``ckpt:DIR`` (``checkpoint.restore_model``; parameters only, a fresh optimizer).
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
from typing import Any

import jax
import ml_collections
import numpy as np

from alert_jax.data import pipeline
from alert_jax.io import checkpoint as ckpt_lib
from alert_jax.models.opt import abstract_model, create_model
from alert_jax.models.sizes import ARCHITECTURE_FIELDS, OPTConfig, model_config_from
from alert_jax.parallel import param_sharding
from alert_jax.parallel.sharding import make_mesh
from alert_jax.train import flops
from alert_jax.train import optimizer as opt_lib
from alert_jax.train import state as state_lib
from alert_jax.train import step as step_lib
from alert_jax.train.records import Corpora, load_corpora, load_dev_sets

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
BEST_METRICS = ("val_loss", "dev_loss")  # train.best_metric choices
TOKENIZER_WORKDIR = "tokenizer"


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


# ---------------------------------------------------------------------------------------------------------------------
# Metric writers
# ---------------------------------------------------------------------------------------------------------------------


class MetricsWriter:
    """Writes scalars to stdout, ``<workdir>/metrics.jsonl`` and TensorBoard (tensorboardX, when installed).

    Only process 0 writes. Every JSONL record has ``step``, ``kind`` ('train' | 'eval') and ``time``.
    """

    def __init__(self, workdir: pathlib.Path, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if not self.enabled:
            return
        workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(workdir / METRICS_FILE, "a", encoding="utf-8")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                log.warning("tensorboardX is not installed: TensorBoard events are not written (JSONL still is)")
            else:
                self._tb = SummaryWriter(str(workdir / "tb"))

    def write(self, step: int, kind: str, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind, "time": time.time(), **{k: _jsonable(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, int(step))
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.generic, jax.Array)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _print(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Data and tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def resolve_tokenizer(cfg: ml_collections.ConfigDict, workdir: pathlib.Path, texts: list[str], vocab_size: int) -> Any:
    """The tokenizer of this run (order: the workdir's, ``cfg.tokenizer``, beside ``init_from``, trained SP)."""
    from alert_jax.io import tokenizers

    saved = workdir / ckpt_lib.CHECKPOINTS_SUBDIR / ckpt_lib.TOKENIZER_DIR
    if saved.is_dir():
        return tokenizers.load_tokenizer(str(saved))
    if cfg.tokenizer:
        return tokenizers.load_tokenizer(str(cfg.tokenizer))
    init = str(cfg.init_from)
    if init.startswith("ckpt:"):
        return tokenizers.load_tokenizer(str(ckpt_lib.tokenizer_dir(init[5:])))
    if init.startswith("hf:"):
        from alert_jax.io.convert import resolve_hf_path

        return tokenizers.load_tokenizer(str(resolve_hf_path(init[3:])))
    if init:
        raise ValueError(f"init_from={init!r} carries no tokenizer: set --config.tokenizer")
    # Random init: train a SentencePiece model with the model's vocabulary size (process 0 writes, all read).
    path = workdir / TOKENIZER_WORKDIR / "tokenizer.model"
    if jax.process_index() == 0 and not path.is_file():
        _print(f"training a SentencePiece tokenizer ({vocab_size} pieces) on {len(texts)} texts -> {path}")
        tokenizers.train_sentencepiece(texts, vocab_size, path)
    _barrier("tokenizer")
    return tokenizers.load_tokenizer(f"sp:{path}")


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _any_process(flag: bool) -> bool:
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


# ---------------------------------------------------------------------------------------------------------------------
# Model initialisation
# ---------------------------------------------------------------------------------------------------------------------


def _record_architecture(cfg: ml_collections.ConfigDict, model_cfg: OPTConfig) -> None:
    """Writes the actual architecture into ``cfg.model`` so a checkpoint's config rebuilds the same model."""
    with cfg.unlocked():
        for f in ARCHITECTURE_FIELDS:
            cfg.model[f] = getattr(model_cfg, f)


def init_params(cfg: ml_collections.ConfigDict, model_cfg: OPTConfig, mesh: jax.sharding.Mesh) -> tuple[OPTConfig, Any]:
    """``(model config, params pure dict)`` of a fresh run according to ``cfg.init_from``."""
    init = str(cfg.init_from)
    if not init:
        model = create_model(model_cfg, mesh, rngs_seed=int(cfg.seed))
    elif init.startswith("ckpt:"):
        model, _ = ckpt_lib.restore_model(init[5:], mesh=mesh)
    else:
        from alert_jax.io.convert import resolve_init

        model = resolve_init(init, config=model_cfg, mesh=mesh)
    loaded_cfg = model.config
    runtime = {f.name: getattr(model_cfg, f.name) for f in dataclasses.fields(OPTConfig) if f.name not in
               ARCHITECTURE_FIELDS}
    _, params = state_lib.split_model(model)
    return loaded_cfg.replace(**runtime), params


# ---------------------------------------------------------------------------------------------------------------------
# The loop
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


def _validate_batching(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> tuple[int, int, int, int]:
    """(global batch, local batch, eval batch (global), eval local batch) after divisibility checks."""
    t = cfg.train
    batch, k = int(t.batch_size), int(t.grad_accum_steps)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
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
    return batch, batch // shard_count, eval_batch, eval_batch // shard_count


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


@dataclasses.dataclass
class Run:
    """Everything a training run needs, built by :func:`setup_run` (state and iterators are live objects)."""

    cfg: ml_collections.ConfigDict
    workdir: pathlib.Path
    mesh: jax.sharding.Mesh
    model_cfg: OPTConfig
    parts: state_lib.ModelParts
    state: state_lib.TrainState
    train_step: Any
    eval_step: Any
    train_iter: Any
    eval_sets: dict[str, Any]  # corpus name -> EvalBatches (val_loss)
    dev_sets: dict[str, Any]  # dev task name -> EvalBatches (dev_loss)
    ckpt: ckpt_lib.Checkpointer
    resume_step: int | None
    global_batch: int
    seq_len: int


def setup_run(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike, corpora: Corpora | None = None) -> Run:
    """Mesh, data, tokenizer, model, optimizer, state (fresh or resumed), jitted steps and the checkpointer.

    ``corpora``: the ``(prompt, target)`` records to train / validate on; default :func:`load_corpora` of the config.
    """
    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = ml_collections.ConfigDict(cfg.to_dict())  # private, unlocked copy
    t_cfg = cfg.train
    mesh = make_mesh(tuple(cfg.mesh.shape))
    global_batch, local_batch, _, local_eval_batch = _validate_batching(cfg, mesh)
    seq_len = int(cfg.data.seq_len)
    best_metric = _best_metric(cfg)

    ckpt = ckpt_lib.Checkpointer(workdir / ckpt_lib.CHECKPOINTS_SUBDIR, keep=int(t_cfg.keep_checkpoints),
                                 keep_best=bool(t_cfg.keep_best), async_save=bool(t_cfg.async_checkpointing),
                                 best_metric=best_metric)
    resume_step = ckpt.latest_step()
    if resume_step is not None:  # the architecture of the saved run wins (it may come from an HF checkpoint)
        saved_cfg = ckpt_lib.load_config(workdir / ckpt_lib.CHECKPOINTS_SUBDIR / str(resume_step))
        for f in ARCHITECTURE_FIELDS:
            if f in saved_cfg.model:
                cfg.model[f] = saved_cfg.model[f]
    model_cfg = model_config_from(cfg)

    corpora = load_corpora(cfg) if corpora is None else corpora
    dev_records, dev_note = load_dev_sets(cfg)
    _print(dev_note)
    _check_best_metric(cfg, best_metric, corpora, dev_records)
    texts = [p + t for p, t in corpora.train[: int(cfg.data.tokenizer_train_texts)]]
    tokenizer = resolve_tokenizer(cfg, workdir, texts, model_cfg.vocab_size)

    params = None
    if resume_step is None:
        model_cfg, params = init_params(cfg, model_cfg, mesh)
    _record_architecture(cfg, model_cfg)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but the model's vocabulary is "
                         f"{model_cfg.vocab_size} (model.size={cfg.model.size}); use a matching tokenizer")
    parts, _ = state_lib.split_model(abstract_model(model_cfg))
    mask = opt_lib.decay_mask(parts.abstract_params(), parts.names, str(cfg.optimizer.weight_decay_mask))
    tx = opt_lib.make_optimizer(cfg, mask=mask)
    shardings = state_lib.state_shardings(parts, tx, mesh)
    replicated = param_sharding.check_sufficiently_sharded(
        parts.abstract_params(), shardings.params, mesh, float(t_cfg.max_replicated_fraction)
    )

    shard_index, shard_count = pipeline.process_shard(mesh)
    train_iter = pipeline.make_train_iterator(
        corpora.train, tokenizer, seq_len=seq_len, batch_size=local_batch, seed=int(cfg.seed),
        loss_on_prompt=bool(cfg.data.loss_on_prompt), shard_index=shard_index, shard_count=shard_count,
        pack_chunk_examples=int(cfg.data.pack_chunk_examples), num_threads=int(cfg.data.num_threads),
    )
    def eval_batches(records: list[tuple[str, str]]) -> pipeline.EvalBatches:
        return pipeline.make_eval_iterator(records, tokenizer, seq_len=seq_len, batch_size=local_eval_batch,
                                           loss_on_prompt=bool(cfg.data.loss_on_prompt), shard_index=shard_index,
                                           shard_count=shard_count)

    eval_sets = {name: eval_batches(records) for name, records in corpora.validation.items()}
    dev_sets = {name: eval_batches(records) for name, records in dev_records.items()}
    if resume_step is not None:
        state, _ = ckpt.restore(resume_step, state_lib.abstract_state(parts, tx, shardings), train_iter)
        _print(f"resumed from {ckpt.directory}/{resume_step}")
    else:
        state = state_lib.create_train_state(params, tx, shardings, int(cfg.seed))
        del params
    ckpt.write_extras(cfg, tokenizer)
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(json.dumps(ckpt_lib.config_to_dict(cfg), indent=2))

    decayed, total = opt_lib.count_decayed(parts.abstract_params(), mask)
    _print(f"model {cfg.model.size}: {total:,} params ({decayed:,} weight-decayed); mesh {dict(mesh.shape)} on "
           f"{jax.device_count()} devices / {jax.process_count()} processes; replicated params "
           f"{100 * replicated:.2f}%; batch {global_batch} x {seq_len} tokens, {t_cfg.grad_accum_steps} microbatches; "
           f"{len(corpora.train)} training examples, validation: "
           f"{ {k: len(v) for k, v in corpora.validation.items()} }")
    return Run(
        cfg=cfg, workdir=workdir, mesh=mesh, model_cfg=model_cfg, parts=parts, state=state,
        train_step=step_lib.make_train_step(parts, tx, mesh, shardings,
                                            grad_accum_steps=int(t_cfg.grad_accum_steps),
                                            schedule=opt_lib.make_schedule(cfg),
                                            dropout_rng_impl=str(t_cfg.get("dropout_rng_impl", "threefry2x32"))),
        eval_step=step_lib.make_eval_step(parts, mesh, shardings.params),
        train_iter=train_iter, eval_sets=eval_sets, dev_sets=dev_sets, ckpt=ckpt, resume_step=resume_step,
        global_batch=global_batch, seq_len=seq_len,
    )


def _best_metric(cfg: ml_collections.ConfigDict) -> str:
    name = str(cfg.train.get("best_metric", "val_loss"))
    if name not in BEST_METRICS:
        raise ValueError(f"train.best_metric={name!r} is not a metric the loop computes; choose one of "
                         f"{', '.join(BEST_METRICS)}")
    return name


def _check_best_metric(cfg: ml_collections.ConfigDict, best_metric: str, corpora: Corpora,
                       dev_records: Mapping[str, Any]) -> None:
    """``dev_loss`` selection needs dev sets (an error otherwise); ``val_loss`` without validation sets keeps no best
    checkpoint (a note, as before dev sets existed)."""
    if not bool(cfg.train.keep_best):
        return
    if best_metric == "dev_loss" and not dev_records:
        raise ValueError("train.best_metric='dev_loss' but no dev set is evaluated (data.niv2_dir is empty, holds no "
                         "dev task file, or data.dev_eval_template=''); set data.niv2_dir or train.best_metric="
                         "'val_loss'")
    if best_metric == "val_loss" and not corpora.validation:
        _print("note: no validation sets, so train.keep_best keeps no best checkpoint (train.best_metric='val_loss')")


def _selection_metrics(metrics: Mapping[str, float], best_metric: str) -> dict[str, float] | None:
    """The losses stored with a checkpoint (``val_loss``, ``dev_loss``); None when the selection metric is absent."""
    kept = {k: float(metrics[k]) for k in BEST_METRICS if k in metrics}
    return kept if best_metric in kept else None


class _Trainer:
    """The step loop over a :class:`Run`: logging, evaluation, checkpoints, SIGTERM and NaN handling."""

    def __init__(self, run: Run):
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

    def save(self, step: int, metrics: dict[str, float] | None = None) -> None:
        if self.last_saved == step:
            return
        r = self.run
        r.ckpt.save(step, r.state, r.cfg, r.train_iter, metrics=metrics)
        self.last_saved = step
        self.summary["checkpoint_steps"].append(step)

    def evaluate(self, step: int) -> dict[str, float]:
        """Validation (``val_*``, the corpora) and dev-set (``dev_*``) losses of the current params, logged."""
        r = self.run
        if not r.eval_sets and not r.dev_sets:
            return {}
        t0 = time.perf_counter()
        metrics = evaluate(r.eval_step, r.state.params, r.eval_sets, r.mesh, prefix="val")
        metrics.update(evaluate(r.eval_step, r.state.params, r.dev_sets, r.mesh, prefix="dev"))
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

    def check_finite(self, step: int, metrics: Mapping[str, jax.Array]) -> None:
        loss = float(metrics["loss"])
        if not math.isfinite(loss):
            where = (f"the last good checkpoint is step {self.last_saved} in {self.run.ckpt.directory}"
                     if self.last_saved is not None else "no checkpoint was saved")
            raise NonFiniteLossError(f"non-finite training loss ({loss}) at step {step}; stopping without saving "
                                     f"({where})")

    def log(self, step: int, interval: list[dict[str, jax.Array]], elapsed: float, first: bool) -> None:
        r = self.run
        record = _train_record(jax.device_get(interval), elapsed, len(interval), r.global_batch, r.seq_len,
                               self.step_flops, jax.device_count(), self.peak)
        record["truncated_examples"] = int(getattr(r.train_iter.stats, "truncated", 0))
        self.writer.write(step, "train", record)
        self.summary["losses"][step] = record["loss"]
        _print(_progress(step, int(self.t.num_steps), record, first))

    def loop(self) -> str:
        """Trains to ``num_steps``; returns why it stopped ('done' | 'sigterm' | 'stop_at_step' | 'data')."""
        r, t = self.run, self.t
        num_steps = int(t.num_steps)
        step = start_step = int(jax.device_get(r.state.step))
        if bool(t.eval_at_start) and r.resume_step is None:
            self.evaluate(step)  # the starting point's validation loss (e.g. the pretrained model's)
        interval: list[dict[str, jax.Array]] = []
        interval_start = time.perf_counter()
        pending: tuple[int, dict[str, jax.Array]] | None = None
        with _SigTerm() as sigterm:
            while step < num_steps:
                try:
                    local = next(r.train_iter)
                except StopIteration:
                    _print(f"training data exhausted at step {step}")
                    return "data"
                r.state, metrics = r.train_step(r.state, pipeline.to_global_batch(local, r.mesh))
                step += 1
                if pending is not None:  # the previous step's loss, checked while this step runs
                    self.check_finite(*pending)
                pending = (step, metrics)
                interval.append(metrics)
                first = step == start_step + 1
                if first or step % int(t.log_every) == 0 or step == num_steps:
                    self.check_finite(*pending)
                    self.log(step, interval, time.perf_counter() - interval_start, first)
                    interval, interval_start = [], time.perf_counter()
                last = step == num_steps
                eval_now = last or (int(t.eval_every) > 0 and step % int(t.eval_every) == 0)
                ckpt_now = last or (int(t.checkpoint_every) > 0 and step % int(t.checkpoint_every) == 0)
                if eval_now or ckpt_now:
                    self.check_finite(*pending)  # also waits for this step, whose time belongs to training
                    paused = time.perf_counter()
                    metrics = self.evaluate(step) if eval_now else {}
                    if ckpt_now:
                        self.save(step, _selection_metrics(metrics, r.ckpt.best_metric))
                    interval_start += time.perf_counter() - paused  # keep eval/checkpoint time out of throughput
                stop = "stop_at_step" if step == int(t.stop_at_step) < num_steps else None
                if stop is None and _any_process(sigterm.received):
                    stop = "sigterm"
                if stop is not None:
                    self.check_finite(*pending)
                    _print(f"{'SIGTERM' if stop == 'sigterm' else 'train.stop_at_step'}: saving a checkpoint of "
                           f"step {step} and stopping")
                    self.save(step)
                    return stop
            if pending is not None:
                self.check_finite(*pending)
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
    trainer = _Trainer(run)
    try:
        stopped = trainer.loop()
    finally:
        trainer.close()
    return {**trainer.summary, "step": int(jax.device_get(run.state.step)), "stopped": stopped}


def _train_record(fetched: list[dict[str, Any]], elapsed: float, steps: int, global_batch: int, seq_len: int,
                  step_flops: float, num_devices: int, peak: float | None) -> dict[str, float]:
    loss_sum = sum(float(m["loss_sum"]) for m in fetched)
    target = sum(float(m["target_tokens"]) for m in fetched)
    real = sum(float(m["real_tokens"]) for m in fetched)
    padded = float(global_batch * seq_len * steps)
    step_time = elapsed / max(steps, 1)
    last = fetched[-1]
    tflops = step_flops / max(step_time, 1e-12) / num_devices
    return {
        "loss": loss_sum / max(target, 1.0),
        "learning_rate": float(last.get("learning_rate", float("nan"))),
        "grad_norm": float(last["grad_norm"]),
        "target_tokens_per_s": target / max(elapsed, 1e-12),
        "padded_tokens_per_s": padded / max(elapsed, 1e-12),
        "packing_efficiency": real / padded,
        "target_fraction": target / padded,
        "step_time_s": step_time,
        "tflops_per_device": tflops / 1e12,
        "mfu": tflops / peak if peak else float("nan"),
    }


def _progress(step: int, num_steps: int, r: Mapping[str, float], first: bool) -> str:
    eta = (num_steps - step) * r["step_time_s"]
    note = " (includes compilation)" if first else ""
    mfu = f"{100 * r['mfu']:.1f}%" if math.isfinite(r["mfu"]) else "n/a"
    return (f"step {step}/{num_steps} | loss {r['loss']:.4f} | lr {r['learning_rate']:.2e} | gnorm "
            f"{r['grad_norm']:.3f} | {r['target_tokens_per_s']:.0f} target tok/s | {r['padded_tokens_per_s']:.0f} "
            f"tok/s | pack {100 * r['packing_efficiency']:.1f}% | {r['step_time_s'] * 1e3:.0f} ms/step{note} | "
            f"{r['tflops_per_device']:.3f} TFLOP/s/dev | MFU {mfu} | eta {eta:.0f}s")


def main_exit_code(fn: Any) -> int:
    """Runs ``fn()``; a :class:`NonFiniteLossError` becomes exit code 1 with its message on stderr."""
    try:
        fn()
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0
