"""Evaluate a model on the ALERT datasets x templates (DESIGN.md section 6).

    python launch/evaluate.py --config=configs/evaluate.py:SIZE --config.init_from=hf:PATH_OR_ID|ckpt:DIR \
        --config.data.niv2_dir=DIR --workdir=DIR [--config.eval.tasks=all] [--config.eval.templates=T1,T3] \
        [--config.eval.max_instances=100]

Writes ``predictions/<task>/<template>.jsonl``, ``scores.json``, ``report.md`` and ``figures/`` in the workdir;
re-running with the same workdir reuses every complete predictions file. One run per workdir: a second one refuses,
naming the run that holds it.

Exit codes (alert_jax/apps/exits.py): 0 finished; 2 bad config or input (one line naming the setting, file or path;
a workdir the run created is removed again).
"""

from __future__ import annotations

import logging
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/evaluate.py", "Evaluation config (configs/evaluate.py:SIZE)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (predictions, scores.json, report.md, figures).")
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> int:
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # library INFO lines (jax backends, rouge) stay quiet
    logging.getLogger("alert_jax").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = _CONFIG.value
    from alert_jax.parallel import distributed

    distributed.initialize_from_config(cfg)  # multi-process runs only; before anything touches the devices

    from alert_jax.apps import exits
    from alert_jax.eval import runner
    from alert_jax.io.workdir import remove_if_empty, workdir_lock

    scores: dict = {}

    def run() -> None:
        try:
            with workdir_lock(_WORKDIR.value):
                scores.update(runner.evaluate(cfg, _WORKDIR.value))
        except BaseException:
            remove_if_empty(_WORKDIR.value)
            raise

    code = exits.run_app("evaluate", run)
    if code != exits.DONE:
        return code
    overall = scores.get("overall") or scores.get("dev")
    done = scores["metadata"]["run"]
    print(f"evaluate: {done['computed']} template files computed, {done['reused']} reused -> {_WORKDIR.value}",
          flush=True)
    if overall:
        print("evaluate: " + ", ".join(f"{k}={v:.2f}" for k, v in overall["max"].items()) + " (max over templates)")
    return code


if __name__ == "__main__":
    app.run(main)
