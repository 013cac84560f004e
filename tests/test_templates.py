"""Prompt templates T1..T5: exact layouts, rendering of every real task instance, context fitting, user templates."""

from __future__ import annotations

import pathlib

import pytest
from helpers import real_task_files

from alert_jax.data import finetune, niv2, templates
from alert_jax.data.examples import RationaleExample
from alert_jax.data.templates import Template, get_template, render

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "niv2"
TOY = niv2.load_task(FIXTURES / "old_format_toy_task.json")
DEF = "Add the two numbers and answer with their sum."
BUILTIN = ["T1", "T2", "T3", "T4", "T5"]


def cheap_count(text: str) -> int:
    return len(text) // 4 + 1


def word_count(text: str) -> int:
    return len(text.split())


def test_exact_layouts():
    inst = TOY.instances[0]
    expected = {
        "T1": f"Definition: {DEF}\n\nInput: 7 and 8\nOutput:",
        "T2": f"Definition: {DEF}\n\nInput: 2 and 3\nOutput: 5\n\nInput: 10 and 4\nOutput: 14\n\n"
              "Input: 7 and 8\nOutput:",
        "T3": (
            f"Definition: {DEF}\n\n"
            "Input: 2 and 3\nOutput: 2 plus 3 is 5. So the answer is 5.\n\n"
            "Input: 10 and 4\nOutput: 10 plus 4 is 14. So the answer is 14.\n\n"
            "Input: 7 and 8\nOutput:"
        ),
        "T4": "Question: 7 and 8\nAnswer:",
        "T5": f"7 and 8\n\n{DEF}\nAnswer: Let's think step by step.",
    }
    for name, text in expected.items():
        got = render(name, TOY, inst)
        assert got.text == text, name
        assert (got.template, got.demos_dropped, got.input_chars_cut, got.fits, got.num_tokens) == \
            (name, 0, 0, True, None)
        assert got.demos_used == (2 if name in ("T2", "T3") else 0)


def test_num_demos_override_and_missing_explanation():
    inst = TOY.instances[1]
    assert render("T2", TOY, inst, num_demos=0).text == render("T1", TOY, inst).text
    one = render("T1", TOY, inst, num_demos=1)
    assert one.demos_used == 1
    assert one.text == f"Definition: {DEF}\n\nInput: 2 and 3\nOutput: 5\n\nInput: 6 and 1\nOutput:"
    three = render("T3", TOY, inst, num_demos=3)  # the third example has no explanation: no empty explanation slot
    assert three.demos_used == 3
    assert "Input: 1 and 1\nOutput: So the answer is 2.\n\nInput: 6 and 1\nOutput:" in three.text
    many = render("T2", TOY, inst, num_demos=10)  # capped by the examples available
    assert many.demos_used == 3 and many.demos_dropped == 0
    with pytest.raises(ValueError, match="num_demos"):
        render("T2", TOY, inst, num_demos=-1)
    with pytest.raises(ValueError, match="both count_tokens and max_tokens"):
        render("T1", TOY, inst, count_tokens=cheap_count)


def test_answer_period_not_doubled():
    task = niv2.parse_task(
        {"Definition": "d", "Positive Examples": [{"input": "q", "output": "He left.", "explanation": "Because"}],
         "Instances": [{"id": "i0", "input": "x", "output": ["y"]}]},
        name="toy",
    )
    text = render("T3", task, task.instances[0], num_demos=1).text
    assert "Output: Because. So the answer is He left.\n\n" in text and ".." not in text


def test_get_template_and_flags():
    assert templates.template_names()[:5] == BUILTIN
    assert get_template("t3") is templates.TEMPLATES["T3"]
    with pytest.raises(ValueError) as err:
        get_template("T9")
    assert "T9" in str(err.value) and all(n in str(err.value) for n in BUILTIN)
    assert templates.FINETUNING_TRAITS == ("shares_layout", "shares_definition", "shares_explanations")
    assert get_template("T3").with_explanations and not get_template("T2").with_explanations
    assert [get_template(n).num_demos for n in BUILTIN] == [0, 2, 2, 0, 0]
    assert "{definition}" not in get_template("T4").header + get_template("T4").query


# ------------------------------------------------------------------------------------ what templates share with FT


_D, _I = "Define the sentinel task.", "the query sentinel"


def _probe_task():
    examples = [{"input": f"demo input {k}", "output": f"label{k}", "explanation": f"Reason number {k}."}
                for k in (1, 2)]
    return niv2.parse_task({"Definition": _D, "Positive Examples": examples,
                            "Instances": [{"id": "p0", "input": _I, "output": ["label1"]}]}, name="task9003_probe")


@pytest.mark.parametrize("name", BUILTIN)
def test_finetuning_traits_match_the_template_text(name):
    """Each flag is checked against the prompt the template renders, with the finetuning side taken from
    data/finetune.py (its PROMPT_FORMAT and format_example's CoT target), not from a list written here."""
    t, task = get_template(name), _probe_task()
    inst = task.instances[0]
    zero_shot = render(name, task, inst, num_demos=0).text
    full = render(name, task, inst).text
    # layout: without demonstrations, the template's header + query ARE the finetuning prompt
    assert t.shares_layout == (zero_shot == finetune.PROMPT_FORMAT.format(definition=_D, prompt=_I))
    # definition: the finetuning prompt always carries a definition
    assert t.shares_definition == (_D in full)
    # explanations: some demonstration answers exactly as an OPT-CoT target would
    cot_targets = [finetune.format_example(RationaleExample("probe", ex.input, ex.explanation, ex.output), "cot")[1]
                   for ex in task.positive_examples]
    assert t.shares_explanations == any(target in full for target in cot_targets)


def test_finetuning_traits_truth_table():
    """The flags the parametrized test verifies, as a table a reader can check (T3 shares layout AND explanations)."""
    table = {n: tuple(getattr(get_template(n), f) for f in templates.FINETUNING_TRAITS) for n in BUILTIN}
    assert table == {"T1": (True, True, False), "T2": (True, True, False), "T3": (True, True, True),
                     "T4": (False, False, False), "T5": (False, True, False)}


def test_register_user_template():
    custom = Template(
        name="QA-defn",
        description="definition last",
        query="Q: {input}\n({definition})\nA:",
        demo="Q: {input}\nA: {output}",
        demo_separator="\n###\n",
        num_demos=1,
    )
    try:
        templates.register_template(custom)
        got = render("QA-defn", TOY, TOY.instances[0])
        assert got.text == f"Q: 2 and 3\nA: 5\n###\nQ: 7 and 8\n({DEF})\nA:" and got.demos_used == 1
        with pytest.raises(ValueError, match="already exists"):
            templates.register_template(custom)
        templates.register_template(Template(name="QA-defn", description="", query="{input} ->"), overwrite=True)
        assert render("QA-defn", TOY, TOY.instances[0]).text == "7 and 8 ->"
    finally:
        templates.TEMPLATES.pop("QA-defn", None)
    with pytest.raises(ValueError, match="unknown field"):
        Template(name="bad", description="", query="{input} {answer}")
    with pytest.raises(ValueError, match="must contain"):
        Template(name="bad", description="", query="Answer:")
    with pytest.raises(ValueError, match="valid format string"):
        Template(name="bad", description="", query="{input", header="")


# ------------------------------------------------------------------------------------------------ context fitting


def _long_task(demo_words: int, input_words: int):
    demo_in = " ".join(f"d{i}" for i in range(demo_words))
    return niv2.parse_task(
        {
            "Definition": "Say the last word.",
            "Positive Examples": [
                {"input": demo_in, "output": "a", "explanation": "e"},
                {"input": demo_in, "output": "b", "explanation": "e"},
            ],
            "Instances": [{"id": "task9002-long", "input": " ".join(f"w{i}" for i in range(input_words)),
                           "output": ["x"]}],
        },
        name="task9002_long",
    )


def test_fitting_drops_demos_one_at_a_time():
    task = _long_task(demo_words=50, input_words=10)
    inst = task.instances[0]
    full = word_count(render("T2", task, inst).text)
    one = word_count(render("T2", task, inst, num_demos=1).text)
    got = render("T2", task, inst, count_tokens=word_count, max_tokens=one)
    assert full > one and (got.demos_used, got.demos_dropped, got.input_chars_cut) == (1, 1, 0)
    assert got.fits and got.num_tokens == word_count(got.text) <= one
    assert got.text == render("T2", task, inst, num_demos=1).text  # the first demonstration is the one kept
    roomy = render("T2", task, inst, count_tokens=word_count, max_tokens=full)
    assert (roomy.demos_used, roomy.demos_dropped) == (2, 0) and roomy.num_tokens == full


def test_fitting_cuts_input_from_the_left_after_dropping_demos():
    task = _long_task(demo_words=50, input_words=300)
    inst = task.instances[0]
    max_tokens = 100
    got = render("T3", task, inst, count_tokens=word_count, max_tokens=max_tokens)
    assert got.fits and got.demos_used == 0 and got.demos_dropped == 2
    assert word_count(got.text) == got.num_tokens <= max_tokens
    # independent reference: the smallest left cut (linear scan) that fits without demonstrations
    header = f"Definition: {task.definition}\n\nInput: "
    reference = next(c for c in range(len(inst.input) + 1)
                     if word_count(header + inst.input[c:] + "\nOutput:") <= max_tokens)
    assert got.input_chars_cut == reference > 0
    assert got.text == header + inst.input[reference:] + "\nOutput:"
    assert got.text.endswith("w299\nOutput:")  # the end of the input survives


def test_impossible_fit_is_reported():
    task = _long_task(demo_words=5, input_words=5)
    inst = task.instances[0]
    got = render("T2", task, inst, count_tokens=cheap_count, max_tokens=3)
    assert not got.fits and got.demos_dropped == 2 and got.input_chars_cut == len(inst.input)
    assert got.num_tokens == cheap_count(got.text) > 3
    with pytest.raises(templates.PromptTooLongError) as err:
        render("T5", task, inst, count_tokens=cheap_count, max_tokens=3, strict=True)
    msg = str(err.value)
    assert "task9002_long" in msg and "task9002-long" in msg and "'T5'" in msg and "max_tokens=3" in msg
    assert isinstance(err.value, ValueError)


# ------------------------------------------------------------------------------------------------ real tasks


@pytest.mark.parametrize("filename", real_task_files())
def test_every_template_renders_every_real_instance(niv2_tasks_dir, filename):
    task = niv2.load_task(niv2_tasks_dir / filename)
    endings = {"T1": "\nOutput:", "T2": "\nOutput:", "T3": "\nOutput:", "T4": "\nAnswer:",
               "T5": "\nAnswer: Let's think step by step."}
    for name in BUILTIN:
        t = get_template(name)
        want_demos = min(t.num_demos, len(task.positive_examples))
        for inst in task.instances:
            got = render(name, task, inst, count_tokens=cheap_count, max_tokens=2048)
            assert got.fits and cheap_count(got.text) == got.num_tokens <= 2048, (name, inst.id)
            assert got.text.endswith(endings[name]), (name, inst.id)
            assert inst.input.strip()[got.input_chars_cut:] in got.text
            assert got.demos_used + got.demos_dropped == want_demos
            if name in ("T1", "T2", "T3"):
                assert got.text.startswith("Definition: " + task.definition.strip())
            if name == "T4":
                assert task.definition.strip() not in got.text
            if name == "T3" and got.demos_used:
                assert got.text.count(" So the answer is ") == got.demos_used
