"""Tests for alert_jax.eval.metrics.

Parity: relaxed match and ROUGE-L are compared with an independent re-implementation, written here, of NIV2's
``compute_metrics`` as published (normalisation = lower-case, delete ``string.punctuation``, ``' '.join(split())``;
EM on normalised strings; ROUGE-L F from rouge_score's RougeScorer(['rougeL'], use_stemmer=True); max over
references; mean x100), on 600 seeded random (prediction, references) pairs.
"""

from __future__ import annotations

import math
import random
import string

import pytest
from rouge_score import rouge_scorer

from alert_jax.eval import metrics as M

# ------------------------------------------------------------------------------- reference: NIV2's published definition

_REF_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def niv2_normalize(text: str) -> str:
    text = text.lower()
    text = "".join(c for c in text if c not in set(string.punctuation))
    return " ".join(text.split())


def niv2_em(prediction: str, reference: str) -> bool:
    return niv2_normalize(prediction) == niv2_normalize(reference)


def niv2_rouge(prediction: str, reference: str) -> float:
    return _REF_SCORER.score(prediction=prediction, target=reference)["rougeL"].fmeasure


def niv2_compute_metrics(predictions, references):
    em = sum(max(niv2_em(p, r) for r in refs) for p, refs in zip(predictions, references))
    rl = sum(max(niv2_rouge(p, r) for r in refs) for p, refs in zip(predictions, references))
    n = len(references)
    return {"exact_match": 100.0 * em / n, "rougeL": 100.0 * rl / n}  # NIV2 rounds these to 4 decimals


# ------------------------------------------------------------------------------------------------- random test pairs

WORDS = ["the", "cat", "Cats", "running", "ran", "runs", "answer", "Yes", "no", "(a)", "B", "42", "3.14", "U.S.",
         "don't", "it's", "café", "naïve", "日本", "😀", "—", "«x»", "mortal", "Socrates", "is", "a", "an",
         "generalization", "generalizations", "happily", "happy", "-", "...", "?!", "", "  "]
PUNCT = list(string.punctuation) + ["“", "”", "’", "¿", "…"]


def _sentence(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.06:
        return ""
    if kind < 0.09:
        return rng.choice(["   ", "\n", "...", "?!", "—", "😀"])
    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 8))]
    seps = [rng.choice([" ", " ", " ", "  ", "\n", "\t", ", ", "; "]) for _ in words]
    return "".join(w + s for w, s in zip(words, seps))[: rng.randint(1, 60)]


def _variant(rng: random.Random, text: str) -> str:
    """A surface variant: case change, punctuation inserted/removed, whitespace changed."""
    ops = rng.sample(["upper", "lower", "title", "punct", "space", "strip_punct", "suffix"], k=rng.randint(1, 3))
    for op in ops:
        if op == "upper":
            text = text.upper()
        elif op == "lower":
            text = text.lower()
        elif op == "title":
            text = text.title()
        elif op == "punct" and text:
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(PUNCT) + text[i:]
        elif op == "space":
            text = rng.choice(["", " ", "  ", "\n"]) + text.replace(" ", rng.choice([" ", "  ", "\t"])) + \
                rng.choice(["", " ", "\n"])
        elif op == "strip_punct":
            text = "".join(c for c in text if c not in string.punctuation)
        elif op == "suffix":
            text = text + rng.choice([".", "!", " the", "s", "ing"])
    return text


def make_pairs(n: int, seed: int):
    rng = random.Random(seed)
    preds, refs = [], []
    for _ in range(n):
        pred = _sentence(rng)
        k = rng.randint(1, 4)
        group = []
        for _ in range(k):
            r = rng.random()
            if r < 0.35:
                group.append(_variant(rng, pred))
            elif r < 0.45:
                group.append(pred)
            else:
                group.append(_sentence(rng))
        rng.shuffle(group)
        preds.append(pred)
        refs.append(group)
    return preds, refs


@pytest.fixture(scope="module")
def pairs():
    return make_pairs(600, seed=1234)


def test_generated_pairs_cover_the_interesting_cases(pairs):
    preds, refs = pairs
    assert sum(p == "" for p in preds) >= 10
    assert sum(any(r == "" for r in rs) for rs in refs) >= 10
    assert sum(len(rs) > 1 for rs in refs) >= 300
    assert sum(any(c in string.punctuation for c in p) for p in preds) >= 100
    assert sum(any(ord(c) > 127 for c in p) for p in preds) >= 50
    relaxed = [max(niv2_em(p, r) for r in rs) for p, rs in zip(preds, refs)]
    strict = [max(p.strip() == r.strip() for r in rs) for p, rs in zip(preds, refs)]
    # the relaxed metric differs from the strict one on many pairs, and neither is trivially 0 or 1
    assert 100 < sum(relaxed) < 550 and sum(r and not s for r, s in zip(relaxed, strict)) >= 50


def test_per_instance_parity_with_niv2(pairs):
    preds, refs = pairs
    nonzero_rouge = 0
    for p, rs in zip(preds, refs):
        assert M.relaxed_match(p, rs) == float(max(niv2_em(p, r) for r in rs)), (p, rs)
        expected = max(niv2_rouge(p, r) for r in rs)
        assert abs(M.rouge_l(p, rs) - expected) <= 1e-6, (p, rs)
        assert M.exact_match(p, rs) == float(any(p.strip() == r.strip() for r in rs))
        nonzero_rouge += 0 < expected < 1
    assert nonzero_rouge >= 100
    for p in preds:
        assert M.normalize_answer(p) == niv2_normalize(p)


def test_score_instances_parity_with_niv2_compute_metrics(pairs):
    preds, refs = pairs
    ours = M.score_instances(preds, refs, extract=False)
    ref = niv2_compute_metrics(preds, refs)
    assert set(ours) == set(M.METRICS) == {"exact_match", "relaxed_match", "rougeL", "rougeL_answer",
                                           "niv2_exact_match"}
    assert set(M.ALERT_METRICS) == {"exact_match", "relaxed_match", "rougeL"}
    assert abs(ours["relaxed_match"] - ref["exact_match"]) <= 1e-6
    assert abs(ours["rougeL"] - ref["rougeL"]) <= 1e-6
    strict = 100.0 * sum(any(p.strip() == r.strip() for r in rs) for p, rs in zip(preds, refs)) / len(preds)
    assert abs(ours["exact_match"] - strict) <= 1e-6

    # with answer extraction: EM / relaxed on the extracted answers, ROUGE-L still on the whole prediction
    cot = [f"{p} So the answer is {rs[0]}." if i % 3 == 0 else p for i, (p, rs) in enumerate(zip(preds, refs))]
    ext = M.score_instances(cot, refs)
    answers = [M.extract_answer(c) for c in cot]
    assert abs(ext["relaxed_match"] - niv2_compute_metrics(answers, refs)["exact_match"]) <= 1e-6
    assert abs(ext["rougeL"] - niv2_compute_metrics(cot, refs)["rougeL"]) <= 1e-6
    assert ext["exact_match"] > ours["exact_match"]  # the appended answers are recovered
    # NIV2's own metrics ignore the extraction: its EM on the whole prediction, ROUGE-L of the answer on the answer
    assert abs(ext["niv2_exact_match"] - niv2_compute_metrics(cot, refs)["exact_match"]) <= 1e-6
    assert abs(ext["rougeL_answer"] - niv2_compute_metrics(answers, refs)["rougeL"]) <= 1e-6
    assert abs(ours["rougeL_answer"] - ref["rougeL"]) <= 1e-6  # no extraction: the answer is the prediction


def test_empty_strings_follow_niv2():
    assert M.relaxed_match("", [""]) == 1.0 and niv2_em("", "")
    assert M.relaxed_match("", ["..."]) == 1.0  # punctuation-only reference normalises to ''
    assert M.rouge_l("", [""]) == 0.0 == niv2_rouge("", "")
    assert M.rouge_l("?!", ["?!"]) == 0.0  # no [a-z0-9] tokens -> rouge_score gives 0
    assert M.rouge_l("", ["", "cat"]) == 0.0
    assert M.exact_match("  ", [""]) == 1.0
    with pytest.raises(ValueError, match="at least one reference"):
        M.relaxed_match("x", [])
    with pytest.raises(ValueError, match="instance 1: an instance needs at least one reference"):
        M.score_instances(["a", "b"], [["a"], []])
    with pytest.raises(TypeError, match="list of acceptable answers"):
        M.exact_match("a", "a")
    with pytest.raises(ValueError, match="2 predictions but 1 reference lists"):
        M.score_instances(["a", "b"], [["a"]])
    assert all(math.isnan(v) for v in M.score_instances([], []).values())


def test_normalize_answer_cases():
    assert M.normalize_answer("  The  Answer,\tIS:\n(B)!  ") == "the answer is b"
    assert M.normalize_answer("An apple") == "an apple"  # articles are kept (NIV2 does not remove them)
    # only ASCII punctuation is dropped
    assert M.normalize_answer("“Café” — naïve…") == "“café” — naïve…"
    assert M.normalize_answer("don't-stop") == "dontstop"


@pytest.mark.parametrize("prediction, answer", [
    (" So the answer is 42.", "42"),
    ("So the answer is U.S..", "U.S."),
    ("The answer is: (b) yes.\nQuestion: next one", "(b) yes"),
    ("ANSWER IS   Paris", "Paris"),
    ("First the answer is 3, but wait, the answer is 4.", "4"),
    ("the answer is\n 7 apples.\nmore text", "7 apples"),
    ("So the answer is.", ""),
    ("The answer isn't obvious.\nSecond line", "The answer isn't obvious."),
    (" Paris\nInput: France", "Paris"),
    ("\n\n  blue.  \nred", "blue."),
    ("plain text ending with a dot.", "plain text ending with a dot."),
    ("", ""),
    ("   \n  ", ""),
])
def test_extract_answer(prediction, answer):
    assert M.extract_answer(prediction) == answer


def test_metric_values_on_hand_cases():
    assert M.exact_match(" yes ", ["no", "yes"]) == 1.0
    assert M.exact_match("Yes", ["yes"]) == 0.0 and M.relaxed_match("Yes.", ["yes"]) == 1.0
    # stemming: "running cats" vs "run cat" -> identical stems
    assert M.rouge_l("running cats", ["run cat"]) == pytest.approx(1.0)
    # LCS of 2 tokens out of 3 and 4: P=2/3, R=2/4, F = 2PR/(P+R)
    p, r = 2 / 3, 2 / 4
    assert M.rouge_l("the big dog", ["the small red dog"]) == pytest.approx(2 * p * r / (p + r))
    s = M.score_instances([" So the answer is yes.", "no"], [["yes"], ["No", "nope"]])
    assert s["exact_match"] == pytest.approx(50.0) and s["relaxed_match"] == pytest.approx(100.0)


def test_cot_prediction_answer_metrics_vs_niv2_metrics():
    """A CoT prediction is right for ALERT's answer metrics and wrong for NIV2's exact match of the whole text."""
    values = M.instance_scores([" Birds fly. So the answer is yes."], [["yes"]])
    assert values["exact_match"] == values["relaxed_match"] == values["rougeL_answer"] == [100.0]
    assert values["niv2_exact_match"] == [0.0]
    # whole-prediction ROUGE-L: one common token out of the prediction's 7 (rouge_score keeps [a-z0-9] runs)
    tokens = "birds fly so the answer is yes".split()
    p, r = 1 / len(tokens), 1.0
    assert values["rougeL"] == [pytest.approx(100 * 2 * p * r / (p + r))]
    means = M.score_instances([" So the answer is yes.", "no"], [["yes"], ["no"]])
    assert means["niv2_exact_match"] == 50.0 and means["exact_match"] == 100.0
    per = M.instance_scores(["So the answer is Paris.", "x"], [["paris"], ["y"]])
    assert M.mean_scores(per) == pytest.approx(M.score_instances(["So the answer is Paris.", "x"], [["paris"], ["y"]]))
    assert per["rougeL_answer"] == [100.0, 0.0] and per["exact_match"] == [0.0, 0.0]
