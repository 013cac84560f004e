"""Checkpoint conversion: Hugging Face OPT (safetensors, sharded safetensors, pytorch ``.bin``) and metaseq
consolidated checkpoints <-> alert_jax :class:`~alert_jax.models.opt.OPT`.

Weight layouts (HF ``nn.Linear`` stores ``weight [out, in]``; alert_jax stores ``kernel [in, ...out]``)::

    decoder.embed_tokens.weight         [V, E]    -> token_embedding          (same)
    decoder.embed_positions.weight      [P+2, D]  -> position_embedding       (same)
    decoder.project_in.weight           [D, E]    -> project_in_kernel [E, D] (transpose)
    decoder.project_out.weight          [E, D]    -> project_out_kernel [D, E]
    decoder.final_layer_norm.{weight,bias}        -> final_ln_{scale,bias}
    decoder.layers.i.self_attn.{q,k,v}_proj.weight [D, D] -> layers.{q,k,v}_kernel[i] [D, N, H]
    decoder.layers.i.self_attn.{q,k,v}_proj.bias   [D]    -> layers.{q,k,v}_bias[i]   [N, H]
    decoder.layers.i.self_attn.out_proj.weight     [D, D] -> layers.out_kernel[i]     [N, H, D]
    decoder.layers.i.self_attn_layer_norm.*        -> layers.attn_ln_*[i]
    decoder.layers.i.fc1.weight [F, D] / fc2.weight [D, F] -> layers.fc1_kernel[i] [D, F] / fc2_kernel[i] [F, D]
    decoder.layers.i.final_layer_norm.*            -> layers.ffn_ln_*[i]
    lm_head.weight                                 tied to embed_tokens (checked equal, then ignored)

HF names may carry a ``model.`` prefix (``OPTForCausalLM``) or not (``OPTModel``). metaseq names differ only in
``decoder.layer_norm`` (final LN), ``decoder.project_{in,out}_dim`` and, in some checkpoints, a fused
``self_attn.qkv_proj`` whose rows are ordered K, V, Q (metaseq's sequence-parallel layer). Reading the files into
one view under these canonical HF names (safetensors, sharded safetensors, ``.bin``, metaseq state dicts) is
:mod:`alert_jax.io.weight_files`' job; this module holds the table above, the checks, the assembly and the
entry points (``from_hf``, ``to_hf``, ``from_metaseq``); ``io.loader`` parses ``init_from`` and calls them.

Writing (``to_hf``) goes through the same table the other way, one tensor at a time (``hf_tensor_getter`` gathers
a single HF tensor from a possibly sharded model), into sharded safetensors planned and written by
:mod:`alert_jax.io.safetensors_shards`; :mod:`alert_jax.io.export` adds the tokenizer and generation config.

Loading checks every weight before anything is allocated: a missing, unexpected or mis-shaped weight raises
:class:`CheckpointError` naming it (and both shapes). Arrays are placed one parameter at a time, directly with
their sharding on ``mesh`` (``jax.make_array_from_callback``: each process builds only its own shards).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from alert_jax.io.files import atomic_write_text, is_url, local_copy
from alert_jax.io.safetensors_shards import TensorSpec, parse_size, plan_shards, write_shards
from alert_jax.io.weight_files import WEIGHT_FILES, CheckpointError, TensorSource, metaseq_source, open_hf_weights
from alert_jax.models.opt import OPT, abstract_model
from alert_jax.models.sizes import Architecture, OPTConfig, Runtime
from alert_jax.parallel import distributed
from alert_jax.parallel.sharding import logical_sharding

# Fetched beside the weights from the hub so evaluation finds the checkpoint's own tokenizer (GPT-2 byte-level BPE).
TOKENIZER_FILES: tuple[str, ...] = ("vocab.json", "merges.txt", "tokenizer.json", "special_tokens_map.json")
_IGNORED_SUFFIXES = ("version", "_float_tensor")
# What a bucket folder's local copy holds: config, index and tokenizer files, then safetensors weights, else torch's.
_BUCKET_COPIES: tuple[tuple[str, ...], ...] = (("*.json", "*.txt", "*.model", "model*.safetensors"),
                                               ("*.json", "*.txt", "*.model", "pytorch_model*.bin"))


# ----------------------------------------------------------------------------------------------------------------
# The name/shape/transform table
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Rule:
    """How one alert_jax param relates to HF tensor(s): ``hf`` is a name (``{i}`` = layer index for stacked
    params), ``hf_shape`` the HF tensor shape, ``to_ours``/``to_hf`` the per-tensor transforms."""

    hf: str
    hf_shape: tuple[int, ...]
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]
    stacked: bool


def _rules(c: OPTConfig) -> dict[tuple[str, ...], _Rule]:
    D, N, H, F, E = c.arch.hidden_size, c.arch.num_heads, c.arch.head_dim, c.arch.ffn_dim, c.arch.embed_dim
    same = lambda a: a  # noqa: E731
    T = lambda a: a.T  # noqa: E731
    rules: dict[tuple[str, ...], _Rule] = {
        ("token_embedding",): _Rule("decoder.embed_tokens.weight", (c.arch.vocab_size, E), same, same, False),
        ("position_embedding",): _Rule(
            "decoder.embed_positions.weight", (c.arch.max_position_embeddings + 2, D), same, same, False
        ),
    }
    if c.arch.has_projection:
        rules[("project_in_kernel",)] = _Rule("decoder.project_in.weight", (D, E), T, T, False)
        rules[("project_out_kernel",)] = _Rule("decoder.project_out.weight", (E, D), T, T, False)
    if c.arch.has_final_layer_norm:
        rules[("final_ln_scale",)] = _Rule("decoder.final_layer_norm.weight", (D,), same, same, False)
        rules[("final_ln_bias",)] = _Rule("decoder.final_layer_norm.bias", (D,), same, same, False)

    def layer(name: str, hf: str, shape: tuple[int, ...], to_ours: Callable, to_hf: Callable) -> None:
        rules[("layers", name)] = _Rule("decoder.layers.{i}." + hf, shape, to_ours, to_hf, True)

    for p in ("q", "k", "v"):
        layer(f"{p}_kernel", f"self_attn.{p}_proj.weight", (D, D), lambda w: w.T.reshape(D, N, H),
              lambda a: a.reshape(D, N * H).T)
        layer(f"{p}_bias", f"self_attn.{p}_proj.bias", (D,), lambda b: b.reshape(N, H), lambda a: a.reshape(N * H))
    layer("out_kernel", "self_attn.out_proj.weight", (D, D), lambda w: w.T.reshape(N, H, D),
          lambda a: a.reshape(N * H, D).T)
    layer("out_bias", "self_attn.out_proj.bias", (D,), same, same)
    layer("attn_ln_scale", "self_attn_layer_norm.weight", (D,), same, same)
    layer("attn_ln_bias", "self_attn_layer_norm.bias", (D,), same, same)
    layer("fc1_kernel", "fc1.weight", (F, D), T, T)
    layer("fc1_bias", "fc1.bias", (F,), same, same)
    layer("fc2_kernel", "fc2.weight", (D, F), T, T)
    layer("fc2_bias", "fc2.bias", (D,), same, same)
    layer("ffn_ln_scale", "final_layer_norm.weight", (D,), same, same)
    layer("ffn_ln_bias", "final_layer_norm.bias", (D,), same, same)
    return rules


def expected_hf_shapes(config: OPTConfig) -> dict[str, tuple[int, ...]]:
    """``{canonical HF name (no 'model.' prefix): shape}`` for every tensor the config implies."""
    out = {}
    for rule in _rules(config).values():
        if rule.stacked:
            out.update({rule.hf.format(i=i): rule.hf_shape for i in range(config.arch.num_layers)})
        else:
            out[rule.hf] = rule.hf_shape
    return out




# ----------------------------------------------------------------------------------------------------------------
# Validation and assembly
# ----------------------------------------------------------------------------------------------------------------


def _check_tied_head(source: TensorSource, name: str) -> None:
    """A stored LM head must equal the token embedding (OPT ties them); then it is dropped."""
    if name not in source.names():
        return
    emb = "decoder.embed_tokens.weight"
    if emb in source.names():
        if source.shape(name) != source.shape(emb):
            raise CheckpointError(
                f"{source.origin}: weight {name} has shape {source.shape(name)} but the tied "
                f"{emb} has shape {source.shape(emb)}"
            )
        if not np.array_equal(source.get(name), source.get(emb)):
            raise CheckpointError(
                f"{source.origin}: {name} differs from {emb}; OPT ties the LM head to the token embedding and "
                "untied heads are not supported"
            )
    source.pop(name)


def _validate(source: TensorSource, config: OPTConfig, config_origin: str) -> None:
    expected = expected_hf_shapes(config)
    names = {n for n in source.names() if not n.endswith(_IGNORED_SUFFIXES)}
    missing = sorted(set(expected) - names, key=_natural_key)
    unexpected = sorted(names - set(expected), key=_natural_key)
    if missing:
        raise CheckpointError(
            f"{source.origin}: missing weight(s) {_few(missing)} required by the config from {config_origin}"
        )
    if unexpected:
        raise CheckpointError(
            f"{source.origin}: unexpected weight(s) {_few(unexpected)} not used by the config from {config_origin} "
            f"(layers={config.arch.num_layers}, word_embed_proj_dim={config.arch.embed_dim}, "
            f"do_layer_norm_before={config.arch.do_layer_norm_before})"
        )
    for name in sorted(expected, key=_natural_key):
        if source.shape(name) != expected[name]:
            raise CheckpointError(
                f"{source.origin}: weight {name} has shape {source.shape(name)} in the checkpoint but the config "
                f"from {config_origin} expects shape {expected[name]}"
            )


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _few(names: list[str], k: int = 5) -> str:
    shown = ", ".join(names[:k])
    return shown + (f" ... ({len(names)} in all)" if len(names) > k else "")


def _place(array: np.ndarray, var: nnx.Variable, mesh: jax.sharding.Mesh | None) -> jax.Array:
    if mesh is None:
        return jnp.asarray(array)
    sharding = logical_sharding(mesh, var.get_metadata().get("out_sharding"), array.shape)
    return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def _build(config: OPTConfig, source: TensorSource, mesh: jax.sharding.Mesh | None, config_origin: str) -> OPT:
    """Validates ``source`` against ``config`` and assembles the model, one parameter at a time."""
    _check_tied_head(source, "lm_head.weight")
    _validate(source, config, config_origin)
    rules = _rules(config)
    dtype = jnp.dtype(config.runtime.param_dtype)
    graphdef, state = nnx.split(abstract_model(config))

    def fill(path: tuple, var: nnx.Variable) -> nnx.Variable:
        key = tuple(str(p) for p in path)
        rule = rules[key]
        if rule.stacked:
            array = np.stack(
                [rule.to_ours(source.get(rule.hf.format(i=i))) for i in range(config.arch.num_layers)]
            )
        else:
            array = rule.to_ours(source.get(rule.hf))
        array = np.ascontiguousarray(array.astype(dtype))
        if array.shape != tuple(var.shape):  # the rule table and the model disagree: a bug, not a bad file
            raise AssertionError(f"{key}: converted shape {array.shape} != model shape {tuple(var.shape)}")
        return var.replace(_place(array, var, mesh))

    state = nnx.map_state(fill, state)
    return nnx.merge(graphdef, state)


# ----------------------------------------------------------------------------------------------------------------
# Hugging Face
# ----------------------------------------------------------------------------------------------------------------

_HF_DEFAULTS: dict[str, Any] = {  # transformers' OPTConfig defaults, used for keys a config.json leaves out
    "vocab_size": 50272,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "ffn_dim": 3072,
    "max_position_embeddings": 2048,
    "do_layer_norm_before": True,
    "word_embed_proj_dim": None,
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "num_attention_heads": 12,
}
# config.json entries we do not implement, with the only value we accept.
_HF_REQUIRED: dict[str, Any] = {
    "activation_function": "relu",
    "enable_bias": True,
    "layer_norm_elementwise_affine": True,
    "_remove_final_layer_norm": False,
    "tie_word_embeddings": True,
    "layerdrop": 0.0,
}


def _hf_directory(path: str | os.PathLike) -> pathlib.Path:
    p = pathlib.Path(path).expanduser()
    return p.parent if p.is_file() else p


def load_hf_config(path: str | os.PathLike) -> OPTConfig:
    """OPTConfig from a HF ``config.json`` (``path`` = the file, its directory, or a weights file beside it).
    Runtime fields (dtype, remat, attention impl) get their defaults; dropout rates come from the file."""
    directory = _hf_directory(path)
    file = pathlib.Path(path) if str(path).endswith(".json") else directory / "config.json"
    if not file.is_file():
        raise CheckpointError(f"no config.json in {directory} (a Hugging Face OPT checkpoint directory needs one)")
    try:
        raw = json.loads(file.read_text())
    except ValueError as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from e
    if raw.get("model_type", "opt") != "opt":
        raise CheckpointError(f"{file}: model_type is {raw.get('model_type')!r}, expected 'opt'")
    for key, value in _HF_REQUIRED.items():
        if key in raw and raw[key] != value:
            raise CheckpointError(f"{file}: {key}={raw[key]!r} is not supported (alert_jax's OPT needs {value!r})")
    h = {**_HF_DEFAULTS, **{k: v for k, v in raw.items() if k in _HF_DEFAULTS}}
    hidden = int(h["hidden_size"])
    proj = h["word_embed_proj_dim"]
    try:
        arch = Architecture(
            hidden_size=hidden,
            ffn_dim=int(h["ffn_dim"]),
            num_layers=int(h["num_hidden_layers"]),
            num_heads=int(h["num_attention_heads"]),
            vocab_size=int(h["vocab_size"]),
            max_position_embeddings=int(h["max_position_embeddings"]),
            word_embed_proj_dim=None if proj is None or int(proj) == hidden else int(proj),
            do_layer_norm_before=bool(h["do_layer_norm_before"]),
        )
        return OPTConfig(arch, Runtime(dropout=float(h["dropout"]), attention_dropout=float(h["attention_dropout"])))
    except ValueError as e:
        raise CheckpointError(f"{file}: {e}") from e


def hf_config_dict(config: OPTConfig, dtype: str = "float32", *, bos_token_id: int = 2, eos_token_id: int = 2,
                   pad_token_id: int = 1) -> dict[str, Any]:
    """The ``config.json`` transformers' ``OPTForCausalLM`` expects for ``config`` (special ids default to OPT's)."""
    return {
        "architectures": ["OPTForCausalLM"],
        "model_type": "opt",
        "vocab_size": config.arch.vocab_size,
        "hidden_size": config.arch.hidden_size,
        "num_hidden_layers": config.arch.num_layers,
        "ffn_dim": config.arch.ffn_dim,
        "num_attention_heads": config.arch.num_heads,
        "max_position_embeddings": config.arch.max_position_embeddings,
        "word_embed_proj_dim": config.arch.embed_dim,
        "do_layer_norm_before": config.arch.do_layer_norm_before,
        "_remove_final_layer_norm": False,
        "dropout": config.runtime.dropout,
        "attention_dropout": config.runtime.attention_dropout,
        "activation_function": "relu",
        "layerdrop": 0.0,
        "init_std": 0.02,
        "enable_bias": True,
        "layer_norm_elementwise_affine": True,
        "tie_word_embeddings": True,
        "use_cache": True,
        "pad_token_id": pad_token_id,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "dtype": dtype,
    }


def _looks_like_hub_id(spec: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", spec) is not None


def _bucket_directory(url: str) -> pathlib.Path:
    """A local copy (``io.files.local_copy``) of the checkpoint folder ``url`` (or of the folder of a file in it):
    its config, index and tokenizer files and one kind of weight files (safetensors, else torch's)."""
    folder = epath.Path(url)
    if folder.is_file():
        folder = folder.parent
    elif not folder.is_dir():
        raise CheckpointError(f"{url} does not exist (expected a Hugging Face OPT checkpoint folder)")
    for patterns in _BUCKET_COPIES:
        directory = local_copy(folder, patterns)
        if any((directory / f).is_file() for f in WEIGHT_FILES):
            break
    return directory


def resolve_hf_path(path_or_hub_id: str | os.PathLike) -> pathlib.Path:
    """A local directory for ``path_or_hub_id``: an existing path as is; a bucket folder (``gs://...``) copied into a
    local temporary folder (:func:`_bucket_directory`, once per process); else a Hub id ('facebook/opt-1.3b')
    downloaded (or found in the local HF cache) with ``huggingface_hub.snapshot_download``."""
    spec = str(path_or_hub_id)
    if is_url(spec):
        return _bucket_directory(spec)
    path = pathlib.Path(spec).expanduser()
    if path.exists():
        return _hf_directory(path)
    if not _looks_like_hub_id(spec):
        raise CheckpointError(
            f"{spec!r} is neither an existing file or directory nor a Hub id like 'facebook/opt-1.3b'"
        )
    try:
        import huggingface_hub
        from huggingface_hub import errors as hub_errors
    except ImportError as e:
        raise CheckpointError(
            f"{spec!r} is not a local path, and downloading it from the Hub needs the huggingface_hub package"
        ) from e
    try:
        directory = pathlib.Path(
            huggingface_hub.snapshot_download(
                spec, allow_patterns=["config.json", "model*.safetensors", "model.safetensors.index.json",
                                      *TOKENIZER_FILES]
            )
        )
        if not any((directory / f).is_file() for f in WEIGHT_FILES):
            directory = pathlib.Path(
                huggingface_hub.snapshot_download(
                    spec, allow_patterns=["config.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
                                          *TOKENIZER_FILES]
                )
            )
    except (hub_errors.RepositoryNotFoundError, hub_errors.GatedRepoError) as e:
        raise CheckpointError(
            f"{spec!r} is not a local path and the Hugging Face Hub has no accessible repository of that name: {e}"
        ) from e
    except Exception as e:  # noqa: BLE001 - connection errors come in many types (httpx, OSError, offline mode)
        raise CheckpointError(
            f"{spec!r} is not a local path, and the Hugging Face Hub is unreachable ({type(e).__name__}: {e}); "
            "download the checkpoint where there is network access and pass its local directory instead"
        ) from e
    return directory


def from_hf(path_or_hub_id: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None, **overrides: Any) -> OPT:
    """Loads a Hugging Face OPT checkpoint (directory, a file in it, or Hub id).

    Args:
      path_or_hub_id: directory holding ``config.json`` and ``model.safetensors`` / sharded safetensors with
        ``model.safetensors.index.json`` / ``pytorch_model.bin`` (+ index); or a Hub id.
      mesh: place params sharded on this mesh by their logical axes (None = default device).
      **overrides: OPTConfig fields replacing the checkpoint's (dtype, param_dtype, remat_policy,
        attention_impl, dropout, attention_dropout). Architecture overrides that contradict the weights fail
        the shape check.
    """
    directory = resolve_hf_path(path_or_hub_id)
    config = load_hf_config(directory)
    if overrides:
        config = config.replace(**overrides)
    source = open_hf_weights(directory)
    return _build(config, source, mesh, str(directory / "config.json"))


def hf_tensor_specs(config: OPTConfig, dtype: str) -> list[TensorSpec]:
    """The tensors an ``OPTForCausalLM`` file holds for ``config`` (``model.``-prefixed names, LM head omitted: tied),
    in HF's order (embeddings, final layer norm, then layer by layer), each in ``dtype``."""
    shapes = expected_hf_shapes(config)
    return [TensorSpec("model." + name, shapes[name], dtype) for name in sorted(shapes, key=_natural_key)]


def hf_tensor_getter(model: OPT) -> Callable[[str], np.ndarray]:
    """``get(name)``: one tensor of :func:`hf_tensor_specs` as a host numpy array in the param dtype, gathered on its
    own (a stacked layer param is sliced to its layer on the devices first), so host memory holds one tensor at a
    time. Every process must make the same calls for a model sharded across processes."""
    rules = _rules(model.config)
    params = {tuple(str(p) for p in path): var for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    where: dict[str, tuple[tuple[str, ...], int | None]] = {}
    for key, rule in rules.items():
        if rule.stacked:
            where.update({"model." + rule.hf.format(i=i): (key, i) for i in range(model.config.arch.num_layers)})
        else:
            where["model." + rule.hf] = (key, None)

    def get(name: str) -> np.ndarray:
        key, layer = where[name]
        value = params[key][...]
        array = distributed.host_array(value if layer is None else value[layer])
        return np.ascontiguousarray(rules[key].to_hf(array))

    return get


def to_hf_state_dict(model: OPT, dtype: str | None = None) -> dict[str, np.ndarray]:
    """``{'model.decoder...': numpy array}`` in HF layout (LM head omitted: tied), all in host memory at once (small
    models; :func:`to_hf` writes big ones a tensor at a time). Every process must call it for a model sharded across
    processes."""
    get = hf_tensor_getter(model)
    out_dtype = np.dtype(jnp.dtype(dtype)) if dtype is not None else None
    return {t.name: get(t.name) if out_dtype is None else get(t.name).astype(out_dtype)
            for t in hf_tensor_specs(model.config, dtype or model.config.runtime.param_dtype)}


def to_hf(
    model: OPT,
    path: str | os.PathLike,
    *,
    dtype: str | None = None,
    max_shard_size: str | int = "5GB",
    special_ids: Mapping[str, int] | None = None,
    progress: Callable[[int, int, epath.Path], None] | None = None,
) -> epath.Path:
    """Writes ``config.json`` and the weights (``model.safetensors``, or shards of at most ``max_shard_size`` with
    ``model.safetensors.index.json``: :mod:`alert_jax.io.safetensors_shards`) loadable by
    ``transformers.OPTForCausalLM.from_pretrained``, one tensor in host memory at a time.

    ``dtype`` ('float32', 'bfloat16', 'float16') converts on the way out; default keeps the param dtype.
    ``special_ids``: ``bos_token_id`` / ``eos_token_id`` / ``pad_token_id`` for ``config.json`` (default OPT's).
    ``progress(i, n, path)`` after each shard. ``path`` may be a bucket URL. Every process gathers; only process 0
    writes."""
    out_dtype = dtype or model.config.runtime.param_dtype
    shards = plan_shards(hf_tensor_specs(model.config, out_dtype), parse_size(max_shard_size))
    get = hf_tensor_getter(model)
    directory = epath.Path(path) if is_url(path) else epath.Path(path).expanduser()
    if jax.process_index() != 0:
        for shard in shards:  # the same gathers as process 0, in the same order
            for t in shard.tensors:
                get(t.name)
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    config = hf_config_dict(model.config, out_dtype, **dict(special_ids or {}))
    write_shards(directory, shards, get, progress=progress)
    atomic_write_text(directory / "config.json", json.dumps(config, indent=2) + "\n")
    return directory


# ----------------------------------------------------------------------------------------------------------------
# metaseq
# ----------------------------------------------------------------------------------------------------------------


def from_metaseq(
    file_or_dict: str | os.PathLike | Mapping[str, Any],
    config: OPTConfig,
    *,
    mesh: jax.sharding.Mesh | None = None,
    trust_pickle: bool = False,
) -> OPT:
    """Loads a consolidated (not model-parallel-sharded) metaseq checkpoint into the architecture ``config``.

    ``file_or_dict``: a ``.pt`` file or an already loaded dict; either the full checkpoint (weights under
    ``'model'``) or the weights dict itself; a bucket file (``gs://...``) is read from a local copy. Files are read
    with ``torch.load(weights_only=True)``; checkpoints that also pickle training args need ``trust_pickle=True``
    (only for files you trust: unpickling runs code).
    """
    if isinstance(file_or_dict, Mapping):
        state, origin = file_or_dict, "<metaseq state dict>"
    else:
        import torch

        origin = str(file_or_dict)
        local = local_copy(origin)  # a bucket file is copied first: torch reads (and memory-maps) local files
        if not local.is_file():
            raise CheckpointError(f"metaseq checkpoint {origin} does not exist")
        try:
            state = torch.load(local, map_location="cpu", weights_only=not trust_pickle, mmap=True)
        except Exception as e:  # noqa: BLE001
            hint = (
                "" if trust_pickle else
                "; if it pickles training args besides tensors and you trust it, pass trust_pickle=True, or re-save "
                "only its 'model' dict"
            )
            raise CheckpointError(f"{origin}: cannot read the checkpoint ({type(e).__name__}: {e}){hint}") from e
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    return _build(config, metaseq_source(state, origin), mesh, "the given OPTConfig")
