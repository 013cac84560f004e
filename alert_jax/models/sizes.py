"""The OPT size table and the model configuration: :class:`Architecture` (what decides parameter shapes; a
checkpoint carries it), :class:`Runtime` (dtypes, dropout, remat, attention kernel; the loading run's choice) and
:class:`OPTConfig` (both).

Architectures follow the OPT paper (Zhang et al., 2022, table 1) and metaseq's model table. All published sizes use a
vocabulary of 50272 (GPT-2 BPE padded to a multiple of 8 plus OPT's extra symbols), 2048 learned positions and an FFN
of 4 x d_model. opt-350m is the odd one out: post-LN blocks, no final LayerNorm, and word embeddings of width 512
projected to and from the 1024-wide residual stream (``word_embed_proj_dim``).

The ``tiny`` sizes exist for tests and demos: they are small enough to run a forward pass in milliseconds on a CPU.
"""

from __future__ import annotations

import dataclasses
from typing import Any

REMAT_POLICIES: tuple[str, ...] = ("none", "full", "save_dots", "save_dots_no_batch")
# 'auto' = cuDNN flash attention where it can run (GPU backend, 16-bit compute, no active attention dropout), else
# 'xla'; resolved at trace time by models/attention.py resolve_impl.
ATTENTION_IMPLS: tuple[str, ...] = ("auto", "xla", "cudnn", "reference")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What decides the parameter shapes; a checkpoint carries it (HF ``config.json``, the saved app config)."""

    hidden_size: int
    ffn_dim: int
    num_layers: int
    num_heads: int
    vocab_size: int = 50272
    max_position_embeddings: int = 2048
    word_embed_proj_dim: int | None = None  # None == hidden_size
    do_layer_norm_before: bool = True

    def __post_init__(self) -> None:
        for name in ("hidden_size", "ffn_dim", "num_layers", "num_heads", "vocab_size", "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"OPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"OPTConfig.hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        if self.word_embed_proj_dim is not None and self.word_embed_proj_dim <= 0:
            raise ValueError(f"OPTConfig.word_embed_proj_dim must be positive or None, got {self.word_embed_proj_dim}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def embed_dim(self) -> int:
        """Width of the token embedding (``word_embed_proj_dim``, defaulting to ``hidden_size``)."""
        return self.hidden_size if self.word_embed_proj_dim is None else self.word_embed_proj_dim

    @property
    def has_projection(self) -> bool:
        """Whether ``project_in``/``project_out`` exist (token embedding narrower or wider than the residual)."""
        return self.embed_dim != self.hidden_size

    @property
    def has_final_layer_norm(self) -> bool:
        """HF/metaseq rule: the decoder ends with a LayerNorm exactly when the blocks are pre-LN."""
        return self.do_layer_norm_before


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Numerics and execution choices: they may differ between the run that trained a checkpoint and the run that
    loads it, and always come from the loading run's config."""

    dropout: float = 0.1
    attention_dropout: float = 0.0  # as OPT's released configs (HF config.json, metaseq)
    dtype: str = "float32"  # compute dtype of activations and matmuls
    param_dtype: str = "float32"  # storage dtype of the parameters (master weights)
    remat_policy: str = "none"  # none | full | save_dots | save_dots_no_batch
    attention_impl: str = "xla"  # auto | xla | cudnn | reference
    # layers per iteration of the full forward's layer scan (training, scoring): 1 = a rolled loop (fastest compile),
    # num_layers = fully unrolled. Decoding (OPT.decode) always runs the layers unrolled on per-layer buffers.
    scan_unroll: int = 1

    def __post_init__(self) -> None:
        for name in ("dropout", "attention_dropout"):
            rate = getattr(self, name)
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1), got {rate}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"model.{name}={getattr(self, name)!r} is not one of {DTYPES}")
        if int(self.scan_unroll) < 1:
            raise ValueError(f"model.scan_unroll must be >= 1, got {self.scan_unroll}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"model.remat_policy={self.remat_policy!r} is not one of {REMAT_POLICIES}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"model.attention_impl={self.attention_impl!r} is not one of {ATTENTION_IMPLS}")
        if self.attention_impl == "cudnn" and self.attention_dropout > 0.0:
            # cuDNN's fused kernel never forms the probability matrix that attention dropout masks.
            raise ValueError(
                f"model.attention_impl='cudnn' cannot apply attention dropout (model.attention_dropout="
                f"{self.attention_dropout}): set model.attention_dropout=0.0 (OPT's own setting) or "
                "model.attention_impl='auto' / 'xla'"
            )


ARCHITECTURE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Architecture))
RUNTIME_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Runtime))


@dataclasses.dataclass(frozen=True)
class OPTConfig:
    """One OPT model: its :class:`Architecture` (``config.arch``) and its :class:`Runtime` (``config.runtime``)."""

    arch: Architecture
    runtime: Runtime = Runtime()

    def replace(self, **changes: Any) -> OPTConfig:
        """A copy with any :class:`Architecture` or :class:`Runtime` fields changed, by field name."""
        unknown = sorted(set(changes) - set(ARCHITECTURE_FIELDS) - set(RUNTIME_FIELDS))
        if unknown:
            raise ValueError(f"unknown OPTConfig field(s) {unknown}; valid fields: "
                             f"{sorted(ARCHITECTURE_FIELDS + RUNTIME_FIELDS)}")
        arch = {k: v for k, v in changes.items() if k in ARCHITECTURE_FIELDS}
        runtime = {k: v for k, v in changes.items() if k in RUNTIME_FIELDS}
        return OPTConfig(dataclasses.replace(self.arch, **arch) if arch else self.arch,
                         dataclasses.replace(self.runtime, **runtime) if runtime else self.runtime)


def _opt(d_model: int, layers: int, heads: int, **kw: Any) -> Architecture:
    return Architecture(hidden_size=d_model, ffn_dim=4 * d_model, num_layers=layers, num_heads=heads, **kw)


SIZES: dict[str, Architecture] = {
    # Test sizes: a small vocabulary keeps the embedding (and the logits) cheap.
    "tiny": Architecture(
        hidden_size=64, ffn_dim=256, num_layers=2, num_heads=4, vocab_size=1024, max_position_embeddings=128
    ),
    "tiny-postln": Architecture(
        hidden_size=64,
        ffn_dim=256,
        num_layers=2,
        num_heads=4,
        vocab_size=1024,
        max_position_embeddings=128,
        word_embed_proj_dim=32,
        do_layer_norm_before=False,
    ),
    # Published OPT models (d_model, layers, heads).
    "125m": _opt(768, 12, 12),
    "350m": _opt(1024, 24, 16, word_embed_proj_dim=512, do_layer_norm_before=False),
    "1.3b": _opt(2048, 24, 32),
    "2.7b": _opt(2560, 32, 32),
    "6.7b": _opt(4096, 32, 32),
    "13b": _opt(5120, 40, 40),
    "30b": _opt(7168, 48, 56),
    "66b": _opt(9216, 64, 72),
    "175b": _opt(12288, 96, 96),
}


# The fields that tell sizes apart. The vocabulary and the position table may differ from the table's without making
# another size (a retrained tokenizer, a longer context).
SIZE_FIELDS: tuple[str, ...] = (
    "hidden_size", "ffn_dim", "num_layers", "num_heads", "word_embed_proj_dim", "do_layer_norm_before",
)


def size_differences(configured: Architecture, found: Architecture) -> list[str]:
    """``'field: configured vs found'`` for each of :data:`SIZE_FIELDS` on which the two differ (empty: same size)."""
    return [f"{f}: {getattr(configured, f)} vs {getattr(found, f)}" for f in SIZE_FIELDS
            if getattr(configured, f) != getattr(found, f)]


def sizes_like(arch: Architecture) -> list[str]:
    """Names in :data:`SIZES` of the same size as ``arch`` (equal on every :data:`SIZE_FIELDS`)."""
    return [name for name, a in SIZES.items() if not size_differences(a, arch)]


def get_model_config(name: str, **overrides: Any) -> OPTConfig:
    """The named size with default :class:`Runtime` and ``overrides`` (any Architecture or Runtime field) applied.

    >>> get_model_config('125m', dtype='bfloat16').arch.num_layers
    12
    """
    if name not in SIZES:
        raise ValueError(f"unknown model size {name!r}; valid sizes: {', '.join(SIZES)}")
    return OPTConfig(SIZES[name]).replace(**overrides)


def model_config_from(cfg: Any) -> OPTConfig:
    """OPTConfig from an app config (``configs/base.py``): ``cfg.model.size`` plus every other ``cfg.model`` entry
    that names an OPTConfig field (dtype, param_dtype, remat_policy, attention_impl, dropout, attention_dropout, and
    optionally architecture overrides such as vocab_size)."""
    model_cfg = cfg.model if hasattr(cfg, "model") else cfg
    items = dict(model_cfg.items()) if hasattr(model_cfg, "items") else dict(vars(model_cfg))
    if "size" not in items:
        raise ValueError("config has no model.size (a name from alert_jax/models/sizes.py SIZES)")
    overrides = {k: v for k, v in items.items() if k in ARCHITECTURE_FIELDS + RUNTIME_FIELDS}
    return get_model_config(str(items["size"]), **overrides)
