"""The training loop's records: the finetuning corpora (train + validation) and the dev-set perplexity records.

Both are ``(prompt, target)`` records; ``train.loop`` tokenizes and packs them with ``data.pipeline``. With
``data.source='raw'`` the corpora are read from their files into lists; with ``'tfds'`` they come from the
``alert_finetune/<mode>`` dataset that ``launch/prepare.py`` wrote to ``data.tfds_dir``: the training split stays a
random-access source (each process reads only its shard), the validation sets are grouped and capped as the raw path
does, and records carry token ids when the dataset was prepared with a tokenizer (:func:`check_token_ids`).

Dev-set records. DESIGN.md section 5 validates finetuning runs on each corpus's validation split *and on the dev set*
(the registry's three dev tasks, :data:`alert_jax.data.registry.DEV_SET`, never among the evaluation datasets), both
measured the same way: the mean cross-entropy of the target tokens given the prompt. The dev tasks come from the
run's task source, as evaluation's do (:func:`dev_task_store`: the files in ``data.niv2_dir``, or the prepared
``alert_eval`` with ``data.source='tfds'``). Per dev task found there, for its first ``max_instances`` instances in file
order (like evaluation, which scores the first N):

* prompt = ``templates.render(template, task, instance, options=...).text`` with the task's answer options as
  evaluation lists them (:func:`dev_options`; no context fitting: the packer truncates an over-long example from the
  left, as for the corpora). The default template T1 (``Definition: ...\\n\\nInput: ...\\nOutput:``) is the fixed
  finetuning prompt of ``data/finetune.py``, so dev perplexity measures the finetuning format on unseen tasks.
* target = ``" " + outputs[0].strip()``: the instance's first reference, spaced like the finetuning targets
  (``format_example`` targets start with one space after ``Output:``).

Missing dev tasks are not an error: they are returned in :attr:`DevRecords.missing` so the caller can name them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
from etils import epath

from alert_jax.data import niv2, pipeline, sources, templates
from alert_jax.data import registry as registry_lib
from alert_jax.train.settings import TrainConfigError

log = logging.getLogger(__name__)

# The settings that choose the corpora's records (corpus_inputs); launch/prepare.py stores them in the dataset's
# metadata and a data.source='tfds' run refuses a dataset prepared with other values.
CORPUS_INPUTS = ("corpus", "train_split", "validation_split")
SYNTHETIC_INPUTS = ("corpus", "synthetic_seed", "synthetic_train_examples", "synthetic_valid_examples")


@dataclasses.dataclass
class Corpora:
    """Formatted records: the training set (a list or a random-access source) and one validation set per corpus.

    ``tokenizer_fingerprint``: non-empty when the records carry token ids, made by the tokenizer with this
    ``io.tokenizers.fingerprint`` (``tokenizer`` describes it); :func:`check_token_ids` refuses another one.
    """

    train: Sequence[Any]
    validation: dict[str, list[Any]]
    tokenizer_fingerprint: str = ""
    tokenizer: str = ""
    where: str = ""


def corpus_inputs(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The settings of ``cfg.data`` that choose the records (:data:`SYNTHETIC_INPUTS` for the synthetic corpus, else
    :data:`CORPUS_INPUTS`): what a prepared dataset must have been built from."""
    keys = SYNTHETIC_INPUTS if str(cfg.data.corpus) == "synthetic" else CORPUS_INPUTS
    return {k: cfg.data[k] for k in keys}


def load_corpora(cfg: ml_collections.ConfigDict) -> Corpora:
    """Reads and formats the training and validation examples named by ``cfg.data.corpus``.

    The examples are :func:`read_corpus_examples`, formatted by ``format_example(ex, cfg.mode)``; each validation set
    is capped at the first ``cfg.data.max_eval_examples`` examples. ``data.source='tfds'``: the same records from the
    prepared dataset (:func:`load_prepared_corpora`).
    """
    if sources.data_source(cfg) == "tfds":
        return load_prepared_corpora(cfg)
    mode = str(cfg.mode)
    limit = int(cfg.data.max_eval_examples) or None
    train, valid = read_corpus_examples(cfg)
    val = {name: pipeline.records_from_examples(examples[:limit], mode) for name, examples in valid.items()}
    return Corpora(pipeline.records_from_examples(train, mode), val)


def read_corpus_examples(cfg: ml_collections.ConfigDict) -> tuple[list[Any], dict[str, list[Any]]]:
    """``(training RationaleExamples, {validation set name: RationaleExamples})`` named by ``cfg.data.corpus``,
    uncapped.

    'synthetic': ``data.synthetic.synthetic_corpus_splits`` (one validation set, 'synthetic'); otherwise corpus names
    (or 'all') read from ``cfg.data.finetune_dir`` with ``data.finetune`` (one validation set per corpus, named like
    it and holding that corpus's examples, whose ``source`` is the corpus name).
    """
    d = cfg.data
    if str(d.corpus) == "synthetic":
        from alert_jax.data.synthetic import synthetic_corpus_splits

        train, valid = synthetic_corpus_splits(int(d.synthetic_seed), int(d.synthetic_train_examples),
                                               int(d.synthetic_valid_examples))
        return train, {"synthetic": valid}
    from alert_jax.data import finetune

    if not d.finetune_dir:
        raise ValueError("data.finetune_dir is empty: set --config.data.finetune_dir (a folder with one sub-folder "
                         "per corpus) or ALERT_JAX_FINETUNE_DIR, or use --config.data.corpus=synthetic")
    names = list(finetune.CORPORA) if str(d.corpus) == "all" else [n.strip() for n in str(d.corpus).split(",") if n]
    skip = bool(d.skip_missing_corpora)
    train_examples = finetune.read_corpora(names, d.finetune_dir, str(d.train_split), skip_missing=skip)
    if not train_examples:
        raise ValueError(f"no training examples for data.corpus={d.corpus!r} in {d.finetune_dir}")
    val: dict[str, list[Any]] = {}
    for name in names:
        try:
            examples = finetune.read_corpus(name, epath.Path(d.finetune_dir) / name, str(d.validation_split))
        except finetune.CorpusNotFoundError as e:
            if not skip:
                raise
            log.warning("no validation split for %s: %s", name, e)
            continue
        if examples:
            val[name] = examples
    return train_examples, val


def load_prepared_corpora(cfg: ml_collections.ConfigDict) -> Corpora:
    """:func:`load_corpora` from ``alert_finetune/<cfg.mode>`` in ``cfg.data.tfds_dir``: the same records in the same
    order (training records stay on storage; validation grouped per corpus -- one 'synthetic' set for the synthetic
    corpus -- and capped at ``data.max_eval_examples``, as the raw path does). Refuses a dataset prepared from other
    :data:`CORPUS_INPUTS`."""
    from alert_jax.data.tfds import alert_finetune

    d = cfg.data
    try:
        prepared = alert_finetune.open_prepared(str(d.tfds_dir), str(cfg.mode))
    except FileNotFoundError as err:
        raise TrainConfigError(f"data.tfds_dir={str(d.tfds_dir)!r}: {err}; write it with launch/prepare.py "
                               f"--config=configs/finetune.py:SIZE,{cfg.mode} --out={d.tfds_dir}") from None
    saved = prepared.metadata.get("inputs", {})
    wanted = corpus_inputs(cfg)
    diff = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
    if diff:
        detail = ", ".join(f"data.{k}: prepared {a!r}, this run {b!r}" for k, (a, b) in diff.items())
        raise TrainConfigError(f"{prepared.path} was prepared from other inputs ({detail}): rerun launch/prepare.py "
                               "with this config, or use the settings it was prepared with")
    limit = int(d.max_eval_examples) or None
    val: dict[str, list[Any]] = {}
    for source, record in prepared.validation:
        val.setdefault("synthetic" if str(d.corpus) == "synthetic" else source, []).append(record)
    val = {name: records[:limit] for name, records in val.items()}
    return Corpora(prepared.train, val, str(prepared.metadata.get("tokenizer_fingerprint", "")),
                   str(prepared.metadata.get("tokenizer", "")), prepared.path)


def check_token_ids(corpora: Corpora, tokenizer: Any) -> None:
    """Refuses records whose token ids another tokenizer made (their ids would be wrong for this model)."""
    if not corpora.tokenizer_fingerprint:
        return
    from alert_jax.io.tokenizers import fingerprint

    mine = fingerprint(tokenizer)
    if mine != corpora.tokenizer_fingerprint:
        raise TrainConfigError(
            f"{corpora.where} holds token ids of tokenizer {corpora.tokenizer} ({corpora.tokenizer_fingerprint[:19]}) "
            f"but this run uses {tokenizer!r} ({mine[:19]}): rerun launch/prepare.py with this run's tokenizer "
            "(--config.tokenizer or init_from), or train with the tokenizer it was prepared with")


def load_dev_sets(cfg: ml_collections.ConfigDict) -> tuple[dict[str, list[tuple[str, str]]], str]:
    """``(records per dev task, one log line)`` for dev-set perplexity (:func:`dev_records`).

    Settings: ``data.dev_eval_template`` ('' disables), ``data.dev_eval_instances`` (first N per task, 0 = all), the
    tasks of :func:`dev_task_store` (none with 'raw' and an empty ``data.niv2_dir``). Dev tasks the store lacks are
    skipped and named in the log line.
    """
    d = cfg.data
    template = str(d.dev_eval_template)
    if not template:
        return {}, "dev-set validation disabled (data.dev_eval_template='')"
    store = dev_task_store(cfg)
    if store is None:
        return {}, ("no dev-set validation: data.niv2_dir is empty (set it, or ALERT_JAX_NIV2_DIR, to the NIV2 task "
                    "files to also report dev_loss)")
    instances = int(d.dev_eval_instances)
    dev = dev_records(store, template=template, max_instances=instances, max_options=int(d.dev_max_options))
    counts = ", ".join(f"{name} {len(recs)}" for name, recs in dev.records.items()) or "none"
    note = f"dev set ({template}, first {instances or 'all'} instances per task): {counts}"
    if dev.missing:
        note += f"; skipped, no task file in {store.where}: {', '.join(dev.missing)}"
    return dev.records, note


def dev_task_store(cfg: ml_collections.ConfigDict) -> sources.TaskStore | None:
    """Where a training run's dev tasks come from: ``sources.task_store(cfg)``, the tasks evaluation reads.

    None with ``data.source='raw'`` and an empty ``data.niv2_dir`` (no dev set). With 'tfds' and no ``alert_eval``
    dataset in ``data.tfds_dir``, a store without tasks: every dev task is then missing (skipped and named), as when
    the prepared dataset holds none of them.
    """
    source = sources.data_source(cfg)
    if source == "raw" and not str(cfg.data.niv2_dir):
        return None
    try:
        return sources.task_store(cfg)
    except sources.DataSourceError:
        if source == "raw":
            raise
    return sources.TaskStore([], _no_task, f"data.tfds_dir={cfg.data.tfds_dir} (no alert_eval dataset: "
                                           "launch/prepare.py --what=eval writes it)")


def _no_task(name: str) -> niv2.Task:
    raise KeyError(name)

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
    tasks_from: sources.TaskStore | str | os.PathLike,
    *,
    template: str = "T1",
    max_instances: int = 100,
    tasks: Sequence[str] | None = None,
    registry: registry_lib.Registry | None = None,
    max_options: int = 10,
) -> DevRecords:
    """Perplexity records of the dev tasks found in ``tasks_from``: a task store (:func:`dev_task_store`) or a
    folder of task files (a task folder or an NIV2 checkout).

    ``tasks`` defaults to ``registry.dev_set`` (``registry`` defaults to the ALERT registry); ``max_instances`` = 0
    takes every instance; ``max_options``: :func:`dev_options` (0 = none). An unknown ``template`` raises
    ValueError naming the valid ones; a ``tasks_from`` path that is not a folder raises FileNotFoundError; a malformed
    task file raises :class:`niv2.TaskFileError`.
    """
    tmpl = templates.get_template(template)
    if max_instances < 0:
        raise ValueError(f"max_instances must be >= 0 (0 = all), got {max_instances}")
    wanted = list((registry or registry_lib.ALERT).dev_set if tasks is None else tasks)
    store = tasks_from if isinstance(tasks_from, sources.TaskStore) else sources.folder_store(tasks_from)
    present, missing = store.available(wanted)
    records: dict[str, list[tuple[str, str]]] = {}
    for name in present:
        task = store.load(name)
        chosen = task.instances[:max_instances] if max_instances else task.instances
        options = dev_options(registry, task, max_options)
        records[name] = [instance_record(tmpl, task, inst, options) for inst in chosen]
    return DevRecords(records=records, missing=missing)
