"""What an evaluation shows and records while it decodes: one progress bar with ETA over all pending prompts, and
(``eval.profile``) a ``jax.profiler`` trace of the first decode calls.

The bar (tqdm, on stderr) counts prompts over every pending (task, template): its total is :func:`pending_prompts`,
each decode batch adds its prompts, and a finished file adds the prompts that were not decoded (overflowing ones), so
the bar ends at its total. Only process 0 shows it, only with ``eval.progress``, and only when stderr is a terminal
(tqdm's ``disable=None``): logs and pipes stay clean. Log lines go through tqdm while the bar is shown
(``logging_redirect_tqdm``) so they do not break it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from alert_jax.io.profiler import ProfileTrace, trace_dir
from alert_jax.parallel import distributed


def pending_prompts(instances: dict[str, Sequence[Any]], pending: Sequence[tuple[str, str]]) -> int:
    """The progress bar's total: the instances of the task of every pending (task, template)."""
    return sum(len(instances[name]) for name, _ in pending)


def progress_bar(total: int, enabled: bool) -> tqdm.tqdm:
    """The bar (module docstring): ``total`` prompts; drawn only when ``enabled``, on process 0, to a terminal."""
    show = enabled and distributed.is_primary()
    return tqdm.tqdm(total=total, desc="evaluate", unit="prompt", file=sys.stderr, dynamic_ncols=True,
                     disable=None if show else True)


class DecodeWatch:
    """The bar and the optional trace of one evaluation's decoding: :meth:`batch` after every decode call,
    :meth:`file_done` after every (task, template)."""

    def __init__(self, bar: tqdm.tqdm, trace: ProfileTrace | None, trace_batches: int):
        self.bar, self.trace, self.trace_batches, self.batches = bar, trace, int(trace_batches), 0

    def batch(self, prompts: int) -> None:
        self.bar.update(prompts)
        self.batches += 1
        if self.trace is not None and self.batches >= self.trace_batches:
            self.trace.stop()

    def file_done(self, undecoded: int) -> None:
        self.bar.update(undecoded)


@contextlib.contextmanager
def watch_decoding(cfg: Any, workdir: str | os.PathLike, instances: dict[str, Sequence[Any]],
                   pending: Sequence[tuple[str, str]]) -> Iterator[DecodeWatch]:
    """The :class:`DecodeWatch` of ``pending`` (``eval.progress``; ``eval.profile``: the first
    ``eval.profile_batches`` decode calls traced into ``<workdir>/profile/eval``); closed on exit."""
    e = cfg.eval
    bar = progress_bar(pending_prompts(instances, pending), bool(e.progress))
    trace = ProfileTrace(trace_dir(workdir, "eval")) if bool(e.profile) else None
    with contextlib.closing(bar), logging_redirect_tqdm():
        if trace is not None:
            trace.start()
        try:
            yield DecodeWatch(bar, trace, int(e.profile_batches))
        finally:
            if trace is not None:
                trace.stop()
