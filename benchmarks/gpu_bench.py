"""One-GPU benchmark of alert_jax: matmul/bandwidth ceilings, OPT-1.3B training steps, KV-cache decoding.

    PYTHONPATH=. python3 benchmarks/gpu_bench.py --out=$OUT            # on the GPU (benchmarks/gpu.sh runs this)
    PYTHONPATH=. python benchmarks/gpu_bench.py --smoke --out=/tmp/gb  # CPU dry run of every code path (tiny sizes)

Phases (each under its own time budget and try/except; results are written after every measurement to
``OUT/gpu_bench.json`` and a readable ``OUT/gpu_bench.txt`` by ``benchmarks/gpu_results.py``, so a crash or timeout
keeps what was measured):

1. **ceilings** -- bf16 ``jnp.dot`` of ``[n, n] @ [n, n]`` (n = 8192) on random data, 3 input pairs rotated, ``reps``
   products enqueued back to back then one ``block_until_ready`` (hides launch gaps); FLOP/s = 2 n^3 reps / time.
   Device bandwidth: ``x * c`` over a 1 GiB fp32 array and ``jnp.copy`` (bytes read + bytes written per time).
2. **train** -- OPT-1.3B shapes, seq 2048, fp32 master weights and Adam moments, bf16 compute
   (``model.dtype=bfloat16``, ``param_dtype=float32``), dropout 0.1 / attention dropout 0.0 (cuDNN flash attention
   has no attention dropout; HF's released configs use 0.0), global batch 8 sequences (``make_train_step``; one
   variant in microbatches of 4, grad accumulation by ``lax.scan``). Sweep, most informative first: remat policy
   (save_dots / none / full) x attention (cudnn / xla) x dropout PRNG (unsafe_rbg / threefry2x32); a configuration
   that runs out of memory is reported and retried once with half the microbatch. Each is compiled ahead of time (compile time reported separately), then
   ``warmup`` + ``steps`` steps are timed with ``block_until_ready`` on the metrics; the median is reported as
   tokens/s and MFU = ``flops.train_step_flops`` (6 x matmul params x tokens + causal-halved attention; no remat
   recompute) / time / 989e12 (H100/H200 dense bf16 peak, ``flops.PEAK_FLOPS_BF16``), and also / the matmul peak
   measured in phase 1. XLA's compiled memory (``memory_analysis``) and the allocator's peak are recorded, to
   compare with ``launch/plan.py``.
3. **decode** -- the same architecture with bf16 weights, ``eval.generate.decode_batch`` (prefill + while loop) of
   128-token random prompts + 128 new tokens (EOS disabled so every row runs all steps) at batch 1, 32, 128:
   end-to-end generated tokens/s. The 1-token ``OPT.decode`` step is timed too, as ``reps`` steps in one jitted
   ``fori_loop`` (no per-step dispatch; cache of 256 columns, 128 and more filled; fastest of up to 3 timed calls),
   with per-layer decoding weights built once per call (``unstack=1``: ``decode_weights.build_decode_weights``, what
   the evaluation's ``Generator`` holds) or the stored stack sliced inside every step (``unstack=0``:
   ``eval.unstack_layers=False``); the end-to-end calls get the weights built once beforehand, as the Generator
   does, and
   compared with the HBM roofline: (weight bytes + KV-cache bytes read per step) / measured bandwidth. The implementation reads the whole
   preallocated cache every step (masked), so both the whole-cache and the filled-columns-only rooflines are given.

Random weights throughout (no downloads). Nothing here imports grain, tensorflow_datasets or ml_collections' apps;
``alert_jax.train`` needs ``ml_collections`` (configs + optimizer): when it is not installed a minimal stand-in is
used and the run says so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import types
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.gpu_results import Results, is_oom, summary  # noqa: E402

H100_H200_PEAK = 989e12


# ----------------------------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------------------------


def ensure_ml_collections() -> str:
    """alert_jax.train (optimizer) and configs/ import ml_collections; where it is missing (the GPU image), install
    a minimal stand-in with the part of ``ConfigDict`` those modules use (attribute access, items, in)."""
    try:
        import ml_collections  # noqa: F401

        return "installed"
    except ImportError:
        pass

    class ConfigDict(dict):
        def __init__(self, initial=None, **kw):
            super().__init__()
            for k, v in dict(initial or {}, **kw).items():
                self[k] = ConfigDict(v) if isinstance(v, dict) and not isinstance(v, ConfigDict) else v

        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError as e:
                raise AttributeError(name) from e

        def __setattr__(self, name, value):
            self[name] = value

    mod = types.ModuleType("ml_collections")
    mod.ConfigDict = ConfigDict  # type: ignore[attr-defined]
    mod.FrozenConfigDict = ConfigDict  # type: ignore[attr-defined]
    sys.modules["ml_collections"] = mod
    return "stand-in (ml_collections not installed)"


@contextlib.contextmanager
def _trace(out: pathlib.Path, name: str):
    """Profiles the block with ``jax.profiler`` and keeps its Perfetto trace as ``OUT/<name>_trace.json.gz``."""
    import jax

    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"trace_{name}_"))
    with jax.profiler.trace(str(tmp), create_perfetto_trace=True):
        yield
    found = sorted(tmp.rglob("perfetto_trace.json.gz"))
    if found:
        shutil.copy(found[-1], out / f"{name}_trace.json.gz")
    shutil.rmtree(tmp, ignore_errors=True)


def _block(x: Any) -> Any:
    import jax

    return jax.block_until_ready(x)


# ----------------------------------------------------------------------------------------------------------------
# Phase 1: ceilings
# ----------------------------------------------------------------------------------------------------------------


def bench_ceilings(res: Results, n: int, reps: int, bw_bytes: int) -> None:
    import jax
    import jax.numpy as jnp

    c = res.data["ceilings"]
    keys = jax.random.split(jax.random.PRNGKey(1), 6)
    pairs = [
        (jax.random.normal(keys[2 * i], (n, n), jnp.bfloat16), jax.random.normal(keys[2 * i + 1], (n, n), jnp.bfloat16))
        for i in range(3)
    ]
    dot = jax.jit(jnp.dot)
    for a, b in pairs:
        _block(dot(a, b))
    trials = []
    for _ in range(3):  # reps products enqueued back to back (one stream: they run in order), one sync at the end
        t0 = time.perf_counter()
        for i in range(reps):
            y = dot(*pairs[i % 3])
        _block(y)
        trials.append(2.0 * n**3 * reps / (time.perf_counter() - t0))
        del y
    c.update(matmul_n=n, matmul_reps=reps, matmul_trials=len(trials), matmul_tflops=max(trials) / 1e12,
             matmul_tflops_all=[t / 1e12 for t in trials])
    print(f"[ceilings] bf16 matmul {n}^3: {max(trials) / 1e12:.1f} TFLOP/s (trials {[round(t / 1e12) for t in trials]})",
          flush=True)
    res.save()
    del pairs

    elems = bw_bytes // 4
    x = jax.random.normal(keys[0], (elems,), jnp.float32)
    scale = jax.jit(lambda v: v * 1.0001)
    copy = jax.jit(jnp.copy)
    for name, fn in (("scale", scale), ("copy", copy)):
        _block(fn(x))
        best = 0.0
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(reps):
                y = fn(x)
            _block(y)
            best = max(best, 2.0 * elems * 4 * reps / (time.perf_counter() - t0))
            del y
        c[f"{name}_gbs"] = best / 1e9
    c["bandwidth_bytes"] = elems * 4
    c["bandwidth_gbs"] = max(c["scale_gbs"], c["copy_gbs"])
    print(f"[ceilings] device bandwidth (read+write): scale {c['scale_gbs']:.0f} GB/s, copy {c['copy_gbs']:.0f} GB/s",
          flush=True)
    res.save()


# ----------------------------------------------------------------------------------------------------------------
# Phase 2: training
# ----------------------------------------------------------------------------------------------------------------


def _random_batch(vocab: int, batch: int, seq: int, seed: int = 0) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "inputs": rng.integers(3, vocab, (batch, seq), dtype=np.int32),
        "targets": rng.integers(3, vocab, (batch, seq), dtype=np.int32),
        "segment_ids": np.ones((batch, seq), np.int32),
        "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (batch, seq)).copy(),
        "loss_mask": np.ones((batch, seq), np.float32),
    }


def _memory_stats() -> dict[str, Any]:
    import jax

    try:
        return jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001
        return {}


def bench_train(res: Results, args: argparse.Namespace) -> None:
    import jax
    import numpy as np

    from alert_jax.models.opt import abstract_model, create_model, split_model
    from alert_jax.models.sizes import get_model_config
    from alert_jax.parallel.sharding import batch_sharding, make_mesh, use_mesh
    from alert_jax.train import flops
    from alert_jax.train import optimizer as optimizer_lib
    from alert_jax.train import state as state_lib
    from alert_jax.train import step as step_lib
    from configs import finetune

    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    cfg = finetune.get_config(f"{args.train_size},cot")
    cfg.train.num_steps = 1000
    tx = optimizer_lib.make_optimizer(cfg)
    batch_np = _random_batch(get_model_config(args.train_size).arch.vocab_size, args.train_batch, args.train_seq)
    bsh = batch_sharding(mesh)
    batch = {k: jax.device_put(v, bsh) for k, v in batch_np.items()}
    matmul_peak = res.data["ceilings"].get("matmul_tflops")
    state = None
    costs: list[float] = []  # seconds each finished configuration took (compile + steps)

    def make_config(remat: str, attention: str):
        return get_model_config(
            args.train_size, dtype=args.train_dtype, param_dtype="float32", remat_policy=remat,
            attention_impl=attention, dropout=0.1, attention_dropout=0.0,
        )

    def new_state(model_config):
        model = create_model(model_config, mesh, rngs_seed=0)
        parts, params = split_model(model)
        del model
        shardings = state_lib.state_shardings(parts, tx, mesh)
        return state_lib.create_train_state(params, tx, shardings, seed=0)

    def state_alive(s) -> bool:
        return s is not None and not any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree.leaves(s))

    queue = list(args.train_variants)
    traced = False
    while queue:
        remat, attention, micro, rng_impl = queue.pop(0)
        rec: dict[str, Any] = {"remat": remat, "attention": attention, "micro_batch": micro, "dropout_rng": rng_impl,
                               "status": "running"}
        left = min(res.left() - args.reserve_decode_s, args.train_budget_s - (res.elapsed() - res.data["meta"]["train_start_s"]))
        if costs and left < min(costs):
            rec["status"] = f"skipped (time: {left:.0f}s left, one configuration takes ~{min(costs):.0f}s)"
            res.data["train"].append(rec)
            res.save()
            continue
        res.data["train"].append(rec)
        t_cfg = time.perf_counter()
        try:
            model_config = make_config(remat, attention)
            parts, _ = split_model(abstract_model(model_config))
            shardings = state_lib.state_shardings(parts, tx, mesh)
            if not state_alive(state):
                state = None
                state = new_state(model_config)
            accum = args.train_batch // micro
            train_step = step_lib.make_train_step(parts, tx, mesh, shardings, grad_accum_steps=accum,
                                                  dropout_rng_impl=rng_impl)
            t0 = time.perf_counter()
            with use_mesh(mesh):
                compiled = train_step.jitted.lower(state, batch).compile()
                rec["compile_s"] = time.perf_counter() - t0
                mem = compiled.memory_analysis()
                if mem is not None:
                    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
                            + mem.temp_size_in_bytes)
                    rec["xla_peak_gib"] = peak / 2**30
                    rec["xla_temp_gib"] = mem.temp_size_in_bytes / 2**30
                    limit = _memory_stats().get("bytes_limit")
                    if limit and peak > limit:  # running it would fail and can leave the allocator unusable
                        raise MemoryError(f"Out of memory: the compiled step needs {peak / 2**30:.1f} GiB, the "
                                          f"device allows {limit / 2**30:.1f} GiB (not run)")
                times = []
                for i in range(args.warmup + args.steps):
                    t0 = time.perf_counter()
                    state, metrics = compiled(state, batch)
                    loss = float(_block(metrics["loss"]))
                    if i >= args.warmup:
                        times.append(time.perf_counter() - t0)
                if args.trace and not traced:
                    (res.out / "train_hlo.txt").write_text(compiled.as_text())
                    with _trace(res.out, "train"):
                        for _ in range(2):
                            state, metrics = compiled(state, batch)
                            _block(metrics["loss"])
                    traced = True
            if not np.isfinite(loss):
                raise FloatingPointError(f"loss is {loss}")
            t = statistics.median(times)
            tokens = args.train_batch * args.train_seq
            tp = flops.throughput(model_config, batch_size=args.train_batch, seq_len=args.train_seq, step_time_s=t,
                                 num_devices=1, peak=H100_H200_PEAK)
            rec.update(
                step_ms=1e3 * t, step_ms_all=[1e3 * x for x in times], tokens_per_s=tokens / t,
                tflops=tp["tflops_per_device"], mfu_pct=100 * tp["mfu"], loss=loss,
                mfu_vs_matmul_pct=100 * tp["tflops_per_device"] / matmul_peak if matmul_peak else None,
                flops_per_step=flops.train_step_flops(model_config, args.train_batch, args.train_seq),
                grad_accum_steps=accum, status="ok",
            )
            stats = _memory_stats()
            if "peak_bytes_in_use" in stats:
                rec["allocator_peak_gib"] = stats["peak_bytes_in_use"] / 2**30
            print(f"[train] {remat}/{attention}/{rng_impl} micro {micro}: {1e3 * t:.0f} ms/step, {tokens / t:.0f} tokens/s, "
                  f"MFU {100 * tp['mfu']:.1f}% (compile {rec['compile_s']:.0f}s)", flush=True)
        except Exception as e:  # noqa: BLE001
            oom = is_oom(e)
            rec["status"] = ("OOM" if oom else "error") + f": {type(e).__name__}: {str(e)[:300]}"
            res.error(f"train {remat}/{attention}/{rng_impl}/micro{micro}", e)
            if oom and micro // 2 >= 1 and args.train_batch % (micro // 2) == 0 and args.retry_oom:
                queue.insert(0, (remat, attention, micro // 2, rng_impl))
            compiled = None
            if oom and not isinstance(e, MemoryError):  # a real device OOM: later allocations fail too
                for r, a, m, g in queue:
                    res.data["train"].append({"remat": r, "attention": a, "micro_batch": m, "dropout_rng": g,
                                              "status": "skipped (after a device OOM)"})
                queue.clear()
        if rec["status"] == "ok":
            costs.append(time.perf_counter() - t_cfg)
        res.save()
    del state, batch


# ----------------------------------------------------------------------------------------------------------------
# Phase 3: decoding
# ----------------------------------------------------------------------------------------------------------------


def bench_decode(res: Results, args: argparse.Namespace) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from alert_jax.eval import generate
    from alert_jax.models.decode_weights import build_decode_weights
    from alert_jax.models.opt import KVCache, abstract_model, create_model
    from alert_jax.models.sizes import get_model_config

    c = get_model_config(args.decode_size, dtype="bfloat16", param_dtype="bfloat16", dropout=0.0,
                         attention_dropout=0.0, attention_impl="xla")
    model = create_model(c, None, rngs_seed=0)
    _, state = nnx.split(model)
    del model
    graphdef = nnx.split(abstract_model(c))[0]
    weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    bw = res.data["ceilings"].get("bandwidth_gbs") or args.bandwidth_gbs
    prompt, new = args.decode_prompt, args.decode_new
    max_len = prompt + new
    base_options = generate.DecodeOptions(max_new_tokens=new, eos_id=-1)
    vocab = c.arch.vocab_size
    cache_elems_per_row = 2 * c.arch.num_layers * max_len * c.arch.hidden_size  # k and v, all columns

    reps = max(1, min(args.decode_step_reps, (new - 1) // 2))  # two calls of `reps` steps fit in the cache

    def steps_fn(unstack, st, tok, pos, cache):
        """``reps`` 1-token decode steps in one program (no per-step dispatch): ``tok``/``pos`` ``[B, 1]``; the
        decoding weights are built once per call, outside the steps."""
        model = nnx.merge(graphdef, st)
        seg = jnp.ones_like(tok)
        weights = build_decode_weights(model.layers.stored(), model.config.runtime.dtype, per_layer=bool(unstack))

        def body(i, carry):
            tok, cache = carry
            logits, cache = model.decode(tok, pos + i, seg, cache, weights)
            return jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)[:, None], cache

        tok, cache = jax.lax.fori_loop(0, reps, body, (tok, cache))
        return tok, cache

    steps_jit = jax.jit(steps_fn, static_argnums=(0,), donate_argnums=(4,))
    est_cost = None
    for b, unstack, e2e in args.decode_configs:
        rec: dict[str, Any] = {"batch": b, "unstack": unstack, "status": "running"}
        weights = generate.prepare_weights((graphdef, state), per_layer=bool(unstack))  # once, as the Generator
        if est_cost is not None and res.left() < est_cost:
            rec["status"] = f"skipped (time: {res.left():.0f}s left)"
            res.data["decode"].append(rec)
            res.save()
            continue
        res.data["decode"].append(rec)
        t_b = time.perf_counter()
        try:
            rng = np.random.default_rng(b)
            tokens = jnp.asarray(rng.integers(3, vocab, (b, prompt), dtype=np.int32))
            mask = jnp.ones((b, prompt), jnp.int32)
            if e2e:
                t0 = time.perf_counter()
                out = generate.decode_batch((graphdef, state), weights, tokens, mask, base_options)
                _block(out.tokens)
                rec["first_call_s"] = time.perf_counter() - t0  # compile + run
                times = []
                for _ in range(args.decode_reps):
                    t0 = time.perf_counter()
                    out = generate.decode_batch((graphdef, state), weights, tokens, mask, base_options)
                    _block(out.tokens)
                    times.append(time.perf_counter() - t0)
                t = statistics.median(times)
                steps = int(out.steps)
                rec.update(e2e_s=t, e2e_all=times, steps=steps, gen_tokens_per_s=b * steps / t)
                del out

            # one decode step at the middle of generation (cache of max_len columns, `prompt` filled)
            keys = jax.random.split(jax.random.PRNGKey(b), 2 * c.arch.num_layers)
            k, v = (tuple(jax.random.normal(keys[2 * i + j], (b, c.arch.num_heads, max_len, c.arch.head_dim), jnp.bfloat16)
                          for i in range(c.arch.num_layers)) for j in (0, 1))
            seg = jnp.zeros((b, max_len), jnp.int32).at[:, :prompt].set(1)
            pos = jnp.broadcast_to(jnp.arange(max_len, dtype=jnp.int32), (b, max_len)) * seg
            cache = KVCache(k=k, v=v, segment_ids=seg, positions=pos, index=jnp.asarray(prompt, jnp.int32))
            del k, v
            tok = jnp.asarray(rng.integers(3, vocab, (b, 1), dtype=np.int32))
            p = jnp.full((b, 1), prompt, jnp.int32)
            tok, cache = steps_jit(unstack, state, tok, p, cache)  # compile + warm-up: columns prompt .. prompt+reps-1
            _block(tok)
            calls = max(1, min(3, (new - 1) // reps - 1))
            step_times = []
            starts = _block([p + i * reps for i in range(1, calls + 1)])  # built outside the timed region
            for p_i in starts:  # timed: the next `reps` columns per call; the fastest call counts
                t0 = time.perf_counter()
                tok, cache = steps_jit(unstack, state, tok, p_i, cache)
                _block(tok)
                step_times.append((time.perf_counter() - t0) / reps)
            step_t = min(step_times)
            rec["step_ms_all"] = [1e3 * x for x in step_times]
            if args.trace:
                hlo = steps_jit.lower(graphdef, state, tok, starts[-1] + reps, cache).compile().as_text()
                (res.out / f"decode_b{b}_u{int(unstack)}_hlo.txt").write_text(hlo)
                with _trace(res.out, f"decode_b{b}_u{int(unstack)}"):
                    tok, cache = steps_jit(unstack, state, tok, starts[-1] + reps, cache)
                    _block(tok)
            whole = weight_bytes + b * cache_elems_per_row * 2
            filled = weight_bytes + b * 2 * c.arch.num_layers * (prompt + reps * (1 + calls / 2)) * c.arch.hidden_size * 2
            rec.update(step_ms=1e3 * step_t, weight_bytes=weight_bytes, kv_bytes_whole=whole - weight_bytes,
                       step_tokens_per_s=b / step_t)
            if bw:
                rec.update(
                    roofline_ms_whole_cache=1e3 * whole / (bw * 1e9),
                    roofline_ms_filled=1e3 * filled / (bw * 1e9),
                    roofline_pct=100 * (whole / (bw * 1e9)) / step_t,
                )
            rec["status"] = "ok"
            print(f"[decode] batch {b}, unstack {int(unstack)}: "
                  + (f"{rec['gen_tokens_per_s']:.0f} generated tokens/s end-to-end, " if e2e else "")
                  + f"step {1e3 * step_t:.2f} ms"
                  + (f" ({rec['roofline_pct']:.0f}% of the whole-cache roofline)" if bw else ""), flush=True)
            del cache, tok
        except Exception as e:  # noqa: BLE001
            rec["status"] = ("OOM" if is_oom(e) else "error") + f": {type(e).__name__}: {str(e)[:300]}"
            res.error(f"decode batch {b} unstack {int(unstack)}", e)
        est_cost = time.perf_counter() - t_b
        res.save()


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_bench_out"), help="results folder (default $OUT)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and few steps: a CPU dry run of every code path")
    p.add_argument("--budget_s", type=float, default=420.0, help="total time budget of this script")
    p.add_argument("--phases", default="ceilings,train,decode")
    p.add_argument("--train_variants", default="", dest="train_variants_arg",
                   help="comma-separated remat:attention:micro:dropout_rng, e.g. save_dots:cudnn:8:unsafe_rbg")
    p.add_argument("--decode_configs", default="", dest="decode_configs_arg", help="comma-separated batch:unstack(0|1):e2e(0|1), e.g. 1:1:1")
    p.add_argument("--bandwidth_gbs", type=float, default=None,
                   help="device bandwidth for the decode roofline when the ceilings phase is not run")
    p.add_argument("--trace", action="store_true",
                   help="also profile 2 train steps and one decode call per config (OUT/*_trace.json.gz, Perfetto) "
                        "and save their optimized HLO (OUT/*_hlo.txt)")
    args = p.parse_args(argv)
    if args.smoke:
        args.matmul_n, args.reps, args.bw_bytes = 256, 4, 1 << 22
        args.train_size, args.train_seq, args.train_batch = "tiny", 64, 4
        # cudnn: the error path on CPU
        args.train_variants = [("save_dots", "cudnn", 2, "unsafe_rbg"), ("full", "xla", 2, "threefry2x32")]
        args.warmup, args.steps = 1, 2
        args.decode_size, args.decode_prompt, args.decode_new = "tiny", 8, 8
        args.decode_configs, args.decode_reps, args.decode_step_reps = [(2, True, True), (2, False, False)], 1, 3
        args.train_budget_s, args.reserve_decode_s = 1e9, 0.0
    else:
        args.matmul_n, args.reps, args.bw_bytes = 8192, 20, 1 << 30
        args.train_size, args.train_seq, args.train_batch = "1.3b", 2048, 8
        args.train_variants = [  # (remat, attention, microbatch rows, dropout PRNG), most informative first
            ("save_dots", "cudnn", 8, "unsafe_rbg"), ("none", "cudnn", 8, "unsafe_rbg"),
            ("save_dots", "cudnn", 8, "threefry2x32"), ("save_dots", "xla", 8, "unsafe_rbg"),
            ("save_dots", "cudnn", 4, "unsafe_rbg"), ("full", "cudnn", 8, "unsafe_rbg"),
        ]
        args.warmup, args.steps = 2, 5
        args.decode_size, args.decode_prompt, args.decode_new = "1.3b", 128, 128
        # (batch, layer weights sliced once per call, also time end-to-end generation)
        args.decode_configs = [(1, True, True), (1, False, False), (32, True, True), (32, False, False), (128, True, True)]
        args.decode_reps, args.decode_step_reps = 2, 20
        args.train_budget_s, args.reserve_decode_s = 0.55 * args.budget_s, 150.0
    if args.train_variants_arg:
        args.train_variants = [(r, a, int(m), g) for r, a, m, g in (v.split(":") for v in args.train_variants_arg.split(","))]
    if args.decode_configs_arg:
        args.decode_configs = [(int(b), u == "1", e == "1")
                               for b, u, e in (v.split(":") for v in args.decode_configs_arg.split(","))]
    args.train_dtype = "bfloat16"
    args.retry_oom = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = Results(pathlib.Path(args.out), args.budget_s)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    meta = res.data["meta"]
    meta.update(smoke=args.smoke, budget_s=args.budget_s, ml_collections=ensure_ml_collections(),
                train_size=args.train_size, train_seq=args.train_seq, train_batch=args.train_batch,
                decode_size=args.decode_size, decode_prompt=args.decode_prompt, decode_new=args.decode_new)
    try:
        import flax
        import jax

        d = jax.devices()[0]
        meta.update(jax=jax.__version__, flax=flax.__version__, platform=d.platform,
                    device_kind=getattr(d, "device_kind", "?"), device_count=jax.device_count())
        print(f"jax {jax.__version__}, flax {flax.__version__}, {jax.device_count()} x {meta['device_kind']}; "
              f"ml_collections: {meta['ml_collections']}", flush=True)
    except Exception as e:  # noqa: BLE001
        res.error("setup", e)
        return 1
    res.save()
    if "ceilings" in phases:
        try:
            bench_ceilings(res, args.matmul_n, args.reps, args.bw_bytes)
        except Exception as e:  # noqa: BLE001
            res.error("ceilings", e)
    if "train" in phases:
        meta["train_start_s"] = res.elapsed()
        try:
            bench_train(res, args)
        except Exception as e:  # noqa: BLE001
            res.error("train", e)
    if "decode" in phases:
        try:
            bench_decode(res, args)
        except Exception as e:  # noqa: BLE001
            res.error("decode", e)
    res.save()
    print("\n" + summary(res.data), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
