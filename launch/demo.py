"""The offline demo, nothing to download: pretrained vs FT vs CoT tiny OPTs on synthetic ALERT-style data.

    python launch/demo.py --workdir=/tmp/alert-demo                                   # ~8-10 min on 2 CPU cores
    python launch/demo.py --config=configs/demo.py:reduced --workdir=/tmp/alert-demo-small     # ~1-2 min
    python launch/demo.py --workdir=DIR --config.finetune.num_steps=500 --config.eval.max_instances=50
    python launch/demo.py --workdir=/tmp/alert-demo-seed1 --seed=1   # another training seed, same synthetic data

Writes ``report.md`` (OPT vs OPT-FT vs OPT-CoT per skill, dataset, template and metric; the first line states
"CoT vs pretrained on mathematics: X vs Y"), ``scores.json`` and ``figures/`` in the workdir, plus every stage's
outputs (data/, tokenizer/, runs/<model>/, eval/<model>/). Re-running with the same workdir skips finished stages.
Exit codes (alert_jax/apps/exits.py): 0 finished; 2 bad config or input (the message names the setting or stage);
74 a checkpoint could not be written (full disk); 75 a training stage stopped early (SIGTERM, SIGINT) with a
checkpoint saved: rerun to continue. One run per workdir. See alert_jax/apps/demo/run.py.
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
    "config", str(REPO_ROOT / "configs" / "demo.py"), "Demo config: configs/demo.py[:default|reduced]."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder; reused to resume (finished stages are skipped).")
_SEED = flags.DEFINE_integer("seed", None, "Sets config.seed (model init, data order and dropout of every stage); "
                             "the synthetic data keeps config.demo.data_seed.")
flags.mark_flag_as_required("workdir")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.ERROR)  # orbax's read-only-manager notices are not actionable here
    cfg = _CONFIG.value
    if _SEED.value is not None:
        cfg.seed = _SEED.value
    if cfg.compilation_cache:
        # XLA executables persist in the workdir: FT and CoT share their train step, and a resumed run its programs.
        import jax

        jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(_WORKDIR.value).absolute() / "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    from alert_jax.apps import exits
    from alert_jax.apps.demo import run as demo
    from alert_jax.io.workdir import workdir_lock

    def run() -> None:
        with workdir_lock(_WORKDIR.value):
            demo.run_demo(cfg, _WORKDIR.value)

    return exits.run_app("demo", run)


if __name__ == "__main__":
    app.run(main)
