"""The memory planner (alert_jax/apps/plan.py, launch/plan.py).

The planner's per-device peak (XLA's compiled memory analysis of the real train step, on abstract inputs) is checked
against an independent measurement: the step is run on real random arrays in a fresh process and the operating
system's peak resident set size is read (``/proc/self/status`` ``VmHWM``, reset with ``/proc/self/clear_refs``; glibc
set to ``mmap`` every buffer above 4 KiB so freed memory leaves the resident set). The CPU client exposes no allocator
statistics (``device.memory_stats()`` is None), so the kernel's page accounting is the measurement; all fake devices
share the process, so the measured total is compared with ``per-device plan x devices``.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from helpers import REPO_ROOT, subprocess_env

TOLERANCE = 0.15


def _start_plan(tmp_path: pathlib.Path, name: str, *flags: str) -> tuple[subprocess.Popen, pathlib.Path]:
    out = tmp_path / f"{name}.json"
    env = subprocess_env(pythonpath=True)  # one CPU device
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "launch" / "plan.py"), *flags, f"--json={out}"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    return proc, out


def _finish_plan(proc: subprocess.Popen, out: pathlib.Path, timeout: int = 600) -> tuple[str, dict]:
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"launch/plan.py failed:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return stdout, json.loads(out.read_text())


def _run_plan(tmp_path: pathlib.Path, name: str, *flags: str, timeout: int = 600) -> tuple[str, dict]:
    return _finish_plan(*_start_plan(tmp_path, name, *flags), timeout=timeout)


def _check_measured(plan: dict, devices: int) -> float:
    predicted = plan["train"]["compiled"]["argument_bytes"] + plan["train"]["compiled"]["output_bytes"] \
        - plan["train"]["compiled"]["alias_bytes"] + plan["train"]["compiled"]["temp_bytes"]
    assert predicted == plan["train"]["peak_bytes"]
    measured = plan["measured_train_peak_bytes_all_devices"]
    ratio = measured / (predicted * devices)
    assert abs(ratio - 1.0) <= TOLERANCE, \
        f"measured {measured} B vs planned {predicted} B x {devices}: ratio {ratio:.3f}"
    return ratio


# ------------------------------------------------------------------------------------------------------------------
# Fast unit tests (no compile)
# ------------------------------------------------------------------------------------------------------------------


def test_parse_and_format_bytes():
    from alert_jax.apps.plan import format_bytes, parse_bytes

    assert parse_bytes("80GiB") == 80 * 2**30
    assert parse_bytes("141GB") == 141 * 10**9
    assert parse_bytes("16e9") == 16 * 10**9
    assert parse_bytes("512 MiB") == 512 * 2**20
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes("eighty gigs")
    assert format_bytes(3 * 2**30) == "3.00 GiB"


def test_per_device_bytes_follows_shard_shapes():
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from alert_jax.apps.plan import per_device_bytes
    from alert_jax.parallel.sharding import make_mesh

    mesh = make_mesh((2, 4, 1))
    tree = {
        "a": jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec("fsdp", None))),
        "b": jax.ShapeDtypeStruct((8, 6), jnp.bfloat16, sharding=NamedSharding(mesh, PartitionSpec(("data", "fsdp")))),
        "c": jax.ShapeDtypeStruct((10,), jnp.int32, sharding=NamedSharding(mesh, PartitionSpec())),
    }
    # numpy reference: shard sizes by hand
    expected = (64 // 4) * 32 * 4 + (8 // 8) * 6 * 2 + 10 * 4
    assert per_device_bytes(tree) == expected


def test_uncompilable_part_is_reported_not_raised():
    import jax

    from alert_jax.apps.plan import plan
    from alert_jax.parallel.sharding import make_mesh
    from configs import finetune

    cfg = finetune.get_config("tiny,cot")
    mesh = make_mesh((1, 2, 1), devices=jax.devices()[:2])
    p = plan(cfg, mesh, device_memory=2**30, batch_size=3, search=False, decode=False)
    assert p.train is None and "does not split" in p.train_error
    assert "verdict: train step CANNOT BE COMPILED HERE" in p.report()


def test_micro_batch_accumulation_choice():
    from alert_jax.apps.plan import MicroBatchFit

    fit = MicroBatchFit(points=(), fixed_bytes=0, bytes_per_row=1, usable_bytes=1, max_micro_batch=24,
                        verified=True, rows_step=8)
    assert fit.accumulation_for(256) == 16  # 256/16 = 16 rows: the largest multiple of 8 dividing 256 that is <= 24
    assert fit.accumulation_for(24) == 1
    assert MicroBatchFit((), 0, 1, 1, 0, True, 8).accumulation_for(256) is None


# ------------------------------------------------------------------------------------------------------------------
# Planner vs. measured peak, through launch/plan.py in a subprocess
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Both tiny CLI runs, one after the other: a second process on the same 2 cores would stagger the 8 fake
    devices' threads, so their peaks no longer coincide and the measured total under-reads (seen: 0.65)."""
    tmp = tmp_path_factory.mktemp("plan")
    return {
        8: _run_plan(
            tmp, "tiny8", "--config=configs/finetune.py:tiny,cot", "--mesh=data:1,fsdp:8,tensor:1",
            "--device_memory=16GiB", "--decode_prompt_len=16", "--decode_new_tokens=8", "--measure",
        ),
        1: _run_plan(
            tmp, "tiny1", "--config=configs/finetune.py:tiny,cot", "--mesh=fsdp:1", "--search=false",
            "--decode=false", "--measure",
        ),
    }


def test_launch_plan_tiny_8_devices_prints_verdicts(tiny_runs):
    """The CLI end to end for tiny on fsdp:8: train step, micro-batch search, decode."""
    stdout, plan = tiny_runs[8]
    assert "planning tiny on 8 cpu device(s)" in stdout
    assert "verdict: train step FITS" in stdout
    assert "verdict: largest micro-batch that fits: 8 rows (1 per device)" in stdout  # capped at the batch of 8
    assert "verdict: decode FITS" in stdout
    assert "temporaries/activations are XLA:CPU's" in stdout
    # analytic params: tiny's weights are sharded over fsdp=8 where the dimension divides (the rest replicated), so
    # one device holds between an eighth and a half of the whole model
    from alert_jax.models.opt import count_params
    from alert_jax.models.sizes import get_model_config

    total = count_params(get_model_config("tiny")) * 4
    assert total / 8 <= plan["train"]["params_bytes"] < total / 2
    assert plan["train"]["opt_state_bytes"] >= 2 * plan["train"]["params_bytes"]  # Adam mu + nu
    assert plan["train"]["grads_bytes"] == plan["train"]["params_bytes"]  # fp32 params -> fp32 accumulator
    assert plan["decode"]["peak_bytes"] > plan["decode"]["params_bytes"] > 0


MEASURE_RETRIES = 2


@pytest.mark.parametrize("devices", [1, 8])
def test_plan_tiny_matches_measured_peak(tiny_runs, tmp_path, devices):
    """On 8 fake devices sharing 2 cores, the devices' threads can run out of step for a whole process (seen: 0.78
    in about one process in four-to-ten), so their peaks do not coincide and the process's peak under-reads the
    per-device plan x 8; it never over-reads for that reason. A low reading is therefore re-measured in up to
    ``MEASURE_RETRIES`` fresh processes (same program: the plan must not change) and the highest reading counts."""
    _, plan = tiny_runs[devices]
    flags = ("--config=configs/finetune.py:tiny,cot", f"--mesh=data:1,fsdp:{devices},tensor:1", "--search=false",
             "--decode=false", "--measure")
    measured = plan["measured_train_peak_bytes_all_devices"]
    for attempt in range(MEASURE_RETRIES):
        if measured >= (1 - TOLERANCE) * plan["train"]["peak_bytes"] * devices:
            break
        _, again = _run_plan(tmp_path, f"tiny{devices}_again{attempt}", *flags)
        assert again["train"]["peak_bytes"] == plan["train"]["peak_bytes"]
        reading = again["measured_train_peak_bytes_all_devices"]
        print(f"tiny on {devices} device(s): re-measured, {measured} -> {reading} B")
        measured = max(measured, reading)
    ratio = _check_measured({**plan, "measured_train_peak_bytes_all_devices": measured}, devices)
    print(f"tiny on {devices} device(s): measured/planned = {ratio:.3f}")


@pytest.mark.slow
@pytest.mark.parametrize("mesh,devices", [("fsdp:1", 1), ("data:2,fsdp:4", 8)])
def test_plan_125m_matches_measured_peak(tmp_path, mesh, devices):
    """125m shapes (12 layers, d 768, vocab 50272, bf16 compute, fp32 params) with seq 64 x batch 8."""
    _, plan = _run_plan(
        tmp_path, "125m", "--config=configs/finetune.py:125m,cot", f"--mesh={mesh}", "--seq_len=64",
        "--batch_size=8", "--search=false", "--decode=false", "--measure", timeout=1200,
    )
    ratio = _check_measured(plan, devices)
    print(f"125m {mesh} measured/planned = {ratio:.3f}")


def test_evaluation_presets_fit_their_stated_devices(tmp_path):
    """Acceptance (issue 14): launch/plan.py on configs/evaluate.py:1.3b (1 device of 80 GiB) and :13b (8 x 80 GiB)
    plans the evaluation's own decode call (its mesh, batch, context = prompt + eval.max_new_tokens, bf16 weights and
    compute, per-layer decoding weights) and finds it fits. Abstract shapes only: nothing is allocated."""
    from configs import evaluate as eval_config

    runs = {size: _start_plan(tmp_path, size, f"--config=configs/evaluate.py:{size}", f"--devices={devices}",
                              "--device_memory=80GiB")
            for size, devices in (("1.3b", 1), ("13b", 8))}
    for size, run in runs.items():
        stdout, plan = _finish_plan(*run)
        cfg, z = eval_config.get_config(size), eval_config.EVAL_SIZE_SETTINGS[size]
        mesh = dict(zip(("data", "fsdp", "tensor"), (z.devices // (z.mesh[1] * z.mesh[2]), z.mesh[1], z.mesh[2])))
        assert plan["mesh_shape"] == mesh and plan["train"] is None, size  # decoding only, on the preset's mesh
        d = plan["decode"]
        assert d["batch_size"] == cfg.eval.batch_size and (d["dtype"], d["param_dtype"]) == ("bfloat16", "bfloat16")
        assert d["prompt_len"] + d["max_new_tokens"] == 2048 and d["max_new_tokens"] == cfg.eval.max_new_tokens
        assert plan["decode_fits"] is True and "verdict: decode FITS" in stdout, stdout
        # bf16 weights: 2 bytes per parameter, split over the tensor axis (13b) or whole (1.3b), within 5%
        from alert_jax.models.opt import count_params
        from alert_jax.models.sizes import get_model_config

        expected = 2 * count_params(get_model_config(size)) / z.mesh[2]
        assert abs(d["params_bytes"] / expected - 1) < 0.05, (size, d["params_bytes"], expected)
