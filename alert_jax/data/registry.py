"""The ALERT registry: evaluation datasets (NIV2 tasks), their reasoning skills, in-domain / held-out, the dev set.

This is our reconstruction (DESIGN.md section 4): two NIV2 tasks per skill, ten skills. The first five skills are
*in-domain* (covered by the finetuning corpora), the other five are *held-out*. ``DEV_SET`` holds the three tasks used
for checkpoint selection; they are never among the 20 evaluation datasets.

A different list can come from a config through :meth:`Registry.from_config`; every function takes an optional
``registry`` (default :data:`ALERT`). Task specs (``resolve_tasks``) are strings such as ``'all'``, ``'dev'``,
``'in_domain'``, ``'held_out'``, a skill name (``'textual entailment'``, spaces/underscores/hyphens and case are
ignored), a task name, or a comma-separated mix; they resolve to an ordered list of unique task names.

Answer options: a dataset may declare its label set (``Dataset.options``); otherwise it is computed from the task file
(``niv2.answer_options``). :meth:`Registry.answer_options` applies that rule.

Fetching the registry's task files (from the natural-instructions repository, validated, into a folder)::

    python -m alert_jax.data.registry download --tasks=alert DIR     # the 20 evaluation datasets
    python -m alert_jax.data.registry download --tasks=dev DIR       # the 3 dev-set tasks
    python -m alert_jax.data.registry download --tasks=all DIR       # both (23 files)

``--tasks`` also takes any task spec (skills, task names, comma-separated); ``--base_url`` points at a mirror or a
local checkout (``file:///.../natural-instructions/tasks``). Exit codes: 0 done; 1 a download failed (network or
HTTP error, the URL named); 2 a bad spec or an invalid task file (nothing invalid is written).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from alert_jax.data import niv2

__all__ = [
    "ALERT",
    "DATASETS",
    "DEV_SET",
    "HELD_OUT_SKILLS",
    "IN_DOMAIN_SKILLS",
    "SKILLS",
    "Dataset",
    "Registry",
    "available",
    "datasets_for",
    "download_spec",
    "main",
    "resolve_tasks",
]

_NIV2_NAME = re.compile(r"^task\d+_\w+$")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One evaluation dataset: an NIV2 task name, the reasoning skill it tests, and whether that skill is in-domain.

    ``options``: the answer options appended to its prompts, overriding the ones computed from the task file; None
    (default) = computed (``niv2.answer_options``), ``()`` = none even when the outputs look like a label set.
    """

    name: str
    skill: str
    in_domain: bool
    options: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.options is not None:
            if isinstance(self.options, str) or not all(isinstance(o, str) and o.strip() for o in self.options):
                raise ValueError(f"registry entry {self.name!r}: options must be a list of non-empty strings, "
                                 f"got {self.options!r}")
            object.__setattr__(self, "options", tuple(self.options))


def _norm_skill(s: str) -> str:
    return re.sub(r"[\s_\-]+", " ", s.strip().lower())


@dataclasses.dataclass(frozen=True)
class Registry:
    """An ordered list of evaluation datasets plus a dev set. Skills are listed in order of first appearance."""

    datasets: tuple[Dataset, ...]
    dev_set: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "datasets", tuple(self.datasets))
        object.__setattr__(self, "dev_set", tuple(self.dev_set))
        names = [d.name for d in self.datasets]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"registry lists these datasets more than once: {', '.join(dup)}")
        for d in self.datasets:
            if not d.name or not d.skill:
                raise ValueError(f"registry entry {d} needs a non-empty name and skill")
        by_skill: dict[str, set[bool]] = {}
        for d in self.datasets:
            by_skill.setdefault(_norm_skill(d.skill), set()).add(d.in_domain)
        mixed = [s for s, kinds in by_skill.items() if len(kinds) > 1]
        if mixed:
            raise ValueError(f"skill(s) {mixed} are marked both in-domain and held-out; a skill must be one or the "
                             "other")

    @property
    def skills(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.skill for d in self.datasets))

    @property
    def in_domain_skills(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.skill for d in self.datasets if d.in_domain))

    @property
    def held_out_skills(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.skill for d in self.datasets if not d.in_domain))

    @property
    def names(self) -> tuple[str, ...]:
        """The evaluation dataset names, in registry order (the dev set is not included)."""
        return tuple(d.name for d in self.datasets)

    def get(self, name: str) -> Dataset | None:
        """The registry entry of task ``name``, or None (dev-set tasks have no entry)."""
        return next((d for d in self.datasets if d.name == name), None)

    def skill_of(self, name: str) -> str | None:
        d = self.get(name)
        return d.skill if d is not None else None

    def find_skill(self, skill: str) -> str | None:
        """The registry's spelling of ``skill`` (matching ignores case, spaces, '_' and '-'), or None."""
        key = _norm_skill(skill)
        return next((s for s in self.skills if _norm_skill(s) == key), None)

    def answer_options(self, task: niv2.Task, max_options: int) -> list[str] | None:
        """The answer options of ``task``'s prompts, sorted: its entry's ``options`` when declared (``()`` -> None),
        else ``niv2.answer_options(task, max_options)``."""
        entry = self.get(task.name)
        if entry is not None and entry.options is not None:
            return sorted(o.strip() for o in entry.options) or None
        return niv2.answer_options(task, max_options)

    def datasets_for(self, skill: str) -> list[Dataset]:
        """The datasets of one skill; unknown skill -> ValueError listing the valid ones."""
        found = self.find_skill(skill)
        if found is None:
            raise ValueError(f"unknown skill {skill!r}; valid skills: {', '.join(self.skills)}")
        return [d for d in self.datasets if d.skill == found]

    @classmethod
    def from_config(cls, entries: Any, dev_set: Sequence[str] | None = None) -> Registry:
        """Build a registry from config data.

        ``entries`` is a list whose items are dicts ``{'name', 'skill', 'in_domain' (default True), 'options' (a list
        of strings, default computed; see :class:`Dataset`)}`` or strings
        ``'skill:task'`` (in-domain) / ``'skill:task:held_out'`` / ``'skill:task:in_domain'``; or a mapping (e.g. an
        ml_collections ConfigDict) with keys ``datasets`` (such a list) and optional ``dev_set``. ``dev_set`` defaults
        to none (an empty dev set).
        """
        if isinstance(entries, Mapping) or hasattr(entries, "to_dict"):
            m = entries.to_dict() if hasattr(entries, "to_dict") else dict(entries)
            if "datasets" not in m:
                raise ValueError(f"registry config needs a 'datasets' list; got keys {sorted(m)}")
            if dev_set is None:
                dev_set = m.get("dev_set", ())
            entries = m["datasets"]
        if isinstance(entries, str):
            entries = [e for e in entries.split(",") if e.strip()]
        datasets = []
        for i, e in enumerate(entries):
            if isinstance(e, Dataset):
                datasets.append(e)
            elif isinstance(e, str):
                parts = [p.strip() for p in e.split(":")]
                if len(parts) not in (2, 3) or not all(parts):
                    raise ValueError(f"registry entry {i} {e!r}: expected 'skill:task' or 'skill:task:held_out'")
                kind = _norm_skill(parts[2]) if len(parts) == 3 else "in domain"
                if kind not in ("in domain", "held out"):
                    raise ValueError(f"registry entry {i} {e!r}: kind must be 'in_domain' or 'held_out', "
                                     f"got {parts[2]!r}")
                datasets.append(Dataset(name=parts[1], skill=parts[0], in_domain=kind == "in domain"))
            elif isinstance(e, Mapping) or hasattr(e, "to_dict"):
                d = e.to_dict() if hasattr(e, "to_dict") else dict(e)
                unknown = set(d) - {"name", "skill", "in_domain", "options"}
                if "name" not in d or "skill" not in d or unknown:
                    raise ValueError(
                        f"registry entry {i} {d}: needs keys 'name' and 'skill' (optional 'in_domain', 'options'); "
                        f"unknown keys: {sorted(unknown)}"
                    )
                datasets.append(Dataset(name=str(d["name"]), skill=str(d["skill"]),
                                        in_domain=bool(d.get("in_domain", True)),
                                        options=d.get("options")))
            else:
                raise ValueError(f"registry entry {i}: expected a dict or 'skill:task' string, got {type(e).__name__}")
        if isinstance(dev_set, str):
            dev_set = [s.strip() for s in dev_set.split(",") if s.strip()]
        return cls(datasets=tuple(datasets), dev_set=tuple(dev_set or ()))

    def resolve(self, spec: str | Iterable[str], *, allow_unregistered: bool = False) -> list[str]:
        """See :func:`resolve_tasks`."""
        tokens = [spec] if isinstance(spec, str) else list(spec)
        tokens = [t.strip() for tok in tokens for t in str(tok).split(",") if t.strip()]
        if not tokens:
            raise ValueError("empty task spec; use 'all', 'dev', 'in_domain', 'held_out', a skill or task names")
        known = set(self.names) | set(self.dev_set)
        out: list[str] = []
        for tok in tokens:
            key = _norm_skill(tok)
            if key == "all":
                out += self.names
            elif key == "dev":
                out += self.dev_set
            elif key in ("in domain", "indomain"):
                out += [d.name for d in self.datasets if d.in_domain]
            elif key in ("held out", "heldout"):
                out += [d.name for d in self.datasets if not d.in_domain]
            elif self.find_skill(tok) is not None:
                out += [d.name for d in self.datasets_for(tok)]
            else:
                name = tok[: -len(".json")] if tok.endswith(".json") else tok
                if name in known or (allow_unregistered and _NIV2_NAME.match(name)):
                    out.append(name)
                else:
                    raise ValueError(self._unknown_message(tok, known))
        return list(dict.fromkeys(out))

    def _unknown_message(self, tok: str, known: set[str]) -> str:
        close = difflib.get_close_matches(tok, sorted(known), n=3, cutoff=0.5)
        # a prefix such as 'task697' or a fragment such as 'piqa' is a common way to half-remember a name
        close += [n for n in sorted(known) if tok.lower() in n.lower() and n not in close][:3]
        close_skills = difflib.get_close_matches(_norm_skill(tok), [_norm_skill(s) for s in self.skills], n=2)
        msg = f"unknown task or skill {tok!r}."
        if close or close_skills:
            msg += f" Did you mean: {', '.join(close_skills + close)}?"
        msg += (
            f" Valid specs: 'all', 'dev', 'in_domain', 'held_out', a skill ({', '.join(self.skills)}) "
            f"or a task name of the registry ({len(known)} known)."
        )
        return msg


# ---------------------------------------------------------------------------------------------------------------------
# The default registry (DESIGN.md section 4)
# ---------------------------------------------------------------------------------------------------------------------

_TABLE: tuple[tuple[str, bool, tuple[str, str]], ...] = (
    ("logical", True, ("task697_mmmlu_answer_generation_formal_logic", "task062_bigbench_repeat_copy_logic")),
    (
        "deductive",
        True,
        ("task966_ruletaker_fact_checking_based_on_given_context", "task717_mmmlu_answer_generation_logical_fallacies"),
    ),
    ("commonsense", True, ("task080_piqa_answer_generation", "task1391_winogrande_easy_answer_generation")),
    ("textual entailment", True, ("task1386_anli_r2_entailment", "task1388_cb_entailment")),
    (
        "mathematics",
        True,
        (
            "task104_semeval_2019_task10_closed_vocabulary_mathematical_answer_generation",
            "task835_mathdataset_answer_generation",
        ),
    ),
    ("causal", False, ("task1393_superglue_copa_text_completion", "task391_causal_relationship")),
    ("abductive", False, ("task067_abductivenli_answer_generation", "task069_abductivenli_classification")),
    (
        "spatial",
        False,
        ("task151_tomqa_find_location_easy_clean", "task083_babi_t1_single_supporting_fact_answer_generation"),
    ),
    (
        "analogical",
        False,
        ("task1152_bard_analogical_reasoning_causation", "task1159_bard_analogical_reasoning_containers"),
    ),
    ("argument", False, ("task513_argument_stance_classification", "task514_argument_consequence_classification")),
)

ALERT = Registry(
    datasets=tuple(Dataset(name, skill, in_domain) for skill, in_domain, names in _TABLE for name in names),
    dev_set=(
        "task247_dream_answer_generation",
        "task118_semeval_2019_task10_open_vocabulary_mathematical_answer_generation",
        "task1385_anli_r1_entailment",
    ),
)

DATASETS: tuple[Dataset, ...] = ALERT.datasets
SKILLS: tuple[str, ...] = ALERT.skills
IN_DOMAIN_SKILLS: tuple[str, ...] = ALERT.in_domain_skills
HELD_OUT_SKILLS: tuple[str, ...] = ALERT.held_out_skills
DEV_SET: tuple[str, ...] = ALERT.dev_set


def datasets_for(skill: str, registry: Registry | None = None) -> list[Dataset]:
    """The datasets of ``skill`` in ``registry`` (default :data:`ALERT`)."""
    return (registry or ALERT).datasets_for(skill)


def resolve_tasks(
    spec: str | Iterable[str], registry: Registry | None = None, *, allow_unregistered: bool = False
) -> list[str]:
    """Resolve a task spec to an ordered list of unique task names.

    ``spec``: a string or list of strings, each ``'all'`` (the evaluation datasets), ``'dev'``, ``'in_domain'``,
    ``'held_out'``, a skill name, a task name of the registry or its dev set, or a comma-separated mix of these.
    Order follows the spec (registry order within a group); repeated names keep their first position. Unknown
    tokens raise ValueError naming the valid skills and the closest task names. ``allow_unregistered=True`` also
    accepts any NIV2-style name (``task<N>_...``) outside the registry.
    """
    return (registry or ALERT).resolve(spec, allow_unregistered=allow_unregistered)


def available(
    registry: Registry | None, niv2_dir: str | os.PathLike, tasks: Iterable[str] | None = None
) -> tuple[list[str], list[str]]:
    """Which tasks have a file in ``niv2_dir``: returns ``(present, missing)``, each in registry order.

    ``tasks`` defaults to every evaluation dataset followed by the dev set. Use it so a run works with any subset of
    the files and can name what it skips.
    """
    reg = registry or ALERT
    wanted = list(dict.fromkeys(tasks if tasks is not None else (*reg.names, *reg.dev_set)))
    have = set(niv2.list_tasks(niv2_dir))
    return [t for t in wanted if t in have], [t for t in wanted if t not in have]


# ---------------------------------------------------------------------------------------------------------------------
# Downloading the registry's task files
# ---------------------------------------------------------------------------------------------------------------------


def download_spec(spec: str, registry: Registry | None = None) -> list[str]:
    """The task names a download ``spec`` names: ``'alert'`` = the evaluation datasets, ``'dev'`` = the dev set,
    ``'all'`` = both (unlike :func:`resolve_tasks`, where ``'all'`` means the evaluation datasets only: a download
    wants every file a run may read); anything else is a :func:`resolve_tasks` spec, NIV2 names outside the registry
    included."""
    reg = registry or ALERT
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    words = {"alert": "all", "all": "all,dev"}
    return reg.resolve([words.get(t.lower(), t) for t in tokens], allow_unregistered=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m alert_jax.data.registry download --tasks=SPEC DIR``: fetch the named task files into ``DIR``,
    one line of progress per file; returns the exit code (module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m alert_jax.data.registry", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dl = commands.add_parser("download", help="fetch the registry's NIV2 task files into DIR")
    dl.add_argument("dir", help="folder to write <task>.json files into (created; files already there are kept)")
    dl.add_argument("--tasks", default="all", help="'alert', 'dev', 'all' (default) or a task spec")
    dl.add_argument("--base_url", default=niv2.DEFAULT_BASE_URL, help="where <task>.json files are served")
    dl.add_argument("--overwrite", action="store_true", help="fetch files that are already in DIR again")
    dl.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    args = parser.parse_args(argv)
    prog = f"{parser.prog} {args.command}"
    try:
        names = download_spec(args.tasks)
    except ValueError as e:
        print(f"{prog}: error: --tasks={args.tasks!r}: {e} Here 'alert' also names the evaluation datasets and 'all'"
              " names them with the dev set.", file=sys.stderr)
        return 2
    folder = os.path.expanduser(args.dir)
    fetched = 0
    for i, name in enumerate(names, 1):
        present = os.path.isfile(os.path.join(folder, f"{name}.json")) and not args.overwrite
        try:
            (path,) = niv2.download_tasks([name], folder, args.base_url, timeout=args.timeout, overwrite=args.overwrite)
        except niv2.DownloadError as e:
            print(f"{prog}: error: {e} ({i - 1} of {len(names)} files done)", file=sys.stderr)
            return 1
        except niv2.TaskFileError as e:
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        fetched += not present
        print(f"[{i}/{len(names)}] {path} ({'kept' if present else 'fetched'})", flush=True)
    print(f"{len(names)} task files in {folder} ({fetched} fetched, {len(names) - fetched} already there)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
