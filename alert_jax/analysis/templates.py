"""Template memorization: does finetuning help under every prompt template, or only those like its own format?

Input: per-(dataset, template) scores of the pretrained model and of a finetuned one. Output: the mean gain per
template, and the mean gain over templates that resemble the finetuning format (``Template.resembles_finetuning``,
T1/T2) vs the rest. A large gap means the gain is partly memorised format rather than skill.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import numpy as np

ScoreTable = Mapping[tuple[str, str], float]  # (dataset, template) -> score


@dataclasses.dataclass(frozen=True)
class TemplateGains:
    per_template: dict[str, float]  # template -> mean over datasets of (tuned - base)
    finetuning_like: float  # mean over the finetuning-like templates' per-template gains (NaN if none)
    other: float  # mean over the remaining templates (NaN if none)

    @property
    def gap(self) -> float:
        """finetuning-like minus other: > 0 means the gain concentrates on familiar formats."""
        return self.finetuning_like - self.other


def template_gains(base: ScoreTable, tuned: ScoreTable, finetuning_like: Iterable[str]) -> TemplateGains:
    """Mean gain per template over the (dataset, template) cells present in both tables."""
    gains: dict[str, list[float]] = {}
    for key in sorted(set(base) & set(tuned)):
        gains.setdefault(key[1], []).append(tuned[key] - base[key])
    per_template = {t: float(np.mean(v)) for t, v in sorted(gains.items())}
    like = set(finetuning_like)

    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    return TemplateGains(
        per_template,
        mean([g for t, g in per_template.items() if t in like]),
        mean([g for t, g in per_template.items() if t not in like]),
    )
