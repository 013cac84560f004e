"""``jax.profiler`` traces written into a run's workdir (``train.profile_steps``, ``eval.profile``).

A trace is started and stopped around the work to look at; jax writes it as
``<workdir>/profile/<part>/plugins/profile/<timestamp>/<host>.xplane.pb`` (every process its own host file), which
TensorBoard's profile plugin (``tensorboard --logdir <workdir>/profile/<part>``) or Perfetto read. The device work
dispatched before :meth:`ProfileTrace.start` is waited for first, and the work to trace before :meth:`stop`, so the
trace holds exactly the steps asked for (JAX dispatches asynchronously). A ``gs://`` workdir keeps its scheme; whether
jax's profiler can write there depends on its build (XLA's file system support), so profile into a local workdir when
it cannot.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
from etils import epath

log = logging.getLogger("alert_jax.profile")

PROFILE_DIR = "profile"  # under the workdir


def trace_dir(workdir: str | os.PathLike, part: str) -> epath.Path:
    """``<workdir>/profile/<part>``: where the traces of ``part`` ('train', 'eval') go."""
    return epath.Path(workdir) / PROFILE_DIR / part


class ProfileTrace:
    """One ``jax.profiler`` trace into ``directory``: :meth:`start` once, :meth:`stop` (idempotent) when done."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = epath.Path(directory)
        self.active = False
        self.done = False

    def start(self, pending: Any = None) -> None:
        """Waits for ``pending`` (arrays of the work dispatched so far, kept out of the trace), then starts."""
        if self.active or self.done:
            return
        jax.block_until_ready(pending)
        self.directory.mkdir(parents=True, exist_ok=True)
        jax.profiler.start_trace(os.fspath(self.directory))
        self.active = True

    def stop(self, pending: Any = None) -> None:
        """Waits for ``pending`` (the traced work), then stops and writes the trace; a no-op unless started."""
        if not self.active:
            return
        try:
            jax.block_until_ready(pending)
        finally:
            jax.profiler.stop_trace()
            self.active, self.done = False, True
            log.info("profile trace written to %s", self.directory)
