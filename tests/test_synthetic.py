"""Tests of the synthetic data generator (alert_jax/data/synthetic.py): task files, corpus, pretraining text."""

from __future__ import annotations

import collections
import json
import pathlib
import re

import pytest

from alert_jax.data import synthetic, synthetic_world

NIV2_KEYS = [
    "Contributors", "Source", "URL", "Categories", "Reasoning", "Definition", "Input_language", "Output_language",
    "Instruction_language", "Domains", "Positive Examples", "Negative Examples", "Instances", "Instance License",
]
MATH_TASKS = ("synth_math_add_sub", "synth_math_two_step", "synth_dev_math_compare")


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("synth")
    synthetic.write_synthetic_tasks(out, seed=0)
    return out


@pytest.fixture(scope="module")
def tasks(tasks_dir) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(tasks_dir.glob("*.json"))}


def _eval_inputs(tasks: dict[str, dict]) -> set[str]:
    out = set()
    for t in tasks.values():
        out |= {i["input"] for i in t["Instances"]}
        out |= {e["input"] for e in t["Positive Examples"] + t["Negative Examples"]}
    return out


# -- an independent solver for the arithmetic tasks (regexes over the input text, not the generator's code) --------


def solve_math(text: str) -> int:
    start = re.match(r"(\w+) has (\d+) \w+(?: and (\w+) has (\d+) \w+)?\.", text)
    assert start, text
    if start.group(3):  # two people: comparison or total
        a, b = int(start.group(2)), int(start.group(4))
        return a + b if "together" in text else abs(b - a)
    total = int(start.group(2))
    for m in re.finditer(r"(buys|finds|gets|gives|loses|sells) (\d+)", text):
        total += int(m.group(2)) if m.group(1) in ("buys", "finds", "gets") else -int(m.group(2))
    return total


def test_solver_on_handwritten_problems():
    assert solve_math("Tom has 3 apples. Tom buys 4 more apples. How many apples does Tom have now?") == 7
    assert solve_math("Tom has 9 pens. Tom buys 2 more and then gives 5 to Anna. How many pens?") == 6
    assert solve_math("Tom has 3 cups and Anna has 8 cups. How many more cups does Anna have than Tom?") == 5


# -- task files ------------------------------------------------------------------------------------------------------


def test_writes_registry_and_dev_files(tasks_dir, tmp_path):
    names = sorted(p.stem for p in tasks_dir.glob("*.json"))
    assert names == sorted(synthetic.TASK_NAMES + synthetic.SYNTHETIC_DEV_SET)
    assert len(synthetic.TASK_NAMES) == 20 and len(synthetic.SYNTHETIC_DEV_SET) == 3
    paths = synthetic.write_synthetic_tasks(tmp_path, seed=0, instances_per_task=2, include_dev=False)
    assert [pathlib.Path(p).stem for p in paths] == list(synthetic.TASK_NAMES)


def test_task_files_have_niv2_format(tasks_dir, tasks):
    for name, t in tasks.items():
        text = (tasks_dir / f"{name}.json").read_text(encoding="utf-8")
        assert text == json.dumps(t, indent=4, ensure_ascii=False), name  # house format, no trailing newline
        assert list(t) == NIV2_KEYS, name
        assert all(isinstance(v, list) and v for v in t.values()), name
        assert len(t["Definition"]) == 1 and isinstance(t["Definition"][0], str)
        for ex in t["Positive Examples"] + t["Negative Examples"]:
            assert set(ex) == {"input", "output", "explanation"} and all(isinstance(v, str) and v for v in ex.values())
        assert len(t["Positive Examples"]) == 3 and len(t["Negative Examples"]) == 1
        ids = [i["id"] for i in t["Instances"]]
        assert len(t["Instances"]) == 50 and len(set(ids)) == 50
        assert all(re.fullmatch(rf"{name}-[0-9a-f]{{32}}", i) for i in ids), ids[:3]
        inputs = [i["input"] for i in t["Instances"]]
        assert len(set(inputs)) == 50, f"{name}: duplicate instance inputs"
        assert not set(inputs) & {e["input"] for e in t["Positive Examples"] + t["Negative Examples"]}
        for inst in t["Instances"]:
            assert inst["output"] and all(isinstance(o, str) and o.strip() for o in inst["output"])
        for ex in t["Positive Examples"]:  # explanations are rationales; T3 adds "So the answer is" itself
            assert ex["explanation"].endswith(".") and "answer is" not in ex["explanation"]


def test_no_unfilled_placeholders(tasks):
    for name, t in tasks.items():
        for inst in t["Instances"]:
            assert "{" not in inst["input"] and "}" not in inst["input"], (name, inst["input"])
        for ex in t["Positive Examples"]:
            assert "{" not in ex["explanation"], (name, ex["explanation"])


def test_negative_example_output_is_wrong(tasks):
    for name, t in tasks.items():
        neg = t["Negative Examples"][0]
        # the explanation ends with "The answer is <right>, not <wrong>."
        m = re.search(r"The answer is (.+), not (.+)\.$", neg["explanation"])
        assert m and m.group(2) == neg["output"] and m.group(1) != neg["output"], name


def test_files_load_through_niv2_and_registry(tasks_dir):
    niv2 = pytest.importorskip("alert_jax.data.niv2")
    alert = pytest.importorskip("alert_jax.data.registry")
    reg = alert.Registry.from_config(synthetic.synthetic_registry_config())
    assert reg.resolve("all") == list(synthetic.TASK_NAMES)
    assert reg.resolve("dev") == list(synthetic.SYNTHETIC_DEV_SET)
    assert synthetic.synthetic_registry().names == reg.names
    loaded = niv2.load_tasks(reg.resolve("all") + reg.resolve("dev"), tasks_dir)
    assert len(loaded) == 23
    for task in loaded.values():
        assert len(task.instances) == 50 and task.definition and len(task.positive_examples) == 3
    present, missing = alert.available(reg, tasks_dir)
    assert not missing and len(present) == 23


def test_in_domain_split_matches_alert_registry():
    alert = pytest.importorskip("alert_jax.data.registry")
    expected = {d.skill: d.in_domain for d in alert.DATASETS}  # the real registry's split by skill
    per_skill = collections.Counter(d["skill"] for d in synthetic.SYNTHETIC_REGISTRY)
    assert per_skill == {s: 2 for s in expected}
    for d in synthetic.SYNTHETIC_REGISTRY:
        assert d["in_domain"] is expected[d["skill"]], d
        assert d["name"].startswith("synth_")
    assert set(synthetic.IN_DOMAIN_SKILLS) == {"logical", "deductive", "commonsense", "textual entailment",
                                               "mathematics"}
    assert not set(synthetic.SYNTHETIC_DEV_SET) & set(synthetic.TASK_NAMES)


def test_deterministic_per_seed(tmp_path):
    a = synthetic.write_synthetic_tasks(tmp_path / "a", seed=3, instances_per_task=10)
    b = synthetic.write_synthetic_tasks(tmp_path / "b", seed=3, instances_per_task=10)
    c = synthetic.write_synthetic_tasks(tmp_path / "c", seed=4, instances_per_task=10)
    for pa, pb, pc in zip(a, b, c):
        ba, bb, bc = (pathlib.Path(p).read_bytes() for p in (pa, pb, pc))
        assert ba == bb, pa
        ia, ic = (json.loads(x)["Instances"] for x in (ba, bc))
        assert [i["input"] for i in ia] != [i["input"] for i in ic], pa
        assert not {i["id"] for i in ia} & {i["id"] for i in ic}
    assert synthetic.synthetic_corpus(5, 50) == synthetic.synthetic_corpus(5, 50)
    assert synthetic.synthetic_corpus(5, 50) != synthetic.synthetic_corpus(6, 50)
    assert synthetic.synthetic_pretraining_text(5, 50) == synthetic.synthetic_pretraining_text(5, 50)
    assert synthetic.synthetic_pretraining_text(5, 50) != synthetic.synthetic_pretraining_text(6, 50)


def test_sizes_and_prefix_stability(tmp_path, tasks):
    paths = synthetic.write_synthetic_tasks(tmp_path, seed=0, instances_per_task=7, num_positive_examples=2)
    for p in paths:
        small = json.loads(pathlib.Path(p).read_text(encoding="utf-8"))
        assert len(small["Instances"]) == 7 and len(small["Positive Examples"]) == 2
    # with the same demonstrations count, a smaller file's instances are a prefix of a larger one's
    paths = synthetic.write_synthetic_tasks(tmp_path / "p", seed=0, instances_per_task=7)
    for p in paths:
        name = pathlib.Path(p).stem
        assert json.loads(pathlib.Path(p).read_text())["Instances"] == tasks[name]["Instances"][:7]
    with pytest.raises(ValueError, match="instances_per_task"):
        synthetic.write_synthetic_tasks(tmp_path / "bad", instances_per_task=0)
    with pytest.raises(ValueError, match="distinct 'eval' inputs"):
        synthetic.write_synthetic_tasks(tmp_path / "huge", instances_per_task=5000)


# -- answers are right -------------------------------------------------------------------------------------------------


def test_math_answers_recomputed(tasks):
    for name in MATH_TASKS:
        t = tasks[name]
        for rec in t["Instances"]:
            assert rec["output"] == [str(solve_math(rec["input"]))], rec
        for ex in t["Positive Examples"]:
            assert ex["output"] == str(solve_math(ex["input"]))
            # the rationale derives the answer: its last equation evaluates to it
            a, op, b, c = re.findall(r"(\d+) ([+-]) (\d+) = (\d+)\.", ex["explanation"])[-1]
            assert int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b)) == int(ex["output"])
    two_step = tasks["synth_math_two_step"]["Positive Examples"]
    assert all(len(re.findall(r"\d+ [+-] \d+ = \d+", ex["explanation"])) == 2 for ex in two_step)


def test_other_answers_recomputed(tasks):
    for rec in tasks["synth_spatial_people"]["Instances"]:  # last place the asked person went to
        who = re.search(r"Where is (\w+)\?", rec["input"]).group(1)
        assert rec["output"][0] == re.findall(rf"{who} \w+ to the (\w+)\.", rec["input"])[-1]
    for rec in tasks["synth_dev_entail_numbers"]["Instances"]:
        a, word, b = re.search(r"has (\d+) \w+\.\nHypothesis: \w+ has (more|fewer) than (\d+)", rec["input"]).groups()
        holds = int(a) > int(b) if word == "more" else int(a) < int(b)
        assert rec["output"] == ["yes" if holds else "no"]
    for rec in tasks["synth_deduce_ordering"]["Instances"]:  # build the order from the two comparisons
        bigger = {}
        for x, cmp_, y in re.findall(r"(\w+) is (\w+) than (\w+)\.", rec["input"]):
            pair = (x, y) if cmp_ in ("taller", "older", "faster", "heavier") else (y, x)
            bigger[pair[0]] = pair[1]
        top = (set(bigger) - set(bigger.values())).pop()
        bottom = (set(bigger.values()) - set(bigger)).pop()
        want = top if re.search(r"the (tallest|oldest|fastest|heaviest)\?", rec["input"]) else bottom
        assert rec["output"] == [want], rec
    for rec in tasks["synth_common_animals"]["Instances"]:
        animal = re.search(r"does the (\w+) (?:eat|live|make)\?", rec["input"]).group(1)
        assert rec["output"][0] in synthetic_world.ANIMALS[animal]


def test_answers_are_balanced_enough(tasks):
    for name, t in tasks.items():
        counts = collections.Counter(i["output"][0] for i in t["Instances"])
        assert len(counts) >= 2 and counts.most_common(1)[0][1] <= 40, (name, counts)


# -- finetuning corpus and pretraining text --------------------------------------------------------------------------


def test_corpus_format_sizes_and_sources():
    from alert_jax.data.examples import RationaleExample
    corpus = synthetic.synthetic_corpus(seed=0, n=101)
    assert len(corpus) == 101 and all(isinstance(e, RationaleExample) for e in corpus)
    by_source = collections.Counter(e.source for e in corpus)
    in_domain = [d["name"] for d in synthetic.SYNTHETIC_REGISTRY if d["in_domain"]]
    assert set(by_source) == set(in_domain) and max(by_source.values()) - min(by_source.values()) <= 1
    for e in corpus:
        assert e.rationale.endswith(".") and "answer is" not in e.rationale and e.answer and e.prompt
    math_only = synthetic.synthetic_corpus(seed=0, n=40, skills=("mathematics",))
    assert {e.source for e in math_only} == {"synth_math_add_sub", "synth_math_two_step"}
    for e in math_only:
        assert e.answer == str(solve_math(e.prompt)), e
        assert e.rationale.endswith(f"= {e.answer}.")
    with pytest.raises(ValueError, match="valid: logical"):
        synthetic.synthetic_corpus(n=5, skills=("astrology",))


def test_corpus_and_pretraining_never_contain_eval_inputs(tasks):
    eval_inputs = _eval_inputs(tasks)
    train, valid = synthetic.synthetic_corpus_splits(seed=0, n_train=2000, n_valid=200)
    assert len(train) == 2000 and len(valid) == 200
    train_prompts, valid_prompts = {e.prompt for e in train}, {e.prompt for e in valid}
    assert len(train_prompts) == 2000  # no repeats at this size
    assert not train_prompts & eval_inputs
    assert not valid_prompts & eval_inputs
    assert not train_prompts & valid_prompts
    held_out = synthetic.synthetic_corpus(seed=0, n=200, skills=("causal", "spatial"))
    assert not {e.prompt for e in held_out} & eval_inputs
    docs = synthetic.synthetic_pretraining_text(seed=0, n=5000)
    assert len(docs) == 5000 and all(isinstance(d, str) and d for d in docs)
    assert not set(docs) & eval_inputs
    assert all(synthetic.split_of(x) == "eval" for x in eval_inputs)


def test_pretraining_text_has_inputs_but_no_answer_format(tasks):
    docs = synthetic.synthetic_pretraining_text(seed=1, n=3000)
    joined = "\n".join(docs)
    assert "answer is" not in joined and "Output:" not in joined
    assert not re.search(r"\d+ [+-] \d+ = \d+", joined)  # no worked arithmetic
    assert any(d.startswith("Premise:") for d in docs) and any("How many" in d for d in docs)
    # the vocabulary of the evaluation inputs is covered
    vocab = set(re.findall(r"[a-z]+", joined.lower()))
    eval_vocab = set(re.findall(r"[a-z]+", " ".join(_eval_inputs(tasks)).lower()))
    assert len(eval_vocab - vocab) <= 0.02 * len(eval_vocab), sorted(eval_vocab - vocab)


def test_finetuning_prompt_equals_t1_for_in_domain_tasks(tasks_dir):
    finetune = pytest.importorskip("alert_jax.data.finetune")
    templates = pytest.importorskip("alert_jax.data.templates")
    niv2 = pytest.importorskip("alert_jax.data.niv2")
    assert set(synthetic.CORPUS_DEFINITIONS) == set(synthetic.TASK_NAMES)
    for ex in synthetic.synthetic_corpus(seed=0, n=10):
        task = niv2.load_task(ex.source, tasks_dir)
        prompt, target = finetune.format_example(ex, "cot", definition=synthetic.CORPUS_DEFINITIONS[ex.source])
        t1 = templates.render("T1", task, niv2.Instance(id="x", input=ex.prompt, outputs=[ex.answer]))
        assert prompt == t1.text, ex.source
        assert target == f" {ex.rationale} So the answer is {ex.answer}."
