"""TFDS builder ``alert_finetune``: the rationale corpora formatted for OPT-FT (``ft``) or OPT-CoT (``cot``) training.

Configs ``alert_finetune/ft`` and ``alert_finetune/cot``; splits ``train`` and ``validation`` (the latter for
perplexity-based checkpoint selection). One record per example (text is utf-8 bytes on read):

* ``prompt``: the fixed finetuning prompt (``data.finetune.format_example``), ``target``: ``" {answer}"`` (ft) or
  ``" {rationale} So the answer is {answer}."`` (cot) -- exactly what the training pipeline consumes,
* ``source`` (corpus name), ``answer``, ``rationale``, ``id`` (record id, '' if none), ``index`` (int64, position
  in its corpus split).

Built from LOCAL inputs only, without TensorFlow: either the corpus folders (``finetune_dir=`` or TFDS ``manual_dir``,
read with ``data.finetune.read_corpus``) or in-memory examples (``examples=``, e.g. ``synthetic_corpus(...)``)::

    path = alert_finetune.build(data_dir, 'cot', finetune_dir=..., corpora=['gsm8k'])
    train = alert_finetune.load_records(data_dir, 'cot', 'train')      # feed to pipeline.make_train_iterator

Validation: ``read_corpus(name, <finetune_dir>/<name>, 'validation')`` (each corpus's published dev split or its hash
holdout of ``train``, disjoint from ``train``; see ``data/finetune.py``). In-memory examples given as one sequence are
split with the same hash rule (``finetune.in_holdout``). Records keep corpus order (shuffling disabled); the training
pipeline shuffles.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from alert_jax.data.tfds import common

__all__ = ["MODES", "AlertFinetune", "build", "load_records"]

MODES = ("ft", "cot")
SPLITS = ("train", "validation")
_DESCRIPTION = "ALERT finetuning corpora (rationale datasets) formatted as prompt/target pairs for FT or CoT training."

log = logging.getLogger(__name__)


class AlertFinetune(common.LocalBuilder):
    """FT / CoT finetuning records (see module docstring). Inputs are builder kwargs, not downloads.

    Args (all optional when only reading an already prepared dataset):
      finetune_dir: folder with one sub-folder per corpus (default: the TFDS ``manual_dir``).
      corpora: corpus names (default: every name in ``finetune.CORPORA`` with a folder in ``finetune_dir``; those
        whose train or validation files are missing are skipped with a warning; listed corpora must be complete).
      examples: instead of reading corpora: ``{'train': [...], 'validation': [...]}`` or one sequence (split with
        ``finetune.in_holdout``) of ``RationaleExample`` s.
      validation_split: the corpus split stored as ``validation`` (default ``'validation'``).
      formatter: ``(example, mode) -> (prompt, target)`` (default: ``data.finetune.format_example``), e.g. to study
        a different finetuning prompt format.
    """

    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="ft", description="target = ' {answer}' (OPT-FT)"),
        tfds.core.BuilderConfig(name="cot", description="target = ' {rationale} So the answer is {answer}.' (OPT-CoT)"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Put the rationale corpora (one folder per corpus) in manual_dir, or pass "
                                    "finetune_dir=.")

    def __init__(
        self,
        *,
        finetune_dir: str | os.PathLike | None = None,
        corpora: Sequence[str] | None = None,
        examples: Mapping[str, Sequence[Any]] | Sequence[Any] | None = None,
        validation_split: str = "validation",
        formatter: Callable[[Any, str], tuple[str, str]] | None = None,
        **kwargs: Any,
    ):
        self._finetune_dir = finetune_dir
        self._corpora = None if corpora is None else list(corpora)
        self._examples = examples
        self._validation_split = validation_split
        self._formatter = formatter
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        return self._local_info(_DESCRIPTION, {
            "prompt": text, "target": text, "source": text, "answer": text, "rationale": text, "id": text,
            "index": np.int64,
        })

    # ---- inputs ------------------------------------------------------------------------------------------------------

    def _in_memory_splits(self) -> dict[str, list[Any]]:
        ex = self._examples
        if isinstance(ex, Mapping):
            unknown = sorted(set(ex) - set(SPLITS))
            if unknown:
                raise ValueError(f"alert_finetune examples: unknown splits {unknown}; use {list(SPLITS)}")
            return {s: list(ex.get(s, [])) for s in SPLITS}
        from alert_jax.data.finetune import in_holdout

        held = [in_holdout(e) for e in ex]  # type: ignore[union-attr]
        return {"train": [e for e, h in zip(ex, held) if not h],  # type: ignore[arg-type]
                "validation": [e for e, h in zip(ex, held) if h]}  # type: ignore[arg-type]

    def _corpus_splits(self, folder: Any) -> dict[str, list[Any]]:
        from alert_jax.data import finetune

        root = epath.Path(folder)
        explicit = self._corpora is not None
        names = self._corpora if explicit else [c for c in finetune.CORPORA if (root / c).is_dir()]
        out: dict[str, list[Any]] = {s: [] for s in SPLITS}
        for name in names:
            try:
                train = finetune.read_corpus(name, os.fspath(root / name), "train")
                val = finetune.read_corpus(name, os.fspath(root / name), self._validation_split)
            except FileNotFoundError as err:
                if explicit:
                    raise
                log.warning("alert_finetune: skipping corpus %s (%s)", name, err)
                continue
            out["train"] += train
            out["validation"] += val
        if not out["train"]:
            raise FileNotFoundError(f"alert_finetune: no training examples read from {root} (corpora: {names})")
        return out

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator[Any]]:
        if self._examples is not None:
            splits = self._in_memory_splits()
        else:
            folder = self._finetune_dir if self._finetune_dir is not None else dl_manager.manual_dir
            splits = self._corpus_splits(folder)
        empty = [s for s in SPLITS if not splits[s]]
        if "train" in empty:
            raise ValueError("alert_finetune: no training examples to write")
        if empty:  # TFDS cannot write an empty split (e.g. a tiny corpus whose hash holdout is empty)
            log.warning("alert_finetune: split(s) %s are empty and are not written", empty)
        return {s: self._generate_examples(splits[s], s) for s in SPLITS if splits[s]}

    def _generate_examples(self, examples: Sequence[Any], split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if self._formatter is None:
            from alert_jax.data.finetune import format_example
        else:
            format_example = self._formatter
        mode = self.builder_config.name
        counters: dict[str, int] = {}
        for ex in examples:
            prompt, target = format_example(ex, mode)
            index = counters.get(ex.source, 0)
            counters[ex.source] = index + 1
            yield f"{ex.source}/{split}/{index}", {
                "prompt": prompt, "target": target, "source": ex.source, "answer": ex.answer,
                "rationale": ex.rationale, "id": str(getattr(ex, "id", "")), "index": index,
            }


def build(
    data_dir: str | os.PathLike,
    mode: str,
    *,
    finetune_dir: str | os.PathLike | None = None,
    corpora: Sequence[str] | None = None,
    examples: Mapping[str, Sequence[Any]] | Sequence[Any] | None = None,
    validation_split: str = "validation",
    formatter: Callable[[Any, str], tuple[str, str]] | None = None,
    overwrite: bool = False,
) -> str:
    """Builds ``alert_finetune/<mode>`` under ``data_dir``; returns the dataset folder. Reuses an existing build
    unless ``overwrite``. Give ``finetune_dir`` (corpus folders) or ``examples`` (in-memory RationaleExamples)."""
    if mode not in MODES:
        raise ValueError(f"alert_finetune mode must be one of {MODES}, got {mode!r}")
    if finetune_dir is None and examples is None:
        raise ValueError("alert_finetune.build needs finetune_dir= (corpus folders) or examples= (RationaleExamples)")
    builder = AlertFinetune(
        finetune_dir=finetune_dir, corpora=corpora, examples=examples, validation_split=validation_split,
        formatter=formatter, config=mode,
        data_dir=os.fspath(data_dir),
    )
    common.prepare(builder, overwrite=overwrite)
    return os.fspath(builder.data_dir)


def load_records(data_dir: str | os.PathLike, mode: str, split: str) -> Any:
    """Data source (``len``, ``[i]`` -> dict with ``prompt``/``target`` bytes, ...) of a prepared split."""
    return common.load_split(data_dir, "alert_finetune", split, config=mode)
