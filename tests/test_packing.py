"""Packing: layout of one example, truncation, property tests over random lengths, and GSM8K CoT packing efficiency."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from alert_jax.data import packing

BOS = EOS = 2
PAD = 1


def test_worked_example_from_docstring():
    a = packing.build_example([11, 12], [13], bos_id=BOS, eos_id=EOS, seq_len=8)
    b = packing.build_example([21], [22], bos_id=BOS, eos_id=EOS, seq_len=8)
    rows = packing.pack_examples([a, b], seq_len=8, pad_id=PAD).arrays
    expected = {
        "inputs": [2, 11, 12, 13, 2, 21, 22, 1],
        "targets": [11, 12, 13, 2, 21, 22, 2, 1],
        "segment_ids": [1, 1, 1, 1, 2, 2, 2, 0],
        "positions": [0, 1, 2, 3, 0, 1, 2, 0],
        "loss_mask": [0, 0, 1, 1, 0, 1, 1, 0],
    }
    for name, want in expected.items():
        np.testing.assert_array_equal(rows[name], [want], err_msg=name)
    assert rows["loss_mask"].dtype == np.float32 and rows["inputs"].dtype == np.int32


def test_truncation_cuts_prompt_from_left_then_target_from_right():
    ex = packing.build_example(list(range(10, 20)), [30, 31], bos_id=BOS, eos_id=EOS, seq_len=5)
    np.testing.assert_array_equal(ex["inputs"], [BOS, 18, 19, 30, 31])  # bos kept, oldest prompt tokens dropped
    np.testing.assert_array_equal(ex["targets"], [18, 19, 30, 31, EOS])
    np.testing.assert_array_equal(ex["loss_mask"], [0, 0, 1, 1, 1])
    assert int(ex["truncated"]) == 8
    ex = packing.build_example([10], list(range(30, 40)), bos_id=BOS, eos_id=EOS, seq_len=5)
    np.testing.assert_array_equal(ex["inputs"], [BOS, 30, 31, 32, 33])
    np.testing.assert_array_equal(ex["targets"], [30, 31, 32, 33, 34])  # no eos: the target was cut
    assert int(ex["truncated"]) > 0
    ok = packing.build_example([10], [12], bos_id=BOS, eos_id=EOS, seq_len=3)  # B 10 12 E: exactly 3 columns
    assert len(ok["inputs"]) == 3 and int(ok["truncated"]) == 0


def test_loss_on_prompt_and_bos_never_a_target():
    ex = packing.build_example([10, 11], [12], bos_id=BOS, eos_id=EOS, seq_len=8, loss_on_prompt=True)
    np.testing.assert_array_equal(ex["loss_mask"], [1, 1, 1, 1])
    np.testing.assert_array_equal(ex["targets"], [10, 11, 12, EOS])


def test_no_packing_puts_one_example_per_row():
    exs = [packing.build_example([10] * n, [20], bos_id=BOS, eos_id=EOS, seq_len=16) for n in (1, 2, 3)]
    rows = packing.pack_examples(exs, seq_len=16, pad_id=PAD, max_open_rows=0)
    assert rows.num_rows == 3
    np.testing.assert_array_equal(rows.arrays["segment_ids"].max(axis=1), [1, 1, 1])


def test_too_long_example_is_an_error():
    ex = {"inputs": np.zeros(9, np.int32), "targets": np.zeros(9, np.int32), "loss_mask": np.zeros(9, np.float32)}
    with pytest.raises(ValueError, match="example 0 has 9 tokens"):
        packing.pack_examples([ex], seq_len=8, pad_id=PAD)


# ---------------------------------------------------------------------------------------------------------------------
# Property tests
# ---------------------------------------------------------------------------------------------------------------------

TARGET_MARK = 500  # token = 1000 * (example id + 1) + k (+ 500 for target tokens); never 1 or 2


def _reference_tokens(prompt: list[int], target: list[int], seq_len: int) -> list[int]:
    """Independent statement of the truncation rule: at most seq_len + 1 tokens survive."""
    full = [BOS] + prompt + target + [EOS]
    excess = len(full) - (seq_len + 1)
    if excess <= 0:
        return full
    if excess <= len(prompt):
        return [BOS] + prompt[excess:] + target + [EOS]
    return ([BOS] + target + [EOS])[: seq_len + 1]


def _random_examples(rng: np.random.Generator, n: int, seq_len: int):
    raw, built = [], []
    for i in range(n):
        base = 1000 * (i + 1)
        p_len = int(rng.integers(0, seq_len + 4))
        t_len = int(rng.integers(0, max(2, seq_len // 2)))
        if rng.random() < 0.05:  # a few whose target alone is too long
            t_len = seq_len + int(rng.integers(0, 3))
        prompt = [base + k for k in range(p_len)]
        target = [base + TARGET_MARK + k for k in range(t_len)]
        raw.append((prompt, target))
        built.append(packing.build_example(prompt, target, bos_id=BOS, eos_id=EOS, seq_len=seq_len))
    return raw, built


@pytest.mark.parametrize("seq_len", [8, 37, 128])
@pytest.mark.parametrize("max_open_rows", [None, 1, 3, 64])
def test_packing_properties(seq_len, max_open_rows):
    rng = np.random.default_rng(seq_len * 7 + (max_open_rows or 0))
    raw, built = _random_examples(rng, 300, seq_len)
    packed = packing.pack_examples(built, seq_len=seq_len, pad_id=PAD, max_open_rows=max_open_rows)
    a = packed.arrays
    rows = packed.num_rows
    for name in packing.ROW_FIELDS:
        assert a[name].shape == (rows, seq_len), name

    # (row, segment) -> example, from the packer's bookkeeping; checked against the tokens below where possible.
    where = {(int(r), int(s)): i for i, (r, s) in enumerate(zip(packed.example_row, packed.example_segment))}
    seen = collections.Counter()
    expected_truncated = 0
    for prompt, target in raw:
        expected_truncated += len([BOS] + prompt + target + [EOS]) - 1 > seq_len
    for r in range(rows):
        seg = a["segment_ids"][r]
        real = seg > 0
        n_real = int(real.sum())
        # Segments are contiguous blocks 1, 2, ... from column 0; padding only after them.
        assert real[:n_real].all() and not real[n_real:].any()
        pad = ~real
        assert (a["inputs"][r][pad] == PAD).all() and (a["targets"][r][pad] == PAD).all()
        assert (a["positions"][r][pad] == 0).all() and (a["loss_mask"][r][pad] == 0).all()
        ids = seg[:n_real]
        assert (np.diff(ids) >= 0).all() and (np.diff(ids) <= 1).all() and (n_real == 0 or ids[0] == 1)
        for s in range(1, int(ids.max(initial=0)) + 1):
            cols = np.flatnonzero(seg == s)
            inputs, targets = a["inputs"][r][cols], a["targets"][r][cols]
            tokens = [int(t) for t in inputs] + [int(targets[-1])]
            np.testing.assert_array_equal(inputs[1:], targets[:-1])  # targets are inputs shifted by one
            assert tokens[0] == BOS
            np.testing.assert_array_equal(a["positions"][r][cols], np.arange(len(cols)))
            ex_id = where[(r, s)]
            if len(tokens) > 2 or tokens[1] != EOS:  # has a content token, which names its example
                assert tokens[1] // 1000 - 1 == ex_id
            prompt, target = raw[ex_id]
            # The whole (possibly truncated) example is here: no token lost, none from another example.
            assert tokens == _reference_tokens(prompt, target, seq_len), (r, s, ex_id)
            is_target = np.array([(t % 1000) >= TARGET_MARK for t in targets])
            is_target[-1] |= int(targets[-1]) == EOS
            np.testing.assert_array_equal(a["loss_mask"][r][cols], is_target.astype(np.float32))
            seen[ex_id] += 1
    assert seen == collections.Counter(range(len(raw)))  # every example exactly once, whole, in one row

    stats = packed.stats
    assert stats.rows == rows and stats.examples == len(raw)
    assert stats.tokens == sum(len(b["inputs"]) for b in built) == int((a["segment_ids"] > 0).sum())
    assert stats.capacity == rows * seq_len
    assert stats.truncated == expected_truncated > 0
    assert stats.efficiency == pytest.approx(stats.tokens / stats.capacity)
    if max_open_rows is not None:  # rows are closed only when full or when the window overflows
        assert rows <= len(raw)


def test_first_fit_uses_the_first_row_with_room():
    lengths = [5, 5, 3, 2, 1]  # seq_len 8: rows [5, 3], [5, 2, 1]
    exs = [{"inputs": np.full(n, 10, np.int32), "targets": np.full(n, 10, np.int32),
            "loss_mask": np.ones(n, np.float32)} for n in lengths]
    packed = packing.pack_examples(exs, seq_len=8, pad_id=PAD, max_open_rows=None)
    np.testing.assert_array_equal(packed.example_row, [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(packed.example_offset, [0, 0, 5, 5, 7])
    np.testing.assert_array_equal(packed.row_tokens, [8, 8])


# ---------------------------------------------------------------------------------------------------------------------
# GSM8K CoT efficiency with a real byte-level BPE
# ---------------------------------------------------------------------------------------------------------------------


class _HFTokenizer:
    """Adapter of a freshly trained `tokenizers` BPE to the project's Tokenizer protocol (OPT ids: pad 1, bos=eos 2).

    ``precompute`` encodes many texts at once (Rust, batched) so the per-text calls made by the pipeline are lookups.
    """

    def __init__(self, backend):
        self.backend = backend
        self.pad_id, self.bos_id, self.eos_id = 1, 2, 2
        self._cache: dict[str, list[int]] = {}

    def precompute(self, texts):
        texts = list(dict.fromkeys(texts))
        self._cache.update(zip(texts, (e.ids for e in self.backend.encode_batch(texts))))

    def encode(self, text, *, add_bos=False):
        ids = self._cache.get(text)
        ids = self.backend.encode(text).ids if ids is None else ids
        return ([self.bos_id] if add_bos else []) + list(ids)


def _train_bpe(texts):
    tokenizers = pytest.importorskip("tokenizers")
    backend = tokenizers.Tokenizer(tokenizers.models.BPE())
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=4096, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    assert backend.token_to_id("<pad>") == 1 and backend.token_to_id("</s>") == 2
    return _HFTokenizer(backend)


def test_gsm8k_cot_packing_efficiency(finetune_data_dir):
    finetune = pytest.importorskip("alert_jax.data.finetune", reason="data/finetune.py not available yet")
    from alert_jax.data import pipeline

    examples = finetune.read_corpus("gsm8k", finetune_data_dir / "gsm8k", "train")
    pairs = [finetune.format_example(ex, "cot") for ex in examples]
    assert len(pairs) > 5000
    tok = _train_bpe([p + t for p, t in pairs[::4]])
    tok.precompute([text for pair in pairs for text in pair])
    assert tok.encode(pairs[0][1]) == tok.backend.encode(pairs[0][1]).ids
    seq_len = 2048
    built = [packing.tokenize_example(p, t, tok, seq_len) for p, t in pairs]
    stats = packing.pack_examples(built, seq_len=seq_len, pad_id=tok.pad_id).stats
    mean_len = stats.tokens / stats.examples
    print(f"\nGSM8K CoT ({stats.examples} examples, mean {mean_len:.0f} BPE tokens) into {seq_len}-token rows: {stats}")
    assert stats.examples == len(pairs) and stats.truncated == 0
    assert stats.efficiency >= 0.95

    # The same through the grain pipeline (chunked, checkpointable packing), one epoch.
    it = pipeline.make_train_iterator(pairs, tok, seq_len=seq_len, batch_size=8, seed=0, num_epochs=1,
                                      shard_index=0, shard_count=1, drop_remainder=False,
                                      num_threads=0)
    n_batches = sum(1 for _ in it)
    print(f"pipeline (chunks of {pipeline.DEFAULT_PACK_CHUNK_EXAMPLES} examples): {it.stats}; {n_batches} batches")
    assert it.stats.examples == len(pairs) and it.stats.tokens == stats.tokens
    assert it.stats.efficiency >= 0.95
