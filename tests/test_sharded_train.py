"""One sharded train step on 8 fake CPU devices equals the single-device step (DESIGN.md section 8).

Meshes (data, fsdp, tensor) = (8,1,1), (1,8,1), (2,2,2), (1,1,8) against (1,1,1), with dropout ON (the dropout masks
must not depend on the sharding: jax's partitionable threefry) and fp32. Adam's eps is raised to 1e-3 so that the
first update is a smooth function of the gradient (see test_train_step.py); the gradient itself is compared through
Adam's first moment at the production-independent tolerance. The tiny model / optimizer / batch come from helpers.py.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from helpers import FAST_COMPILE, model_config, packed_batch, random_params, train_cfg

from alert_jax.parallel.sharding import make_mesh
from alert_jax.train import optimizer as opt_lib
from alert_jax.train import state as state_lib
from alert_jax.train import step as step_lib

# (2,2,2) runs in the default (fast) suite; the other meshes with ``-m slow``.
MESHES = [
    pytest.param((8, 1, 1), marks=pytest.mark.slow),
    pytest.param((1, 8, 1), marks=pytest.mark.slow),
    (2, 2, 2),
    pytest.param((1, 1, 8), marks=pytest.mark.slow),
]


def _run(parts, tx, params, batch, shape):
    devices = jax.devices()[: int(np.prod(shape))]
    mesh = make_mesh(shape, devices=devices)
    shardings = state_lib.state_shardings(parts, tx, mesh)
    state = state_lib.create_train_state(params, tx, shardings, seed=3)
    train_step = step_lib.make_train_step(parts, tx, mesh, shardings, grad_accum_steps=1,
                                         compiler_options=FAST_COMPILE)
    new_state, metrics = train_step(state, batch)
    fc1 = new_state.params["layers"]["fc1_kernel"]
    mu = new_state.opt_state[1][0].mu  # chain(clip, adamw(...)) -> adamw's ScaleByAdamState
    return (jax.device_get(metrics), jax.tree.map(np.asarray, new_state.params), jax.tree.map(np.asarray, mu),
            fc1.sharding.spec)


@pytest.fixture(scope="module")
def setup():
    from alert_jax.models import opt as opt_model

    parts, _ = opt_model.split_model(opt_model.abstract_model(model_config(dropout=0.1, attention_dropout=0.1)))
    cfg = train_cfg(eps=1e-3, warmup_steps=0)
    tx = opt_lib.make_optimizer(cfg, mask=opt_lib.decay_mask(parts.abstract_params(), parts.names))
    params = random_params(parts, seed=11)
    batch = packed_batch(8, 32, seed=13)
    reference = _run(parts, tx, params, batch, (1, 1, 1))
    return parts, tx, params, batch, reference


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(map(str, s)))
def test_sharded_step_equals_single_device(setup, shape):
    parts, tx, params, batch, (ref_metrics, ref_params, ref_mu, _) = setup
    metrics, new_params, mu, fc1_spec = _run(parts, tx, params, batch, shape)
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics["grad_norm"], ref_metrics["grad_norm"], rtol=1e-5)
    assert metrics["target_tokens"] == ref_metrics["target_tokens"]
    # Gradients (via Adam's first moment). Some are exactly zero in exact arithmetic (the key bias: softmax is
    # invariant to it) and hold only rounding noise, hence the floor relative to the largest gradient.
    global_max = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(ref_mu))
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(ref_mu)[0], jax.tree.leaves(mu)):
        atol = max(1e-5 * float(np.max(np.abs(a))), 1e-6 * global_max)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=atol,
                                   err_msg=f"gradient (Adam mu) {jax.tree_util.keystr(path)}")
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(ref_params)[0], jax.tree.leaves(new_params)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=f"updated param {jax.tree_util.keystr(path)}")
    # the updated weights stay sharded as the rule table says
    assert fc1_spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
