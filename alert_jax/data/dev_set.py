"""Dev-set perplexity records: the registry's dev tasks as ``(prompt, target)`` pairs for teacher-forced validation.

DESIGN.md section 5 validates finetuning runs on each corpus's validation split *and on the dev set* (the registry's
three dev tasks, :data:`alert_jax.data.alert.DEV_SET`, never among the evaluation datasets). The training loop
measures the dev set the same way as the corpora: the mean cross-entropy of the target tokens given the prompt.

Record format (:func:`dev_records`), per dev task whose file is in ``niv2_dir``, for its first ``max_instances``
instances in file order (like evaluation, which scores the first N):

* prompt = ``templates.render(template, task, instance).text`` (no context fitting: the packer truncates an
  over-long example from the left, as for the corpora). The default template T1 (``Definition: ...\\n\\nInput:
  ...\\nOutput:``) is the fixed finetuning prompt of ``data/finetune.py``, so dev perplexity measures the
  finetuning format on unseen tasks.
* target = ``" " + outputs[0].strip()``: the instance's first reference, spaced like the finetuning targets
  (``format_example`` targets start with one space after ``Output:``).

Missing task files are not an error: they are returned in :attr:`DevRecords.missing` so the caller can name them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from alert_jax.data import alert, niv2, templates

__all__ = ["DevRecords", "dev_records", "instance_record"]


@dataclasses.dataclass
class DevRecords:
    """``records``: task name -> ``[(prompt, target), ...]`` (registry order, tasks with a file only);
    ``missing``: dev tasks without a file in the folder (registry order)."""

    records: dict[str, list[tuple[str, str]]]
    missing: list[str]


def instance_record(template: str | templates.Template, task: niv2.Task, instance: niv2.Instance) -> tuple[str, str]:
    """``(prompt, target)`` of one instance: the rendered prompt and ``" "`` + its first reference (stripped)."""
    return templates.render(template, task, instance).text, " " + instance.outputs[0].strip()


def dev_records(
    niv2_dir: str | os.PathLike,
    *,
    template: str = "T1",
    max_instances: int = 100,
    tasks: Sequence[str] | None = None,
    registry: alert.Registry | None = None,
) -> DevRecords:
    """Perplexity records of the dev tasks found in ``niv2_dir`` (a task folder or an NIV2 checkout).

    ``tasks`` defaults to ``registry.dev_set`` (``registry`` defaults to :data:`alert.ALERT`); ``max_instances`` = 0
    takes every instance. An unknown ``template`` raises ValueError naming the valid ones; a ``niv2_dir`` that is
    not a folder raises FileNotFoundError; a malformed task file raises :class:`niv2.TaskFileError`.
    """
    tmpl = templates.get_template(template)
    if max_instances < 0:
        raise ValueError(f"max_instances must be >= 0 (0 = all), got {max_instances}")
    wanted = list((registry or alert.ALERT).dev_set if tasks is None else tasks)
    present, missing = alert.available(registry, niv2_dir, wanted)
    records: dict[str, list[tuple[str, str]]] = {}
    for name in present:
        task = niv2.load_task(name, niv2_dir)
        chosen = task.instances[:max_instances] if max_instances else task.instances
        records[name] = [instance_record(tmpl, task, inst) for inst in chosen]
    return DevRecords(records=records, missing=missing)
