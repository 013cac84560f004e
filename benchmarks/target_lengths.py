"""Token lengths of the finetuning targets: how long must generation be for OPT-CoT to reach its answer?

For every rationale corpus found under ``--finetune_dir`` it formats each example as finetuning does
(``alert_jax.data.finetune.format_example``, ``cot`` and ``ft`` targets), counts the target's tokens with
``--tokenizer`` and prints per corpus and pooled: examples, median, 95th and 99th percentile and maximum (numpy
``percentile``, linear), and the share of targets that fit in ``eval.max_new_tokens`` of ``configs/evaluate.py``
(the count includes the closing ``So the answer is ...``). That default is the pooled CoT 99th percentile rounded up
to a power of two; corpora whose own 99th percentile is longer (MATH) are visible in the ``fits`` column and in
each evaluation's per-dataset count of rows that hit the limit (report.md).

Splits: ``train`` where the corpus folder has it, else every split on disk (the shared data holds only the dev and
test files of some corpora); the splits measured are printed.

OPT uses GPT-2's byte-level BPE, so any copy of GPT-2's ``vocab.json`` + ``merges.txt`` counts OPT tokens exactly (the
ids differ, the counts do not). A directory holding those two files and an ``alert_tokenizer.json`` naming GPT-2's
special token, ``{"kind": "bpe", "file": "vocab.json", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
"pad_token": "<|endoftext|>"}``, is a valid ``--tokenizer``; so is an OPT checkpoint's tokenizer folder.

    python benchmarks/target_lengths.py --finetune_dir=DIR --tokenizer=bpe:OPT_TOKENIZER_DIR
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from alert_jax.data import finetune
from alert_jax.data.examples import RationaleExample
from alert_jax.io.tokenizers import load_tokenizer
from configs import evaluate as evaluate_config

_FINETUNE_DIR = flags.DEFINE_string("finetune_dir", None, "folder holding one sub-folder per corpus", required=True)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "tokenizer spec (alert_jax.io.tokenizers.load_tokenizer)",
                                 required=True)
_CORPORA = flags.DEFINE_string("corpora", "all", "'all' or comma-separated names of finetune.CORPORA")

PERCENTILES = (50, 95, 99)


def length_summary(lengths: Sequence[int], budget: int) -> dict[str, float]:
    """``{"n", "p50", "p95", "p99", "max", "fits"}`` of ``lengths`` (numpy linear percentiles; ``fits``: percent of
    lengths <= ``budget``)."""
    a = np.asarray(lengths, dtype=np.float64)
    out = {"n": float(a.size), "max": float(a.max()), "fits": float(100.0 * np.mean(a <= budget))}
    out.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES))})
    return out


def suggested_max_new_tokens(p99: float) -> int:
    """The 99th percentile rounded up to a power of two (a decode length bucket)."""
    return 1 << max(0, math.ceil(math.log2(max(p99, 1.0))))


def target_lengths(examples: Sequence[RationaleExample], count_tokens: Callable[[str], int],
                   mode: str) -> list[int]:
    """Token count of each example's finetuning target under ``mode`` ('ft' or 'cot')."""
    return [count_tokens(finetune.format_example(ex, mode)[1]) for ex in examples]


def _splits_to_measure(name: str) -> list[str]:
    splits = finetune.available_splits(name, f"{_FINETUNE_DIR.value}/{name}")
    return ["train"] if "train" in splits else [s for s in splits if s != "validation"]


def main(argv: Sequence[str]) -> int:
    del argv
    tok = load_tokenizer(_TOKENIZER.value)
    names = finetune.CORPORA if _CORPORA.value == "all" else [n.strip() for n in _CORPORA.value.split(",")]
    budget = int(evaluate_config.get_config().eval.max_new_tokens)
    pooled: dict[str, list[int]] = {"cot": [], "ft": []}

    def row(name: str, splits: str, mode: str, s: dict[str, float]) -> str:
        return (f"{name:<12} {splits:<28} {mode:<4} {int(s['n']):>7} {s['p50']:>6.0f} {s['p95']:>6.0f} "
                f"{s['p99']:>6.0f} {s['max']:>6.0f} {s['fits']:>7.1f}%")

    print(f"{'corpus':<12} {'splits':<28} {'mode':<4} {'n':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6} "
          f"fits<={budget}")
    for name in names:
        try:
            splits = _splits_to_measure(name)
        except finetune.CorpusNotFoundError as e:
            print(f"{name:<12} skipped: {e}", file=sys.stderr)
            continue
        examples = [ex for s in splits for ex in finetune.read_corpus(name, f"{_FINETUNE_DIR.value}/{name}", s)]
        if not examples:
            print(f"{name:<12} skipped: no examples in splits {splits} under {_FINETUNE_DIR.value}/{name}",
                  file=sys.stderr)
            continue
        for mode in ("cot", "ft"):
            lengths = target_lengths(examples, lambda t: len(tok.encode(t)), mode)
            pooled[mode] += lengths
            print(row(name, ",".join(splits), mode, length_summary(lengths, budget)))
    if not pooled["cot"]:
        print(f"no corpus found under {_FINETUNE_DIR.value}", file=sys.stderr)
        return 1
    for mode in ("cot", "ft"):
        print(row("pooled", "", mode, length_summary(pooled[mode], budget)))
    p99 = length_summary(pooled["cot"], budget)["p99"]
    print(f"pooled CoT p99 = {p99:.1f} tokens -> suggested eval.max_new_tokens = {suggested_max_new_tokens(p99)} "
          f"(configs/evaluate.py: {budget})")
    return 0


if __name__ == "__main__":
    app.run(main)
