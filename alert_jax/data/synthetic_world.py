"""The fixed "world" of the synthetic data (alert_jax.data.synthetic): the small vocabulary every task and the
pretraining text draw from, a few English helpers, and the generic world text of the pretraining corpus.

Tables: people (:data:`NAMES`), items, places, containers, things, animals ``-> (food, home, sound)``, tools
``-> (verb, object)``, categories and their members, ``(cause, effect)`` pairs and three-sentence stories (``"{n}"`` is
a person), nonce plurals, actions ``(3rd person, base form)``, attributes, comparatives, argument topics and pro / con
claims. The order of every table is part of the random streams (``r.choice`` / ``r.sample`` over it), so reordering
or extending a table changes the generated data of every seed.
"""

from __future__ import annotations

import random

__all__ = [
    "ACTS",
    "ANIMALS",
    "ATTRS",
    "CATEGORIES",
    "CAUSES",
    "COMPARATIVES",
    "CONS",
    "CONTAINERS",
    "ITEMS",
    "MEMBER_OF",
    "NAMES",
    "NONCE",
    "PLACES",
    "PROS",
    "STORIES",
    "THINGS",
    "TOOLS",
    "TOPICS",
    "cap_first",
    "lower_first",
    "random_narrative",
    "random_number_sentence",
    "text_table",
    "with_article",
    "world_facts",
]

# ---------------------------------------------------------------------------------------------------------------------
# Helpers: text tables and English
# ---------------------------------------------------------------------------------------------------------------------


def text_table(text: str, columns: int) -> tuple[tuple[str, ...], ...]:
    """Parse a table written as text: one row a non-blank line, ``columns`` fields separated by ``|``, each field
    stripped of surrounding whitespace. Raises ValueError naming the row if it has another number of fields."""
    rows = []
    for line in text.strip().splitlines():
        fields = tuple(f.strip() for f in line.split("|"))
        if len(fields) != columns:
            raise ValueError(f"synthetic text table row {line.strip()!r}: {len(fields)} fields, expected {columns}")
        rows.append(fields)
    return tuple(rows)


_LOWER_STARTS = ("The ", "It ", "Everyone ")  # sentence starts that are not names


def with_article(word: str) -> str:
    """``word`` with its indefinite article: ``"a dog"``, ``"an owl"`` (by the first letter only)."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def cap_first(s: str) -> str:
    """``s`` with its first letter upper-cased (the rest unchanged)."""
    return s[:1].upper() + s[1:]


def lower_first(s: str) -> str:
    """Lower-case the first letter unless the sentence starts with a name."""
    return s[:1].lower() + s[1:] if s.startswith(_LOWER_STARTS) else s


# ---------------------------------------------------------------------------------------------------------------------
# The tables
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


# (beginning, middle, ending) stories, one a line; "{n}" is a person
STORIES = text_table("""
    {n} was hungry. | {n} cooked some soup. | {n} felt full.
    {n} wanted to read a book. | {n} went to the library. | {n} read all afternoon.
    {n} saw that the plant was dry. | {n} watered the plant. | The plant looked green again.
    {n} had a test on Monday. | {n} studied all weekend. | {n} got a good grade.
    {n} wanted a pet. | {n} visited the animal shelter. | {n} came home with a puppy.
    The room of {n} was messy. | {n} cleaned the room. | The room was tidy.
    {n} was cold. | {n} put on a warm coat. | {n} felt warm.
    {n} lost a ball in the park. | {n} searched under the trees. | {n} found the ball.
    {n} wanted to bake a cake. | {n} bought flour and eggs. | The cake was delicious.
    The bike of {n} had a flat tire. | {n} fixed the tire. | {n} rode the bike to school.
    {n} was thirsty. | {n} drank a glass of water. | {n} was not thirsty anymore.
    {n} wanted to see the sea. | {n} took a train to the coast. | {n} swam in the sea.
""", 3)
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


# ---------------------------------------------------------------------------------------------------------------------
# Generic world text of the pretraining corpus (no task format, no answers)
# ---------------------------------------------------------------------------------------------------------------------


def world_facts() -> list[str]:
    """Every fact of the world as one sentence: animals (food, home, sound, kind), tools and category members."""
    facts = []
    for animal, (food, home, sound) in sorted(ANIMALS.items()):
        it = cap_first(with_article(animal))
        facts += [f"{it} eats {food}.", f"{it} lives in {with_article(home)}.", f"{it} says {sound}.",
                  f"{it} is an animal."]
    facts += [f"You use {with_article(t)} to {v} the {o}." for t, (v, o) in sorted(TOOLS.items())]
    facts += [f"{cap_first(with_article(m))} is {with_article(c)}." for m, c in sorted(MEMBER_OF.items())]
    return facts


def random_narrative(r: random.Random) -> str:
    """A short narrative: a cause and effect, a story, people moving, an object moved between containers, a
    comparison, attributes, a rule, or opinions on a topic."""
    n, o = r.sample(NAMES, 2)
    kind = r.randrange(8)
    if kind == 0:
        cause, effect = (s.format(n=n) for s in r.choice(CAUSES))
        return f"{cap_first(cause)}, so {effect}." if r.random() < 0.5 else f"{cap_first(effect)} because {cause}."
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


def random_number_sentence(r: random.Random) -> str:
    """A sentence with a number in context (a count, a place, counting aloud), never an arithmetic step."""
    n, item, k = r.choice(NAMES), r.choice(ITEMS), r.randint(2, 20)
    return r.choice((f"{n} has {k} {item}.", f"There are {k} {item} in the {r.choice(PLACES)}.",
                     f"{n} counts the {item}: {', '.join(map(str, range(1, min(k, 9) + 1)))}.",
                     f"{n} and {r.choice(NAMES)} have {k} {item}."))
