"""Keeps orbax's and tensorstore's echoes of one failed checkpoint read or write off stderr.

A failed restore or save is reported once, as one line, by ``io.checkpoint`` (``CheckpointRestoreError``,
``CheckpointWriteError``, a damaged step set aside). Around that failure orbax's asynchronous machinery prints the
same error again, once per array, with tracebacks that bury the one line:

- abandoned per-array read coroutines, closed by the garbage collector later, go to ``sys.unraisablehook``
  ("Exception ignored in: <coroutine object _read_array_index_and_device_put ...>");
- tensorstore completes writes on an event loop orbax has already closed: ``RuntimeError: Event loop is closed``
  through ``sys.unraisablehook``, one per pending write;
- orbax's future thread logs the storage error with its traceback at ERROR, and asyncio logs it again for each
  write task at exit ("Task exception was never retrieved").

:func:`install` adds (once per process) a ``sys.unraisablehook`` that drops exactly the first two, and logging
filters that keep orbax's record as one line without the traceback and drop asyncio's repeats. Everything else
passes unchanged.
"""

from __future__ import annotations

import logging
import sys
import types
from typing import Any

_ABANDONED_READ = "_read_array_index_and_device_put"  # orbax's per-array read coroutine (serialization.py)
_CLOSED_LOOP = "Event loop is closed"
_STORAGE_MARKERS = ("os_error_code", "Failed writing", "Error writing", "Error reading")  # tensorstore's I/O errors
_LOGGERS = ("absl", "asyncio")  # orbax logs through absl; asyncio logs unretrieved task exceptions


def _is_echo(unraisable: Any) -> bool:
    obj, exc = unraisable.object, unraisable.exc_value
    if isinstance(obj, types.CoroutineType) and obj.__name__ == _ABANDONED_READ:
        return True
    return isinstance(exc, RuntimeError) and str(exc) == _CLOSED_LOOP


class _OneLineStorageErrors(logging.Filter):
    """For a record whose exception is a tensorstore storage error: drops asyncio's, keeps orbax's as its first
    line without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (OSError, ValueError)) and any(m in str(exc) for m in _STORAGE_MARKERS):
            if record.name == "asyncio":
                return False
            record.exc_info, record.exc_text = None, None
            record.msg = str(record.getMessage()).splitlines()[0] if record.getMessage() else record.msg
            record.args = None
        return True


def install() -> None:
    """Installs the hook and the filters (idempotent)."""
    if not getattr(sys.unraisablehook, "drops_orbax_echoes", False):
        previous = sys.unraisablehook

        def hook(unraisable: Any) -> None:
            if not _is_echo(unraisable):
                previous(unraisable)

        hook.drops_orbax_echoes = True  # type: ignore[attr-defined]
        sys.unraisablehook = hook
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLineStorageErrors) for f in logger.filters):
            logger.addFilter(_OneLineStorageErrors())
