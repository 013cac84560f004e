"""Training FLOP counting, model FLOPs utilisation (MFU) and peak-FLOP numbers.

The formula (stated once, used everywhere; peers differ, so compare like with like):

    training FLOPs per processed token = 6 * N_matmul + 6 * n_layers * s * d_attn

* ``N_matmul`` = parameters that take part in a matrix multiply per token: per layer ``4 d^2`` (q, k, v, out
  projections) + ``2 d ffn`` (fc1, fc2); plus OPT-350m's ``project_in``/``project_out`` (``2 d_proj d``) and the
  (tied) LM head ``vocab * d_proj``. Biases, LayerNorms and the embedding *lookups* (token and position) are
  excluded. ``6 = 2`` (multiply-add) ``x 3`` (forward + two backward matmuls).
* Attention scores: ``QK^T`` and ``AV`` cost ``2 * 2 * s * d_attn`` FLOPs per token and layer in the forward pass
  when every query attends to all ``s`` columns; with the **causal mask only half** of them are needed, so we count
  ``2 * s * d_attn`` forward and ``6 * s * d_attn`` forward + backward ("causal, halved"). ``s`` is the row length
  ``seq_len`` of the packed batch (the kernel computes over whole rows whatever the segments), ``d_attn = heads *
  head_dim``.
* "Processed tokens" are all ``batch * seq_len`` positions of a step, padding included (padding costs compute);
  packing efficiency (target or real tokens / padded tokens) is reported separately. Rematerialisation is NOT
  counted (model FLOPs, not hardware FLOPs).

MFU = (training FLOPs per step / step time / number of devices) / peak FLOP/s of one device.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp

from alert_jax.models.sizes import OPTConfig

# Dense peak FLOP/s per device (chip) in bf16 (matrix units, no sparsity). Substring of jax's ``device_kind``
# (lower-cased) -> FLOP/s. First match wins, so the more specific names come first.
PEAK_FLOPS_BF16: tuple[tuple[str, float], ...] = (
    ("h200", 989e12),
    ("h100", 989e12),
    ("a100", 312e12),
    ("v5 lite", 197e12),  # TPU v5e reports device_kind 'TPU v5 lite'
    ("v5e", 197e12),
    ("v5p", 459e12),
    ("tpu v5", 459e12),  # v5p reports 'TPU v5'
    ("v6 lite", 918e12),  # TPU v6e (Trillium)
    ("v6e", 918e12),
    ("tpu v4", 275e12),
)


def matmul_params(config: OPTConfig) -> int:
    """``N_matmul`` of the module docstring."""
    a = config.arch
    d, proj = a.hidden_size, a.embed_dim
    n = a.num_layers * (4 * d * d + 2 * d * a.ffn_dim)
    if proj != d:
        n += 2 * proj * d  # project_in + project_out
    n += a.vocab_size * proj  # tied LM head
    return n


def flops_per_token(config: OPTConfig, seq_len: int) -> float:
    """Training FLOPs per processed token: ``6 * N_matmul + 6 * n_layers * seq_len * d_attn`` (causal, halved)."""
    a = config.arch
    d_attn = a.num_heads * a.head_dim
    return 6.0 * matmul_params(config) + 6.0 * a.num_layers * int(seq_len) * d_attn


def train_step_flops(config: OPTConfig, batch_size: int, seq_len: int) -> float:
    """Training FLOPs of one optimizer step over ``batch_size`` rows of ``seq_len`` tokens (all microbatches)."""
    return flops_per_token(config, seq_len) * int(batch_size) * int(seq_len)


def peak_flops(device: jax.Device | None = None, *, cpu_peak: float | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of one device from :data:`PEAK_FLOPS_BF16`; ``None`` when unknown.

    For CPU devices returns ``cpu_peak`` (e.g. from :func:`measure_matmul_peak`). MFU of an fp32 run is still quoted
    against the bf16 peak (the number the hardware is sold on); treat it as indicative.
    """
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return cpu_peak
    kind = str(getattr(device, "device_kind", "")).lower()
    for key, value in PEAK_FLOPS_BF16:
        if key in kind:
            return value
    return None


def measure_matmul_peak(
    n: int | tuple[int, int, int] = 1024, dtype: Any = jnp.float32, repeats: int = 5, device: jax.Device | None = None
) -> float:
    """Measured FLOP/s of a jitted matmul on one device (best of ``repeats``, after a warm-up): ``[n, n] @ [n, n]``,
    or ``[m, k] @ [k, n]`` when ``n`` is an ``(m, k, n)`` tuple.

    On CPU this is the realistic peak to quote MFU against (all fake CPU devices share the same cores).
    """
    m, k, n = (n, n, n) if isinstance(n, int) else n
    device = device or jax.devices()[0]
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.device_put(jax.random.normal(key_a, (m, k), dtype), device)
    b = jax.device_put(jax.random.normal(key_b, (k, n), dtype), device)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * m * k * n / best


def throughput(
    config: OPTConfig,
    *,
    batch_size: int,
    seq_len: int,
    step_time_s: float,
    num_devices: int,
    peak: float | None,
) -> dict[str, float]:
    """``{'tflops_per_device', 'mfu'}`` for one step (``mfu`` is NaN when the peak is unknown)."""
    flops = train_step_flops(config, batch_size, seq_len)
    per_device = flops / max(step_time_s, 1e-12) / max(num_devices, 1)
    return {
        "tflops_per_device": per_device / 1e12,
        "mfu": per_device / peak if peak else float("nan"),
    }
