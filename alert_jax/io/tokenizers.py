"""One tokenizer interface with two backends: byte-level BPE (OPT / GPT-2 files) and SentencePiece.

Every tokenizer here follows OPT's special-token conventions, which the data pipeline and the decoder rely on:

* ``bos_id == eos_id`` (OPT prepends ``</s>`` = 2 as its beginning-of-sequence token and ends documents with it),
* ``pad_id`` is a separate id (OPT: ``<pad>`` = 1). Padding and loss masks are never derived from token values
  (DESIGN.md section 9); ``pad_id`` only says which token fills padded slots.

Encoding never adds special tokens except the optional leading ``bos_id`` (``add_bos=True``), and text is taken
literally: a string such as ``"</s>"`` inside the text is encoded as ordinary characters, never as the special id.
Decoding drops ``pad_id``/``bos_id``/``eos_id`` and ids outside the vocabulary (OPT's embedding has 50272 rows for a
50265-token vocabulary, so a model can emit ids that no token owns), and performs no clean-up of spaces.

Round-trip guarantee, ``decode(encode(text)) == text``:

* :class:`BPETokenizer`: for every string, provided the loaded tokenizer has no normalizer (OPT / GPT-2 files have
  none); byte-level BPE is lossless.
* :class:`SentencePieceTokenizer` models trained by :func:`train_sentencepiece`: for every string that does not contain
  U+2581 (``"▁"``, SentencePiece's own space marker, which decodes as a space). Leading, trailing and repeated spaces,
  tabs, newlines and any unicode character (through byte fallback) survive.

Loading: :func:`load_tokenizer` takes ``'bpe:PATH'``, ``'sp:PATH'`` or a plain path (auto-detected);
:func:`save_tokenizer` writes a directory that :func:`load_tokenizer` reads back (checkpoints carry their tokenizer).
:meth:`BPETokenizer.save_hf` writes the files with which ``transformers.AutoTokenizer`` encodes alike (the Hugging
Face export, ``io.export``); SentencePiece models have no such files.
PATH may be a bucket URL (``gs://...``): the native tokenizer libraries read local files only, so such a tokenizer
is copied into a temporary folder first.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import tempfile
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import sentencepiece as spm
import tokenizers as hf_tokenizers
from etils import epath
from tokenizers import decoders, models, pre_tokenizers, processors

from alert_jax.io.files import atomic_write_text, is_url, local_copy

__all__ = [
    "Tokenizer",
    "BPETokenizer",
    "SentencePieceTokenizer",
    "TokenizerLoadError",
    "train_sentencepiece",
    "load_tokenizer",
    "save_tokenizer",
    "fingerprint",
    "OPT_BOS_ID",
    "OPT_PAD_ID",
    "OPT_EOS_ID",
    "META_FILE",
]

# OPT's special ids (vocab.json of facebook/opt-*): '<s>' 0, '<pad>' 1, '</s>' 2, '<unk>' 3.
OPT_BOS_ID = 2
OPT_PAD_ID = 1
OPT_EOS_ID = 2
OPT_BOS_TOKEN = "</s>"
OPT_EOS_TOKEN = "</s>"
OPT_PAD_TOKEN = "<pad>"

# Written by save_tokenizer beside the tokenizer files; says which backend and which special tokens to use.
META_FILE = "alert_tokenizer.json"
BPE_JSON_FILE = "tokenizer.json"
SP_MODEL_FILE = "tokenizer.model"


class TokenizerLoadError(ValueError):
    """A tokenizer spec or file could not be resolved or read; the message names the spec and what was looked for."""


@runtime_checkable
class Tokenizer(Protocol):
    """What the rest of alert_jax uses. Ids are plain Python ints; sequences are lists (no batching dimension)."""

    bos_id: int
    eos_id: int
    pad_id: int
    vocab_size: int

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Token ids of ``text`` (length ``n``), prefixed by ``bos_id`` when ``add_bos`` (length ``n + 1``)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with pad/bos/eos ids (and ids outside the vocabulary) dropped."""
        ...


class _Common:
    """Shared helpers; subclasses define ``bos_id``, ``eos_id``, ``pad_id``, ``vocab_size`` and ``_encode``."""

    bos_id: int
    eos_id: int
    pad_id: int
    vocab_size: int

    def _encode(self, text: str) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids = self._encode(text)
        return [self.bos_id, *ids] if add_bos else ids

    def encode_batch(self, texts: Sequence[str], *, add_bos: bool = False) -> list[list[int]]:
        """``[encode(t, add_bos=add_bos) for t in texts]`` (ragged: one list per text, no padding)."""
        return [self.encode(t, add_bos=add_bos) for t in texts]

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """``[decode(ids) for ids in batch]``; rows may carry padding, which decode drops."""
        return [self.decode(ids) for ids in batch]

    def _kept_ids(self, ids: Sequence[int]) -> list[int]:
        drop = {self.pad_id, self.bos_id, self.eos_id}
        out = []
        for i in ids:
            i = int(i)  # accepts numpy / jax integer scalars
            if i in drop or i < 0 or i >= self.vocab_size:
                continue
            out.append(i)
        return out

    def __len__(self) -> int:
        return self.vocab_size


# --------------------------------------------------------------------------------------------------- byte-level BPE


class BPETokenizer(_Common):
    """Byte-level BPE (OPT / GPT-2 ``vocab.json`` + ``merges.txt``, or a ``tokenizer.json``) via ``tokenizers``.

    Special ids are looked up by token string in the vocabulary (``'</s>'`` for bos and eos, ``'<pad>'`` for pad, as in
    OPT, where they are 2, 2 and 1). A vocabulary without these strings (e.g. GPT-2's) needs the strings passed
    explicitly; a missing token is an error rather than a silent reuse of OPT's ids 2/1, which would then belong to
    ordinary tokens.
    """

    def __init__(
        self,
        backend: hf_tokenizers.Tokenizer,
        *,
        source: str = "<in memory>",
        bos_token: str = OPT_BOS_TOKEN,
        eos_token: str = OPT_EOS_TOKEN,
        pad_token: str = OPT_PAD_TOKEN,
    ):
        if not isinstance(backend.model, models.BPE):
            raise TokenizerLoadError(
                f"{source}: expected a BPE tokenizer, found model type {type(backend.model).__name__}")
        self._backend = backend
        # Text is literal: special-token strings inside the text are encoded as ordinary bytes (lossless round trip).
        backend.encode_special_tokens = True
        self.source = source
        self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self.bos_id = self._lookup(bos_token, "bos")
        self.eos_id = self._lookup(eos_token, "eos")
        self.pad_id = self._lookup(pad_token, "pad")

    def _lookup(self, token: str, role: str) -> int:
        idx = self._backend.token_to_id(token)
        if idx is None:
            raise TokenizerLoadError(
                f"{self.source}: {role} token {token!r} is not in the vocabulary (OPT uses '</s>'=2 for bos/eos and "
                f"'<pad>'=1); pass {role}_token=... naming a token of this vocabulary")
        return int(idx)

    @classmethod
    def from_files(cls, vocab_file: str | os.PathLike, merges_file: str | os.PathLike, **special) -> "BPETokenizer":
        """From GPT-2 style ``vocab.json`` + ``merges.txt``: GPT-2 pre-tokenizer regex, no prefix space or
        normalizer."""
        for f in (vocab_file, merges_file):
            if not os.path.isfile(f):
                raise TokenizerLoadError(f"BPE tokenizer file not found: {f}")
        try:
            bpe = models.BPE.from_file(str(vocab_file), str(merges_file))
        except Exception as e:  # the tokenizers library raises a bare Exception on malformed files
            raise TokenizerLoadError(f"cannot read BPE files {vocab_file} / {merges_file}: {e}") from e
        backend = hf_tokenizers.Tokenizer(bpe)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        return cls(backend, source=f"{vocab_file} + {merges_file}", **special)

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike, **special) -> "BPETokenizer":
        """From a ``tokenizers`` ``tokenizer.json`` (its pre-tokenizer/decoder are used as saved)."""
        if not os.path.isfile(path):
            raise TokenizerLoadError(f"tokenizer.json not found: {path}")
        try:
            backend = hf_tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:
            raise TokenizerLoadError(f"cannot read tokenizer file {path}: {e}") from e
        return cls(backend, source=str(path), **special)

    def _encode(self, text: str) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str], *, add_bos: bool = False) -> list[list[int]]:
        encs = self._backend.encode_batch(list(texts), add_special_tokens=False)
        return [([self.bos_id] if add_bos else []) + list(e.ids) for e in encs]

    def decode(self, ids: Sequence[int]) -> str:
        return self._backend.decode(self._kept_ids(ids), skip_special_tokens=False)

    def id_to_token(self, idx: int) -> str | None:
        return self._backend.id_to_token(int(idx))

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` and the alert_jax metadata file into ``directory``."""
        d = epath.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if is_url(d):
            (d / BPE_JSON_FILE).write_text(self._backend.to_str(pretty=True))
        else:
            self._backend.save(str(d / BPE_JSON_FILE))
        meta = {"kind": "bpe", "file": BPE_JSON_FILE, "bos_token": self.bos_token, "eos_token": self.eos_token,
                "pad_token": self.pad_token, "bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id}
        (d / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    def save_hf(self, directory: str | os.PathLike, *, model_max_length: int) -> list[epath.Path]:
        """Write the files with which ``transformers.AutoTokenizer.from_pretrained(directory)`` gives the same ids as
        :meth:`encode` with ``add_bos=True`` (and the same special ids): ``tokenizer.json`` (this backend as is, the
        special tokens marked special, a post-processor that prepends ``bos_token``), ``tokenizer_config.json``
        (``PreTrainedTokenizerFast``, ``add_bos_token``, no clean-up of spaces on decode) and
        ``special_tokens_map.json``. One difference stays: transformers reads a special-token string inside the text
        (``"</s>"``) as the special id, as OPT's own Hugging Face tokenizer does; :meth:`encode` reads it literally."""
        d = epath.Path(directory)
        backend = hf_tokenizers.Tokenizer.from_str(self._backend.to_str())
        unk = "<unk>" if backend.token_to_id("<unk>") is not None else self.eos_token
        specials = {"bos_token": self.bos_token, "eos_token": self.eos_token, "unk_token": unk,
                    "pad_token": self.pad_token}
        backend.add_special_tokens([hf_tokenizers.AddedToken(t, special=True, normalized=False)
                                    for t in dict.fromkeys(specials.values())])
        backend.post_processor = processors.TemplateProcessing(
            single=f"{self.bos_token} $A", pair=f"{self.bos_token} $A {self.bos_token} $B",
            special_tokens=[(self.bos_token, self.bos_id)])
        atomic_write_text(d / BPE_JSON_FILE, backend.to_str(pretty=True))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **specials, "add_bos_token": True,
                  "add_eos_token": False, "add_prefix_space": False, "clean_up_tokenization_spaces": False,
                  "model_max_length": int(model_max_length)}
        atomic_write_text(d / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
        atomic_write_text(d / "special_tokens_map.json", json.dumps(specials, indent=2) + "\n")
        return [d / BPE_JSON_FILE, d / "tokenizer_config.json", d / "special_tokens_map.json"]

    def __repr__(self) -> str:
        return (f"BPETokenizer({self.source!r}, vocab_size={self.vocab_size}, bos={self.bos_id}, eos={self.eos_id}, "
                f"pad={self.pad_id})")


# ------------------------------------------------------------------------------------------------------ SentencePiece


class SentencePieceTokenizer(_Common):
    """A SentencePiece model. By default bos is eos (OPT style) and pad is the model's pad piece.

    Models from :func:`train_sentencepiece` have ``'<s>'`` 0 (unused, like OPT's), ``'<pad>'`` 1, ``'</s>'`` 2 and
    ``'<unk>'`` 3, so ``bos_id == eos_id == 2`` and ``pad_id == 1``. Other models (e.g. without a pad piece) need
    ``pad_id=`` given explicitly.
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        *,
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
    ):
        self.source = "<in memory>" if isinstance(model, bytes) else str(model)
        try:
            if isinstance(model, bytes):
                sp = spm.SentencePieceProcessor(model_proto=model)
            else:
                if not os.path.isfile(model):
                    raise TokenizerLoadError(f"SentencePiece model file not found: {model}")
                sp = spm.SentencePieceProcessor(model_file=str(model))
        except TokenizerLoadError:
            raise
        except Exception as e:
            raise TokenizerLoadError(f"cannot read SentencePiece model {self.source}: {e}") from e
        self._sp = sp
        self.vocab_size = sp.get_piece_size()
        self.eos_id = int(sp.eos_id() if eos_id is None else eos_id)
        self.bos_id = int(self.eos_id if bos_id is None else bos_id)
        self.pad_id = int(sp.pad_id() if pad_id is None else pad_id)
        for role, idx in (("eos", self.eos_id), ("bos", self.bos_id), ("pad", self.pad_id)):
            if not 0 <= idx < self.vocab_size:
                raise TokenizerLoadError(
                    f"{self.source}: the model has no {role} piece (id {idx}); pass {role}_id=... explicitly")

    def _encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text, out_type=int))

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode(self._kept_ids(ids))

    def id_to_token(self, idx: int) -> str:
        return self._sp.id_to_piece(int(idx))

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``tokenizer.model`` and the alert_jax metadata file into ``directory``."""
        d = epath.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / SP_MODEL_FILE).write_bytes(self._sp.serialized_model_proto())
        meta = {"kind": "sp", "file": SP_MODEL_FILE, "bos_id": self.bos_id, "eos_id": self.eos_id,
                "pad_id": self.pad_id}
        (d / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    def __repr__(self) -> str:
        return (f"SentencePieceTokenizer({self.source!r}, vocab_size={self.vocab_size}, bos={self.bos_id}, "
                f"eos={self.eos_id}, pad={self.pad_id})")


# Special pieces of trained models; the byte-fallback pieces <0x00>..<0xFF> follow at ids 4..259.
_SP_SPECIALS = {"bos_id": 0, "bos_piece": "<s>", "pad_id": 1, "pad_piece": "<pad>", "eos_id": 2, "eos_piece": "</s>",
                "unk_id": 3, "unk_piece": "<unk>"}
_SP_MIN_VOCAB = 4 + 256


def train_sentencepiece(
    texts: Iterable[str],
    vocab_size: int,
    path: str | os.PathLike,
    *,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
) -> SentencePieceTokenizer:
    """Train a small SentencePiece model on ``texts`` and write it to ``path`` (``.model`` appended if missing).

    Options chosen for an exact round trip (see the module docstring): identity normalization, no dummy prefix, extra
    whitespace kept, whitespace-only pieces allowed, byte fallback (so unseen characters become byte pieces rather
    than ``<unk>``). Ids: ``'<s>'`` 0, ``'<pad>'`` 1, ``'</s>'`` 2, ``'<unk>'`` 3, then 256 byte pieces, then the
    learned pieces; hence ``vocab_size`` must be at least 260 plus the number of distinct characters kept.
    ``vocab_size`` is an upper bound: a small corpus may yield fewer pieces. Lines longer than 4192 bytes are skipped
    by the trainer (not by encode).
    """
    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"train_sentencepiece: model_type must be 'bpe' or 'unigram', got {model_type!r}")
    if vocab_size < _SP_MIN_VOCAB:
        raise ValueError(f"train_sentencepiece: vocab_size={vocab_size} is too small; byte fallback needs "
                         f"{_SP_MIN_VOCAB} ids (4 special + 256 bytes) plus one per distinct character")
    out = epath.Path(path)
    if out.suffix != ".model":
        out = out.with_name(out.name + ".model")
    # Empty lines carry nothing to learn; sentencepiece would also count them against the input.
    lines = (t for t in texts if t)
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=lines, model_writer=buf, vocab_size=vocab_size, model_type=model_type,
            byte_fallback=True, normalization_rule_name="identity", add_dummy_prefix=False,
            remove_extra_whitespaces=False, split_by_whitespace=True, allow_whitespace_only_pieces=True,
            character_coverage=character_coverage, hard_vocab_limit=False, num_threads=1, minloglevel=2,
            **_SP_SPECIALS)
    except RuntimeError as e:
        msg = str(e)
        if "smaller than required_chars" in msg:
            raise ValueError(f"train_sentencepiece: vocab_size={vocab_size} is too small for the characters of "
                             f"the corpus plus 260 special/byte pieces ({msg.strip()})") from e
        raise ValueError(f"train_sentencepiece failed for {out}: {msg.strip()}") from e
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return SentencePieceTokenizer(buf.getvalue() if is_url(out) else out)


# ------------------------------------------------------------------------------------------------- loading / saving


def _find_bpe_in_dir(d: pathlib.Path, **special) -> BPETokenizer | None:
    if (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        return BPETokenizer.from_files(d / "vocab.json", d / "merges.txt", **special)
    if (d / BPE_JSON_FILE).is_file():
        return BPETokenizer.from_tokenizer_json(d / BPE_JSON_FILE, **special)
    return None


def _find_sp_in_dir(d: pathlib.Path, spec: str, **ids) -> SentencePieceTokenizer | None:
    if (d / SP_MODEL_FILE).is_file():
        return SentencePieceTokenizer(d / SP_MODEL_FILE, **ids)
    found = sorted(d.glob("*.model"))
    if len(found) == 1:
        return SentencePieceTokenizer(found[0], **ids)
    if len(found) > 1:
        raise TokenizerLoadError(f"tokenizer spec {spec!r}: several *.model files in {d} "
                                 f"({', '.join(p.name for p in found)}); name one with 'sp:FILE'")
    return None


def _read_meta(d: pathlib.Path) -> dict | None:
    f = d / META_FILE
    if not f.is_file():
        return None
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise TokenizerLoadError(f"{f}: invalid JSON ({e})") from e
    if meta.get("kind") not in ("bpe", "sp") or not isinstance(meta.get("file"), str):
        raise TokenizerLoadError(f"{f}: expected keys 'kind' ('bpe' or 'sp') and 'file', got {sorted(meta)}")
    return meta


def _load_from_meta(d: pathlib.Path, meta: dict) -> Tokenizer:
    file = d / meta["file"]
    if meta["kind"] == "bpe":
        special = {k: meta[k] for k in ("bos_token", "eos_token", "pad_token") if k in meta}
        if file.name == "vocab.json":
            return BPETokenizer.from_files(file, d / "merges.txt", **special)
        return BPETokenizer.from_tokenizer_json(file, **special)
    ids = {k: meta[k] for k in ("bos_id", "eos_id", "pad_id") if k in meta}
    return SentencePieceTokenizer(file, **ids)


def load_tokenizer(spec: str | os.PathLike) -> Tokenizer:
    """Resolve a tokenizer spec.

    * ``'bpe:DIR'`` - ``DIR/vocab.json`` + ``DIR/merges.txt``, else ``DIR/tokenizer.json``;
      ``'bpe:FILE.json'`` - a ``tokenizer.json``.
    * ``'sp:FILE.model'`` - a SentencePiece model; ``'sp:DIR'`` - ``DIR/tokenizer.model`` or the only ``*.model``.
    * a plain path: a directory written by :func:`save_tokenizer` (its ``alert_tokenizer.json`` decides), else a
      directory holding BPE files or one ``*.model`` file; a ``*.json`` file (BPE) or a ``*.model`` file (SP).
    """
    spec = os.fspath(spec)
    if not spec:
        raise TokenizerLoadError("empty tokenizer spec; expected 'bpe:PATH', 'sp:PATH' or a path")
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("bpe", "sp"):
        path = local_copy(rest)
        if not path.exists():
            raise TokenizerLoadError(f"tokenizer spec {spec!r}: {rest if is_url(rest) else path} does not exist")
        if kind == "bpe":
            if path.is_dir():
                meta = _read_meta(path)
                special = {k: meta[k] for k in ("bos_token", "eos_token", "pad_token")
                           if meta and meta["kind"] == "bpe" and k in meta}
                tok = _find_bpe_in_dir(path, **special)
                if tok is None:
                    raise TokenizerLoadError(f"tokenizer spec {spec!r}: {path} has neither vocab.json + merges.txt "
                                             f"nor {BPE_JSON_FILE}")
                return tok
            return BPETokenizer.from_tokenizer_json(path)
        if path.is_dir():
            meta = _read_meta(path)
            ids = {k: meta[k] for k in ("bos_id", "eos_id", "pad_id") if meta and meta["kind"] == "sp" and k in meta}
            tok = _find_sp_in_dir(path, spec, **ids)
            if tok is None:
                raise TokenizerLoadError(f"tokenizer spec {spec!r}: no {SP_MODEL_FILE} or *.model file in {path}")
            return tok
        return SentencePieceTokenizer(path)

    path = local_copy(spec)
    if not path.exists():
        hint = f" (unknown prefix {kind!r}; use 'bpe:' or 'sp:')" if sep and len(kind) > 1 else ""
        raise TokenizerLoadError(f"tokenizer spec {spec!r}: no such file or directory{hint}; expected 'bpe:PATH', "
                                 f"'sp:PATH', or a path to a tokenizer directory / tokenizer.json / *.model file")
    if path.is_dir():
        meta = _read_meta(path)
        if meta is not None:
            return _load_from_meta(path, meta)
        tok = _find_bpe_in_dir(path) or _find_sp_in_dir(path, spec)
        if tok is None:
            raise TokenizerLoadError(
                f"tokenizer spec {spec!r}: directory {path} has none of {META_FILE}, vocab.json + merges.txt, "
                f"{BPE_JSON_FILE}, *.model")
        return tok
    if path.suffix == ".model":
        return SentencePieceTokenizer(path)
    if path.suffix == ".json":
        return BPETokenizer.from_tokenizer_json(path)
    raise TokenizerLoadError(f"tokenizer spec {spec!r}: cannot tell the kind of file {path} (expected *.model for "
                             f"SentencePiece or *.json for BPE; or prefix the spec with 'bpe:' / 'sp:')")


def save_tokenizer(tok: Tokenizer, directory: str | os.PathLike) -> epath.Path:
    """Write ``tok`` into ``directory`` (created if needed) so that ``load_tokenizer(directory)`` returns an
    equivalent tokenizer (same ids, same special ids). Returns the directory."""
    if not isinstance(tok, (BPETokenizer, SentencePieceTokenizer)):
        raise TypeError(f"save_tokenizer supports BPETokenizer and SentencePieceTokenizer, got {type(tok).__name__}")
    tok.save(directory)
    return epath.Path(directory)


def fingerprint(tok: Tokenizer) -> str:
    """``'sha256:<hex>'`` of everything :func:`save_tokenizer` writes for ``tok`` (vocabulary, merges or model, special
    ids): equal fingerprints mean the same ids for every text. Used to refuse token ids made by another tokenizer."""
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(save_tokenizer(tok, tmp))  # a local temporary folder; epath's local paths refuse rglob
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
            digest.update(path.read_bytes())
    return f"sha256:{digest.hexdigest()}"
