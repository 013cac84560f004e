"""Export a checkpoint to a Hugging Face OPT folder: what ``transformers`` (``AutoTokenizer`` and
``OPTForCausalLM.from_pretrained``) and tools built on it (lm-evaluation-harness ``--model hf``) load.

The folder holds:

* ``config.json`` and the weights, ``model.safetensors`` or shards of at most ``max_shard_size`` with
  ``model.safetensors.index.json`` (:func:`alert_jax.io.convert.to_hf`, which writes one tensor at a time);
* ``generation_config.json``: the tokenizer's special ids (OPT's: bos 2, eos 2, pad 1), so ``generate`` stops at
  ``</s>`` as alert-jax's decoder does;
* the tokenizer: ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``
  (:meth:`alert_jax.io.tokenizers.BPETokenizer.save_hf`: same ids as alert-jax, ``</s>`` prepended).

**Tokenizer backends.** Byte-level BPE (OPT's own ``vocab.json`` + ``merges.txt``, or any ``tokenizer.json``) is
written as a ``tokenizer.json`` that transformers loads as is, so its ids are alert-jax's. A SentencePiece tokenizer
(the tiny configs train one) is refused with :class:`ExportError`: transformers has no loader that reproduces its ids
(its SentencePiece converters add a dummy prefix and differ in whitespace handling), and a folder whose tokenizer
silently encodes differently would score wrongly. Pass a BPE tokenizer (``tokenizer='bpe:DIR'``) for such a run.

The model is loaded through :func:`alert_jax.io.loader.load_model` (``ckpt:DIR[@SELECT]``, ``hf:DIR``,
``metaseq:FILE``), sharded over every local device (fsdp), in float32; the tokenizer is the explicit spec, else the
one stored beside the weights.

``out`` may be a bucket URL (``gs://...``): every file goes through ``etils.epath`` (a shard is streamed into a local
temporary file and uploaded, so memory holds one tensor), and ``overwrite`` / :func:`remove_if_created` work there too.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from etils import epath

from alert_jax.io import convert, files, loader, safetensors_shards, tokenizers
from alert_jax.models.sizes import DTYPES, OPTConfig, get_model_config
from alert_jax.parallel import distributed
from alert_jax.parallel.sharding import make_mesh

if TYPE_CHECKING:
    from alert_jax.models.opt import OPT

log = logging.getLogger("alert_jax.io")

GENERATION_CONFIG_FILE = "generation_config.json"
# Files an export writes besides the weights; ``overwrite`` removes these and earlier weight files only.
_EXPORT_FILES = ("config.json", GENERATION_CONFIG_FILE, "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.json", "merges.txt", safetensors_shards.INDEX_FILE)


class ExportError(ValueError):
    """An export that cannot be made as asked (output folder, dtype, tokenizer); the message names the setting."""


def generation_config_dict(tokenizer: tokenizers.Tokenizer) -> dict:
    """``generation_config.json``: greedy by default, the tokenizer's bos / eos / pad ids (OPT: 2, 2, 1)."""
    return {"bos_token_id": int(tokenizer.bos_id), "eos_token_id": int(tokenizer.eos_id),
            "pad_token_id": int(tokenizer.pad_id), "do_sample": False}


def out_path(out: str | os.PathLike) -> epath.Path:
    """``out`` as an ``epath.Path``: a local path with ``~`` expanded, a bucket URL as it is."""
    return epath.Path(out) if files.is_url(out) else epath.Path(out).expanduser()


def check_out_dir(out: str | os.PathLike, overwrite: bool) -> epath.Path:
    """``out`` as a path (local or a bucket URL), refused when it is a file or a non-empty folder (unless
    ``overwrite``)."""
    path = out_path(out)
    if path.exists() and not path.is_dir():
        raise ExportError(f"--out={out}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ExportError(f"--out={out}: folder exists and is not empty; pass --overwrite to replace its export files")
    return path


def _clear_previous_export(path: epath.Path) -> None:
    """Removes what an earlier export wrote, so no stale shard of a differently sharded export stays behind."""
    if not path.is_dir():
        return
    for f in path.iterdir():
        if f.name in _EXPORT_FILES or fnmatch.fnmatch(f.name, "model*.safetensors"):
            if not f.is_dir():
                f.unlink()


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ExportError(f"--dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    return dtype


def check_tokenizer(tokenizer: tokenizers.Tokenizer | None, origin: str) -> tokenizers.BPETokenizer:
    """The tokenizer if an export can write it (byte-level BPE), else :class:`ExportError` saying what to pass;
    ``origin`` names where it came from in the message."""
    if tokenizer is None:
        raise ExportError(f"{origin} carries no tokenizer; pass --tokenizer=bpe:DIR (e.g. OPT's vocab.json + "
                          "merges.txt)")
    if not isinstance(tokenizer, tokenizers.BPETokenizer):
        raise ExportError(
            f"the tokenizer of {origin} is {tokenizer!r}: a SentencePiece model has no Hugging Face "
            "tokenizer that reproduces its ids, so it cannot be exported; export a run trained with a byte-level BPE "
            "tokenizer (--tokenizer=bpe:DIR)")
    return tokenizer


def export_model(
    model: OPT,
    tokenizer: tokenizers.Tokenizer,
    out: str | os.PathLike,
    *,
    dtype: str = "float32",
    max_shard_size: str | int = "5GB",
    overwrite: bool = False,
    progress: Callable[[int, int, epath.Path], None] | None = None,
) -> epath.Path:
    """Writes ``model`` (an ``OPT``) and ``tokenizer`` into the folder ``out`` (module docstring); returns it."""
    check_dtype(dtype)
    max_bytes = safetensors_shards.parse_size(max_shard_size)
    path = check_out_dir(out, overwrite)
    tok = check_tokenizer(tokenizer, "the model to export")
    if tok.vocab_size > model.config.arch.vocab_size:
        raise ExportError(f"the tokenizer has {tok.vocab_size} ids but the model's vocabulary is "
                          f"{model.config.arch.vocab_size}")
    if distributed.is_primary():
        _clear_previous_export(path)
    special = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
    convert.to_hf(model, path, dtype=dtype, max_shard_size=max_bytes, special_ids=special, progress=progress)
    if distributed.is_primary():
        files.atomic_write_text(path / GENERATION_CONFIG_FILE, json.dumps(generation_config_dict(tok), indent=2) + "\n")
        tok.save_hf(path, model_max_length=model.config.arch.max_position_embeddings)
    return path


def export(
    init_from: str,
    out: str | os.PathLike,
    *,
    dtype: str = "float32",
    max_shard_size: str | int = "5GB",
    tokenizer: str = "",
    size: str = "",
    overwrite: bool = False,
    progress: Callable[[int, int, epath.Path], None] | None = None,
) -> epath.Path:
    """Loads ``init_from`` (``loader.load_model``) and exports it with its tokenizer (``tokenizer``: an explicit spec,
    else the one beside the weights) into ``out``.

    ``size``: a model size name (``models/sizes.py``), needed only for ``metaseq:`` files, whose architecture is not
    stored with them. Every input is checked (dtype, shard size, output folder, checkpoint, tokenizer) before any
    weight is read. Raises :class:`ExportError`, ``CheckpointError``, ``CheckpointNotFoundError`` or
    ``TokenizerLoadError`` naming the setting.
    """
    check_dtype(dtype)
    max_bytes = safetensors_shards.parse_size(max_shard_size)
    check_out_dir(out, overwrite)
    spec = loader.InitFrom.parse(init_from)
    if not spec.kind:
        raise ExportError("--init_from is empty; expected ckpt:DIR, hf:DIR or metaseq:FILE")
    if spec.kind == "metaseq" and not size:
        raise ExportError(f"init_from={init_from!r}: a metaseq checkpoint stores no architecture; pass --size=NAME "
                          "(e.g. 13b)")
    try:
        base = get_model_config(size or "tiny", dtype="float32", param_dtype="float32", dropout=0.0,
                                attention_dropout=0.0)
    except ValueError as e:
        raise ExportError(f"--size={size!r}: {e}") from e
    config: OPTConfig = base
    if spec.kind != "metaseq":
        with warnings.catch_warnings():  # ``base``'s architecture is a placeholder: the checkpoint's always wins
            warnings.simplefilter("ignore")
            config = loader.resolve_config(spec, base)
    check_tokenizer(loader.find_tokenizer(spec, tokenizer), f"init_from={init_from!r}")
    # A limit below the largest tensor fails here, from the shapes alone, not after the weights are loaded.
    safetensors_shards.plan_shards(convert.hf_tensor_specs(config, dtype), max_bytes)
    loaded = loader.load_model(spec, config, make_mesh((1, -1, 1)), tokenizer=tokenizer)
    log.info("loaded %s (step %s) from %s", init_from, loaded.step, loaded.source)
    return export_model(loaded.model, loaded.tokenizer, out, dtype=dtype, max_shard_size=max_shard_size,
                        overwrite=overwrite, progress=progress)


def remove_if_created(path: str | os.PathLike, existed: bool) -> None:
    """Removes the folder ``path`` (local or in a bucket) after a failed export when this export created it."""
    if not existed:
        try:
            files.remove_folder(out_path(path))
        except OSError as e:  # the export's own error is the one to report
            log.warning("could not remove %s after the failed export: %s", path, e)
