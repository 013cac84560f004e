"""The synthetic evaluation tasks (alert_jax.data.synthetic): one example generator per task, and the task list.

Each generator maps a ``random.Random`` to a :class:`Sample` ``(input, answers, rationale)`` over the fixed world of
:mod:`alert_jax.data.synthetic_world`: answers come from deterministic rules, and the rationale derives the answer step
by step, copying the input's wording before each equation (``"Tom has 3 apples. Tom buys 4 more, so 3 + 4 = 7."``).
The ``@_task(...)`` line above a generator declares its task (name, skill, NIV2 category, reasoning tags and
definition), so each definition sits next to the code whose answers it describes. :data:`TASK_SPECS` lists the 20
evaluation tasks (two per ALERT skill) and :data:`DEV_TASK_SPECS` the three dev tasks, both in definition order, which
is the registry order (and part of the random streams of alert_jax.data.synthetic). Splitting samples into eval /
valid / train and assembling task files and corpora is alert_jax.data.synthetic's job."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple

from alert_jax.data.synthetic_world import (
    ACTS,
    ANIMALS,
    ATTRS,
    CATEGORIES,
    CAUSES,
    COMPARATIVES,
    CONS,
    CONTAINERS,
    ITEMS,
    MEMBER_OF,
    NAMES,
    NONCE,
    PLACES,
    PROS,
    STORIES,
    THINGS,
    TOOLS,
    TOPICS,
    text_table,
)
from alert_jax.data.synthetic_world import cap_first as _cap
from alert_jax.data.synthetic_world import lower_first as _low
from alert_jax.data.synthetic_world import with_article as _a

__all__ = ["DEV_TASK_SPECS", "TASK_SPECS", "Sample", "TaskSpec"]


class Sample(NamedTuple):
    """One generated example of a task."""

    input: str
    answers: tuple[str, ...]  # answers[0] is canonical; the rest are other acceptable spellings
    rationale: str  # ends with '.', never contains "So the answer is"


class TaskSpec(NamedTuple):
    """A synthetic task: its registry entry, its generator and the metadata of its NIV2 task file."""

    name: str
    skill: str
    in_domain: bool
    generate: Callable[[random.Random], Sample]
    definition: str
    category: str
    reasoning: tuple[str, ...]


def _noun_answers(word: str) -> tuple[str, ...]:
    return (word, f"the {word}", f"in the {word}")


# ---------------------------------------------------------------------------------------------------------------------
# Task registration: each generator below is declared a task by the @_task decorator just above it
# ---------------------------------------------------------------------------------------------------------------------

_IN_DOMAIN_SKILLS = ("logical", "deductive", "commonsense", "textual entailment", "mathematics")  # ALERT's split
_EVAL_TASKS: list[TaskSpec] = []
_DEV_TASKS: list[TaskSpec] = []
_YN = "Answer with yes or no."
_Generator = Callable[[random.Random], Sample]


def _task(
    name: str, skill: str, category: str, reasoning: tuple[str, ...], definition: str, *, dev: bool = False
) -> Callable[[_Generator], _Generator]:
    """Register the decorated generator as task ``name`` of ``skill`` (a dev task if ``dev``), with the NIV2 metadata
    of its task file. Tasks are listed in the order they are defined here, which is the registry order; a task is
    in-domain exactly when its skill is one of ALERT's finetuning skills."""

    def register(generate: _Generator) -> _Generator:
        spec = TaskSpec(name, skill, skill in _IN_DOMAIN_SKILLS, generate, definition, category, reasoning)
        (_DEV_TASKS if dev else _EVAL_TASKS).append(spec)
        return generate

    return register


# ---------------------------------------------------------------------------------------------------------------------
# Generators, in registry order (two per skill, then the dev tasks). Each maps a random.Random to a Sample.
# ---------------------------------------------------------------------------------------------------------------------


# syllogism forms: premises | conclusion | does it follow | rationale; {A}, {B}, {C} are three nonce plurals
_SYLLOGISMS = text_table("""
All {A} are {B}. All {B} are {C}.|all {A} are {C}|yes|All {A} are {B} and all {B} are {C}, so all {A} are {C}.
All {A} are {B}. All {A} are {C}.|all {B} are {C}|no|Some {B} may not be {A}, so those {B} need not be {C}.
All {A} are {B}. No {B} are {C}.|no {A} are {C}|yes|All {A} are {B} and no {B} are {C}, so no {A} can be {C}.
Some {A} are {B}. All {B} are {C}.|all {A} are {C}|no|Only some {A} are {B}, so the other {A} need not be {C}.
All {A} are {B}. Some {C} are {A}.|some {C} are {B}|yes|Some {C} are {A} and all {A} are {B}, so those {C} are {B}.
No {A} are {B}. All {C} are {B}.|some {C} are {A}|no|All {C} are {B} and no {A} are {B}, so no {C} can be {A}.
""", 4)


@_task("synth_logic_syllogism", "logical", "Answer Verification", ("Logical Reasoning",),
       f"You are given two statements about made-up groups. Decide whether the conclusion follows. {_YN}")
def _logic_syllogism(r: random.Random) -> Sample:
    A, B, C = r.sample(NONCE, 3)
    p, q, ans, why = (s.format(A=A, B=B, C=C) for s in _SYLLOGISMS[r.randrange(6)])
    return Sample(f"{p} Does it follow that {q}? Answer yes or no.", (ans,), why)


@_task("synth_logic_conditional", "logical", "Question Answering", ("Logical Reasoning",),
       "You are given an if-then rule and a fact. Answer the question with yes, no or maybe (if it "
       "cannot be decided).")
def _logic_conditional(r: random.Random) -> Sample:
    n1, n2 = r.sample(NAMES, 2)
    (p3, p), (q3, q) = r.sample(ACTS, 2)
    rule = f"If {n1} {p3}, then {n2} {q3}."
    form = r.choice(("mp", "mt", "ac", "da"))
    fact, question, ans, why = {
        "mp": (f"{n1} {p3}.", f"Does {n2} {q}?", "yes", f"{n1} {p3}, so by the rule {n2} {q3}."),
        "mt": (f"{n2} does not {q}.", f"Does {n1} {p}?", "no",
               f"If {n1} {p3}, {n2} would {q}. {n2} does not {q}, so {n1} does not {p}."),
        "ac": (f"{n2} {q3}.", f"Does {n1} {p}?", "maybe",
               f"The rule only says what happens when {n1} {p3}. {n2} may {q} for another reason."),
        "da": (f"{n1} does not {p}.", f"Does {n2} {q}?", "maybe",
               f"The rule says nothing about what happens when {n1} does not {p}."),
    }[form]
    return Sample(f"{rule} {fact} {question} Answer yes, no or maybe.", (ans,), why)


@_task("synth_deduce_rules", "deductive", "Question Answering", ("Deductive Reasoning",),
       f"You are given a fact about a person and some rules. Decide whether the person has the asked "
       f"property, using only the fact and the rules. {_YN}")
def _deduce_rules(r: random.Random) -> Sample:
    n = r.choice(NAMES)
    k = r.randint(1, 2)
    attrs = r.sample(ATTRS, k + 4)
    chain, (x, y), other = attrs[: k + 1], attrs[k + 1: k + 3], attrs[k + 3]
    rules = [f"If someone is {chain[i]} then they are {chain[i + 1]}." for i in range(k)]
    rules.append(f"If someone is {x} then they are {y}.")
    r.shuffle(rules)
    steps = [f"{n} is {chain[i]}, so {n} is {chain[i + 1]}." for i in range(k)]
    if r.random() < 0.5:
        j = r.randint(1, k)
        query, ans, why = chain[j], "yes", " ".join(steps[:j])
    else:
        query, ans = r.choice((y, other)), "no"
        why = " ".join(steps) + f" Nothing says that {n} is {query}."
    return Sample(f"{n} is {chain[0]}. {' '.join(rules)} Is {n} {query}? Answer yes or no.", (ans,), why)


@_task("synth_deduce_ordering", "deductive", "Question Answering", ("Deductive Reasoning",),
       "You are given two comparisons between three people. Answer the question with the name of one person.")
def _deduce_ordering(r: random.Random) -> Sample:
    x, y, z = r.sample(NAMES, 3)  # x > y > z
    more, most, less, least = r.choice(COMPARATIVES)
    facts = [f"{x} is {more} than {y}." if r.random() < 0.5 else f"{y} is {less} than {x}.",
             f"{y} is {more} than {z}." if r.random() < 0.5 else f"{z} is {less} than {y}."]
    r.shuffle(facts)
    if r.random() < 0.5:
        q, ans, why = most, x, f"{x} is {more} than {y} and {y} is {more} than {z}, so {x} is the {most}."
    else:
        q, ans, why = least, z, f"{z} is {less} than {y} and {y} is {less} than {x}, so {z} is the {least}."
    return Sample(f"{' '.join(facts)} Who is the {q}?", (ans,), why)


@_task("synth_common_animals", "commonsense", "Question Answering", ("Commonsense Reasoning",),
       "Answer the question about the animal with one word.")
def _common_animals(r: random.Random) -> Sample:
    n, animal = r.choice(NAMES), r.choice(sorted(ANIMALS))
    food, home, sound = ANIMALS[animal]
    verb = r.choice(("sees", "draws", "reads about", "visits", "talks about", "dreams about"))
    intro = f"{n} {verb} {_a(animal)}."
    kind = r.randrange(3)
    q = (f"What does the {animal} eat?", f"Where does the {animal} live?", f"What sound does the {animal} make?")[kind]
    answers = ((food,), (home, f"in {_a(home)}", _a(home)), (sound,))[kind]
    it = _cap(_a(animal))
    why = (f"{it} eats {food}.", f"{it} lives in {_a(home)}.", f"{it} says {sound}.")[kind]
    return Sample(f"{intro} {q}", answers, why)


@_task("synth_common_tools", "commonsense", "Question Answering",
       ("Commonsense Reasoning", "Commonsense Reasoning -> Physical Reasoning"),
       "A person wants to do something. Choose the object the person should use.")
def _common_tools(r: random.Random) -> Sample:
    n = r.choice(NAMES)
    tool, other = r.sample(sorted(TOOLS), 2)
    (verb, obj), (overb, oobj) = TOOLS[tool], TOOLS[other]
    first, second = (tool, other) if r.random() < 0.5 else (other, tool)
    text = f"{n} wants to {verb} the {obj}. Should {n} use {_a(first)} or {_a(second)}?"
    why = f"You use {_a(tool)} to {verb} the {obj}, and {_a(other)} to {overb} the {oobj}."
    return Sample(text, (tool, f"the {tool}", _a(tool)), why)


@_task("synth_entail_location", "textual entailment", "Textual Entailment", ("Textual Entailment",),
       "Decide whether the premise entails the hypothesis. Answer yes if it does, no if it contradicts it, "
       "and maybe if the premise does not tell.")
def _entail_location(r: random.Random) -> Sample:
    n1, n2, n3 = r.sample(NAMES, 3)
    p1, p2, p3 = r.sample(PLACES, 3)
    kind = r.randrange(3)
    who, place = r.choice(((n1, p1), (n2, p2)))
    hyp, ans, why = [
        (f"{who} is in the {place}.", "yes", f"The premise says that {who} is in the {place}."),
        (f"{who} is in the {p3}.", "no", f"The premise says that {who} is in the {place}, not in the {p3}."),
        (f"{n3} is in the {r.choice((p1, p2, p3))}.", "maybe", f"The premise does not say where {n3} is."),
    ][kind]
    text = (f"Premise: {n1} is in the {p1}. {n2} is in the {p2}.\nHypothesis: {hyp}\n"
            "Does the premise entail the hypothesis? Answer yes, no or maybe.")
    return Sample(text, (ans,), why)


@_task("synth_entail_category", "textual entailment", "Textual Entailment",
       ("Textual Entailment", "Commonsense Reasoning"),
       "Classify the relation between the premise and the hypothesis as entailment, neutral or "
       "contradiction.")
def _entail_category(r: random.Random) -> Sample:
    n, place = r.choice(NAMES), r.choice(PLACES)
    verb = r.choice(("saw", "found", "drew"))
    member = r.choice(sorted(MEMBER_OF))
    cat = MEMBER_OF[member]
    other = r.choice([c for c in sorted(CATEGORIES) if c != cat])
    base = {"saw": "see", "found": "find", "drew": "draw"}[verb]
    kind = r.randrange(3)
    hyp, ans, why = [
        (f"{n} {verb} {_a(cat)} in the {place}.", "entailment", f"{_cap(_a(member))} is {_a(cat)}."),
        (f"{n} did not {base} any {cat} in the {place}.", "contradiction",
         f"{_cap(_a(member))} is {_a(cat)}, so {n} did {base} {_a(cat)}."),
        (f"{n} {verb} {_a(other)} in the {place}.", "neutral",
         f"{_cap(_a(member))} is not {_a(other)}, and the premise says nothing about {_a(other)}."),
    ][kind]
    text = (f"Premise: {n} {verb} {_a(member)} in the {place}.\nHypothesis: {hyp}\n"
            "Answer entailment, neutral or contradiction.")
    return Sample(text, (ans,), why)


@_task("synth_math_add_sub", "mathematics", "Question Answering", ("Numerical Reasoning", "Mathematics"),
       "Solve the word problem. Answer with a number.")
def _math_add_sub(r: random.Random) -> Sample:
    n, o = r.sample(NAMES, 2)
    item = r.choice(ITEMS)
    if r.random() < 0.5:
        a, b = r.randint(2, 9), r.randint(2, 9)
        verb = r.choice(("buys", "finds", "gets"))
        text = f"{n} has {a} {item}. {n} {verb} {b} more {item}. How many {item} does {n} have now?"
        return Sample(text, (str(a + b),), f"{n} has {a} {item}. {n} {verb} {b} more, so {a} + {b} = {a + b}.")
    a = r.randint(3, 9)
    b = r.randint(2, a - 1)
    action = r.choice((f"gives {b} {item} to {o}", f"loses {b} {item}", f"sells {b} {item}"))
    text = f"{n} has {a} {item}. {n} {action}. How many {item} does {n} have now?"
    return Sample(text, (str(a - b),), f"{n} has {a} {item}. {n} {action}, so {a} - {b} = {a - b}.")


@_task("synth_math_two_step", "mathematics", "Question Answering",
       ("Numerical Reasoning", "Multihop Reasoning", "Mathematics"),
       "Solve the word problem. It needs two steps. Answer with a number.")
def _math_two_step(r: random.Random) -> Sample:
    n, o = r.sample(NAMES, 2)
    item = r.choice(ITEMS)
    while True:
        a, b, c = r.randint(2, 9), r.randint(2, 9), r.randint(2, 9)
        s1, s2 = r.choice((1, -1)), r.choice((1, -1))
        m = a + s1 * b
        if m >= 1 and m + s2 * c >= 1:
            break
    ans = m + s2 * c
    phrase = {1: "buys {} more", -1: f"gives {{}} to {o}"}
    text = (f"{n} has {a} {item}. {n} {phrase[s1].format(b)} and then {phrase[s2].format(c)}. "
            f"How many {item} does {n} have now?")
    sym = {1: "+", -1: "-"}
    why = (f"{n} has {a} {item}. {n} {phrase[s1].format(b)}, so {a} {sym[s1]} {b} = {m}. "
           f"Then {n} {phrase[s2].format(c)}, so {m} {sym[s2]} {c} = {ans}.")
    return Sample(text, (str(ans),), why)


def _cause_pair(r: random.Random) -> tuple[str, int, int]:
    i, j = r.sample(range(len(CAUSES)), 2)
    return r.choice(NAMES), i, j


@_task("synth_causal_choice", "causal", "Cause Effect Classification", ("Causal Reasoning",),
       "Choose the option that is the cause or the effect asked for. Answer with the text of the option.")
def _causal_choice(r: random.Random) -> Sample:
    n, i, j = _cause_pair(r)
    cause, effect = (s.format(n=n) for s in CAUSES[i])
    ask_effect = r.random() < 0.5
    right = effect if ask_effect else cause
    wrong = CAUSES[j][1 if ask_effect else 0].format(n=n)
    opts = [right, wrong] if r.random() < 0.5 else [wrong, right]
    premise, question = (cause, "What happened as a result?") if ask_effect else (effect, "What was the cause?")
    text = f"{_cap(premise)}. {question}\nOption 1: {_cap(opts[0])}.\nOption 2: {_cap(opts[1])}."
    why = f"{_cap(cause)}, so {effect}." if ask_effect else f"{_cap(effect)} because {cause}."
    return Sample(text, (f"{_cap(right)}.", _cap(right)), why)


@_task("synth_causal_relation", "causal", "Cause Effect Classification", ("Causal Reasoning",),
       "Decide whether the second sentence is the cause or the effect of the first. Answer cause or effect.")
def _causal_relation(r: random.Random) -> Sample:
    n, i, _ = _cause_pair(r)
    cause, effect = (s.format(n=n) for s in CAUSES[i])
    if r.random() < 0.5:
        s1, s2, ans, why = cause, effect, "effect", f"{_cap(cause)}, so {effect}."
    else:
        s1, s2, ans, why = effect, cause, "cause", f"{_cap(effect)} because {cause}."
    when = r.choice(("", "Yesterday, ", "On Monday, ", "In the morning, ", "Last week, "))
    question = r.choice(("Is the second sentence the cause or the effect of the first one?",
                         "Is sentence 2 the cause or the effect of sentence 1?",
                         "Is the second sentence a cause or an effect?"))
    text = f"Sentence 1: {when}{s1 if when else _cap(s1)}.\nSentence 2: {_cap(s2)}.\n{question}"
    return Sample(text, (ans,), why)


def _story(r: random.Random) -> tuple[str, str, str, str, list[str], int]:
    n = r.choice(NAMES)
    i, j = r.sample(range(len(STORIES)), 2)
    begin, middle, end = (s.format(n=n) for s in STORIES[i])
    wrong = STORIES[j][1].format(n=n)
    k = r.randrange(2)
    opts = [middle, wrong] if k == 0 else [wrong, middle]
    return begin, middle, end, f"{middle[:-1]}, which explains why {_low(end[:-1])}.", opts, k


@_task("synth_abduct_middle", "abductive", "Story Composition", ("Abductive Reasoning",),
       "Given the beginning and the ending of a story, choose the middle that explains the ending. Answer "
       "with the text of the option.")
def _abduct_middle(r: random.Random) -> Sample:
    begin, middle, end, why, opts, _ = _story(r)
    text = f"Beginning: {begin}\nEnding: {end}\nWhat happened in between?\nOption 1: {opts[0]}\nOption 2: {opts[1]}"
    return Sample(text, (middle, middle[:-1]), why)


@_task("synth_abduct_hypothesis", "abductive", "Coherence Classification",
       ("Abductive Reasoning", "Commonsense Reasoning"),
       "Choose the hypothesis that better explains the two observations. Answer 1 or 2.")
def _abduct_hypothesis(r: random.Random) -> Sample:
    begin, _, end, why, opts, k = _story(r)
    text = (f"Observation 1: {begin}\nObservation 2: {end}\nHypothesis 1: {opts[0]}\nHypothesis 2: {opts[1]}\n"
            "Which hypothesis explains the observations better? Answer 1 or 2.")
    return Sample(text, (str(k + 1),), why)


@_task("synth_spatial_people", "spatial", "Question Answering", ("Commonsense Reasoning -> Spatial Reasoning",),
       "Read the story and answer where the person is. Answer with the place.")
def _spatial_people(r: random.Random) -> Sample:
    people = r.sample(NAMES, r.randint(2, 3))
    last: dict[str, tuple[str, str]] = {}
    lines = []
    for _ in range(r.randint(3, 5)):
        who, verb, place = r.choice(people), r.choice(("went", "moved", "travelled", "walked")), r.choice(PLACES)
        lines.append(f"{who} {verb} to the {place}.")
        last[who] = (verb, place)
    who = r.choice(sorted(last))
    verb, place = last[who]
    return Sample(f"{' '.join(lines)} Where is {who}?", _noun_answers(place), f"{who} last {verb} to the {place}.")


@_task("synth_spatial_objects", "spatial", "Question Answering", ("Commonsense Reasoning -> Spatial Reasoning",),
       "Read the story and answer where the object is. Answer with the container.")
def _spatial_objects(r: random.Random) -> Sample:
    thing, other = r.sample(THINGS, 2)
    start, ocont = r.choice(CONTAINERS), r.choice(CONTAINERS)
    lines, where, mover = [f"The {thing} is in the {start}.", f"The {other} is in the {ocont}."], start, None
    r.shuffle(lines)
    for _ in range(r.randint(1, 3)):
        who, obj = r.choice(NAMES), r.choice((thing, thing, other))
        dest = r.choice(CONTAINERS)
        lines.append(f"{who} moves the {obj} to the {dest}.")
        if obj == thing:
            where, mover = dest, who
    if mover is None:
        why = f"The {thing} is in the {start} and nobody moved it."
    else:
        why = f"{mover} last moved the {thing} to the {where}."
    return Sample(f"{' '.join(lines)} Where is the {thing}?", _noun_answers(where), why)


def _analogy(r: random.Random, a: str, ra: str, c: str, rc: str, why: str) -> Sample:
    text = r.choice((f"{a} : {ra} :: {c} : ?", f"{_cap(a)} is to {ra} as {c} is to what?",
                     f"{a} : {ra} = {c} : ?", f"{_cap(a)} goes with {ra}, so {c} goes with what?"))
    return Sample(text, (rc,), why)


@_task("synth_analogy_animals", "analogical", "Word Analogy", ("Analogical Reasoning",),
       "Complete the analogy about animals with one word.")
def _analogy_animals(r: random.Random) -> Sample:
    a, c = r.sample(sorted(ANIMALS), 2)
    k = r.randrange(3)
    says = (lambda x: f"eats {ANIMALS[x][0]}", lambda x: f"lives in {_a(ANIMALS[x][1])}",
            lambda x: f"says {ANIMALS[x][2]}")[k]
    return _analogy(r, a, ANIMALS[a][k], c, ANIMALS[c][k], f"{_cap(_a(a))} {says(a)}, and {_a(c)} {says(c)}.")


@_task("synth_analogy_objects", "analogical", "Word Analogy", ("Analogical Reasoning", "Relational Reasoning"),
       "Complete the analogy about objects with one word.")
def _analogy_objects(r: random.Random) -> Sample:
    k = r.randrange(3)
    if k == 2:
        a, c = r.sample(sorted(MEMBER_OF), 2)
        return _analogy(r, a, MEMBER_OF[a], c, MEMBER_OF[c],
                        f"{_cap(_a(a))} is {_a(MEMBER_OF[a])}, and {_a(c)} is {_a(MEMBER_OF[c])}.")
    t1, t2 = r.sample(sorted(TOOLS), 2)
    why = f"You use {_a(t1)} to {' the '.join(TOOLS[t1])}, and {_a(t2)} to {' the '.join(TOOLS[t2])}."
    if k == 0:
        return _analogy(r, t1, TOOLS[t1][1], t2, TOOLS[t2][1], why)
    return _analogy(r, TOOLS[t1][1], t1, TOOLS[t2][1], t2, why)


def _argument(r: random.Random) -> tuple[str, str, bool]:
    return r.choice(TOPICS), *((r.choice(PROS), True) if r.random() < 0.5 else (r.choice(CONS), False))


@_task("synth_argument_stance", "argument", "Stance Detection", ("Argument Reasoning",),
       'Decide the stance of the argument towards the topic. Answer "in favor" or "against".')
def _argument_stance(r: random.Random) -> Sample:
    topic, claim, good = _argument(r)
    lead = r.choice(("", "Many people say that ", "I think ", "In my view, ", "It is clear that ",
                     "Some experts think that ", "Everyone knows that ", "Studies show that "))
    arg = f"{lead}{topic} {claim}." if lead else f"{_cap(topic)} {claim}."
    text = f"topic: {_cap(topic)}\nargument: {arg}\nIs the argument in favor of the topic or against it?"
    why = f"The argument says that {topic} {claim}, which is {'good' if good else 'bad'}."
    return Sample(text, ("in favor" if good else "against",), why)


@_task("synth_argument_reply", "argument", "Stance Detection", ("Argument Reasoning",),
       "Decide whether the reply supports or attacks the claim. Answer support or attack.")
def _argument_reply(r: random.Random) -> Sample:
    topic, pro = r.choice(TOPICS), r.choice(PROS)
    if r.random() < 0.5:
        extra = r.choice([p for p in PROS if p != pro])
        reply, ans = f"Yes, and {topic} also {extra}.", "support"
        why = f"The reply adds that {topic} {extra}, which is good."
    else:
        con = r.choice(CONS)
        reply, ans, why = f"No, {topic} {con}.", "attack", f"The reply says that {topic} {con}, which is bad."
    text = f"Claim: {_cap(topic)} {pro}.\nReply: {reply}\nDoes the reply support or attack the claim?"
    return Sample(text, (ans,), why)


@_task("synth_dev_math_compare", "mathematics", "Question Answering", ("Numerical Reasoning", "Mathematics"),
       "Solve the word problem about two people. Answer with a number.", dev=True)
def _dev_math_compare(r: random.Random) -> Sample:
    n, o = r.sample(NAMES, 2)
    item = r.choice(ITEMS)
    a, b = sorted(r.sample(range(2, 10), 2))
    if r.random() < 0.5:
        text = f"{n} has {a} {item} and {o} has {b} {item}. How many more {item} does {o} have than {n}?"
        return Sample(text, (str(b - a),), f"{o} has {b} {item} and {n} has {a}. {b} - {a} = {b - a}.")
    text = f"{n} has {a} {item} and {o} has {b} {item}. How many {item} do they have together?"
    return Sample(text, (str(a + b),), f"{n} has {a} {item} and {o} has {b}. {a} + {b} = {a + b}.")


@_task("synth_dev_entail_numbers", "textual entailment", "Textual Entailment",
       ("Textual Entailment", "Numerical Reasoning"),
       f"Decide whether the premise entails the hypothesis. {_YN}", dev=True)
def _dev_entail_numbers(r: random.Random) -> Sample:
    n, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.sample(range(2, 10), 2)
    word, holds = ("more", a > b) if r.random() < 0.5 else ("fewer", a < b)
    text = (f"Premise: {n} has {a} {item}.\nHypothesis: {n} has {word} than {b} {item}.\n"
            "Does the premise entail the hypothesis? Answer yes or no.")
    why = f"{n} has {a} {item}, and {a} is {'' if holds else 'not '}{word} than {b}."
    return Sample(text, ("yes" if holds else "no",), why)


@_task("synth_dev_dialogue", "dialogue", "Question Answering", ("Commonsense Reasoning -> Spatial Reasoning",),
       "Read the dialogue and answer the question with the container.", dev=True)
def _dev_dialogue(r: random.Random) -> Sample:
    n1, n2 = r.sample(NAMES, 2)
    thing = r.choice(THINGS)
    c1, c2 = r.sample(CONTAINERS, 2)
    lines = [f"{n1}: Where is my {thing}?", f"{n2}: I put it in the {c1}."]
    where, why = c1, f"{n2} put the {thing} in the {c1}."
    if r.random() < 0.5:
        lines.append(f"{n2}: Then I moved it to the {c2}.")
        where, why = c2, f"{n2} put the {thing} in the {c1} and then moved it to the {c2}."
    return Sample("\n".join(lines) + f"\nQuestion: Where is the {thing} of {n1}?", _noun_answers(where), why)


TASK_SPECS: tuple[TaskSpec, ...] = tuple(_EVAL_TASKS)
"""The 20 evaluation tasks in registry order: two per ALERT skill, in-domain skills first."""
DEV_TASK_SPECS: tuple[TaskSpec, ...] = tuple(_DEV_TASKS)
"""The three dev tasks (checkpoint selection), disjoint from :data:`TASK_SPECS`."""
