"""Answer options (ALERT's classification-as-generation prompts): the label set, its block in every template,
context fitting, registry overrides, and that rendering without options is unchanged."""

from __future__ import annotations

import pytest

from alert_jax.data import niv2
from alert_jax.data import registry as registry_lib
from alert_jax.data.templates import get_template, render, template_names

BUILTIN = ["T1", "T2", "T3", "T4", "T5"]
STANCE = "task513_argument_stance_classification"
CUES = {"T1": "\nOutput:", "T2": "\nOutput:", "T3": "\nOutput:", "T4": "\nAnswer:",
        "T5": "\n\nPick one.\nAnswer: Let's think step by step."}  # what follows the query's input


def _task(outputs_per_instance, demo_outputs=("a", "b"), inputs=None, name="task9100_toy"):
    instances = [{"id": f"i{k}", "input": (inputs[k] if inputs else f"question {k}"), "output": list(outs)}
                 for k, outs in enumerate(outputs_per_instance)]
    demos = [{"input": f"demo {k}", "output": o, "explanation": f"Because {k}."} for k, o in enumerate(demo_outputs)]
    return niv2.parse_task({"Definition": "Pick one.", "Positive Examples": demos, "Instances": instances}, name=name)


def _stance_task(niv2_tasks_dir):
    return niv2.load_task(STANCE, niv2_tasks_dir)


# ---------------------------------------------------------------------------------------------- the label set


def test_label_set_is_sorted_distinct_outputs_with_demos():
    task = _task([["yes"], ["No", "yes "]], demo_outputs=("maybe",))
    # case-sensitive order: upper case sorts before lower case; stripped; demo outputs count
    assert niv2.answer_options(task, 10) == ["No", "maybe", "yes"]
    assert niv2.answer_options(task, 2) is None  # 3 distinct strings > 2


def test_max_options_boundary():
    ten = _task([[f"label{k}"] for k in range(8)], demo_outputs=("label8", "label9"))
    eleven = _task([[f"label{k}"] for k in range(9)], demo_outputs=("label9", "label10"))
    assert niv2.answer_options(ten, 10) == sorted(f"label{k}" for k in range(10))
    assert niv2.answer_options(eleven, 10) is None
    assert niv2.answer_options(eleven, 11) == sorted(f"label{k}" for k in range(11))
    assert niv2.answer_options(_task([["same"], ["same"]], demo_outputs=("same",)), 10) is None  # no choice


def test_registry_options_override_the_computed_ones():
    task = _task([["a"], ["b"]], name="task9100_toy")
    plain = registry_lib.Registry((registry_lib.Dataset("task9100_toy", "s", True),))
    assert plain.answer_options(task, 10) == ["a", "b"]
    declared = registry_lib.Registry.from_config(
        {"datasets": [{"name": "task9100_toy", "skill": "s", "options": ["zeta", "alpha", "b"]}]})
    assert declared.answer_options(task, 10) == ["alpha", "b", "zeta"]  # the declared set, in the fixed order
    assert declared.answer_options(task, 1) == ["alpha", "b", "zeta"]  # max_options limits computed sets only
    none = registry_lib.Registry((registry_lib.Dataset("task9100_toy", "s", True, options=()),))
    assert none.answer_options(task, 10) is None  # declared: no options
    generated = _task([[f"w{k}"] for k in range(20)])
    assert declared.answer_options(generated, 10) == ["alpha", "b", "zeta"]
    with pytest.raises(ValueError, match="options must be a list"):
        registry_lib.Registry.from_config({"datasets": [{"name": "t", "skill": "s", "options": "a,b"}]})


# ---------------------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("name", BUILTIN)
def test_block_follows_every_input_demos_and_query_alike(name):
    task = _task([["a"], ["b"]], demo_outputs=("a", "b"))
    got = render(name, task, task.instances[0], options=["a", "b"])
    block = "\nOptions: a, b"
    t = get_template(name)
    inputs = [ex.input for ex in task.positive_examples[:t.num_demos]] + [task.instances[0].input]
    assert got.text.count(block) == len(inputs) == got.demos_used + 1
    for text in inputs:  # each input, demonstration or query, is immediately followed by the block
        assert text + block in got.text
    assert got.text.endswith(task.instances[0].input + block + CUES[name])  # block before the cue


@pytest.mark.parametrize("name", BUILTIN)
def test_no_options_renders_the_prompt_unchanged(name):
    """``eval.append_options=False`` passes options=None: exactly the prompt of a render that never heard of them."""
    task = _task([["a"], ["b"]])
    inst = task.instances[1]
    plain = render(name, task, inst)
    assert render(name, task, inst, options=None).text == plain.text == render(name, task, inst, options=[]).text
    assert "Options:" not in plain.text


def test_context_fitting_never_cuts_the_block():
    words = " ".join(f"w{i}" for i in range(300))
    task = _task([["against"], ["in favor"]], demo_outputs=("against", "in favor"), inputs=[words, "short"])
    inst, options = task.instances[0], ["against", "in favor"]

    def count(text):
        return len(text.split())

    got = render("T2", task, inst, count_tokens=count, max_tokens=60, options=options)
    assert got.fits and got.demos_dropped == 2 and got.input_chars_cut > 0 and got.num_tokens <= 60
    assert got.text.endswith("w299\nOptions: against, in favor\nOutput:")
    # independent reference: the smallest left cut (linear scan) that fits with the block kept whole
    head, tail = f"Definition: {task.definition}\n\nInput: ", "\nOptions: against, in favor\nOutput:"
    cut = next(c for c in range(len(inst.input) + 1) if count(head + inst.input[c:] + tail) <= 60)
    assert got.input_chars_cut == cut and got.text == head + inst.input[cut:] + tail
    # dropping demonstrations keeps the block of the ones left and of the query
    one = render("T2", task, task.instances[1], count_tokens=count,
                 max_tokens=count(render("T2", task, task.instances[1], num_demos=1, options=options).text),
                 options=options)
    assert one.demos_used == 1 and one.text.count("\nOptions: against, in favor\n") == 2


# ---------------------------------------------------------------------------------------------- real task files


def test_real_stance_task_lists_its_options_in_every_template(niv2_tasks_dir):
    task = _stance_task(niv2_tasks_dir)
    options = registry_lib.ALERT.answer_options(task, 10)
    assert options == ["against", "in favor"]
    inst = task.instances[0]
    t4 = render("T4", task, inst, options=options).text
    assert t4 == f"Question: {inst.input.strip()}\nOptions: against, in favor\nAnswer:"
    for name in template_names()[:5]:
        got = render(name, task, inst, count_tokens=lambda s: len(s) // 4 + 1, max_tokens=2048, options=options)
        assert got.fits and got.text.count("Options: against, in favor") == got.demos_used + 1, name
        assert got.demos_used == min(get_template(name).num_demos, len(task.positive_examples))


@pytest.mark.parametrize("name", ["task835_mathdataset_answer_generation", "task080_piqa_answer_generation"])
def test_real_generation_tasks_get_no_options(niv2_tasks_dir, name):
    task = niv2.load_task(name, niv2_tasks_dir)
    assert registry_lib.ALERT.answer_options(task, 10) is None
    assert "Options:" not in render("T2", task, task.instances[0], options=None).text


def test_real_multiple_choice_math_task_has_letter_options(niv2_tasks_dir):
    """task104 (closed-vocabulary math) is a multiple-choice task: its references are the letters A-E."""
    task = niv2.load_task("task104_semeval_2019_task10_closed_vocabulary_mathematical_answer_generation",
                          niv2_tasks_dir)
    assert niv2.answer_options(task, 10) == ["A", "B", "C", "D", "E"]
