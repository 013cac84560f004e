"""A training run, built in named steps: everything :class:`alert_jax.train.loop.Trainer` steps.

:func:`setup_run` builds a :class:`TrainRun` (``configs/finetune.py`` documents every setting):

1. the mesh and the batch sizes (:func:`batching`: microbatches over the mesh's batch shards, rows over the
   data-reading processes);
2. the checkpointer and the resume point: a workdir with a saved step resumes from its latest one, and the saved
   run's architecture wins (:func:`_adopt_saved_architecture`);
3. the records: the corpora (``train.records.load_corpora``: raw files or the prepared TFDS dataset of
   ``data.source``, or the ``corpora`` passed in) and the dev set;
4. the tokenizer (:func:`resolve_tokenizer`: the workdir's, ``cfg.tokenizer``, the one beside ``init_from``, or a
   SentencePiece model trained on the training texts for a random init);
5. the parameters of a fresh run (:func:`init_params`: ``io.loader.load_model`` of ``cfg.init_from``);
6. the optimizer, its weight-decay mask and the train state's shardings (:func:`_optimization`; training refuses a
   mesh on which too many parameter bytes would be replicated);
7. the input pipelines (:func:`_inputs`);
8. the train state, restored or created, and the jitted train and eval steps.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
from etils import epath

from alert_jax.data import pipeline
from alert_jax.io import checkpoint as ckpt_lib
from alert_jax.io import loader, tokenizers
from alert_jax.io.files import absolute
from alert_jax.io.workdir import append_config_history
from alert_jax.models.opt import ModelParts, abstract_model, split_model
from alert_jax.models.sizes import ARCHITECTURE_FIELDS, OPTConfig, model_config_from
from alert_jax.parallel import distributed, param_sharding
from alert_jax.parallel.distributed import print_primary
from alert_jax.parallel.sharding import make_mesh
from alert_jax.train import optimizer as opt_lib
from alert_jax.train import settings
from alert_jax.train import state as state_lib
from alert_jax.train import step as step_lib
from alert_jax.train.dev_score import DevGenerationSet, check_fits, load_dev_generation
from alert_jax.train.records import Corpora, check_token_ids, load_corpora, load_dev_sets
from alert_jax.train.settings import TrainConfigError

TOKENIZER_WORKDIR = "tokenizer"


class NoGoodCheckpointError(Exception):
    """Every saved step of a resumed run is damaged (each was moved to ``checkpoints/damaged/``)."""


@dataclasses.dataclass(frozen=True)
class Batching:
    """Rows per step: the global batch, this process's share, and the validation batch's share."""

    global_batch: int
    local_batch: int
    local_eval_batch: int


def batching(cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> Batching:
    """Batch sizes of a validated config (``train.settings.validate`` checked the split over the mesh's batch
    shards); the rows must also divide over the data-reading processes."""
    t = cfg.train
    batch = int(t.batch_size)
    eval_batch = int(t.eval_batch_size) or batch // int(t.grad_accum_steps)
    _, shard_count = pipeline.process_shard(mesh)
    if batch % shard_count or eval_batch % shard_count:
        raise TrainConfigError(f"train.batch_size={batch} / eval batch {eval_batch}: must divide over the "
                               f"{shard_count} data-reading processes")
    return Batching(batch, batch // shard_count, eval_batch // shard_count)


def _check_best_metric(cfg: ml_collections.ConfigDict, best_metric: str, corpora: Corpora,
                       dev_records: Mapping[str, Any], dev_generation: DevGenerationSet | None) -> None:
    """``dev_loss`` / ``dev_score`` selection needs dev sets (an error otherwise); ``val_loss`` without validation
    sets keeps no best checkpoint (a note)."""
    if not bool(cfg.train.keep_best):
        return
    if best_metric == "dev_score" and dev_generation is None:
        raise TrainConfigError("train.best_metric='dev_score' but no dev set is scored (no dev task file in "
                               "data.niv2_dir, or none in data.tfds_dir's alert_eval with data.source='tfds', or "
                               "data.dev_eval_template=''); set data.niv2_dir (or prepare alert_eval) or "
                               "train.best_metric='val_loss'")
    if best_metric == "dev_loss" and not dev_records:
        raise TrainConfigError("train.best_metric='dev_loss' but no dev set is evaluated (no dev task file in "
                               "data.niv2_dir, or none in data.tfds_dir's alert_eval with data.source='tfds', or "
                               "data.dev_eval_template=''); set data.niv2_dir (or prepare alert_eval) or "
                               "train.best_metric='val_loss'")
    if best_metric == "val_loss" and not corpora.validation:
        print_primary("note: no validation sets, so train.keep_best keeps no best checkpoint "
                      "(train.best_metric='val_loss')")


def _checkpointer(cfg: ml_collections.ConfigDict, workdir: epath.Path) -> ckpt_lib.Checkpointer:
    t = cfg.train
    return ckpt_lib.Checkpointer(workdir / ckpt_lib.CHECKPOINTS_SUBDIR, keep=int(t.keep_checkpoints),
                                 keep_best=bool(t.keep_best), async_save=bool(t.async_checkpointing),
                                 best_metric=str(t.best_metric), keep_period=int(t.keep_period))


def _adopt_saved_architecture(cfg: ml_collections.ConfigDict, workdir: epath.Path, step: int) -> None:
    """On resume the saved run's architecture wins (it may have come from an HF checkpoint)."""
    saved = ckpt_lib.load_config(workdir / ckpt_lib.CHECKPOINTS_SUBDIR / str(step))
    for f in ARCHITECTURE_FIELDS:
        if f in saved.model:
            cfg.model[f] = saved.model[f]


def _record_architecture(cfg: ml_collections.ConfigDict, model_cfg: OPTConfig) -> None:
    """Writes the actual architecture into ``cfg.model`` so a checkpoint's config rebuilds the same model."""
    for f in ARCHITECTURE_FIELDS:
        cfg.model[f] = getattr(model_cfg.arch, f)


def resolve_tokenizer(cfg: ml_collections.ConfigDict, workdir: epath.Path, texts: Callable[[], list[str]],
                      vocab_size: int) -> Any:
    """The tokenizer of this run: the workdir's (resume), ``cfg.tokenizer``, the one beside ``init_from``, or (random
    init) a SentencePiece model of ``vocab_size`` pieces trained on ``texts()`` (process 0 trains, all read; the
    texts are only read then)."""
    saved = workdir / ckpt_lib.CHECKPOINTS_SUBDIR / ckpt_lib.TOKENIZER_DIR
    if saved.is_dir():
        return tokenizers.load_tokenizer(str(saved))
    init = loader.InitFrom.parse(cfg.init_from)
    found = loader.find_tokenizer(init, str(cfg.tokenizer))
    if found is not None:
        return found
    if init.kind:
        raise TrainConfigError(f"init_from={str(init)!r} carries no tokenizer: set --config.tokenizer")
    path = workdir / TOKENIZER_WORKDIR / "tokenizer.model"
    if distributed.is_primary() and not path.is_file():
        corpus = texts()
        print_primary(f"training a SentencePiece tokenizer ({vocab_size} pieces) on {len(corpus)} texts -> {path}")
        tokenizers.train_sentencepiece(corpus, vocab_size, path)
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
    workdir: epath.Path
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
    tokenizer: Any = None
    dev_generation: DevGenerationSet | None = None  # the dev-set score's tasks (train.dev_every > 0)


def _resume_point(cfg: ml_collections.ConfigDict, workdir: epath.Path) -> ckpt_lib.Checkpointer | None:
    """The checkpointer of a workdir that already holds checkpoints (a resume), else None: a fresh run creates its
    ``checkpoints/`` only once its inputs are known to be good."""
    if not (workdir / ckpt_lib.CHECKPOINTS_SUBDIR).is_dir():
        return None
    ckpt = _checkpointer(cfg, workdir)
    return ckpt if ckpt.latest_step() is not None else None


def _guard_resume(cfg: ml_collections.ConfigDict, workdir: epath.Path, step: int) -> None:
    """Refuses settings that would change the optimisation of the run being resumed (``train.settings``)."""
    saved = ckpt_lib.config_to_dict(ckpt_lib.load_config(workdir / ckpt_lib.CHECKPOINTS_SUBDIR / str(step)))
    for line in settings.check_resume(saved, ckpt_lib.config_to_dict(cfg)):
        print_primary(f"resuming with a changed setting (train.resume_overrides): {line}")


def setup_run(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike, corpora: Corpora | None = None) -> TrainRun:
    """Mesh, data, tokenizer, model, optimizer, state (fresh or resumed), jitted steps and the checkpointer.

    ``corpora``: the ``(prompt, target)`` records to train / validate on; default :func:`load_corpora` of the config.
    The caller holds the workdir (``io.workdir.workdir_lock``) and has validated ``cfg`` (``train.settings``).
    Everything that can fail on the inputs (records, tokenizer, initial weights) is read before a fresh run writes
    its ``checkpoints/``.
    """
    workdir = absolute(workdir)
    cfg = ml_collections.ConfigDict(cfg.to_dict())  # private, unlocked copy
    mesh = make_mesh(tuple(cfg.mesh.shape))
    sizes = batching(cfg, mesh)
    seq_len = int(cfg.data.seq_len)
    ckpt = _resume_point(cfg, workdir)
    resume_step = ckpt.latest_step() if ckpt is not None else None
    if resume_step is not None:
        _adopt_saved_architecture(cfg, workdir, resume_step)
        _guard_resume(cfg, workdir, resume_step)
    model_cfg = model_config_from(cfg)

    corpora = load_corpora(cfg) if corpora is None else corpora
    dev_records, dev_note = load_dev_sets(cfg)
    print_primary(dev_note)
    dev_generation, dev_generation_note = load_dev_generation(cfg)
    print_primary(dev_generation_note)
    _check_best_metric(cfg, str(cfg.train.best_metric), corpora, dev_records, dev_generation)
    def texts() -> list[str]:
        return [p + t for p, t in map(pipeline.record_to_pair, corpora.train[: int(cfg.data.tokenizer_train_texts)])]

    tokenizer = resolve_tokenizer(cfg, workdir, texts, model_cfg.arch.vocab_size)
    check_token_ids(corpora, tokenizer)

    params = None
    if resume_step is None:
        model_cfg, params = init_params(cfg, model_cfg, mesh)
    _record_architecture(cfg, model_cfg)
    if dev_generation is not None:
        check_fits(dev_generation, model_cfg.arch.max_position_embeddings)
    if tokenizer.vocab_size > model_cfg.arch.vocab_size:
        raise TrainConfigError(f"tokenizer has {tokenizer.vocab_size} ids but the model's vocabulary is "
                         f"{model_cfg.arch.vocab_size} (model.size={cfg.model.size}); use a matching tokenizer")
    parts, _ = split_model(abstract_model(model_cfg))
    optim = _optimization(cfg, parts, mesh)
    if ckpt is None:
        ckpt = _checkpointer(cfg, workdir)
    inputs = _inputs(cfg, corpora, dev_records, tokenizer, sizes, mesh)
    if resume_step is not None:
        abstract = state_lib.abstract_state(parts, optim.tx, optim.shardings)
        restored = ckpt.restore_newest_good(abstract, inputs.train_iter)
        if restored is None:
            raise NoGoodCheckpointError(
                f"no checkpoint in {ckpt.directory} is intact (the damaged steps are in {ckpt.damaged_directory}); "
                f"rerun to start this run again from its initial weights, or restore a good step there")
        resume_step, state, _ = restored
        print_primary(f"resumed from {ckpt.directory}/{resume_step}")
    else:
        state = state_lib.create_train_state(params, optim.tx, optim.shardings, int(cfg.seed))
        del params
    ckpt.write_extras(cfg, tokenizer)
    if distributed.is_primary() and not (workdir / "config.json").is_file():
        (workdir / "config.json").write_text(json.dumps(ckpt_lib.config_to_dict(cfg), indent=2))
    append_config_history(workdir, ckpt_lib.config_to_dict(cfg), resume_step)

    t_cfg = cfg.train
    decayed, total = opt_lib.count_decayed(parts.abstract_params(), optim.mask)
    print_primary(f"model {cfg.model.size}: {total:,} params ({decayed:,} weight-decayed); mesh {dict(mesh.shape)} on "
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
        tokenizer=tokenizer, dev_generation=dev_generation,
    )
