"""Paths and atomic file writes, for local folders and cloud buckets alike.

**Paths**: every workdir, checkpoint, data and output path is an ``etils.epath.Path``, so ``gs://bucket/...`` (and
the other URLs epath knows: ``s3://``, ...) keeps its scheme where ``pathlib`` would make it ``gs:/bucket/...``.
Cloud paths need the ``cloud`` extra (gcsfs; epath uses tf.io.gfile instead when TensorFlow is importable); orbax
reads and writes them itself (arrays through tensorstore's own GCS driver). :func:`absolute` is the one way to make
a path absolute without mangling a URL. Readers that need a local file (safetensors, ``torch.load``, tokenizer
libraries) take :func:`local_copy` of a bucket path; :func:`copy_file` streams one file between any two locations.

**Atomic writes**: a reader (or a resumed run) sees the old file or the new one, never a partial one. Locally
through a temporary file in the same folder and ``os.replace``; in a bucket the object is uploaded in one request
that only creates it once complete, which object stores make atomic per object.
"""

from __future__ import annotations

import atexit
import fnmatch
import io
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator, Sequence
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
        copy_file(f, dest / f.relative_to(src).as_posix())  # streamed: a checkpoint's array files can be GBs
    src.rmtree()


_CHUNK = 1 << 24  # bytes per read while copying: memory stays at one chunk, not one file
# (URL, patterns) -> (listing signature, local copy) of the copies this process made (see local_copy)
_COPIES: dict[tuple[str, tuple[str, ...]], tuple[tuple, pathlib.Path]] = {}


def copy_file(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copies the file ``src`` to ``dest`` (either may be a URL; ``dest``'s parent is created), streamed in chunks of
    16 MiB, so a large shard or checkpoint never sits whole in memory."""
    src, dest = epath.Path(src), epath.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with src.open("rb") as r, dest.open("wb") as w:
        shutil.copyfileobj(r, w, _CHUNK)


def local_copy(path: str | os.PathLike, patterns: Sequence[str] = ("*",)) -> pathlib.Path:
    """A local path for ``path``, for readers that open local files only: a local path itself (``~`` expanded); for
    a URL a copy in a temporary folder (removed when the process exits) of that file, or of the folder's files (one
    level: tokenizer and Hugging Face folders are flat) whose names match one of the ``fnmatch`` ``patterns``. A URL
    that does not exist gives a local path that does not either.

    A process asks for the same files several times (config, tokenizer, weights), so a URL is copied once: a later
    call reuses the copy while the names, sizes and modification times of the matching objects are unchanged."""
    if not is_url(path):
        return pathlib.Path(path).expanduser()
    src = epath.Path(path)
    if src.is_dir():
        wanted = sorted((f for f in src.iterdir() if any(fnmatch.fnmatch(f.name, p) for p in patterns)),
                        key=lambda f: f.name)
        wanted = [f for f in wanted if not f.is_dir()]
    else:
        wanted = [src] if src.exists() else []
    signature = tuple((f.name, f.stat().length, f.stat().mtime) for f in wanted)
    key = (os.fspath(path), tuple(patterns))
    if key in _COPIES and _COPIES[key][0] == signature and _COPIES[key][1].exists():
        return _COPIES[key][1]
    tmp = tempfile.mkdtemp(prefix="alert_jax_copy_")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    dest = pathlib.Path(tmp) / (src.name or "copy")
    if src.is_dir():
        dest.mkdir()
        for f in wanted:
            copy_file(f, dest / f.name)
    elif wanted:
        copy_file(src, dest)
    if wanted:
        _COPIES[key] = (signature, dest)
    return dest


def remove_folder(path: str | os.PathLike) -> None:
    """Removes the folder ``path`` and everything below it (every object under the prefix, in a bucket); nothing
    happens when it does not exist."""
    path = epath.Path(path)
    if path.is_dir():
        path.rmtree()


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
