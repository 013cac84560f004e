"""Sweep expansion and launcher scripts: every launcher's dry run prints scripts that parse."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO_ROOT, subprocess_env

from alert_jax.apps import sweep
from configs import sweep as sweep_config


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
    # the paper's selection: training scores the dev tasks and keeps the best step; evaluation loads that step
    assert cfg.checkpoint_select == "best_dev_score"
    assert {"--config.data.niv2_dir=/data/natural-instructions", f"--config.train.dev_every={cfg.dev_every}",
            "--config.train.best_metric=dev_score"} <= set(train)
    assert f"--config.init_from=ckpt:{ft.workdir}/checkpoints@best_dev_score" in evaluate
    cfg.checkpoint_select = "latest"
    train, evaluate = {r.name: r for r in sweep.expand_runs(cfg)}["13b-ft"].commands
    assert not any("dev_every" in f or "best_metric" in f for f in train)
    assert f"--config.init_from=ckpt:{ft.workdir}/checkpoints@latest" in evaluate
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
    cfg = sweep_config.get_config("paper")
    cfg.checkpoint_select = "best_accuracy"
    with pytest.raises(ValueError, match="checkpoint_select='best_accuracy'"):
        sweep.expand_runs(cfg)
    cfg = sweep_config.get_config("tiny")  # no task files named: the dev score cannot run
    with pytest.raises(ValueError, match="data.niv2_dir"):
        sweep.expand_runs(cfg)
    cfg.train_overrides = {"data": {"tfds_dir": "/data/tfds"}}  # prepared alert_eval holds the dev tasks
    trained = [r for r in sweep.expand_runs(cfg) if r.variant != "pretrained"]
    train_argvs = [r.commands[0] for r in trained]
    assert train_argvs and all("--config.train.best_metric=dev_score" in argv for argv in train_argvs)
    assert not any(f.startswith("--config.data.niv2_dir") for argv in train_argvs for f in argv)


def _dry_run(launcher: str, *flags: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "launch/sweep.py", "--config=configs/sweep.py", f"--launcher={launcher}", "--dry_run", *flags],
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
    pod = job["template"]["spec"]
    assert "volumes" not in pod and "serviceAccountName" not in pod  # the defaults: neither

    # workdirs that outlive a pod: a PersistentVolumeClaim mounted under the root, or a bucket through a
    # Workload Identity service account
    kept = yaml.safe_load(_dry_run("gke", "--config.gke.volume_claim=wd-claim", "--config.gke.service_account=ksa",
                                   "--config.root=/workdirs/sweep")["13b-cot.yaml"])
    pod = kept["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ksa"
    assert pod["volumes"] == [{"name": "workdirs", "persistentVolumeClaim": {"claimName": "wd-claim"}}]
    container = pod["containers"][0]
    assert container["volumeMounts"] == [{"name": "workdirs", "mountPath": "/workdirs"}]
    assert "--workdir=/workdirs/sweep/13b-cot" in container["args"][0]


SWEEP_CONFIG = '''
from configs import sweep


def get_config():
    c = sweep.get_config("tiny")
    c.root = {root!r}
    c.train_overrides = {{"train": {{"num_steps": 4, "eval_every": 2, "checkpoint_every": 2, "log_every": 2,
                                     "batch_size": 4}},
                          "data": {{"synthetic_train_examples": 100, "synthetic_valid_examples": 20}}}}
    c.dev_every = 2
    c.train_overrides["data"].update({{"dev_generate_instances": 2, "dev_generate_max_new_tokens": 4}})
    c.eval_overrides = {{"data": {{"niv2_dir": {niv2!r}}},
                         "eval": {{"tasks": "task1388_cb_entailment,task1385_anli_r1_entailment", "templates": "T1,T4",
                                   "max_instances": 2, "max_new_tokens": 4}}}}
    return c
'''


@pytest.mark.slow
def test_local_tiny_sweep_then_analyze(tmp_path, niv2_tasks_dir):
    """launch/sweep.py --launcher=local runs 2 tiny runs (train + evaluate); launch/analyze.py gathers them and
    scores every saved checkpoint of one on the dev set for checkpoint selection."""
    import json

    root = tmp_path / "sweep"
    config_file = tmp_path / "tiny_sweep.py"
    config_file.write_text(SWEEP_CONFIG.format(root=str(root), niv2=str(niv2_tasks_dir)))
    # One CPU device for the child processes (the suite's 8 fake devices only slow tiny runs down).
    env = subprocess_env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla_cache"),
                         JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    subprocess.run([sys.executable, "launch/sweep.py", f"--config={config_file}", "--launcher=local"],
                   cwd=REPO_ROOT, check=True, env=env)
    for variant in ("ft", "cot"):
        scores = json.loads((root / f"tiny-{variant}" / "eval" / "scores.json").read_text())
        assert set(scores["datasets"]) == {"task1388_cb_entailment", "task1385_anli_r1_entailment"}
        rows = [json.loads(line) for line in (root / f"tiny-{variant}" / "metrics.jsonl").read_text().splitlines()]
        dev = {r["step"]: r["dev_score"] for r in rows if r["kind"] == "dev_score"}
        assert sorted(dev) == [2, 4]  # every train.dev_every steps and at the end
        chosen = max(dev, key=lambda s: (dev[s], s))  # highest dev score, the latest step on ties
        assert scores["metadata"]["checkpoint_step"] == chosen
        assert scores["metadata"]["init_from"].endswith("@best_dev_score")

    out = tmp_path / "analysis"
    subprocess.run(
        [sys.executable, "launch/analyze.py", f"--runs={root / 'tiny-ft'},{root / 'tiny-cot'}", f"--out={out}",
         f"--checkpoints={root / 'tiny-cot'}", "--evaluate_checkpoints", f"--niv2_dir={niv2_tasks_dir}",
         "--max_instances=2", "--templates=T1", "--max_new_tokens=4"],
        cwd=REPO_ROOT, check=True, env=env,
    )
    analysis = json.loads((out / "analysis.json").read_text())["metrics"]["rougeL"]
    for variant in ("ft", "cot"):
        scores = json.loads((root / f"tiny-{variant}" / "eval" / "scores.json").read_text())
        assert analysis["scale"]["tiny"][variant] == pytest.approx(scores["overall"]["max"]["rougeL"])
    picks = json.loads((out / "selection.json").read_text())[str(root / "tiny-cot")]
    steps = [r["step"] for r in picks["records"]]
    assert steps == [2, 4]
    assert picks["by_perplexity"] in steps and picks["by_dev_score"] in steps
    assert all((root / "tiny-cot" / "selection" / f"step_{s}" / "scores.json").is_file() for s in steps)
    assert "Checkpoint selection" in (out / "analysis.md").read_text()
