"""KV-cache decoding (alert_jax/eval/generate.py) against transformers' PyTorch ``generate`` and against itself.

A tiny random HF ``OPTForCausalLM`` (weights with a large std so logits are well separated: argmax never hangs on
a float rounding) is saved with ``save_pretrained`` and loaded through ``convert.from_hf``; HF greedy ``generate``
with left padding and an attention mask is the independent reference.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_reference import random_hf_opt  # noqa: E402

from alert_jax.eval import generate as g  # noqa: E402
from alert_jax.eval import stops  # noqa: E402
from alert_jax.io import convert  # noqa: E402
from alert_jax.parallel.sharding import make_mesh  # noqa: E402

VOCAB = 128
PAD, EOS = 1, 2
NEW = 10
PROMPT_LENGTHS = (3, 9, 1, 14, 6, 20, 11, 4)
# Tests share one decode program where they can (same options, bucket and batch size hit the jit cache).
OPTS = g.DecodeOptions(max_new_tokens=NEW, eos_id=EOS, pad_id=PAD)
BUCKETS = (32,)


def _gen(model, options=OPTS, **kw):
    kw.setdefault("batch_size", 8)
    kw.setdefault("buckets", BUCKETS)
    return g.Generator(model, options, **kw)


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    model = random_hf_opt(
        0, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=32, do_layer_norm_before=True, dropout=0.0,
        attention_dropout=0.0, pad_token_id=PAD, bos_token_id=EOS, eos_token_id=EOS,
    )
    directory = tmp_path_factory.mktemp("hf_tiny")
    model.save_pretrained(directory)
    return model, directory


@pytest.fixture(scope="module")
def ours(hf_checkpoint):
    return convert.from_hf(hf_checkpoint[1])


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(1)
    return [[EOS] + rng.integers(3, VOCAB, n - 1).tolist() for n in PROMPT_LENGTHS]


def _hf_generate(model, prompts, eos_id: int) -> list[list[int]]:
    """HF greedy continuations (left padding + attention mask), cut before the first ``eos_id``."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=NEW, min_new_tokens=0,
            pad_token_id=PAD, eos_token_id=eos_id,
        )
    conts = []
    for row in out[:, width:].tolist():
        conts.append(row[: row.index(eos_id)] if eos_id in row else row)
    return conts


def test_greedy_matches_hf_generate(hf_checkpoint, ours, prompts):
    hf_model, _ = hf_checkpoint
    mine = _gen(ours).generate(prompts)
    ref = _hf_generate(hf_model, prompts, EOS)
    assert [m.tokens for m in mine] == ref
    # Same comparison with an end token the model actually produces, so rows end at different steps.
    counts = np.bincount([t for r in ref for t in r[1:]], minlength=VOCAB)
    eos = int(np.argmax(counts))
    mine = _gen(ours, g.DecodeOptions(max_new_tokens=NEW, eos_id=eos, pad_id=PAD)).generate(prompts)
    ref = _hf_generate(hf_model, prompts, eos)
    assert [m.tokens for m in mine] == ref
    finishes = {m.finish for m in mine}
    assert "eos" in finishes, "the chosen end token should end at least one row"
    assert all((m.finish == "eos") == (len(m.tokens) < NEW) for m in mine)


def test_batched_equals_unbatched(ours, prompts):
    batched = _gen(ours).generate(prompts)
    single = _gen(ours, batch_size=1)
    one_by_one = [single.generate([p])[0] for p in prompts]
    assert [b.tokens for b in batched] == [s.tokens for s in one_by_one]
    assert all(len(b.tokens) > 0 for b in batched)


def test_weights_sliced_per_step_give_the_same_tokens(ours, prompts):
    """``per_layer_weights=False`` (the stored stack sliced inside every step: less memory) decodes exactly like the
    default per-layer buffers."""
    per_layer = _gen(ours)
    per_step = _gen(ours, per_layer_weights=False)
    assert per_layer.weights.blocks is not None and per_step.weights.stacked is not None
    assert [a.tokens for a in per_step.generate(prompts)] == [b.tokens for b in per_layer.generate(prompts)]


@pytest.mark.parametrize("shape", [(2, 2, 2), (4, 1, 2)])
def test_sharded_equals_single_device(hf_checkpoint, ours, prompts, shape):
    mesh = make_mesh(shape)
    sharded = convert.from_hf(hf_checkpoint[1], mesh=mesh)
    q = sharded.layers.q_kernel[...]
    assert len(q.sharding.device_set) == 8 and not q.sharding.is_fully_replicated
    ref = _gen(ours).generate(prompts)
    out = _gen(sharded, mesh=mesh).generate(prompts)
    assert [o.tokens for o in out] == [r.tokens for r in ref]


def test_stop_sequences_end_rows(ours, prompts):
    base = _gen(ours).generate(prompts)
    row = next(r.tokens for r in base if len(r.tokens) == NEW)
    stop = (row[4], row[5])
    out = _gen(ours, g.DecodeOptions(max_new_tokens=NEW, stop_sequences=(stop,))).generate(prompts)
    for b, o in zip(base, out):
        t = b.tokens
        hit = next((i for i in range(1, len(t)) if (t[i - 1], t[i]) == stop), None)
        if hit is None:
            assert o.tokens == t and o.finish == b.finish
        else:  # the stop tokens are kept (string truncation happens post hoc)
            assert o.tokens == t[: hit + 1] and o.finish == "stop"
    assert any(o.finish == "stop" for o in out)


def test_filler_rows_do_not_keep_the_loop_running(ours, prompts):
    """Row 0 is a real prompt, rows 1.. one-token fillers (as Generator pads short batches). Shape (8, 32) as the
    other tests, so no new compile."""
    tokens = np.full((8, BUCKETS[0]), PAD, np.int32)
    mask = np.zeros_like(tokens)
    tokens[0, -3:], mask[0, -3:], mask[1:, -1] = prompts[0][:3], 1, 1
    no_eos = g.DecodeOptions(max_new_tokens=NEW, eos_id=-1, pad_id=PAD)
    weights = g.prepare_weights(ours)
    free = np.asarray(g.decode_batch(ours, weights, tokens, mask, no_eos).tokens)
    # An end token that row 0 produces and the filler row never does.
    k, end = next((i, t) for i, t in enumerate(free[0]) if t not in free[1])
    opts = g.DecodeOptions(max_new_tokens=NEW, eos_id=int(end), pad_id=PAD)
    assert int(g.decode_batch(ours, weights, tokens, mask, opts).steps) == NEW  # the filler keeps decoding...
    res = g.decode_batch(ours, weights, tokens, mask, opts, active=np.arange(8) == 0)
    assert int(res.steps) == k + 1  # ...unless marked inactive
    assert np.asarray(res.tokens)[0, : int(res.lengths[0])].tolist() == free[0, :k].tolist()
    assert not np.asarray(res.lengths)[1:].any()


def test_sampling(ours, prompts):
    greedy = _gen(ours).generate(prompts)
    # A nucleus of probability ~0 keeps only the most likely token: sampling degenerates to greedy.
    nucleus = _gen(ours, g.DecodeOptions(max_new_tokens=NEW, temperature=1.0, top_p=1e-6)).generate(prompts)
    assert [n.tokens for n in nucleus] == [x.tokens for x in greedy]
    hot = g.DecodeOptions(max_new_tokens=NEW, temperature=5.0, top_p=0.999)  # same program as the one above
    a = _gen(ours, hot, seed=3).generate(prompts)
    b = _gen(ours, hot, seed=3).generate(prompts)
    assert [x.tokens for x in a] == [x.tokens for x in b]  # seeded
    assert [x.tokens for x in a] != [x.tokens for x in greedy]
    assert all(0 <= t < VOCAB for x in a for t in x.tokens)


def test_nucleus_filter_matches_numpy():
    logits = np.random.default_rng(0).normal(size=(4, 50)).astype(np.float32) * 3
    for top_p in (0.1, 0.5, 0.9):
        got = np.asarray(g._nucleus_filter(jax.numpy.asarray(logits), top_p))
        for row, out in zip(logits, got):
            order = np.argsort(-row)
            p = np.exp(row[order] - row.max())
            p /= p.sum()
            k = int(np.searchsorted(np.cumsum(p), top_p) + 1)  # smallest prefix with mass >= top_p
            keep = np.zeros(len(row), bool)
            keep[order[:k]] = True
            np.testing.assert_array_equal(np.isfinite(out), keep)


def test_one_compile_per_bucket(ours, prompts):
    # eos / pad / stop tokens are arrays, not compile-time constants: these settings share OPTS' program.
    opts = g.DecodeOptions(max_new_tokens=NEW, eos_id=5, pad_id=PAD, stop_sequences=((7, 7, 7), (9,)))
    fn = g.compiled_function(ours, opts)
    assert fn is g.compiled_function(ours, OPTS)
    gen = _gen(ours, opts, buckets=(8, 32))
    lengths = [2, 3, 5, 8, 9, 12, 16, 17, 20, 24, 6, 7, 4, 31, 30, 29, 28]  # 17 prompts: 2 buckets, 3 batches
    rng = np.random.default_rng(2)
    many = [rng.integers(3, VOCAB, n).tolist() for n in lengths]
    before = fn._cache_size()
    outs = gen.generate(many)
    assert len(outs) == len(lengths)
    assert gen.compiled_shapes == {(8, 8), (8, 32)}
    # 3 batches, 17 lengths, at most 2 new programs ((8, 32) may already be compiled by an earlier test).
    assert 1 <= fn._cache_size() - before <= 2
    # Results come back in input order: each equals the prompt decoded alone.
    for i in (0, 9, 13):
        assert outs[i] == gen.generate([many[i]])[0]


def test_host_helpers_and_errors(ours):
    assert g.default_buckets(100) == (16, 32, 48, 64, 96, 100)
    assert g.bucket_for(33, (16, 32, 48)) == 48
    with pytest.raises(ValueError, match="largest bucket 48"):
        g.bucket_for(49, (16, 32, 48))
    assert stops.truncate_at_stop(" yes\n\nInput: x", ["\n\n"]) == (" yes", True)
    assert stops.truncate_at_stop(" a\nb", ["\n\n", "b"]) == (" a\n", True)
    assert stops.truncate_at_stop("no stop", ["\n\n"]) == ("no stop", False)
    enc = {"\n\n": [50], "\n": [7]}
    assert stops.stop_token_sequences(["\n\n"], lambda s: enc[s]) == ((50,), (7, 7))
    gen = g.Generator(ours, g.DecodeOptions(max_new_tokens=NEW), batch_size=2)
    assert gen.max_prompt_len == 64 - NEW
    with pytest.raises(ValueError, match="prompt 1 has 60 tokens"):
        gen.generate([[2, 5], [5] * 60])
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        gen.generate([[]])
    with pytest.raises(ValueError, match="max_new_tokens"):
        g.DecodeOptions(max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        g.DecodeOptions(top_p=0.0)
