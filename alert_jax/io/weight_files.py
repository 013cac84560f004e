"""Checkpoint file readers for :mod:`alert_jax.io.convert`: a :class:`TensorSource` is a read-only, lazily loaded
``{canonical HF name: tensor}`` view of one checkpoint.

* :func:`open_hf_weights`: a Hugging Face OPT directory -- the first of :data:`WEIGHT_FILES` present
  (``model.safetensors.index.json`` + its shards, ``model.safetensors``, ``pytorch_model.bin.index.json`` + its
  shards, ``pytorch_model.bin``).
* :func:`metaseq_source`: a loaded metaseq state dict, renamed onto HF names (``decoder.layer_norm`` ->
  ``decoder.final_layer_norm``, ``decoder.project_{in,out}_dim`` -> ``decoder.project_{in,out}``,
  ``decoder.output_projection`` -> ``lm_head``) with a fused ``self_attn.qkv_proj`` (rows ordered K, V, Q) split
  into three tensors.

Canonical names carry no ``model.`` prefix (``OPTForCausalLM`` and ``OPTModel`` checkpoints read alike). Only
shapes are read up front; a tensor is read when its loader runs, so :mod:`alert_jax.io.convert` checks every name and
shape against the config before anything is allocated. ``bfloat16`` torch tensors come back as
``ml_dtypes.bfloat16`` numpy arrays.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["WEIGHT_FILES", "CheckpointError", "TensorSource", "metaseq_source", "open_hf_weights", "torch_to_numpy"]

WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


class CheckpointError(ValueError):
    """A checkpoint that does not match the model it is loaded into (or cannot be found / read)."""


# ----------------------------------------------------------------------------------------------------------------
# Tensor sources
# ----------------------------------------------------------------------------------------------------------------


def torch_to_numpy(t: Any) -> np.ndarray:
    """A torch tensor (or numpy array, returned as is) as a numpy array of the same shape and dtype (bfloat16 as
    ``ml_dtypes.bfloat16``, which numpy lacks)."""
    if isinstance(t, np.ndarray):
        return t
    import torch  # lazily: only .bin files and metaseq checkpoints need torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


class TensorSource:
    """Read-only view of named tensors: canonical name -> (shape, loader). ``origin`` names it in errors."""

    def __init__(self, origin: str):
        self.origin = origin
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._loaders: dict[str, Callable[[], np.ndarray]] = {}

    def add(self, name: str, shape: Iterable[int], loader: Callable[[], np.ndarray]) -> None:
        if name in self._shapes:
            raise CheckpointError(f"{self.origin}: weight {name!r} appears twice (with and without 'model.' prefix?)")
        self._shapes[name] = tuple(int(s) for s in shape)
        self._loaders[name] = loader

    def names(self) -> set[str]:
        return set(self._shapes)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def get(self, name: str) -> np.ndarray:
        return np.asarray(self._loaders[name]())

    def pop(self, name: str) -> None:
        self._shapes.pop(name, None)
        self._loaders.pop(name, None)


def _canonical_hf_name(name: str) -> str:
    return name[len("model."):] if name.startswith("model.") else name


def _add_safetensors(source: TensorSource, file: pathlib.Path, only: set[str] | None = None) -> None:
    from safetensors import safe_open

    if not file.is_file():
        raise CheckpointError(f"{source.origin}: weights file {file.name} (listed in the index) does not exist")
    with safe_open(str(file), framework="np") as f:
        for raw in f.keys():
            if only is not None and raw not in only:
                continue
            shape = f.get_slice(raw).get_shape()

            def load(raw: str = raw) -> np.ndarray:
                with safe_open(str(file), framework="np") as g:
                    return g.get_tensor(raw)

            source.add(_canonical_hf_name(raw), shape, load)


def _add_torch_bin(source: TensorSource, file: pathlib.Path) -> None:
    import torch

    if not file.is_file():
        raise CheckpointError(f"{source.origin}: weights file {file.name} (listed in the index) does not exist")
    try:
        sd = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise CheckpointError(f"{file}: cannot read as a PyTorch state dict ({type(e).__name__}: {e})") from e
    for raw, t in sd.items():
        if hasattr(t, "shape"):
            source.add(_canonical_hf_name(raw), tuple(t.shape), lambda t=t: torch_to_numpy(t))


def open_hf_weights(directory: pathlib.Path) -> TensorSource:
    """The weights of the HF checkpoint ``directory``: the first of :data:`WEIGHT_FILES` found there (an index
    brings in every shard it lists); :class:`CheckpointError` when there is none or a listed shard is missing."""
    source = TensorSource(str(directory))
    for name in WEIGHT_FILES:
        file = directory / name
        if not file.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                weight_map = json.loads(file.read_text())["weight_map"]
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{file}: not a valid weight index (needs a 'weight_map' object): {e}") from e
            by_file: dict[str, set[str]] = {}
            for raw, shard in weight_map.items():
                by_file.setdefault(shard, set()).add(raw)
            for shard, raws in sorted(by_file.items()):
                if name.startswith("model.safetensors"):
                    _add_safetensors(source, directory / shard, raws)
                else:
                    _add_torch_bin(source, directory / shard)
        elif name.endswith(".safetensors"):
            _add_safetensors(source, file)
        else:
            _add_torch_bin(source, file)
        return source
    raise CheckpointError(
        f"no weights file in {directory}: looked for {', '.join(WEIGHT_FILES)}"
    )


# ----------------------------------------------------------------------------------------------------------------
# metaseq state dicts
# ----------------------------------------------------------------------------------------------------------------

_METASEQ_RENAMES = (
    ("decoder.layer_norm.", "decoder.final_layer_norm."),
    ("decoder.project_in_dim.", "decoder.project_in."),
    ("decoder.project_out_dim.", "decoder.project_out."),
    ("decoder.output_projection.", "lm_head."),
)


def metaseq_source(state: Mapping[str, Any], origin: str) -> TensorSource:
    """HF-canonical view of a metaseq state dict (renames; fused K,V,Q ``qkv_proj`` split in three)."""
    source = TensorSource(origin)
    for raw, value in state.items():
        if not hasattr(value, "shape"):
            continue
        name = raw[len("model."):] if raw.startswith("model.") else raw
        for old, new in _METASEQ_RENAMES:
            if name.startswith(old):
                name = new + name[len(old):]
        if ".self_attn.qkv_proj." in name:
            rows = int(value.shape[0])
            if rows % 3:
                raise CheckpointError(f"{origin}: fused weight {raw} has {rows} rows, not divisible into K, V, Q")
            part = rows // 3
            for j, proj in enumerate(("k_proj", "v_proj", "q_proj")):  # metaseq's fused order is K, V, Q
                source.add(
                    name.replace(".qkv_proj.", f".{proj}."),
                    (part, *value.shape[1:]),
                    lambda v=value, j=j: torch_to_numpy(v)[j * part:(j + 1) * part],
                )
        else:
            source.add(name, tuple(value.shape), lambda v=value: torch_to_numpy(v))
    return source
