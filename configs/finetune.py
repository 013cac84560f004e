"""Finetuning config: ``--config=configs/finetune.py:SIZE,MODE`` (MODE: ``ft`` = answers only, ``cot`` = rationale +
answer; default ``tiny,cot``). Every field can be overridden with ``--config.a.b=value``.

Paper-scale sizes (1.3b, 13b, ...) follow the ALERT setup as far as it is described (OPT initialisation, sequence
length 2048, batch 128 sequences for 1.3b and 256 for 13b, AdamW b2 0.95, clip 1.0, dropout 0.1, attention dropout 0.0
as in OPT's configs, so ``model.attention_impl='auto'`` runs cuDNN attention on GPUs). The learning rates,
warmup and step counts are OPT-IML-style defaults (the paper does not state them in a form we could verify); change
them per run. ``tiny`` trains a 2-layer model on CPU in seconds (synthetic corpus, SentencePiece tokenizer trained
on the fly).

Weight decay choice (stated here as DESIGN.md requires): 0.1 on matrices only — all ``*_kernel`` weights and the
token and position embedding tables; never on biases or LayerNorm scales/biases (see alert_jax/train/optimizer.py).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from configs import base

MODES = ("ft", "cot")

@dataclasses.dataclass(frozen=True)
class SizeSettings:
    """The settings that change with the model size."""

    batch_size: int  # global batch in sequences of data.seq_len tokens
    learning_rate: float  # peak
    warmup_steps: int
    num_steps: int
    mesh: tuple[int, int, int]  # (data, fsdp, tensor)
    dtype: str  # compute dtype
    remat_policy: str
    # Microbatches per step for 8 devices of 80 GiB, from launch/plan.py on fsdp:8 (2026-11-28, XLA:CPU
    # temporaries, an upper bound for GPU): 1.3b peaks at 319 GiB/device with 128 rows in one pass and fits 16 rows;
    # 13b peaks at 262 GiB with 256 rows and fits 24. Re-plan for other meshes:
    #   python launch/plan.py --config=configs/finetune.py:13b,cot --mesh=fsdp:8 --device_memory=80GiB
    grad_accum_steps: int = 1
    data_source: str = "raw"  # data.source: 'tfds' (prepared array_record, launch/prepare.py) for the paper sizes


_FSDP, _FSDP_TP8, _DATA = (1, -1, 1), (1, -1, 8), (-1, 1, 1)
SIZE_SETTINGS: dict[str, SizeSettings] = {
    "125m": SizeSettings(128, 5e-5, 60, 2000, _DATA, "bfloat16", "none"),
    "350m": SizeSettings(128, 5e-5, 60, 2000, _DATA, "bfloat16", "none"),
    "1.3b": SizeSettings(128, 5e-5, 60, 2000, _FSDP, "bfloat16", "save_dots", grad_accum_steps=8, data_source="tfds"),
    "2.7b": SizeSettings(128, 5e-5, 60, 2000, _FSDP, "bfloat16", "save_dots", grad_accum_steps=8, data_source="tfds"),
    "6.7b": SizeSettings(256, 3e-5, 60, 2000, _FSDP, "bfloat16", "full", grad_accum_steps=16, data_source="tfds"),
    "13b": SizeSettings(256, 3e-5, 60, 2000, _FSDP, "bfloat16", "full", grad_accum_steps=16, data_source="tfds"),
    "30b": SizeSettings(256, 3e-5, 60, 2000, _FSDP_TP8, "bfloat16", "full", grad_accum_steps=32, data_source="tfds"),
    "66b": SizeSettings(256, 2e-5, 60, 2000, _FSDP_TP8, "bfloat16", "full", grad_accum_steps=32, data_source="tfds"),
    "175b": SizeSettings(256, 2e-5, 60, 2000, _FSDP_TP8, "bfloat16", "full", grad_accum_steps=64, data_source="tfds"),
}


def get_config(arg: str = "tiny,cot") -> ml_collections.ConfigDict:
    size, _, mode = (arg or "tiny,cot").partition(",")
    size, mode = size.strip() or "tiny", (mode.strip() or "cot")
    if mode not in MODES:
        raise ValueError(f"configs/finetune.py: MODE must be one of {MODES}, got {mode!r} (use SIZE,MODE)")
    c = base.get_config(size)
    c.mode = mode  # ft: target = answer; cot: target = rationale + " So the answer is {answer}."

    # ---- data ------------------------------------------------------------------------------------------------
    c.data.corpus = "all"  # 'synthetic' | 'all' | comma-separated names from alert_jax.data.finetune.CORPORA
    c.data.skip_missing_corpora = True  # 'all': skip corpora whose folder / split is absent (logged)
    c.data.train_split = "train"
    c.data.validation_split = "validation"
    c.data.max_eval_examples = 1000  # per corpus validation examples (first N; 0 = all)
    # Dev-set perplexity (alert_jax/train/records.py): the registry's dev tasks read from data.niv2_dir (none when
    # it is empty; absent files are skipped and named; data.source='tfds': from alert_eval), first N instances each,
    # prompt = this NIV2 template (T1 is the finetuning prompt layout, zero-shot), target = " " + the first reference.
    # '' disables. Reported as dev_loss / dev_ppl (+ per task) beside val_loss, which stays the corpora only.
    c.data.dev_eval_template = "T1"
    c.data.dev_eval_instances = 100  # first N instances per dev task (0 = all), like evaluation
    # Dev prompts (loss and score) list a classification task's answer options as evaluation does (eval.max_options):
    # tasks with 2..N distinct outputs; 0 = no options.
    c.data.dev_max_options = 10
    # Dev-set score by generation (alert_jax/train/dev_score.py; the paper's checkpoint selection), every
    # train.dev_every steps: greedy answers to the first N instances of each dev task (same template), exact match.
    # Unlike dev_loss it does not penalise OPT-CoT for writing a rationale before the answer.
    c.data.dev_generate_instances = 20
    c.data.dev_generate_max_new_tokens = 256  # as eval.max_new_tokens (CoT targets' 99th percentile: 211 tokens)
    c.data.synthetic_seed = 0
    c.data.synthetic_train_examples = 2000
    c.data.synthetic_valid_examples = 200
    c.data.loss_on_prompt = False  # True: the prompt tokens are trained too
    c.data.pack_chunk_examples = 4096
    c.data.num_threads = 2
    c.data.tokenizer_train_texts = 20000  # texts used when a SentencePiece tokenizer must be trained (scratch init)

    # ---- optimizer (alert_jax/train/optimizer.py) -------------------------------------------------------------
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 5e-5
    c.optimizer.warmup_steps = 60
    c.optimizer.end_lr_fraction = 0.1
    c.optimizer.b1 = 0.9
    c.optimizer.b2 = 0.95
    c.optimizer.eps = 1e-8
    c.optimizer.weight_decay = 0.1
    c.optimizer.weight_decay_mask = "matrices"  # kernels + embeddings decay; biases and LayerNorm params never
    c.optimizer.clip_norm = 1.0
    c.optimizer.moment_dtype = "float32"

    # ---- training loop (alert_jax/train/loop.py) --------------------------------------------------------------
    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 128  # global batch in packed sequences of data.seq_len tokens
    c.train.grad_accum_steps = 1  # microbatches per step (strided split of the batch)
    c.train.eval_batch_size = 0  # 0 = batch_size // grad_accum_steps
    # PRNG of the dropout masks: threefry2x32 (bitwise the same on every mesh/backend) or rbg / unsafe_rbg (XLA's
    # RngBitGenerator: much cheaper masks, still a function of (seed, step), but backend/mesh dependent bits)
    c.train.dropout_rng_impl = "threefry2x32"
    c.train.num_steps = 2000
    c.train.log_every = 10
    c.train.eval_every = 200  # 0 = only at the end
    c.train.eval_at_start = False  # also evaluate before the first step (the starting model's validation loss)
    c.train.checkpoint_every = 200  # 0 = only at the end (and on SIGTERM)
    c.train.stop_at_step = 0  # > 0: checkpoint and stop when reaching this step (time-sliced jobs); rerun continues
    # Settings that change the optimisation (alert_jax/train/settings.py RESUME_LOCKED) are refused on resume unless
    # named here, comma-separated, e.g. 'train.num_steps' to train a finished run further.
    c.train.resume_overrides = ""
    c.train.dev_every = 0  # > 0: dev-set score every N steps and at the last step; each scored step is checkpointed
    c.train.keep_checkpoints = 3  # latest k steps kept ...
    c.train.keep_best = True  # ... plus the best one by train.best_metric ...
    c.train.keep_period = 0  # ... plus (> 0) every step that is a multiple of this: all selection candidates kept
    # 'val_loss' (lowest; corpora validation splits) | 'dev_loss' (lowest; dev set, needs niv2_dir; teacher-forced
    # " " + answer, biased against CoT) | 'dev_score' (highest; dev-set generation, needs train.dev_every > 0).
    # Any kept step can be picked later: init_from='ckpt:DIR@best_dev_score' | '@best_val_loss' | '@latest'.
    c.train.best_metric = "val_loss"
    c.train.async_checkpointing = True
    c.train.max_replicated_fraction = 0.02  # fail fast above this on fsdp/tensor meshes (param_sharding.py)
    c.train.measure_cpu_peak = True  # on CPU, measure a matmul peak once to quote MFU against
    c.train.tensorboard = True  # also write TensorBoard events (needs tensorboardX)
    # > 0: a jax.profiler trace of this many steps after the first step of the run (which compiles), written to
    # WORKDIR/profile/train/ (TensorBoard's profile plugin or Perfetto read it); 0 = no trace.
    c.train.profile_steps = 0

    if size in SIZE_SETTINGS:
        z = SIZE_SETTINGS[size]
        c.train.batch_size = z.batch_size
        c.train.grad_accum_steps = z.grad_accum_steps
        c.optimizer.learning_rate = z.learning_rate
        c.optimizer.warmup_steps = z.warmup_steps
        c.train.num_steps = z.num_steps
        c.mesh.shape = z.mesh
        c.model.dtype = z.dtype
        c.model.remat_policy = z.remat_policy
        c.data.seq_len = 2048
        c.data.source = z.data_source
    elif size.startswith("tiny"):
        c.data.corpus = "synthetic"
        c.data.seq_len = 128
        c.data.pack_chunk_examples = 512
        c.data.max_eval_examples = 200
        c.train.batch_size = 8
        c.train.num_steps = 40
        c.train.log_every = 5
        c.train.eval_every = 20
        c.train.checkpoint_every = 20
        c.optimizer.learning_rate = 1e-3
        c.optimizer.warmup_steps = 5
        c.model.dropout = 0.0
    else:
        raise ValueError(f"configs/finetune.py: no settings for size {size!r}; sizes: tiny, tiny-postln, "
                         f"{', '.join(SIZE_SETTINGS)}")
    return c
