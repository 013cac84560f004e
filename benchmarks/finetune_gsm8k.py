"""Finetune a tiny OPT on GSM8K (CoT targets) on CPU and print the validation loss before and after.

    python benchmarks/finetune_gsm8k.py [--finetune_dir=DIR] [--steps=300] [--workdir=DIR]

The model is randomly initialised (2 layers, d=64, a 1024-piece SentencePiece tokenizer trained on the GSM8K training
texts), so "before" is the loss of an untrained model and the drop measures that the whole pipeline (GSM8K reader ->
CoT formatting -> packing -> sharded train step -> AdamW -> evaluation) learns. Validation = GSM8K's hash-holdout
split of the training file (never trained on). Also prints the training throughput of the run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_dir = os.environ.get("ALERT_JAX_FINETUNE_DIR") or str(REPO.parent / "shared" / "data" / "finetune")
    parser.add_argument("--finetune_dir", default=default_dir)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--eval_examples", type=int, default=200)
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    if not (pathlib.Path(args.finetune_dir) / "gsm8k").is_dir():
        sys.exit(f"GSM8K not found under {args.finetune_dir}/gsm8k (pass --finetune_dir or set ALERT_JAX_FINETUNE_DIR)")

    from alert_jax.train import loop
    from configs import finetune

    cfg = finetune.get_config("tiny,cot")
    cfg.data.corpus = "gsm8k"
    cfg.data.finetune_dir = args.finetune_dir
    cfg.data.seq_len = args.seq_len
    cfg.data.max_eval_examples = args.eval_examples
    cfg.data.pack_chunk_examples = 1024
    cfg.model.max_position_embeddings = max(args.seq_len, 128)  # GSM8K CoT examples are ~200 tokens
    cfg.train.batch_size = args.batch_size
    cfg.train.num_steps = args.steps
    cfg.train.log_every = max(args.steps // 10, 1)
    cfg.train.eval_every = max(args.steps // 3, 1)
    cfg.train.checkpoint_every = 0
    cfg.train.eval_at_start = True
    cfg.optimizer.learning_rate = 1e-3
    cfg.optimizer.warmup_steps = max(args.steps // 20, 1)
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="finetune_gsm8k_"))

    t0 = time.time()
    summary = loop.train_and_evaluate(cfg, workdir)
    wall = time.time() - t0
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    train = [r for r in records if r["kind"] == "train"]
    before, after = evals[0], evals[-1]
    steady = train[1:] or train  # the first record includes compilation
    tok_s = sum(r["target_tokens_per_s"] for r in steady) / len(steady)
    pad_s = sum(r["padded_tokens_per_s"] for r in steady) / len(steady)
    pack = sum(r["packing_efficiency"] for r in steady) / len(steady)
    mfu = sum(r["mfu"] for r in steady) / len(steady)
    print()
    print(f"GSM8K CoT finetuning of a tiny OPT ({args.steps} steps x {args.batch_size} x {args.seq_len} tokens, "
          f"wall {wall:.0f} s, workdir {workdir})")
    print(f"  validation loss  before {before['val_loss']:.4f} (ppl {before['val_ppl']:.1f})  ->  after "
          f"{after['val_loss']:.4f} (ppl {after['val_ppl']:.1f});  after/before loss ratio "
          f"{after['val_loss'] / before['val_loss']:.3f}")
    print(f"  training loss    first {train[0]['loss']:.4f} -> last {train[-1]['loss']:.4f}")
    print(f"  throughput       {tok_s:.0f} target tok/s, {pad_s:.0f} padded tok/s, packing efficiency "
          f"{100 * pack:.1f}%, MFU vs measured CPU matmul peak {100 * mfu:.1f}%")
    if not (after["val_loss"] < before["val_loss"] - 0.5 and math.isfinite(after["val_loss"])):
        sys.exit("validation loss did not drop clearly")
    del summary


if __name__ == "__main__":
    main()
