"""Guards against silent stale or partial results around a training run (issue 15): strict settings, exit codes, one
run per workdir, settings that change the optimisation refused on resume, SIGINT, and a sweep that never evaluates a
run that stopped early. launch/train.py runs in subprocesses with the session tokenizer (conftest.py ``launch_env``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import ml_collections
import pytest
from helpers import REPO_ROOT, read_metrics, run_launch, start_launch, subprocess_env, wait_for

from alert_jax.io import workdir as workdir_lib
from alert_jax.train import settings
from configs import finetune

COMMON = ("--config.train.log_every=1", "--config.train.eval_every=0")


@pytest.mark.parametrize("override,named", [
    ("--config.optimizer.learning_rate=-1e-3", "optimizer.learning_rate=-0.001"),
    ("--config.train.log_every=0", "train.log_every=0"),
    ("--config.train.grad_accum_steps=0", "train.grad_accum_steps=0"),
    ("--config.train.batch_size=6", "train.batch_size=6"),  # 6 rows do not split into 4 microbatches
])
def test_bad_settings_exit_2_with_one_line_and_write_nothing(launch_env, tmp_path, override, named):
    workdir = tmp_path / "never"
    proc = run_launch(launch_env, workdir, override, "--config.train.grad_accum_steps=4"
                      if "batch_size" in override else "--config.train.num_steps=3", expect=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train: error: ") and named in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not workdir.exists()


def test_cudnn_with_attention_dropout_exits_2_naming_both_settings(launch_env, tmp_path):
    workdir = tmp_path / "never"
    proc = run_launch(launch_env, workdir, "--config.model.attention_impl=cudnn",
                      "--config.model.attention_dropout=0.1", expect=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.attention_impl='cudnn'" in lines[0], proc.stderr
    assert "model.attention_dropout=0.1" in lines[0] and not workdir.exists()


def test_validate_names_every_kind_of_setting():
    base = finetune.get_config("tiny,cot")
    settings.validate(base, num_devices=1)
    for key, value, named in [("optimizer.b2", 1.0, "optimizer.b2"), ("train.best_metric", "bleu", "bleu"),
                              ("train.dropout_rng_impl", "philox", "philox"), ("mode", "rationale", "mode"),
                              ("data.seq_len", 4096, "max_position_embeddings"), ("model.dtype", "int8", "model.dtype"),
                              ("optimizer.warmup_steps", -1, "optimizer.warmup_steps"),
                              ("mesh.shape", (3, 1, 1), "mesh.shape"),
                              ("train.max_replicated_fraction", 2, "train.max_replicated_fraction")]:
        cfg = ml_collections.ConfigDict(base.to_dict())
        section, _, name = key.rpartition(".")
        (cfg[section] if section else cfg)[name] = value
        with pytest.raises(settings.TrainConfigError, match=named.replace(".", r"\.")):
            settings.validate(cfg, num_devices=1)


def test_resume_refuses_changed_optimisation_unless_overridden(launch_env, tmp_path):
    workdir = tmp_path / "run"
    run_launch(launch_env, workdir, "--config.train.num_steps=2", "--config.train.checkpoint_every=2", *COMMON)
    history = (workdir / "config.json").read_text()
    proc = run_launch(launch_env, workdir, "--config.train.num_steps=4", "--config.optimizer.learning_rate=5e-2",
                      *COMMON, expect=2)
    assert "optimizer.learning_rate: 0.001 -> 0.05" in proc.stderr and "train.num_steps: 2 -> 4" in proc.stderr
    assert "resume_overrides=optimizer.learning_rate,train.num_steps" in proc.stderr
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    proc = run_launch(launch_env, workdir, "--config.train.num_steps=4", "--config.optimizer.learning_rate=5e-2",
                      "--config.train.resume_overrides=train.num_steps,optimizer.learning_rate", *COMMON)
    assert "resuming with a changed setting" in proc.stdout and "optimizer.learning_rate" in proc.stdout
    assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3, 4]
    assert (workdir / "config.json").read_text() == history  # the start config is kept ...
    starts = [json.loads(line) for line in (workdir / "config_history.jsonl").read_text().splitlines()]
    assert [s["resumed_from"] for s in starts] == [None, 2]  # ... and every start is appended
    assert starts[1]["config"]["optimizer"]["learning_rate"] == 5e-2


def test_second_run_on_a_workdir_refuses_and_a_stale_lock_is_taken_over(launch_env, tmp_path):
    workdir = tmp_path / "busy"
    proc = start_launch(launch_env, workdir, "--config.train.num_steps=100000", "--config.train.checkpoint_every=0",
                        *COMMON)
    try:
        wait_for(lambda: (workdir / "metrics.jsonl").is_file(), proc)
        second = run_launch(launch_env, workdir, "--config.train.num_steps=2", *COMMON, expect=2)
        assert f"is in use by process {proc.pid} on host {socket.gethostname()}" in second.stderr, second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 75, out[-2000:]
    assert not (workdir / workdir_lib.LOCK_FILE).exists()  # released on exit

    stale = tmp_path / "stale"
    stale.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (stale / workdir_lib.LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                                           "started": "2026-01-01T00:00:00"}))
    proc = run_launch(launch_env, stale, "--config.train.num_steps=1", *COMMON)
    assert "taking over the stale lock" in proc.stderr


def test_lock_of_another_host_is_never_taken(tmp_path):
    (tmp_path / workdir_lib.LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": os.getpid(),
                                                              "started": "2026-01-01T00:00:00"}))
    with pytest.raises(workdir_lib.WorkdirBusyError, match="on host elsewhere"):
        with workdir_lib.workdir_lock(tmp_path):
            pass


def test_sigint_saves_the_current_step_and_exits_75(launch_env, tmp_path):
    workdir = tmp_path / "interrupted"
    proc = start_launch(launch_env, workdir, "--config.train.num_steps=100000", "--config.train.checkpoint_every=0",
                        *COMMON)
    wait_for(lambda: (workdir / "metrics.jsonl").is_file() and read_metrics(workdir), proc)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 75, out[-3000:]
    step = int(out.split("train: stopped at step ")[1].split()[0])
    assert "(SIGINT); checkpoint saved" in out and (workdir / "checkpoints" / str(step)).is_dir()


SWEEP = '''
import ml_collections
def get_config():
    c = ml_collections.ConfigDict({{
        "root": {root!r}, "variants": ("ft",), "python": "python", "sizes": ("tiny",), "init_from": "",
        "hosts": ("tiny:1",), "gpus_per_host": 0,
        "train_overrides": {{"train": {{"num_steps": 4, "stop_at_step": 2, "log_every": 1, "eval_every": 0}},
                            "tokenizer": {tokenizer!r}, "data": {{"synthetic_train_examples": 200}}}},
        "eval_overrides": {{}}, "checkpoint_select": "latest", "dev_every": 0,
        "slurm": {{"partition": "p", "time": "1:00:00", "account": "", "coordinator_port": 12345}},
        "tpu": {{"name": "t", "zone": "z", "project": "", "repo_dir": "~"}},
        "gke": {{"image": "i", "namespace": "n", "gpu_resource": "g", "coordinator_port": 12345, "max_restarts": 1}},
    }})
    return c
'''


def test_sweep_does_not_evaluate_a_run_that_stopped_early(launch_env, tmp_path):
    config = tmp_path / "sweep.py"
    config.write_text(SWEEP.format(root=str(tmp_path / "sweep"), tokenizer=launch_env["tokenizer"]))
    env = subprocess_env(**{k: v for k, v in launch_env["env"].items() if k.startswith("JAX_")})
    proc = subprocess.run([sys.executable, "launch/sweep.py", f"--config={config}", "--launcher=local"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 75, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "stopped early with a checkpoint saved; not evaluated" in proc.stdout
    run = tmp_path / "sweep" / "tiny-ft"
    assert (run / "checkpoints" / "2").is_dir() and not (run / "eval").exists()


@pytest.mark.parametrize("override,named", [
    ("--config.eval.top_p=0", "eval.top_p=0"),
    ("--config.eval.max_new_tokens=0", "eval.max_new_tokens=0"),
    ("--config.eval.batch_size=0", "eval.batch_size=0"),
    ("--config.eval.on_overflow=truncate", "eval.on_overflow='truncate'"),
    ("--config.eval.buckets=64,x", "eval.buckets='64,x'"),
])
def test_bad_evaluation_settings_exit_2_with_one_line_and_write_nothing(launch_env, tmp_path, override, named):
    workdir = tmp_path / "never"
    proc = subprocess.run([sys.executable, "launch/evaluate.py", "--config=configs/evaluate.py:tiny",
                           f"--config.data.niv2_dir={tmp_path}", f"--workdir={workdir}", override],
                          cwd=REPO_ROOT, env=launch_env["env"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate: error: ") and named in lines[0], proc.stderr
    assert not workdir.exists()


def test_eval_validate_accepts_the_presets_and_names_the_setting():
    from alert_jax.eval import runner
    from configs import evaluate

    cfg = evaluate.get_config("tiny")
    runner.validate(cfg, num_devices=1)
    for key, value in [("eval.temperature", -0.5), ("eval.context", 64), ("eval.num_demos", -2),
                       ("mesh.shape", (2, 1, 1))]:
        bad = ml_collections.ConfigDict(cfg.to_dict())
        section, _, name = key.rpartition(".")
        bad[section][name] = value
        with pytest.raises(runner.EvalConfigError, match=key.replace(".", r"\.")):
            runner.validate(bad, num_devices=1)
