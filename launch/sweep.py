"""Scale-ablation sweep: sizes x {pretrained, ft, cot}, run here or written as cluster job scripts.

    python launch/sweep.py --config=configs/sweep.py --launcher=slurm --dry_run      # print the sbatch scripts
    python launch/sweep.py --config=configs/sweep.py --launcher=slurm --out=jobs/    # write them (submit yourself)
    python launch/sweep.py --config=configs/sweep.py:tiny --launcher=local            # run a CPU-sized sweep here

Afterwards ``python launch/analyze.py --runs=DIR1,DIR2,...`` gathers the runs' scores (Figure-4-style chart).
Exit codes: 0 done; 75 a training run stopped early (not evaluated; rerun to continue); 2 a bad sweep config.
"""

from __future__ import annotations

import pathlib
import sys

LAUNCH_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = LAUNCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from alert_jax.apps import sweep  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/sweep.py", "Sweep config (configs/sweep.py[:preset]).")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", list(sweep.LAUNCHERS), "Where the runs go.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands / job scripts instead of running or writing them.")
_OUT = flags.DEFINE_string("out", "", "Folder for job scripts (default: <root>/jobs/<launcher>).")


def main(argv: list[str]) -> int:
    del argv
    cfg = _CONFIG.value
    try:
        runs = sweep.expand_runs(cfg)
    except sweep.SweepConfigError as e:
        print(f"sweep: error: {e}", file=sys.stderr, flush=True)
        return 2
    print(f"sweep: {len(runs)} runs ({', '.join(r.name for r in runs)}), launcher={_LAUNCHER.value}", flush=True)
    if _LAUNCHER.value == "local":
        if _DRY_RUN.value:
            for run in runs:
                print(f"# {run.name}")
                for cmd in run.commands:
                    print(" ".join(cmd))
            return 0
        code = sweep.run_local(runs, cwd=REPO_ROOT)
        if code == 0:
            print("sweep: done. Analyse with: python launch/analyze.py --runs=" + ",".join(r.workdir for r in runs))
        return code
    out = pathlib.Path(_OUT.value or pathlib.Path(cfg.root) / "jobs" / _LAUNCHER.value)
    for run in runs:
        name, text = sweep.render(run, _LAUNCHER.value, cfg, LAUNCH_DIR)
        if _DRY_RUN.value:
            print(f"===== {name} =====\n{text}")
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text)
            print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    app.run(main)
