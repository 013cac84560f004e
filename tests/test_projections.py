"""The block's matrix products in the stored and the decoding weight layout (alert_jax/models/decode_weights.py),
against numpy einsums on the stored weights, for few rows (a decode step: the weight-first product on CPU) and many
rows (a prefill: the plain product)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from alert_jax.models import decode_weights

D, N, H, F, LAYERS = 24, 3, 8, 40, 2


@pytest.fixture(scope="module")
def stacked():
    rng = np.random.default_rng(0)
    shapes = {
        "attn_ln_scale": (D,), "attn_ln_bias": (D,), "ffn_ln_scale": (D,), "ffn_ln_bias": (D,),
        "q_kernel": (D, N, H), "k_kernel": (D, N, H), "v_kernel": (D, N, H),
        "q_bias": (N, H), "k_bias": (N, H), "v_bias": (N, H),
        "out_kernel": (N, H, D), "out_bias": (D,),
        "fc1_kernel": (D, F), "fc1_bias": (F,), "fc2_kernel": (F, D), "fc2_bias": (D,),
    }
    return {name: rng.standard_normal((LAYERS, *shape)).astype(np.float32) for name, shape in shapes.items()}


def _stored(stacked, i):
    return {name: a[i] for name, a in stacked.items()}


def test_decode_layers_hold_the_same_weights_output_dims_first(stacked):
    layers = decode_weights.decode_layers(stacked, LAYERS)
    assert len(layers) == LAYERS
    for i, p in enumerate(layers):
        for c, name in enumerate("qkv"):
            want = stacked[f"{name}_kernel"][i].transpose(1, 2, 0)
            np.testing.assert_array_equal(np.asarray(p["qkv_kernel_t"][c]), want)
            np.testing.assert_array_equal(np.asarray(p["qkv_bias"][c]), stacked[f"{name}_bias"][i])
        np.testing.assert_array_equal(np.asarray(p["out_kernel_t"]), stacked["out_kernel"][i].reshape(N * H, D).T)
        np.testing.assert_array_equal(np.asarray(p["fc1_kernel_t"]), stacked["fc1_kernel"][i].T)
        np.testing.assert_array_equal(np.asarray(p["fc2_kernel_t"]), stacked["fc2_kernel"][i].T)
        assert not any(k in p for k in ("q_kernel", "out_kernel", "fc1_kernel"))  # no stale stored-layout copies


def test_decode_layers_are_cast_once_to_the_compute_dtype(stacked):
    """fp32 master weights decoded in bf16: the layout holds bf16 copies (no per-step cast in the decode loop)."""
    (p, *_) = decode_weights.decode_layers(stacked, LAYERS, jnp.bfloat16)
    assert {a.dtype for a in p.values()} == {jnp.dtype(jnp.bfloat16)}
    want = np.asarray(jnp.asarray(stacked["fc1_kernel"][0]).astype(jnp.bfloat16)).T
    np.testing.assert_array_equal(np.asarray(p["fc1_kernel_t"]), want)


@pytest.mark.parametrize("rows", [(2, 1), (4, 40)], ids=["decode_step", "prefill"])
def test_both_layouts_match_numpy(stacked, rows):
    B, T = rows
    assert (B * T <= decode_weights.FEW_ROWS) == (T == 1)  # the two cases take the two code paths
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    o = rng.standard_normal((B, T, N, H)).astype(np.float32)
    f = rng.standard_normal((B, T, F)).astype(np.float32)
    ref = _stored(stacked, 1)
    want_qkv = [np.einsum("btd,dnh->btnh", x, ref[f"{n}_kernel"]) + ref[f"{n}_bias"] for n in "qkv"]
    want_out = np.einsum("btnh,nhd->btd", o, ref["out_kernel"]) + ref["out_bias"]
    want_fc1 = x @ ref["fc1_kernel"] + ref["fc1_bias"]
    want_fc2 = f @ ref["fc2_kernel"] + ref["fc2_bias"]
    close = dict(rtol=1e-5, atol=1e-5)
    for p in (ref, decode_weights.decode_layers(stacked, LAYERS)[1]):
        for got, want in zip(decode_weights.project_qkv(p, x, "highest"), want_qkv):
            np.testing.assert_allclose(np.asarray(got), want, **close)
        np.testing.assert_allclose(np.asarray(decode_weights.project_out(p, o, "highest")), want_out, **close)
        np.testing.assert_allclose(np.asarray(decode_weights.dense(p, "fc1", x, "highest")), want_fc1, **close)
        np.testing.assert_allclose(np.asarray(decode_weights.dense(p, "fc2", f, "highest")), want_fc2, **close)


def test_rows_last_puts_rows_first_for_any_row_count():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((5, 7, D)).astype(np.float32)
    for m in (1, decode_weights.FEW_ROWS, decode_weights.FEW_ROWS + 1):
        x = rng.standard_normal((m, D)).astype(np.float32)
        got = decode_weights.rows_last("abk,mk->abm", w, x, "highest")
        np.testing.assert_allclose(np.asarray(got), np.einsum("abk,mk->mab", w, x), rtol=1e-5, atol=1e-5)
