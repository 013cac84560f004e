"""The training loop's records: the finetuning corpora (train + validation) and the dev-set perplexity records.

Both are lists of ``(prompt, target)`` text pairs; ``train.loop`` tokenizes and packs them with ``data.pipeline``.

Dev-set records. DESIGN.md section 5 validates finetuning runs on each corpus's validation split *and on the dev set*
(the registry's three dev tasks, :data:`alert_jax.data.registry.DEV_SET`, never among the evaluation datasets), both
measured the same way: the mean cross-entropy of the target tokens given the prompt. Per dev task whose file is in
``niv2_dir``, for its first ``max_instances`` instances in file order (like evaluation, which scores the first N):

* prompt = ``templates.render(template, task, instance, options=...).text`` with the task's answer options as
  evaluation lists them (:func:`dev_options`; no context fitting: the packer truncates an over-long example from the
  left, as for the corpora). The default template T1 (``Definition: ...\\n\\nInput: ...\\nOutput:``) is the fixed
  finetuning prompt of ``data/finetune.py``, so dev perplexity measures the finetuning format on unseen tasks.
* target = ``" " + outputs[0].strip()``: the instance's first reference, spaced like the finetuning targets
  (``format_example`` targets start with one space after ``Output:``).

Missing task files are not an error: they are returned in :attr:`DevRecords.missing` so the caller can name them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import ml_collections
from etils import epath

from alert_jax.data import niv2, pipeline, templates
from alert_jax.data import registry as registry_lib

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Corpora:
    """Formatted ``(prompt, target)`` records: the training set and one validation set per corpus name."""

    train: list[tuple[str, str]]
    validation: dict[str, list[tuple[str, str]]]


def load_corpora(cfg: ml_collections.ConfigDict) -> Corpora:
    """Reads and formats the training and validation examples named by ``cfg.data.corpus``.

    'synthetic': ``data.synthetic.synthetic_corpus_splits``; otherwise corpus names (or 'all') read from
    ``cfg.data.finetune_dir`` with ``data.finetune``, formatted by ``format_example(ex, cfg.mode)``; each corpus's
    validation split is capped at the first ``cfg.data.max_eval_examples`` examples.
    """
    d = cfg.data
    mode = str(cfg.mode)
    limit = int(d.max_eval_examples) or None
    if str(d.corpus) == "synthetic":
        from alert_jax.data.synthetic import synthetic_corpus_splits

        train, valid = synthetic_corpus_splits(int(d.synthetic_seed), int(d.synthetic_train_examples),
                                               int(d.synthetic_valid_examples))
        val = {"synthetic": pipeline.records_from_examples(valid[:limit], mode)}
        return Corpora(pipeline.records_from_examples(train, mode), val)
    from alert_jax.data import finetune

    if not d.finetune_dir:
        raise ValueError("data.finetune_dir is empty: set --config.data.finetune_dir (a folder with one sub-folder "
                         "per corpus) or ALERT_JAX_FINETUNE_DIR, or use --config.data.corpus=synthetic")
    names = list(finetune.CORPORA) if str(d.corpus) == "all" else [n.strip() for n in str(d.corpus).split(",") if n]
    skip = bool(d.skip_missing_corpora)
    train_examples = finetune.read_corpora(names, d.finetune_dir, str(d.train_split), skip_missing=skip)
    if not train_examples:
        raise ValueError(f"no training examples for data.corpus={d.corpus!r} in {d.finetune_dir}")
    val: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        try:
            examples = finetune.read_corpus(name, epath.Path(d.finetune_dir) / name, str(d.validation_split))
        except finetune.CorpusNotFoundError as e:
            if not skip:
                raise
            log.warning("no validation split for %s: %s", name, e)
            continue
        if examples:
            val[name] = pipeline.records_from_examples(examples[:limit], mode)
    return Corpora(pipeline.records_from_examples(train_examples, mode), val)


def load_dev_sets(cfg: ml_collections.ConfigDict) -> tuple[dict[str, list[tuple[str, str]]], str]:
    """``(records per dev task, one log line)`` for dev-set perplexity (:func:`dev_records`).

    Settings: ``data.dev_eval_template`` ('' disables), ``data.dev_eval_instances`` (first N per task, 0 = all),
    ``data.niv2_dir`` (empty: no dev sets). Dev tasks without a file are skipped and named in the log line.
    """
    d = cfg.data
    template = str(d.dev_eval_template)
    if not template:
        return {}, "dev-set validation disabled (data.dev_eval_template='')"
    if not str(d.niv2_dir):
        return {}, ("no dev-set validation: data.niv2_dir is empty (set it, or ALERT_JAX_NIV2_DIR, to the NIV2 task "
                    "files to also report dev_loss)")
    instances = int(d.dev_eval_instances)
    dev = dev_records(d.niv2_dir, template=template, max_instances=instances, max_options=int(d.dev_max_options))
    counts = ", ".join(f"{name} {len(recs)}" for name, recs in dev.records.items()) or "none"
    note = f"dev set ({template}, first {instances or 'all'} instances per task): {counts}"
    if dev.missing:
        note += f"; skipped, no task file in {d.niv2_dir}: {', '.join(dev.missing)}"
    return dev.records, note

@dataclasses.dataclass
class DevRecords:
    """``records``: task name -> ``[(prompt, target), ...]`` (registry order, tasks with a file only);
    ``missing``: dev tasks without a file in the folder (registry order)."""

    records: dict[str, list[tuple[str, str]]]
    missing: list[str]


def dev_options(registry: registry_lib.Registry | None, task: niv2.Task, max_options: int) -> list[str] | None:
    """The answer options a dev prompt lists: the registry's (``Registry.answer_options``), None when
    ``max_options`` is 0."""
    return (registry or registry_lib.ALERT).answer_options(task, max_options) if max_options > 0 else None


def instance_record(template: str | templates.Template, task: niv2.Task, instance: niv2.Instance,
                    options: Sequence[str] | None = None) -> tuple[str, str]:
    """``(prompt, target)`` of one instance: the rendered prompt (with ``options``) and ``" "`` + its first
    reference (stripped)."""
    return templates.render(template, task, instance, options=options).text, " " + instance.outputs[0].strip()


def dev_records(
    niv2_dir: str | os.PathLike,
    *,
    template: str = "T1",
    max_instances: int = 100,
    tasks: Sequence[str] | None = None,
    registry: registry_lib.Registry | None = None,
    max_options: int = 10,
) -> DevRecords:
    """Perplexity records of the dev tasks found in ``niv2_dir`` (a task folder or an NIV2 checkout).

    ``tasks`` defaults to ``registry.dev_set`` (``registry`` defaults to the ALERT registry); ``max_instances`` = 0
    takes every instance; ``max_options``: :func:`dev_options` (0 = none). An unknown ``template`` raises
    ValueError naming the valid ones; a ``niv2_dir`` that is not a folder raises FileNotFoundError; a malformed task
    file raises :class:`niv2.TaskFileError`.
    """
    tmpl = templates.get_template(template)
    if max_instances < 0:
        raise ValueError(f"max_instances must be >= 0 (0 = all), got {max_instances}")
    wanted = list((registry or registry_lib.ALERT).dev_set if tasks is None else tasks)
    present, missing = registry_lib.available(registry, niv2_dir, wanted)
    records: dict[str, list[tuple[str, str]]] = {}
    for name in present:
        task = niv2.load_task(name, niv2_dir)
        chosen = task.instances[:max_instances] if max_instances else task.instances
        options = dev_options(registry, task, max_options)
        records[name] = [instance_record(tmpl, task, inst, options) for inst in chosen]
    return DevRecords(records=records, missing=missing)
