"""Synthetic reasoning data: NIV2-format evaluation tasks, a rationale finetuning corpus, and pretraining text.

This is the embedded default data of the offline demo (DESIGN.md section 4): a tiny OPT is pretrained on
:func:`synthetic_pretraining_text`, finetuned into FT / CoT variants on :func:`synthetic_corpus`, and evaluated on the
task files of :func:`write_synthetic_tasks`. Everything is built for learnability at tiny scale: short texts over a
small fixed vocabulary (names, items, places, a fixed "world" of animals, tools, categories, causes and stories),
answers computed by deterministic rules, and rationales that derive the answer step by step, copying the input's
wording before each equation (``"Tom has 3 apples. Tom buys 4 more, so 3 + 4 = 7."``).

Tasks: two per ALERT skill (:data:`SYNTHETIC_REGISTRY`, same in-domain / held-out split by skill as the real registry)
plus a three-task dev set (:data:`SYNTHETIC_DEV_SET`). Each task is one generator ``rng -> Sample(input, answers,
rationale)``; ``answers[0]`` is the canonical answer, the rest are other acceptable spellings.

Modules: :mod:`alert_jax.data.synthetic_world` holds the fixed world (vocabulary tables, English helpers, generic world
text), :mod:`alert_jax.data.synthetic_tasks` the per-task generators and the task table, and this module the registry,
the disjoint splits and the public entry points (task files, finetuning corpus, pretraining text).

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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from alert_jax.data.examples import RationaleExample
from alert_jax.data.synthetic_tasks import DEV_TASK_SPECS, TASK_SPECS, Sample, TaskSpec
from alert_jax.data.synthetic_world import random_narrative, random_number_sentence, world_facts
from alert_jax.io.files import atomic_write_text

if TYPE_CHECKING:
    from alert_jax.data.registry import Registry

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
# Registry of the synthetic tasks
# ---------------------------------------------------------------------------------------------------------------------

CORPUS_DEFINITIONS: dict[str, str] = {s.name: s.definition for s in TASK_SPECS}
"""The definition to finetune each corpus ``source`` with: ``finetune.format_example(ex, mode,
definition=CORPUS_DEFINITIONS[ex.source])``. The corpus is the train split of the in-domain tasks, so it uses the task
files' own definitions; the finetuning prompt then equals template T1 for in-domain tasks (see the module docstring)."""

TASK_NAMES: tuple[str, ...] = tuple(s.name for s in TASK_SPECS)
"""The 20 synthetic evaluation tasks, in registry order (two per skill)."""
SYNTHETIC_REGISTRY: list[dict[str, Any]] = [
    {"name": s.name, "skill": s.skill, "in_domain": s.in_domain} for s in TASK_SPECS
]
"""Entries ``{'name', 'skill', 'in_domain'}`` for ``alert.Registry.from_config`` (same split by skill as ALERT)."""
SYNTHETIC_DEV_SET: tuple[str, ...] = tuple(s.name for s in DEV_TASK_SPECS)
"""Three dev tasks (checkpoint selection); never among the 20 evaluation tasks."""
IN_DOMAIN_SKILLS: tuple[str, ...] = tuple(dict.fromkeys(s.skill for s in TASK_SPECS if s.in_domain))


def synthetic_registry_config() -> dict[str, Any]:
    """``{'datasets': SYNTHETIC_REGISTRY, 'dev_set': SYNTHETIC_DEV_SET}`` (copies) for ``Registry.from_config``."""
    return {"datasets": [dict(d) for d in SYNTHETIC_REGISTRY], "dev_set": list(SYNTHETIC_DEV_SET)}


def synthetic_registry() -> Registry:
    """The synthetic tasks as an ``alert_jax.data.registry.Registry``."""
    from alert_jax.data.registry import Registry

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


def _draw_one(spec: TaskSpec, rng: random.Random, split: str) -> Sample:
    for _ in range(_MAX_MISSES):
        s = spec.generate(rng)
        if split_of(s.input) == split:
            return s
    raise RuntimeError(f"synthetic task {spec.name}: no {split!r} input in {_MAX_MISSES} draws")


def _draw(spec: TaskSpec, rng: random.Random, split: str, n: int, *, allow_repeats: bool = False) -> list[Sample]:
    """``n`` samples of ``split`` with distinct inputs; once the space is exhausted, repeats (or a ValueError)."""
    out: list[Sample] = []
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


def _task_json(spec: TaskSpec, seed: int, instances_per_task: int, num_positive_examples: int) -> dict[str, Any]:
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
    paths = []
    for spec in TASK_SPECS + (DEV_TASK_SPECS if include_dev else ()):
        path = os.path.join(os.fspath(out_dir), f"{spec.name}.json")
        task = _task_json(spec, seed, instances_per_task, num_positive_examples)
        atomic_write_text(path, json.dumps(task, indent=4, ensure_ascii=False))
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------------------------
# Finetuning corpus and pretraining text
# ---------------------------------------------------------------------------------------------------------------------


def _specs_for(skills: Sequence[str]) -> list[TaskSpec]:
    if isinstance(skills, str):
        skills = [skills]
    known = {s.skill for s in TASK_SPECS}
    unknown = [s for s in skills if s not in known]
    if unknown or not skills:
        valid = ", ".join(dict.fromkeys(s.skill for s in TASK_SPECS))
        raise ValueError(f"unknown or empty skills {unknown or skills!r}; valid: {valid}")
    return [s for s in TASK_SPECS if s.skill in skills]


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



def synthetic_pretraining_text(seed: int = 0, n: int = 5000) -> list[str]:
    """``n`` short generic documents for the 'pretrained' model: world facts (animals, tools, categories), narratives
    (causes, stories, movements, comparisons, rules), numbers in context (no arithmetic), and raw inputs of all 23
    tasks from the 'train' split WITHOUT answers or rationales, so the model learns the vocabulary and the world but
    not the answer format. Never contains an evaluation input."""
    r = _rng(seed, "pretraining", "text")
    facts, specs = world_facts(), TASK_SPECS + DEV_TASK_SPECS
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
            docs.append(random_narrative(r))
        else:
            docs.append(" ".join(random_number_sentence(r) for _ in range(r.randint(1, 2))))
    return docs
