"""The decoder block's two weight layouts and the decoding weights (alert_jax/models/decode_weights.py), against numpy
einsums on the stored weights, for few rows (a decode step: the weight-first product) and many rows (a prefill: the
plain product)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alert_jax.models import decode_weights as dw

D, N, H, F, V, LAYERS = 24, 3, 8, 40, 50, 2


@pytest.fixture(scope="module")
def stacked() -> dw.StoredBlock:
    rng = np.random.default_rng(0)
    shapes = {
        "attn_ln_scale": (D,), "attn_ln_bias": (D,), "ffn_ln_scale": (D,), "ffn_ln_bias": (D,),
        "q_kernel": (D, N, H), "k_kernel": (D, N, H), "v_kernel": (D, N, H),
        "q_bias": (N, H), "k_bias": (N, H), "v_bias": (N, H),
        "out_kernel": (N, H, D), "out_bias": (D,),
        "fc1_kernel": (D, F), "fc1_bias": (F,), "fc2_kernel": (F, D), "fc2_bias": (D,),
    }
    return dw.StoredBlock(**{n: jnp.asarray(rng.standard_normal((LAYERS, *s)), jnp.float32) for n, s in shapes.items()})


def test_weight_first_block_holds_the_same_weights_output_dims_first(stacked):
    for i in range(LAYERS):
        p = dw.WeightFirstBlock.from_stored(stacked.layer(i))
        for c, name in enumerate("qkv"):
            want = np.asarray(getattr(stacked, f"{name}_kernel")[i]).transpose(1, 2, 0)
            np.testing.assert_array_equal(np.asarray(p.qkv_kernel[c]), want)
            np.testing.assert_array_equal(np.asarray(p.qkv_bias[c]), np.asarray(getattr(stacked, f"{name}_bias")[i]))
        np.testing.assert_array_equal(np.asarray(p.out_kernel), np.asarray(stacked.out_kernel[i]).reshape(N * H, D).T)
        np.testing.assert_array_equal(np.asarray(p.fc1_kernel), np.asarray(stacked.fc1_kernel[i]).T)
        np.testing.assert_array_equal(np.asarray(p.fc2_kernel), np.asarray(stacked.fc2_kernel[i]).T)


def test_per_layer_weights_are_cast_once_and_laid_out_by_backend(stacked):
    """fp32 master weights decoded in bf16: per-layer buffers hold bf16 copies (no per-step cast in the decode loop),
    weight-first exactly on CPU; without per-layer buffers the stored stack itself is used."""
    weights = dw.build_decode_weights(stacked, jnp.bfloat16, per_layer=True)
    assert weights.num_layers == LAYERS and weights.stacked is None
    assert weights.weight_first == (jax.default_backend() == "cpu") == dw.weight_first_backend()
    block = weights.block(0)
    assert isinstance(block, dw.WeightFirstBlock if weights.weight_first else dw.StoredBlock)
    assert {a.dtype for a in jax.tree.leaves(block)} == {jnp.dtype(jnp.bfloat16)}
    fc1 = np.asarray(stacked.fc1_kernel[0].astype(jnp.bfloat16))
    np.testing.assert_array_equal(np.asarray(block.fc1_kernel), fc1.T if weights.weight_first else fc1)
    shared = dw.build_decode_weights(stacked, jnp.bfloat16, per_layer=False)
    assert shared.blocks is None and shared.stacked is stacked and shared.num_layers == LAYERS
    np.testing.assert_array_equal(np.asarray(shared.block(1).fc2_kernel), np.asarray(stacked.fc2_kernel[1]))


@pytest.mark.parametrize("rows", [(2, 1), (4, 40), (1, dw.FEW_ROWS), (1, dw.FEW_ROWS + 1)],
                         ids=["decode_step", "prefill", "few_rows_limit", "one_past_the_limit"])
def test_both_layouts_match_numpy(stacked, rows):
    B, T = rows
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    o = rng.standard_normal((B, T, N, H)).astype(np.float32)
    f = rng.standard_normal((B, T, F)).astype(np.float32)
    ref = {name: np.asarray(a[1]) for name, a in vars(stacked).items()}
    want_qkv = [np.einsum("btd,dnh->btnh", x, ref[f"{n}_kernel"]) + ref[f"{n}_bias"] for n in "qkv"]
    want_out = np.einsum("btnh,nhd->btd", o, ref["out_kernel"]) + ref["out_bias"]
    want_fc1 = x @ ref["fc1_kernel"] + ref["fc1_bias"]
    want_fc2 = f @ ref["fc2_kernel"] + ref["fc2_bias"]
    close = dict(rtol=1e-5, atol=1e-5)
    for p in (stacked.layer(1), dw.WeightFirstBlock.from_stored(stacked.layer(1))):
        for got, want in zip(p.project_qkv(x, "highest"), want_qkv):
            np.testing.assert_allclose(np.asarray(got), want, **close)
        np.testing.assert_allclose(np.asarray(p.project_out(o, "highest")), want_out, **close)
        np.testing.assert_allclose(np.asarray(p.fc1(x, "highest")), want_fc1, **close)
        np.testing.assert_allclose(np.asarray(p.fc2(f, "highest")), want_fc2, **close)


@pytest.mark.parametrize("rows", [(3, 1), (2, 40)], ids=["decode_step", "prefill"])
def test_lm_head_matches_numpy_in_both_orientations(rows):
    rng = np.random.default_rng(3)
    h = rng.standard_normal((*rows, D)).astype(np.float32)
    table = rng.standard_normal((V, D)).astype(np.float32)
    want = np.einsum("bte,ve->btv", h, table)
    for weight_first in (False, True):
        got = dw.DecodeWeights(blocks=(), weight_first=weight_first).lm_head(h, jnp.asarray(table), "highest")
        assert got.dtype == jnp.float32 and got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4)
