"""Prompt templates T1..T5 (as data) and the one renderer that turns (task, instance) into a prompt.

A :class:`Template` is a handful of ``str.format`` strings; :func:`render` assembles::

    header.format(definition)                       # '' for templates without a definition up front
    + demo_1 + demo_separator + ... + demo_k + demo_separator   # k positive examples (absent when k == 0)
    + query.format(input, definition)               # ends exactly where the model must continue

Fields available to the format strings (all stripped of surrounding whitespace):

* ``header``: ``{definition}``
* ``demo`` / ``demo_without_explanation``: ``{input}``, ``{output}``, ``{answer}`` (the output without one trailing
  '.', so ``"... So the answer is {answer}."`` never doubles the full stop), ``{explanation}`` (ending in '.' when it
  had no closing punctuation), ``{definition}``
* ``query``: ``{input}`` (required), ``{definition}``
* ``options_block``: ``{options}`` (required)

Answer options (DESIGN.md section 6): ALERT turns classification tasks into generation by listing the answer choices
in the prompt. ``render(..., options=[...])`` formats ``options_block`` (default ``"\\nOptions: {options}"``, the
options joined by ``", "`` in the order given; callers pass them sorted, see ``niv2.answer_options``) and appends it
to the input of the query AND of every demonstration, i.e. right after the input and before the cue::

    Question: Gambling is a good source of revenue.
    Options: against, in favor
    Answer:

``options=None`` (or empty) renders the prompt without any block. The finetuning corpora (``data/finetune.py``) that
have answer choices (AQuA-RAT, ECQA, CoS-E, WinoWhy) carry them inside their input in the same place, as a line
``Options: (A) x (B) y`` after the question; the evaluation block lists the bare option texts because NIV2's
references are those texts (task104's references are the letters themselves, so letters would be ambiguous).

Demonstrations are the task's positive examples in file order (templates ``with_explanations`` take examples that
have an explanation first); they are never scored.

Context fitting (when ``count_tokens`` and ``max_tokens`` are given): demonstrations are dropped one at a time from
the end; if the prompt still does not fit, the instance input is cut from the LEFT (its end, usually holding the
question, is kept), searching the number of cut characters by bisection. The options block is never cut: it is
part of the query, after the (cut) input. :class:`RenderedPrompt` reports
``demos_dropped`` and ``input_chars_cut``. If even no demonstrations and an empty input do not fit, ``fits`` is False
(or :class:`PromptTooLongError` is raised with ``strict=True``).

Template memorization (DESIGN.md section 7): the finetuning corpora are formatted by ``data/finetune.py`` with one
fixed prompt ``Definition: {definition}\\n\\nInput: {prompt}\\nOutput:`` and, for OPT-CoT, the target
``{rationale} So the answer is {answer}.``. Each template states what it shares with that (:data:`FINETUNING_TRAITS`;
the template-memorization analysis groups templates by each):

======  ==============  ===================  ========================
name    shares_layout   shares_definition    shares_explanations
======  ==============  ===================  ========================
T1      yes             yes                  no (no demonstrations)
T2      yes             yes                  no (outputs only)
T3      yes             yes                  yes
T4      no              no                   no
T5      no              yes (after input)    no (no demonstrations)
======  ==============  ===================  ========================

* ``shares_layout``: header + query are exactly the finetuning prompt (``Definition:`` header, ``Input:`` query,
  ``Output:`` cue);
* ``shares_definition``: the prompt carries the task definition, as every finetuning prompt does;
* ``shares_explanations``: the demonstrations answer in the CoT target format (explanation, then
  ``So the answer is {answer}.``).
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "FINETUNING_TRAITS",
    "TEMPLATES",
    "PromptTooLongError",
    "RenderedPrompt",
    "Template",
    "get_template",
    "register_template",
    "render",
    "template_names",
]

_HEADER_FIELDS = frozenset({"definition"})
_DEMO_FIELDS = frozenset({"input", "output", "answer", "explanation", "definition"})
_QUERY_FIELDS = frozenset({"input", "definition"})
_OPTIONS_FIELDS = frozenset({"options"})

FINETUNING_TRAITS: tuple[str, ...] = ("shares_layout", "shares_definition", "shares_explanations")
"""The :class:`Template` flags saying what a template shares with the finetuning prompt (module docstring)."""


def _fields(fmt: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(fmt) if f is not None}


@dataclasses.dataclass(frozen=True)
class Template:
    """One prompt template, as data. See the module docstring for the fields each format string may use.

    ``num_demos``: default number of positive examples shown; ``with_explanations``: demonstrations carry their
    explanation (``demo`` uses ``{explanation}``; ``demo_without_explanation`` is used for an example that has none);
    ``options_block``: appended to every input (query and demonstrations) when answer options are rendered;
    ``shares_layout`` / ``shares_definition`` / ``shares_explanations``: what the template shares with the
    finetuning prompt (:data:`FINETUNING_TRAITS`, module docstring; template-memorization analysis).
    """

    name: str
    description: str
    query: str
    header: str = ""
    demo: str = "Input: {input}\nOutput: {output}"
    demo_without_explanation: str | None = None
    demo_separator: str = "\n\n"
    num_demos: int = 0
    with_explanations: bool = False
    options_block: str = "\nOptions: {options}"
    shares_layout: bool = False
    shares_definition: bool = False
    shares_explanations: bool = False

    def __post_init__(self):
        if not self.name:
            raise ValueError("a template needs a non-empty name")
        checks = [("header", self.header, _HEADER_FIELDS), ("query", self.query, _QUERY_FIELDS),
                  ("demo", self.demo, _DEMO_FIELDS), ("options_block", self.options_block, _OPTIONS_FIELDS)]
        if self.demo_without_explanation is not None:
            checks.append(("demo_without_explanation", self.demo_without_explanation, _DEMO_FIELDS))
        for what, fmt, allowed in checks:
            try:
                used = _fields(fmt)
            except ValueError as e:
                raise ValueError(f"template {self.name!r}: {what} {fmt!r} is not a valid format string: {e}") from e
            bad = sorted(f for f in used if f not in allowed)
            if bad:
                raise ValueError(
                    f"template {self.name!r}: {what} uses unknown field(s) {bad}; allowed: {sorted(allowed)}"
                )
        if "input" not in _fields(self.query):
            raise ValueError(f"template {self.name!r}: query {self.query!r} must contain {{input}}")
        if "options" not in _fields(self.options_block):
            raise ValueError(f"template {self.name!r}: options_block {self.options_block!r} must contain {{options}}")
        if self.num_demos < 0:
            raise ValueError(f"template {self.name!r}: num_demos must be >= 0, got {self.num_demos}")


@dataclasses.dataclass(frozen=True)
class RenderedPrompt:
    """A rendered prompt. ``demos_used`` counts the demonstrations in ``text`` (after dropping ``demos_dropped``);
    ``input_chars_cut`` is how many characters were cut from the left of the (stripped) input; ``num_tokens`` is
    ``count_tokens(text)`` when a counter was given, else None; ``fits`` is False only when no cut could fit."""

    text: str
    template: str
    demos_used: int
    demos_dropped: int
    input_chars_cut: int
    fits: bool
    num_tokens: int | None = None


class PromptTooLongError(ValueError):
    """A prompt cannot fit ``max_tokens`` even with no demonstrations and an empty input (``render(strict=True)``)."""

    def __init__(self, task: str, instance_id: str, template: str, num_tokens: int, max_tokens: int):
        self.task, self.instance_id, self.template = task, instance_id, template
        self.num_tokens, self.max_tokens = num_tokens, max_tokens
        super().__init__(
            f"task {task!r}, instance {instance_id!r}, template {template!r}: the prompt needs {num_tokens} tokens "
            f"with no demonstrations and an empty input, more than max_tokens={max_tokens}"
        )


_T1_HEADER = "Definition: {definition}\n\n"
_T1_QUERY = "Input: {input}\nOutput:"

TEMPLATES: dict[str, Template] = {}


def register_template(template: Template, *, overwrite: bool = False) -> Template:
    """Add a template to :data:`TEMPLATES` (so configs can name it); an existing name needs ``overwrite=True``."""
    if not isinstance(template, Template):
        raise TypeError(f"register_template expects a Template, got {type(template).__name__}")
    if template.name in TEMPLATES and not overwrite:
        raise ValueError(f"template {template.name!r} already exists; pass overwrite=True to replace it")
    TEMPLATES[template.name] = template
    return template


for _t in (
    Template(
        name="T1",
        description="zero-shot, NIV2 style: definition, then the input, then 'Output:'",
        header=_T1_HEADER,
        query=_T1_QUERY,
        num_demos=0,
        shares_layout=True,
        shares_definition=True,
    ),
    Template(
        name="T2",
        description="few-shot, NIV2 style: definition, 2 positive examples (outputs only), then the input",
        header=_T1_HEADER,
        demo="Input: {input}\nOutput: {output}",
        query=_T1_QUERY,
        num_demos=2,
        shares_layout=True,
        shares_definition=True,
    ),
    Template(
        name="T3",
        description="few-shot with explanations: 2 positive examples, each explanation before its answer",
        header=_T1_HEADER,
        demo="Input: {input}\nOutput: {explanation} So the answer is {answer}.",
        demo_without_explanation="Input: {input}\nOutput: So the answer is {answer}.",
        query=_T1_QUERY,
        num_demos=2,
        with_explanations=True,
        shares_layout=True,
        shares_definition=True,
        shares_explanations=True,
    ),
    Template(
        name="T4",
        description="plain question answering, no definition",
        query="Question: {input}\nAnswer:",
    ),
    Template(
        name="T5",
        description="instruction after the input, with a step-by-step cue",
        query="{input}\n\n{definition}\nAnswer: Let's think step by step.",
        shares_definition=True,
    ),
):
    register_template(_t)
del _t


def template_names() -> list[str]:
    """Names of the registered templates (T1..T5 first, then user templates in registration order)."""
    return list(TEMPLATES)


def get_template(name: str | Template) -> Template:
    """A registered template by name (case-insensitive); a :class:`Template` passes through. Unknown -> ValueError."""
    if isinstance(name, Template):
        return name
    if name in TEMPLATES:
        return TEMPLATES[name]
    for key, t in TEMPLATES.items():
        if key.lower() == str(name).lower():
            return t
    raise ValueError(f"unknown template {name!r}; valid templates: {', '.join(TEMPLATES)}")


_SENTENCE_END = (".", "!", "?", '"', "'", ")")


def _answer(output: str) -> str:
    return output[:-1] if output.endswith(".") else output


def _demo_texts(t: Template, task: Any, k: int, block: str) -> list[str]:
    examples = list(getattr(task, "positive_examples", []))
    if t.with_explanations:  # examples that carry an explanation first, file order otherwise
        examples.sort(key=lambda ex: not ex.explanation.strip())
    definition = task.definition.strip()
    out = []
    for ex in examples[:k]:
        explanation = ex.explanation.strip()
        if explanation and not explanation.endswith(_SENTENCE_END):
            explanation += "."  # "... is 14 So the answer is" -> "... is 14. So the answer is"
        fmt = t.demo if (explanation or t.demo_without_explanation is None) else t.demo_without_explanation
        output = ex.output.strip()
        out.append(fmt.format(input=ex.input.strip() + block, output=output, answer=_answer(output),
                              explanation=explanation, definition=definition))
    return out


def _assemble(t: Template, definition: str, demos: list[str], input_text: str, block: str) -> str:
    head = t.header.format(definition=definition)
    body = "".join(d + t.demo_separator for d in demos)
    return head + body + t.query.format(input=input_text + block, definition=definition)


def render(
    template: str | Template,
    task: Any,
    instance: Any,
    *,
    count_tokens: Callable[[str], int] | None = None,
    max_tokens: int | None = None,
    num_demos: int | None = None,
    strict: bool = False,
    options: Sequence[str] | None = None,
) -> RenderedPrompt:
    """Render ``instance`` of ``task`` (an ``niv2.Task`` / ``niv2.Instance`` or look-alikes) with ``template``.

    ``num_demos`` overrides the template's number of demonstrations (capped by the positive examples available).
    ``options``: the task's answer options, listed (in the given order) after the input of the query and of every
    demonstration (module docstring); None or empty: no options block.
    Fitting happens only when both ``count_tokens`` and ``max_tokens`` are given: then ``count_tokens(text) <=
    max_tokens`` holds for the returned text whenever ``fits`` is True. With ``strict=True`` an impossible fit raises
    :class:`PromptTooLongError` instead of returning ``fits=False`` (whose text is the fully reduced prompt).
    """
    t = get_template(template)
    if (count_tokens is None) != (max_tokens is None):
        raise ValueError("render: give both count_tokens and max_tokens to fit a context, or neither")
    k = t.num_demos if num_demos is None else num_demos
    if k < 0:
        raise ValueError(f"render: num_demos must be >= 0, got {k}")
    definition = task.definition.strip()
    block = t.options_block.format(options=", ".join(o.strip() for o in options)) if options else ""
    demos = _demo_texts(t, task, k, block)
    text_input = instance.input.strip()
    text = _assemble(t, definition, demos, text_input, block)
    if count_tokens is None:
        return RenderedPrompt(text, t.name, len(demos), 0, 0, True, None)

    n = count_tokens(text)
    dropped = 0
    while n > max_tokens and demos:
        demos.pop()
        dropped += 1
        text = _assemble(t, definition, demos, text_input, block)
        n = count_tokens(text)
    if n <= max_tokens:
        return RenderedPrompt(text, t.name, len(demos), dropped, 0, True, n)

    # No demonstrations left and still too long: cut the input from the left.
    empty = _assemble(t, definition, [], "", block)
    n_empty = count_tokens(empty)
    if n_empty > max_tokens:
        if strict:
            raise PromptTooLongError(getattr(task, "name", "?"), getattr(instance, "id", "?"), t.name, n_empty,
                                     max_tokens)
        return RenderedPrompt(empty, t.name, 0, dropped, len(text_input), False, n_empty)
    lo, hi = 0, len(text_input)  # invariant: cutting lo chars does not fit, cutting hi chars fits
    best_text, best_n = empty, n_empty
    while hi - lo > 1:
        mid = (lo + hi) // 2
        cand = _assemble(t, definition, [], text_input[mid:], block)
        c = count_tokens(cand)
        if c <= max_tokens:
            hi, best_text, best_n = mid, cand, c
        else:
            lo = mid
    return RenderedPrompt(best_text, t.name, 0, dropped, hi, True, best_n)
