"""Readers for the rationale corpora, each from its original release format.

Every reader turns the files of one published release into a list of :class:`RationaleExample`
``(source, prompt, rationale, answer, id)``. Split handling (which file is which split, the validation holdout) lives
in :mod:`alert_jax.data.finetune`; this module only knows record formats. The record type, the error and the helpers
that implement the normalisation below and the checked file / field access are in
:mod:`alert_jax.data.examples`.

Normalisation shared by every reader (so finetuning targets are uniform):

* ``rationale`` is one line: every run of whitespace (newlines included) becomes one space, so a generation stopped
  at a newline still holds the whole chain (GSM8K and AQuA-RAT steps, one per line, each become a sentence: see
  :func:`lines_as_sentences`). It ends with terminal punctuation (a period is added when missing) so
  ``" {rationale} So the answer is {answer}."`` reads as sentences. Explanations stored in lower case (e-SNLI,
  CoS-E, ECQA, WinoWhy, CoQA spans) get a capital first letter. It may be empty only when the release has no
  rationale text for the record.
* ``answer`` is one line, stripped, with one trailing period removed (the CoT target adds its own period).
* ``prompt`` keeps the release's line structure (stripped); it is what follows ``Input:`` in the finetuning prompt.

Any malformed record raises :class:`CorpusFormatError` naming the file, the record (line number, list index or id)
and the field.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from typing import Any

from etils import epath

from alert_jax.data.examples import (
    CorpusFormatError,
    PathLike,
    RationaleExample,
    as_sentence,
    capitalized,
    clean_answer,
    detokenize,
    extract_boxed,
    get_field,
    lines_as_sentences,
    need_answer,
    one_line,
    options_line,
    read_json,
    read_json_list,
    read_jsonl,
    read_lines,
)
from alert_jax.io.files import open_text

_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")


def read_gsm8k(path: PathLike) -> list[RationaleExample]:
    """GSM8K jsonl ``{question, answer}``; ``answer`` = steps with ``<<calc>>`` notes, then ``#### final``.

    rationale = the text before the last ``####`` with calculator notes removed (socratic files keep their
    ``sub-question ** step`` layout); answer = the text after ``####`` as published (thousands commas kept).
    """
    path = epath.Path(path)
    out = []
    for where, rec in read_jsonl(path):
        question = get_field(rec, "question", path, where)
        solution = get_field(rec, "answer", path, where)
        if "####" not in solution:
            raise CorpusFormatError(path, where, "field 'answer' has no '#### <final answer>' marker", "answer")
        steps, final = solution.rsplit("####", 1)
        answer = need_answer(clean_answer(final), path, where, "answer")
        rationale = lines_as_sentences(_CALCULATOR_NOTE.sub("", steps))
        out.append(RationaleExample("gsm8k", question.strip(), rationale, answer, f"{path.name}:{where[5:]}"))
    return out


_OPTION = re.compile(r"^\s*\(?([A-Z])\s*\)\s*(.*)$", re.DOTALL)
# A closing statement of the chosen letter, e.g. "Answer D", "ANSWER:B", "The answer is A.", "correct option is C".
_AQUA_TAIL = re.compile(
    r"(?:^|(?<=[\s.,;:]))(?:(?:hence|so|thus|therefore)[\s,]+)?(?:the\s+)?(?:(?:correct|right|required)\s+)?"
    r"(?:answer|ans|option|choice)(?:\s+(?:is|will\s+be|should\s+be))?\s*[:=\-]?\s*(?:option\s*)?"
    r"\(?((?-i:[A-E]))\)?\s*[.!]?\s*$",
    re.IGNORECASE,
)


def strip_aqua_answer_line(rationale: str, correct: str) -> str:
    """Removes a trailing statement of the correct letter (``'... = 250 m. Answer D'`` -> ``'... = 250 m.'``).

    Only a statement naming ``correct`` is removed (a contradicting one is kept); a last line that is only the
    letter is removed too. If nothing else would remain, the rationale is returned unchanged.
    """
    lines = [line for line in rationale.strip().split("\n") if line.strip()]
    if lines and re.fullmatch(r"\s*\(?([A-E])\)?\.?\s*", lines[-1]) and lines[-1].strip(" ().") == correct:
        lines = lines[:-1]
    text = "\n".join(lines).rstrip()
    match = _AQUA_TAIL.search(text)
    if match and match.group(1) == correct:
        text = text[:match.start()].rstrip(" \n,;:-")
    return text if text.strip() else rationale


def read_aqua_rat(path: PathLike) -> list[RationaleExample]:
    """AQuA-RAT jsonl ``{question, options: ['A)..', ...], rationale, correct}``.

    prompt = question + ``Options: (A) .. (E) ..``; answer = the correct option's text (what a free-form evaluation
    would compare); rationale = the published rationale minus a trailing ``Answer: X`` statement of the same letter.
    """
    path = epath.Path(path)
    out = []
    for where, rec in read_jsonl(path):
        question = get_field(rec, "question", path, where)
        raw_options = get_field(rec, "options", path, where, list)
        rationale = get_field(rec, "rationale", path, where)
        correct = get_field(rec, "correct", path, where).strip().upper()
        options = []
        for k, option in enumerate(raw_options):
            match = _OPTION.match(option) if isinstance(option, str) else None
            if not match:
                raise CorpusFormatError(path, where, f"option {k} {option!r} is not 'X)text'", "options")
            options.append((match.group(1), match.group(2).strip()))
        texts = dict(options)
        if correct not in texts:
            raise CorpusFormatError(path, where, f"field 'correct' {correct!r} is not an option letter", "correct")
        prompt = f"{question.strip()}\n{options_line(options)}"
        answer = need_answer(clean_answer(texts[correct]), path, where, "options")
        rationale = lines_as_sentences(strip_aqua_answer_line(rationale, correct))
        out.append(RationaleExample("aqua_rat", prompt, rationale, answer, f"{path.name}:{where[5:]}"))
    return out


def read_strategyqa(path: PathLike) -> list[RationaleExample]:
    """StrategyQA JSON list ``{qid, question, answer: bool, facts: [str], ...}``.

    rationale = the ``facts``, each made a sentence, joined with spaces (``decomposition`` unused); answer yes/no.
    """
    path = epath.Path(path)
    data = read_json_list(path)
    out = []
    for index, rec in enumerate(data):
        where = f"index {index}"
        question = get_field(rec, "question", path, where)
        answer = get_field(rec, "answer", path, where, bool)
        facts = get_field(rec, "facts", path, where, list)
        if not all(isinstance(fact, str) for fact in facts):
            raise CorpusFormatError(path, where, "field 'facts' should be a list of strings", "facts")
        rationale = " ".join(as_sentence(fact) for fact in facts if fact.strip())
        qid = str(rec.get("qid", f"{path.name}:{index}"))
        out.append(RationaleExample("strategyqa", question.strip(), rationale, "yes" if answer else "no", qid))
    return out


def _cqa_question(rec: Any, path: epath.Path, where: str) -> tuple[str, str, str]:
    """CommonsenseQA record -> (id, prompt with options, answer text)."""
    qid = get_field(rec, "id", path, where)
    where = f"{where} (id {qid})"
    key = get_field(rec, "answerKey", path, where).strip()
    question = get_field(rec, "question", path, where, dict)
    stem = get_field(question, "stem", path, where)
    choices = []
    for choice in get_field(question, "choices", path, where, list):
        choices.append((get_field(choice, "label", path, where), get_field(choice, "text", path, where)))
    texts = dict(choices)
    if key not in texts:
        raise CorpusFormatError(path, where, f"field 'answerKey' {key!r} is not a choice label", "answerKey")
    answer = need_answer(clean_answer(texts[key]), path, where, "choices")
    return qid, f"{stem.strip()}\n{options_line(choices)}", answer


def read_cqa_questions(paths: Sequence[PathLike]) -> dict[str, tuple[str, str, str, str]]:
    """CommonsenseQA jsonl files -> ``{id: (prompt, answer, file name, record)}`` (first occurrence wins)."""
    out: dict[str, tuple[str, str, str, str]] = {}
    for path in map(epath.Path, paths):
        for where, rec in read_jsonl(path):
            qid, prompt, answer = _cqa_question(rec, path, where)
            out.setdefault(qid, (prompt, answer, str(path), where))
    return out


def read_cos_e(questions_path: PathLike, explanation_paths: Sequence[PathLike]) -> list[RationaleExample]:
    """CoS-E: CommonsenseQA questions joined by id with open-ended explanations.

    ``explanation_paths`` are CoS-E jsonl files ``{id, explanation: {open-ended, selected}}`` in priority order: the
    first file holding an id supplies its explanation. Every question needs an explanation in some file.
    """
    questions_path = epath.Path(questions_path)
    explanations: dict[str, str] = {}
    for path in map(epath.Path, explanation_paths):
        for where, rec in read_jsonl(path):
            qid = get_field(rec, "id", path, where)
            explanation = get_field(rec, "explanation", path, f"{where} (id {qid})", dict)
            text = get_field(explanation, "open-ended", path, f"{where} (id {qid})")
            explanations.setdefault(qid, text)
    out = []
    for where, rec in read_jsonl(questions_path):
        qid, prompt, answer = _cqa_question(rec, questions_path, where)
        if qid not in explanations:
            names = ", ".join(str(p) for p in explanation_paths)
            raise CorpusFormatError(questions_path, f"{where} (id {qid})", f"no CoS-E explanation in {names}")
        out.append(RationaleExample("cos_e", prompt, capitalized(as_sentence(explanations[qid])), answer, qid))
    return out


def read_ecqa(annotations_path: PathLike, question_paths: Sequence[PathLike],
              ids_path: PathLike | None = None) -> list[RationaleExample]:
    """ECQA: ``ecqa.jsonl`` ``{id, positives, negatives, explanation}`` joined with CommonsenseQA questions.

    rationale = the free-flow ``explanation`` (positive/negative properties unused). Order and membership follow
    ``ids_path`` (an author split list, one id a line) when given, else the question files. As in the authors'
    join script, the first annotation of an id wins and ids without an annotation are left out; an id in the
    split list without a CommonsenseQA question is an error.
    """
    annotations_path = epath.Path(annotations_path)
    explanations: dict[str, str] = {}
    for where, rec in read_jsonl(annotations_path):
        qid = get_field(rec, "id", annotations_path, where)
        text = get_field(rec, "explanation", annotations_path, f"{where} (id {qid})")
        explanations.setdefault(qid, text)
    questions = read_cqa_questions(question_paths)
    if ids_path is not None:
        ids_path = epath.Path(ids_path)
        ids = [(f"line {n}", line.strip()) for n, line in enumerate(read_lines(ids_path), 1) if line.strip()]
        for where, qid in ids:
            if qid not in questions:
                files = ", ".join(str(p) for p in question_paths)
                raise CorpusFormatError(ids_path, f"{where} (id {qid})", f"id not found in the questions {files}")
        order = [qid for _, qid in ids]
    else:
        order = list(questions)
    out = []
    for qid in order:
        if qid in explanations:
            prompt, answer, _, _ = questions[qid]
            out.append(RationaleExample("ecqa", prompt, capitalized(as_sentence(explanations[qid])), answer, qid))
    return out


ESNLI_LABELS = ("entailment", "neutral", "contradiction")


def _esnli_example(premise: str, hypothesis: str, label: str, explanation: str, rid: str) -> RationaleExample:
    rationale = capitalized(as_sentence(detokenize(explanation)))
    prompt = f"Premise: {detokenize(premise)}\nHypothesis: {detokenize(hypothesis)}"
    return RationaleExample("esnli", prompt, rationale, label, rid)


def read_esnli_lines(directory: PathLike, split: str) -> list[RationaleExample]:
    """e-SNLI line-aligned files ``s1.X``, ``s2.X``, ``labels.X``, ``preproc1_expl_1.X`` (tokenized text).

    prompt = ``Premise: ..\\nHypothesis: ..``; answer = the label; rationale = explanation 1. Text is lightly
    detokenized (no space before punctuation or inside contractions) and the explanation's first letter is
    capitalised (the ``preproc1`` files are lower-cased).
    """
    directory = epath.Path(directory)
    names = ("s1", "s2", "labels", "preproc1_expl_1")
    columns = {name: read_lines(directory / f"{name}.{split}") for name in names}
    counts = {name: len(lines) for name, lines in columns.items()}
    if len(set(counts.values())) != 1:
        raise CorpusFormatError(directory / f"labels.{split}", "file", f"line counts differ across files: {counts}")
    out = []
    for i, (premise, hypothesis, label, explanation) in enumerate(zip(*columns.values())):
        label = label.strip()
        if label not in ESNLI_LABELS:
            raise CorpusFormatError(directory / f"labels.{split}", f"line {i + 1}",
                                    f"label {label!r} is not one of {ESNLI_LABELS}", "labels")
        out.append(_esnli_example(premise, hypothesis, label, explanation, f"{split}:{i + 1}"))
    return out


def read_esnli_csv(paths: Sequence[PathLike]) -> list[RationaleExample]:
    """e-SNLI csv files (``esnli_train_1.csv`` ...): columns ``pairID, gold_label, Sentence1, Sentence2,
    Explanation_1, ...``; same mapping as :func:`read_esnli_lines`."""
    out = []
    for path in map(epath.Path, paths):
        with open_text(path, newline="") as f:
            reader = csv.DictReader(f)
            for column in ("gold_label", "Sentence1", "Sentence2", "Explanation_1"):
                if column not in (reader.fieldnames or []):
                    raise CorpusFormatError(path, "header", f"missing column {column!r}", column)
            for row in reader:
                where = f"line {reader.line_num}"
                label = (row["gold_label"] or "").strip()
                if label not in ESNLI_LABELS:
                    raise CorpusFormatError(path, where, f"gold_label {label!r} is not one of {ESNLI_LABELS}",
                                            "gold_label")
                rid = row.get("pairID") or f"{path.name}:{reader.line_num}"
                out.append(_esnli_example(row["Sentence1"] or "", row["Sentence2"] or "", label,
                                          row["Explanation_1"] or "", rid))
    return out


def pick_winowhy_reason(reasons: list[Any], path: PathLike, where: str) -> str | None:
    """The 'Valid' human reason with the highest score (first on ties); else any 'Valid' one; else None."""
    parsed = []
    for k, reason in enumerate(reasons):
        if not (isinstance(reason, list) and len(reason) == 4 and isinstance(reason[0], str)
                and isinstance(reason[2], (int, float))):
            raise CorpusFormatError(path, f"{where} reason {k}", "reason should be [text, source, score, label]",
                                    "reasons")
        parsed.append(reason)
    for wanted_source in ("human", None):
        valid = [r for r in parsed if r[3] == "Valid" and (wanted_source is None or r[1] == wanted_source)]
        if valid:
            return max(valid, key=lambda r: r[2])[0]  # max keeps the first of equal scores
    return None


def read_winowhy(path: PathLike) -> list[RationaleExample]:
    """WinoWhy ``winowhy.json``: list of ``{text: {txt1, pron, txt2}, answers: [A, B], correctAnswer, reasons}``.

    prompt = the sentence, the pronoun question and the two candidates; answer = the correct candidate's text;
    rationale = :func:`pick_winowhy_reason`. Questions with no 'Valid' reason are left out.
    """
    path = epath.Path(path)
    data = read_json_list(path)
    out = []
    for index, rec in enumerate(data):
        where = f"index {index}"
        text = get_field(rec, "text", path, where, dict)
        txt1, pron, txt2 = (get_field(text, key, path, where) for key in ("txt1", "pron", "txt2"))
        answers = get_field(rec, "answers", path, where, list)
        correct = get_field(rec, "correctAnswer", path, where).strip().rstrip(".")
        if len(answers) != 2 or correct not in ("A", "B") or not all(isinstance(a, str) for a in answers):
            raise CorpusFormatError(path, where, "expected two 'answers' and 'correctAnswer' A or B", "answers")
        reason = pick_winowhy_reason(get_field(rec, "reasons", path, where, list), path, where)
        if reason is None:
            continue
        sentence = re.sub(r"\s+([.,;:!?])", r"\1", one_line(f"{txt1} {pron} {txt2}"))
        a, b = (one_line(x) for x in answers)
        prompt = (f'{sentence}\nQuestion: In the sentence above, who or what does "{pron.strip()}" refer to?\n'
                  f"{options_line([('A', a), ('B', b)])}")
        answer = clean_answer(answers["AB".index(correct)])
        out.append(RationaleExample("winowhy", prompt, capitalized(as_sentence(reason)), answer, f"winowhy:{index}"))
    return out


def _math_example(rec: Any, path: epath.Path, where: str, rid: str) -> RationaleExample:
    problem = get_field(rec, "problem", path, where)
    solution = get_field(rec, "solution", path, where)
    boxed = extract_boxed(solution)
    if boxed is None:
        raise CorpusFormatError(path, where, "field 'solution' has no complete \\boxed{...} answer", "solution")
    answer = need_answer(one_line(boxed), path, where, "solution")
    return RationaleExample("math", problem.strip(), as_sentence(solution), answer, rid)


def read_math_jsonl(path: PathLike) -> list[RationaleExample]:
    """MATH problems as jsonl ``{problem, level, type, solution}`` (e.g. a subset file).

    answer = content of the last ``\\boxed{..}`` (balanced braces); rationale = the full solution (box kept).
    """
    path = epath.Path(path)
    return [_math_example(rec, path, where, f"{path.name}:{where[5:]}") for where, rec in read_jsonl(path)]


def read_math_dir(directory: PathLike) -> list[RationaleExample]:
    """MATH's original release layout: ``<split>/<subject>/<n>.json``, one problem per file (sorted paths)."""
    directory = epath.Path(directory)
    files = sorted(directory.glob("*/*.json"), key=lambda p: (p.parent.name, int(p.stem) if p.stem.isdigit() else -1,
                                                               p.stem))
    out = []
    for path in files:
        rid = f"{path.parent.name}/{path.name}"
        out.append(_math_example(read_json(path), path, "file", rid))
    return out


_PROOF_REF = re.compile(r"\b(triple\d+|rule\d+|int\d+)\b")
PROOFWRITER_NO_PROOF = {
    "Unknown": "The facts and rules neither prove nor disprove the statement.",
    "False": "The statement cannot be proved from the facts and rules.",
    "True": "The statement follows from the facts and rules.",
}


def proofwriter_rationale(rec: dict, question: dict, path: PathLike, where: str, answer: str) -> str:
    """Natural-language rendering of the first proof in ``proofsWithIntermediates``.

    The texts of the facts (``tripleN``), rules (``ruleN``) and intermediate conclusions (``intN``) in the order
    they appear in the proof's representation -- premises before the conclusion drawn from them -- each used
    once. Without a proof (``Unknown``, closed-world ``False``) a fixed sentence per answer is used.
    """
    proofs = question.get("proofsWithIntermediates") or []
    if not proofs:
        return PROOFWRITER_NO_PROOF[answer]
    proof = proofs[0]
    representation = get_field(proof, "representation", path, where)
    texts = {}
    for kind in ("triples", "rules"):
        for key, value in (rec.get(kind) or {}).items():
            texts[key] = value.get("text") if isinstance(value, dict) else None
    for key, value in (proof.get("intermediates") or {}).items():
        texts[key] = value.get("text") if isinstance(value, dict) else None
    sentences: list[str] = []
    for ref in dict.fromkeys(_PROOF_REF.findall(representation)):
        if not isinstance(texts.get(ref), str):
            raise CorpusFormatError(path, where, f"proof refers to {ref!r}, which has no text in the record",
                                    "proofsWithIntermediates")
        sentences.append(as_sentence(texts[ref]))
    return " ".join(sentences)


def read_proofwriter(path: PathLike) -> list[RationaleExample]:
    """ProofWriter ``meta-<split>.jsonl``: ``{id, theory, triples, rules, questions: {Qn: {question, answer,
    proofsWithIntermediates, ...}}}``; one example per question.

    prompt = ``{theory}\\nStatement: {question}``; answer = ``True``/``False``/``Unknown``; rationale =
    :func:`proofwriter_rationale`.
    """
    path = epath.Path(path)
    out = []
    for where, rec in read_jsonl(path):
        rid = get_field(rec, "id", path, where)
        theory = get_field(rec, "theory", path, f"{where} (id {rid})")
        questions = get_field(rec, "questions", path, f"{where} (id {rid})", dict)
        for qid, question in questions.items():
            qwhere = f"{where} (id {rid}, question {qid})"
            statement = get_field(question, "question", path, qwhere)
            raw = get_field(question, "answer", path, qwhere, (bool, str))
            answer = str(raw).strip().capitalize() if not isinstance(raw, bool) else str(raw)
            if answer not in PROOFWRITER_NO_PROOF:
                raise CorpusFormatError(path, qwhere, f"answer {raw!r} is not True, False or Unknown", "answer")
            rationale = proofwriter_rationale(rec, question, path, qwhere, answer)
            prompt = f"{theory.strip()}\nStatement: {statement.strip()}"
            out.append(RationaleExample("proofwriter", prompt, rationale, answer, f"{rid}/{qid}"))
    return out


def read_coqa(path: PathLike) -> list[RationaleExample]:
    """CoQA ``coqa-<split>-v1.0.json``: ``{data: [{id, story, questions: [{input_text, turn_id}], answers:
    [{span_text, input_text, turn_id}]}]}``; one example per turn.

    prompt = the story, the earlier turns as ``Q: ..\\nA: ..`` lines (CoQA questions lean on them), then
    ``Q: {question}``; rationale = the answer's ``span_text``; answer = its free-form ``input_text``.
    """
    path = epath.Path(path)
    top = read_json(path)
    stories = get_field(top, "data", path, "top level", list)
    out = []
    for index, story in enumerate(stories):
        where = f"index {index}"
        sid = str(story.get("id", index)) if isinstance(story, dict) else str(index)
        where = f"{where} (id {sid})"
        text = get_field(story, "story", path, where)
        answers = {}
        for answer in get_field(story, "answers", path, where, list):
            turn = get_field(answer, "turn_id", path, where, int)
            answers[turn] = answer
        history: list[str] = []
        for question in sorted(get_field(story, "questions", path, where, list),
                               key=lambda q: q.get("turn_id", 0) if isinstance(q, dict) else 0):
            turn = get_field(question, "turn_id", path, where, int)
            twhere = f"{where} turn {turn}"
            asked = one_line(get_field(question, "input_text", path, twhere))
            if turn not in answers:
                raise CorpusFormatError(path, twhere, "question has no answer with the same turn_id", "answers")
            reply = clean_answer(get_field(answers[turn], "input_text", path, twhere))
            span = get_field(answers[turn], "span_text", path, twhere)
            prompt = text.strip() + "\n\n" + "".join(history) + f"Q: {asked}"
            out.append(RationaleExample("coqa", prompt, capitalized(as_sentence(span)),
                                        need_answer(reply, path, twhere, "input_text"), f"{sid}/{turn}"))
            history.append(f"Q: {asked}\nA: {reply}\n")
    return out
