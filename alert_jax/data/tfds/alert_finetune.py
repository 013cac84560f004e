"""TFDS builder ``alert_finetune``: the rationale corpora formatted for OPT-FT (``ft``) or OPT-CoT (``cot``) training.

Configs ``alert_finetune/ft`` and ``alert_finetune/cot``; splits ``train`` and ``validation`` (the latter for
perplexity-based checkpoint selection). One record per example (text is utf-8 bytes on read):

* ``prompt``: the fixed finetuning prompt (``data.finetune.format_example``), ``target``: ``" {answer}"`` (ft) or
  ``" {rationale} So the answer is {answer}."`` (cot) -- exactly what the training pipeline consumes,
* ``source`` (corpus name), ``answer``, ``rationale``, ``id`` (record id, '' if none), ``index`` (int64, position
  in its corpus split),
* ``prompt_ids`` / ``target_ids`` (int32 ``[n]``): ``tokenizer.encode(prompt)`` / ``encode(target)`` (no bos, not
  truncated) when the build was given a ``tokenizer=``, else empty. Packing needs nothing else
  (``packing.build_example`` adds bos/eos and truncates to the run's ``seq_len``): the records are ready to pack.

Dataset metadata (``info.metadata``, ``metadata.json``): ``tokenizer_fingerprint`` (``io.tokenizers.fingerprint`` of
the tokenizer that made the ids, '' = text only), ``tokenizer`` (its description) and ``inputs`` (what the records were
built from, e.g. the corpus spec; :func:`open_prepared` readers compare it with their settings).

Built from LOCAL inputs only, without TensorFlow: either the corpus folders (``finetune_dir=`` or TFDS ``manual_dir``,
read with ``data.finetune.read_corpus``) or in-memory examples (``examples=``, e.g. ``synthetic_corpus(...)``)::

    path = alert_finetune.build(data_dir, 'cot', finetune_dir=..., corpora=['gsm8k'], tokenizer=tok)
    train = alert_finetune.load_records(data_dir, 'cot', 'train')      # feed to pipeline.make_train_iterator
    prepared = alert_finetune.open_prepared(data_dir, 'cot')           # train records (ids or text) + metadata

Validation: ``read_corpus(name, <finetune_dir>/<name>, 'validation')`` (each corpus's published dev split or its hash
holdout of ``train``, disjoint from ``train``; see ``data/finetune.py``). In-memory examples given as one sequence are
split with the same hash rule (``finetune.in_holdout``). Records keep corpus order (shuffling disabled); the training
pipeline shuffles.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from alert_jax.data.tfds import common

__all__ = ["MODES", "AlertFinetune", "FinetuneRecords", "Prepared", "build", "load_records", "open_prepared"]

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
      tokenizer: when given, ``prompt_ids`` / ``target_ids`` hold its ids and the metadata its fingerprint.
      inputs: JSON-serialisable description of the inputs, stored in the metadata (``inputs``).
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "prompt_ids / target_ids and the tokenizer metadata."}

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
        tokenizer: Any = None,
        inputs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        self._tokenizer = tokenizer
        self._inputs = dict(inputs or {})
        self._finetune_dir = finetune_dir
        self._corpora = None if corpora is None else list(corpora)
        self._examples = examples
        self._validation_split = validation_split
        self._formatter = formatter
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        text = tfds.features.Text()
        ids = tfds.features.Tensor(shape=(None,), dtype=np.int32)
        building = self._finetune_dir is not None or self._examples is not None or self._tokenizer is not None
        # Only a build states the metadata; a reader gets the stored one (TFDS restores metadata.json).
        metadata = tfds.core.MetadataDict(_metadata(self._tokenizer, self._inputs)) if building else None
        return self._local_info(_DESCRIPTION, {
            "prompt": text, "target": text, "source": text, "answer": text, "rationale": text, "id": text,
            "index": np.int64, "prompt_ids": ids, "target_ids": ids,
        }, metadata=metadata)

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
        tok = self._tokenizer
        counters: dict[str, int] = {}
        for ex in examples:
            prompt, target = format_example(ex, mode)
            index = counters.get(ex.source, 0)
            counters[ex.source] = index + 1
            yield f"{ex.source}/{split}/{index}", {
                "prompt": prompt, "target": target, "source": ex.source, "answer": ex.answer,
                "rationale": ex.rationale, "id": str(getattr(ex, "id", "")), "index": index,
                "prompt_ids": _ids(tok, prompt), "target_ids": _ids(tok, target),
            }


def _ids(tokenizer: Any, text: str) -> np.ndarray:
    """``tokenizer.encode(text)`` (no bos) as int32, or an empty array without a tokenizer."""
    if tokenizer is None:
        return np.zeros((0,), np.int32)
    return np.asarray(tokenizer.encode(text, add_bos=False), np.int32)


def _metadata(tokenizer: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    if tokenizer is None:
        return {"tokenizer": "", "tokenizer_fingerprint": "", "inputs": dict(inputs)}
    from alert_jax.io.tokenizers import fingerprint

    return {"tokenizer": repr(tokenizer), "tokenizer_fingerprint": fingerprint(tokenizer), "inputs": dict(inputs)}


def build(
    data_dir: str | os.PathLike,
    mode: str,
    *,
    finetune_dir: str | os.PathLike | None = None,
    corpora: Sequence[str] | None = None,
    examples: Mapping[str, Sequence[Any]] | Sequence[Any] | None = None,
    validation_split: str = "validation",
    formatter: Callable[[Any, str], tuple[str, str]] | None = None,
    tokenizer: Any = None,
    inputs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Builds ``alert_finetune/<mode>`` under ``data_dir``; returns the dataset folder. Reuses an existing build
    unless ``overwrite``. Give ``finetune_dir`` (corpus folders) or ``examples`` (in-memory RationaleExamples);
    ``tokenizer`` adds the token ids, ``inputs`` describes the inputs (both in the metadata, see the module doc)."""
    if mode not in MODES:
        raise ValueError(f"alert_finetune mode must be one of {MODES}, got {mode!r}")
    if finetune_dir is None and examples is None:
        raise ValueError("alert_finetune.build needs finetune_dir= (corpus folders) or examples= (RationaleExamples)")
    builder = AlertFinetune(
        finetune_dir=finetune_dir, corpora=corpora, examples=examples, validation_split=validation_split,
        formatter=formatter, tokenizer=tokenizer, inputs=inputs, config=mode,
        data_dir=os.fspath(data_dir),
    )
    common.prepare(builder, overwrite=overwrite)
    return os.fspath(builder.data_dir)


def load_records(data_dir: str | os.PathLike, mode: str, split: str) -> Any:
    """Data source (``len``, ``[i]`` -> dict with ``prompt``/``target`` bytes, ...) of a prepared split."""
    return common.load_split(data_dir, "alert_finetune", split, config=mode)


class FinetuneRecords(Sequence):
    """Random-access training records of a prepared split, as :mod:`alert_jax.data.pipeline` consumes them.

    ``[i]`` is ``{'prompt': str, 'target': str}`` plus, when ``with_ids``, ``token_ids`` = ``(prompt_ids,
    target_ids)`` (int32 ``[n]`` each), which ``pipeline.tokenize_record`` packs instead of re-encoding the text (the
    caller checks the tokenizer: ``train.records.check_token_ids``). ``[a:b]`` is a list of those. Only the records
    asked for are read (each host reads its own shard).
    """

    def __init__(self, source: Any, with_ids: bool):
        self._source = source
        self.with_ids = bool(with_ids)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return _training_record(self._source[int(index)], self.with_ids)


def _training_record(raw: Mapping[str, Any], with_ids: bool) -> dict[str, Any]:
    record: dict[str, Any] = {"prompt": common.text(raw["prompt"]), "target": common.text(raw["target"])}
    if with_ids:
        record["token_ids"] = (np.asarray(raw["prompt_ids"], np.int32), np.asarray(raw["target_ids"], np.int32))
    return record


@dataclasses.dataclass
class Prepared:
    """A prepared ``alert_finetune/<mode>``: ``train`` records, every ``validation`` record as
    ``(source, record)`` in stored order (empty when the split was not written), and the dataset ``metadata``
    (``tokenizer``, ``tokenizer_fingerprint`` ('' = text only), ``inputs``)."""

    path: str
    train: FinetuneRecords
    validation: list[tuple[str, dict[str, Any]]]
    metadata: dict[str, Any]


def open_prepared(data_dir: str | os.PathLike, mode: str) -> Prepared:
    """The prepared ``alert_finetune/<mode>`` under ``data_dir`` (``FileNotFoundError`` naming the folder if
    absent; local or ``gs://`` paths)."""
    if mode not in MODES:
        raise ValueError(f"alert_finetune mode must be one of {MODES}, got {mode!r}")
    path = common.dataset_dir(data_dir, "alert_finetune", mode)
    builder = tfds.builder_from_directory(path)
    metadata = dict(builder.info.metadata or {})
    with_ids = bool(metadata.get("tokenizer_fingerprint"))
    train = FinetuneRecords(builder.as_data_source(split="train"), with_ids)
    validation: list[tuple[str, dict[str, Any]]] = []
    if "validation" in builder.info.splits:
        source = builder.as_data_source(split="validation")
        for i in range(len(source)):
            raw = source[i]
            validation.append((common.text(raw["source"]), _training_record(raw, with_ids)))
    return Prepared(path=path, train=train, validation=validation, metadata=metadata)
