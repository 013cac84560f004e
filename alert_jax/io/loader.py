"""The one model loader: ``init_from`` + the model config + the mesh -> the sharded model and its tokenizer.

``init_from`` (every app's setting, ``configs/base.py``) is one of:

* ``''`` -- a random initialisation of the configured model (seeded);
* ``hf:PATH_OR_HUB_ID`` -- a Hugging Face OPT checkpoint folder (or a file in it) or a Hub id (``io.convert``);
* ``metaseq:FILE`` -- a consolidated metaseq checkpoint, whose architecture must be the configured one;
  ``hf:`` and ``metaseq:`` paths may be bucket URLs (``hf:gs://BUCKET/DIR``): the files are read from a local copy
  (``io.files.local_copy``);
* ``ckpt:DIR`` -- an alert-jax training workdir, its ``checkpoints/`` folder (the best step, else the latest) or
  one step folder (``io.checkpoint``); only the parameters are read. ``ckpt:DIR@SELECT`` picks the step of a
  checkpoints folder another way (``io.checkpoint.SELECTIONS``: ``@best_dev_score``, ``@best_val_loss``,
  ``@best_dev_loss``, ``@latest``).

**Which config wins** (:func:`resolve_config`): the architecture comes from the checkpoint wherever it records one
(``config.json`` for ``hf:``, the saved app config for ``ckpt:``); a configured architecture that differs is named in
a warning and ignored. The runtime fields (dtypes, dropout, remat, attention kernel) always come from the loading
run's config; parameters are stored in its ``param_dtype``.

**Tokenizer** (:func:`find_tokenizer`): the explicit ``tokenizer`` spec when given (``io.tokenizers.load_tokenizer``),
else the one stored beside the weights (the ``hf:`` folder; ``checkpoints/tokenizer`` of a ``ckpt:`` run), else
``None`` (random init and metaseq carry none; the caller decides what that means).

Parameters are placed directly with their shardings on the mesh (nothing is materialised unsharded).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
from typing import Any

import jax
from etils import epath

from alert_jax.io import checkpoint, convert, tokenizers
from alert_jax.io.files import abspath, is_url
from alert_jax.io.weight_files import CheckpointError
from alert_jax.models import opt, sizes
from alert_jax.models.sizes import ARCHITECTURE_FIELDS, OPTConfig, model_config_from
from alert_jax.parallel import param_sharding

INIT_KINDS: tuple[str, ...] = ("hf", "metaseq", "ckpt")


@dataclasses.dataclass(frozen=True)
class InitFrom:
    """A parsed ``init_from`` setting: ``kind`` ('' = random init, 'hf', 'metaseq', 'ckpt'), ``location`` and, for
    ``ckpt``, the step ``select`` ion (``io.checkpoint.SELECTIONS``; 'best' unless the spec ends in ``@SELECT``)."""

    kind: str
    location: str
    select: str = "best"

    @classmethod
    def parse(cls, spec: str) -> InitFrom:
        """``'hf:facebook/opt-1.3b'`` -> ``InitFrom('hf', 'facebook/opt-1.3b')``; ``'ckpt:runs/a@latest'`` ->
        ``InitFrom('ckpt', 'runs/a', 'latest')``; ``''`` -> random init. Raises
        :class:`~alert_jax.io.weight_files.CheckpointError` naming the setting for anything else."""
        spec = str(spec or "").strip()
        if not spec:
            return cls("", "")
        kind, sep, location = spec.partition(":")
        if not sep or kind not in INIT_KINDS or not location:
            raise CheckpointError(
                f"init_from={spec!r}: expected '' (random init), 'hf:PATH_OR_HUB_ID', 'metaseq:FILE' or 'ckpt:DIR'"
            )
        if kind == "ckpt" and "@" in location:
            path, _, select = location.rpartition("@")
            if select not in checkpoint.SELECTIONS:
                raise CheckpointError(f"init_from={spec!r}: unknown checkpoint selection {select!r}; expected one "
                                      f"of {', '.join('@' + s for s in checkpoint.SELECTIONS)}")
            return cls(kind, path, select)
        return cls(kind, location)

    def __str__(self) -> str:
        suffix = f"@{self.select}" if self.kind == "ckpt" and self.select != "best" else ""
        return f"{self.kind}:{self.location}{suffix}" if self.kind else ""


@dataclasses.dataclass
class LoadedModel:
    """What :func:`load_model` returns.

    Attributes:
      model: the ``OPT`` module, parameters sharded on the mesh.
      tokenizer: the tokenizer (see the module docstring), or ``None``.
      init_from: the parsed setting.
      source: the resolved checkpoint path ('' for random init): the ``hf:`` folder, the metaseq file, or the
        ``ckpt:`` checkpoints folder.
      step: the restored step of a ``ckpt:`` checkpoint, else ``None``.
    """

    model: opt.OPT
    tokenizer: tokenizers.Tokenizer | None
    init_from: InitFrom
    source: str = ""
    step: int | None = None


def _check_architecture(init_from: InitFrom, configured: OPTConfig, found: OPTConfig) -> None:
    diff = [f for f in ARCHITECTURE_FIELDS if getattr(configured.arch, f) != getattr(found.arch, f)]
    if diff:
        warnings.warn(
            f"init_from={str(init_from)!r}: the checkpoint's architecture differs from the configured model in "
            f"{diff}; using the checkpoint's",
            stacklevel=3,
        )


def _ckpt_location(init_from: InitFrom) -> tuple[epath.Path, int]:
    if not epath.Path(init_from.location).expanduser().exists():
        raise checkpoint.CheckpointNotFoundError(
            f"init_from={str(init_from)!r}: checkpoint directory {init_from.location!r} does not exist"
        )
    return checkpoint.locate(init_from.location, init_from.select)


def checkpoint_config(init_from: str | InitFrom) -> OPTConfig | None:
    """The model config a checkpoint records (``config.json`` of an ``hf:`` folder, the saved app config of a
    ``ckpt:`` step), read without its weights; ``None`` for a random init and for ``metaseq:`` files, which record
    none (their weights' shapes are checked against the configured model when they load)."""
    spec = init_from if isinstance(init_from, InitFrom) else InitFrom.parse(init_from)
    if spec.kind == "hf":
        return convert.load_hf_config(convert.resolve_hf_path(spec.location))
    if spec.kind == "ckpt":
        root, step = _ckpt_location(spec)
        return model_config_from(checkpoint.load_config(root / str(step)))
    return None


def check_size(init_from: str | InitFrom, config: OPTConfig, size: str) -> None:
    """Raises :class:`CheckpointError` when the checkpoint ``init_from`` names records a model of another size than
    ``config`` (the configured ``model.size`` = ``size``), naming both, the fields that differ and the sizes the
    checkpoint matches (``models.sizes.SIZE_FIELDS``: the vocabulary and the context may differ). Reads only the
    checkpoint's config. A random init is the configured size; ``metaseq:`` files record no config (their weights'
    shapes are checked against ``config`` when they load)."""
    spec = init_from if isinstance(init_from, InitFrom) else InitFrom.parse(init_from)
    found = checkpoint_config(spec)
    diff = sizes.size_differences(config.arch, found.arch) if found is not None else []
    if diff:
        like = sizes.sizes_like(found.arch)
        hint = (f"use the size {like[0]!r} (e.g. --config=configs/evaluate.py:{like[0]})" if like else
                "no size in alert_jax/models/sizes.py matches it; set --config.model.* to its architecture")
        raise CheckpointError(
            f"init_from={str(spec)!r} is a {'/'.join(like) or 'non-standard'} model but model.size={size!r} "
            f"({'; '.join(diff)} as model.size vs the checkpoint); {hint}"
        )


def resolve_config(init_from: str | InitFrom, config: OPTConfig) -> OPTConfig:
    """The model config a load of ``init_from`` produces: the checkpoint's architecture (warning when ``config``'s
    differs) with ``config``'s runtime fields. Reads only the checkpoint's config file, never its weights."""
    spec = init_from if isinstance(init_from, InitFrom) else InitFrom.parse(init_from)
    found = checkpoint_config(spec)
    if found is None:
        return config
    _check_architecture(spec, config, found)
    return OPTConfig(found.arch, config.runtime)


def checkpoint_identity(init_from: str | InitFrom) -> tuple[str, int | None]:
    """``(resolved path, step)`` of the weights a load of ``init_from`` reads, found without reading any weights, so
    a caller can tell whether results made earlier came from the same checkpoint before it loads a model. Paths are
    absolute and normalised (``os.path.abspath``; a bucket URL as it is).

    * ``ckpt:`` -- the absolute checkpoints folder and the step :func:`load_model` restores (``checkpoint.locate``:
      the named step folder, else the step the selection picks: the best, else the latest, by default);
    * ``hf:`` -- the absolute local folder (a bucket URL as it is); a Hub id resolves to its cache snapshot (named by
      the Hub revision), fetching ``config.json`` only; step None;
    * ``metaseq:`` -- the absolute file path (a bucket URL as it is); step None;
    * ``''`` (random init) -- ``('', None)``.

    Raises what :func:`load_model` raises for a missing checkpoint (``CheckpointNotFoundError``, ``CheckpointError``).
    """
    spec = init_from if isinstance(init_from, InitFrom) else InitFrom.parse(init_from)
    if spec.kind == "ckpt":
        root, step = _ckpt_location(spec)
        return abspath(root), int(step)
    if spec.kind == "hf":
        if is_url(spec.location):
            if not epath.Path(spec.location).exists():
                raise CheckpointError(f"init_from={str(spec)!r}: {spec.location} does not exist")
            return spec.location, None
        return os.path.abspath(_hf_identity(spec.location)), None
    if spec.kind == "metaseq":
        _check_metaseq_file(spec)
        return abspath(epath.Path(spec.location).expanduser()), None
    return "", None


def _check_metaseq_file(spec: InitFrom) -> None:
    if not epath.Path(spec.location).expanduser().is_file():
        raise CheckpointError(f"init_from={str(spec)!r}: metaseq checkpoint file {spec.location!r} does not exist")


def _hf_identity(location: str) -> pathlib.Path:
    """The folder ``convert.resolve_hf_path(location)`` gives, without downloading weights for a Hub id."""
    if not pathlib.Path(location).expanduser().exists():
        try:
            import huggingface_hub

            return pathlib.Path(huggingface_hub.snapshot_download(location, allow_patterns=["config.json"]))
        except Exception:  # noqa: BLE001 -- resolve_hf_path names the problem (bad id, offline, no package)
            return convert.resolve_hf_path(location)
    return convert.resolve_hf_path(location)


def find_tokenizer(init_from: str | InitFrom, tokenizer: str = "") -> tokenizers.Tokenizer | None:
    """The tokenizer of a load of ``init_from``: the explicit spec ``tokenizer`` when given; else a training run's
    ``checkpoints/tokenizer`` (an error if it exists but cannot be read) or the files of an ``hf:`` folder;
    else ``None``."""
    if tokenizer:
        return tokenizers.load_tokenizer(tokenizer)
    spec = init_from if isinstance(init_from, InitFrom) else InitFrom.parse(init_from)
    if spec.kind == "ckpt":
        where = _ckpt_location(spec)[0] / checkpoint.TOKENIZER_DIR
        return tokenizers.load_tokenizer(str(where)) if where.is_dir() else None
    if spec.kind == "hf":
        try:
            return tokenizers.load_tokenizer(str(convert.resolve_hf_path(spec.location)))
        except tokenizers.TokenizerLoadError:
            return None  # a weights-only folder: the caller names the setting to use
    return None


def load_model(
    init_from: str | InitFrom,
    config: OPTConfig,
    mesh: jax.sharding.Mesh,
    *,
    tokenizer: str = "",
    seed: int = 0,
) -> LoadedModel:
    """Loads (or initialises) the model ``init_from`` names, sharded on ``mesh``, and its tokenizer.

    Args:
      init_from: the setting (module docstring).
      config: the configured model: its runtime fields are used, its architecture only for random init and
        metaseq checkpoints.
      mesh: the device mesh; parameters get the rule-table shardings.
      tokenizer: an explicit tokenizer spec ('' = the one stored beside the weights, if any).
      seed: the random initialisation's seed.
    Raises:
      CheckpointError / CheckpointNotFoundError (a ``FileNotFoundError``) naming the setting and path;
      TokenizerLoadError for an explicit tokenizer spec that cannot be read.
    """
    spec = init_from if isinstance(init_from, InitFrom) else InitFrom.parse(init_from)
    step = None
    if spec.kind == "":
        model, source = opt.create_model(config, mesh, rngs_seed=int(seed)), ""
    elif spec.kind == "hf":
        directory = convert.resolve_hf_path(spec.location)
        resolved = resolve_config(spec, config)
        model = convert.from_hf(directory, mesh=mesh, **dataclasses.asdict(resolved.runtime))
        source = spec.location if is_url(spec.location) else str(directory)
    elif spec.kind == "metaseq":
        _check_metaseq_file(spec)
        model, source = convert.from_metaseq(spec.location, config, mesh=mesh), spec.location
    else:
        root, step = _ckpt_location(spec)
        model = _restore(root, step, resolve_config(spec, config), mesh)
        source = str(root)
    return LoadedModel(model=model, tokenizer=find_tokenizer(spec, tokenizer), init_from=spec, source=source, step=step)


def _restore(root: epath.Path, step: int, config: OPTConfig, mesh: jax.sharding.Mesh) -> Any:
    parts, _ = opt.split_model(opt.abstract_model(config))
    abstract = param_sharding.abstract_with_shardings(parts.abstract_params(), parts.shardings(mesh))
    return parts.build(checkpoint.restore_params(root, step, abstract))
