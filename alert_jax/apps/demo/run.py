"""The offline demo: synthetic data -> tokenizer -> pretrained / FT / CoT tiny OPTs -> ALERT-style comparison.

``run_demo(cfg, workdir)`` (``cfg``: ``configs/demo.py``; command line: ``launch/demo.py``) runs these stages, each
through the project's own code (no second training or decoding loop):

1. ``data``: ``data.synthetic`` writes the 20 NIV2-format task files (+3 dev) to ``data/tasks/``, and the rationale
   corpus and the generic pretraining text to ``data/*.jsonl``.
2. ``tokenizer``: ``tokenizers.train_sentencepiece`` on pretraining text + formatted CoT examples (``tokenizer/``).
3. ``pretrain``: ``train.loop.train_and_evaluate`` from random init on the pretraining documents (joined into
   ``seq_len``-token texts), plain LM loss on every token (record ``("", text)``) -> "OPT" (``runs/opt/``).
4. ``finetune-ft`` / ``finetune-cot``: the same loop from ``ckpt:runs/opt`` on the corpus formatted by
   ``data.finetune.format_example(ex, mode)`` -> OPT-FT (answers) and OPT-CoT (rationales) (``runs/opt-{ft,cot}/``).
5. ``evaluate-<model>``: ``eval.runner.evaluate`` task by task (one progress line with ETA per task), then once over
   all tasks (``eval/<model>/``: predictions, scores.json, report.md, heatmaps).
6. ``report``: the three ``scores.json`` side by side per skill / dataset / template and metric -> ``report.md``
   (first line: ``CoT vs pretrained on mathematics: X vs Y``), ``scores.json`` and ``figures/``. The comparison and
   its rendering are in :mod:`alert_jax.apps.demo.comparison`.

Every training stage runs ``cfg.train_config`` (a ``configs/finetune.py`` config) and every evaluation
``cfg.eval_config`` (a ``configs/evaluate.py`` config), with the stage's settings applied; ``configs/demo.py`` puts
them in, so the package never reads ``configs/`` itself.

Resume: a finished stage leaves ``stages/<stage>.json`` with a fingerprint of the settings it depends on (its own
config sections and those of every earlier stage). A rerun with the same workdir skips stages whose fingerprint
matches; an interrupted stage resumes from its checkpoints (training) or predictions files (evaluation). Finished
stages with *different* settings are refused (:class:`DemoError` names the stage and settings): use a new workdir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from alert_jax.apps.demo.comparison import MODELS, build_comparison, effect_line, render_report, write_figures

MODE_OF = {"opt-ft": "ft", "opt-cot": "cot"}


class DemoError(ValueError):
    """A bad demo setting or a workdir holding results of other settings; the message names the stage / setting."""


@dataclasses.dataclass(frozen=True)
class DemoPaths:
    """Every path the demo reads or writes under ``workdir``."""

    workdir: pathlib.Path

    def __getattr__(self, name: str) -> pathlib.Path:
        fixed = {"data": "data", "tasks": "data/tasks", "tokenizer": "tokenizer/demo_sp.model", "report": "report.md",
                 "scores": "scores.json", "figures": "figures"}
        if name not in fixed:
            raise AttributeError(name)
        return self.workdir / fixed[name]

    def run(self, model: str) -> pathlib.Path:
        return self.workdir / "runs" / model

    def checkpoints(self, model: str) -> pathlib.Path:
        return self.run(model) / "checkpoints"

    def eval(self, model: str) -> pathlib.Path:
        return self.workdir / "eval" / model

    def stage(self, name: str) -> pathlib.Path:
        return self.workdir / "stages" / f"{name}.json"


# ---------------------------------------------------------------------------------------------------------------------
# Progress output and stage bookkeeping
# ---------------------------------------------------------------------------------------------------------------------


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _Progress:
    """Stage banners with elapsed time and an ETA from per-stage estimates that are refined as stages finish."""

    def __init__(self, estimates: dict[str, float], out: Callable[[str], None]):
        self.estimates = dict(estimates)
        self.done: set[str] = set()
        self.out = out
        self.t0 = time.time()

    def remaining(self, exclude: str | None = None) -> float:
        return sum(v for k, v in self.estimates.items() if k not in self.done and k != exclude)

    def banner(self, index: int, name: str, what: str) -> None:
        elapsed = time.time() - self.t0
        self.out(f"\n=== [{index}/{len(self.estimates)}] {name}: {what} | elapsed {_fmt_time(elapsed)} | "
                 f"ETA ~{_fmt_time(self.remaining())} ===")

    def finish(self, name: str, seconds: float, skipped: bool) -> None:
        self.done.add(name)
        note = "skipped (finished in an earlier run)" if skipped else f"done in {_fmt_time(seconds)}"
        self.out(f"--- {name}: {note} | elapsed {_fmt_time(time.time() - self.t0)} | "
                 f"ETA ~{_fmt_time(self.remaining())}")


def _fingerprint(settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _section(cfg: ml_collections.ConfigDict, *names: str) -> dict[str, Any]:
    return {n: (cfg[n].to_dict() if isinstance(cfg[n], ml_collections.ConfigDict) else cfg[n]) for n in names}


def _stage_state(paths: DemoPaths, name: str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The marker of a finished stage with these settings; None when not finished; DemoError on other settings."""
    path = paths.stage(name)
    if not path.is_file():
        return None
    marker = json.loads(path.read_text(encoding="utf-8"))
    if marker.get("fingerprint") == _fingerprint(settings):
        return marker
    old = marker.get("settings", {})
    diff = sorted(_diff_keys(old, json.loads(json.dumps(settings, default=str))))
    raise DemoError(
        f"stage {name!r} in {paths.workdir} was finished with other settings (differing: {', '.join(diff) or '?'}); "
        f"use a new --workdir, or delete {path} and the stage's outputs to redo it"
    )


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _mark_done(paths: DemoPaths, name: str, settings: Mapping[str, Any], seconds: float, **extra: Any) -> None:
    from alert_jax.io.files import atomic_write_text

    marker = {"stage": name, "fingerprint": _fingerprint(settings), "settings": settings, "seconds": round(seconds, 2),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S"), **extra}
    atomic_write_text(paths.stage(name), json.dumps(marker, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------------------------------------------------------
# Stage 1-2: data and tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def _write_jsonl(path: pathlib.Path, rows: Sequence[Mapping[str, Any]]) -> None:
    from alert_jax.io.files import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _finetune_skills(spec: str) -> list[str]:
    from alert_jax.data import synthetic

    if spec.strip() == "in_domain":
        return list(synthetic.IN_DOMAIN_SKILLS)
    return [s.strip() for s in spec.split(",") if s.strip()]


def make_data(cfg: ml_collections.ConfigDict, paths: DemoPaths) -> dict[str, int]:
    """Writes the task files and the corpora (JSONL) of ``cfg.demo``; returns counts."""
    from alert_jax.data import synthetic

    d = cfg.demo
    seed = int(d.data_seed)
    task_paths = synthetic.write_synthetic_tasks(paths.tasks, seed, int(d.instances_per_task),
                                                 int(d.num_positive_examples))
    try:
        train, valid = synthetic.synthetic_corpus_splits(seed, int(d.finetune_examples), int(d.finetune_valid_examples),
                                                         _finetune_skills(str(d.finetune_skills)))
    except ValueError as e:
        raise DemoError(f"demo.finetune_skills={d.finetune_skills!r}: {e}") from None
    _write_jsonl(paths.data / "corpus_train.jsonl", [dataclasses.asdict(x) for x in train])
    _write_jsonl(paths.data / "corpus_valid.jsonl", [dataclasses.asdict(x) for x in valid])
    docs = synthetic.synthetic_pretraining_text(seed, int(d.pretrain_documents))
    # a different stream for validation: disjoint draws of the same generators (world facts may repeat)
    valid_docs = synthetic.synthetic_pretraining_text(seed + 7919, int(d.pretrain_valid_documents))
    _write_jsonl(paths.data / "pretrain_train.jsonl", [{"text": t} for t in docs])
    _write_jsonl(paths.data / "pretrain_valid.jsonl", [{"text": t} for t in valid_docs])
    return {"task_files": len(task_paths), "corpus_train": len(train), "corpus_valid": len(valid),
            "pretrain_documents": len(docs), "pretrain_valid_documents": len(valid_docs)}


def _task_definitions(paths: DemoPaths) -> dict[str, str]:
    from alert_jax.data import niv2, synthetic

    names = list(synthetic.TASK_NAMES) + list(synthetic.SYNTHETIC_DEV_SET)
    return {n: niv2.load_task(n, str(paths.tasks)).definition for n in names if (paths.tasks / f"{n}.json").is_file()}


def _formatted(cfg: ml_collections.ConfigDict, paths: DemoPaths, split: str, mode: str) -> list[tuple[str, str]]:
    """``(prompt, target)`` records of the rationale corpus in the fixed finetuning format."""
    from alert_jax.data.examples import RationaleExample
    from alert_jax.data.finetune import format_example

    how = str(cfg.demo.finetune_definition)
    if how not in ("task", "generic"):
        raise DemoError(f"demo.finetune_definition={how!r}; valid: 'task', 'generic'")
    defs = _task_definitions(paths) if how == "task" else {}
    rows = _read_jsonl(paths.data / f"corpus_{split}.jsonl")
    return [format_example(RationaleExample(**r), mode, definition=defs.get(r["source"])) for r in rows]


def make_tokenizer(cfg: ml_collections.ConfigDict, paths: DemoPaths) -> Any:
    """Trains the SentencePiece model shared by all three models."""
    from alert_jax.io import tokenizers

    d = cfg.demo
    n = int(d.tokenizer_texts)
    docs = [r["text"] for r in _read_jsonl(paths.data / "pretrain_train.jsonl")]
    cot = [p + t for p, t in _formatted(cfg, paths, "train", "cot")]
    # No newline in the training texts: a learned piece such as ".\n\n" would hide the "\n\n" stop string from
    # the decoder's token-level stop check (generation would run to max_new_tokens). A newline is then its byte
    # piece, so "\n\n" is always two tokens.
    texts = [t.replace("\n", " ") for t in docs[: n - n // 4] + cot[: n // 4]]
    tok = tokenizers.train_sentencepiece(texts, int(d.tokenizer_vocab_size), paths.tokenizer)
    if tok.vocab_size > int(cfg.model.vocab_size):
        raise DemoError(f"the tokenizer has {tok.vocab_size} ids but model.vocab_size={cfg.model.vocab_size}; "
                        "lower demo.tokenizer_vocab_size or raise model.vocab_size")
    return tok


# ---------------------------------------------------------------------------------------------------------------------
# Stage 3-4: training through alert_jax.train.loop
# ---------------------------------------------------------------------------------------------------------------------


def train_config(cfg: ml_collections.ConfigDict, paths: DemoPaths, model: str) -> ml_collections.ConfigDict:
    """The config of one training stage (``model`` = 'opt' for pretraining): ``cfg.train_config`` (a
    ``configs/finetune.py`` config) with the stage's settings."""
    s = cfg.pretrain if model == "opt" else cfg.finetune
    t = ml_collections.ConfigDict(cfg.train_config.to_dict())
    with t.unlocked():
        t.mode = MODE_OF.get(model, "cot")
        t.seed = int(cfg.seed)
        t.model = ml_collections.ConfigDict(cfg.model.to_dict())
        t.mesh.shape = tuple(cfg.mesh.shape)
        t.tokenizer = f"sp:{paths.tokenizer}"
        t.init_from = "" if model == "opt" else f"ckpt:{paths.checkpoints('opt')}"
        t.data.seq_len = int(cfg.data.seq_len)
        t.data.corpus = "synthetic"  # informational: the records are passed in (see _train)
        t.data.loss_on_prompt = False
        t.data.dev_eval_template = ""  # the ALERT dev tasks mean nothing to a synthetic-vocabulary model
        # one checkpoint and one validation at the end; no TensorBoard (metrics.jsonl is written)
        t.train.update(batch_size=int(s.batch_size), grad_accum_steps=1, num_steps=int(s.num_steps),
                       log_every=int(s.log_every), eval_every=0, eval_at_start=False, checkpoint_every=0,
                       keep_checkpoints=1, async_checkpointing=False, tensorboard=False)
        t.optimizer.update(learning_rate=float(s.learning_rate), warmup_steps=int(s.warmup_steps),
                           end_lr_fraction=float(s.end_lr_fraction), weight_decay=float(s.weight_decay))
    return t


def join_documents(docs: Sequence[str], tokenizer: Any, seq_len: int, separator: str = "\n\n") -> list[str]:
    """Consecutive ``docs`` joined by ``separator`` into texts of at most ``seq_len - 2`` tokens (room for BOS/EOS).

    Single synthetic documents are ~20 tokens; a model pretrained on them alone never trains the position
    embeddings of later columns, which the finetuning targets and the few-shot prompts (T2/T3) then land on.
    A document longer than the budget stays a text of its own (the pipeline truncates it).
    """
    budget = seq_len - 2
    sep = len(tokenizer.encode(separator))
    texts: list[str] = []
    current: list[str] = []
    used = 0
    for doc in docs:
        n = len(tokenizer.encode(doc))
        if current and used + sep + n > budget:
            texts.append(separator.join(current))
            current, used = [], 0
        used += (sep if current else 0) + n
        current.append(doc)
    if current:
        texts.append(separator.join(current))
    return texts


def train_stage(cfg: ml_collections.ConfigDict, paths: DemoPaths, model: str) -> dict[str, Any]:
    """Pretraining (``model='opt'``) or finetuning (``'opt-ft'``/``'opt-cot'``); returns the loop's summary."""
    from alert_jax.train import loop
    from alert_jax.train.records import Corpora

    if model == "opt":
        docs = [r["text"] for r in _read_jsonl(paths.data / "pretrain_train.jsonl")]
        valid_docs = [r["text"] for r in _read_jsonl(paths.data / "pretrain_valid.jsonl")]
        if cfg.pretrain.join_documents:
            from alert_jax.io import tokenizers

            tok = tokenizers.load_tokenizer(f"sp:{paths.tokenizer}")
            docs, valid_docs = (join_documents(d, tok, int(cfg.data.seq_len)) for d in (docs, valid_docs))
        train = [("", t) for t in docs]
        valid = {"pretrain": [("", t) for t in valid_docs]}
    else:
        mode = MODE_OF[model]
        train = _formatted(cfg, paths, "train", mode)
        valid = {"synthetic": _formatted(cfg, paths, "valid", mode)}
    summary = loop.train_and_evaluate(train_config(cfg, paths, model), paths.run(model),
                                      corpora=Corpora(train=train, validation=valid))
    if summary.get("stopped") != "done" or int(summary.get("step", -1)) < int(
            (cfg.pretrain if model == "opt" else cfg.finetune).num_steps):
        raise loop.StoppedEarly(f"training of {model} stopped at step {summary.get('step')} "
                                f"({summary.get('stopped')}) with a checkpoint saved; rerun the same command to "
                                "continue")
    return {"val_loss": summary.get("last_eval", {}).get("val_loss"), "step": summary.get("step")}


# ---------------------------------------------------------------------------------------------------------------------
# Stage 5: evaluation through alert_jax.eval.runner
# ---------------------------------------------------------------------------------------------------------------------


def eval_config(cfg: ml_collections.ConfigDict, paths: DemoPaths, model: str) -> ml_collections.ConfigDict:
    """The evaluation config for one model: ``cfg.eval_config`` (a ``configs/evaluate.py`` config) with the demo's
    settings."""
    e = cfg.eval
    c = ml_collections.ConfigDict(cfg.eval_config.to_dict())
    with c.unlocked():
        c.seed = int(cfg.seed)
        c.model = ml_collections.ConfigDict(cfg.model.to_dict())
        c.mesh.shape = tuple(cfg.mesh.shape)
        c.init_from = f"ckpt:{paths.checkpoints(model)}"
        c.tokenizer = f"sp:{paths.tokenizer}"
        c.data.niv2_dir = str(paths.tasks)
        c.eval.update(registry="synthetic", tasks=str(e.tasks), allow_missing=False, templates=str(e.templates),
                      max_instances=int(e.max_instances), max_new_tokens=int(e.max_new_tokens),
                      stop_strings=tuple(e.stop_strings), batch_size=int(e.batch_size), buckets=str(e.buckets),
                      figures=False)
    return c


def eval_stage(cfg: ml_collections.ConfigDict, paths: DemoPaths, model: str, out: Callable[[str], None],
               eta_after: Callable[[float], float]) -> dict[str, Any]:
    """Evaluates one model task by task (one progress line per task), then aggregates all tasks once."""
    from alert_jax.eval import runner
    from alert_jax.parallel.sharding import make_mesh

    mesh = make_mesh(tuple(cfg.mesh.shape))
    ecfg = eval_config(cfg, paths, model)
    net, tok = runner.load_model_and_tokenizer(ecfg, mesh)
    tasks = runner.build_registry("synthetic").resolve(str(cfg.eval.tasks))
    eval_log = logging.getLogger("alert_jax.eval")
    level = eval_log.level
    eval_log.setLevel(logging.WARNING)  # one line per task below instead of one per template and batch
    t0 = time.time()
    try:
        for i, task in enumerate(tasks):
            t_task = time.time()
            with ecfg.unlocked():
                ecfg.eval.tasks = task
            scores = runner.evaluate(ecfg, paths.eval(model), model=net, tokenizer=tok, mesh=mesh)
            d = scores["datasets"][task]
            per_template = " ".join(f"{t}={v['scores'].get('exact_match', 0):.0f}" for t, v in d["templates"].items())
            rate = (time.time() - t0) / (i + 1)
            stage_eta = rate * (len(tasks) - i - 1)
            out(f"  [{MODELS[model]} {i + 1}/{len(tasks)}] {task}: exact match max {d['max'].get('exact_match', 0):.1f}"
                f" ({per_template}) | {time.time() - t_task:.1f}s | stage ETA {_fmt_time(stage_eta)} | "
                f"total ETA ~{_fmt_time(eta_after(stage_eta))}")
        with ecfg.unlocked():
            ecfg.eval.tasks = str(cfg.eval.tasks)
            ecfg.eval.figures = bool(cfg.report.figures)
        scores = runner.evaluate(ecfg, paths.eval(model), model=net, tokenizer=tok, mesh=mesh)
    finally:
        eval_log.setLevel(level)
    return scores


# ---------------------------------------------------------------------------------------------------------------------
# Stage 6: the comparison report
# ---------------------------------------------------------------------------------------------------------------------


VARIANT_OF = {"opt": "pretrained", "opt-ft": "ft", "opt-cot": "cot"}  # demo model -> analysis.paired variant


def paired_model_differences(cfg: ml_collections.ConfigDict, paths: DemoPaths,
                             per_model: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"OPT-CoT - OPT": {group: {"diff", "ci95", "datasets"}}, ...}`` of ``report.effect_metric``: the paired
    bootstrap of ``analysis.paired.compare_variants`` over the instances both models scored, grouped as the
    pretrained model's ``scores.json``; resamples and seed of the evaluation config (none when
    ``eval.bootstrap_resamples`` is 0)."""
    from alert_jax.analysis import paired

    ev = cfg.eval_config.eval
    if int(ev.bootstrap_resamples) <= 0:
        return {}
    metric = str(cfg.report.effect_metric)
    values = {VARIANT_OF[m]: paired.instance_values(paths.eval(m), per_model[m], metric) for m in MODELS}
    return paired.compare_variants(values, paired.groups_of(per_model["opt"]),
                                   {VARIANT_OF[m]: name for m, name in MODELS.items()},
                                   resamples=int(ev.bootstrap_resamples), seed=int(ev.bootstrap_seed))


def report_stage(cfg: ml_collections.ConfigDict, paths: DemoPaths, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Compares the three models' ``eval/<model>/scores.json`` (:mod:`alert_jax.apps.demo.comparison`) into
    ``scores.json``,
    ``report.md`` and (``report.figures``) ``figures/``; returns the comparison and the figure paths."""
    from alert_jax.io.files import atomic_write_text

    per_model = {m: json.loads((paths.eval(m) / "scores.json").read_text(encoding="utf-8")) for m in MODELS}
    comparison = build_comparison(per_model, effect_skill=str(cfg.report.effect_skill),
                                  effect_metric=str(cfg.report.effect_metric),
                                  differences=paired_model_differences(cfg, paths, per_model))
    combined = {"metadata": dict(metadata), "comparison": comparison, "models": per_model}
    atomic_write_text(paths.scores, json.dumps(combined, indent=2) + "\n")
    atomic_write_text(paths.report, render_report(comparison, metadata))
    figures = write_figures(comparison, paths.figures) if cfg.report.figures else []
    return {"comparison": comparison, "figures": [str(p) for p in figures]}


# ---------------------------------------------------------------------------------------------------------------------
# The whole demo
# ---------------------------------------------------------------------------------------------------------------------


def _estimates(cfg: ml_collections.ConfigDict) -> dict[str, float]:
    """Rough seconds per stage on 2 CPU cores before anything is measured (refined as stages finish)."""
    from alert_jax.models.sizes import model_config_from
    from alert_jax.train import flops

    mc = model_config_from(cfg)
    stage_flops = lambda s: s.num_steps * flops.train_step_flops(mc, int(s.batch_size), int(cfg.data.seq_len))  # noqa: E731
    rate = 30e9  # training FLOP/s of a tiny OPT on 2 quiet CPU cores (measured order of magnitude), + 10 s compiling
    evaluate = 15 + 20 * 5 * int(cfg.eval.max_instances) * int(cfg.eval.max_new_tokens) * 2e-4
    return {"data": 2.0, "tokenizer": 2.0, "pretrain": 10 + stage_flops(cfg.pretrain) / rate,
            **{f"finetune-{mode}": 10 + stage_flops(cfg.finetune) / rate for mode in MODE_OF.values()},
            **{f"evaluate-{m}": evaluate for m in MODELS}, "report": 2.0}


def _refine(progress: _Progress, name: str, seconds: float, cfg: ml_collections.ConfigDict) -> None:
    """After the pretraining stage, rescale the finetuning estimates by its measured time per row."""
    if name == "pretrain":
        per_row = seconds / max(1, int(cfg.pretrain.num_steps) * int(cfg.pretrain.batch_size))
        for mode in MODE_OF.values():
            rows = int(cfg.finetune.num_steps) * int(cfg.finetune.batch_size)
            progress.estimates[f"finetune-{mode}"] = per_row * rows


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _metadata(cfg: ml_collections.ConfigDict, seconds: Mapping[str, float]) -> dict[str, str]:
    m, p, f, e = cfg.model, cfg.pretrain, cfg.finetune, cfg.eval
    return {
        "preset": str(cfg.preset),
        "model": f"OPT d={m.hidden_size}, {m.num_layers} layers, {m.num_heads} heads, vocab {m.vocab_size}",
        "pretraining": f"{p.num_steps} steps x {p.batch_size} rows x {cfg.data.seq_len} tokens, lr {p.learning_rate}",
        "finetuning": f"{f.num_steps} steps x {f.batch_size} rows x {cfg.data.seq_len} tokens, lr {f.learning_rate}, "
                      f"corpus skills: {cfg.demo.finetune_skills}",
        "evaluation": f"{e.max_instances} instances per dataset, templates {e.templates}, greedy, "
                      f"max_new_tokens {e.max_new_tokens}",
        "seeds": f"model init / data order {cfg.seed}, synthetic data {cfg.demo.data_seed}",
        "stage seconds": ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
    }


def run_demo(cfg: ml_collections.ConfigDict, workdir: str | os.PathLike,
             out: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Runs (or resumes) every stage into ``workdir``.

    Returns ``{'comparison': build_comparison(...), 'stages': {stage: 'ran' | 'skipped'}, 'seconds': {stage: s},
    'total_seconds', 'paths'}``. ``out`` receives the progress lines (default: print).
    """
    out = out or (lambda line: print(line, flush=True))
    paths = DemoPaths(pathlib.Path(workdir).absolute())
    paths.workdir.mkdir(parents=True, exist_ok=True)
    (paths.workdir / "demo_config.json").write_text(cfg.to_json_best_effort(indent=2) + "\n")
    cpu0 = time.process_time()
    progress = _Progress(_estimates(cfg), out)
    out(f"ALERT demo ({cfg.preset} preset) -> {paths.workdir} | load average {_load()} | "
        f"estimated total ~{_fmt_time(progress.remaining())}")

    # What each stage depends on; chained, so a stage also depends on every earlier one.
    data_s = _section(cfg, "demo")
    tok_s = {**data_s, "model.vocab_size": cfg.model.vocab_size}
    pre_s = {**tok_s, **_section(cfg, "seed", "model", "mesh", "pretrain", "train_config"),
             "seq_len": cfg.data.seq_len}
    ft_s = {**pre_s, **_section(cfg, "finetune")}
    eval_s = {**ft_s, **_section(cfg, "eval", "eval_config")}
    seconds: dict[str, float] = {}
    plan: list[tuple[str, str, dict[str, Any], Callable[[], Any]]] = [
        ("data", "synthetic NIV2 tasks, rationale corpus, pretraining text", data_s, lambda: make_data(cfg, paths)),
        ("tokenizer", f"SentencePiece, {cfg.demo.tokenizer_vocab_size} pieces", tok_s,
         lambda: {"vocab_size": make_tokenizer(cfg, paths).vocab_size}),
        ("pretrain", f"'pretrained' OPT, LM loss on generic text, {cfg.pretrain.num_steps} steps", pre_s,
         lambda: train_stage(cfg, paths, "opt")),
        ("finetune-ft", f"OPT-FT, finetuned on answers, {cfg.finetune.num_steps} steps", ft_s,
         lambda: train_stage(cfg, paths, "opt-ft")),
        ("finetune-cot", f"OPT-CoT, finetuned on rationales + answers, {cfg.finetune.num_steps} steps", ft_s,
         lambda: train_stage(cfg, paths, "opt-cot")),
    ]
    for model in MODELS:
        plan.append((f"evaluate-{model}", f"{MODELS[model]} on {cfg.eval.tasks} synthetic datasets x "
                     f"{cfg.eval.templates} templates, {cfg.eval.max_instances} instances each", eval_s,
                     lambda model=model: eval_stage(cfg, paths, model, out, lambda eta, stage=f"evaluate-{model}":
                                                    eta + progress.remaining(stage))))
    plan.append(("report", "report.md, scores.json, figures/", {**eval_s, **_section(cfg, "report")},
                 lambda: report_stage(cfg, paths, _metadata(cfg, seconds))))

    stages: dict[str, str] = {}
    for i, (name, what, settings, fn) in enumerate(plan, start=1):
        progress.banner(i, name, what)
        marker = _stage_state(paths, name, settings)
        if marker is not None and (name != "report" or (paths.report.is_file() and paths.scores.is_file())):
            stages[name], seconds[name] = "skipped", float(marker.get("seconds", 0.0))
            progress.finish(name, 0.0, skipped=True)
            continue
        t0 = time.time()
        result = fn()
        seconds[name] = time.time() - t0
        keep = name in ("data", "tokenizer") or name.startswith(("pretrain", "finetune"))
        _mark_done(paths, name, settings, seconds[name], result=result if keep else None)
        stages[name] = "ran"
        progress.estimates[name] = seconds[name]
        _refine(progress, name, seconds[name], cfg)
        progress.finish(name, seconds[name], skipped=False)

    comparison = json.loads(paths.scores.read_text(encoding="utf-8"))["comparison"]
    total = time.time() - progress.t0
    out(f"\n{effect_line(comparison)}")
    out(f"demo finished in {_fmt_time(total)} ({_fmt_time(time.process_time() - cpu0)} of CPU time in this process; "
        f"load average {_load()}): {paths.report}, {paths.scores}, {paths.figures}/")
    return {"comparison": comparison, "stages": stages, "seconds": seconds, "total_seconds": total,
            "paths": {"report": str(paths.report), "scores": str(paths.scores), "figures": str(paths.figures)}}
