"""Write the TFDS datasets (array_record) that ``data.source=tfds`` runs read, into a data dir (local or gs://).

    python launch/prepare.py --config=configs/finetune.py:1.3b,cot --config.data.finetune_dir=/data/rationales \
        --config.tokenizer=bpe:/models/opt-1.3b --config.data.niv2_dir=/data/natural-instructions --out=/data/tfds
    python launch/train.py --config=configs/finetune.py:1.3b,cot --config.data.tfds_dir=/data/tfds ...
    python launch/evaluate.py --config=configs/evaluate.py:1.3b --config.data.source=tfds \
        --config.data.tfds_dir=/data/tfds ...

``--what=finetune`` writes ``alert_finetune/<MODE>`` for the config's MODE or each of ``--modes=ft,cot`` (the config's
corpora, formatted for the mode, with the token ids of the config's tokenizer when it names one: ``tokenizer`` or the
one beside ``init_from``); ``--what=eval`` writes
``alert_eval`` (every instance of the ``--tasks`` of ``--registry`` plus the dev set found in ``data.niv2_dir``).
Datasets already in ``--out`` are regenerated. Prints one line per dataset with its records per split
(alert_jax/apps/prepare.py). Exit codes (alert_jax/apps/exits.py): 0 done; 2 bad config or input (one line).
"""

from __future__ import annotations

import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import ml_collections  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

WHAT = ("finetune", "eval")

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(REPO_ROOT / "configs" / "finetune.py") + ":tiny,cot", "Finetuning config: FILE:SIZE,MODE.",
    lock_config=True,
)
_OUT = flags.DEFINE_string("out", "", "Data dir to write (default: the config's data.tfds_dir).")
_WHAT = flags.DEFINE_list("what", list(WHAT), f"Datasets to write, from {', '.join(WHAT)}.")
_MODES = flags.DEFINE_list("modes", [], "Finetuning modes to write (ft, cot; default: the config's MODE).")
_TASKS = flags.DEFINE_string("tasks", "all", "Evaluation task spec (as eval.tasks); the dev set is always added.")
_REGISTRY = flags.DEFINE_string("registry", "", "Task registry (as eval.registry): '' = ALERT, 'synthetic', a file.")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from alert_jax.apps import exits
    from alert_jax.apps import prepare as prepare_lib
    from alert_jax.train.settings import TrainConfigError

    logging.set_verbosity(logging.WARNING)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    cfg = _CONFIG.value

    def run() -> None:
        out = _OUT.value or str(cfg.data.get("tfds_dir", ""))
        if not out:
            raise TrainConfigError("no output folder: pass --out=DIR (or set --config.data.tfds_dir)")
        unknown = sorted(set(_WHAT.value) - set(WHAT))
        if unknown or not _WHAT.value:
            raise TrainConfigError(f"--what={','.join(_WHAT.value)}: choose from {', '.join(WHAT)}")
        modes = _MODES.value or [str(cfg.mode)]
        if set(modes) - {"ft", "cot"}:
            raise TrainConfigError(f"--modes={','.join(modes)}: choose from ft, cot")
        for mode in modes if "finetune" in _WHAT.value else ():
            mode_cfg = ml_collections.ConfigDict(cfg.to_dict())
            mode_cfg.mode = mode
            done = prepare_lib.prepare_finetune(mode_cfg, out)
            ids = f"token ids of {done['tokenizer']}" if done["tokenizer"] else "text only (no tokenizer configured)"
            print(f"alert_finetune/{mode}: {done['splits']} records, {ids} -> {done['path']}", flush=True)
        if "eval" in _WHAT.value:
            done = prepare_lib.prepare_eval(cfg, out, tasks=_TASKS.value, registry=_REGISTRY.value)
            skipped = f"; no file for {len(done['missing'])}: {', '.join(done['missing'])}" if done["missing"] else ""
            print(f"alert_eval: {done['splits']} records of {len(done['tasks'])} tasks{skipped} -> {done['path']}",
                  flush=True)

    return exits.run_app("prepare", run)


if __name__ == "__main__":
    app.run(main)
