"""Tests for the rationale corpora readers (alert_jax.data.corpora) and their API (alert_jax.data.finetune).

Real release files come from the ``finetune_data_dir`` fixture (skipped when absent); expected values are computed
from the raw records with plain json/regex here. ECQA, ProofWriter, CoQA (absent from the shared data), MATH's
per-problem layout and e-SNLI's csv files are tested on hand-written fixtures in tests/fixtures/finetune/.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import shutil

import pytest

from alert_jax.data import corpora
from alert_jax.data.examples import CorpusFormatError, RationaleExample
from alert_jax.data.finetune import (
    CORPORA,
    DEFINITIONS,
    CorpusNotFoundError,
    available_splits,
    format_example,
    in_holdout,
    read_corpora,
    read_corpus,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "finetune"


def _jsonl(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


@functools.lru_cache(maxsize=None)
def _real(folder: pathlib.Path, split: str, holdout: bool = True) -> tuple[RationaleExample, ...]:
    """``read_corpus`` on a real corpus folder (named like the corpus), cached across tests (the files are large)."""
    return tuple(read_corpus(folder.name, folder, split, holdout=holdout))


# --------------------------------------------------------------------------------------------------------------------
# Real release files


def test_published_split_counts(finetune_data_dir):
    d = finetune_data_dir
    assert len(_real(d / "gsm8k", "train", holdout=False)) == 7473
    assert len(_real(d / "gsm8k", "test")) == 1319
    assert len(_real(d / "gsm8k", "test_socratic")) == 1319
    assert len(_real(d / "strategyqa", "dev")) == 229
    assert len(_real(d / "strategyqa", "train")) == 2061
    assert len(_real(d / "aqua_rat", "dev")) == 254
    assert len(_real(d / "esnli", "dev")) == 9842
    assert len(_real(d / "math", "test_subset1000")) == 1000


def test_validation_is_published_dev_split(finetune_data_dir):
    d = finetune_data_dir
    for name in ("strategyqa", "aqua_rat", "cos_e"):
        assert read_corpus(name, d / name, "validation") == read_corpus(name, d / name, "dev")


def test_gsm8k_holdout_partitions_train(finetune_data_dir):
    d = finetune_data_dir / "gsm8k"
    full = _real(d, "train", holdout=False)
    train = _real(d, "train")
    validation = _real(d, "validation")
    assert len(train) + len(validation) == len(full)
    assert {e.id for e in train}.isdisjoint({e.id for e in validation})
    assert 0.03 < len(validation) / len(full) < 0.07
    assert [e.id for e in validation] == [e.id for e in _real(d, "validation")]  # deterministic
    assert all(in_holdout(e) for e in validation) and not any(in_holdout(e) for e in train)
    assert "validation" in available_splits("gsm8k", d) and "train" in available_splits("gsm8k", d)


def test_gsm8k_first_train_record_exact(finetune_data_dir):
    raw = _jsonl(finetune_data_dir / "gsm8k" / "train.jsonl")[0]
    ex = _real(finetune_data_dir / "gsm8k", "train", holdout=False)[0]
    steps, final = raw["answer"].split("####")
    lines = [line.strip() for line in re.sub(r"<<.*?>>", "", steps).splitlines() if line.strip()]
    assert ex.prompt == raw["question"]
    assert ex.rationale == " ".join(lines)  # every line of this record already ends with a period
    assert "<<" not in ex.rationale and ex.answer == final.strip() and ex.source == "gsm8k"


def _last_boxed_simple(solution: str) -> str:
    """Independent reference: from the last '\\boxed{', count braces until they balance."""
    start = solution.rindex("\\boxed{") + len("\\boxed{")
    depth = 1
    for i in range(start, len(solution)):
        depth += {"{": 1, "}": -1}.get(solution[i], 0)
        if depth == 0:
            return solution[start:i].strip()
    raise AssertionError("unbalanced")


def test_math_boxed_answers_match_reference(finetune_data_dir):
    raw = _jsonl(finetune_data_dir / "math" / "test_subset1000.jsonl")
    examples = _real(finetune_data_dir / "math", "test_subset1000")
    assert [e.prompt for e in examples] == [r["problem"].strip() for r in raw]
    assert [e.answer for e in examples] == [" ".join(_last_boxed_simple(r["solution"]).split()) for r in raw]
    nested = [e for e in examples if "{" in e.answer]
    assert len(nested) > 50  # e.g. \frac{5}{54}
    assert any(r["solution"].count("\\boxed") > 1 for r in raw)
    assert examples[0].rationale == " ".join(raw[0]["solution"].split())


def test_aqua_first_record(finetune_data_dir):
    raw = _jsonl(finetune_data_dir / "aqua_rat" / "dev.json")[:2]
    examples = _real(finetune_data_dir / "aqua_rat", "dev")[:2]
    for rec, ex in zip(raw, examples):
        options = {o[0]: o[2:].strip() for o in rec["options"]}
        assert ex.answer == options[rec["correct"]]
        assert ex.prompt.startswith(rec["question"].strip() + "\nOptions: (A) ")
        assert all(f"({k}) {v}" in ex.prompt for k, v in options.items())
        first_line = rec["rationale"].splitlines()[0].strip()
        assert ex.rationale.startswith(first_line) and "\n" not in ex.rationale
        last_line = rec["rationale"].strip().splitlines()[-1]
        assert rec["correct"] in last_line  # the published rationale restates the letter ...
        assert not re.search(r"answer\W*[A-E]\W*$", ex.rationale, re.IGNORECASE)  # ... which is removed


def test_strategyqa_first_record(finetune_data_dir):
    raw = json.loads((finetune_data_dir / "strategyqa" / "dev.json").read_text())[0]
    ex = _real(finetune_data_dir / "strategyqa", "dev")[0]
    facts = [f.strip() if f.strip().endswith(".") else f.strip() + "." for f in raw["facts"]]
    assert (ex.prompt, ex.rationale, ex.answer, ex.id) == (
        raw["question"], " ".join(facts), "yes" if raw["answer"] else "no", raw["qid"])


def test_esnli_records_align_with_lines(finetune_data_dir):
    d = finetune_data_dir / "esnli"
    examples = _real(d, "dev")
    columns = {n: (d / f"{n}.dev").read_text().split("\n") for n in ("s1", "s2", "labels", "preproc1_expl_1")}
    for i in (0, len(examples) - 1):  # first and last line (the explanation file has no final newline)
        s1, s2, label, expl = (columns[n][i] for n in ("s1", "s2", "labels", "preproc1_expl_1"))
        assert examples[i].answer == label.strip()
        assert examples[i].prompt.startswith("Premise: " + s1.strip().replace(" .", "").replace(" ,", ",")[:40])
        assert examples[i].rationale.lower().replace(" ", "") == expl.strip().lower().replace(" ", "")
    first_premise = columns["s1"][0].strip()
    assert first_premise.endswith(" .")
    assert examples[0].prompt.split("\n")[0] == "Premise: " + first_premise[:-2] + "."
    assert examples[0].rationale == _cap(columns["preproc1_expl_1"][0].strip()[:-2] + ".")


def test_cos_e_join_and_counts(finetune_data_dir):
    d = finetune_data_dir / "cos_e"
    for split in ("train", "dev"):
        v11 = {r["id"]: r["explanation"]["open-ended"] for r in _jsonl(d / "v1.11" / f"cose_{split}_v1.11.jsonl")}
        v10 = {r["id"]: r["explanation"]["open-ended"] for r in _jsonl(d / "v1.0" / f"cose_{split}_v1.0.jsonl")}
        questions = _jsonl(d / "v1.0" / f"{split}_rand_split.jsonl")
        expected = [q for q in questions if q["id"] in v11 or q["id"] in v10]
        examples = _real(d, split)
        assert len(examples) == len(expected)
        assert sum(q["id"] in v11 for q in expected) > 0 and sum(q["id"] not in v11 for q in expected) > 0
        for q, ex in list(zip(expected, examples))[:300]:
            raw = " ".join(v11.get(q["id"], v10.get(q["id"], "")).split())
            assert ex.id == q["id"] and ex.rationale in (_cap(raw), _cap(raw) + ".")
            choices = {c["label"]: c["text"] for c in q["question"]["choices"]}
            assert ex.answer == choices[q["answerKey"]] and ex.prompt.startswith(q["question"]["stem"])


def test_winowhy_counts_and_reason_choice(finetune_data_dir):
    d = finetune_data_dir / "winowhy"
    raw = json.loads((d / "winowhy.json").read_text())
    usable = [r for r in raw if any(reason[3] == "Valid" for reason in r["reasons"])]
    train, validation = _real(d, "train"), _real(d, "validation")
    assert len(train) + len(validation) == len(usable) == len(_real(d, "train", holdout=False))
    assert len(validation) > 0
    first = _real(d, "train", holdout=False)[0]
    best = max((r for r in raw[0]["reasons"] if r[1] == "human" and r[3] == "Valid"), key=lambda r: r[2])
    assert first.answer == raw[0]["answers"]["AB".index(raw[0]["correctAnswer"].rstrip("."))]
    assert first.rationale in (_cap(best[0].strip()), _cap(best[0].strip()) + ".")
    assert raw[0]["text"]["txt1"] in first.prompt and all(a in first.prompt for a in raw[0]["answers"])


def test_every_present_split_parses_cleanly(finetune_data_dir):
    for name in CORPORA:
        folder = finetune_data_dir / name
        if not folder.is_dir():
            continue
        for split in available_splits(name, folder):
            examples = _real(folder, split)
            assert examples, (name, split)
            for ex in examples:
                assert ex.source == name and ex.prompt and ex.answer and "\n" not in ex.answer
                assert "\n" not in ex.rationale and (not ex.rationale or ex.rationale[-1] in ".!?\"')]$")


def test_missing_annotations_and_splits_are_reported(finetune_data_dir):
    ecqa = finetune_data_dir / "ecqa"  # the shared copy holds the split lists only
    assert available_splits("ecqa", ecqa) == []
    with pytest.raises(CorpusNotFoundError, match=r"ecqa\.jsonl.*available splits: none"):
        read_corpus("ecqa", ecqa, "train")
    with pytest.raises(CorpusNotFoundError, match=r"'dev'.*available splits: \['test', 'test_socratic', 'train'"):
        _real(finetune_data_dir / "gsm8k", "dev")


# --------------------------------------------------------------------------------------------------------------------
# Fixtures in the published formats


def test_ecqa_fixture():
    d = FIXTURES / "ecqa"
    assert available_splits("ecqa", d) == ["test", "train", "val", "validation"]
    train = read_corpus("ecqa", d, "train")
    # q3 is in the author split but has no annotation: left out; the duplicate annotation of q1 is ignored.
    assert [e.id for e in train] == ["ecqa-fixture-q1", "ecqa-fixture-q2"]
    assert train[0] == RationaleExample(
        "ecqa",
        "Where would you usually find a kettle?\nOptions: (A) garage (B) garden (C) kitchen (D) library (E) bus stop",
        "Kettles boil water for cooking and tea. Cooking and making tea happen in a kitchen.",
        "kitchen", "ecqa-fixture-q1")
    validation = read_corpus("ecqa", d, "validation")
    assert [(e.id, e.answer) for e in validation] == [("ecqa-fixture-q4", "drink water")]
    assert read_corpus("ecqa", d, "test") == []


def test_ecqa_without_author_split_uses_cqa_files(tmp_path):
    d = tmp_path / "ecqa"
    shutil.copytree(FIXTURES / "ecqa", d)
    shutil.rmtree(d / "author_split")
    assert [e.id for e in read_corpus("ecqa", d, "train")] == ["ecqa-fixture-q1", "ecqa-fixture-q2"]
    assert [e.id for e in read_corpus("ecqa", d, "validation")] == ["ecqa-fixture-q4"]


def test_proofwriter_fixture():
    d = FIXTURES / "proofwriter"  # meta-dev.jsonl lives in OWA/depth-5/, as in the released archive
    assert available_splits("proofwriter", d) == ["dev", "validation"]
    examples = read_corpus("proofwriter", d, "validation")
    theory = ("Anne is kind. Anne is young. If someone is kind then they are nice. If someone is nice and young "
              "then they are smart.")
    assert [e.id for e in examples] == [f"AttNoneg-OWA-D5-fixture1/Q{i}" for i in (1, 2, 3)]
    assert examples[0].prompt == theory + "\nStatement: Anne is smart."
    assert examples[0].rationale == ("Anne is kind. If someone is kind then they are nice. Anne is nice. Anne is "
                                     "young. If someone is nice and young then they are smart. Anne is smart.")
    assert [e.answer for e in examples] == ["True", "False", "Unknown"]
    assert examples[1].rationale == "Anne is young."
    assert examples[2].rationale == corpora.PROOFWRITER_NO_PROOF["Unknown"]


def test_coqa_fixture():
    examples = read_corpus("coqa", FIXTURES / "coqa", "validation")
    story = json.loads((FIXTURES / "coqa" / "coqa-dev-v1.0.json").read_text())["data"][0]["story"]
    assert [(e.id, e.answer) for e in examples] == [
        ("fixture-story-1/1", "a boat"), ("fixture-story-1/2", "red"), ("fixture-story-1/3", "The wind was too strong")]
    assert examples[0].prompt == story + "\n\nQ: What did Mia have?"
    assert examples[1].prompt == story + "\n\nQ: What did Mia have?\nA: a boat\nQ: What color was it?"
    assert examples[1].rationale == "Small red boat."
    assert examples[2].rationale == "The wind was too strong, so she stayed home."
    assert available_splits("coqa", FIXTURES / "coqa") == ["dev", "validation"]


def test_math_original_layout_fixture():
    d = FIXTURES / "math"
    examples = read_corpus("math", d, "train", holdout=False)
    assert [e.id for e in examples] == ["algebra/2.json", "algebra/10.json", "geometry/1.json"]
    assert [e.answer for e in examples] == ["2", "\\{-1, 1\\}", "9"]
    assert examples[0].rationale == "Subtracting 3 from both sides gives $x = \\boxed{2}$."
    split = read_corpus("math", d, "train"), read_corpus("math", d, "validation")
    assert sorted(e.id for part in split for e in part) == sorted(e.id for e in examples)


def test_esnli_csv_fixture():
    examples = read_corpus("esnli", FIXTURES / "esnli", "train")
    assert [(e.id, e.answer) for e in examples] == [("fixture1#0r1n", "neutral"), ("fixture2#0r1e", "entailment")]
    assert examples[0].prompt == ("Premise: A dog runs across a field, chasing a ball.\n"
                                  "Hypothesis: A dog plays with its owner.")
    assert examples[0].rationale == "The owner may not be there."


def test_extract_boxed_and_aqua_answer_line():
    last = corpora.extract_boxed(r"so $\boxed{\frac{1}{2}}$ and finally $\boxed{\dfrac{40}{243}}$.")
    assert last == r"\dfrac{40}{243}"
    assert corpora.extract_boxed(r"$\boxed{\boxed{1}+2}$") == r"\boxed{1}+2"
    assert corpora.extract_boxed(r"$\boxed 5$.") == "5" and corpora.extract_boxed(r"\fbox{3}") == "3"
    assert corpora.extract_boxed(r"\boxed{1 + {2}") is None and corpora.extract_boxed("no box") is None
    strip = corpora.strip_aqua_answer_line
    assert strip("x = 5\nAnswer: B", "B") == "x = 5"
    assert strip("x = 250 m. Answer D", "D") == "x = 250 m."
    assert strip("x = 5\nThe answer is C.", "B") == "x = 5\nThe answer is C."  # a contradicting line is kept
    assert strip("x = 5\nB", "B") == "x = 5" and strip("ANSWER:A", "A") == "ANSWER:A"


def test_format_example_exact_strings():
    ex = RationaleExample("gsm8k", "Tom has 2 apples and buys 3 more. How many?", "2 + 3 = 5.", "5")
    prompt = ("Definition: Solve the grade-school math word problem. What is the final numerical answer?\n\n"
              "Input: Tom has 2 apples and buys 3 more. How many?\nOutput:")
    assert format_example(ex, "ft") == (prompt, " 5")
    assert format_example(ex, "cot") == (prompt, " 2 + 3 = 5. So the answer is 5.")
    other = RationaleExample("synth_toy", "Q?", "", "A")
    assert format_example(other, "cot") == ("Definition: Answer the question.\n\nInput: Q?\nOutput:",
                                            " So the answer is A.")
    assert format_example(other, "ft", definition="Do it.")[0].startswith("Definition: Do it.\n\nInput: Q?")
    assert set(DEFINITIONS) == set(CORPORA)
    with pytest.raises(ValueError, match="'ft' or 'cot'"):
        format_example(ex, "rationale")


def test_read_corpora_and_unknown_names(tmp_path):
    got = read_corpora("ecqa,coqa", FIXTURES, "validation")
    assert [e.source for e in got] == ["ecqa"] + ["coqa"] * 3
    with pytest.raises(CorpusNotFoundError, match="gsm8k"):
        read_corpora("all", FIXTURES, "validation")
    assert {e.source for e in read_corpora("all", FIXTURES, "validation", skip_missing=True)} >= {
        "ecqa", "coqa", "proofwriter"}
    with pytest.raises(ValueError, match="valid names: gsm8k, aqua_rat"):
        read_corpus("gsm8", FIXTURES, "train")
    with pytest.raises(CorpusNotFoundError, match=re.escape(str(tmp_path / "missing"))):
        read_corpus("coqa", tmp_path / "missing", "train")


# --------------------------------------------------------------------------------------------------------------------
# Malformed records


def test_missing_field_names_file_and_record():
    with pytest.raises(CorpusFormatError) as info:
        read_corpus("gsm8k", FIXTURES / "bad_gsm8k", "train", holdout=False)
    err = info.value
    assert err.path.endswith("bad_gsm8k/train.jsonl") and err.record == "line 2" and err.field == "answer"
    assert "bad_gsm8k/train.jsonl: line 2: missing field 'answer'" in str(err)


def _write(folder: pathlib.Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


BAD_CASES = {
    "gsm8k-no-marker": ("gsm8k", "train", {"train.jsonl": '{"question": "q", "answer": "1 + 1 = 2"}\n'},
                        r"train\.jsonl: line 1: field 'answer' has no '####"),
    "gsm8k-json": ("gsm8k", "test", {"test.jsonl": '{"question": "q", "answer": "#### 2"}\n{"question": \n'},
                   r"test\.jsonl: line 2: invalid JSON"),
    "strategyqa-facts": ("strategyqa", "dev", {"dev.json": json.dumps(
        [{"qid": "a", "question": "q?", "answer": True, "facts": ["f"]}, {"qid": "b", "question": "q?",
                                                                          "answer": False}])},
        r"dev\.json: index 1: missing field 'facts'"),
    "aqua-correct": ("aqua_rat", "dev", {"dev.json": json.dumps(
        {"question": "q", "options": ["A)1", "B)2"], "rationale": "r", "correct": "C"}) + "\n"},
        r"dev\.json: line 1: field 'correct' 'C'"),
    "math-no-box": ("math", "test", {"test.jsonl": json.dumps({"problem": "p", "solution": "it is 4"}) + "\n"},
                    r"test\.jsonl: line 1: field 'solution' has no complete"),
    "coqa-turn": ("coqa", "dev", {"coqa-dev-v1.0.json": json.dumps({"data": [{"id": "s1", "story": "S.", "questions": [
        {"input_text": "q1", "turn_id": 1}, {"input_text": "q2", "turn_id": 2}], "answers": [
        {"span_text": "S", "input_text": "a", "turn_id": 1}]}]})},
        r"coqa-dev-v1\.0\.json: index 0 \(id s1\) turn 2: question has no answer"),
    "proofwriter-ref": ("proofwriter", "dev", {"meta-dev.jsonl": json.dumps({
        "id": "T1", "theory": "A.", "triples": {}, "rules": {}, "questions": {"Q1": {
            "question": "A.", "answer": True, "proofsWithIntermediates": [{"representation": "(triple1)",
                                                                           "intermediates": {}}]}}}) + "\n"},
        r"meta-dev\.jsonl: line 1 \(id T1, question Q1\): proof refers to 'triple1'"),
    "esnli-lines": ("esnli", "dev", {"s1.dev": "a .\nb .\n", "s2.dev": "c .\nd .\n", "labels.dev": "neutral\n",
                                     "preproc1_expl_1.dev": "e\nf\n"}, r"line counts differ"),
    "esnli-label": ("esnli", "dev", {"s1.dev": "a .", "s2.dev": "c .", "labels.dev": "maybe",
                                     "preproc1_expl_1.dev": "e"}, r"labels\.dev: line 1: label 'maybe'"),
    "winowhy-reason": ("winowhy", "train", {"winowhy.json": json.dumps([{
        "text": {"txt1": "A", "pron": "it", "txt2": "."}, "answers": ["x", "y"], "correctAnswer": "A",
        "source": "s", "reasons": [["r", "human", "high", "Valid"]]}])},
        r"winowhy\.json: index 0 reason 0: reason should be"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_records_raise(tmp_path, case):
    name, split, files, message = BAD_CASES[case]
    for filename, text in files.items():
        _write(tmp_path / name, filename, text)
    with pytest.raises(CorpusFormatError, match=message):
        read_corpus(name, tmp_path / name, split, holdout=False)


def test_cos_e_question_without_explanation(tmp_path):
    d = tmp_path / "cos_e"
    question = {"answerKey": "A", "id": "q9", "question": {"stem": "s?", "choices": [{"label": "A", "text": "x"}]}}
    _write(d / "v1.0", "dev_rand_split.jsonl", json.dumps(question) + "\n")
    _write(d / "v1.0", "cose_dev_v1.0.jsonl", json.dumps({"id": "other", "explanation": {"open-ended": "e"}}) + "\n")
    with pytest.raises(CorpusFormatError, match=r"dev_rand_split\.jsonl: line 1 \(id q9\): no CoS-E explanation"):
        read_corpus("cos_e", d, "dev")
