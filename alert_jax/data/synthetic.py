"""Synthetic reasoning data: NIV2-format evaluation tasks, a rationale finetuning corpus, and pretraining text.

This is the embedded default data of the offline demo (DESIGN.md section 4): a tiny OPT is pretrained on
:func:`synthetic_pretraining_text`, finetuned into FT / CoT variants on :func:`synthetic_corpus`, and evaluated on the
task files of :func:`write_synthetic_tasks`. Everything is built for learnability at tiny scale: short texts over a
small fixed vocabulary (names, items, places, a fixed "world" of animals, tools, categories, causes and stories),
answers computed by deterministic rules, and rationales that derive the answer step by step, copying the input's
wording before each equation (``"Tom has 3 apples. Tom buys 4 more, so 3 + 4 = 7."``).

Tasks: two per ALERT skill (:data:`SYNTHETIC_REGISTRY`, same in-domain / held-out split by skill as the real registry)
plus a three-task dev set (:data:`SYNTHETIC_DEV_SET`). Each task is one generator ``rng -> _Sample(input, answers,
rationale)``; ``answers[0]`` is the canonical answer, the rest are other acceptable spellings.

Disjointness: every generated input text falls into one bucket of a fixed hash of the text (:func:`split_of`):
``'eval'`` (task files: instances and demonstrations), ``'valid'`` (corpus validation split) or ``'train'`` (finetuning
corpus and the raw task inputs of the pretraining text). Generators draw by rejection into the wanted bucket, so for any
seeds and sizes the finetuning corpus and pretraining text never contain an evaluation input.

Finetuning prompt: the corpus is the train split of the in-domain tasks, so finetune it with the tasks' own
definitions (:data:`CORPUS_DEFINITIONS`, passed to ``finetune.format_example(..., definition=...)``); the finetuning
prompt then equals template T1 for in-domain tasks. Measured with a 0.5M-parameter OPT (d=128, 2 layers, SentencePiece
vocabulary 512; pretraining 2000 steps and finetuning 1500 steps of 32 sequences; 50 instances per task): relaxed match
in that format was pretrained 0 / FT 76 / CoT 100 on synth_math_add_sub and 0 / 52 / 82 on synth_math_two_step. With
one fixed definition for every source instead, the same models scored only 0-30 in T1 on the math tasks: a model this
small is very sensitive to the definition text (ALERT's template-memorisation effect, in miniature). Held-out skills
stay near 0 at that scale. The text has ~650 distinct SentencePiece pieces at most: train the tokenizer with a
vocabulary of <= 600 (or without a hard vocabulary limit).

Determinism: every random stream is ``random.Random(<string>)`` (seeded through SHA-512, independent of
PYTHONHASHSEED), so a seed reproduces byte-identical files and lists.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from alert_jax.data.finetune import RationaleExample

if TYPE_CHECKING:
    from alert_jax.data.alert import Registry

__all__ = [
    "CORPUS_DEFINITIONS",
    "IN_DOMAIN_SKILLS",
    "SYNTHETIC_DEV_SET",
    "SYNTHETIC_REGISTRY",
    "TASK_NAMES",
    "split_of",
    "synthetic_corpus",
    "synthetic_corpus_splits",
    "synthetic_pretraining_text",
    "synthetic_registry",
    "synthetic_registry_config",
    "write_synthetic_tasks",
]

# ---------------------------------------------------------------------------------------------------------------------
# The fixed world (small vocabulary shared by every task and by the pretraining text)
# ---------------------------------------------------------------------------------------------------------------------

NAMES = ("Tom", "Anna", "Ben", "Mia", "Sam", "Lily", "Max", "Emma", "Leo", "Zoe", "Jack", "Nina")
ITEMS = ("apples", "pens", "books", "cards", "eggs", "cups", "balls", "coins", "shells", "stickers")
PLACES = ("kitchen", "garden", "bedroom", "office", "hallway", "bathroom", "park", "school")
CONTAINERS = ("box", "basket", "bag", "drawer", "cupboard", "bucket", "jar", "crate")
THINGS = ("ball", "key", "apple", "book", "coin", "ring", "toy", "hat")
# animal -> (food, home, sound); every value is unique so analogies have one answer
ANIMALS = {
    "cow": ("grass", "barn", "moo"), "dog": ("bones", "kennel", "woof"), "cat": ("fish", "house", "meow"),
    "bird": ("seeds", "nest", "tweet"), "horse": ("hay", "stable", "neigh"), "pig": ("corn", "sty", "oink"),
    "sheep": ("clover", "meadow", "baa"), "duck": ("bread", "pond", "quack"), "bee": ("nectar", "hive", "buzz"),
    "mouse": ("cheese", "hole", "squeak"), "frog": ("flies", "swamp", "croak"), "owl": ("mice", "tree", "hoot"),
    "lion": ("meat", "den", "roar"),
}
# tool -> (verb, object): "you use a knife to cut the bread"
TOOLS = {
    "knife": ("cut", "bread"), "pen": ("write", "letter"), "shovel": ("dig", "hole"), "cup": ("drink", "water"),
    "broom": ("sweep", "floor"), "key": ("open", "door"), "spoon": ("eat", "soup"), "hammer": ("hit", "nail"),
    "sponge": ("wash", "dishes"), "saw": ("cut", "wood"), "brush": ("paint", "wall"), "needle": ("sew", "shirt"),
    "ladder": ("reach", "shelf"), "lamp": ("light", "room"), "net": ("catch", "butterfly"),
}
CATEGORIES = {
    "animal": ("dog", "cat", "cow", "horse", "rabbit"), "fruit": ("apple", "banana", "pear", "plum", "orange"),
    "vehicle": ("car", "bus", "bike", "truck", "train"), "instrument": ("drum", "piano", "flute", "guitar", "violin"),
    "flower": ("rose", "tulip", "daisy", "poppy", "lily"),
}
MEMBER_OF = {m: c for c, ms in CATEGORIES.items() for m in ms}
# (cause, effect); "{n}" is a person
CAUSES = (
    ("{n} dropped a glass", "the glass broke"), ("{n} was very tired", "{n} went to bed early"),
    ("{n} was hungry", "{n} ate a sandwich"), ("it started to rain", "{n} opened an umbrella"),
    ("{n} forgot the keys", "{n} could not open the door"), ("{n} ran a long race", "{n} felt thirsty"),
    ("{n} studied hard", "{n} passed the test"), ("{n} left the ice cream in the sun", "the ice cream melted"),
    ("{n} told a funny joke", "everyone laughed"), ("the room was dark", "{n} turned on the lamp"),
    ("{n} missed the bus", "{n} was late for school"), ("{n} watered the plant", "the plant grew"),
    ("the phone rang", "{n} answered the phone"), ("{n} fell off the bike", "{n} hurt a knee"),
    ("it was cold outside", "{n} wore a coat"),
)
# (beginning, middle, ending) stories
STORIES = (
    ("{n} was hungry.", "{n} cooked some soup.", "{n} felt full."),
    ("{n} wanted to read a book.", "{n} went to the library.", "{n} read all afternoon."),
    ("{n} saw that the plant was dry.", "{n} watered the plant.", "The plant looked green again."),
    ("{n} had a test on Monday.", "{n} studied all weekend.", "{n} got a good grade."),
    ("{n} wanted a pet.", "{n} visited the animal shelter.", "{n} came home with a puppy."),
    ("The room of {n} was messy.", "{n} cleaned the room.", "The room was tidy."),
    ("{n} was cold.", "{n} put on a warm coat.", "{n} felt warm."),
    ("{n} lost a ball in the park.", "{n} searched under the trees.", "{n} found the ball."),
    ("{n} wanted to bake a cake.", "{n} bought flour and eggs.", "The cake was delicious."),
    ("The bike of {n} had a flat tire.", "{n} fixed the tire.", "{n} rode the bike to school."),
    ("{n} was thirsty.", "{n} drank a glass of water.", "{n} was not thirsty anymore."),
    ("{n} wanted to see the sea.", "{n} took a train to the coast.", "{n} swam in the sea."),
)
NONCE = ("wugs", "daxes", "feps", "blickets", "zorps", "toves", "glorps", "mibs", "narps", "quons", "vims", "sloms")
ACTS = (("sings", "sing"), ("dances", "dance"), ("runs", "run"), ("swims", "swim"), ("reads", "read"),
        ("cooks", "cook"), ("laughs", "laugh"), ("sleeps", "sleep"), ("paints", "paint"), ("jumps", "jump"))
ATTRS = ("big", "kind", "smart", "cold", "blue", "round", "green", "quiet", "young", "rough", "red", "nice", "furry")
COMPARATIVES = (("taller", "tallest", "shorter", "shortest"), ("older", "oldest", "younger", "youngest"),
                ("faster", "fastest", "slower", "slowest"), ("heavier", "heaviest", "lighter", "lightest"))
TOPICS = ("school uniforms", "electric cars", "city parks", "longer holidays", "free buses", "more homework",
          "video games", "public libraries", "bike lanes", "solar panels", "school gardens", "night trains")
PROS = ("help people learn", "save money", "make cities cleaner", "keep people safe", "make people happier",
        "help the planet", "bring people together", "make life easier")
CONS = ("waste money", "make people sad", "make cities dirtier", "put people in danger", "make life harder",
        "harm the planet", "keep people apart", "cost too much")
_LOWER_STARTS = ("The ", "It ", "Everyone ")


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _low(s: str) -> str:
    """Lower-case the first letter unless the sentence starts with a name."""
    return s[:1].lower() + s[1:] if s.startswith(_LOWER_STARTS) else s


class _Sample(NamedTuple):
    input: str
    answers: tuple[str, ...]  # answers[0] is canonical; the rest are other acceptable spellings
    rationale: str  # ends with '.', never contains "So the answer is"


def _noun_answers(word: str) -> tuple[str, ...]:
    return (word, f"the {word}", f"in the {word}")


# ---------------------------------------------------------------------------------------------------------------------
# Generators (one per task). Each takes a random.Random and returns a _Sample.
# ---------------------------------------------------------------------------------------------------------------------


def _math_add_sub(r: random.Random) -> _Sample:
    n, o = r.sample(NAMES, 2)
    item = r.choice(ITEMS)
    if r.random() < 0.5:
        a, b = r.randint(2, 9), r.randint(2, 9)
        verb = r.choice(("buys", "finds", "gets"))
        text = f"{n} has {a} {item}. {n} {verb} {b} more {item}. How many {item} does {n} have now?"
        return _Sample(text, (str(a + b),), f"{n} has {a} {item}. {n} {verb} {b} more, so {a} + {b} = {a + b}.")
    a = r.randint(3, 9)
    b = r.randint(2, a - 1)
    action = r.choice((f"gives {b} {item} to {o}", f"loses {b} {item}", f"sells {b} {item}"))
    text = f"{n} has {a} {item}. {n} {action}. How many {item} does {n} have now?"
    return _Sample(text, (str(a - b),), f"{n} has {a} {item}. {n} {action}, so {a} - {b} = {a - b}.")


def _math_two_step(r: random.Random) -> _Sample:
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
    return _Sample(text, (str(ans),), why)


def _logic_syllogism(r: random.Random) -> _Sample:
    A, B, C = r.sample(NONCE, 3)
    form = r.randrange(6)
    p, q, ans, why = [
        (f"All {A} are {B}. All {B} are {C}.", f"all {A} are {C}", "yes",
         f"All {A} are {B} and all {B} are {C}, so all {A} are {C}."),
        (f"All {A} are {B}. All {A} are {C}.", f"all {B} are {C}", "no",
         f"Some {B} may not be {A}, so those {B} need not be {C}."),
        (f"All {A} are {B}. No {B} are {C}.", f"no {A} are {C}", "yes",
         f"All {A} are {B} and no {B} are {C}, so no {A} can be {C}."),
        (f"Some {A} are {B}. All {B} are {C}.", f"all {A} are {C}", "no",
         f"Only some {A} are {B}, so the other {A} need not be {C}."),
        (f"All {A} are {B}. Some {C} are {A}.", f"some {C} are {B}", "yes",
         f"Some {C} are {A} and all {A} are {B}, so those {C} are {B}."),
        (f"No {A} are {B}. All {C} are {B}.", f"some {C} are {A}", "no",
         f"All {C} are {B} and no {A} are {B}, so no {C} can be {A}."),
    ][form]
    return _Sample(f"{p} Does it follow that {q}? Answer yes or no.", (ans,), why)


def _logic_conditional(r: random.Random) -> _Sample:
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
    return _Sample(f"{rule} {fact} {question} Answer yes, no or maybe.", (ans,), why)


def _deduce_rules(r: random.Random) -> _Sample:
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
    return _Sample(f"{n} is {chain[0]}. {' '.join(rules)} Is {n} {query}? Answer yes or no.", (ans,), why)


def _deduce_ordering(r: random.Random) -> _Sample:
    x, y, z = r.sample(NAMES, 3)  # x > y > z
    more, most, less, least = r.choice(COMPARATIVES)
    facts = [f"{x} is {more} than {y}." if r.random() < 0.5 else f"{y} is {less} than {x}.",
             f"{y} is {more} than {z}." if r.random() < 0.5 else f"{z} is {less} than {y}."]
    r.shuffle(facts)
    if r.random() < 0.5:
        q, ans, why = most, x, f"{x} is {more} than {y} and {y} is {more} than {z}, so {x} is the {most}."
    else:
        q, ans, why = least, z, f"{z} is {less} than {y} and {y} is {less} than {x}, so {z} is the {least}."
    return _Sample(f"{' '.join(facts)} Who is the {q}?", (ans,), why)


def _common_animals(r: random.Random) -> _Sample:
    n, animal = r.choice(NAMES), r.choice(sorted(ANIMALS))
    food, home, sound = ANIMALS[animal]
    verb = r.choice(("sees", "draws", "reads about", "visits", "talks about", "dreams about"))
    intro = f"{n} {verb} {_a(animal)}."
    kind = r.randrange(3)
    q = (f"What does the {animal} eat?", f"Where does the {animal} live?", f"What sound does the {animal} make?")[kind]
    answers = ((food,), (home, f"in {_a(home)}", _a(home)), (sound,))[kind]
    it = _cap(_a(animal))
    why = (f"{it} eats {food}.", f"{it} lives in {_a(home)}.", f"{it} says {sound}.")[kind]
    return _Sample(f"{intro} {q}", answers, why)


def _common_tools(r: random.Random) -> _Sample:
    n = r.choice(NAMES)
    tool, other = r.sample(sorted(TOOLS), 2)
    (verb, obj), (overb, oobj) = TOOLS[tool], TOOLS[other]
    first, second = (tool, other) if r.random() < 0.5 else (other, tool)
    text = f"{n} wants to {verb} the {obj}. Should {n} use {_a(first)} or {_a(second)}?"
    why = f"You use {_a(tool)} to {verb} the {obj}, and {_a(other)} to {overb} the {oobj}."
    return _Sample(text, (tool, f"the {tool}", _a(tool)), why)


def _entail_location(r: random.Random) -> _Sample:
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
    return _Sample(text, (ans,), why)


def _entail_category(r: random.Random) -> _Sample:
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
    return _Sample(text, (ans,), why)


def _cause_pair(r: random.Random) -> tuple[str, int, int]:
    i, j = r.sample(range(len(CAUSES)), 2)
    return r.choice(NAMES), i, j


def _causal_choice(r: random.Random) -> _Sample:
    n, i, j = _cause_pair(r)
    cause, effect = (s.format(n=n) for s in CAUSES[i])
    ask_effect = r.random() < 0.5
    right = effect if ask_effect else cause
    wrong = CAUSES[j][1 if ask_effect else 0].format(n=n)
    opts = [right, wrong] if r.random() < 0.5 else [wrong, right]
    premise, question = (cause, "What happened as a result?") if ask_effect else (effect, "What was the cause?")
    text = f"{_cap(premise)}. {question}\nOption 1: {_cap(opts[0])}.\nOption 2: {_cap(opts[1])}."
    why = f"{_cap(cause)}, so {effect}." if ask_effect else f"{_cap(effect)} because {cause}."
    return _Sample(text, (f"{_cap(right)}.", _cap(right)), why)


def _causal_relation(r: random.Random) -> _Sample:
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
    return _Sample(text, (ans,), why)


def _story(r: random.Random) -> tuple[str, str, str, str, list[str], int]:
    n = r.choice(NAMES)
    i, j = r.sample(range(len(STORIES)), 2)
    begin, middle, end = (s.format(n=n) for s in STORIES[i])
    wrong = STORIES[j][1].format(n=n)
    k = r.randrange(2)
    opts = [middle, wrong] if k == 0 else [wrong, middle]
    return begin, middle, end, f"{middle[:-1]}, which explains why {_low(end[:-1])}.", opts, k


def _abduct_middle(r: random.Random) -> _Sample:
    begin, middle, end, why, opts, _ = _story(r)
    text = f"Beginning: {begin}\nEnding: {end}\nWhat happened in between?\nOption 1: {opts[0]}\nOption 2: {opts[1]}"
    return _Sample(text, (middle, middle[:-1]), why)


def _abduct_hypothesis(r: random.Random) -> _Sample:
    begin, _, end, why, opts, k = _story(r)
    text = (f"Observation 1: {begin}\nObservation 2: {end}\nHypothesis 1: {opts[0]}\nHypothesis 2: {opts[1]}\n"
            "Which hypothesis explains the observations better? Answer 1 or 2.")
    return _Sample(text, (str(k + 1),), why)


def _spatial_people(r: random.Random) -> _Sample:
    people = r.sample(NAMES, r.randint(2, 3))
    last: dict[str, tuple[str, str]] = {}
    lines = []
    for _ in range(r.randint(3, 5)):
        who, verb, place = r.choice(people), r.choice(("went", "moved", "travelled", "walked")), r.choice(PLACES)
        lines.append(f"{who} {verb} to the {place}.")
        last[who] = (verb, place)
    who = r.choice(sorted(last))
    verb, place = last[who]
    return _Sample(f"{' '.join(lines)} Where is {who}?", _noun_answers(place), f"{who} last {verb} to the {place}.")


def _spatial_objects(r: random.Random) -> _Sample:
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
    return _Sample(f"{' '.join(lines)} Where is the {thing}?", _noun_answers(where), why)


def _analogy(r: random.Random, a: str, ra: str, c: str, rc: str, why: str) -> _Sample:
    text = r.choice((f"{a} : {ra} :: {c} : ?", f"{_cap(a)} is to {ra} as {c} is to what?",
                     f"{a} : {ra} = {c} : ?", f"{_cap(a)} goes with {ra}, so {c} goes with what?"))
    return _Sample(text, (rc,), why)


def _analogy_animals(r: random.Random) -> _Sample:
    a, c = r.sample(sorted(ANIMALS), 2)
    k = r.randrange(3)
    says = (lambda x: f"eats {ANIMALS[x][0]}", lambda x: f"lives in {_a(ANIMALS[x][1])}",
            lambda x: f"says {ANIMALS[x][2]}")[k]
    return _analogy(r, a, ANIMALS[a][k], c, ANIMALS[c][k], f"{_cap(_a(a))} {says(a)}, and {_a(c)} {says(c)}.")


def _analogy_objects(r: random.Random) -> _Sample:
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


def _argument_stance(r: random.Random) -> _Sample:
    topic, claim, good = _argument(r)
    lead = r.choice(("", "Many people say that ", "I think ", "In my view, ", "It is clear that ",
                     "Some experts think that ", "Everyone knows that ", "Studies show that "))
    arg = f"{lead}{topic} {claim}." if lead else f"{_cap(topic)} {claim}."
    text = f"topic: {_cap(topic)}\nargument: {arg}\nIs the argument in favor of the topic or against it?"
    why = f"The argument says that {topic} {claim}, which is {'good' if good else 'bad'}."
    return _Sample(text, ("in favor" if good else "against",), why)


def _argument_reply(r: random.Random) -> _Sample:
    topic, pro = r.choice(TOPICS), r.choice(PROS)
    if r.random() < 0.5:
        extra = r.choice([p for p in PROS if p != pro])
        reply, ans = f"Yes, and {topic} also {extra}.", "support"
        why = f"The reply adds that {topic} {extra}, which is good."
    else:
        con = r.choice(CONS)
        reply, ans, why = f"No, {topic} {con}.", "attack", f"The reply says that {topic} {con}, which is bad."
    text = f"Claim: {_cap(topic)} {pro}.\nReply: {reply}\nDoes the reply support or attack the claim?"
    return _Sample(text, (ans,), why)


def _dev_math_compare(r: random.Random) -> _Sample:
    n, o = r.sample(NAMES, 2)
    item = r.choice(ITEMS)
    a, b = sorted(r.sample(range(2, 10), 2))
    if r.random() < 0.5:
        text = f"{n} has {a} {item} and {o} has {b} {item}. How many more {item} does {o} have than {n}?"
        return _Sample(text, (str(b - a),), f"{o} has {b} {item} and {n} has {a}. {b} - {a} = {b - a}.")
    text = f"{n} has {a} {item} and {o} has {b} {item}. How many {item} do they have together?"
    return _Sample(text, (str(a + b),), f"{n} has {a} {item} and {o} has {b}. {a} + {b} = {a + b}.")


def _dev_entail_numbers(r: random.Random) -> _Sample:
    n, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.sample(range(2, 10), 2)
    word, holds = ("more", a > b) if r.random() < 0.5 else ("fewer", a < b)
    text = (f"Premise: {n} has {a} {item}.\nHypothesis: {n} has {word} than {b} {item}.\n"
            "Does the premise entail the hypothesis? Answer yes or no.")
    why = f"{n} has {a} {item}, and {a} is {'' if holds else 'not '}{word} than {b}."
    return _Sample(text, ("yes" if holds else "no",), why)


def _dev_dialogue(r: random.Random) -> _Sample:
    n1, n2 = r.sample(NAMES, 2)
    thing = r.choice(THINGS)
    c1, c2 = r.sample(CONTAINERS, 2)
    lines = [f"{n1}: Where is my {thing}?", f"{n2}: I put it in the {c1}."]
    where, why = c1, f"{n2} put the {thing} in the {c1}."
    if r.random() < 0.5:
        lines.append(f"{n2}: Then I moved it to the {c2}.")
        where, why = c2, f"{n2} put the {thing} in the {c1} and then moved it to the {c2}."
    return _Sample("\n".join(lines) + f"\nQuestion: Where is the {thing} of {n1}?", _noun_answers(where), why)


# ---------------------------------------------------------------------------------------------------------------------
# Task table and registry
# ---------------------------------------------------------------------------------------------------------------------


class _TaskSpec(NamedTuple):
    name: str
    skill: str
    in_domain: bool
    generate: Callable[[random.Random], _Sample]
    definition: str
    category: str
    reasoning: tuple[str, ...]


_YN = "Answer with yes or no."
_SPECS: tuple[_TaskSpec, ...] = (
    _TaskSpec("synth_logic_syllogism", "logical", True, _logic_syllogism,
              f"You are given two statements about made-up groups. Decide whether the conclusion follows. {_YN}",
              "Answer Verification", ("Logical Reasoning",)),
    _TaskSpec("synth_logic_conditional", "logical", True, _logic_conditional,
              "You are given an if-then rule and a fact. Answer the question with yes, no or maybe (if it "
              "cannot be decided).", "Question Answering", ("Logical Reasoning",)),
    _TaskSpec("synth_deduce_rules", "deductive", True, _deduce_rules,
              f"You are given a fact about a person and some rules. Decide whether the person has the asked "
              f"property, using only the fact and the rules. {_YN}", "Question Answering",
              ("Deductive Reasoning",)),
    _TaskSpec("synth_deduce_ordering", "deductive", True, _deduce_ordering,
              "You are given two comparisons between three people. Answer the question with the name of one person.",
              "Question Answering", ("Deductive Reasoning",)),
    _TaskSpec("synth_common_animals", "commonsense", True, _common_animals,
              "Answer the question about the animal with one word.", "Question Answering",
              ("Commonsense Reasoning",)),
    _TaskSpec("synth_common_tools", "commonsense", True, _common_tools,
              "A person wants to do something. Choose the object the person should use.", "Question Answering",
              ("Commonsense Reasoning", "Commonsense Reasoning -> Physical Reasoning")),
    _TaskSpec("synth_entail_location", "textual entailment", True, _entail_location,
              "Decide whether the premise entails the hypothesis. Answer yes if it does, no if it contradicts it, "
              "and maybe if the premise does not tell.", "Textual Entailment", ("Textual Entailment",)),
    _TaskSpec("synth_entail_category", "textual entailment", True, _entail_category,
              "Classify the relation between the premise and the hypothesis as entailment, neutral or "
              "contradiction.", "Textual Entailment", ("Textual Entailment", "Commonsense Reasoning")),
    _TaskSpec("synth_math_add_sub", "mathematics", True, _math_add_sub,
              "Solve the word problem. Answer with a number.", "Question Answering",
              ("Numerical Reasoning", "Mathematics")),
    _TaskSpec("synth_math_two_step", "mathematics", True, _math_two_step,
              "Solve the word problem. It needs two steps. Answer with a number.", "Question Answering",
              ("Numerical Reasoning", "Multihop Reasoning", "Mathematics")),
    _TaskSpec("synth_causal_choice", "causal", False, _causal_choice,
              "Choose the option that is the cause or the effect asked for. Answer with the text of the option.",
              "Cause Effect Classification", ("Causal Reasoning",)),
    _TaskSpec("synth_causal_relation", "causal", False, _causal_relation,
              "Decide whether the second sentence is the cause or the effect of the first. Answer cause or effect.",
              "Cause Effect Classification", ("Causal Reasoning",)),
    _TaskSpec("synth_abduct_middle", "abductive", False, _abduct_middle,
              "Given the beginning and the ending of a story, choose the middle that explains the ending. Answer "
              "with the text of the option.", "Story Composition", ("Abductive Reasoning",)),
    _TaskSpec("synth_abduct_hypothesis", "abductive", False, _abduct_hypothesis,
              "Choose the hypothesis that better explains the two observations. Answer 1 or 2.",
              "Coherence Classification", ("Abductive Reasoning", "Commonsense Reasoning")),
    _TaskSpec("synth_spatial_people", "spatial", False, _spatial_people,
              "Read the story and answer where the person is. Answer with the place.", "Question Answering",
              ("Commonsense Reasoning -> Spatial Reasoning",)),
    _TaskSpec("synth_spatial_objects", "spatial", False, _spatial_objects,
              "Read the story and answer where the object is. Answer with the container.", "Question Answering",
              ("Commonsense Reasoning -> Spatial Reasoning",)),
    _TaskSpec("synth_analogy_animals", "analogical", False, _analogy_animals,
              "Complete the analogy about animals with one word.", "Word Analogy", ("Analogical Reasoning",)),
    _TaskSpec("synth_analogy_objects", "analogical", False, _analogy_objects,
              "Complete the analogy about objects with one word.", "Word Analogy",
              ("Analogical Reasoning", "Relational Reasoning")),
    _TaskSpec("synth_argument_stance", "argument", False, _argument_stance,
              'Decide the stance of the argument towards the topic. Answer "in favor" or "against".',
              "Stance Detection", ("Argument Reasoning",)),
    _TaskSpec("synth_argument_reply", "argument", False, _argument_reply,
              "Decide whether the reply supports or attacks the claim. Answer support or attack.",
              "Stance Detection", ("Argument Reasoning",)),
)
_DEV_SPECS: tuple[_TaskSpec, ...] = (
    _TaskSpec("synth_dev_math_compare", "mathematics", True, _dev_math_compare,
              "Solve the word problem about two people. Answer with a number.", "Question Answering",
              ("Numerical Reasoning", "Mathematics")),
    _TaskSpec("synth_dev_entail_numbers", "textual entailment", True, _dev_entail_numbers,
              f"Decide whether the premise entails the hypothesis. {_YN}", "Textual Entailment",
              ("Textual Entailment", "Numerical Reasoning")),
    _TaskSpec("synth_dev_dialogue", "dialogue", False, _dev_dialogue,
              "Read the dialogue and answer the question with the container.", "Question Answering",
              ("Commonsense Reasoning -> Spatial Reasoning",)),
)
CORPUS_DEFINITIONS: dict[str, str] = {s.name: s.definition for s in _SPECS}
"""The definition to finetune each corpus ``source`` with: ``finetune.format_example(ex, mode,
definition=CORPUS_DEFINITIONS[ex.source])``. The corpus is the train split of the in-domain tasks, so it uses the task
files' own definitions; the finetuning prompt then equals template T1 for in-domain tasks (see the module docstring)."""

TASK_NAMES: tuple[str, ...] = tuple(s.name for s in _SPECS)
"""The 20 synthetic evaluation tasks, in registry order (two per skill)."""
SYNTHETIC_REGISTRY: list[dict[str, Any]] = [
    {"name": s.name, "skill": s.skill, "in_domain": s.in_domain} for s in _SPECS
]
"""Entries ``{'name', 'skill', 'in_domain'}`` for ``alert.Registry.from_config`` (same split by skill as ALERT)."""
SYNTHETIC_DEV_SET: tuple[str, ...] = tuple(s.name for s in _DEV_SPECS)
"""Three dev tasks (checkpoint selection); never among the 20 evaluation tasks."""
IN_DOMAIN_SKILLS: tuple[str, ...] = tuple(dict.fromkeys(s.skill for s in _SPECS if s.in_domain))


def synthetic_registry_config() -> dict[str, Any]:
    """``{'datasets': SYNTHETIC_REGISTRY, 'dev_set': SYNTHETIC_DEV_SET}`` (copies) for ``Registry.from_config``."""
    return {"datasets": [dict(d) for d in SYNTHETIC_REGISTRY], "dev_set": list(SYNTHETIC_DEV_SET)}


def synthetic_registry() -> Registry:
    """The synthetic tasks as an ``alert_jax.data.alert.Registry``."""
    from alert_jax.data.alert import Registry

    return Registry.from_config(synthetic_registry_config())


# ---------------------------------------------------------------------------------------------------------------------
# Drawing samples into disjoint splits
# ---------------------------------------------------------------------------------------------------------------------

SPLITS = ("eval", "valid", "train")  # the values of split_of
_MAX_MISSES = 5000  # consecutive rejected draws after which a task's input space counts as exhausted


def split_of(text: str) -> str:
    """The split an input text belongs to, from a fixed hash of the text: 20% 'eval', 10% 'valid', 70% 'train'."""
    bucket = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % 10
    return "eval" if bucket < 2 else "valid" if bucket == 2 else "train"


def _draw_one(spec: _TaskSpec, rng: random.Random, split: str) -> _Sample:
    for _ in range(_MAX_MISSES):
        s = spec.generate(rng)
        if split_of(s.input) == split:
            return s
    raise RuntimeError(f"synthetic task {spec.name}: no {split!r} input in {_MAX_MISSES} draws")


def _draw(spec: _TaskSpec, rng: random.Random, split: str, n: int, *, allow_repeats: bool = False) -> list[_Sample]:
    """``n`` samples of ``split`` with distinct inputs; once the space is exhausted, repeats (or a ValueError)."""
    out: list[_Sample] = []
    seen: set[str] = set()
    misses = 0
    while len(out) < n:
        s = _draw_one(spec, rng, split)
        if s.input in seen and misses < _MAX_MISSES:
            misses += 1
            continue
        if s.input in seen and not allow_repeats:
            raise ValueError(
                f"synthetic task {spec.name}: only {len(out)} distinct {split!r} inputs exist of the {n} requested; "
                "lower instances_per_task / num_positive_examples"
            )
        misses = 0
        seen.add(s.input)
        out.append(s)
    return out


def _rng(seed: int, name: str, stream: str) -> random.Random:
    return random.Random(f"alert_jax.synthetic:{seed}:{name}:{stream}")


# ---------------------------------------------------------------------------------------------------------------------
# NIV2 task files
# ---------------------------------------------------------------------------------------------------------------------


def _task_json(spec: _TaskSpec, seed: int, instances_per_task: int, num_positive_examples: int) -> dict[str, Any]:
    rng, ids = _rng(seed, spec.name, "eval"), _rng(seed, spec.name, "ids")
    # demonstrations first, so the instance list of a smaller size is a prefix of a larger one
    samples = _draw(spec, rng, "eval", num_positive_examples + 1 + instances_per_task)
    k = num_positive_examples
    demos, neg, insts = samples[:k], samples[k], samples[k + 1:]
    wrong = next((s.answers[0] for s in (spec.generate(rng) for _ in range(1000)) if s.answers[0] not in neg.answers),
                 "I don't know")
    return {
        "Contributors": ["alert_jax.data.synthetic"],
        "Source": ["synthetic"],
        "URL": ["generated by alert_jax.data.synthetic"],
        "Categories": [spec.category],
        "Reasoning": list(spec.reasoning),
        "Definition": [spec.definition],
        "Input_language": ["English"],
        "Output_language": ["English"],
        "Instruction_language": ["English"],
        "Domains": ["Synthetic"],
        "Positive Examples": [{"input": s.input, "output": s.answers[0], "explanation": s.rationale} for s in demos],
        "Negative Examples": [{"input": neg.input, "output": wrong,
                               "explanation": f"{neg.rationale} The answer is {neg.answers[0]}, not {wrong}."}],
        "Instances": [{"id": f"{spec.name}-{ids.getrandbits(128):032x}", "input": s.input, "output": list(s.answers)}
                      for s in insts],
        "Instance License": ["CC0 1.0"],
    }


def write_synthetic_tasks(
    out_dir: str | os.PathLike,
    seed: int = 0,
    instances_per_task: int = 50,
    num_positive_examples: int = 3,
    *,
    include_dev: bool = True,
) -> list[str]:
    """Write the 20 synthetic evaluation tasks (and, by default, the 3 dev tasks) as NIV2 task files.

    Files are ``out_dir/<name>.json`` in the final NIV2 format (``json.dumps(indent=4, ensure_ascii=False)``, no
    trailing newline, every value a list, instance ids ``<name>-<32 hex>``), byte-identical for a given seed.
    Instances and demonstrations come from the 'eval' split of :func:`split_of`, so no finetuning or pretraining text
    contains them; the instances of a smaller ``instances_per_task`` are a prefix of a larger one's. Explanations are
    rationales only (templates add "So the answer is ..."). Returns the written paths: the 20 tasks in registry order,
    then the dev tasks. A size larger than a task's space of distinct inputs raises ValueError naming the task.
    """
    if instances_per_task < 1 or num_positive_examples < 0:
        raise ValueError(f"instances_per_task must be >= 1 and num_positive_examples >= 0, "
                         f"got {instances_per_task} and {num_positive_examples}")
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for spec in _SPECS + (_DEV_SPECS if include_dev else ()):
        path = os.path.join(os.fspath(out_dir), f"{spec.name}.json")
        task = _task_json(spec, seed, instances_per_task, num_positive_examples)
        text = json.dumps(task, indent=4, ensure_ascii=False)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# Finetuning corpus and pretraining text
# ---------------------------------------------------------------------------------------------------------------------


def _specs_for(skills: Sequence[str]) -> list[_TaskSpec]:
    if isinstance(skills, str):
        skills = [skills]
    known = {s.skill for s in _SPECS}
    unknown = [s for s in skills if s not in known]
    if unknown or not skills:
        valid = ", ".join(dict.fromkeys(s.skill for s in _SPECS))
        raise ValueError(f"unknown or empty skills {unknown or skills!r}; valid: {valid}")
    return [s for s in _SPECS if s.skill in skills]


def synthetic_corpus(
    seed: int = 0, n: int = 2000, skills: Sequence[str] = IN_DOMAIN_SKILLS, *, split: str = "train"
) -> list[RationaleExample]:
    """A rationale finetuning corpus of ``n`` examples drawn from the task generators of ``skills``.

    Examples are interleaved round-robin over the tasks (``source`` = task name, ``prompt`` = the task input,
    ``rationale`` = the step-by-step derivation, ``answer`` = the canonical answer). ``split`` is 'train' or 'valid'
    (:func:`split_of`); neither ever contains an input of the task files. Inputs are distinct per task until a task's
    space is exhausted, then repeat.
    """
    if split not in ("train", "valid"):
        raise ValueError(f"split must be 'train' or 'valid', got {split!r}")
    specs = _specs_for(skills)
    per_task = [_draw(s, _rng(seed, s.name, split), split, n // len(specs) + (i < n % len(specs)), allow_repeats=True)
                for i, s in enumerate(specs)]
    out = []
    for j in range(max(map(len, per_task), default=0)):
        for spec, samples in zip(specs, per_task):
            if j < len(samples):
                s = samples[j]
                out.append(RationaleExample(source=spec.name, prompt=s.input, rationale=s.rationale,
                                            answer=s.answers[0], id=f"{spec.name}:{split}:{j}"))
    return out


def synthetic_corpus_splits(
    seed: int = 0, n_train: int = 2000, n_valid: int = 200, skills: Sequence[str] = IN_DOMAIN_SKILLS
) -> tuple[list[RationaleExample], list[RationaleExample]]:
    """``(train, valid)`` corpora with disjoint inputs (validation for perplexity-based checkpoint selection)."""
    train = synthetic_corpus(seed, n_train, skills, split="train")
    return train, synthetic_corpus(seed, n_valid, skills, split="valid")


def _world_facts() -> list[str]:
    facts = []
    for animal, (food, home, sound) in sorted(ANIMALS.items()):
        facts += [f"{_cap(_a(animal))} eats {food}.", f"{_cap(_a(animal))} lives in {_a(home)}.",
                  f"{_cap(_a(animal))} says {sound}.", f"{_cap(_a(animal))} is an animal."]
    facts += [f"You use {_a(t)} to {v} the {o}." for t, (v, o) in sorted(TOOLS.items())]
    facts += [f"{_cap(_a(m))} is {_a(c)}." for m, c in sorted(MEMBER_OF.items())]
    return facts


def _narrative(r: random.Random) -> str:
    n, o = r.sample(NAMES, 2)
    kind = r.randrange(8)
    if kind == 0:
        cause, effect = (s.format(n=n) for s in r.choice(CAUSES))
        return f"{_cap(cause)}, so {effect}." if r.random() < 0.5 else f"{_cap(effect)} because {cause}."
    if kind == 1:
        return " ".join(s.format(n=n) for s in r.choice(STORIES))
    if kind == 2:
        return " ".join(f"{r.choice((n, o))} {r.choice(('went', 'moved', 'walked'))} to the {r.choice(PLACES)}."
                        for _ in range(r.randint(2, 4)))
    if kind == 3:
        thing = r.choice(THINGS)
        return f"The {thing} is in the {r.choice(CONTAINERS)}. {n} moves the {thing} to the {r.choice(CONTAINERS)}."
    if kind == 4:
        return f"{n} is {r.choice(COMPARATIVES)[r.choice((0, 2))]} than {o}."
    if kind == 5:
        a, b = r.sample(ATTRS, 2)
        return f"{n} is {a}. {n} is {b}." if r.random() < 0.5 else f"If someone is {a} then they are {b}."
    if kind == 6:
        (p3, _), (q3, _) = r.sample(ACTS, 2)
        if r.random() < 0.5:
            return f"{n} {p3}. If {n} {p3}, then {o} {q3}."
        return f"All {' are '.join(r.sample(NONCE, 2))}."
    topic = r.choice(TOPICS)
    return f"Many people say that {topic} {r.choice(PROS + CONS)}. {o} thinks that {topic} {r.choice(PROS + CONS)}."


def _numbers(r: random.Random) -> str:
    n, item, k = r.choice(NAMES), r.choice(ITEMS), r.randint(2, 20)
    return r.choice((f"{n} has {k} {item}.", f"There are {k} {item} in the {r.choice(PLACES)}.",
                     f"{n} counts the {item}: {', '.join(map(str, range(1, min(k, 9) + 1)))}.",
                     f"{n} and {r.choice(NAMES)} have {k} {item}."))


def synthetic_pretraining_text(seed: int = 0, n: int = 5000) -> list[str]:
    """``n`` short generic documents for the 'pretrained' model: world facts (animals, tools, categories), narratives
    (causes, stories, movements, comparisons, rules), numbers in context (no arithmetic), and raw inputs of all 23
    tasks from the 'train' split WITHOUT answers or rationales, so the model learns the vocabulary and the world but
    not the answer format. Never contains an evaluation input."""
    r = _rng(seed, "pretraining", "text")
    facts, specs = _world_facts(), _SPECS + _DEV_SPECS
    task_rngs = {s.name: _rng(seed, s.name, "pretrain") for s in specs}
    docs = []
    for _ in range(n):
        u = r.random()
        if u < 0.4:
            spec = r.choice(specs)
            docs.append(_draw_one(spec, task_rngs[spec.name], "train").input)
        elif u < 0.6:
            docs.append(" ".join(r.sample(facts, r.randint(1, 3))))
        elif u < 0.85:
            docs.append(_narrative(r))
        else:
            docs.append(" ".join(_numbers(r) for _ in range(r.randint(1, 2))))
    return docs
