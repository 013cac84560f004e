"""Optimizer, schedule, decay mask, loss, gradient accumulation, FLOP formula and the replicated-parameter check.

Numerical references are independent: a numpy AdamW, a numpy cross-entropy (float64 log-sum-exp), parameter shapes
read from the model for the FLOP count.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FAST_COMPILE, model_config, packed_batch, random_params, train_cfg

from alert_jax.models import opt as opt_model
from alert_jax.models.sizes import get_model_config
from alert_jax.parallel import distributed, param_sharding
from alert_jax.parallel.sharding import LOGICAL_AXIS_RULES, make_mesh
from alert_jax.train import flops
from alert_jax.train import optimizer as opt_lib
from alert_jax.train import state as state_lib
from alert_jax.train import step as step_lib


@pytest.fixture(scope="module")
def parts():
    p, _ = opt_model.split_model(opt_model.abstract_model(model_config()))
    return p


def one_device_mesh():
    return make_mesh((1, 1, 1), devices=jax.devices()[:1])


# ---------------------------------------------------------------------------------------------------------------------
# Schedule, mask, AdamW
# ---------------------------------------------------------------------------------------------------------------------


def test_schedule_warmup_then_linear_decay():
    cfg = train_cfg(learning_rate=2e-3, warmup_steps=4, end_lr_fraction=0.25)
    cfg.train.num_steps = 12
    sched = opt_lib.make_schedule(cfg)
    expected = {0: 0.0, 2: 1e-3, 4: 2e-3, 8: 2e-3 - 0.5 * (2e-3 - 5e-4), 12: 5e-4, 20: 5e-4}
    for step, lr in expected.items():
        assert float(sched(step)) == pytest.approx(lr, rel=1e-6, abs=1e-12), step


def test_decay_mask_matrices_only(parts):
    mask = opt_lib.decay_mask(parts.abstract_params(), parts.names)
    flat = {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_flatten_with_path(mask)[0]}
    for path, decayed in flat.items():
        name = path.split("'")[-2]
        # OPT's naming: matrices end in kernel / embedding, every other parameter is a bias or a LayerNorm parameter
        assert decayed == name.endswith(("kernel", "embedding")), path
    assert flat["['layers']['fc1_kernel']"] and flat["['token_embedding']"] and flat["['position_embedding']"]
    # q/k/v biases are 2-D per layer ([heads, head_dim]) but are biases: never decayed
    assert not flat["['layers']['q_bias']"] and not flat["['layers']['attn_ln_scale']"]
    assert not flat["['final_ln_bias']"]
    assert jax.tree.leaves(opt_lib.decay_mask(parts.abstract_params(), policy="none")) == [False] * len(flat)


def _numpy_adamw(params, grads_seq, *, lr_fn, b1, b2, eps, wd, mask, clip):
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, grads in enumerate(grads_seq):
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
        scale = min(1.0, clip / norm) if norm > 0 else 1.0
        for k in p:
            g = grads[k].astype(np.float64) * scale
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            mhat = m[k] / (1 - b1 ** (t + 1))
            vhat = v[k] / (1 - b2 ** (t + 1))
            upd = mhat / (np.sqrt(vhat) + eps) + (wd * p[k] if mask[k] else 0.0)
            p[k] = p[k] - lr_fn(t) * upd
    return p


def test_adamw_matches_numpy_reference():
    cfg = train_cfg(learning_rate=1e-2, warmup_steps=1)
    cfg.train.num_steps = 4
    rng = np.random.default_rng(1)
    params = {
        "layers": {"fc1_kernel": rng.standard_normal((2, 3, 4)).astype(np.float32),
                   "fc1_bias": rng.standard_normal((2, 4)).astype(np.float32),
                   "attn_ln_scale": rng.standard_normal((2, 3)).astype(np.float32)},
        "token_embedding": rng.standard_normal((5, 3)).astype(np.float32),
    }
    grads_seq = [jax.tree.map(lambda x: (3.0 * rng.standard_normal(x.shape)).astype(np.float32), params)
                 for _ in range(3)]
    tx = opt_lib.make_optimizer(cfg)
    state = tx.init(params)
    p = params
    for g in grads_seq:
        updates, state = tx.update(g, state, p)
        p = jax.tree.map(lambda a, u: a + u, p, updates)
    flat = lambda t: {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_flatten_with_path(t)[0]}
    mask = {k: ("kernel" in k or "embedding" in k) for k in flat(params)}
    sched = opt_lib.make_schedule(cfg)
    ref = _numpy_adamw(flat(params), [flat(g) for g in grads_seq], lr_fn=lambda t: float(sched(t)), b1=0.9, b2=0.95,
                       eps=1e-8, wd=0.1, mask=mask, clip=1.0)
    got = flat(p)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # fp32 moments
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state) if hasattr(x, "dtype") and x.ndim)


# ---------------------------------------------------------------------------------------------------------------------
# Loss, eval step, gradient accumulation
# ---------------------------------------------------------------------------------------------------------------------


def _log_softmax64(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    mx = x.max(-1, keepdims=True)
    return x - mx - np.log(np.exp(x - mx).sum(-1, keepdims=True))


def test_loss_and_eval_step_match_numpy_cross_entropy(parts):
    mesh = one_device_mesh()
    params = random_params(parts)
    batch = packed_batch(4, 32, seed=3)
    model = parts.build(jax.tree.map(jnp.asarray, params))
    forward = jax.jit(lambda b: model(b["inputs"], b["positions"], b["segment_ids"]), compiler_options=FAST_COMPILE)
    logits = np.asarray(forward(batch))
    logp = _log_softmax64(logits)
    ce = -np.take_along_axis(logp, batch["targets"][..., None].astype(np.int64), -1)[..., 0]
    ref_sum = float(np.sum(ce * batch["loss_mask"]))
    shardings = parts.shardings(mesh)
    eval_step = step_lib.make_eval_step(parts, mesh, shardings, compiler_options=FAST_COMPILE)
    loss_sum, count = eval_step(params, batch)
    assert float(count) == float(batch["loss_mask"].sum()) > 0
    np.testing.assert_allclose(float(loss_sum), ref_sum, rtol=1e-5)


def test_grad_accumulation_strided_microbatches_equal_full_batch(parts):
    """k=1 vs k=4 on a packed batch with uneven target masks: same loss and same updated parameters.

    eps=1e-3 keeps Adam's first update a smooth function of the gradient: with eps=1e-8 an exactly-zero gradient
    (e.g. the key bias, to which softmax is invariant) becomes a +-lr step whose sign is float rounding noise.
    """
    mesh = one_device_mesh()
    cfg = train_cfg(eps=1e-3, warmup_steps=0)
    tx = opt_lib.make_optimizer(cfg, mask=opt_lib.decay_mask(parts.abstract_params(), parts.names))
    shardings = state_lib.state_shardings(parts, tx, mesh)
    params = random_params(parts, seed=5)
    batch = packed_batch(8, 32, seed=7)
    per_row = batch["loss_mask"].sum(1)
    assert per_row.max() > 3 * max(per_row.min(), 1)  # really uneven

    results = {}
    for k in (1, 4):
        state = state_lib.create_train_state(params, tx, shardings, seed=0)
        train_step = step_lib.make_train_step(parts, tx, mesh, shardings, grad_accum_steps=k,
                                             compiler_options=FAST_COMPILE)
        new_state, metrics = train_step(state, batch)
        results[k] = (jax.device_get(metrics), jax.tree.map(np.asarray, new_state.params))
    (m1, p1), (m4, p4) = results[1], results[4]
    assert float(m1["target_tokens"]) == float(m4["target_tokens"]) == float(batch["loss_mask"].sum())
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(params)))
    assert moved > 1e-4  # the step did update the parameters

    # The test is sensitive: the (wrong) mean of microbatch means differs from the true loss here.
    micro = step_lib.split_microbatches(batch, 4)
    eval_step = step_lib.make_eval_step(parts, mesh, shardings.params, compiler_options=FAST_COMPILE)
    means = []
    for i in range(4):
        s, n = eval_step(params, {f: np.asarray(v[i]) for f, v in micro.items()})
        means.append(float(s) / float(n))
    assert abs(np.mean(means) - float(m1["loss"])) > 1e-3
    np.testing.assert_array_equal(np.asarray(micro["inputs"][1]), batch["inputs"][1::4])


def test_dropout_keys_are_a_function_of_seed_step_and_microbatch():
    """Every impl: same (base, step, micro) -> same mask; any of them changed -> a different mask; rbg keys are
    RngBitGenerator keys seeded from the threefry key, and an unknown impl names the setting."""
    base = jax.random.PRNGKey(3)

    def mask(step, micro, impl):
        key = step_lib.dropout_key(base, jnp.int32(step), jnp.int32(micro), impl)
        return np.asarray(jax.random.bernoulli(key, 0.5, (256,)))

    for impl in step_lib.DROPOUT_RNG_IMPLS:
        a = mask(4, 1, impl)
        np.testing.assert_array_equal(a, mask(4, 1, impl))
        assert (a != mask(5, 1, impl)).any() and (a != mask(4, 0, impl)).any(), impl
    threefry = step_lib.dropout_key(base, jnp.int32(4), jnp.int32(1))
    np.testing.assert_array_equal(np.asarray(threefry),
                                  np.asarray(jax.random.fold_in(jax.random.fold_in(base, 4), 1)))
    rbg = step_lib.dropout_key(base, jnp.int32(4), jnp.int32(1), "unsafe_rbg")
    assert jax.random.key_data(rbg).shape == (4,) and "rbg" in str(rbg.dtype)
    with pytest.raises(ValueError, match="train.dropout_rng_impl"):
        step_lib.dropout_key(base, jnp.int32(0), jnp.int32(0), "philox")


# ---------------------------------------------------------------------------------------------------------------------
# FLOPs, peak table
# ---------------------------------------------------------------------------------------------------------------------


def test_flops_formula_counts_matmul_parameters_of_the_model():
    for size in ("tiny", "tiny-postln", "1.3b"):
        cfg = get_model_config(size)
        state = jax.tree_util.tree_flatten_with_path(
            opt_model.split_model(opt_model.abstract_model(cfg))[0].abstract_params())[0]
        matmul = sum(math.prod(x.shape) for p, x in state
                     if str(p[-1].key).endswith("kernel") or str(p[-1].key) == "token_embedding")
        s = 256
        expected = 6 * matmul + 6 * cfg.arch.num_layers * s * cfg.arch.hidden_size
        assert flops.flops_per_token(cfg, s) == expected, size
        assert flops.train_step_flops(cfg, 4, s) == 4 * s * expected
    one_b = get_model_config("1.3b")
    assert 1.2e9 < flops.matmul_params(one_b) < 1.45e9


def test_peak_table_and_mfu():
    class Dev:
        platform = "gpu"

        def __init__(self, kind):
            self.device_kind = kind

    assert flops.peak_flops(Dev("NVIDIA H100 80GB HBM3")) == 989e12
    assert flops.peak_flops(Dev("NVIDIA H200")) == 989e12
    assert flops.peak_flops(Dev("NVIDIA A100-SXM4-80GB")) == 312e12
    assert flops.peak_flops(Dev("TPU v4")) == 275e12
    assert flops.peak_flops(Dev("TPU v5 lite")) == 197e12
    assert flops.peak_flops(Dev("TPU v5p")) == 459e12
    assert flops.peak_flops(Dev("Unknown chip")) is None
    assert flops.peak_flops(jax.devices()[0], cpu_peak=1e9) == 1e9
    measured = flops.measure_matmul_peak(128, repeats=2)
    assert 1e6 < measured < 1e14
    cfg = get_model_config("tiny")
    t = flops.throughput(cfg, batch_size=2, seq_len=16, step_time_s=0.5, num_devices=2, peak=1e12)
    assert t["mfu"] == pytest.approx(flops.train_step_flops(cfg, 2, 16) / 0.5 / 2 / 1e12)


# ---------------------------------------------------------------------------------------------------------------------
# Replicated-parameter check, distributed no-op
# ---------------------------------------------------------------------------------------------------------------------


def test_replicated_parameter_check(parts):
    abstract = parts.abstract_params()
    mesh = make_mesh((2, 2, 2))
    good = param_sharding.param_shardings(parts.names, abstract, mesh)
    frac = param_sharding.check_sufficiently_sharded(abstract, good, mesh)
    assert frac < 0.02
    assert not param_sharding.replicated(good["layers"]["fc1_kernel"])

    bad_rules = tuple((k, None if k in ("embed", "mlp") else v) for k, v in LOGICAL_AXIS_RULES)
    bad = param_sharding.param_shardings(parts.names, abstract, mesh, bad_rules)
    assert param_sharding.replicated(bad["layers"]["fc1_kernel"])
    with pytest.raises(param_sharding.InsufficientShardingError, match="fc1_kernel"):
        param_sharding.check_sufficiently_sharded(abstract, bad, mesh)
    # the rule only applies when the mesh has model-parallel axes
    data_mesh = make_mesh((8, 1, 1))
    everything = param_sharding.param_shardings(parts.names, abstract, data_mesh)
    assert param_sharding.check_sufficiently_sharded(abstract, everything, data_mesh) == pytest.approx(1.0)


def test_distributed_initialize_is_a_noop_without_cluster(monkeypatch):
    for k in ("ALERT_JAX_COORDINATOR", "JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS",
              "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.initialize() is False
    with pytest.raises(ValueError, match="num_processes"):
        distributed.initialize("127.0.0.1:1234", 0, -1)
    monkeypatch.setenv("ALERT_JAX_COORDINATOR", "127.0.0.1:1234")
    with pytest.raises(ValueError, match="ALERT_JAX_NUM_PROCESSES"):
        distributed.initialize()
