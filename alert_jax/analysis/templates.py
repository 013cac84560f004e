"""Template memorization: does finetuning help under every prompt template, or only those like its own format?

Input: per-(dataset, template) scores of the pretrained model and of a finetuned one, and what each template shares
with the finetuning prompt (``data.templates.FINETUNING_TRAITS``: ``shares_layout``, ``shares_definition``,
``shares_explanations``). Output: the mean gain per template and, for each trait, the mean gain over the templates
that share it vs those that do not. With T1..T5 (``data/templates.py``)::

    shares_layout:        T1, T2, T3  vs  T4, T5
    shares_definition:    T1, T2, T3, T5  vs  T4
    shares_explanations:  T3  vs  T1, T2, T4, T5

A large positive gap means the gain is partly a memorised format rather than a skill. The membership of each group
is part of the result, so a report can show which templates fell in which group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from alert_jax.data import templates as templates_data

ScoreTable = Mapping[tuple[str, str], float]  # (dataset, template) -> score
Traits = Mapping[str, Mapping[str, bool]]  # template -> trait -> shared with the finetuning prompt


def template_traits(templates: Mapping[str, templates_data.Template] | None = None) -> dict[str, dict[str, bool]]:
    """Template name -> ``{trait: flag}`` for every trait of ``FINETUNING_TRAITS`` (default: the registered
    templates), e.g. ``template_traits()['T3'] == {'shares_layout': True, 'shares_definition': True,
    'shares_explanations': True}``."""
    found = templates_data.TEMPLATES if templates is None else templates
    return {name: {trait: bool(getattr(t, trait)) for trait in templates_data.FINETUNING_TRAITS}
            for name, t in found.items()}


@dataclasses.dataclass(frozen=True)
class GroupGain:
    """The templates split by one trait: which share it and which do not (templates with per-template gains and
    known traits only), and the mean of their per-template gains (NaN for an empty group)."""

    trait: str
    sharing: list[str]
    other: list[str]
    sharing_gain: float
    other_gain: float

    @property
    def gap(self) -> float:
        """Sharing minus other: > 0 means the gain concentrates on templates with this trait."""
        return self.sharing_gain - self.other_gain


@dataclasses.dataclass(frozen=True)
class TemplateGains:
    per_template: dict[str, float]  # template -> mean over datasets of (tuned - base)
    groups: dict[str, GroupGain]  # trait -> split of the templates by it
    unclassified: list[str] = dataclasses.field(default_factory=list)  # templates scored but without known traits


def template_gains(base: ScoreTable, tuned: ScoreTable, traits: Traits | None = None) -> TemplateGains:
    """Mean gain per template over the (dataset, template) cells present in both tables, and per trait of
    ``traits`` (default :func:`template_traits`) the mean over sharing vs other templates' gains.

    Each template weighs the same in a group mean (a mean of per-template means), whatever its dataset count.
    """
    traits = template_traits() if traits is None else traits
    gains: dict[str, list[float]] = {}
    for key in sorted(set(base) & set(tuned)):
        gains.setdefault(key[1], []).append(tuned[key] - base[key])
    per_template = {t: float(np.mean(v)) for t, v in sorted(gains.items())}

    def mean(names: list[str]) -> float:
        return float(np.mean([per_template[n] for n in names])) if names else float("nan")

    names = list(dict.fromkeys(trait for flags in traits.values() for trait in flags))  # in FINETUNING_TRAITS order
    groups = {}
    for trait in names:
        sharing = [t for t in per_template if t in traits and traits[t].get(trait) is True]
        other = [t for t in per_template if t in traits and traits[t].get(trait) is False]
        groups[trait] = GroupGain(trait, sharing, other, mean(sharing), mean(other))
    return TemplateGains(per_template, groups, [t for t in per_template if t not in traits])
