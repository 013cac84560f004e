"""Checkpoint selection: which saved checkpoint does each criterion pick?

The paper compares choosing the finetuned checkpoint by a *dev-set task score* (generation + metric on held-apart
tasks) with choosing it by *validation perplexity* on the finetuning corpus. Each record is one saved checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class CheckpointRecord:
    step: int
    dev_score: float  # higher is better (NaN = not evaluated)
    validation_loss: float  # lower is better (NaN = not measured)

    @property
    def validation_perplexity(self) -> float:
        return math.exp(self.validation_loss) if math.isfinite(self.validation_loss) else float("nan")


@dataclasses.dataclass(frozen=True)
class Selection:
    by_dev_score: int | None  # step picked by the highest dev score (ties: the earliest step)
    by_perplexity: int | None  # step picked by the lowest validation perplexity (ties: the earliest step)

    @property
    def agree(self) -> bool:
        return self.by_dev_score is not None and self.by_dev_score == self.by_perplexity


def select_checkpoints(records: Sequence[CheckpointRecord]) -> Selection:
    """Picks a step by each criterion, ignoring records where that criterion is NaN."""
    scored = [r for r in records if math.isfinite(r.dev_score)]
    measured = [r for r in records if math.isfinite(r.validation_loss)]
    best_dev = max(scored, key=lambda r: (r.dev_score, -r.step), default=None)
    best_ppl = min(measured, key=lambda r: (r.validation_loss, r.step), default=None)
    return Selection(best_dev.step if best_dev else None, best_ppl.step if best_ppl else None)
