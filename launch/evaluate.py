"""Evaluate a model on the ALERT datasets x templates (DESIGN.md section 6).

    python launch/evaluate.py --config=configs/evaluate.py:SIZE --config.init_from=hf:PATH_OR_ID|ckpt:DIR \
        --config.data.niv2_dir=DIR --workdir=DIR [--config.eval.tasks=all] [--config.eval.templates=T1,T3] \
        [--config.eval.max_instances=100]

Writes ``predictions/<task>/<template>.jsonl``, ``scores.json``, ``report.md`` and ``figures/`` in the workdir;
re-running with the same workdir reuses every complete predictions file. Exit status 2 on a configuration error
(the message names the setting, file or path).
"""

from __future__ import annotations

import logging
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/evaluate.py", "Evaluation config (configs/evaluate.py:SIZE)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (predictions, scores.json, report.md, figures).")
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
    del argv
    logging.getLogger("alert_jax").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = _CONFIG.value
    from alert_jax.parallel import distributed

    distributed.initialize_from_config(cfg)  # multi-process runs only; before anything touches the devices

    from alert_jax.data.niv2 import TaskFileError
    from alert_jax.eval import runner
    from alert_jax.io.tokenizers import TokenizerLoadError
    from alert_jax.io.weight_files import CheckpointError

    try:
        scores = runner.evaluate(cfg, _WORKDIR.value)
    except (runner.EvalConfigError, TaskFileError, CheckpointError, TokenizerLoadError, FileNotFoundError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    overall = scores.get("overall") or scores.get("dev")
    run = scores["metadata"]["run"]
    print(f"evaluate: {run['computed']} template files computed, {run['reused']} reused -> {_WORKDIR.value}",
          flush=True)
    if overall:
        print("evaluate: " + ", ".join(f"{k}={v:.2f}" for k, v in overall["max"].items()) + " (max over templates)")


if __name__ == "__main__":
    app.run(main)
