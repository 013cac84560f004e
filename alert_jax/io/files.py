"""Paths and atomic file writes, for local folders and cloud buckets alike.

**Paths**: every workdir, checkpoint, data and output path is an ``etils.epath.Path``, so ``gs://bucket/...`` (and
the other URLs epath knows: ``s3://``, ...) keeps its scheme where ``pathlib`` would make it ``gs:/bucket/...``.
Cloud paths need the ``cloud`` extra (gcsfs; epath uses tf.io.gfile instead when TensorFlow is importable); orbax
reads and writes them itself (arrays through tensorstore's own GCS driver). :func:`absolute` is the one way to make
a path absolute without mangling a URL.

**Atomic writes**: a reader (or a resumed run) sees the old file or the new one, never a partial one. Locally
through a temporary file in the same folder and ``os.replace``; in a bucket the object is uploaded in one request
that only creates it once complete, which object stores make atomic per object.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from typing import Any, TextIO

from etils import epath


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a location by URL (``gs://bucket/x``) rather than a local file."""
    return "://" in os.fspath(path)


def absolute(path: str | os.PathLike) -> epath.Path:
    """``path`` as an ``epath.Path``: a local path made absolute (as ``pathlib``'s ``absolute``), a URL unchanged."""
    p = epath.Path(path)
    return p if is_url(p) else p.absolute()


def abspath(path: str | os.PathLike) -> str:
    """``os.path.abspath`` (absolute and normalised) for a local path; a URL unchanged (as a string)."""
    return os.fspath(path) if is_url(path) else os.path.abspath(path)


def open_text(path: str | os.PathLike, newline: str | None = None) -> TextIO:
    """``path`` opened for reading as UTF-8 text (``newline`` as for ``open``); a bucket object is read whole."""
    if not is_url(path):
        return open(path, encoding="utf-8", newline=newline)
    return io.StringIO(epath.Path(path).read_bytes().decode("utf-8"), newline=newline)


def write_figure(fig: Any, path: str | os.PathLike, **savefig: Any) -> None:
    """Saves the matplotlib figure ``fig`` to ``path`` atomically, in the format its suffix names (``.png``):
    rendered in memory (matplotlib writes local files only), then written as one file."""
    buf = io.BytesIO()
    fig.savefig(buf, format=epath.Path(path).suffix.lstrip(".") or "png", **savefig)
    atomic_write_bytes(path, buf.getvalue())


def files_below(root: str | os.PathLike) -> Iterator[epath.Path]:
    """Every file name below the folder ``root``, at any depth (``os.walk`` locally; listing by listing in a
    bucket, where fsspec's walk drops the URL scheme)."""
    root = epath.Path(root)
    if not is_url(root):
        for dirpath, _, names in os.walk(root):
            yield from (epath.Path(dirpath) / name for name in names)
        return
    for child in root.iterdir():
        if child.is_dir():
            yield from files_below(child)
        else:
            yield child


def move_folder(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Moves the folder ``src`` to ``dest`` (which must not exist; its parent is created). Locally a rename; a
    bucket has no folders to rename, so there every object is copied, then ``src`` removed."""
    src, dest = epath.Path(src), epath.Path(dest)
    if not is_url(src):
        dest.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dest)
        return
    for f in list(files_below(src)):
        (dest / f.relative_to(src).as_posix()).write_bytes(f.read_bytes())
    src.rmtree()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (module docstring); creates the parent folder."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_url(path):
        path.write_bytes(data)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 ``text`` to ``path``, atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))
