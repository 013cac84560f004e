"""Evaluation on the ALERT datasets x prompt templates (DESIGN.md section 6): ``--config=configs/evaluate.py:SIZE``.

    python launch/evaluate.py --config=configs/evaluate.py:1.3b --config.init_from=hf:facebook/opt-1.3b \
        --config.data.niv2_dir=/data/natural-instructions --workdir=workdirs/opt-1.3b-eval     # 1 x 80 GB
    python launch/evaluate.py --config=configs/evaluate.py:13b --config.init_from=hf:/models/opt-13b \
        --config.data.niv2_dir=/data/natural-instructions --workdir=workdirs/opt-13b-eval      # 8 x 80 GB
    python launch/evaluate.py --config=configs/evaluate.py:tiny --config.init_from=ckpt:workdirs/tiny-cot/checkpoints \
        --config.eval.tasks=dev --config.eval.templates=T1,T4 --config.eval.max_instances=20 --workdir=/tmp/ev

SIZE must be the checkpoint's size (read from its config: HF ``config.json`` or the training run's saved config);
another one is refused naming both (eval/runner.py check_model_size). Paper sizes take :data:`EVAL_SIZE_SETTINGS`:
bfloat16 weights and compute, a mesh and a decode batch per size, planned with

    python launch/plan.py --config=configs/evaluate.py:13b --devices=8 --device_memory=80GiB

(tests/test_plan.py confirms 1.3b on one 80 GiB device and 13b on 8). Re-running with the same workdir skips every
(task, template) whose predictions file is complete.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from configs import base


@dataclasses.dataclass(frozen=True)
class EvalSizeSettings:
    """The evaluation settings that change with the model size (weights and compute are bfloat16 for all)."""

    mesh: tuple[int, int, int]  # (data, fsdp, tensor); -1 = the remaining devices
    batch_size: int  # rows per decode call
    devices: int  # the 80 GiB devices the preset is meant for (launch/plan.py --devices)
    unstack_layers: bool = True  # eval.unstack_layers: False drops the per-layer decoding copy of the weights


# Up to 2.7b the bf16 weights (and their per-layer decoding copy) fit one device: every device decodes its own rows.
# From 6.7b on, heads and FFN columns are split over 8 devices (tensor): weights, KV cache and attention all divide
# by 8 and no weight is gathered per step (FSDP would all-gather every layer at every generated token).
# Peaks per device planned by launch/plan.py (XLA:CPU temporaries: an upper bound for GPUs; context 2048 = prompt 1792
# + 256 new tokens; usable 0.75 x 80 GiB = 60 GiB): 1.3b 51.5 GiB, 2.7b 42.3, 6.7b 13.3, 13b 22.4, 30b 38.6, 66b
# 53.0 (without the per-layer copy; 78.7 with it). 125m and 350m are smaller than 1.3b; 175b needs more than 8.
_DATA, _TP8 = (-1, 1, 1), (-1, 1, 8)
EVAL_SIZE_SETTINGS: dict[str, EvalSizeSettings] = {
    "125m": EvalSizeSettings(_DATA, 32, 1),
    "350m": EvalSizeSettings(_DATA, 32, 1),
    "1.3b": EvalSizeSettings(_DATA, 32, 1),
    "2.7b": EvalSizeSettings(_DATA, 16, 1),
    "6.7b": EvalSizeSettings(_TP8, 32, 8),
    "13b": EvalSizeSettings(_TP8, 32, 8),
    "30b": EvalSizeSettings(_TP8, 16, 8),
    "66b": EvalSizeSettings(_TP8, 8, 8, unstack_layers=False),
}


def get_config(size: str = "tiny") -> ml_collections.ConfigDict:
    c = base.get_config(size)
    c.model.dropout = 0.0

    e = c.eval = ml_collections.ConfigDict()
    # Task spec (data/registry.py resolve_tasks): 'all', 'dev', 'in_domain', 'held_out', skill names, task names,
    # comma-separated. Registered tasks whose file is missing from data.niv2_dir are skipped and listed in
    # scores.json, unless allow_missing=False.
    e.tasks = "all"
    e.allow_missing = True
    # Registry: '' = the ALERT registry; 'synthetic' = the registry of data/synthetic.py's tasks; a JSON file
    # ({"datasets": [{"name", "skill", "in_domain"}...], "dev_set": [...]}); or comma-separated
    # 'skill:task[:held_out]' entries.
    e.registry = ""
    e.templates = "all"  # 'all' or comma-separated template names (data/templates.py), e.g. 'T1,T3'
    e.max_instances = 100  # first N instances of each task (NIV2 test protocol); 0 = all
    e.num_demos = -1  # -1 = each template's own number of demonstrations
    # Answer options (as ALERT does): a classification task's label set is listed after the input of the query and of
    # every demonstration, e.g. 'Options: against, in favor' (sorted). A task is a classification task when its
    # outputs (all instances, positive examples included) take 2..max_options distinct strings, or when the registry
    # declares its options (data/niv2.py answer_options, data/registry.py Dataset.options).
    e.append_options = True
    e.max_options = 10
    # Long enough for 99% of the finetuning corpora's CoT targets (pooled 99th percentile 211 OPT tokens; MATH's own is
    # 823): benchmarks/target_lengths.py, RESULTS.md. Rows that hit it are counted per dataset in report.md.
    e.max_new_tokens = 256
    e.context = 0  # prompt + generation budget in tokens; 0 = the model's max_position_embeddings
    # Generation ends at EOS, at max_new_tokens, or at the first stop string (the prediction is cut there).
    e.stop_strings = ("\n\n",)
    e.temperature = 0.0  # 0 = greedy
    e.top_p = 1.0
    # Per-layer decoding weights, built once per evaluation by the Generator (one more copy of the block weights while
    # decoding; each step reads them in place). False: slice the stored stack inside every step (slower, less memory).
    e.unstack_layers = True
    e.batch_size = 8  # rows per decode call (rounded up to a multiple of the mesh's data x fsdp size)
    e.buckets = ""  # comma-separated prompt-length buckets; '' = powers of two and 1.5x powers of two
    # Prompts that cannot fit the context even with no demonstrations and an empty input:
    # 'empty' = scored as an empty prediction, flagged in the predictions file and counted in scores.json/report;
    # 'error' = stop with an error naming the task, instance and template.
    e.on_overflow = "empty"
    e.overwrite = False  # True: recompute everything even when predictions files exist
    e.figures = True
    # 95% percentile bootstrap intervals in scores.json / report.md (eval/bootstrap.py): instances resampled with
    # replacement this many times (0 = no intervals), from a numpy Generator seeded with bootstrap_seed.
    e.bootstrap_resamples = 1000
    e.bootstrap_seed = 0
    # One progress bar with ETA over all pending prompts (tqdm on stderr, process 0, only when stderr is a terminal).
    e.progress = True
    # True: a jax.profiler trace of the first decode calls (compile included) in WORKDIR/profile/eval/
    # (TensorBoard's profile plugin or Perfetto read it).
    e.profile = False
    e.profile_batches = 2  # decode calls traced with eval.profile: the first compiles, the next runs compiled

    if size in EVAL_SIZE_SETTINGS:
        z = EVAL_SIZE_SETTINGS[size]
        c.model.dtype = c.model.param_dtype = "bfloat16"
        c.mesh.shape = z.mesh
        e.batch_size = z.batch_size
        e.unstack_layers = z.unstack_layers
    return c
