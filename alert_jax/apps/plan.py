"""Per-device memory of a training (and decoding) configuration on a mesh, without allocating anything.

The planner builds the *real* programs -- ``alert_jax.train.step.make_train_step`` and ``alert_jax.eval.generate``'s
decode program -- on ``jax.ShapeDtypeStruct`` inputs that carry their shardings (parameters, optimizer state and
batch), lowers and compiles them (``jitted.lower(*abstract).compile()``) and reads XLA's
``compiled.memory_analysis()``. On a CPU host the mesh is made of fake devices
(``--xla_force_host_platform_device_count``), so a 13B model on 8 "devices" plans on a laptop: nothing is allocated,
only compiled.

Numbers (all **per device**, bytes):

* ``params`` / ``opt_state`` -- analytic: the shard shape of every leaf (``sharding.shard_shape``) times its itemsize.
* ``grads`` -- analytic: the fp32 gradient accumulator of ``make_train_step`` (shaped and sharded like the params).
* compiled ``argument`` / ``output`` / ``alias`` / ``temp`` -- from XLA. The state is donated, so its output aliases
  its argument. ``temp`` holds everything else the step needs: the gradient accumulator, the gradients of the
  current microbatch, all-gathered (FSDP) weights, activations saved for the backward pass and scratch.
* ``peak = argument + output - alias + temp`` -- what the step needs at once. (XLA's own ``peak_memory_in_bytes`` is
  not used: on CPU it does not include the temporaries.)
* ``activations & other temporaries = temp - grads``.

Verdict: the train step fits when ``peak <= device_memory * usable_fraction`` (``usable_fraction`` defaults to 0.75,
the share of GPU memory JAX's allocator takes by default; raise it together with ``XLA_PYTHON_CLIENT_MEM_FRACTION``).

**Largest micro-batch** (:func:`search_micro_batch`): the step is compiled with 2 accumulation microbatches of
``1 x`` and ``2 x`` (data x fsdp) rows (1 and 2 rows per device); peak memory is linear in the rows per device
(weights, optimizer and gradient buffers are fixed, activations grow with rows), so the two compiles give
``peak(r) = fixed + r * per_row``; the largest ``r`` with ``peak(r) <= usable`` is then compiled once more to check it
(and stepped down if XLA's number at that size is over). Reported as global rows per microbatch (``r * data *
fsdp``); set ``train.grad_accum_steps = train.batch_size / that``.

**CPU vs. GPU/TPU** (printed with every plan): the compiled program is XLA:CPU's. The arguments (params, optimizer
state, batch) are exact for any backend. Temporaries are not: XLA:CPU computes bf16 matmuls and elementwise ops in
fp32 (so bf16 activations count about twice), fuses less than XLA:GPU/TPU (more intermediates materialised), and
schedules collectives differently (how many FSDP all-gathered layers are alive at once). Expect GPU/TPU temporaries
to be smaller for bf16 compute; treat the CPU number as an upper bound for activations, and run this module on the
target backend (same API, real devices, still nothing allocated) for the exact figure.

The text report is :func:`format_plan`: its lines starting with ``verdict:`` are the machine-checkable summary; the
last line says how far the numbers carry to other backends.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from alert_jax.io import loader
from alert_jax.models import opt as opt_lib
from alert_jax.models.decode_weights import build_decode_weights
from alert_jax.models.sizes import OPTConfig, model_config_from
from alert_jax.parallel import param_sharding
from alert_jax.parallel import sharding as sharding_lib
from alert_jax.parallel.sharding import batch_shards
from alert_jax.train import state as state_lib
from alert_jax.train import step as step_lib

GiB = 2**30
DEFAULT_USABLE_FRACTION = 0.75

def per_device_bytes(tree: Any) -> int:
    """Bytes one device holds of a tree of ``ShapeDtypeStruct`` / arrays with shardings (the largest shard;
    leaves without a sharding count whole)."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = tuple(np.shape(leaf))
        s = getattr(leaf, "sharding", None)
        if s is not None:
            shape = tuple(s.shard_shape(shape))
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return int(total)


@dataclasses.dataclass(frozen=True)
class CompiledMemory:
    """Per-device bytes of one compiled program, from ``compiled.memory_analysis()``."""

    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    generated_code_bytes: int
    compile_seconds: float

    @property
    def peak_bytes(self) -> int:
        """Arguments + outputs that do not reuse (alias) an argument + temporaries."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

    @classmethod
    def from_compiled(cls, compiled: Any, seconds: float) -> CompiledMemory:
        m = compiled.memory_analysis()
        if m is None:
            raise RuntimeError("this backend's compiled.memory_analysis() returned None; cannot plan memory")
        return cls(
            argument_bytes=int(m.argument_size_in_bytes),
            output_bytes=int(m.output_size_in_bytes),
            alias_bytes=int(m.alias_size_in_bytes),
            temp_bytes=int(m.temp_size_in_bytes),
            generated_code_bytes=int(m.generated_code_size_in_bytes),
            compile_seconds=float(seconds),
        )


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """The train step of ``batch_size`` rows x ``seq_len`` tokens in ``grad_accum_steps`` microbatches."""

    batch_size: int
    grad_accum_steps: int
    seq_len: int
    params_bytes: int  # analytic, per device
    opt_state_bytes: int  # analytic, per device
    grads_bytes: int  # analytic: fp32 accumulator, per device
    batch_bytes: int  # analytic: the input batch, per device
    compiled: CompiledMemory

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum_steps

    @property
    def peak_bytes(self) -> int:
        return self.compiled.peak_bytes

    @property
    def activations_bytes(self) -> int:
        """Temporaries other than the gradient accumulator (activations, microbatch gradients, gathered weights)."""
        return max(self.compiled.temp_bytes - self.grads_bytes, 0)


@dataclasses.dataclass(frozen=True)
class DecodePlan:
    """One ``decode_batch`` call (prefill + while loop of 1-token steps) of ``batch_size`` prompts."""

    batch_size: int
    prompt_len: int
    max_new_tokens: int
    dtype: str  # compute
    params_bytes: int  # analytic, per device (decode weights)
    kv_cache_bytes: int  # analytic, per device
    compiled: CompiledMemory
    param_dtype: str = ""  # stored weights ('' = dtype)

    @property
    def peak_bytes(self) -> int:
        return self.compiled.peak_bytes


@dataclasses.dataclass(frozen=True)
class MicroBatchFit:
    """Result of :func:`search_micro_batch` (rows are global rows per microbatch)."""

    points: tuple[tuple[int, int], ...]  # (global rows per microbatch, compiled peak bytes per device)
    fixed_bytes: float  # intercept of the linear fit (per device)
    bytes_per_row: float  # slope per global row (per device)
    usable_bytes: int
    max_micro_batch: int  # 0 = not even one row per device fits
    verified: bool  # the compiled peak at max_micro_batch was checked to be <= usable_bytes
    rows_step: int  # data x fsdp: micro-batches are multiples of it
    max_rows: int | None = None  # the search's upper bound (the global batch), None = unbounded

    def accumulation_for(self, batch_size: int) -> int | None:
        """Fewest ``grad_accum_steps`` whose microbatch (``batch_size / steps``, a multiple of ``rows_step``) is
        at most ``max_micro_batch``; None when none is."""
        for k in range(1, batch_size + 1):
            micro = batch_size // k
            if batch_size % k == 0 and micro % self.rows_step == 0 and micro <= self.max_micro_batch:
                return k
        return None


@dataclasses.dataclass
class MemoryPlan:
    size: str
    model: OPTConfig
    mesh_shape: dict[str, int]
    platform: str
    device_memory: int | None
    usable_fraction: float
    train: TrainPlan | None = None
    train_error: str | None = None
    decode: DecodePlan | None = None
    decode_error: str | None = None
    fit: MicroBatchFit | None = None
    fit_error: str | None = None
    train_planned: bool = True  # False: an evaluation config, decoding only (apps/plan_eval.py)
    # (TrainPlan, compiled executable, abstract state) of the configured train step (launch/plan.py --measure runs it).
    train_program: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def usable_bytes(self) -> int | None:
        return None if self.device_memory is None else int(self.device_memory * self.usable_fraction)

    @property
    def train_fits(self) -> bool | None:
        if self.train is None or self.usable_bytes is None:
            return None
        return self.train.peak_bytes <= self.usable_bytes

    @property
    def decode_fits(self) -> bool | None:
        if self.decode is None or self.usable_bytes is None:
            return None
        return self.decode.peak_bytes <= self.usable_bytes

    def report(self) -> str:
        return format_plan(self)


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------


def _compile_measured(jitted: Any, args: Sequence[Any], mesh: Mesh) -> tuple[Any, CompiledMemory]:
    """``jitted.lower(*args).compile()`` under ``mesh`` and the logical-axis rules; returns the executable and its
    :class:`CompiledMemory` (``compile_seconds`` = wall time of lowering + compiling)."""
    t0 = time.perf_counter()
    with sharding_lib.use_mesh(mesh):
        compiled = jitted.lower(*args).compile()
    return compiled, CompiledMemory.from_compiled(compiled, time.perf_counter() - t0)


def abstract_batch(mesh: Mesh, batch_size: int, seq_len: int) -> dict[str, jax.ShapeDtypeStruct]:
    """The train step's batch as ``ShapeDtypeStruct`` s ``[batch_size, seq_len]`` sharded with ``batch_sharding``."""
    bs = sharding_lib.batch_sharding(mesh)
    return {
        name: jax.ShapeDtypeStruct((batch_size, seq_len), jnp.float32 if name == "loss_mask" else jnp.int32,
                                   sharding=bs)
        for name in step_lib.BATCH_FIELDS
    }


def compile_train_step(
    model_config: OPTConfig,
    mesh: Mesh,
    tx: optax.GradientTransformation,
    *,
    batch_size: int,
    seq_len: int,
    grad_accum_steps: int = 1,
) -> tuple[TrainPlan, Any, Any]:
    """Compiles ``make_train_step`` for ``[batch_size, seq_len]`` batches on ``mesh`` from abstract inputs.

    Returns ``(TrainPlan, compiled executable, abstract TrainState with shardings)``. Raises what lowering or
    compiling raises (e.g. a batch that does not split over the mesh)."""
    if batch_size % grad_accum_steps:
        raise ValueError(f"train.batch_size={batch_size} is not divisible by train.grad_accum_steps={grad_accum_steps}")
    micro = batch_size // grad_accum_steps
    if micro % batch_shards(mesh):
        raise ValueError(
            f"a microbatch of {micro} rows (train.batch_size / train.grad_accum_steps) does not split over "
            f"data x fsdp = {batch_shards(mesh)} devices"
        )
    parts, _ = opt_lib.split_model(opt_lib.abstract_model(model_config))
    shardings = state_lib.state_shardings(parts, tx, mesh)
    state = state_lib.abstract_state(parts, tx, shardings)
    batch = abstract_batch(mesh, batch_size, seq_len)
    train_step = step_lib.make_train_step(parts, tx, mesh, shardings, grad_accum_steps=grad_accum_steps)
    compiled, mem = _compile_measured(train_step.jitted, (state, batch), mesh)
    grads = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, jnp.float32, sharding=p.sharding), state.params)
    train_plan = TrainPlan(
        batch_size=batch_size,
        grad_accum_steps=grad_accum_steps,
        seq_len=seq_len,
        params_bytes=per_device_bytes(state.params),
        opt_state_bytes=per_device_bytes(state.opt_state),
        grads_bytes=per_device_bytes(grads),
        batch_bytes=per_device_bytes(batch),
        compiled=mem,
    )
    return train_plan, compiled, state


def plan_train_step(
    model_config: OPTConfig, mesh: Mesh, tx: optax.GradientTransformation, **step_shape: int
) -> TrainPlan:
    """Per-device memory of the train step; nothing is allocated. ``step_shape`` are :func:`compile_train_step`'s
    keyword arguments (``batch_size``, ``seq_len``, optional ``grad_accum_steps``)."""
    return compile_train_step(model_config, mesh, tx, **step_shape)[0]


def abstract_sharded_model(model_config: OPTConfig, mesh: Mesh) -> tuple[Any, Any]:
    """``(graphdef, state)`` of an OPT whose leaves are ``ShapeDtypeStruct`` s carrying the rule-table shardings."""
    parts, _ = opt_lib.split_model(opt_lib.abstract_model(model_config))
    params = param_sharding.abstract_with_shardings(parts.abstract_params(), parts.shardings(mesh))
    return nnx.split(parts.build(params))


def decode_program(graphdef: Any, max_new_tokens: int, mesh: Mesh, per_layer: bool = True) -> Callable:
    """``fn(state, tokens, mask) -> DecodeResult``: the decoding weights (``build_decode_weights``, per layer unless
    ``per_layer=False``, as the evaluation's ``Generator`` holds them with ``eval.unstack_layers``) and
    ``eval.generate.decode_batch`` traced inside one ``jax.jit`` (its jitted program is inlined: prefill, KV cache,
    while loop of 1-token steps), greedy, with EOS id -1 (never produced) so every row runs all ``max_new_tokens``
    steps.

    Lower it under ``jax.set_mesh(mesh)``: ``decode_batch`` is called with ``mesh=None`` because it enters the mesh
    itself, which is not allowed inside ``jit``; the model's own constraints (activations, ``init_cache``) still
    shard the cache over the mesh, only decode_batch's extra per-step cache constraint and replicated outputs are
    left to XLA's propagation."""
    from alert_jax.eval import generate

    del mesh  # entered by the caller (see above)
    options = generate.DecodeOptions(max_new_tokens=max_new_tokens, eos_id=-1)

    def fn(state, tokens, mask):
        model = nnx.merge(graphdef, state)
        weights = build_decode_weights(model.layers.stored(), model.config.runtime.dtype, per_layer=per_layer)
        return generate.decode_batch((graphdef, state), weights, tokens, mask, options)

    return jax.jit(fn)


def plan_decode(
    model_config: OPTConfig,
    mesh: Mesh,
    *,
    batch_size: int,
    prompt_len: int,
    max_new_tokens: int,
    dtype: str = "bfloat16",
    param_dtype: str | None = None,
    per_layer: bool = True,
) -> DecodePlan:
    """Compiles one ``decode_batch`` program (compute ``dtype``, weights ``param_dtype`` or ``dtype``) from abstract
    inputs."""
    param_dtype = param_dtype or dtype
    cfg = model_config.replace(dtype=dtype, param_dtype=param_dtype, dropout=0.0, attention_dropout=0.0)
    if batch_size % batch_shards(mesh):
        raise ValueError(f"decode batch {batch_size} does not split over data x fsdp = {batch_shards(mesh)} devices")
    graphdef, state = abstract_sharded_model(cfg, mesh)
    bs = sharding_lib.batch_sharding(mesh)
    tokens = jax.ShapeDtypeStruct((batch_size, prompt_len), jnp.int32, sharding=bs)
    fn = decode_program(graphdef, max_new_tokens, mesh, per_layer=per_layer)
    _, mem = _compile_measured(fn, (state, tokens, tokens), mesh)
    max_len = prompt_len + max_new_tokens
    layer_shape = (batch_size, cfg.arch.num_heads, max_len, cfg.arch.head_dim)  # k and v of each layer
    sharding = sharding_lib.logical_sharding(mesh, opt_lib.KV_LAYER_AXES, layer_shape)
    layer_cache = jax.ShapeDtypeStruct(layer_shape, jnp.dtype(dtype), sharding=sharding)
    return DecodePlan(
        batch_size=batch_size,
        prompt_len=prompt_len,
        max_new_tokens=max_new_tokens,
        dtype=dtype,
        params_bytes=per_device_bytes(state),
        kv_cache_bytes=2 * cfg.arch.num_layers * per_device_bytes(layer_cache),
        compiled=mem,
        param_dtype=param_dtype,
    )


def search_micro_batch(
    model_config: OPTConfig,
    mesh: Mesh,
    tx: optax.GradientTransformation,
    *,
    seq_len: int,
    usable_bytes: int,
    max_rows: int | None = None,
    verify: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> MicroBatchFit:
    """Largest global micro-batch (at most ``max_rows``, e.g. the global batch) whose train step fits
    ``usable_bytes`` per device (module docstring: two compiles at 1 and 2 rows per device, linear extrapolation,
    then one checking compile at the answer)."""
    step = batch_shards(mesh)
    cap = max((max_rows or 0) // step, 1) if max_rows else None
    peaks: dict[int, int] = {}

    def peak_at(rows_per_device: int) -> int:
        if rows_per_device not in peaks:
            m = rows_per_device * step
            log(f"  compiling the train step at micro-batch {m} ({rows_per_device} row(s)/device, 2 microbatches)")
            p = plan_train_step(model_config, mesh, tx, batch_size=2 * m, seq_len=seq_len, grad_accum_steps=2)
            peaks[rows_per_device] = p.peak_bytes
        return peaks[rows_per_device]

    p1 = peak_at(1)
    if cap == 1 or p1 > usable_bytes:  # nothing to extrapolate: the answer is 1 row per device or none
        return MicroBatchFit(
            points=((step, p1),), fixed_bytes=float("nan"), bytes_per_row=float("nan"), usable_bytes=int(usable_bytes),
            max_micro_batch=step if p1 <= usable_bytes else 0, verified=True, rows_step=step, max_rows=max_rows,
        )
    p2 = peak_at(2)
    per_row_dev = float(p2 - p1)
    fixed = p1 - per_row_dev
    if p1 > usable_bytes:
        r = 0
    elif per_row_dev <= 0:
        r = 2
    else:
        r = max(int((usable_bytes - fixed) // per_row_dev), 1)
    if cap is not None and r > cap:
        r = cap
    verified = r in peaks and peaks[r] <= usable_bytes
    if verify and r > 0:
        for _ in range(3):
            if peak_at(r) <= usable_bytes:
                verified = True
                break
            over = peak_at(r) - usable_bytes
            r = max(r - max(int(math.ceil(over / max(per_row_dev, 1.0))), 1), 1)
            if r == 1:
                verified = peaks[1] <= usable_bytes
                break
    return MicroBatchFit(
        points=tuple((k * step, v) for k, v in sorted(peaks.items())),
        fixed_bytes=fixed,
        bytes_per_row=per_row_dev / step,
        usable_bytes=int(usable_bytes),
        max_micro_batch=r * step,
        verified=bool(verified),
        rows_step=step,
        max_rows=max_rows,
    )


# ----------------------------------------------------------------------------------------------------------------
# Whole plan from an app config
# ----------------------------------------------------------------------------------------------------------------


def default_optimizer(cfg: Any | None = None) -> optax.GradientTransformation:
    """The app's optimizer (``train.optimizer.make_optimizer(cfg)``) when ``cfg`` has an ``optimizer`` section,
    else AdamW with fp32 moments and global-norm clipping (same state shapes as the default config)."""
    if cfg is not None and "optimizer" in cfg and "train" in cfg:
        from alert_jax.train import optimizer as optimizer_lib

        return optimizer_lib.make_optimizer(cfg)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, b1=0.9, b2=0.95, mu_dtype=jnp.float32))


def error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) < 600 else text[:600] + " ..."


def plan(
    cfg: Any,
    mesh: Mesh,
    *,
    device_memory: int | None = None,
    usable_fraction: float = DEFAULT_USABLE_FRACTION,
    batch_size: int | None = None,
    grad_accum_steps: int | None = None,
    seq_len: int | None = None,
    search: bool = True,
    decode: bool = True,
    decode_batch: int | None = None,
    decode_prompt_len: int | None = None,
    decode_new_tokens: int | None = None,
    decode_dtype: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> MemoryPlan:
    """Plans an app config (``configs/finetune.py`` style: ``model``, ``data.seq_len``, ``train.batch_size``,
    ``train.grad_accum_steps``, ``optimizer``) on ``mesh``: the train step, the micro-batch search and one decode
    call of ``decode_batch`` (default 8) rows, ``decode_new_tokens`` (default 128) in ``decode_dtype`` (default
    bfloat16). Each part that fails to lower/compile (e.g. host memory for the compile itself, an indivisible batch)
    is caught and recorded as ``*_error``; the others still run. Evaluation configs: ``apps.plan_eval``."""
    model_config = loader.resolve_config(str(cfg.init_from), model_config_from(cfg))
    train_cfg = cfg.get("train", None) if hasattr(cfg, "get") else None
    seq_len = int(seq_len or cfg.data.seq_len)
    batch_size = int(batch_size or (train_cfg.batch_size if train_cfg is not None else batch_shards(mesh)))
    if grad_accum_steps is None:
        grad_accum_steps = int(train_cfg.grad_accum_steps) if train_cfg is not None else 1
    if seq_len > model_config.arch.max_position_embeddings:
        raise ValueError(
            f"data.seq_len={seq_len} exceeds model max_position_embeddings={model_config.arch.max_position_embeddings}"
        )
    result = MemoryPlan(
        size=str(cfg.model.size),
        model=model_config,
        mesh_shape={k: int(v) for k, v in mesh.shape.items()},
        platform=mesh.devices.flat[0].platform,
        device_memory=device_memory,
        usable_fraction=usable_fraction,
    )
    tx = default_optimizer(cfg)
    log(f"compiling the train step: batch {batch_size} x {seq_len} tokens, {grad_accum_steps} microbatch(es)")
    try:
        result.train_program = compile_train_step(
            model_config, mesh, tx, batch_size=batch_size, seq_len=seq_len, grad_accum_steps=grad_accum_steps
        )
        result.train = result.train_program[0]
        log(f"  compiled in {result.train.compiled.compile_seconds:.1f}s")
    except Exception as e:  # noqa: BLE001  (reported, not fatal: the other parts still plan)
        result.train_error = error_text(e)
    if search and result.usable_bytes is not None:
        log("searching the largest micro-batch (linear fit of two compiles, then a check)")
        try:
            result.fit = search_micro_batch(
                model_config, mesh, tx, seq_len=seq_len, usable_bytes=result.usable_bytes, max_rows=batch_size, log=log
            )
        except Exception as e:  # noqa: BLE001
            result.fit_error = error_text(e)
    if decode:
        shards = batch_shards(mesh)
        b = -(-int(decode_batch or 8) // shards) * shards  # rounded up to data x fsdp
        max_pos = model_config.arch.max_position_embeddings
        new = min(int(decode_new_tokens or 128), max_pos // 2)
        prompt = int(decode_prompt_len or max_pos - new)
        if prompt + new > max_pos:
            raise ValueError(f"decode prompt {prompt} + {new} new tokens exceeds max_position_embeddings={max_pos}")
        log(f"compiling decode: batch {b}, prompt {prompt} + {new} new tokens, {decode_dtype or 'bfloat16'} weights")
        try:
            result.decode = plan_decode(model_config, mesh, batch_size=b, prompt_len=prompt, max_new_tokens=new,
                                        dtype=decode_dtype or "bfloat16")
        except Exception as e:  # noqa: BLE001
            result.decode_error = error_text(e)
    return result


# ----------------------------------------------------------------------------------------------------------------
# The text report
# ----------------------------------------------------------------------------------------------------------------

CPU_NOTE = (
    "note: compiled for {platform}; arguments (params, optimizer state, batch) are exact for any backend, but "
    "temporaries/activations are XLA:{platform_upper}'s: XLA:CPU runs bf16 math in fp32 (bf16 activations count ~2x), "
    "fuses less and schedules FSDP all-gathers differently, so GPU/TPU activations are usually smaller; for exact "
    "numbers run launch/plan.py on the target backend."
)

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}


def parse_bytes(text: str | int | float) -> int:
    """``'80GiB'`` -> 85899345920; ``'141GB'`` / ``'141e9'`` / ``'16G'`` (decimal) also accepted."""
    if isinstance(text, (int, float)):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read a memory size from {text!r}; use e.g. 80GiB, 141GB, 16e9")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def format_bytes(n: float | None) -> str:
    """``n`` bytes as ``'1.50 GiB'`` / MiB / KiB (2 decimals) or ``'12 B'``; ``'n/a'`` for None."""
    if n is None:
        return "n/a"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _pct(n: int, usable: int | None) -> str:
    return "" if not usable else f" ({100.0 * n / usable:.0f}% of usable)"


def format_plan(p: MemoryPlan) -> str:
    """Human-readable report; the lines starting with ``verdict:`` are the machine-checkable summary."""
    mesh = ",".join(f"{k}:{v}" for k, v in p.mesh_shape.items())
    n_dev = math.prod(p.mesh_shape.values())
    c = p.model
    usable = p.usable_bytes
    lines = [
        f"plan: opt-{p.size} on mesh {mesh} ({n_dev} {p.platform} device(s)); model dtype {c.runtime.dtype}, params "
        f"{c.runtime.param_dtype}, remat {c.runtime.remat_policy}, attention {c.runtime.attention_impl}",
    ]
    if p.device_memory is not None:
        lines.append(
            f"device memory {format_bytes(p.device_memory)} x usable fraction {p.usable_fraction:g} = "
            f"{format_bytes(usable)} usable per device"
        )
    lines.append("per device:")
    if p.train is not None:
        t, m = p.train, p.train.compiled
        lines += [
            f"  train step: batch {t.batch_size} x {t.seq_len} tokens in {t.grad_accum_steps} microbatch(es) of "
            f"{t.micro_batch} rows (compiled in {m.compile_seconds:.1f}s)",
            f"    params            {format_bytes(t.params_bytes):>12}   (analytic, shard shapes x dtype)",
            f"    optimizer state   {format_bytes(t.opt_state_bytes):>12}   (analytic)",
            f"    gradients         {format_bytes(t.grads_bytes):>12}   (analytic: fp32 accumulator; part of temp)",
            f"    batch             {format_bytes(t.batch_bytes):>12}   (analytic)",
            f"    compiled: arguments {format_bytes(m.argument_bytes)}, outputs {format_bytes(m.output_bytes)}, "
            f"aliased (donated) {format_bytes(m.alias_bytes)}, temp {format_bytes(m.temp_bytes)}",
            f"    activations & other temporaries {format_bytes(t.activations_bytes)} (temp - gradients)",
            f"    peak = arguments + outputs - aliased + temp = {format_bytes(t.peak_bytes)}"
            f"{_pct(t.peak_bytes, usable)}",
        ]
        if usable is not None:
            word = "FITS" if p.train_fits else "DOES NOT FIT"
            lines.append(f"verdict: train step {word}: peak {format_bytes(t.peak_bytes)} vs {format_bytes(usable)} "
                         "usable")
    elif not p.train_planned:
        lines.append("  train step: not planned (an evaluation config: decoding only)")
    else:
        lines.append(f"verdict: train step CANNOT BE COMPILED HERE: {p.train_error}")
    if p.fit is not None:
        f = p.fit
        pts = ", ".join(f"{r} rows -> {format_bytes(b)}" for r, b in f.points)
        if f.max_micro_batch:
            whole = f.max_rows and f.max_micro_batch >= f.max_rows
            capped = " = the whole batch (search capped there)" if whole else ""
            lines.append(
                f"verdict: largest micro-batch that fits: {f.max_micro_batch} rows ({f.max_micro_batch // f.rows_step}"
                f" per device){capped}{'' if f.verified else ' (extrapolated, not verified)'}"
            )
            if p.train is not None:
                k = f.accumulation_for(p.train.batch_size)
                lines.append(
                    f"  for train.batch_size={p.train.batch_size}: "
                    + (f"train.grad_accum_steps={k} (microbatch {p.train.batch_size // k})" if k else
                       "no divisor of the batch fits; change train.batch_size")
                )
            fit_text = (
                "" if math.isnan(f.bytes_per_row) else
                f"; linear fit {format_bytes(f.fixed_bytes)} + {format_bytes(f.bytes_per_row)} per global row"
            )
            lines.append(f"  method: compiled peaks {pts}{fit_text}")
        else:
            lines.append(
                f"verdict: largest micro-batch that fits: NONE (one row per device needs {format_bytes(f.points[0][1])}"
                f" > {format_bytes(f.usable_bytes)}): shard further (more fsdp/tensor), remat, or a smaller seq_len"
            )
    elif p.fit_error:
        lines.append(f"verdict: micro-batch search CANNOT BE COMPILED HERE: {p.fit_error}")
    if p.decode is not None:
        d, m = p.decode, p.decode.compiled
        lines += [
            f"  decode: batch {d.batch_size}, prompt {d.prompt_len} + {d.max_new_tokens} new tokens, "
            f"{d.param_dtype or d.dtype} weights, {d.dtype} compute (compiled in {m.compile_seconds:.1f}s)",
            f"    weights {format_bytes(d.params_bytes)}, KV cache {format_bytes(d.kv_cache_bytes)} (analytic); "
            f"compiled: arguments {format_bytes(m.argument_bytes)}, temp {format_bytes(m.temp_bytes)}, "
            f"peak {format_bytes(d.peak_bytes)}{_pct(d.peak_bytes, usable)}",
        ]
        if usable is not None:
            word = "FITS" if p.decode_fits else "DOES NOT FIT"
            lines.append(f"verdict: decode {word}: peak {format_bytes(d.peak_bytes)} vs {format_bytes(usable)} usable")
    elif p.decode_error:
        lines.append(f"verdict: decode CANNOT BE COMPILED HERE: {p.decode_error}")
    lines.append(CPU_NOTE.format(platform=p.platform, platform_upper=p.platform.upper()) if p.platform == "cpu" else
                 f"note: compiled for {p.platform}: these are the numbers XLA will allocate on this backend.")
    return "\n".join(lines)
