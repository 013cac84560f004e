"""Evaluation on the ALERT datasets x prompt templates (DESIGN.md section 6).

    python launch/evaluate.py --config=configs/evaluate.py:1.3b --config.init_from=hf:facebook/opt-1.3b \
        --config.data.niv2_dir=/data/natural-instructions --workdir=workdirs/opt-1.3b-eval
    python launch/evaluate.py --config=configs/evaluate.py:tiny --config.init_from=ckpt:workdirs/tiny-cot/checkpoints \
        --config.eval.tasks=dev --config.eval.templates=T1,T4 --config.eval.max_instances=20 --workdir=/tmp/ev

Re-running with the same workdir skips every (task, template) whose predictions file is complete.
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(size: str = "tiny") -> ml_collections.ConfigDict:
    c = base.get_config(size)
    c.model.dropout = 0.0
    c.model.attention_dropout = 0.0

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
    return c
