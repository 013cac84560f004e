"""OPT model: sizes, sharding metadata, attention implementations, precision, KV cache, dropout, packing."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from alert_jax.models import decode_weights, opt
from alert_jax.models.sizes import SIZES, OPTConfig, get_model_config, model_config_from
from alert_jax.parallel.sharding import make_mesh

# Published parameter counts (OPT paper / metaseq model cards).
PUBLISHED = {
    "125m": 125.2e6,
    "350m": 331e6,
    "1.3b": 1.32e9,
    "2.7b": 2.65e9,
    "6.7b": 6.66e9,
    "13b": 12.9e9,
    "30b": 30.0e9,
    "66b": 65.7e9,
    "175b": 174.6e9,
}


def _expected_count(c: OPTConfig) -> int:
    """Parameter count by hand: per block 4 D^2 + 4 D (attention) + 2 D F + F + D (FFN) + 4 D (two LNs)."""
    D, F, E = c.arch.hidden_size, c.arch.ffn_dim, c.arch.word_embed_proj_dim or c.arch.hidden_size
    block = 4 * D * D + 4 * D + 2 * D * F + F + D + 4 * D
    total = c.arch.num_layers * block + c.arch.vocab_size * E + (c.arch.max_position_embeddings + 2) * D
    if E != D:
        total += 2 * E * D
    if c.arch.do_layer_norm_before:
        total += 2 * D
    return total


@functools.partial(jax.jit, static_argnums=(0, 5))
def _jit_forward(graphdef, state, tokens, positions, segment_ids, deterministic=True, key=None):
    return nnx.merge(graphdef, state)(tokens, positions, segment_ids, deterministic=deterministic, rngs=key)


def _logits(model, tokens, positions, segment_ids, deterministic=True, key=None) -> np.ndarray:
    graphdef, state = nnx.split(model)
    return np.asarray(_jit_forward(graphdef, state, tokens, positions, segment_ids, deterministic, key))


def _with(model: opt.OPT, **changes) -> opt.OPT:
    """Same weights, different runtime config."""
    graphdef, state = nnx.split(model)
    clone = nnx.merge(graphdef, state)
    clone.config = model.config.replace(**changes)
    return clone


TINY = get_model_config("tiny", dropout=0.0, attention_dropout=0.0)


@pytest.fixture(scope="module")
def tiny() -> opt.OPT:
    """Random tiny model filled from numpy (no init program to compile; create_model is tested on a mesh)."""
    graphdef, state = nnx.split(opt.abstract_model(TINY))
    rng = np.random.default_rng(1)

    def fill(path, var):
        name = str(path[-1])
        base = 1.0 if name.endswith("scale") else 0.0
        return var.replace(jnp.asarray(base + 0.05 * rng.standard_normal(var.shape), jnp.float32))

    return nnx.merge(graphdef, nnx.map_state(fill, state))


def _padded_batch(vocab: int):
    """``[6, 16]``: row 0 holds two packed segments (9 + 7 tokens), rows 4 and 5 hold those two segments alone
    (right-padded); row 1 is left-padded, row 2 right-padded, row 3 all padding."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, vocab, size=(6, 16)).astype(np.int32)
    seg = np.ones((6, 16), np.int32)
    seg[0, 9:] = 2
    seg[1, :5] = 0
    seg[2, 11:] = 0
    seg[3, :] = 0
    seg[4, 9:] = 0
    seg[5, 7:] = 0
    tokens[4, :9] = tokens[0, :9]
    tokens[5, :7] = tokens[0, 9:]
    pos = np.zeros_like(seg)
    for b in range(6):
        for s in set(seg[b]) - {0}:
            idx = np.nonzero(seg[b] == s)[0]
            pos[b, idx] = np.arange(len(idx))
    tokens[seg == 0] = 1
    return tokens, pos, seg


# ---------------------------------------------------------------------------------------------------------------


def test_param_counts_of_every_size_from_abstract_shapes():
    for name in SIZES:
        config = get_model_config(name)
        count = opt.count_params(config)
        assert count == _expected_count(config), name
        if name in PUBLISHED:
            assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 0.01, (name, count)
    leaves = jax.tree.leaves(nnx.state(opt.abstract_model(get_model_config("175b"))))
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # nothing allocated


def test_size_table_and_config_errors():
    assert SIZES["350m"].word_embed_proj_dim == 512 and not SIZES["350m"].do_layer_norm_before
    assert not SIZES["tiny-postln"].has_final_layer_norm and SIZES["tiny-postln"].has_projection
    with pytest.raises(ValueError, match="125m"):
        get_model_config("7b")
    with pytest.raises(ValueError, match="model.attention_impl"):
        get_model_config("tiny", attention_impl="flash")
    with pytest.raises(ValueError, match="model.remat_policy"):
        get_model_config("tiny", remat_policy="some")


def test_attention_dropout_defaults_to_zero_and_cudnn_refuses_it_up_front():
    assert get_model_config("13b").runtime.attention_dropout == 0.0  # OPT's released configs
    with pytest.raises(ValueError, match=r"model\.attention_impl='cudnn'.*model\.attention_dropout=0\.1"):
        get_model_config("tiny", attention_impl="cudnn", attention_dropout=0.1)
    get_model_config("tiny", attention_impl="cudnn")  # without attention dropout it is a valid setting
    get_model_config("tiny", attention_impl="auto", attention_dropout=0.1)  # auto runs XLA's attention then


def test_auto_attention_picks_cudnn_only_where_it_can_run(monkeypatch):
    from alert_jax.models.attention import resolve_impl

    bf16, f32 = jnp.zeros((1, 4, 2, 64), jnp.bfloat16), jnp.zeros((1, 4, 2, 64), jnp.float32)
    assert resolve_impl("xla", bf16, dropout_active=False, precision=None) == "xla"  # explicit choices stay
    if jax.default_backend() != "gpu":
        assert resolve_impl("auto", bf16, dropout_active=False, precision=None) == "xla"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_impl("auto", bf16, dropout_active=False, precision=None) == "cudnn"
    assert resolve_impl("auto", f32, dropout_active=False, precision=None) == "xla"  # fp32: no cuDNN kernel
    assert resolve_impl("auto", bf16, dropout_active=True, precision=None) == "xla"  # training with attn dropout
    assert resolve_impl("auto", bf16[..., :12], dropout_active=False, precision=None) == "xla"  # head dim 12
    assert resolve_impl("auto", bf16, dropout_active=False, precision=jax.lax.Precision.HIGHEST) == "xla"


def test_model_config_from_an_app_config():
    ml_collections = pytest.importorskip("ml_collections")  # absent on the GPU image benchmarks/gpu.sh runs on
    # The shape of configs/base.py's cfg.model (built here: configs/ is not an importable package in tests).
    cfg = ml_collections.ConfigDict()
    cfg.model = ml_collections.ConfigDict(
        dict(size="tiny-postln", dtype="bfloat16", param_dtype="float32", remat_policy="save_dots",
             attention_impl="xla", dropout=0.1, attention_dropout=0.1)
    )
    config = model_config_from(cfg)
    assert config.runtime.dtype == "bfloat16" and config.runtime.remat_policy == "save_dots" and config.arch.word_embed_proj_dim == 32


def test_every_param_has_logical_axes_and_fc1_is_sharded_on_a_2x2x2_mesh(tiny):
    config = get_model_config("tiny-postln")
    parts, _ = opt.split_model(opt.abstract_model(config))
    axes = {tuple(str(getattr(k, "key", k)) for k in p): tuple(n)
            for p, n in jax.tree_util.tree_flatten_with_path(parts.names, is_leaf=lambda x: isinstance(x, tuple))[0]}
    shapes = {tuple(map(str, p)): v.shape for p, v in nnx.to_flat_state(nnx.state(opt.abstract_model(config)))}
    assert axes.keys() == shapes.keys()
    for path, names in axes.items():
        assert len(names) == len(shapes[path]), path
    assert axes[("layers", "fc1_kernel")] == ("layers", "embed", "mlp")
    assert axes[("token_embedding",)] == ("vocab", "embed")

    if jax.device_count() < 8:
        pytest.skip(f"needs 8 devices (tests/conftest.py's fake CPU devices); jax.devices() is {jax.devices()}")
    mesh = make_mesh((2, 2, 2))
    model = opt.create_model(TINY, mesh, rngs_seed=1)
    fc1 = model.layers.fc1_kernel[...]
    assert fc1.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    assert fc1.addressable_shards[0].data.shape == (2, 32, 128)  # [layers, embed/2, mlp/2]
    assert model.token_embedding[...].sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    assert 0.015 < float(jnp.std(fc1)) < 0.025  # OPT's N(0, 0.02) init
    # The same weights on a mesh and on one device give the same logits.
    graphdef, state = nnx.split(model)
    tokens, pos, seg = _padded_batch(TINY.arch.vocab_size)
    with jax.set_mesh(mesh):
        tiny_parts, tiny_params = opt.split_model(tiny)
        sharded = tiny_parts.build(jax.device_put(tiny_params, tiny_parts.shardings(mesh)))
        assert sharded.layers.fc1_kernel[...].sharding.spec == fc1.sharding.spec
        sharded_logits = _logits(sharded, tokens, pos, seg)
    np.testing.assert_allclose(sharded_logits, _logits(tiny, tokens, pos, seg), atol=1e-5)


def test_attention_impls_agree_and_padding_rows_are_finite(tiny):
    tokens, pos, seg = _padded_batch(tiny.config.arch.vocab_size)
    xla = _logits(_with(tiny, attention_impl="xla"), tokens, pos, seg)
    ref = _logits(_with(tiny, attention_impl="reference"), tokens, pos, seg)
    assert np.isfinite(xla).all() and np.isfinite(ref).all()  # row 3 is all padding
    np.testing.assert_allclose(xla, ref, atol=1e-5, rtol=0)
    if jax.default_backend() != "gpu":  # 'auto' is XLA's attention off GPUs
        np.testing.assert_array_equal(_logits(_with(tiny, attention_impl="auto"), tokens, pos, seg), xla)
    # Packing: each segment of row 0 sees only itself, exactly as when it is alone in a row (rows 4, 5).
    np.testing.assert_allclose(xla[0, :9], xla[4, :9], atol=1e-5)
    np.testing.assert_allclose(xla[0, 9:], xla[5, :7], atol=1e-5)
    # Padding really is ignored: changing pad tokens changes nothing on real positions.
    other = np.where(seg == 0, 7, tokens).astype(np.int32)
    np.testing.assert_allclose(_logits(tiny, other, pos, seg)[seg != 0], xla[seg != 0], atol=1e-6)
    if jax.default_backend() != "gpu":
        with pytest.raises(ValueError, match=r"NVIDIA GPU.*model\.attention_impl"):
            _logits(_with(tiny, attention_impl="cudnn", dtype="bfloat16"), tokens, pos, seg)
    else:  # on a GPU (benchmarks/gpu.sh runs this file there): cuDNN keeps the packing/padding mask, to bf16 accuracy
        cudnn = _logits(_with(tiny, attention_impl="cudnn", dtype="bfloat16"), tokens, pos, seg)
        bf16 = _logits(_with(tiny, attention_impl="xla", dtype="bfloat16"), tokens, pos, seg)
        real = seg != 0
        scale = np.abs(xla[real]).max()
        assert np.abs(cudnn[real] - bf16[real]).max() < 2e-2 * scale
        np.testing.assert_allclose(cudnn[0, 9:], cudnn[5, :7], atol=2e-2 * scale)  # segment 2 alone == packed


def test_bfloat16_compute_matches_float32(tiny):
    # Larger weights than the 0.02 init so the logits have a scale worth comparing against.
    graphdef, state = nnx.split(tiny)
    model = nnx.merge(graphdef, jax.tree.map(lambda x: x * 2.0 if x.ndim > 1 else x, state))
    tokens, pos, seg = _padded_batch(model.config.arch.vocab_size)
    f32 = _logits(model, tokens, pos, seg)
    bf16 = _logits(_with(model, dtype="bfloat16"), tokens, pos, seg)  # xla: jax.nn.dot_product_attention
    bf16_ref = _logits(_with(model, dtype="bfloat16", attention_impl="reference"), tokens, pos, seg)
    assert bf16.dtype == np.float32 and model.layers.fc1_kernel[...].dtype == jnp.float32
    real = seg != 0
    scale = np.abs(f32[real]).max()
    assert scale > 0.5
    err = np.abs(bf16[real] - f32[real]).max() / scale
    assert 0 < err < 5e-2, err  # nonzero: bf16 really was used
    assert np.abs(bf16_ref[real] - f32[real]).max() / scale < 5e-2
    assert np.isfinite(bf16).all() and np.isfinite(bf16_ref).all()


@pytest.mark.parametrize("layout", ["stacked", "per_layer", "weight_first"])
def test_kv_cache_decode_matches_full_forward_on_left_padded_batch(tiny, layout):
    """Every form of decoding weights gives the full forward's logits: the stored stack sliced per step, per-layer
    buffers in this backend's layout, and the weight-first layout (built directly, so it is checked on any
    backend)."""
    B, L, prompt = 6, 16, 10  # same [6, 16] shape as the other tests: the full forward is compiled once
    rng = np.random.default_rng(1)
    tokens = rng.integers(3, tiny.config.arch.vocab_size, size=(B, L)).astype(np.int32)
    pad = np.array([0, 1, 4, 7, 9, 2])  # left padding per row: every row ends at column L - 1
    seg = (np.arange(L)[None, :] >= pad[:, None]).astype(np.int32)
    pos = np.maximum(np.cumsum(seg, axis=1) - 1, 0) * seg  # real tokens before each token, not the column
    tokens[seg == 0] = 1
    full = _logits(tiny, tokens, pos, seg)

    graphdef, state = nnx.split(tiny)

    def weights_of(model):
        stored = model.layers.stored()
        if layout == "weight_first":
            blocks = tuple(decode_weights.WeightFirstBlock.from_stored(stored.layer(i)) for i in range(2))
            return decode_weights.DecodeWeights(blocks=blocks, weight_first=True)
        return decode_weights.build_decode_weights(stored, jnp.float32, per_layer=layout == "per_layer")

    @jax.jit
    def decode(state, t, p, s, cache):
        model = nnx.merge(graphdef, state)
        return model.decode(t, p, s, cache, weights_of(model))

    cache = tiny.init_cache(B, max_len=L + 4)
    assert len(cache.k) == 2 and cache.k[0].shape == (B, 4, L + 4, 16) and int(cache.index) == 0
    logits, cache = decode(state, tokens[:, :prompt], pos[:, :prompt], seg[:, :prompt], cache)  # prefill
    outs = [np.asarray(logits)]
    for t in range(prompt, L):  # one token per step
        logits, cache = decode(state, tokens[:, t : t + 1], pos[:, t : t + 1], seg[:, t : t + 1], cache)
        outs.append(np.asarray(logits))
    got = np.concatenate(outs, axis=1)
    assert int(cache.index) == L
    np.testing.assert_array_equal(np.asarray(cache.positions)[:, :L], pos)
    np.testing.assert_array_equal(np.asarray(cache.segment_ids)[:, L:], 0)
    real = seg != 0
    np.testing.assert_allclose(got[real], full[real], atol=1e-5, rtol=0)


def test_dropout_is_random_in_training_and_reproducible_in_eval(tiny):
    model = _with(tiny, dropout=0.1, attention_dropout=0.1)
    tokens, pos, seg = _padded_batch(model.config.arch.vocab_size)
    real = seg != 0
    eval_logits = _logits(tiny, tokens, pos, seg)  # deterministic: dropout rates play no part
    np.testing.assert_array_equal(eval_logits, _logits(tiny, tokens, pos, seg))
    train_a = _logits(model, tokens, pos, seg, False, jax.random.key(0))
    train_a2 = _logits(model, tokens, pos, seg, False, jax.random.key(0))
    train_b = _logits(model, tokens, pos, seg, False, jax.random.key(1))
    np.testing.assert_array_equal(train_a, train_a2)  # same key, same masks
    assert np.abs(train_a - eval_logits)[real].max() > 1e-3
    assert np.abs(train_a - train_b)[real].max() > 1e-3
    key = opt._dropout_key(nnx.Rngs(dropout=0), False, model.config)  # nnx.Rngs are accepted too
    assert jax.random.key_data(key).shape == (2,)
    assert opt._dropout_key(nnx.Rngs(0), True, model.config) is None
    with pytest.raises(ValueError, match="rngs"):
        model(tokens, pos, seg, deterministic=False)


def test_remat_policy_controls_what_the_layer_scan_saves(tiny):
    """Remat is wiring (jax.checkpoint owns the numerics), checked on traced programs: each policy wraps the
    scanned block in a checkpoint with its saveable policy, and the forward scan of the gradient program saves
    fewer residuals for the backward pass the more the policy recomputes."""
    tokens, pos, seg = _padded_batch(tiny.config.arch.vocab_size)
    residuals = {}
    for policy in ("none", "full", "save_dots", "save_dots_no_batch"):
        graphdef, state = nnx.split(_with(tiny, remat_policy=policy))

        def loss(state):
            return jnp.sum(nnx.merge(graphdef, state)(tokens, pos, seg)[..., 5] * (seg != 0))

        (scan,) = [e for e in jax.make_jaxpr(loss)(state).jaxpr.eqns if e.primitive.name == "scan"]
        remats = [e for e in scan.params["jaxpr"].jaxpr.eqns if e.primitive.name.startswith(("remat", "checkpoint"))]
        assert len(remats) == (0 if policy == "none" else 1), policy
        if policy != "none":
            want = {"full": "None", "save_dots": "only_if_no_batch_dims=False",
                    "save_dots_no_batch": "only_if_no_batch_dims=True"}[policy]
            assert want in str(remats[0].params["policy"]), policy
        grad_scans = [e for e in jax.make_jaxpr(jax.grad(loss))(state).jaxpr.eqns if e.primitive.name == "scan"]
        residuals[policy] = len(grad_scans[0].outvars)
    assert residuals["full"] < residuals["save_dots_no_batch"] < residuals["save_dots"] < residuals["none"]


def test_scan_unroll_changes_the_program_not_the_numbers(tiny):
    """``scan_unroll`` reaches the layer scan (traced program) and leaves forward and cached decoding unchanged."""
    tokens, pos, seg = _padded_batch(tiny.config.arch.vocab_size)
    unrolled = _with(tiny, scan_unroll=tiny.config.arch.num_layers)
    graphdef, state = nnx.split(unrolled)
    (scan,) = [e for e in jax.make_jaxpr(lambda s: nnx.merge(graphdef, s)(tokens, pos, seg))(state).jaxpr.eqns
               if e.primitive.name == "scan"]
    assert scan.params["unroll"] == tiny.config.arch.num_layers
    real = seg != 0
    np.testing.assert_allclose(_logits(unrolled, tokens, pos, seg)[real], _logits(tiny, tokens, pos, seg)[real],
                               atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="model.scan_unroll"):
        get_model_config("tiny", scan_unroll=0)
