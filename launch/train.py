"""Finetune OPT (FT or CoT) and checkpoint it.

    python launch/train.py --config=configs/finetune.py:SIZE,MODE --workdir=DIR [--config.a.b=value ...]

SIZE: tiny, tiny-postln, 125m ... 175b; MODE: ft (answers) or cot (rationales + answers). Re-running with the same
workdir resumes from its latest checkpoint. Multi-host: every process runs the same command; the processes find each
other through ``--config.distributed.coordinator_address=HOST:PORT --config.distributed.num_processes=N
--config.distributed.process_id=I``, the ``ALERT_JAX_COORDINATOR``/``_NUM_PROCESSES``/``_PROCESS_ID`` environment, or
JAX's cluster auto-detection (SLURM, TPU, GKE); see alert_jax/parallel/distributed.py.

Exit codes (alert_jax/apps/exits.py): 0 finished; 1 non-finite loss (the message names the step; the last good
checkpoint stays); 2 bad config or input (one line naming the setting, file or path; nothing written to the workdir);
74 a checkpoint could not be written (full disk, file-size limit; the steps saved before it are intact); 75 stopped
early with a checkpoint saved (SIGTERM, SIGINT, ``train.stop_at_step``, or no restorable checkpoint left): rerun the
same command to continue. A second run on a workdir in use exits 2 naming the run that holds it.
"""

from __future__ import annotations

import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(REPO_ROOT / "configs" / "finetune.py") + ":tiny,cot", "Finetuning config: FILE:SIZE,MODE.",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (config, metrics, checkpoints); reused to resume.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cfg = _CONFIG.value
    from alert_jax.parallel import distributed

    distributed.initialize_from_config(cfg)  # before anything touches the devices
    from alert_jax.apps import exits
    from alert_jax.train import loop

    logging.set_verbosity(logging.WARNING)
    result: dict = {}

    def run() -> None:
        result.update(loop.train_and_evaluate(cfg, _WORKDIR.value))
        if result["stopped"] in loop.STOP_REASONS:
            raise loop.StoppedEarly(f"stopped at step {result['step']} ({loop.STOP_REASONS[result['stopped']]}); "
                                    "checkpoint saved: rerun the same command to continue")

    code = exits.run_app("train", run)
    if code == exits.DONE:
        print(f"done: step {result.get('step')}, last validation {result.get('last_eval', {}).get('val_loss')}",
              flush=True)
    return code


if __name__ == "__main__":
    app.run(main)
