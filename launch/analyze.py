"""The paper's analyses over several evaluated runs.

    python launch/analyze.py --runs=workdirs/sweep/1p3b-pretrained,workdirs/sweep/1p3b-ft,workdirs/sweep/1p3b-cot \
        [--labels=1.3b:pretrained,1.3b:ft,1.3b:cot] [--out=DIR] \
        [--niv2_dir=PATH --finetune_corpora=gsm8k,strategyqa --finetune_dir=PATH]   # vocabulary overlap
        [--checkpoints=RUN_DIR [--evaluate_checkpoints]]                              # checkpoint selection

Each run folder holds a ``scores.json`` (or ``eval/scores.json``) from ``launch/evaluate.py``; its size and variant
come from the folder name (``SIZE-VARIANT``, as ``launch/sweep.py`` names them) or from ``--labels``. Writes
``analysis.md``, ``analysis.json`` and ``figures/`` into ``--out`` (default: ``analysis/`` beside the first run),
with paired bootstrap intervals of OPT-CoT - OPT, OPT-FT - OPT and OPT-CoT - OPT-FT (overall and per skill) read from
the runs' predictions files (``--bootstrap_resamples``, ``--bootstrap_seed``).
"""

from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from absl import app, flags  # noqa: E402
from etils import epath  # noqa: E402

from alert_jax.analysis import report, selection  # noqa: E402
from alert_jax.io.files import atomic_write_text, is_url  # noqa: E402

_RUNS = flags.DEFINE_list("runs", [], "Run folders (each with scores.json or eval/scores.json).")
_LABELS = flags.DEFINE_list("labels", [], "SIZE:VARIANT per run (default: parsed from the folder names).")
_OUT = flags.DEFINE_string("out", "", "Output folder (default: <parent of the first run>/analysis).")
_METRICS = flags.DEFINE_list("metrics", ["exact_match", "relaxed_match", "rougeL"], "Metrics to analyse.")
_NIV2_DIR = flags.DEFINE_string("niv2_dir", "", "Task folder of the evaluated datasets (for vocabulary overlap).")
_MAX_INSTANCES = flags.DEFINE_integer("max_instances", 100, "Instances per dataset used for its vocabulary.")
_CORPORA = flags.DEFINE_list("finetune_corpora", [], "Finetuning corpora ('synthetic' or names in data/finetune.py).")
_FINETUNE_DIR = flags.DEFINE_string("finetune_dir", "", "Folder of the finetuning corpora (one sub-folder each).")
_CHECKPOINTS = flags.DEFINE_list("checkpoints", [], "Finetuning run folders whose checkpoints to compare.")
_EVALUATE_CHECKPOINTS = flags.DEFINE_bool(
    "evaluate_checkpoints", False,
    "Score every saved checkpoint of each --checkpoints run on the dev set (into RUN/selection/step_N; finished "
    "steps are reused). Needs --niv2_dir.")
_REGISTRY = flags.DEFINE_string("registry", "", "eval.registry for the dev-set scoring ('' = ALERT, 'synthetic').")
_TEMPLATES = flags.DEFINE_string("templates", "all", "Templates for the dev-set scoring.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", None, "Generation budget for the dev-set scoring "
                                       "(default: configs/evaluate.py eval.max_new_tokens).")
_RESAMPLES = flags.DEFINE_integer("bootstrap_resamples", 1000,
                                  "Resamples of the paired bootstrap intervals of model differences.")
_SEED = flags.DEFINE_integer("bootstrap_seed", 0, "Seed of the paired bootstrap.")


def _eval_texts(runs: list[report.RunScores]) -> dict[str, list[str]]:
    from alert_jax.data import niv2

    names = sorted({name for r in runs for name in r.scores["datasets"]})
    tasks = niv2.load_tasks(names, _NIV2_DIR.value, missing="skip")
    return {
        name: [inst.input for inst in task.instances[: _MAX_INSTANCES.value]]
        + [o for inst in task.instances[: _MAX_INSTANCES.value] for o in inst.outputs]
        for name, task in tasks.items()
    }


def _finetune_texts() -> dict[str, list[str]]:
    """Variant -> the text it was finetuned on (FT: prompts + answers; CoT: + rationales), one vocabulary each."""
    from alert_jax.analysis import overlap
    from alert_jax.data import finetune

    if _CORPORA.value == ["synthetic"]:
        from alert_jax.data import synthetic

        examples, definitions = synthetic.synthetic_corpus(), synthetic.CORPUS_DEFINITIONS
    else:
        examples, definitions = finetune.read_corpora(_CORPORA.value, _FINETUNE_DIR.value, "train"), None
    return {variant: overlap.finetune_texts(examples, variant, definitions) for variant in overlap.FINETUNED_VARIANTS}


def _checkpoint_records(run_dir: epath.Path) -> list[selection.CheckpointRecord]:
    """Validation loss per step from ``metrics.jsonl``; dev score per step from ``selection/step_N/scores.json``."""
    losses: dict[int, float] = {}
    metrics_file = run_dir / "metrics.jsonl"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file} not found: --checkpoints takes launch/train.py workdirs")
    for line in metrics_file.read_text().splitlines():
        record = json.loads(line)
        if "val_loss" in record:
            losses[int(record["step"])] = float(record["val_loss"])
    dev: dict[int, float] = {}
    for path in sorted((run_dir / "selection").glob("step_*/scores.json")):
        group = json.loads(path.read_text()).get("dev") or {}
        dev[int(path.parent.name.split("_")[1])] = float((group.get("max") or {}).get(_METRICS.value[0], float("nan")))
    return [selection.CheckpointRecord(step, dev.get(step, float("nan")), losses.get(step, float("nan")))
            for step in sorted(set(losses) | set(dev))]


def _evaluate_checkpoints(run_dir: epath.Path) -> None:
    """Dev-set scores of every saved checkpoint step, with the evaluation runner, into ``run_dir/selection``."""
    from alert_jax.eval import runner
    from alert_jax.io import checkpoint
    from configs import evaluate as evaluate_config

    ckpt_dir = run_dir / checkpoint.CHECKPOINTS_SUBDIR
    steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) if ckpt_dir.is_dir() else []
    if not steps:
        raise FileNotFoundError(f"no checkpoint steps in {ckpt_dir}: --checkpoints takes launch/train.py workdirs")
    size = str(checkpoint.load_config(ckpt_dir / str(steps[-1])).model.size)
    for i, step in enumerate(steps, 1):
        cfg = evaluate_config.get_config(size)
        cfg.init_from = f"ckpt:{ckpt_dir / str(step)}"
        cfg.data.niv2_dir = _NIV2_DIR.value
        cfg.eval.tasks = "dev"
        cfg.eval.registry = _REGISTRY.value
        cfg.eval.templates = _TEMPLATES.value
        cfg.eval.max_instances = _MAX_INSTANCES.value
        if _MAX_NEW_TOKENS.value is not None:
            cfg.eval.max_new_tokens = _MAX_NEW_TOKENS.value
        cfg.eval.figures = False
        print(f"[selection {i}/{len(steps)}] {run_dir.name} step {step}: dev-set scoring", flush=True)
        runner.evaluate(cfg, run_dir / "selection" / f"step_{step}")


def main(argv: list[str]) -> None:
    del argv
    if not _RUNS.value:
        raise app.UsageError("--runs is required: comma-separated run folders with scores.json")
    runs = report.load_runs(_RUNS.value, _LABELS.value)
    first = epath.Path(_RUNS.value[0])
    out = epath.Path(_OUT.value) if _OUT.value else (first if is_url(first) else first.resolve()).parent / "analysis"
    eval_texts = finetune_texts = None
    if _NIV2_DIR.value and _CORPORA.value:
        eval_texts, finetune_texts = _eval_texts(runs), _finetune_texts()
    elif _CORPORA.value:
        raise app.UsageError("vocabulary overlap needs both --niv2_dir and --finetune_corpora")
    print(f"analysing {len(runs)} runs: " + ", ".join(f"{r.size}-{r.variant}" for r in runs), flush=True)
    report.write_analysis(runs, out, metrics=_METRICS.value, eval_texts=eval_texts, finetune_texts=finetune_texts,
                          resamples=_RESAMPLES.value, seed=_SEED.value)
    if _CHECKPOINTS.value:
        lines = ["", "## Checkpoint selection", "", "| run | step | dev score | validation ppl |", "|---|---:|---:|---:|"]
        picks = {}
        for run_dir in map(epath.Path, _CHECKPOINTS.value):
            if _EVALUATE_CHECKPOINTS.value:
                if not _NIV2_DIR.value:
                    raise app.UsageError("--evaluate_checkpoints needs --niv2_dir (where the dev-set task files are)")
                _evaluate_checkpoints(run_dir)
            records = _checkpoint_records(run_dir)
            picked = selection.select_checkpoints(records)
            picks[str(run_dir)] = {"by_dev_score": picked.by_dev_score, "by_perplexity": picked.by_perplexity,
                                   "records": [r.__dict__ for r in records]}
            lines += [f"| {run_dir.name} | {r.step} | {r.dev_score:.1f} | {r.validation_perplexity:.3f} |" for r in records]
            lines.append(f"| {run_dir.name} | picks: dev score -> {picked.by_dev_score}, "
                         f"perplexity -> {picked.by_perplexity} | | |")
        atomic_write_text(out / "analysis.md", (out / "analysis.md").read_text() + "\n".join(lines) + "\n")
        atomic_write_text(out / "selection.json", json.dumps(picks, indent=2, default=float) + "\n")
    print(f"wrote {out / 'analysis.md'}, {out / 'analysis.json'} and {out / 'figures'}", flush=True)


if __name__ == "__main__":
    app.run(main)
