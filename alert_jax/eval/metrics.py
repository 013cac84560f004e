"""Answer extraction and the evaluation metrics (DESIGN.md section 6), aligned with NIV2's published scorer.

NIV2's scorer (allenai/natural-instructions, ``eval/automatic/evaluation.py``, ``compute_metrics``) defines:

* ``normalize_answer``: lower-case, then delete every character of ``string.punctuation`` (ASCII punctuation only),
  then collapse whitespace (``' '.join(s.split())``, which also strips both ends). Articles are *not* removed
  (unlike SQuAD's normalisation, from which it is adapted).
* its "exact_match" is equality of the normalised strings -- what ALERT calls **relaxed match**;
* ``rougeL``: ``rouge_score`` ``RougeScorer(['rougeL'], use_stemmer=True)`` F-measure (the default English track;
  its tokenizer keeps only ``[a-z0-9]`` runs of the lower-cased text, so text without such characters scores 0);
* each metric is the max over the instance's references, then the mean over instances, x100.

Empty strings behave exactly as there: an empty prediction equals an empty (or punctuation-only) reference under
normalisation (relaxed match 1) but always has ROUGE-L 0 (rouge_score returns 0 when either side has no tokens).
An instance with no references is an error (NIV2 fails on it too, with a bare ``max()`` error).

ALERT adds **exact match** (``answer.strip() == reference.strip()``) and answer extraction: exact and relaxed match
are computed on :func:`extract_answer` of the prediction, ROUGE-L on the whole prediction (:data:`ALERT_METRICS`,
the report's three). :data:`METRICS` adds ``rougeL_answer`` (ROUGE-L of the extracted answer) and
``niv2_exact_match`` (NIV2's exact match: relaxed match of the whole prediction, no extraction); with ``rougeL``
these two equal NIV2's scorer on the same predictions.
NIV2 rounds its means to 4 decimals; :func:`score_instances` does not round.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Sequence

from rouge_score import rouge_scorer

__all__ = [
    "normalize_answer",
    "extract_answer",
    "exact_match",
    "relaxed_match",
    "rouge_l",
    "instance_scores",
    "mean_scores",
    "score_instances",
    "ALERT_METRICS",
    "METRICS",
]

ALERT_METRICS = ("exact_match", "relaxed_match", "rougeL")  # ALERT's three, shown in report.md
METRICS = ALERT_METRICS + ("rougeL_answer", "niv2_exact_match")  # all five, in scores.json

_PUNCT = frozenset(string.punctuation)
_ANSWER_IS = re.compile(r"\banswer is\b", re.IGNORECASE)


@functools.cache
def _scorer() -> rouge_scorer.RougeScorer:
    # Built on first use: its constructor logs a line, which importing this module (every launcher does) must not.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def normalize_answer(s: str) -> str:
    """NIV2's normalisation: ``s.lower()``, drop ASCII punctuation characters, collapse/strip whitespace."""
    lowered = s.lower()
    no_punct = "".join(ch for ch in lowered if ch not in _PUNCT)
    return " ".join(no_punct.split())


def extract_answer(prediction: str) -> str:
    """The answer part of a generated prediction, used by exact and relaxed match.

    * If the prediction contains ``"answer is"`` (case-insensitive, as whole words: not ``"answer isn't"`` nor
      ``"reanswer is"``), take the text after its LAST occurrence; drop
      leading whitespace and colons (``"answer is: X"``); keep only the first line of what remains; strip surrounding
      whitespace; then remove ONE trailing ``"."`` -- the full stop of the CoT target format ``"... So the answer is
      {answer}."``, so an answer that itself ends with a dot (``"U.S."``) is recovered exactly from ``"U.S.."``.
    * Otherwise: the first non-empty line of the prediction, stripped (a generation may begin with a newline).
      No full stop is removed in this case.

    Examples: ``" So the answer is 42."`` -> ``"42"``; ``"The answer is: (b) yes.\\nQuestion: ..."`` -> ``"(b) yes"``;
    ``" Paris\\nInput: ..."`` -> ``"Paris"``; ``""`` -> ``""``.
    """
    matches = list(_ANSWER_IS.finditer(prediction))
    if matches:
        tail = prediction[matches[-1].end():].lstrip(" \t\r\n\f\v:")
        answer = tail.split("\n", 1)[0].strip()
        return answer[:-1].rstrip() if answer.endswith(".") else answer
    for line in prediction.split("\n"):
        if line.strip():
            return line.strip()
    return ""


def _check_refs(references: Sequence[str]) -> None:
    if isinstance(references, str):
        raise TypeError("references must be a list of acceptable answers, not a single string")
    if len(references) == 0:
        raise ValueError("an instance needs at least one reference answer (NIV2 takes the max over references)")


def exact_match(answer: str, references: Sequence[str]) -> float:
    """1.0 if ``answer.strip() == ref.strip()`` for some reference, else 0.0."""
    _check_refs(references)
    a = answer.strip()
    return float(any(a == r.strip() for r in references))


def relaxed_match(answer: str, references: Sequence[str]) -> float:
    """1.0 if ``normalize_answer(answer) == normalize_answer(ref)`` for some reference, else 0.0 (NIV2's EM)."""
    _check_refs(references)
    a = normalize_answer(answer)
    return float(any(a == normalize_answer(r) for r in references))


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """Max over references of the ROUGE-L F-measure (rouge_score, stemming, default tokenizer), in [0, 1]."""
    _check_refs(references)
    return max(_scorer().score(target=r, prediction=prediction)["rougeL"].fmeasure for r in references)


def instance_scores(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    extract: bool = True,
) -> dict[str, list[float]]:
    """Per-instance values (each 0..100) of every metric in :data:`METRICS`: ``{metric: [value of instance i]}``.

    ``predictions[i]`` is the generated text of instance ``i`` and ``references[i]`` its list of acceptable answers.
    With ``extract`` (default) exact/relaxed match and ``rougeL_answer`` use :func:`extract_answer` of the
    prediction; with ``extract=False`` they use the prediction as is. ``rougeL`` and ``niv2_exact_match`` always use
    the whole prediction. Example: ``instance_scores([" So the answer is yes."], [["yes"]])`` gives 100 for
    exact/relaxed match and ``rougeL_answer``, 0 for ``niv2_exact_match`` and 33.3 for ``rougeL``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
    out: dict[str, list[float]] = {m: [] for m in METRICS}
    for i, (pred, refs) in enumerate(zip(predictions, references)):
        try:
            answer = extract_answer(pred) if extract else pred
            values = {
                "exact_match": exact_match(answer, refs),
                "relaxed_match": relaxed_match(answer, refs),
                "rougeL": rouge_l(pred, refs),
                "rougeL_answer": rouge_l(answer, refs),
                "niv2_exact_match": relaxed_match(pred, refs),
            }
        except (TypeError, ValueError) as e:
            raise type(e)(f"instance {i}: {e}") from e
        for m in METRICS:
            out[m].append(100.0 * values[m])
    return out


def score_instances(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    extract: bool = True,
) -> dict[str, float]:
    """Mean over instances of :func:`instance_scores`, x100: ``{metric: mean}`` for every metric in :data:`METRICS`.

    With ``extract=False``, ``relaxed_match``/``rougeL`` equal NIV2's ``compute_metrics`` ``exact_match``/``rougeL``
    (before its rounding to 4 decimals); ``niv2_exact_match``/``rougeL`` always do. An empty list of instances gives
    NaN for every metric.
    """
    return mean_scores(instance_scores(predictions, references, extract=extract))


def mean_scores(values: dict[str, Sequence[float]]) -> dict[str, float]:
    """``{metric: mean of its per-instance values}`` (NaN for no instances), from :func:`instance_scores`."""
    return {m: (sum(v) / len(v) if len(v) else float("nan")) for m, v in values.items()}
