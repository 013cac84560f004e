"""TFDS builder ``alert_eval``: the ALERT evaluation instances, one record per (task, instance), in array_record.

Built from LOCAL NIV2 task files (a task folder or NIV2 checkout: ``niv2_dir=`` builder kwarg, or TFDS's
``manual_dir``); nothing is downloaded and TensorFlow is not needed::

    from alert_jax.data.tfds import alert_eval
    path = alert_eval.build(data_dir, niv2_dir, tasks=[...])          # or AlertEval(...) + download_and_prepare
    test = tfds.data_source('alert_eval', data_dir=data_dir)['test']  # or common.load_split(data_dir, 'alert_eval',
                                                                      #    'test')

Split ``test`` holds every instance of every selected task, in task order then file order (shuffling disabled), so
"the first N instances of a task" are the records with ``instance_index < N``. Fields (text is utf-8 bytes on read):

* ``task``, ``skill`` ('' if the task is not in the registry), ``in_domain`` (bool), ``definition``,
* ``instance_id``, ``instance_index`` (int32, position in the task file), ``input``, ``outputs`` (list of references),
* ``positive_examples``: ``{input, output, explanation}`` lists (the few-shot demonstrations, never scored),
* ``categories``, ``reasoning``, ``source`` (lists of strings from the task file),
* ``digest``: sha256 (hex) of the task file's bytes (``niv2.Task.digest``; evaluation's provenance key).

Build it with every instance of each task (the default): answer options are derived from all of a task's outputs,
so :func:`load_tasks` gives back the same :class:`~alert_jax.data.niv2.Task` s (minus negative examples, domains and
licenses, which evaluation does not use) and evaluation renders the same prompts as from the files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from alert_jax.data.tfds import common

__all__ = ["AlertEval", "build", "load_tasks", "registry_skills"]

_DESCRIPTION = "ALERT evaluation set: NIV2 reasoning task instances with definitions and demonstrations."


def registry_skills() -> dict[str, tuple[str, bool]]:
    """``{task name: (skill, in_domain)}`` from the ALERT registry (``data/registry.py``); empty if it is
    unavailable."""
    try:
        from alert_jax.data import registry
    except ImportError:  # pragma: no cover - the registry module is part of the package
        return {}
    return {d.name: (d.skill, bool(d.in_domain)) for d in registry.DATASETS}


class AlertEval(common.LocalBuilder):
    """NIV2 task instances for evaluation (see module docstring). Inputs are builder kwargs, not downloads.

    Args (all optional when only reading an already prepared dataset):
      niv2_dir: task folder or NIV2 checkout (default: the TFDS ``manual_dir``).
      tasks: task names to include (default: every ``*.json`` task in the folder).
      max_instances: keep at most this many instances per task (default: all).
      skills: ``{task: skill}`` or ``{task: (skill, in_domain)}`` (default: the ALERT registry).
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Put the NIV2 task files (<task name>.json) in manual_dir, or pass niv2_dir=."
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "digest: sha256 of the task file."}

    def __init__(
        self,
        *,
        niv2_dir: str | os.PathLike | None = None,
        tasks: Sequence[str] | None = None,
        max_instances: int | None = None,
        skills: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        self._niv2_dir = niv2_dir
        self._tasks = None if tasks is None else list(tasks)
        self._max_instances = max_instances
        self._skills = skills
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        return self._local_info(
            _DESCRIPTION,
            {
                "task": text,
                "skill": text,
                "in_domain": np.bool_,
                "definition": text,
                "instance_id": text,
                "instance_index": np.int32,
                "input": text,
                "outputs": tfds.features.Sequence(text),
                "positive_examples": tfds.features.Sequence({"input": text, "output": text, "explanation": text}),
                "categories": tfds.features.Sequence(text),
                "reasoning": tfds.features.Sequence(text),
                "source": tfds.features.Sequence(text),
                "digest": text,
            },
            homepage="https://github.com/allenai/natural-instructions",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator[Any]]:
        from alert_jax.data import niv2

        folder = self._niv2_dir if self._niv2_dir is not None else dl_manager.manual_dir
        names = self._tasks if self._tasks is not None else niv2.list_tasks(folder)
        if not names:
            raise FileNotFoundError(f"alert_eval: no NIV2 task files (*.json) found in {folder}")
        tasks = niv2.load_tasks(names, folder)
        return {"test": self._generate_examples(list(tasks.values()))}

    def _skill(self, name: str) -> tuple[str, bool]:
        table: Mapping[str, Any] = self._skills if self._skills is not None else registry_skills()
        value = table.get(name, ("", False))
        return (value, False) if isinstance(value, str) else (str(value[0]), bool(value[1]))

    def _generate_examples(self, tasks: Sequence[Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        for task in tasks:
            skill, in_domain = self._skill(task.name)
            demos = {
                "input": [e.input for e in task.positive_examples],
                "output": [e.output for e in task.positive_examples],
                "explanation": [e.explanation for e in task.positive_examples],
            }
            instances = task.instances if self._max_instances is None else task.instances[: self._max_instances]
            for index, inst in enumerate(instances):
                yield f"{task.name}/{index}", {
                    "task": task.name,
                    "skill": skill,
                    "in_domain": in_domain,
                    "definition": task.definition,
                    "instance_id": inst.id,
                    "instance_index": index,
                    "input": inst.input,
                    "outputs": list(inst.outputs),
                    "positive_examples": demos,
                    "categories": list(task.categories),
                    "reasoning": list(task.reasoning),
                    "source": list(task.source),
                    "digest": task.digest,
                }


def build(
    data_dir: str | os.PathLike,
    niv2_dir: str | os.PathLike,
    *,
    tasks: Sequence[str] | None = None,
    max_instances: int | None = None,
    skills: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Builds ``alert_eval`` under ``data_dir`` from local task files; returns the dataset folder.

    An existing build in ``data_dir`` is reused unless ``overwrite=True``.
    """
    builder = AlertEval(niv2_dir=niv2_dir, tasks=tasks, max_instances=max_instances, skills=skills,
                        data_dir=os.fspath(data_dir))
    common.prepare(builder, overwrite=overwrite)
    return os.fspath(builder.data_dir)


def load_tasks(data_dir: str | os.PathLike) -> dict[str, Any]:
    """The prepared ``alert_eval`` under ``data_dir`` as ``{task name: niv2.Task}`` in stored order: definition,
    positive examples, instances (id, input, outputs), categories, reasoning, source and digest as in the task files;
    ``path`` names the dataset folder. Every record is read (evaluation sets are small)."""
    from alert_jax.data import niv2

    source = common.load_split(data_dir, "alert_eval", "test")
    path = common.dataset_dir(data_dir, "alert_eval")
    tasks: dict[str, niv2.Task] = {}
    for i in range(len(source)):
        rec = source[i]
        name = common.text(rec["task"])
        if name not in tasks:
            demos = common.examples_dict(rec["positive_examples"])
            tasks[name] = niv2.Task(
                name=name, definition=common.text(rec["definition"]),
                positive_examples=[niv2.Example(d["input"], d["output"], d["explanation"]) for d in demos],
                negative_examples=[], instances=[], categories=common.texts(rec["categories"]),
                reasoning=common.texts(rec["reasoning"]), source=common.texts(rec["source"]),
                path=f"{path}#{name}", digest=common.text(rec["digest"]) if "digest" in rec else "",
            )
        tasks[name].instances.append(niv2.Instance(common.text(rec["instance_id"]), common.text(rec["input"]),
                                                   common.texts(rec["outputs"])))
    return tasks
