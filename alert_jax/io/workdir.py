"""One run per workdir, and the history of the configs a workdir was run with.

**Lock** (:func:`workdir_lock`): ``<workdir>/.lock`` holds ``{host, pid, started}`` of the run that owns the
workdir. It is created atomically (``O_CREAT | O_EXCL``); a second run finds it and refuses with
:class:`WorkdirBusyError` naming the owner. A lock left by a process that no longer runs on this host (a killed
run) is taken over with a warning; a lock of another host is never taken over (remove it by hand once that run is
gone). In a multi-process job process 0 holds the lock; the others wait at a barrier for its verdict.

A workdir in a bucket (``gs://...``) has no ``O_EXCL`` create: there the lock is best effort -- a run that finds
``.lock`` refuses as above, but two runs starting within the same moment can both miss the other's lock (the last
upload wins). Start one run per bucket workdir (one JobSet per workdir does).

**Config history** (:func:`append_config_history`): every start of a run (fresh or resumed) appends one line
``{time, host, resumed_from, config}`` to ``<workdir>/config_history.jsonl``; ``config.json`` stays the config the
run was started with.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from etils import epath

from alert_jax.io.files import absolute, is_url
from alert_jax.parallel import distributed

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CONFIG_HISTORY = "config_history.jsonl"


class WorkdirError(ValueError):
    """A workdir that this run may not use (held by another run, or holding another run's results)."""


class WorkdirBusyError(WorkdirError):
    """Another run holds the workdir's lock; the message names its host, pid and start time."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: epath.Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _create_exclusive(path: epath.Path, text: str) -> None:
    """Creates ``path`` holding ``text``; FileExistsError when it exists (atomic locally, best effort in a bucket)."""
    if is_url(path):
        if path.exists():
            raise FileExistsError(path)
        path.write_text(text, encoding="utf-8")
        return
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _acquire(workdir: epath.Path) -> epath.Path:
    path = workdir / LOCK_FILE
    me = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.datetime.now().isoformat(timespec="seconds")}
    for _ in range(2):
        try:
            _create_exclusive(path, json.dumps(me))
        except FileExistsError:
            owner = _read(path)
            same_host = owner.get("host") == me["host"]
            if same_host and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
                log.warning("taking over the stale lock %s of process %s (started %s), which no longer runs",
                            path, owner.get("pid"), owner.get("started"))
                path.unlink(missing_ok=True)
                continue
            raise WorkdirBusyError(
                f"workdir {workdir} is in use by process {owner.get('pid', '?')} on host {owner.get('host', '?')} "
                f"(started {owner.get('started', '?')}); wait for it to end or use another --workdir "
                f"(if that run is gone, remove {path})"
            ) from None
        return path
    raise WorkdirBusyError(f"could not take the lock {path}")


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike) -> Iterator[epath.Path]:
    """Holds ``<workdir>/.lock`` for the block (creating the workdir). Process 0 takes it; every process raises
    :class:`WorkdirBusyError` when it is held by another run. The lock is removed on exit, also on errors."""
    workdir = absolute(workdir)
    error = None
    path = None
    if distributed.is_primary():
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            path = _acquire(workdir)
        except WorkdirBusyError as e:
            error = e
    if distributed.agree(error is not None):
        raise error or WorkdirBusyError(f"workdir {workdir} is in use by another run (see process 0's message)")
    try:
        yield workdir
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def remove_if_empty(workdir: str | os.PathLike) -> None:
    """Removes ``workdir`` when it holds nothing (a run that failed on its inputs leaves no trace); process 0."""
    workdir = epath.Path(workdir)
    if distributed.is_primary() and workdir.is_dir() and not any(workdir.iterdir()):
        workdir.rmdir()


def append_config_history(workdir: str | os.PathLike, config: Mapping[str, Any], resumed_from: int | None) -> None:
    """Appends this start's config to ``<workdir>/config_history.jsonl`` (process 0)."""
    if not distributed.is_primary():
        return
    record = {"time": datetime.datetime.now().isoformat(timespec="seconds"), "host": socket.gethostname(),
              "resumed_from": resumed_from, "config": dict(config)}
    path = epath.Path(workdir) / CONFIG_HISTORY
    if is_url(path):  # objects cannot be appended to: rewritten whole
        previous = path.read_text(encoding="utf-8") if path.exists() else ""
        path.write_text(previous + json.dumps(record) + "\n", encoding="utf-8")
        return
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
