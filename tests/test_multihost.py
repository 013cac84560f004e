"""Two processes on 127.0.0.1 (jax.distributed + gloo CPU collectives, 2 fake CPU devices each) train 3 steps and
get the same losses and parameters as one process with 4 devices (DESIGN.md section 8).

Each process feeds only its own rows of the global batch (``pipeline.process_shard`` + ``to_global_batch``).
The file doubles as the worker script: ``python tests/test_multihost.py PROCESS_ID NUM_PROCESSES PORT OUT.npz``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers import FAST_COMPILE, REPO_ROOT, model_config, packed_batch, random_params, subprocess_env, train_cfg

MESH = (2, 2, 1)  # data x fsdp over 4 devices: params sharded over processes, batch split over all devices
STEPS = 3
GLOBAL_BATCH = 8
SEQ_LEN = 32


def run_steps(out_path: str) -> None:
    """The 3-step training run shared by the reference and the workers; process 0 writes losses + params."""
    import jax

    from alert_jax.data import pipeline
    from alert_jax.models import opt as opt_model
    from alert_jax.parallel.sharding import make_mesh
    from alert_jax.train import optimizer as opt_lib
    from alert_jax.train import state as state_lib
    from alert_jax.train import step as step_lib

    devices = jax.devices()[: int(np.prod(MESH))]
    mesh = make_mesh(MESH, devices=devices)
    parts, _ = opt_model.split_model(opt_model.abstract_model(model_config(dropout=0.1, attention_dropout=0.1)))
    tx = opt_lib.make_optimizer(train_cfg(eps=1e-3, warmup_steps=0),
                                mask=opt_lib.decay_mask(parts.abstract_params(), parts.names))
    shardings = state_lib.state_shardings(parts, tx, mesh)
    state = state_lib.create_train_state(random_params(parts, seed=21), tx, shardings, seed=5)
    train_step = step_lib.make_train_step(parts, tx, mesh, shardings, grad_accum_steps=2,
                                         compiler_options=FAST_COMPILE)
    shard, count = pipeline.process_shard(mesh)
    rows = GLOBAL_BATCH // count
    losses = []
    for i in range(STEPS):
        batch = packed_batch(GLOBAL_BATCH, SEQ_LEN, seed=100 + i)
        local = {k: v[shard * rows:(shard + 1) * rows] for k, v in batch.items()}
        state, metrics = train_step(state, pipeline.to_global_batch(local, mesh))
        losses.append(float(metrics["loss"]))
    from jax.experimental import multihost_utils

    params = multihost_utils.process_allgather(state.params, tiled=True) if jax.process_count() > 1 else \
        jax.device_get(state.params)
    if jax.process_index() == 0:
        flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
        np.savez(out_path, losses=np.asarray(losses), shard_count=count, **flat)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    env = subprocess_env(devices=2, JAX_PLATFORMS=None)
    port = _free_port()
    out = tmp_path / "multi.npz"
    procs = [
        subprocess.Popen([sys.executable, __file__, str(pid), "2", str(port), str(out)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for pid in range(2)
    ]
    # The single-process reference runs here meanwhile (4 of the 8 fake devices of the test process).
    ref_path = tmp_path / "single.npz"
    run_steps(str(ref_path))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    multi, single = np.load(out), np.load(ref_path)
    assert int(multi["shard_count"]) == 2 and int(single["shard_count"]) == 1
    np.testing.assert_allclose(multi["losses"], single["losses"], rtol=1e-5)
    assert len(set(np.round(single["losses"], 4))) == STEPS  # three different batches
    keys = [k for k in single.files if k.startswith("[")]
    assert keys
    for k in keys:
        np.testing.assert_allclose(multi[k], single[k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.slow
def test_two_process_training_run_checkpoints_every_process(tmp_path):
    """launch/train.py in 2 processes: per-process data shards, one metrics writer, checkpoints holding the
    data-iterator state of both processes."""
    env = subprocess_env(devices=2, TF_CPP_MIN_LOG_LEVEL="3")
    port = _free_port()
    workdir = tmp_path / "run"
    cmd = [sys.executable, str(REPO_ROOT / "launch" / "train.py"), f"--config={REPO_ROOT}/configs/finetune.py:tiny,cot",
           f"--workdir={workdir}", "--config.mesh.shape=(2,2,1)", "--config.train.num_steps=3",
           "--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.train.eval_every=0",
           "--config.data.synthetic_train_examples=400", "--config.data.max_eval_examples=32",
           f"--config.distributed.coordinator_address=127.0.0.1:{port}", "--config.distributed.num_processes=2"]
    procs = [subprocess.Popen(cmd + [f"--config.distributed.process_id={i}"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    assert "done: step 3" in logs[0] and "step 3/3 | loss" in logs[0]
    assert "step 3/3" not in logs[1]  # only process 0 reports
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    for step in (2, 3):
        data = workdir / "checkpoints" / str(step) / "data"
        states = [json.loads((data / f"process_{i}-of-2.json").read_text()) for i in range(2)]
        assert [st["settings"]["shard_index"] for st in states] == [0, 1]
        assert all(st["settings"]["shard_count"] == 2 for st in states)


if __name__ == "__main__":
    pid, nproc, port, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from alert_jax.parallel import distributed

    assert distributed.initialize(f"127.0.0.1:{port}", nproc, pid)
    import jax

    assert jax.process_count() == nproc and jax.device_count() == 2 * nproc, (jax.process_count(), jax.devices())
    run_steps(out_file)
