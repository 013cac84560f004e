"""NIV2-format files of an evaluation, for a cross-check with NIV2's official scorer (DESIGN.md section 6).

``<workdir>/niv2/references.jsonl``: one JSON line per evaluated instance,
``{"id", "references", "task_id", "task_category", "track": "default"}`` (the reference file of
allenai/natural-instructions ``eval/automatic/evaluation.py``, as its ``eval/leaderboard/create_reference_file.py``
writes it: ``task_category`` is the task's first category). ``<workdir>/niv2/predictions_<template>.jsonl``: one line
``{"id", "prediction"}`` per instance, the prediction exactly as scored (an overflowing prompt's is ``""``).

Instance ids are NIV2's (``task513-ccea84...``, unique across tasks). When two evaluated tasks share an id (custom
task files), every id of the files is qualified as ``"<task>/<id>"`` so each line stays unique.

Scored with NIV2's ``compute_grouped_metrics`` per ``task_id``, ``predictions_<T>.jsonl`` gives each task's
``exact_match`` = ``scores.json``'s ``niv2_exact_match`` and ``rougeL`` = its ``rougeL`` under template ``T`` (NIV2
rounds to 4 decimals). The published script loops over the ``default`` and ``xlingual`` tracks and divides by zero
on a track without instances: score these files with its ``default`` track only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from etils import epath

from alert_jax.data import niv2
from alert_jax.io.files import atomic_write_text

__all__ = ["write_niv2_files"]

TRACK = "default"


def _read(path: epath.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _lines(rows: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_niv2_files(
    folder: str | os.PathLike,
    tasks: Mapping[str, niv2.Task],
    templates: Sequence[str],
    predictions: Mapping[tuple[str, str], str | os.PathLike],
) -> list[epath.Path]:
    """Writes ``references.jsonl`` and ``predictions_<template>.jsonl`` into ``folder`` (each atomically) from the
    predictions files ``predictions[(task, template)]`` (runner.py's JSONL records: ``id``, ``prediction``,
    ``references``), tasks in ``tasks`` order. Every template's file lists the same instances in the same order;
    a template whose records hold other ids or references than the first raises ``ValueError``. Returns the paths.
    """
    folder = epath.Path(folder)
    records = {(task, t): _read(epath.Path(predictions[(task, t)])) for task in tasks for t in templates}
    all_ids = [str(r["id"]) for task in tasks for r in records[(task, templates[0])]] if templates else []
    qualify = len(set(all_ids)) != len(all_ids)

    def nid(task: str, raw: Any) -> str:
        return f"{task}/{raw}" if qualify else str(raw)

    refs: list[dict[str, Any]] = []
    preds: dict[str, list[dict[str, Any]]] = {t: [] for t in templates}
    for task, spec in tasks.items():
        if not templates:
            break
        first = records[(task, templates[0])]
        for t in templates:
            got = records[(task, t)]
            if [(str(r["id"]), r["references"]) for r in got] != [(str(r["id"]), r["references"]) for r in first]:
                raise ValueError(f"predictions of {task!r} under {t!r} hold other instances than under "
                                 f"{templates[0]!r}")
            preds[t] += [{"id": nid(task, r["id"]), "prediction": r["prediction"]} for r in got]
        category = spec.categories[0] if spec.categories else ""
        refs += [{"id": nid(task, r["id"]), "references": list(r["references"]), "task_id": task,
                  "task_category": category, "track": TRACK} for r in first]
    written = [folder / "references.jsonl"]
    atomic_write_text(written[0], _lines(refs))
    for t in templates:
        written.append(folder / f"predictions_{t}.jsonl")
        atomic_write_text(written[-1], _lines(preds[t]))
    return written
