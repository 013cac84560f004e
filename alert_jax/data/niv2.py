"""Reader, validator and downloader for Super-NaturalInstructions (NIV2) task files.

A task file is one JSON object. The final NIV2 format (the upstream house format) has every value a list:

* ``Definition``: a 1-element list of strings (older files: a plain string; both are accepted),
* ``Positive Examples`` / ``Negative Examples``: lists of ``{input, output, explanation}`` with ``output`` a string,
* ``Instances``: a list of ``{id, input, output}`` where ``output`` is a LIST of acceptable reference strings (older
  files may hold a single string; it is normalised to a 1-element list),
* ``Categories``, ``Reasoning``, ``Source``, ...: lists of strings (a plain string is normalised to a 1-element list).

Files are read either from a folder of ``<task name>.json`` files or from an NIV2 checkout (a folder with a ``tasks/``
sub-folder). Every problem is reported as a :class:`TaskFileError` that names the file, the field and, for instances,
the index and id of the record, so a user can open the file and fix it.

Invariants of a loaded :class:`Task`: ``definition`` is a string; ``instances`` is non-empty; instance ids are unique;
every instance has a string ``input`` and a non-empty ``outputs`` list of strings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from etils import epath

from alert_jax.io.files import atomic_write_bytes

__all__ = [
    "DEFAULT_BASE_URL",
    "DownloadError",
    "Example",
    "Instance",
    "Task",
    "TaskFileError",
    "TaskNotFoundError",
    "answer_options",
    "download_tasks",
    "list_tasks",
    "load_task",
    "load_task_file",
    "load_tasks",
    "parse_task",
    "task_path",
    "tasks_folder",
]

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/allenai/natural-instructions/master/tasks"


class TaskFileError(ValueError):
    """A task file is malformed. ``str(err)`` names the file, the field and, for instances, the index and id."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        field: str | None,
        message: str,
        *,
        index: int | None = None,
        instance_id: str | None = None,
    ):
        self.path = str(path) if path is not None else None
        self.field = field
        self.index = index
        self.instance_id = instance_id
        self.message = message
        where = self.path or "<task data>"
        if field is not None:
            where += f": field {field!r}"
        if index is not None:
            where += f"[{index}]"
        if instance_id is not None:
            where += f" (id {instance_id!r})"
        super().__init__(f"{where}: {message}")


class TaskNotFoundError(FileNotFoundError):
    """One or more task files are not in the given folder. ``names`` lists the missing task names."""

    def __init__(self, names: Sequence[str], folder: str | os.PathLike | None):
        self.names = list(names)
        self.folder = str(folder) if folder is not None else None
        where = f"in {self.folder}" if self.folder else "(no niv2_dir given and not an existing file path)"
        super().__init__(f"{len(self.names)} NIV2 task file(s) not found {where}: {', '.join(self.names)}")


class DownloadError(OSError):
    """Fetching a task file failed; ``url`` names what was requested."""

    def __init__(self, url: str, message: str):
        self.url = url
        super().__init__(f"could not download {url}: {message}")


@dataclasses.dataclass(frozen=True)
class Example:
    """A positive or negative demonstration of a task: ``output`` is one string, ``explanation`` may be ''."""

    input: str
    output: str
    explanation: str = ""


@dataclasses.dataclass(frozen=True)
class Instance:
    """One scored instance: ``outputs`` holds every acceptable reference (non-empty)."""

    id: str
    input: str
    outputs: list[str]


@dataclasses.dataclass
class Task:
    """A validated NIV2 task. ``path`` is the file it was read from and ``digest`` the sha256 (hex) of that file's
    bytes, both '' when parsed from memory: evaluation records the digest so that predictions made against other
    task-file content (changed references, same ids) are never reused."""

    name: str
    definition: str
    positive_examples: list[Example]
    negative_examples: list[Example]
    instances: list[Instance]
    categories: list[str]
    reasoning: list[str]
    source: list[str]
    path: str = ""
    domains: list[str] = dataclasses.field(default_factory=list)
    instance_license: list[str] = dataclasses.field(default_factory=list)
    digest: str = ""


def answer_options(task: Task, max_options: int) -> list[str] | None:
    """The label set of a classification task, sorted, or None for a generation task.

    The candidates are the distinct stripped strings among every instance's acceptable outputs (all instances of
    the file, not only the evaluated ones) and the positive examples' outputs. A task is a classification task when
    there are between 2 and ``max_options`` of them (one string alone is no choice). Sorting is Python's
    case-sensitive string order, so the options do not depend on instance order; e.g. task513 (argument stance)
    -> ``['against', 'in favor']``, and a free-form task with hundreds of distinct answers -> None.
    """
    outputs = {o.strip() for inst in task.instances for o in inst.outputs}
    outputs |= {ex.output.strip() for ex in task.positive_examples}
    outputs.discard("")
    return sorted(outputs) if 2 <= len(outputs) <= max_options else None


# ---------------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------------


def _string_list(data: Mapping[str, Any], key: str, path: str | None) -> list[str]:
    """An optional metadata field: a list of strings, a plain string (-> [string]) or absent (-> [])."""
    value = data.get(key, [])
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskFileError(path, key, f"expected a list of strings, got {_describe(value)}")
    return list(value)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _definition(data: Mapping[str, Any], path: str | None) -> str:
    if "Definition" not in data:
        raise TaskFileError(path, "Definition", "missing (every NIV2 task file needs a task definition)")
    value = data["Definition"]
    if isinstance(value, str):  # older NIV2 files
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\n".join(value)  # the final format has exactly one element; join defensively if there are more
    raise TaskFileError(path, "Definition", f"expected a 1-element list of strings or a string, got {_describe(value)}")


def _examples(data: Mapping[str, Any], key: str, path: str | None) -> list[Example]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise TaskFileError(path, key,
                            f"expected a list of {{input, output, explanation}} objects, got {_describe(value)}")
    out = []
    for i, ex in enumerate(value):
        if not isinstance(ex, dict):
            raise TaskFileError(path, key, f"expected an object, got {_describe(ex)}", index=i)
        for sub in ("input", "output"):
            if sub not in ex:
                raise TaskFileError(path, key, f"missing {sub!r}", index=i)
        output = ex["output"]
        if isinstance(output, list) and output and all(isinstance(o, str) for o in output):
            output = output[0]  # tolerate a list-valued example output: the first is the demonstrated answer
        explanation = ex.get("explanation", "")
        for sub, v in (("input", ex["input"]), ("output", output), ("explanation", explanation)):
            if not isinstance(v, str):
                raise TaskFileError(path, key, f"{sub!r} must be a string, got {_describe(v)}", index=i)
        out.append(Example(input=ex["input"], output=output, explanation=explanation))
    return out


def _instances(data: Mapping[str, Any], path: str | None) -> list[Instance]:
    if "Instances" not in data:
        raise TaskFileError(path, "Instances", "missing (every NIV2 task file needs a list of instances)")
    value = data["Instances"]
    if not isinstance(value, list):
        raise TaskFileError(path, "Instances",
                            f"expected a list of {{id, input, output}} objects, got {_describe(value)}")
    if not value:
        raise TaskFileError(path, "Instances", "empty task: the file has no instances")
    seen: dict[str, int] = {}
    out = []
    for i, rec in enumerate(value):
        if not isinstance(rec, dict):
            raise TaskFileError(path, "Instances", f"expected an object, got {_describe(rec)}", index=i)
        iid = rec.get("id")
        if not isinstance(iid, str) or not iid:
            raise TaskFileError(path, "Instances", f"'id' must be a non-empty string, got {_describe(iid)}", index=i)
        if iid in seen:
            raise TaskFileError(
                path, "Instances", f"duplicate id (first used by instance {seen[iid]})", index=i, instance_id=iid
            )
        seen[iid] = i
        if "input" not in rec:
            raise TaskFileError(path, "Instances", "missing 'input'", index=i, instance_id=iid)
        if not isinstance(rec["input"], str):
            raise TaskFileError(
                path, "Instances", f"'input' must be a string, got {_describe(rec['input'])}", index=i, instance_id=iid
            )
        if "output" not in rec:
            raise TaskFileError(path, "Instances", "missing 'output' (no reference answers)", index=i, instance_id=iid)
        outputs = rec["output"]
        if isinstance(outputs, str):  # older NIV2 files: a single reference
            outputs = [outputs]
        if not isinstance(outputs, list):
            raise TaskFileError(
                path, "Instances", f"'output' must be a list of strings, got {_describe(outputs)}", index=i,
                instance_id=iid
            )
        if not outputs:
            raise TaskFileError(
                path, "Instances", "'output' is an empty list (no reference answers)", index=i, instance_id=iid
            )
        for j, o in enumerate(outputs):
            if not isinstance(o, str):
                raise TaskFileError(
                    path, "Instances", f"'output'[{j}] must be a string, got {_describe(o)}", index=i, instance_id=iid
                )
        out.append(Instance(id=iid, input=rec["input"], outputs=list(outputs)))
    return out


def parse_task(data: Any, *, name: str, path: str | os.PathLike | None = None) -> Task:
    """Validate a decoded task-file object and build a :class:`Task`; raises :class:`TaskFileError`."""
    p = str(path) if path is not None else None
    if not isinstance(data, dict):
        raise TaskFileError(p, None, f"expected a JSON object at the top level, got {type(data).__name__}")
    return Task(
        name=name,
        definition=_definition(data, p),
        positive_examples=_examples(data, "Positive Examples", p),
        negative_examples=_examples(data, "Negative Examples", p),
        instances=_instances(data, p),
        categories=_string_list(data, "Categories", p),
        reasoning=_string_list(data, "Reasoning", p),
        source=_string_list(data, "Source", p),
        path=p or "",
        domains=_string_list(data, "Domains", p),
        instance_license=_string_list(data, "Instance License", p),
    )


def _decode(raw: bytes | str, where: str) -> Any:
    """JSON-decode a file's content; a truncated/corrupt file is reported with its path and line/column."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as e:
        raise TaskFileError(where, None, f"not valid UTF-8 at byte {e.start}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (the file looks truncated)" if e.pos >= len(text.rstrip()) else ""
        raise TaskFileError(where, None, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}{hint}") from e


# ---------------------------------------------------------------------------------------------------------------------
# Locating and loading files
# ---------------------------------------------------------------------------------------------------------------------


def _task_name(name: str) -> str:
    base = os.path.basename(str(name))
    return base[: -len(".json")] if base.endswith(".json") else base


def tasks_folder(niv2_dir: str | os.PathLike) -> epath.Path:
    """The folder holding the task files: ``niv2_dir/tasks`` for an NIV2 checkout, else ``niv2_dir`` itself."""
    if not str(niv2_dir):
        raise FileNotFoundError("no NIV2 folder given (set data.niv2_dir to a task folder or an NIV2 checkout)")
    root = epath.Path(niv2_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"NIV2 folder {root} does not exist or is not a directory (set data.niv2_dir)")
    sub = root / "tasks"
    return sub if sub.is_dir() else root


def list_tasks(niv2_dir: str | os.PathLike) -> list[str]:
    """Sorted names (file stems) of the ``*.json`` task files in a task folder or NIV2 checkout."""
    return sorted(p.stem for p in tasks_folder(niv2_dir).glob("*.json") if p.is_file())


def task_path(name: str, niv2_dir: str | os.PathLike) -> epath.Path:
    """Path of task ``name`` (with or without ``.json``) in ``niv2_dir``; :class:`TaskNotFoundError` if absent."""
    folder = tasks_folder(niv2_dir)
    path = folder / f"{_task_name(name)}.json"
    if not path.is_file():
        raise TaskNotFoundError([_task_name(name)], folder)
    return path


def load_task_file(path: str | os.PathLike) -> Task:
    """Load and validate the task file at ``path`` (an explicit file path; the task name is the file's stem).

    Raises :class:`TaskNotFoundError` (a ``FileNotFoundError``) when there is no such file and :class:`TaskFileError`
    (a ``ValueError``) when the file is malformed.
    """
    file = epath.Path(path).expanduser()
    if not file.is_file():
        raise TaskNotFoundError([_task_name(str(path))], file.parent if str(file.parent) != "." else None)
    raw = file.read_bytes()
    task = parse_task(_decode(raw, str(file)), name=_task_name(file.name), path=file)
    task.digest = hashlib.sha256(raw).hexdigest()  # of the very bytes parsed: no second read can differ
    return task


def load_task(name_or_path: str | os.PathLike, niv2_dir: str | os.PathLike | None = None) -> Task:
    """Load and validate one task: the task named ``name_or_path`` in ``niv2_dir``, or, without ``niv2_dir``, the
    file path ``name_or_path`` (:func:`load_task_file`).

    A lookup by name reads ``niv2_dir`` only, never the current directory, so a stray file named like a task cannot
    stand in for the one in the configured folder. The name may end in ``.json``; a name with a folder part is refused
    with ``niv2_dir`` (ValueError: pass a task name, or a path without ``niv2_dir``). Raises :class:`TaskNotFoundError`
    (a ``FileNotFoundError``) when the task is not found and :class:`TaskFileError` (a ``ValueError``) when the file
    is malformed.
    """
    if niv2_dir is None or not str(niv2_dir):
        return load_task_file(name_or_path)
    name = str(name_or_path)
    if _task_name(name) != name.removesuffix(".json"):
        raise ValueError(f"task name {name!r} has a folder part: with niv2_dir={str(niv2_dir)!r} pass the task's name "
                         f"(e.g. {_task_name(name)!r}), or pass a file path without niv2_dir")
    return load_task_file(task_path(name, niv2_dir))


def load_tasks(
    names: Iterable[str],
    niv2_dir: str | os.PathLike,
    missing: Literal["error", "skip"] = "error",
) -> dict[str, Task]:
    """Load several tasks by name, in the given order (duplicates collapse).

    ``missing='error'`` raises one :class:`TaskNotFoundError` listing every absent name before anything is parsed;
    ``missing='skip'`` leaves absent tasks out of the result (the caller can compare keys with ``names``).
    """
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    folder = tasks_folder(niv2_dir)
    wanted = list(dict.fromkeys(_task_name(n) for n in names))
    absent = [n for n in wanted if not (folder / f"{n}.json").is_file()]
    if absent and missing == "error":
        raise TaskNotFoundError(absent, folder)
    return {n: load_task_file(folder / f"{n}.json") for n in wanted if n not in absent}


# ---------------------------------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------------------------------


def download_tasks(
    names: Iterable[str],
    cache_dir: str | os.PathLike,
    base_url: str = DEFAULT_BASE_URL,
    *,
    timeout: float = 60.0,
    overwrite: bool = False,
) -> list[epath.Path]:
    """Fetch task files ``{base_url}/{name}.json`` into ``cache_dir``; returns their local paths in order.

    Files already in the cache are not fetched again (unless ``overwrite``). Each download is validated with the same
    rules as :func:`load_task` before it is written, and written atomically (temporary file + rename), so the cache
    never holds a partial or invalid file. Network failures raise :class:`DownloadError` and invalid content raises
    :class:`TaskFileError`; both name the URL. ``base_url`` may be ``file://...`` (used by the tests: no network).
    """
    cache = epath.Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    base = base_url.rstrip("/")
    paths = []
    for name in dict.fromkeys(_task_name(n) for n in names):
        dest = cache / f"{name}.json"
        paths.append(dest)
        if dest.is_file() and not overwrite:
            continue
        url = f"{base}/{urllib.parse.quote(name)}.json"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise DownloadError(url, f"HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError) as e:
            raise DownloadError(url, str(getattr(e, "reason", e))) from e
        parse_task(_decode(raw, url), name=name, path=url)  # validate before it enters the cache
        atomic_write_bytes(dest, raw)
    return paths
