"""Training throughput of alert_jax vs. Hugging Face PyTorch OPT, and MFU vs. a matmul peak, all in ONE run.

    python benchmarks/train_step.py                       # 125m shapes, seq 512, batch 2, fp32, CPU
    python benchmarks/train_step.py --size=tiny --seq_len=128 --batch=4 --steps=5   # quick check

What is timed (warm-up steps excluded, then ``--steps`` timed steps each, median reported):

* **alert_jax**: one call of ``alert_jax.train.step.make_train_step`` (forward, backward, global-norm clip, AdamW
  update of fp32 params and moments; state donated), on one device, ``block_until_ready`` on the metrics.
* **HF torch**: ``transformers.OPTForCausalLM`` in train mode: forward, cross-entropy over the same ``[batch, seq]``
  targets, ``backward``, ``clip_grad_norm_(1.0)``, ``torch.optim.AdamW.step`` and ``zero_grad(set_to_none=True)``.

Both models have the same architecture (``--size`` from ``alert_jax/models/sizes.py``), dropout (0.1 on residual
branches, attention dropout 0.0 as in HF's released OPT configs; ``--dropout`` overrides both), dtype fp32, and one
unpacked segment per row. Tokens/s counts every ``batch * seq_len`` position of a step.

**MFU** = model FLOPs of a step (``alert_jax.train.flops.train_step_flops``: 6 x matmul params x tokens + causal-halved
attention term, formula in flops.py) / step time / measured peak. The peak is the best FLOP/s of jitted fp32 ``jnp``
matmuls measured in this run: square ``[n, n] @ [n, n]`` (n = 1024, 2048) and the model's own FFN shape
``[batch*seq, d] @ [d, ffn]``, whichever is fastest. Torch's MFU is quoted against the same peak.

Threads: jax's XLA CPU client uses all cores for its intra-op pool; torch uses ``torch.get_num_threads()``, set to
``--threads`` (default: ``os.cpu_count()``) so both use the same cores. Run it on a quiet machine: ``uptime`` load
is printed so a shared machine is visible in the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import load_avg, time_calls  # noqa: E402  (needs the path above)

# ---------------------------------------------------------------------------------------------------------------------
# Matmul peak
# ---------------------------------------------------------------------------------------------------------------------


def measure_peak(shapes: list[tuple[int, int, int]], repeats: int = 5) -> dict[str, float]:
    """Best FLOP/s of a jitted fp32 ``[m, k] @ [k, n]`` for each ``(m, k, n)`` in ``shapes`` (one device)."""
    from alert_jax.train import flops

    return {f"{m}x{k}x{n}": flops.measure_matmul_peak((m, k, n), repeats=repeats) for m, k, n in shapes}


# ---------------------------------------------------------------------------------------------------------------------
# alert_jax
# ---------------------------------------------------------------------------------------------------------------------


def _optimizer_config(num_steps: int):
    import ml_collections

    c = ml_collections.ConfigDict()
    c.train = ml_collections.ConfigDict({"num_steps": num_steps})
    c.optimizer = ml_collections.ConfigDict(
        dict(learning_rate=1e-4, warmup_steps=0, end_lr_fraction=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
             weight_decay_mask="matrices", clip_norm=1.0, moment_dtype="float32")
    )
    return c


def bench_jax(
    config: Any, tokens, targets, warmup: int, steps: int, dropout_rng_impl: str = "threefry2x32"
) -> list[float]:
    """Times ``make_train_step`` on one device for ``[batch, seq]`` int32 ``tokens``/``targets`` (numpy)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from alert_jax.models.opt import create_model, split_model
    from alert_jax.parallel.sharding import make_mesh
    from alert_jax.train import optimizer
    from alert_jax.train import state as state_lib
    from alert_jax.train import step as step_lib

    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    cfg = _optimizer_config(warmup + steps + 1)
    model = create_model(config, mesh, rngs_seed=0)
    parts, params = split_model(model)
    del model
    tx = optimizer.make_optimizer(cfg)
    shardings = state_lib.state_shardings(parts, tx, mesh)
    state = state_lib.create_train_state(params, tx, shardings, seed=0)
    del params
    train_step = step_lib.make_train_step(parts, tx, mesh, shardings, schedule=optimizer.make_schedule(cfg),
                                          dropout_rng_impl=dropout_rng_impl)
    b, s = tokens.shape
    batch = {
        "inputs": jnp.asarray(tokens, jnp.int32),
        "targets": jnp.asarray(targets, jnp.int32),
        "segment_ids": jnp.ones((b, s), jnp.int32),
        "positions": jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s)),
        "loss_mask": jnp.ones((b, s), jnp.float32),
    }
    batch = jax.device_put(batch, step_lib.batch_sharding(mesh))
    holder = {"state": state}
    losses = []

    def one() -> None:
        holder["state"], metrics = train_step(holder["state"], batch)
        losses.append(float(jax.block_until_ready(metrics["loss"])))

    times = time_calls(one, steps, warmup=warmup, label="alert_jax")
    if not np.all(np.isfinite(losses)):
        raise RuntimeError(f"alert_jax losses are not finite: {losses}")
    print(f"  alert_jax losses: {', '.join(f'{x:.3f}' for x in losses)}", flush=True)
    return times


# ---------------------------------------------------------------------------------------------------------------------
# HF torch
# ---------------------------------------------------------------------------------------------------------------------


def bench_torch(config: Any, tokens, targets, warmup: int, steps: int, threads: int) -> list[float]:
    """Times HF ``OPTForCausalLM`` + ``torch.optim.AdamW`` training steps on the same shapes (fp32, CPU)."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    hf_config = transformers.OPTConfig(
        vocab_size=config.arch.vocab_size, hidden_size=config.arch.hidden_size, num_hidden_layers=config.arch.num_layers,
        ffn_dim=config.arch.ffn_dim, num_attention_heads=config.arch.num_heads,
        max_position_embeddings=config.arch.max_position_embeddings, word_embed_proj_dim=config.arch.embed_dim,
        do_layer_norm_before=config.arch.do_layer_norm_before, dropout=config.runtime.dropout,
        attention_dropout=config.runtime.attention_dropout, activation_function="relu", enable_bias=True,
        layer_norm_elementwise_affine=True, tie_word_embeddings=True, pad_token_id=1, bos_token_id=2, eos_token_id=2,
    )
    model = transformers.OPTForCausalLM(hf_config).to(torch.float32)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    x = torch.as_tensor(tokens, dtype=torch.long)
    y = torch.as_tensor(targets, dtype=torch.long)
    mask = torch.ones_like(x)
    losses = []

    def one() -> None:
        logits = model(input_ids=x, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))

    times = time_calls(one, steps, warmup=warmup, label="HF torch")
    print(f"  HF torch losses: {', '.join(f'{x:.3f}' for x in losses)}", flush=True)
    return times


# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="125m", help="model size from alert_jax/models/sizes.py")
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation, allocator warm-up)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per implementation")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    p.add_argument("--dropout", type=float, default=None, help="override dropout and attention dropout")
    p.add_argument("--dropout_rng_impl", default="threefry2x32",
                   help="alert_jax's dropout-mask PRNG (train.dropout_rng_impl): threefry2x32 (the config default), "
                        "rbg or unsafe_rbg")
    p.add_argument("--remat_policy", default=None,
                   help="model.remat_policy (default: the model config's default, alert_jax.models.sizes.OPTConfig)")
    p.add_argument("--skip_torch", action="store_true")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    args = p.parse_args(argv)

    import jax
    import numpy as np

    from alert_jax.models.sizes import get_model_config
    from alert_jax.train import flops

    overrides: dict[str, Any] = {"dtype": "float32", "param_dtype": "float32", "attention_impl": "xla",
                                 "attention_dropout": 0.0}
    if args.remat_policy is not None:
        overrides["remat_policy"] = args.remat_policy
    if args.dropout is not None:
        overrides.update(dropout=args.dropout, attention_dropout=args.dropout)
    config = get_model_config(args.size, **overrides)
    if args.seq_len > config.arch.max_position_embeddings:
        raise SystemExit(f"--seq_len={args.seq_len} exceeds {args.size}'s max_position_embeddings")
    b, s = args.batch, args.seq_len
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, config.arch.vocab_size, size=(b, s), dtype=np.int32)
    targets = np.roll(tokens, -1, axis=1)

    print(f"== train-step benchmark: OPT-{args.size} shapes (d={config.arch.hidden_size}, layers={config.arch.num_layers}, "
          f"vocab={config.arch.vocab_size}), batch {b} x seq {s}, fp32, dropout {config.runtime.dropout}/{config.runtime.attention_dropout}")
    print(f"   jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.device_count()} device(s)); "
          f"cpu_count={os.cpu_count()}; load avg {load_avg()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
          f"dropout PRNG {args.dropout_rng_impl}; remat {config.runtime.remat_policy}", flush=True)

    shapes = [(1024, 1024, 1024), (2048, 2048, 2048), (b * s, config.arch.hidden_size, config.arch.ffn_dim)]
    peaks = measure_peak(shapes)
    peak = max(peaks.values())
    print("   matmul peak (fp32, jitted jnp): " + ", ".join(f"{k}: {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()),
          flush=True)

    flops = flops.train_step_flops(config, b, s)
    jax_times = bench_jax(config, tokens, targets, args.warmup, args.steps, args.dropout_rng_impl)
    torch_times = None
    torch_version = None
    if not args.skip_torch:
        import torch

        torch_version = torch.__version__
        torch_times = bench_torch(config, tokens, targets, args.warmup, args.steps, args.threads)

    def row(name: str, times: list[float]) -> dict[str, float]:
        t = statistics.median(times)
        return {"name": name, "step_s": t, "min_step_s": min(times), "tokens_per_s": b * s / t,
                "gflops_per_s": flops / t / 1e9, "mfu": flops / t / peak}

    rows = [row("alert_jax (jit, XLA CPU)", jax_times)]
    if torch_times is not None:
        rows.append(row(f"HF torch {torch_version} (eager, {args.threads} threads)", torch_times))
    print()
    print(f"model FLOPs per step: {flops / 1e9:.1f} GFLOP (flops.train_step_flops); measured peak {peak / 1e9:.1f} "
          f"GFLOP/s; load avg now {load_avg()}")
    print(f"| {'implementation':<40} | {'step s (median)':>15} | {'tokens/s':>9} | {'GFLOP/s':>8} | "
          f"{'MFU vs peak':>11} |")
    print("|" + "-" * 42 + "|" + "-" * 17 + ":|" + "-" * 10 + ":|" + "-" * 9 + ":|" + "-" * 12 + ":|")
    for r in rows:
        print(f"| {r['name']:<40} | {r['step_s']:>15.3f} | {r['tokens_per_s']:>9.1f} | {r['gflops_per_s']:>8.1f} | "
              f"{100 * r['mfu']:>10.1f}% |")
    result: dict[str, Any] = {"size": args.size, "batch": b, "seq_len": s, "peak_flops": peak, "peaks": peaks,
                              "step_flops": flops, "rows": rows, "load_avg": load_avg(),
                              "config": dataclasses.asdict(config)}
    if torch_times is not None:
        ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
        result["ratio_vs_torch"] = ratio
        verdict = "met" if ratio >= 1 else "MISSED"
        print(f"\nalert_jax / HF torch tokens/s ratio: {ratio:.2f} (target >= 1.0: {verdict})")
    mfu = rows[0]["mfu"]
    verdict = "met" if mfu >= 0.5 else "MISSED"
    print(f"alert_jax MFU vs measured matmul peak: {100 * mfu:.1f}% (target >= 50%: {verdict})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
