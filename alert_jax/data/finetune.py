"""The rationale finetuning corpora: splits, the validation holdout, and the fixed finetuning prompt.

``read_corpus(name, directory, split)`` reads one corpus from its ORIGINAL release files under ``directory`` (the
corpus folder, e.g. ``<finetune_dir>/gsm8k``) into :class:`RationaleExample` records; the record formats and the
text normalisation are in :mod:`alert_jax.data.corpora`. ``format_example(ex, mode)`` turns a record into
``(prompt_text, target_text)`` for OPT-FT (``mode='ft'``) or OPT-CoT (``mode='cot'``).

Splits (``available_splits`` lists those present on disk) -- corpus: published split files under the corpus
folder; ``validation`` source:

* gsm8k: ``{split}.jsonl`` (train, test, test_socratic, ...); validation = 5% hash holdout of ``train``.
* aqua_rat: ``{split}.json`` (train, dev, test; ``*.tok.json`` unused); validation = ``dev``.
* ecqa: ``ecqa.jsonl`` + ``cqa/{train,dev}_rand_split.jsonl`` (CommonsenseQA), split ids from
  ``author_split/{train,val,test}_ids.txt`` (without them: ``train``/``val`` = ids of the CQA train/dev files);
  validation = ``val``.
* cos_e: ``v1.0/{split}_rand_split.jsonl`` questions (v1.11 ones when present) + explanations from
  ``v1.11/cose_{split}_v1.11.jsonl``, else ``v1.0/cose_{split}_v1.0.jsonl`` (train, dev); validation = ``dev``.
* esnli: line-aligned ``s1|s2|labels|preproc1_expl_1.{split}``, else ``esnli_{split}.csv`` / ``esnli_{split}_N.csv``
  (train, dev, test); validation = ``dev``.
* strategyqa: ``{split}.json`` (train, dev); validation = ``dev``.
* proofwriter: ``meta-{split}.jsonl`` in the folder, else in ``OWA/depth-5/`` or
  ``proofwriter-dataset-V2020.12.3/OWA/depth-5/`` (train, dev, test); validation = ``dev``.
* math: ``{split}.jsonl`` (e.g. test_subset1000) or the original layout ``{split}/<subject>/<n>.json``;
  validation = 5% hash holdout of ``train``.
* coqa: ``coqa-{split}-v1.0.json`` (train, dev); validation = ``dev``.
* winowhy: ``winowhy.json`` is the ``train`` split; validation = 5% hash holdout of ``train``.

Validation holdout: for corpora without a published dev split, an example is held out iff
``sha256(f"{source}\\n{prompt}")`` mod 100 < 5 -- deterministic, independent of file order, and the same for
records with the same prompt (so GSM8K's ``train_socratic`` holds out the same questions as ``train``). By default
(``holdout=True``) ``train`` (and ``train_socratic``) EXCLUDE the held-out examples, so ``train`` and ``validation``
are disjoint; ``holdout=False`` returns the published file in full (GSM8K train: 7,473).

CoS-E: the v1.11 explanation is used where the id has one, else v1.0's (with the shipped v1.0 questions: train
7,191 v1.11 + 419 v1.0 = 7,610; dev 901 + 49 = 950). Test splits without answers are not offered.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Literal

from etils import epath

from alert_jax.data import corpora
from alert_jax.data.examples import PathLike, RationaleExample

__all__ = [
    "CORPORA", "DEFINITIONS", "DEFAULT_DEFINITION", "PROMPT_FORMAT", "VALIDATION", "HOLDOUT_PERCENT",
    "CorpusNotFoundError", "available_splits", "read_corpus",
    "read_corpora", "format_example", "in_holdout",
]

CORPORA = ("gsm8k", "aqua_rat", "ecqa", "cos_e", "esnli", "strategyqa", "proofwriter", "math", "coqa", "winowhy")

# The one fixed finetuning prompt (NIV2 / template T1 style); the template-memorisation analysis probes it.
PROMPT_FORMAT = "Definition: {definition}\n\nInput: {prompt}\nOutput:"
DEFAULT_DEFINITION = "Answer the question."
DEFINITIONS = {
    "gsm8k": "Solve the grade-school math word problem. What is the final numerical answer?",
    "aqua_rat": "Solve the algebra word problem. Which of the options is the correct answer?",
    "ecqa": "Answer the commonsense question. Which of the options is the correct answer?",
    "cos_e": "Answer the commonsense question. Which of the options is the correct answer?",
    "esnli": "Does the premise entail the hypothesis? Answer entailment, neutral, or contradiction.",
    "strategyqa": "Answer the question with yes or no. The reasoning steps needed are implicit in the question.",
    "proofwriter": "Using only the given facts and rules, is the statement True, False, or Unknown?",
    "math": "Solve the competition mathematics problem. What is the final answer?",
    "coqa": "Read the passage and the conversation about it. What is the answer to the last question?",
    "winowhy": "Which of the two candidates does the pronoun in the sentence refer to?",
}

# Published split used as 'validation', or None: a HOLDOUT_PERCENT hash holdout of 'train'.
VALIDATION: dict[str, str | None] = {
    "gsm8k": None, "aqua_rat": "dev", "ecqa": "val", "cos_e": "dev", "esnli": "dev", "strategyqa": "dev",
    "proofwriter": "dev", "math": None, "coqa": "dev", "winowhy": None,
}
HOLDOUT_PERCENT = 5
_HOLDOUT_SPLITS = ("train", "train_socratic")  # splits the holdout is carved from (corpora with VALIDATION None)

log = logging.getLogger(__name__)

Loader = Callable[[], list[RationaleExample]]


class CorpusNotFoundError(FileNotFoundError):
    """A corpus folder, split or required file is missing; the message names the path and the available splits."""


def in_holdout(example: RationaleExample) -> bool:
    """Whether ``example`` belongs to the validation holdout (hash of source and prompt, ~HOLDOUT_PERCENT %)."""
    digest = hashlib.sha256(f"{example.source}\n{example.prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HOLDOUT_PERCENT


# --------------------------------------------------------------------------------------------------------------------
# Split discovery: {split name: loader} for the files present on disk.


def _stems(directory: epath.Path, suffix: str, exclude: str | None = None) -> list[str]:
    names = [p.name for p in directory.glob(f"*{suffix}") if p.is_file()]
    return sorted(n[: -len(suffix)] for n in names if not (exclude and n.endswith(exclude)))


def _splits_gsm8k(d: epath.Path) -> dict[str, Loader]:
    return {s: (lambda p=d / f"{s}.jsonl": corpora.read_gsm8k(p)) for s in _stems(d, ".jsonl")}


def _splits_aqua(d: epath.Path) -> dict[str, Loader]:
    return {s: (lambda p=d / f"{s}.json": corpora.read_aqua_rat(p)) for s in _stems(d, ".json", ".tok.json")}


def _splits_strategyqa(d: epath.Path) -> dict[str, Loader]:
    return {s: (lambda p=d / f"{s}.json": corpora.read_strategyqa(p)) for s in _stems(d, ".json")}


def _splits_cos_e(d: epath.Path) -> dict[str, Loader]:
    out = {}
    for split in ("train", "dev"):
        questions = [d / v / f"{split}_rand_split.jsonl" for v in ("v1.11", "v1.0")]
        questions = [p for p in questions if p.is_file()]
        explanations = [d / "v1.11" / f"cose_{split}_v1.11.jsonl", d / "v1.0" / f"cose_{split}_v1.0.jsonl"]
        explanations = [p for p in explanations if p.is_file()]
        if questions and explanations:
            out[split] = lambda q=questions[0], e=explanations: corpora.read_cos_e(q, e)
    return out


def _splits_ecqa(d: epath.Path) -> dict[str, Loader]:
    annotations = d / "ecqa.jsonl"
    questions = [d / "cqa" / "train_rand_split.jsonl", d / "cqa" / "dev_rand_split.jsonl"]
    if not annotations.is_file() or not all(p.is_file() for p in questions):
        return {}
    id_files = {p.name[: -len("_ids.txt")]: p for p in (d / "author_split").glob("*_ids.txt")}
    if id_files:
        return {s: (lambda p=p: corpora.read_ecqa(annotations, questions, p)) for s, p in sorted(id_files.items())}
    return {"train": lambda: corpora.read_ecqa(annotations, questions[:1]),
            "val": lambda: corpora.read_ecqa(annotations, questions[1:])}


def _splits_esnli(d: epath.Path) -> dict[str, Loader]:
    out: dict[str, Loader] = {}
    for split in _stems(d, ".csv"):
        base = split.rsplit("_", 1)[0] if split.rsplit("_", 1)[-1].isdigit() else split
        if base.startswith("esnli_"):
            name = base[len("esnli_"):]
            files = sorted(d.glob(f"{base}.csv")) + sorted(d.glob(f"{base}_[0-9]*.csv"))
            out[name] = lambda files=files: corpora.read_esnli_csv(files)
    for path in d.glob("s1.*"):  # line-aligned files win over csv files of the same split
        split = path.name[len("s1."):]
        if all((d / f"{n}.{split}").is_file() for n in ("s2", "labels", "preproc1_expl_1")):
            out[split] = lambda split=split: corpora.read_esnli_lines(d, split)
    return dict(sorted(out.items()))


def _splits_proofwriter(d: epath.Path) -> dict[str, Loader]:
    for base in (d, d / "OWA" / "depth-5", d / "proofwriter-dataset-V2020.12.3" / "OWA" / "depth-5"):
        stems = [s[len("meta-"):] for s in _stems(base, ".jsonl") if s.startswith("meta-")] if base.is_dir() else []
        if stems:
            return {s: (lambda p=base / f"meta-{s}.jsonl": corpora.read_proofwriter(p)) for s in stems}
    return {}


def _splits_math(d: epath.Path) -> dict[str, Loader]:
    out: dict[str, Loader] = {s: (lambda p=d / f"{s}.jsonl": corpora.read_math_jsonl(p)) for s in _stems(d, ".jsonl")}
    for sub in sorted(p for p in d.iterdir() if p.is_dir()):
        if next(sub.glob("*/*.json"), None) is not None:
            out.setdefault(sub.name, lambda sub=sub: corpora.read_math_dir(sub))
    return out


def _splits_coqa(d: epath.Path) -> dict[str, Loader]:
    stems = [s for s in _stems(d, "-v1.0.json") if s.startswith("coqa-")]
    return {s[len("coqa-"):]: (lambda p=d / f"{s}-v1.0.json": corpora.read_coqa(p)) for s in stems}


def _splits_winowhy(d: epath.Path) -> dict[str, Loader]:
    path = d / "winowhy.json"
    return {"train": lambda: corpora.read_winowhy(path)} if path.is_file() else {}


_DISCOVER: dict[str, Callable[[epath.Path], dict[str, Loader]]] = {
    "gsm8k": _splits_gsm8k, "aqua_rat": _splits_aqua, "ecqa": _splits_ecqa, "cos_e": _splits_cos_e,
    "esnli": _splits_esnli, "strategyqa": _splits_strategyqa, "proofwriter": _splits_proofwriter,
    "math": _splits_math, "coqa": _splits_coqa, "winowhy": _splits_winowhy,
}
_EXPECTED = {  # what read_corpus looks for, for error messages
    "gsm8k": "{split}.jsonl", "aqua_rat": "{split}.json", "strategyqa": "{split}.json",
    "ecqa": "ecqa.jsonl, cqa/train_rand_split.jsonl, cqa/dev_rand_split.jsonl and author_split/{split}_ids.txt",
    "cos_e": "v1.0/{split}_rand_split.jsonl and v1.11/cose_{split}_v1.11.jsonl or v1.0/cose_{split}_v1.0.jsonl",
    "esnli": "s1|s2|labels|preproc1_expl_1.{split} or esnli_{split}.csv / esnli_{split}_N.csv",
    "proofwriter": "meta-{split}.jsonl (in the folder, OWA/depth-5/ or "
                   "proofwriter-dataset-V2020.12.3/OWA/depth-5/)",
    "math": "{split}.jsonl or {split}/<subject>/<n>.json", "coqa": "coqa-{split}-v1.0.json",
    "winowhy": "winowhy.json (split 'train')",
}


def _check_name(name: str) -> None:
    if name not in CORPORA:
        raise ValueError(f"unknown finetuning corpus {name!r}; valid names: {', '.join(CORPORA)}")


def _discover(name: str, directory: PathLike) -> tuple[epath.Path, dict[str, Loader]]:
    _check_name(name)
    directory = epath.Path(directory)
    if not directory.is_dir():
        raise CorpusNotFoundError(f"{name}: corpus folder {directory} not found (expected files: {_EXPECTED[name]})")
    return directory, _DISCOVER[name](directory)


def available_splits(name: str, directory: PathLike) -> list[str]:
    """Split names ``read_corpus`` can read from ``directory`` (published ones, plus 'validation' when its source
    is present); [] for an existing folder without the needed files. Unknown name -> ValueError."""
    _, splits = _discover(name, directory)
    names = sorted(splits)
    source = VALIDATION[name] or "train"
    if source in splits and "validation" not in splits:
        names.append("validation")
    return names


def read_corpus(name: str, directory: PathLike, split: str, *, holdout: bool = True) -> list[RationaleExample]:
    """Reads split ``split`` of corpus ``name`` from its folder ``directory`` (e.g. ``<finetune_dir>/gsm8k``).

    ``split`` is a published split name or ``'validation'`` (see the module table). For corpora whose validation
    is a hash holdout, ``train``/``train_socratic`` exclude it unless ``holdout=False``. Records are in file order.
    Raises CorpusNotFoundError (folder/split/file missing; names the path and the available splits),
    CorpusFormatError (malformed record; names file, record and field), ValueError (unknown corpus name).
    """
    directory, splits = _discover(name, directory)
    carved = VALIDATION[name] is None
    derived_validation = split == "validation" and "validation" not in splits
    wanted = (VALIDATION[name] or "train") if derived_validation else split
    if wanted not in splits:
        available = available_splits(name, directory)
        expected = _EXPECTED[name].replace("{split}", wanted)
        raise CorpusNotFoundError(f"{name}: split {split!r} not found in {directory} (looked for {expected}); "
                                  f"available splits: {available or 'none'}")
    examples = splits[wanted]()
    if carved and derived_validation:
        return [ex for ex in examples if in_holdout(ex)]
    if carved and holdout and split in _HOLDOUT_SPLITS:
        return [ex for ex in examples if not in_holdout(ex)]
    return examples


def read_corpora(names: str | Sequence[str], finetune_dir: PathLike, split: str, *, holdout: bool = True,
                 skip_missing: bool = False) -> list[RationaleExample]:
    """``read_corpus`` for several corpora (folders ``<finetune_dir>/<name>``), concatenated in ``names`` order.

    ``names``: a sequence, a comma-separated string, or ``'all'`` (= CORPORA). With ``skip_missing`` a corpus
    whose folder or split is absent is logged and skipped instead of raising CorpusNotFoundError.
    """
    if isinstance(names, str):
        names = CORPORA if names.strip() == "all" else [n.strip() for n in names.split(",") if n.strip()]
    for name in names:
        _check_name(name)
    out: list[RationaleExample] = []
    for name in names:
        try:
            out.extend(read_corpus(name, epath.Path(finetune_dir) / name, split, holdout=holdout))
        except CorpusNotFoundError as e:
            if not skip_missing:
                raise
            log.warning("skipping finetuning corpus %s: %s", name, e)
    return out


def format_example(ex: RationaleExample, mode: Literal["ft", "cot"], *,
                   definition: str | None = None) -> tuple[str, str]:
    """``(prompt_text, target_text)`` for finetuning.

    prompt_text = ``PROMPT_FORMAT`` with the corpus definition (``DEFINITIONS[ex.source]``, else
    ``DEFAULT_DEFINITION``, or ``definition`` when given) and ``ex.prompt``; it ends with ``Output:``.
    target_text: ``'ft'`` -> ``f" {answer}"``; ``'cot'`` -> ``f" {rationale} So the answer is {answer}."``
    (``f" So the answer is {answer}."`` when the rationale is empty).
    """
    if mode not in ("ft", "cot"):
        raise ValueError(f"format_example mode must be 'ft' or 'cot', got {mode!r}")
    if definition is None:
        definition = DEFINITIONS.get(ex.source, DEFAULT_DEFINITION)
    prompt_text = PROMPT_FORMAT.format(definition=definition, prompt=ex.prompt)
    if mode == "ft":
        return prompt_text, f" {ex.answer}"
    if not ex.rationale:
        return prompt_text, f" So the answer is {ex.answer}."
    return prompt_text, f" {ex.rationale} So the answer is {ex.answer}."
