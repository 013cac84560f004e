"""Sweep expansion and launcher scripts: every launcher's dry run prints scripts that parse."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alert_jax import sweep
from configs import sweep as sweep_config
from conftest import REPO_ROOT


def test_expand_runs_covers_sizes_and_variants():
    cfg = sweep_config.get_config("paper")
    runs = sweep.expand_runs(cfg)
    assert [(r.size, r.variant) for r in runs] == [(s, v) for s in cfg.sizes for v in cfg.variants]
    by_name = {r.name: r for r in runs}
    ft = by_name["13b-ft"]
    assert ft.hosts == 4
    train, evaluate = ft.commands
    assert train[1] == "launch/train.py" and "--config=configs/finetune.py:13b,ft" in train
    assert "--config.init_from=hf:facebook/opt-13b" in train
    assert f"--config.init_from=ckpt:{ft.workdir}/checkpoints" in evaluate
    (only,) = by_name["1p3b-pretrained"].commands
    assert only[1] == "launch/evaluate.py" and "--config.init_from=hf:facebook/opt-1.3b" in only


def test_bad_sweep_settings_are_named():
    cfg = sweep_config.get_config("paper")
    cfg.variants = ("pretrained", "distilled")
    with pytest.raises(ValueError, match="distilled"):
        sweep.expand_runs(cfg)
    cfg = sweep_config.get_config("paper")
    cfg.hosts = ("13b=4",)
    with pytest.raises(ValueError, match="13b=4"):
        sweep.expand_runs(cfg)


def _dry_run(launcher: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "launch/sweep.py", "--config=configs/sweep.py", f"--launcher={launcher}", "--dry_run"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout
    scripts, name = {}, None
    for line in out.splitlines(keepends=True):
        if line.startswith("===== ") and line.rstrip().endswith(" ====="):
            name = line.strip()[6:-6]
            scripts[name] = ""
        elif name is not None:
            scripts[name] += line
    return scripts


@pytest.mark.parametrize("launcher,suffix", [("slurm", ".sbatch"), ("tpu", ".sh")])
def test_shell_launchers_print_valid_bash(launcher, suffix, tmp_path):
    scripts = _dry_run(launcher)
    assert len(scripts) == 6 and all(name.endswith(suffix) for name in scripts)
    for name, text in scripts.items():
        path = tmp_path / name
        path.write_text(text)
        check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert check.returncode == 0, f"{name}: {check.stderr}"
        assert "launch/evaluate.py" in text
    slurm_or_tpu = scripts[f"13b-cot{suffix}"]
    assert "launch/train.py" in slurm_or_tpu
    if launcher == "slurm":
        assert "#SBATCH --nodes=4" in slurm_or_tpu and "srun" in slurm_or_tpu
    else:
        assert "--worker=all" in slurm_or_tpu


def test_gke_launcher_prints_jobsets_that_parse():
    yaml = pytest.importorskip("yaml")
    scripts = _dry_run("gke")
    assert len(scripts) == 6
    doc = yaml.safe_load(scripts["13b-cot.yaml"])
    assert doc["kind"] == "JobSet" and doc["metadata"]["name"] == "alert-13b-cot"
    job = doc["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == 4 and job["completionMode"] == "Indexed"
    script = job["template"]["spec"]["containers"][0]["args"][0]
    assert "launch/train.py" in script and "--config.distributed.num_processes=4" in script
    check = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
