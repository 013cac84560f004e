"""What every rationale-corpus reader in :mod:`alert_jax.data.corpora` shares: the record
(:class:`RationaleExample`), the error (:class:`CorpusFormatError`), the text normalisation the readers apply to
their fields, and checked access to files and record fields that raises :class:`CorpusFormatError` naming the file,
the record and the field.

The readers themselves (one per release format) are in :mod:`alert_jax.data.corpora`, whose docstring lists the
normalisation rules the helpers here implement. Which files and fields a release has is left to the readers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

from etils import epath

from alert_jax.io.files import open_text

__all__ = [
    "PathLike", "RationaleExample", "CorpusFormatError",
    "one_line", "as_sentence", "capitalized", "lines_as_sentences", "clean_answer", "detokenize", "options_line",
    "extract_boxed",
    "read_jsonl", "read_json", "read_json_list", "read_lines", "get_field", "need_answer",
]

PathLike = str | os.PathLike


@dataclasses.dataclass
class RationaleExample:
    """One finetuning example: ``prompt`` (the input), ``rationale`` (reasoning), ``answer`` (final answer).

    ``source`` is the corpus name (e.g. ``'gsm8k'``); ``id`` is a stable record id (native id where the release has
    one, else ``'<file>:<line or index>'``).
    """

    source: str
    prompt: str
    rationale: str
    answer: str
    id: str = ""


class CorpusFormatError(ValueError):
    """A record (or file) does not follow its release's published format.

    Attributes: ``path`` (file), ``record`` (e.g. ``'line 3'``, ``'index 7'``, ``'id abc'``), ``field`` (or None).
    """

    def __init__(self, path: PathLike, record: str, problem: str, field: str | None = None):
        self.path = str(path)
        self.record = record
        self.field = field
        self.problem = problem
        super().__init__(f"{path}: {record}: {problem}")

    def __reduce__(self):  # keeps the error picklable (e.g. raised in a data-loader worker process)
        return type(self), (self.path, self.record, self.problem, self.field)


# --------------------------------------------------------------------------------------------------------------------
# Text helpers


def one_line(text: str) -> str:
    """Collapses every whitespace run (newlines included) into one space and strips."""
    return " ".join(text.split())


def as_sentence(text: str) -> str:
    """``one_line(text)`` ending in ``.``/``!``/``?`` (optionally followed by closing quotes, brackets or ``$``);
    a period is appended otherwise; '' stays ''."""
    text = one_line(text)
    if text and not re.search(r"[.!?][\"')\]$]*$", text):
        text += "."
    return text


def capitalized(text: str) -> str:
    """``text`` with its first character upper-cased (for explanations written or stored in lower case)."""
    return text[:1].upper() + text[1:]


def lines_as_sentences(text: str) -> str:
    """Joins the lines of a step-per-line rationale with spaces, ending each line that ends in a letter, digit or
    closing bracket with a period (``'x = 5\ny = 6'`` -> ``'x = 5. y = 6.'``); the whole ends as a sentence."""
    lines = [one_line(line) for line in text.split("\n") if line.strip()]
    lines = [line + "." if re.search(r"[A-Za-z0-9)\]}%$'\"]$", line) else line for line in lines]
    return as_sentence(" ".join(lines))


def clean_answer(text: str) -> str:
    """One line, stripped, without one trailing period (``'250 m.'`` -> ``'250 m'``)."""
    text = one_line(text)
    if len(text) > 1 and text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text


def detokenize(text: str) -> str:
    """Light detokenisation of PTB-style text (e-SNLI): ``'a , b .'`` -> ``'a, b.'``, ``"does n't"`` ->
    ``"doesn't"``."""
    text = one_line(text)
    text = re.sub(r" ([.,;:!?%)\]])", r"\1", text)
    text = re.sub(r"([(\[]) ", r"\1", text)
    return re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text, flags=re.IGNORECASE)


def options_line(choices: Sequence[tuple[str, str]]) -> str:
    """``[('A', 'x'), ('B', 'y')]`` -> ``'Options: (A) x (B) y'`` (the one multiple-choice layout of all corpora)."""
    return "Options: " + " ".join(f"({label}) {one_line(text)}" for label, text in choices)


def extract_boxed(text: str) -> str | None:
    """Content of the LAST top-level ``\\boxed{...}`` (or ``\\fbox{...}``, ``\\boxed 5``) with balanced braces.

    Escaped braces (``\\{``) are content, not delimiters. Returns None when there is no complete box.
    """
    found, end_of_last = None, -1
    for match in re.finditer(r"\\(?:boxed|fbox)(?![A-Za-z])", text):
        if match.start() < end_of_last:  # nested inside the previous box
            continue
        i = match.end()
        if text[i:i + 1] == "{":
            depth, j = 0, i
            while j < len(text):
                char = text[j]
                if char == "\\":
                    j += 2
                    continue
                if char == "{":
                    depth += 1
                elif char == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if depth != 0:
                continue
            found, end_of_last = text[i + 1:j], j + 1
        else:
            tail = re.match(r"\s+([^\s$]+)", text[i:])
            if tail:
                found, end_of_last = tail.group(1), i + tail.end()
    return None if found is None else found.strip()


# --------------------------------------------------------------------------------------------------------------------
# File helpers


def read_jsonl(path: epath.Path) -> Iterator[tuple[str, Any]]:
    """Yields ``('line N', record)`` for each non-blank line (N 1-based)."""
    with open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusFormatError(path, f"line {number}", f"invalid JSON ({e.msg})") from None


def read_json(path: epath.Path) -> Any:
    """The parsed JSON file; invalid JSON raises CorpusFormatError naming the line."""
    try:
        with open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CorpusFormatError(path, f"line {e.lineno}", f"invalid JSON ({e.msg})") from None


def read_json_list(path: epath.Path) -> list[Any]:
    """A JSON file whose top level must be a list of question records."""
    data = read_json(path)
    if not isinstance(data, list):
        raise CorpusFormatError(path, "top level", "expected a JSON list of questions")
    return data


def read_lines(path: epath.Path) -> list[str]:
    """Lines of a line-aligned text file; a missing final newline does not drop or add a line."""
    with open_text(path) as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def get_field(record: Any, key: str, path: PathLike, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """``record[key]``, checked to be present and of ``kind``; else CorpusFormatError naming the field."""
    if not isinstance(record, dict):
        raise CorpusFormatError(path, where, f"expected a JSON object, got {type(record).__name__}")
    if key not in record or record[key] is None:
        raise CorpusFormatError(path, where, f"missing field {key!r}", field=key)
    value = record[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise CorpusFormatError(path, where, f"field {key!r} should be {names}, got {type(value).__name__}", field=key)
    return value


def need_answer(answer: str, path: PathLike, where: str, field: str) -> str:
    """``answer`` unchanged; CorpusFormatError naming ``field`` when it is empty."""
    if not answer:
        raise CorpusFormatError(path, where, f"empty answer in field {field!r}", field=field)
    return answer
