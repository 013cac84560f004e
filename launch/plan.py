"""Per-device memory plan of a finetuning or evaluation config on a mesh, compiled on fake CPU devices (nothing is
allocated).

    python launch/plan.py --config=configs/finetune.py:13b,cot --mesh=data:1,fsdp:8,tensor:1 --device_memory=80GiB
    python launch/plan.py --config=configs/evaluate.py:13b --devices=8 --device_memory=80GiB   # decoding only
    python launch/plan.py --config=configs/evaluate.py:1.3b --devices=1 --device_memory=80GiB
    python launch/plan.py --config=configs/finetune.py:1.3b,cot --mesh=data:2,fsdp:4,tensor:1 --batch_size=64 \
        --grad_accum_steps=4 --device_memory=141GB --usable_fraction=0.9
    python launch/plan.py --config=configs/finetune.py:tiny,cot --mesh=fsdp:2 --measure   # CPU: also run it

Prints params / optimizer state / gradients / activations per device, verdict lines (``verdict: ...``) against
``--device_memory`` x ``--usable_fraction``, and the largest micro-batch that fits (alert_jax/apps/plan.py documents the
method); an evaluation config (``configs/evaluate.py``) plans only its decode call, with its own batch, context,
dtypes and mesh (``--devices`` fills the mesh's -1; alert_jax/apps/plan_eval.py). ``--platform=cpu`` (default) sets
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (N = mesh size) before jax is imported; ``--platform=native``
plans on the devices this host has (GPU/TPU: exact temporaries).
A part that cannot be compiled here (host memory, an indivisible batch, ...) is reported as
``verdict: ... CANNOT BE COMPILED HERE: <error>``; exit status 2 on a configuration error.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/finetune.py", "App config (configs/finetune.py:SIZE,MODE).")
_MESH = flags.DEFINE_string(
    "mesh", "", "Mesh as 'data:2,fsdp:4,tensor:1' (missing axes = 1). Empty: config mesh.shape, -1 filled to --devices."
)
_DEVICES = flags.DEFINE_integer("devices", 8, "Devices used to fill a -1 in the config's mesh.shape (when --mesh is empty).")
_PLATFORM = flags.DEFINE_enum("platform", "cpu", ["cpu", "native"], "cpu: fake CPU devices; native: this host's devices.")
_DEVICE_MEMORY = flags.DEFINE_string("device_memory", "80GiB", "Memory of one accelerator (e.g. 80GiB, 141GB, 16GiB).")
_USABLE = flags.DEFINE_float(
    "usable_fraction", 0.75, "Share of device memory the program may use (JAX GPU default 0.75, XLA_PYTHON_CLIENT_MEM_FRACTION)."
)
_BATCH = flags.DEFINE_integer("batch_size", None, "Global batch in sequences (default: train.batch_size).")
_ACCUM = flags.DEFINE_integer("grad_accum_steps", None, "Microbatches per step (default: train.grad_accum_steps).")
_SEQ = flags.DEFINE_integer("seq_len", None, "Sequence length (default: data.seq_len).")
_SEARCH = flags.DEFINE_bool("search", True, "Search the largest micro-batch that fits (2-3 extra compiles).")
_DECODE = flags.DEFINE_bool("decode", True, "Also plan one decode_batch call.")
_DECODE_BATCH = flags.DEFINE_integer("decode_batch", None, "Decode batch (default: eval.batch_size, else 8; rounded).")
_DECODE_PROMPT = flags.DEFINE_integer("decode_prompt_len", None, "Decode prompt length (default: max positions - new).")
_DECODE_NEW = flags.DEFINE_integer(
    "decode_new_tokens", None, "Tokens generated per decode call (default: eval.max_new_tokens, else 128)."
)
_DECODE_DTYPE = flags.DEFINE_string(
    "decode_dtype", None, "Weights and compute dtype for decoding (default: an evaluation config's model.dtype and "
    "model.param_dtype, else bfloat16)."
)
_MEASURE = flags.DEFINE_bool(
    "measure", False, "CPU only: also run the configured train step on random arrays and measure its peak host memory."
)
_JSON = flags.DEFINE_string("json", "", "Also write the plan as JSON to this path.")
_FAST_COMPILE = flags.DEFINE_bool(
    "fast_compile",
    True,
    "CPU: compile with --xla_backend_optimization_level=0 (LLVM codegen only; XLA's fusion and buffer assignment, "
    "hence every memory number, are unchanged; compiles ~2x faster, runs slower).",
)


def parse_mesh(text: str) -> tuple[int, int, int]:
    """'data:2,fsdp:4,tensor:1' -> (2, 4, 1); axes left out are 1."""
    sizes = {"data": 1, "fsdp": 1, "tensor": 1}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition(":")
        if name not in sizes or not value.strip().lstrip("-").isdigit():
            raise ValueError(f"--mesh={text!r}: expected entries like data:2,fsdp:4,tensor:1 (axes {tuple(sizes)})")
        sizes[name] = int(value)
    return sizes["data"], sizes["fsdp"], sizes["tensor"]


def _mesh_shape(cfg) -> tuple[int, int, int]:
    if _MESH.value:
        shape = parse_mesh(_MESH.value)
    else:
        shape = tuple(int(s) for s in cfg.mesh.shape)
        known = math.prod(s for s in shape if s != -1)
        shape = tuple(_DEVICES.value // known if s == -1 else s for s in shape)
    if any(s < 1 for s in shape):
        raise ValueError(f"mesh shape {shape} must be positive (use --mesh=data:A,fsdp:B,tensor:C)")
    return shape  # type: ignore[return-value]


def _setup_platform(n: int) -> None:
    """Fake CPU devices: must run before jax is imported (nothing above imports it)."""
    if "jax" in sys.modules:
        raise RuntimeError("launch/plan.py: jax was imported before the device count could be set")
    if _PLATFORM.value == "cpu":
        ours = ("xla_force_host_platform_device_count", "xla_backend_optimization_level")
        flags_env = [f for f in os.environ.get("XLA_FLAGS", "").split() if not any(o in f for o in ours)]
        flags_env.append(f"--xla_force_host_platform_device_count={n}")
        if _FAST_COMPILE.value:
            flags_env.append("--xla_backend_optimization_level=0")
        os.environ["XLA_FLAGS"] = " ".join(flags_env)
        os.environ["JAX_PLATFORMS"] = "cpu"


def _plan_json(p, measured: int | None) -> dict:
    import dataclasses

    def clean(x):
        if dataclasses.is_dataclass(x):
            d = {f.name: clean(getattr(x, f.name)) for f in dataclasses.fields(x) if f.repr}
            for prop in ("peak_bytes", "activations_bytes", "micro_batch"):
                if hasattr(type(x), prop):
                    d[prop] = getattr(x, prop)
            return d
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    out = clean(p)
    out["usable_bytes"] = p.usable_bytes
    out["train_fits"] = p.train_fits
    out["decode_fits"] = p.decode_fits
    out["measured_train_peak_bytes_all_devices"] = measured
    return out


# ----------------------------------------------------------------------------------------------------------------
# --measure: the real peak of the configured train step on this CPU host (checks the planner)
# ----------------------------------------------------------------------------------------------------------------

# glibc reads these once at process start: buffers above 4 KiB are mmap-ed and returned to the kernel when freed,
# so the resident set size follows the live buffers instead of glibc's free lists.
MEASURE_ENV = {"MALLOC_MMAP_THRESHOLD_": "4096", "MALLOC_TRIM_THRESHOLD_": "0"}


def _proc_status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} (--measure needs Linux)")


def _settled_rss(timeout_s: float = 30.0) -> int:
    """``VmRSS`` once it stops falling: freed buffers leave the resident set asynchronously (seconds for
    gigabytes), so reading it right after ``del`` would count memory that is about to be returned."""
    deadline = time.monotonic() + timeout_s
    last, quiet = _proc_status("VmRSS"), 0
    while quiet < 4 and time.monotonic() < deadline:
        time.sleep(0.25)
        now = _proc_status("VmRSS")
        quiet = quiet + 1 if now >= last - max(2**20, last // 500) else 0
        last = min(last, now)
    return _proc_status("VmRSS")


def measure_train_step_peak(program, tx, mesh, model_config, repeats: int = 5) -> int:
    """Runs the compiled train step on random arrays and returns the peak memory it took on this host, for the
    whole mesh (the fake devices share this process), measured by the kernel -- independent of XLA's accounting
    (the CPU client has no allocator statistics: ``device.memory_stats()`` is None):

    1. allocate the state and batch, run one warm-up step (code, thread pools and runtime caches are resident by
       now), free everything, allocate them again (initialisers already compiled);
    2. ``repeats`` times: read ``VmRSS`` -> ``before``, reset the kernel's peak counter (``echo 5 >
       /proc/self/clear_refs``), run one step, read ``VmHWM``; the step's growth = the highest ``VmHWM - before``;
    3. return the bytes of the state and batch buffers (summed over every device's shard) + that growth.

    Measuring only the growth during the step, right around it, keeps process-wide drift out (a ``VmRSS`` read
    seconds earlier as a baseline gave 0.90-1.06 of the plan from run to run for the same program).

    ``program``: ``MemoryPlan.train_program`` = (TrainPlan, compiled executable, abstract TrainState).
    """
    import gc

    import jax
    import jax.numpy as jnp
    import numpy as np

    from alert_jax.parallel.sharding import batch_sharding, use_mesh
    from alert_jax.train.state import TrainState

    train_plan, compiled, abstract = program
    b, s = train_plan.batch_size, train_plan.seq_len

    def init(key):
        leaves, treedef = jax.tree.flatten(abstract.params)
        keys = jax.random.split(key, len(leaves))
        params = treedef.unflatten(
            [(0.02 * jax.random.normal(k, a.shape, jnp.float32)).astype(a.dtype) for k, a in zip(keys, leaves)]
        )
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=key)

    init_fn = jax.jit(init, out_shardings=jax.tree.map(lambda a: a.sharding, abstract))
    rng = np.random.default_rng(0)
    host_batch = {
        "inputs": rng.integers(3, model_config.arch.vocab_size, (b, s), dtype=np.int32),
        "targets": rng.integers(3, model_config.arch.vocab_size, (b, s), dtype=np.int32),
        "segment_ids": np.ones((b, s), np.int32),
        "positions": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)).copy(),
        "loss_mask": np.ones((b, s), np.float32),
    }

    def allocate():
        state = init_fn(jax.random.PRNGKey(0))
        batch = {k: jax.device_put(v, batch_sharding(mesh)) for k, v in host_batch.items()}
        return jax.block_until_ready((state, batch))

    with use_mesh(mesh):
        state, batch = allocate()
        jax.block_until_ready(compiled(state, batch))
        del state, batch
        gc.collect()
        _settled_rss()
        state, batch = allocate()
        gc.collect()
        inputs = sum(shard.data.nbytes for x in jax.tree.leaves((state, batch)) for shard in x.addressable_shards)
        growth = 0
        for _ in range(repeats):
            before = _settled_rss(timeout_s=2.0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # Linux >= 4.0: resets VmHWM (peak resident set size) to the current VmRSS
            state, _ = jax.block_until_ready(compiled(state, batch))  # the state is donated: same buffers again
            growth = max(growth, _proc_status("VmHWM") - before)
    return int(inputs + growth)


def main(argv: list[str]) -> None:
    del argv
    t_start = time.perf_counter()
    cfg = _CONFIG.value
    try:
        shape = _mesh_shape(cfg)
    except ValueError as e:
        print(f"plan: error: {e}", file=sys.stderr)
        sys.exit(2)
    n = math.prod(shape)
    _setup_platform(n)

    import jax

    from alert_jax.apps import plan as plan_lib
    from alert_jax.apps import plan_eval

    if _MEASURE.value and not all(k in os.environ for k in MEASURE_ENV):
        # glibc reads its malloc settings once at process start: re-run this command with them set.
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **MEASURE_ENV})
    from alert_jax.parallel.sharding import make_mesh

    devices = jax.devices()
    if len(devices) < n:
        print(f"plan: error: mesh {shape} needs {n} devices, this host has {len(devices)} ({devices[0].platform})",
              file=sys.stderr)
        sys.exit(2)
    try:
        mesh = make_mesh(shape, devices=devices[:n])
        device_memory = plan_lib.parse_bytes(_DEVICE_MEMORY.value) if _DEVICE_MEMORY.value else None
    except ValueError as e:
        print(f"plan: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"planning {cfg.model.size} on {n} {devices[0].platform} device(s), mesh (data, fsdp, tensor) = {shape}",
          flush=True)
    try:
        if plan_eval.is_evaluation_config(cfg):
            p = plan_eval.plan_evaluation(
                cfg, mesh, device_memory=device_memory, usable_fraction=_USABLE.value, batch_size=_DECODE_BATCH.value,
                prompt_len=_DECODE_PROMPT.value, max_new_tokens=_DECODE_NEW.value, dtype=_DECODE_DTYPE.value,
                log=lambda s: print(s, flush=True),
            )
        else:
            p = plan_lib.plan(
                cfg,
                mesh,
                device_memory=device_memory,
                usable_fraction=_USABLE.value,
                batch_size=_BATCH.value,
                grad_accum_steps=_ACCUM.value,
                seq_len=_SEQ.value,
                search=_SEARCH.value,
                decode=_DECODE.value,
                decode_batch=_DECODE_BATCH.value,
                decode_prompt_len=_DECODE_PROMPT.value,
                decode_new_tokens=_DECODE_NEW.value,
                decode_dtype=_DECODE_DTYPE.value,
                log=lambda s: print(s, flush=True),
            )
    except ValueError as e:
        print(f"plan: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(p.report(), flush=True)

    measured = None
    if _MEASURE.value:
        if p.train is None:
            print("measure: skipped (the train step did not compile)")
        else:
            from alert_jax.models.sizes import model_config_from

            if devices[0].platform != "cpu":
                raise SystemExit("plan: --measure measures host memory: use --platform=cpu")
            measured = measure_train_step_peak(
                p.train_program, plan_lib.default_optimizer(cfg), mesh, model_config_from(cfg)
            )
            predicted = p.train.peak_bytes * n
            print(
                f"measure: train step peak resident memory {plan_lib.format_bytes(measured)} for {n} device(s) vs "
                f"planned {plan_lib.format_bytes(predicted)} ({p.train.peak_bytes} B/device x {n}); "
                f"ratio {measured / max(predicted, 1):.3f}"
            )
    if _JSON.value:
        pathlib.Path(_JSON.value).write_text(json.dumps(_plan_json(p, measured), indent=1, default=str))
    print(f"plan: done in {time.perf_counter() - t_start:.1f}s", flush=True)


if __name__ == "__main__":
    app.run(main)
