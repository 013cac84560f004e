"""Evaluation runner: datasets x templates -> predictions files, ``scores.json``, ``report.md``, figures.

For each task and template (DESIGN.md section 6):

1. render every instance's prompt with ``templates.render`` under a token budget of ``context - max_new_tokens``
   (``count_tokens`` = the tokenizer's length of ``[bos] + encode(text)``);
2. tokenize (BOS first), decode with :class:`alert_jax.eval.generate.Generator` (buckets, fixed batch size, greedy
   unless configured otherwise), cut each continuation at the first stop string;
3. score with ``metrics.score_instances`` (EM / relaxed match on the extracted answer, ROUGE-L on the prediction);
4. write ``predictions/<task>/<template>.jsonl`` (one record per instance: ``id, prompt, prediction, answer,
   references, scores, finish, demos_dropped, input_chars_cut, overflow, provenance``) atomically.

**Prompts that cannot fit** the context even with no demonstrations and an empty input (``RenderedPrompt.fits`` is
False): with ``eval.on_overflow='empty'`` (default) they are not decoded, are scored as the empty prediction (0 on
every metric), are flagged ``"overflow": true`` in the predictions file, logged, and counted as ``n_overflow`` in
``scores.json`` and ``report.md``: the denominator of a task stays its first N instances, so scores stay comparable
between templates and models. ``eval.on_overflow='error'`` stops with an error naming the task, instance and template.

**Resume**: a predictions file is complete iff it exists and holds exactly the expected instance ids (it is written
through a temporary file and renamed, so a killed run never leaves a partial file under the final name). Complete
files are read back, not recomputed; when all are complete the model is not even loaded. ``eval_config.json`` in the
workdir records the settings that decide the predictions; re-running with different ones is an error unless
``eval.overwrite=True``.

**Provenance** (``eval.provenance``): every predictions record and ``scores.json``'s metadata say which checkpoint
step, task files and code made them; a complete file is reused only when its checkpoint and task file are unchanged,
and recomputed otherwise (see that module).

Only process 0 writes files; every process decodes (the model is sharded over all devices).

:func:`evaluate` runs four named steps: :func:`resolve_eval_tasks` (registry, task specs, templates, task files read
before any model is loaded), :func:`find_pending` (complete predictions files are reused), :func:`decode_pending`
(load the model once, decode every pending task x template) and :func:`aggregate_and_report` (with bootstrap
intervals, and the ``niv2/`` files of ``niv2_export``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
from etils import epath

from alert_jax.data import niv2, sources
from alert_jax.data import registry as registry_lib
from alert_jax.data import templates as templates_lib
from alert_jax.eval import generate as gen_lib
from alert_jax.eval import metrics as metrics_lib
from alert_jax.eval import niv2_export, stops
from alert_jax.eval import report as report_lib
from alert_jax.eval.progress import watch_decoding
from alert_jax.eval.provenance import Provenance, device_summary, provenance_changes
from alert_jax.io import loader
from alert_jax.io.files import abspath, atomic_write_text
from alert_jax.models.sizes import model_config_from
from alert_jax.parallel import distributed
from alert_jax.parallel.sharding import make_mesh
from alert_jax.train.settings import at_least, in_range, mesh_sizes, one_of

log = logging.getLogger("alert_jax.eval")

# Settings that change predictions: a resumed run must use the same values.
_PREDICTION_KEYS = (
    "init_from", "tokenizer", "model.size", "model.dtype", "eval.max_instances", "eval.num_demos",
    "eval.max_new_tokens", "eval.context", "eval.stop_strings", "eval.temperature", "eval.top_p", "eval.on_overflow",
    "eval.append_options", "eval.max_options", "seed",
)


class EvalConfigError(ValueError):
    """A bad evaluation setting (unknown template, missing folder or checkpoint, changed settings on resume, ...)."""


# ------------------------------------------------------------------------------------------------------------------
# Settings


def validate(cfg: ml_collections.ConfigDict, num_devices: int) -> None:
    """Raises :class:`EvalConfigError` naming the first numeric or enum ``eval`` / ``mesh`` setting that cannot work,
    before anything is read or written (task and template names are checked by :func:`resolve_eval_tasks`)."""
    e = EvalConfigError
    at_least(cfg, "eval.max_instances", 0, error=e)  # 0 = all
    at_least(cfg, "eval.num_demos", -1, error=e)  # -1 = the template's own number
    at_least(cfg, "eval.max_new_tokens", 1, error=e)
    at_least(cfg, "eval.context", 0, error=e)  # 0 = the model's max_position_embeddings
    at_least(cfg, "eval.batch_size", 1, error=e)
    at_least(cfg, "eval.bootstrap_resamples", 0, error=e)  # 0 = no intervals
    at_least(cfg, "eval.bootstrap_seed", 0, error=e)
    at_least(cfg, "eval.temperature", 0, integer=False, error=e)
    in_range(cfg, "eval.top_p", 0, 1, low_open=True, error=e)
    one_of(cfg, "eval.on_overflow", ("empty", "error"), error=e)
    at_least(cfg, "eval.max_options", 2, error=e)  # a label set needs 2 strings at least
    at_least(cfg, "eval.profile_batches", 1, error=e)
    for key in ("append_options", "progress", "profile"):
        if not isinstance(cfg.eval[key], bool):
            raise e(f"eval.{key}={cfg.eval[key]!r}: must be True or False")
    if int(cfg.eval.context) and int(cfg.eval.context) <= int(cfg.eval.max_new_tokens):
        raise e(f"eval.context={cfg.eval.context}: leaves no room for a prompt beside "
                f"eval.max_new_tokens={cfg.eval.max_new_tokens}")
    try:
        buckets = [int(b) for b in str(cfg.eval.buckets).split(",") if b.strip()]
    except ValueError:
        raise e(f"eval.buckets={cfg.eval.buckets!r}: must be comma-separated prompt lengths") from None
    if any(b < 1 for b in buckets):
        raise e(f"eval.buckets={cfg.eval.buckets!r}: prompt lengths must be >= 1")
    mesh_sizes(cfg, num_devices, error=e)
    try:
        model_config_from(cfg)  # dtypes, attention kernel vs. attention dropout (models/sizes.py Runtime)
    except ValueError as err:
        raise e(str(err)) from None


def resolve_templates(spec: str | Sequence[str]) -> list[str]:
    """'all' or comma-separated names -> registered template names; unknown names -> EvalConfigError listing them."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if not items:
        raise EvalConfigError(f"eval.templates is empty; valid: 'all' or {', '.join(templates_lib.template_names())}")
    out: list[str] = []
    for item in items:
        if item.lower() == "all":
            out += templates_lib.template_names()
            continue
        try:
            out.append(templates_lib.get_template(item).name)
        except ValueError as e:
            raise EvalConfigError(f"eval.templates: {e}") from None
    return list(dict.fromkeys(out))


def build_registry(spec: Any) -> registry_lib.Registry:
    """``eval.registry`` -> Registry: '' (ALERT), 'synthetic', a JSON file, or 'skill:task[:held_out],...' entries."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return registry_lib.ALERT
    if isinstance(spec, registry_lib.Registry):
        return spec
    if isinstance(spec, str):
        s = spec.strip()
        if s.lower() == "synthetic":
            from alert_jax.data import synthetic

            return synthetic.synthetic_registry()
        if s.endswith(".json") or epath.Path(s).is_file():
            if not epath.Path(s).is_file():
                raise EvalConfigError(f"eval.registry: file {s} does not exist")
            return registry_lib.Registry.from_config(json.loads(epath.Path(s).read_text(encoding="utf-8")))
    try:
        return registry_lib.Registry.from_config(spec)
    except ValueError as e:
        raise EvalConfigError(f"eval.registry: {e}") from None


def _get(cfg: ml_collections.ConfigDict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node.get(part) if hasattr(node, "get") else None
    return list(node) if isinstance(node, tuple) else node


def _check_resume_settings(cfg: ml_collections.ConfigDict, workdir: epath.Path) -> dict[str, Any]:
    """Raises when ``workdir/eval_config.json`` records other prediction settings; returns the current ones."""
    settings = {k: _get(cfg, k) for k in _PREDICTION_KEYS}
    path = workdir / "eval_config.json"
    if path.exists() and not cfg.eval.overwrite:
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if changed:
            diff = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise EvalConfigError(
                f"workdir {workdir} holds predictions made with other settings ({diff}); use a new --workdir or "
                f"--config.eval.overwrite=True"
            )
    return settings


def _record_settings(cfg: ml_collections.ConfigDict, workdir: epath.Path, settings: Mapping[str, Any]) -> None:
    if distributed.is_primary():
        atomic_write_text(workdir / "eval_config.json", json.dumps(settings, indent=2) + "\n")
        atomic_write_text(workdir / "config.json", cfg.to_json_best_effort(indent=2) + "\n")


# ------------------------------------------------------------------------------------------------------------------
# Model + tokenizer


def load_model_and_tokenizer(
    cfg: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *, checkpoint: tuple[str, int | None] | None = None
) -> tuple[Any, Any]:
    """``cfg.init_from`` -> (OPT, Tokenizer) through ``io.loader.load_model`` (architecture from the checkpoint,
    runtime fields from ``cfg.model``); the tokenizer is ``cfg.tokenizer`` or the one stored beside the weights.

    ``checkpoint``: the ``(path, step)`` that ``io.loader.checkpoint_identity`` gave earlier, which the predictions
    will be attributed to: a ``ckpt:`` load is pinned to that step's folder, and a load that resolves elsewhere (a
    checkpoint replaced in between) raises :class:`EvalConfigError` instead of being attributed to the wrong one."""
    init_from = str(cfg.init_from)
    spec = loader.InitFrom.parse(init_from)
    if checkpoint is not None and spec.kind == "ckpt" and checkpoint[1] is not None:
        init_from = f"ckpt:{epath.Path(checkpoint[0]) / str(checkpoint[1])}"
    loaded = loader.load_model(init_from, model_config_from(cfg.model), mesh, tokenizer=str(cfg.tokenizer),
                               seed=int(cfg.seed))
    if checkpoint is not None:
        got = (abspath(loaded.source) if loaded.source else "", loaded.step)
        if got != (checkpoint[0], checkpoint[1]):
            raise EvalConfigError(
                f"init_from={str(cfg.init_from)!r} resolved to {checkpoint[0]!r} (step {checkpoint[1]}) before loading "
                f"but loaded {got[0]!r} (step {got[1]}): the checkpoint changed meanwhile; run the evaluation again"
            )
    if loaded.tokenizer is None:
        raise EvalConfigError(
            f"no tokenizer: set --config.tokenizer (init_from={str(cfg.init_from)!r} does not carry tokenizer files)"
        )
    return loaded.model, loaded.tokenizer


# ------------------------------------------------------------------------------------------------------------------
# One task x template


def _expected_ids(instances: Sequence[niv2.Instance]) -> list[str]:
    return [str(inst.id) for inst in instances]


def read_predictions(path: epath.Path, expected_ids: Sequence[str]) -> list[dict[str, Any]] | None:
    """The records of a complete predictions file, or None when missing, unreadable or not matching the ids."""
    if not path.is_file():
        return None
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        log.warning("ignoring unreadable predictions file %s (%s); recomputing", path, e)
        return None
    if not all(isinstance(r, dict) for r in records) or [str(r.get("id")) for r in records] != list(expected_ids):
        log.warning("predictions file %s does not hold the expected %d instances; recomputing", path, len(expected_ids))
        return None
    return records


def summarize(records: Sequence[Mapping[str, Any]]) -> report_lib.TemplateResult:
    """Per-template scores, per-instance values and counts from predictions records (every metric recomputed from
    ``prediction`` + ``references``, so records written before a metric existed are scored on it too)."""
    values = metrics_lib.instance_scores([r["prediction"] for r in records], [r["references"] for r in records])
    return report_lib.TemplateResult(
        scores=metrics_lib.mean_scores(values),
        ids=[str(r["id"]) for r in records],
        instance_scores=values,
        n=len(records),
        n_overflow=sum(bool(r.get("overflow")) for r in records),
        n_truncated=sum(bool(r.get("demos_dropped") or r.get("input_chars_cut")) for r in records),
        n_length=sum(r.get("finish") == "length" for r in records),
    )


def run_template(
    task: niv2.Task,
    instances: Sequence[niv2.Instance],
    template: str,
    *,
    tokenizer: Any,
    generator: gen_lib.Generator,
    max_prompt_tokens: int,
    stop_strings: Sequence[str],
    num_demos: int | None = None,
    on_overflow: str = "empty",
    progress: Callable[[int], None] | None = None,
    options: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Renders (with the task's answer ``options``, if any), decodes, post-processes and scores ``instances`` under
    ``template``; returns the records."""

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_bos=True))

    rendered = []
    for inst in instances:
        r = templates_lib.render(
            template, task, inst, count_tokens=count_tokens, max_tokens=max_prompt_tokens, num_demos=num_demos,
            options=options,
        )
        if not r.fits:
            msg = (
                f"task {task.name!r}, instance {inst.id!r}, template {template!r}: the prompt needs {r.num_tokens} "
                f"tokens with no demonstrations and an empty input, more than the {max_prompt_tokens} available "
                f"(context - max_new_tokens)"
            )
            if on_overflow == "error":
                raise EvalConfigError(msg + "; set eval.on_overflow='empty' to score it as an empty prediction")
            log.warning("%s: scored as an empty prediction (eval.on_overflow='empty')", msg)
        rendered.append(r)
    to_decode = [i for i, r in enumerate(rendered) if r.fits]
    prompts = [tokenizer.encode(rendered[i].text, add_bos=True) for i in to_decode]
    gens = generator.generate(prompts, progress=progress) if prompts else []
    by_index = dict(zip(to_decode, gens))
    records = []
    for i, (inst, r) in enumerate(zip(instances, rendered)):
        g = by_index.get(i)
        text = tokenizer.decode(g.tokens) if g is not None else ""
        prediction, _ = stops.truncate_at_stop(text, stop_strings)
        refs = list(inst.outputs)
        records.append(
            {
                "id": str(inst.id),
                "prompt": r.text,
                "prediction": prediction,
                "answer": metrics_lib.extract_answer(prediction),
                "references": refs,
                "scores": metrics_lib.score_instances([prediction], [refs]),
                "finish": g.finish if g is not None else "overflow",
                "num_prompt_tokens": r.num_tokens,
                "demos_used": r.demos_used,
                "demos_dropped": r.demos_dropped,
                "input_chars_cut": r.input_chars_cut,
                "overflow": not r.fits,
            }
        )
    return records


# ------------------------------------------------------------------------------------------------------------------
# The whole evaluation


def _previous_metadata(workdir: epath.Path) -> dict[str, Any]:
    try:
        return dict(json.loads((workdir / "scores.json").read_text(encoding="utf-8")).get("metadata", {}))
    except (OSError, json.JSONDecodeError):
        return {}


def _same_scores(workdir: epath.Path, scores: Mapping[str, Any]) -> bool:
    """Whether ``workdir`` already has ``scores.json`` with these per-dataset scores and a figures folder with all
    figures drawn from them (then a resumed run with nothing new need not redraw them)."""
    try:
        old = json.loads((workdir / "scores.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    names = report_lib.figure_names(scores)
    return old.get("datasets") == json.loads(json.dumps(scores["datasets"])) and all(
        (workdir / "figures" / n).is_file() for n in names
    )


@dataclasses.dataclass
class EvalTasks:
    """What an evaluation covers, resolved and read before any model is loaded.

    Attributes:
      registry: the task registry (``eval.registry``).
      present: task names to evaluate, in registry / spec order, whose files were read.
      missing: requested tasks without a file (skipped with ``eval.allow_missing``; listed in ``scores.json``).
      templates: template names (``eval.templates``).
      tasks: task name -> the loaded :class:`~alert_jax.data.niv2.Task`.
      instances: task name -> the instances evaluated (the first ``eval.max_instances``).
      options: task name -> its answer options (``Registry.answer_options``), None for a generation task or with
        ``eval.append_options=False``.
    """

    registry: registry_lib.Registry
    present: list[str]
    missing: list[str]
    templates: list[str]
    tasks: dict[str, niv2.Task]
    instances: dict[str, list[niv2.Instance]]
    options: dict[str, list[str] | None] = dataclasses.field(default_factory=dict)


def resolve_eval_tasks(cfg: ml_collections.ConfigDict) -> EvalTasks:
    """Step 1: the registry, the task and template specs, and every task file read (a bad file fails here, naming
    file and field, before a model is loaded). Unknown tasks get suggestions from the registry and the folder."""
    e = cfg.eval
    registry = build_registry(e.registry)
    try:
        names = registry_lib.resolve_tasks(e.tasks, registry, allow_unregistered=True)
    except ValueError as err:
        raise EvalConfigError(f"eval.tasks={e.tasks!r}: {err}") from None
    template_list = resolve_templates(e.templates)
    try:
        store = sources.task_store(cfg)
    except sources.DataSourceError as err:
        raise EvalConfigError(str(err)) from None
    on_disk, where = store.names, store.where
    present, missing = store.available(names)
    known = set(registry.names) | set(registry.dev_set)
    unknown = [t for t in missing if t not in known]
    if unknown:
        pool = sorted(set(on_disk) | known)
        close = sorted({c for t in unknown for c in difflib.get_close_matches(t, pool, n=3, cutoff=0.5)}
                       | {c for t in unknown for c in pool if c.startswith(t)})
        raise EvalConfigError(
            f"unknown task(s) {', '.join(map(repr, unknown))}: not in the registry and no file in {where}."
            + (f" Did you mean: {', '.join(close)}?" if close else "")
            + f" Valid: 'all', 'dev', a skill ({', '.join(registry.skills)}), a registry task, or one of the "
            f"{len(on_disk)} tasks in {where}"
        )
    if missing:
        msg = f"no task file in {where} for: {', '.join(missing)}"
        if not e.allow_missing or not present:
            raise EvalConfigError(msg + ("" if present else " (none of the requested tasks is present)"))
        log.warning("%s; skipping them (listed in scores.json)", msg)
    tasks = {name: store.load(name) for name in present}
    instances = {name: t.instances[: int(e.max_instances) or None] for name, t in tasks.items()}  # 0 = all (>= 0)
    options = {name: registry.answer_options(t, int(e.max_options)) if e.append_options else None
               for name, t in tasks.items()}
    return EvalTasks(registry, present, missing, template_list, tasks, instances, options)


def _predictions_path(workdir: epath.Path, task: str, template: str) -> epath.Path:
    return workdir / "predictions" / task / f"{template}.jsonl"


def find_pending(
    cfg: ml_collections.ConfigDict, workdir: epath.Path, what: EvalTasks, provenance: Provenance
) -> tuple[dict[str, dict[str, report_lib.TemplateResult]], list[tuple[str, str]], dict[str, int]]:
    """Step 2: ``(results of the reusable predictions files, pending (task, template) pairs, {code version: number
    of reused files}``). A file is reused when process 0 finds it complete with a provenance matching ``provenance``
    and the task file's digest on :data:`REUSE_KEYS` (all processes then skip the same work) and ``eval.overwrite``
    is off; a complete file with another provenance is pending (one warning line per kind of change)."""
    results: dict[str, dict[str, report_lib.TemplateResult]] = {name: {} for name in what.present}
    pending: list[tuple[str, str]] = []
    changed: dict[str, list[epath.Path]] = {}
    code_versions: dict[str, int] = {}
    for name in what.present:
        ids = _expected_ids(what.instances[name])
        expected = provenance.record(what.tasks[name].digest, what.options.get(name))
        for template in what.templates:
            path = _predictions_path(workdir, name, template)
            records = None if cfg.eval.overwrite else read_predictions(path, ids)
            if records is not None:
                reason = provenance_changes(records, expected)
                if reason:
                    changed.setdefault(reason, []).append(path)
                    records = None
            if distributed.agree(records is not None):
                if records is not None:  # process 0 (and others that see the file) aggregate
                    results[name][template] = summarize(records)
                    version = str(records[0]["provenance"].get("code_version"))
                    code_versions[version] = code_versions.get(version, 0) + 1
                log.info("%s %s: complete, reused %s", name, template, path)
            else:
                pending.append((name, template))
    for reason, paths in changed.items():
        log.warning("recomputing %d predictions file(s) made under another provenance (%s), e.g. %s", len(paths),
                    reason, paths[0])
    other = {v: n for v, n in code_versions.items() if v != provenance.code_version}
    if other:
        log.warning("reusing %d predictions file(s) made by another code version (%s; current %s): not recomputed "
                    "(eval.overwrite=True recomputes them)", sum(other.values()),
                    ", ".join(f"{v}: {n}" for v, n in sorted(other.items())), provenance.code_version)
    return results, pending, code_versions


def decode_options(tokenizer: Any, *, max_new_tokens: int, stop_strings: Sequence[str], temperature: float = 0.0,
                   top_p: float = 1.0) -> gen_lib.DecodeOptions:
    """Decoding options with this tokenizer's special ids and stop tables (``eval.*`` settings, or the training
    loop's dev score)."""
    stop_strings = tuple(s for s in stop_strings if s)
    return gen_lib.DecodeOptions(
        max_new_tokens=int(max_new_tokens),
        eos_id=int(tokenizer.eos_id),
        pad_id=int(tokenizer.pad_id),
        stop_sequences=stops.stop_token_sequences(stop_strings, tokenizer.encode),
        # Stops merged into tokens (".\n\n", "\n" + "\nInput"): one decode of the vocabulary per run.
        stop_pieces=stops.stop_piece_tables(stop_strings, tokenizer) if stop_strings else None,
        temperature=float(temperature),
        top_p=float(top_p),
    )


@dataclasses.dataclass
class Decoder:
    """The loaded model's decoding setup: the tokenizer, the generator and the prompt budget."""

    tokenizer: Any
    generator: gen_lib.Generator
    context: int
    max_prompt_tokens: int


def make_decoder(
    cfg: ml_collections.ConfigDict,
    *,
    model: Any = None,
    tokenizer: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    checkpoint: tuple[str, int | None] | None = None,
) -> Decoder:
    """Step 3a: loads the model once (unless given; pinned to ``checkpoint``, see :func:`load_model_and_tokenizer`)
    and builds the :class:`~alert_jax.eval.generate.Generator`."""
    e = cfg.eval
    mesh = mesh if mesh is not None else make_mesh(tuple(cfg.mesh.shape))
    if model is None or tokenizer is None:
        loaded_model, loaded_tok = load_model_and_tokenizer(cfg, mesh, checkpoint=checkpoint)
        model, tokenizer = model or loaded_model, tokenizer or loaded_tok
    context = int(e.context) or int(model.config.arch.max_position_embeddings)
    max_prompt = context - int(e.max_new_tokens)
    if max_prompt < 1:
        raise EvalConfigError(f"eval.max_new_tokens={e.max_new_tokens} leaves no room for a prompt in {context} tokens")
    buckets = [int(b) for b in str(e.buckets).split(",") if b.strip()] if e.buckets else None
    generator = gen_lib.Generator(
        model, decode_options(tokenizer, max_new_tokens=int(e.max_new_tokens), stop_strings=e.stop_strings,
                              temperature=float(e.temperature), top_p=float(e.top_p)),
        batch_size=int(e.batch_size), mesh=mesh, buckets=buckets,
        max_prompt_len=max_prompt, seed=int(cfg.seed), per_layer_weights=bool(e.unstack_layers),
    )
    return Decoder(tokenizer, generator, context, max_prompt)


def decode_pending(
    cfg: ml_collections.ConfigDict,
    workdir: epath.Path,
    what: EvalTasks,
    pending: Sequence[tuple[str, str]],
    decoder: Decoder,
    results: dict[str, dict[str, report_lib.TemplateResult]],
    provenance: Provenance,
) -> None:
    """Step 3b: decodes, scores and writes every pending task x template, adding each to ``results``; every record
    carries ``provenance.record(task digest)``. One log line per batch and per file; eval/progress.py's bar, trace."""
    with watch_decoding(cfg, workdir, what.instances, pending) as watch:
        _decode_each(cfg, workdir, what, pending, decoder, results, provenance, watch)


def _decode_each(cfg, workdir, what, pending, decoder, results, provenance, watch) -> None:
    e = cfg.eval
    stop_strings = tuple(s for s in e.stop_strings if s)
    for k, (name, template) in enumerate(pending):
        tag = f"[{k + 1}/{len(pending)}] {name} {template}"
        t0, done, n = time.time(), [0], len(what.instances[name])

        def progress(count: int, _tag=tag, _t0=t0, _done=done, _n=n) -> None:
            _done[0] += count
            watch.batch(count)
            log.info("%s: %d/%d prompts (%.1f/s)", _tag, _done[0], _n, _done[0] / max(time.time() - _t0, 1e-9))

        records = run_template(
            what.tasks[name], what.instances[name], template, tokenizer=decoder.tokenizer,
            generator=decoder.generator, max_prompt_tokens=decoder.max_prompt_tokens, stop_strings=stop_strings,
            num_demos=None if int(e.num_demos) < 0 else int(e.num_demos), on_overflow=e.on_overflow,
            progress=progress, options=what.options.get(name),
        )
        stamp = provenance.record(what.tasks[name].digest, what.options.get(name))
        for r in records:
            r["provenance"] = stamp
        if distributed.is_primary():
            atomic_write_text(_predictions_path(workdir, name, template),
                              "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        watch.file_done(n - done[0])  # prompts that overflowed were not decoded
        res = results[name][template] = summarize(records)
        summary = ", ".join(f"{m}={v:.1f}" for m, v in res.scores.items())
        log.info("%s: %s (n=%d, overflow=%d) in %.1fs", tag, summary, res.n, res.n_overflow, time.time() - t0)


def aggregate_and_report(
    cfg: ml_collections.ConfigDict,
    workdir: epath.Path,
    what: EvalTasks,
    results: Mapping[str, Mapping[str, report_lib.TemplateResult]],
    run: Mapping[str, Any],
    context: int | None,
    provenance: Provenance,
    predictions_code_versions: Sequence[str] = (),
) -> dict[str, Any]:
    """Step 4: the scores dict (``report.aggregate``) with its metadata (settings, ``provenance.metadata`` with the
    evaluated tasks' digests, ``predictions_code_versions``); process 0 writes ``scores.json``, ``report.md``,
    (when something was decoded or the figures are stale) ``figures/``, and ``niv2/`` (``niv2_export``)."""
    e = cfg.eval
    metadata = {
        "init_from": str(cfg.init_from),
        "model_size": str(cfg.model.size),
        "max_instances": int(e.max_instances),
        "max_new_tokens": int(e.max_new_tokens),
        "context": context,
        "templates": what.templates,
        "tasks": what.present,
        "decoding": "greedy" if float(e.temperature) == 0 else f"temperature={e.temperature}, top_p={e.top_p}",
        "stop_strings": [s for s in e.stop_strings if s],
        "on_overflow": e.on_overflow,
        "append_options": bool(e.append_options),
        "max_options": int(e.max_options),
        "answer_options": {name: what.options.get(name) for name in what.present},
        **provenance.metadata({name: what.tasks[name].digest for name in what.present}),
        "predictions_code_versions": sorted(predictions_code_versions),
        "run": dict(run),
    }
    scores = report_lib.aggregate(results, registry=what.registry, metadata=metadata, missing_tasks=what.missing,
                                  resamples=int(e.bootstrap_resamples), seed=int(e.bootstrap_seed))
    if distributed.is_primary():
        redraw = bool(e.figures) and (run["computed"] > 0 or not _same_scores(workdir, scores))
        report_lib.write_report(scores, workdir, figures=redraw)
        paths = {(n, t): _predictions_path(workdir, n, t) for n in what.present for t in what.templates}
        niv2_export.write_niv2_files(workdir / "niv2", what.tasks, what.templates, paths)
    return scores


def evaluate(
    cfg: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    model: Any = None,
    tokenizer: Any = None,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, Any]:
    """Runs the evaluation described by ``cfg`` (configs/evaluate.py) into ``workdir``; returns the scores dict.

    ``model``/``tokenizer`` may be passed in (tests, notebooks); otherwise they come from ``cfg.init_from``. A
    passed model is attributed to the checkpoint ``cfg.init_from`` names (its provenance, module docstring).
    Counters of the work done are in ``scores['metadata']['run']`` (``computed``, ``reused`` template files).
    """
    workdir = epath.Path(workdir)
    validate(cfg, len(mesh.devices.flat) if mesh is not None else jax.device_count())
    loader.check_size(str(cfg.init_from), model_config_from(cfg), str(cfg.model.size))  # :SIZE is the checkpoint's
    what = resolve_eval_tasks(cfg)
    t_start = time.time()
    provenance = Provenance.current(cfg, mesh)  # a missing checkpoint fails here, before the workdir is made
    if distributed.is_primary():
        workdir.mkdir(parents=True, exist_ok=True)
    settings = _check_resume_settings(cfg, workdir)
    log.info("evaluating %s (step %s), code version %s", provenance.checkpoint_path or "a random initialisation",
             provenance.checkpoint_step, provenance.code_version)
    results, pending, code_versions = find_pending(cfg, workdir, what, provenance)
    reused = len(what.present) * len(what.templates) - len(pending)
    log.info("%d template files to compute, %d complete", len(pending), reused)
    compiled: list[tuple[int, int]] = []
    if pending:
        if mesh is None:
            mesh = make_mesh(tuple(cfg.mesh.shape))
            provenance = dataclasses.replace(provenance, devices=device_summary(mesh))
        decoder = make_decoder(cfg, model=model, tokenizer=tokenizer, mesh=mesh,
                               checkpoint=(provenance.checkpoint_path, provenance.checkpoint_step))
        _record_settings(cfg, workdir, settings)  # once the model loaded: settings of predictions about to exist
        decode_pending(cfg, workdir, what, pending, decoder, results, provenance)
        context, compiled = decoder.context, sorted(decoder.generator.compiled_shapes)
        code_versions[provenance.code_version] = code_versions.get(provenance.code_version, 0) + len(pending)
    else:
        _record_settings(cfg, workdir, settings)
        log.info("every predictions file is complete: the model was not loaded")
        context = _previous_metadata(workdir).get("context")
    run = {"computed": len(pending), "reused": reused, "seconds": round(time.time() - t_start, 2),
           "compiled_shapes": compiled}
    scores = aggregate_and_report(cfg, workdir, what, results, run, context, provenance, list(code_versions))
    log.info("evaluation done: %d template files computed, %d reused; scores in %s", len(pending), reused,
             workdir / "scores.json")
    return scores
