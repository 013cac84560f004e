"""Greedy decoding throughput of alert_jax vs. Hugging Face PyTorch ``generate``, in ONE run, same weights.

    python benchmarks/decode.py                                   # 125m shapes, batch 8, 128-token prompts, 64 new
    python benchmarks/decode.py --size=tiny --new_tokens=16       # quick check

What is timed (one warm-up call each, excluded; then ``--repeats`` timed calls, median and best reported):

* **alert_jax**: ``alert_jax.eval.generate.decode_batch`` = one jitted program: prefill of the ``[batch, prompt]``
  block into a preallocated KV cache, then a ``lax.while_loop`` of single-token steps; ``block_until_ready``. The
  decoding weights (``generate.prepare_weights``: per-layer buffers, output dims first on CPU as torch's ``Linear``
  stores them) are built once per model before timing, as ``eval.generate.Generator`` does.
* **HF torch**: ``OPTForCausalLM.generate(do_sample=False)`` with ``attention_mask``, under ``torch.inference_mode``.

Both generate exactly ``--new_tokens`` tokens per row (EOS disabled: ours with an end id no token can take, HF with
``min_new_tokens``), from the same random weights (ours initialised, copied into the torch model through
``convert.to_hf_state_dict``), fp32, on the CPU. Prompts: random ids, one row left-padded by a quarter of the length
so the masks matter. Tokens/s = ``batch * new_tokens / seconds`` (prefill included in the time).

Threads: torch is set to ``--threads`` (default: all cores); XLA's CPU client uses all cores. ``uptime`` load is
printed: on a shared machine the numbers move, the ratio less so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import load_avg, time_calls  # noqa: E402  (needs the path above)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="125m", help="model size from alert_jax/models/sizes.py")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt_len", type=int, default=128)
    p.add_argument("--new_tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", default="", help="also write the results to this file")
    args = p.parse_args(argv)

    import jax
    import numpy as np
    import torch
    import transformers
    from flax import nnx

    from alert_jax.eval import generate as gen_lib
    from alert_jax.io import convert
    from alert_jax.models import opt, sizes

    torch.set_num_threads(args.threads)
    config = sizes.get_model_config(args.size, dropout=0.0, attention_dropout=0.0)
    print(f"decode benchmark: size={args.size} batch={args.batch} prompt={args.prompt_len} new={args.new_tokens} "
          f"fp32 CPU, jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} "
          f"threads={args.threads}; load before: {load_avg()}", flush=True)

    model = opt.create_model(config, None, rngs_seed=0)
    hf = transformers.OPTForCausalLM(transformers.OPTConfig(**convert.hf_config_dict(config))).eval()
    state = {k: torch.from_numpy(np.array(v)) for k, v in convert.to_hf_state_dict(model).items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    hf.tie_weights()

    rng = np.random.default_rng(0)
    tokens = rng.integers(3, config.arch.vocab_size, (args.batch, args.prompt_len)).astype(np.int32)
    tokens[:, 0] = 2  # BOS
    mask = np.ones_like(tokens)
    pad = args.prompt_len // 4
    if args.batch > 1:
        tokens[1, :pad], mask[1, :pad] = 1, 0
        tokens[1, pad] = 2

    options = gen_lib.DecodeOptions(max_new_tokens=args.new_tokens, eos_id=-1, pad_id=1)
    split = nnx.split(model)
    weights = gen_lib.prepare_weights(split)  # the decoding weights, built once per model as eval's Generator does
    j_tokens, j_mask = jax.numpy.asarray(tokens), jax.numpy.asarray(mask)
    ours_out = {}

    def run_ours():
        res = gen_lib.decode_batch(split, weights, j_tokens, j_mask, options)
        jax.block_until_ready(res)
        ours_out["tokens"] = np.asarray(res.tokens)

    t_tokens, t_mask = torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))
    hf_out = {}

    def run_hf():
        with torch.inference_mode():
            out = hf.generate(input_ids=t_tokens, attention_mask=t_mask, do_sample=False,
                              max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=1,
                              eos_token_id=2)
        hf_out["tokens"] = out[:, args.prompt_len:].numpy()

    ours_t = time_calls(run_ours, args.repeats)  # one untimed warm-up call each (compiles for jax)
    hf_t = time_calls(run_hf, args.repeats)
    n = args.batch * args.new_tokens
    ours_tps, hf_tps = n / statistics.median(ours_t), n / statistics.median(hf_t)
    # Agreement of the first tokens (random weights have near-ties; fp32 rounding may flip one late in a row).
    first = int((ours_out["tokens"][:, 0] == hf_out["tokens"][:, 0]).sum())
    agree = float((ours_out["tokens"] == hf_out["tokens"]).mean())
    result = {
        "size": args.size, "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "alert_jax_tokens_per_s": round(ours_tps, 1), "hf_torch_tokens_per_s": round(hf_tps, 1),
        "ratio": round(ours_tps / hf_tps, 2),
        "alert_jax_seconds": [round(t, 3) for t in ours_t], "hf_torch_seconds": [round(t, 3) for t in hf_t],
        "first_token_agreement": f"{first}/{args.batch}", "token_agreement": round(agree, 3), "load_after": load_avg(),
    }
    print(f"alert_jax: {ours_tps:9.1f} tokens/s (median of {args.repeats}, best {n / min(ours_t):.1f})")
    print(f"HF torch:  {hf_tps:9.1f} tokens/s (median of {args.repeats}, best {n / min(hf_t):.1f})")
    print(f"ratio alert_jax / HF: {ours_tps / hf_tps:.2f}x   (first-token agreement {first}/{args.batch}, "
          f"all-token agreement {agree:.1%}; load after: {load_avg()})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
