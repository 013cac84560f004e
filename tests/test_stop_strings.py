"""Stop strings merged into tokens (alert_jax/eval/stops.py and the piece check in alert_jax/eval/generate.py).

Tokenizers write a stop string such as "\\n\\n" merged with other text (".\\n\\n" as one piece; "the.\\n" then
"\\nOutput"), so the exact token-sequence table never sees it. The tables are checked against a brute-force scan of
vocabularies whose per-id text is rebuilt here from the raw pieces (byte-level alphabet / SentencePiece pieces),
and decoding is checked against plain Python: decode a row without stops, find the first prefix of its tokens whose
text contains the stop string, and require decoding with stops to end exactly there.
"""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest
import tokenizers as hf_tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

pytest.importorskip("torch")
pytest.importorskip("transformers")

from hf_reference import random_hf_opt  # noqa: E402

from alert_jax.eval import generate as g  # noqa: E402
from alert_jax.eval import stops  # noqa: E402
from alert_jax.io import convert  # noqa: E402
from alert_jax.io import tokenizers as tk  # noqa: E402

STOP = "\n\n"
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
PAD, EOS = 1, 2
NEW = 12
EXTRA_IDS = 4  # model rows beyond the tokenizer's vocabulary (OPT: 50272 vs 50265): text "", match nothing
BUCKET = 32


def _corpus() -> list[str]:
    rng = random.Random(0)
    words = "the cat sat on mat answer is yes no because so Input Output Definition café".split()
    ends = [".\n\n", "\n\n", ".\n", "\n", "?\n\n", ":\n\nInput", "é.", "\nOutput "]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) + rng.choice(ends) for _ in range(400)]
    return ["".join(lines[i : i + 5]) for i in range(0, len(lines), 5)]


def _train_bpe() -> hf_tokenizers.Tokenizer:
    """Byte-level BPE without the GPT-2 split regex, so pieces merge text with newlines (".\\n\\n", "\\nOutput ")."""
    backend = hf_tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_corpus(), trainer)
    return backend


@pytest.fixture(scope="module")
def bpe():
    return tk.BPETokenizer(_train_bpe())


@pytest.fixture(scope="module")
def sp(tmp_path_factory):
    return tk.train_sentencepiece(_corpus(), 400, str(tmp_path_factory.mktemp("sp") / "stops"))


# ------------------------------------------------------------------------------------------ brute-force piece texts


def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-in character -> byte (printable latin-1 bytes stand for themselves, the
    others for 256, 257, ... in byte order)."""
    printable = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    others = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + n): b for n, b in enumerate(others)})
    return table


def _bpe_texts(tok: tk.BPETokenizer) -> list[str]:
    alphabet = _byte_alphabet()
    out = []
    for i in range(tok.vocab_size):
        if i in (tok.pad_id, tok.bos_id, tok.eos_id):
            out.append("")
            continue
        raw = tok.id_to_token(i)
        data = raw.encode() if raw in SPECIALS else bytes(alphabet[c] for c in raw)
        out.append(data.decode("utf-8", errors="replace"))
    return out


def _sp_texts(tok: tk.SentencePieceTokenizer) -> list[str]:
    out = []
    for i in range(tok.vocab_size):
        piece = tok.id_to_token(i)
        byte = re.fullmatch(r"<0x([0-9A-F]{2})>", piece)
        if piece == "<unk>":
            out.append(" \u2047 ")  # SentencePiece's default surface of the unknown piece
        elif piece in SPECIALS:
            out.append("")  # control pieces decode to nothing
        elif byte:
            out.append(bytes([int(byte.group(1), 16)]).decode("utf-8", errors="replace"))
        else:
            out.append(piece.replace("\u2581", " "))
    return out


class _DropsLeadingSpace:
    """A SentencePiece tokenizer whose decode drops one leading space (as models with a dummy prefix do)."""

    def __init__(self, inner):
        self.inner, self.vocab_size = inner, inner.vocab_size

    def encode(self, text):
        return self.inner.encode(text)

    def decode(self, ids):
        text = self.inner.decode(ids)
        return text[1:] if text.startswith(" ") else text


@pytest.mark.parametrize("kind", ["bpe", "sp"])
def test_tables_match_brute_force_scan(kind, bpe, sp):
    tok = bpe if kind == "bpe" else sp
    texts = _bpe_texts(tok) if kind == "bpe" else _sp_texts(tok)
    strings = [STOP, "Input:", "é.", STOP, "", " the"]
    tables = stops.stop_piece_tables(strings, tok)
    assert tables.strings == (STOP, "Input:", "é.", " the")  # deduplicated, empty dropped
    assert tables.splits == tuple((s, k) for s, text in enumerate(tables.strings) for k in range(1, len(text)))
    assert tables.contains.shape == (4, tok.vocab_size) and tables.ends.shape == (len(tables.splits), tok.vocab_size)
    for s, text in enumerate(tables.strings):
        np.testing.assert_array_equal(tables.contains[s], [text in t for t in texts], err_msg=repr(text))
    for j, (s, k) in enumerate(tables.splits):
        head, rest = tables.strings[s][:k], tables.strings[s][k:]
        np.testing.assert_array_equal(tables.ends[j], [t.endswith(head) for t in texts], err_msg=f"{head!r}")
        np.testing.assert_array_equal(tables.starts[j], [t.startswith(rest) for t in texts], err_msg=f"{rest!r}")
    # Non-trivial: merged pieces and the "\n" piece (which ends with "\n" and starts with "\n") are found.
    merged = [i for i, t in enumerate(texts) if STOP in t and t != STOP]
    assert merged and tables.contains[0, merged].all()
    newline = tok.encode("\n")
    assert len(newline) == 1 and tables.ends[0, newline[0]] and tables.starts[0, newline[0]]
    assert tables.ends[tables.splits.index((2, 1))].any()  # pieces ending with the non-ASCII "é" of "é."
    assert tables.contains[3].any()  # the leading space of " the" is seen
    # A stop string holding U+FFFD could match partial UTF-8 pieces that decode to it: it gets no piece rows.
    assert not stops.stop_piece_tables(["\ufffd"], tok).contains.any()


def test_piece_texts_read_pieces_inside_a_sequence(sp):
    """A decoder that drops a leading space from the first token must not make " the" look like "the"."""
    stub = _DropsLeadingSpace(sp)
    assert stops.piece_texts(stub) == stops.piece_texts(sp) == _sp_texts(sp)
    the = sp.encode(" the")
    assert len(the) == 1 and stub.decode(the) == "the"
    assert stops.stop_piece_tables([" the"], stub).contains[0, the[0]]


# ---------------------------------------------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def model(tmp_path_factory, bpe):
    hf = random_hf_opt(
        0, vocab_size=bpe.vocab_size + EXTRA_IDS, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
        num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32, do_layer_norm_before=True,
        dropout=0.0, attention_dropout=0.0, pad_token_id=PAD, bos_token_id=EOS, eos_token_id=EOS,
    )
    directory = tmp_path_factory.mktemp("hf_stops")
    hf.save_pretrained(directory)
    return convert.from_hf(directory)


@pytest.fixture(scope="module")
def prompts(bpe):
    rng = np.random.default_rng(3)
    return [[EOS] + rng.integers(4, bpe.vocab_size, n).tolist() for n in (3, 9, 1, 14, 6, 20, 11, 4)]


@pytest.fixture(scope="module")
def free(model, prompts):
    """Continuations without any stop (shares the program of the exact-sequence-only options)."""
    return _generator(model, g.DecodeOptions(max_new_tokens=NEW, eos_id=EOS, pad_id=PAD)).generate(prompts)


def _generator(model, options, batch_size=8):
    return g.Generator(model, options, batch_size=batch_size, buckets=(BUCKET,))


def _first_stop(tok, ids: list[int], stop: str) -> tuple[int | None, str]:
    """Index of the token that first completes ``stop`` in the text of ``ids`` and how it was spelled:
    'merged' (inside that token), 'split' (across it and the previous one) or 'longer'; (None, 'none')."""
    for i in range(len(ids)):
        if stop in tok.decode(ids[: i + 1]):
            if stop in tok.decode(ids[i : i + 1]):
                return i, "merged"
            return i, "split" if stop in tok.decode(ids[i - 1 : i + 1]) else "longer"
    return None, "none"


def _permuted_tokenizer(base: hf_tokenizers.Tokenizer, generated: list[list[int]]):
    """The trained BPE with its ids renumbered (merges name strings, so any renumbering is a valid tokenizer) so
    that the random model's continuations spell stops: one generated id becomes a piece containing "\\n\\n", one
    adjacent pair of generated ids becomes a piece ending with "\\n" followed by one starting with "\\n"; every
    other generated id gets a piece without newlines (the pieces "\\n" and "\\n\\n" go to ids never generated)."""
    spec = json.loads(base.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    size = len(vocab)
    text = {i: base.decode([i]) for i in range(len(SPECIALS), size)}
    counts = {}
    for row in generated:
        for t in set(row):
            counts[t] = counts.get(t, 0) + 1
    ids = [t for t in counts if len(SPECIALS) <= t < size]

    def simulate(x, y, z):  # which rows stop, and how, under the intended pieces
        kinds = []
        for row in generated:
            hits = [(row.index(x), "merged")] if x in row else []
            hits += [(j, "split") for j in range(1, len(row)) if (row[j - 1], row[j]) == (y, z)][:1]
            kinds.append(min(hits)[1] if hits else "none")
        return kinds

    choice = None
    pairs = sorted({(r[j - 1], r[j]) for r in generated for j in range(1, len(r))})
    for x in sorted(ids, key=lambda t: (counts[t], t)):
        for y, z in pairs:
            if len({x, y, z}) == 3 and {y, z} <= set(ids) and {"merged", "split", "none"} <= set(simulate(x, y, z)):
                choice = x, y, z
                break
        if choice:
            break
    assert choice, "the random model's continuations are too uniform to place the stops"
    x, y, z = choice
    merged = next(i for i, t in text.items() if STOP in t and t.strip())
    ends = next(i for i, t in text.items() if t.endswith("\n") and "\n" not in t[:-1] and t.strip())
    starts = next(i for i, t in text.items() if t.startswith("\n") and "\n" not in t[1:] and t.strip())
    plain = [i for i, t in text.items() if "\n" not in t]
    others = [i for i, t in text.items() if "\n" in t and i not in (merged, ends, starts)]
    old_for_new = {x: merged, y: ends, z: starts}
    rest_new = [i for i in range(len(SPECIALS), size) if i not in old_for_new]
    rest_new.sort(key=lambda i: i not in counts)  # generated ids first: they take the newline-free pieces
    for new, old in zip(rest_new, plain + others):
        old_for_new[new] = old
    old_to_new = {old: new for new, old in old_for_new.items()}
    spec["model"]["vocab"] = {piece: old_to_new.get(old, old) for piece, old in vocab.items()}
    tok = tk.BPETokenizer(hf_tokenizers.Tokenizer.from_str(json.dumps(spec)))
    assert tok.decode([x]) == text[merged] and tok.decode([y, z]) == text[ends] + text[starts]
    return tok


def _steps(model, prompts, options) -> int:
    """Decode steps one batch of ``prompts`` (left-padded into the shared ``[8, BUCKET]`` shape) takes."""
    tokens = np.full((8, BUCKET), PAD, np.int32)
    mask = np.zeros_like(tokens)
    for row, p in enumerate(prompts):
        tokens[row, BUCKET - len(p) :], mask[row, BUCKET - len(p) :] = p, 1
    mask[len(prompts) :, -1] = 1  # inactive filler rows
    res = g.decode_batch(model, g.prepare_weights(model), tokens, mask, options, active=np.arange(8) < len(prompts))
    return int(res.steps)


def test_rows_end_where_the_stop_string_first_completes(model, prompts, free):
    tok = _permuted_tokenizer(_train_bpe(), [f.tokens for f in free])
    exact = g.DecodeOptions(max_new_tokens=NEW, eos_id=EOS, pad_id=PAD,
                            stop_sequences=stops.stop_token_sequences([STOP], tok.encode))
    with_pieces = g.DecodeOptions(max_new_tokens=NEW, eos_id=EOS, pad_id=PAD,
                                  stop_sequences=exact.stop_sequences, stop_pieces=stops.stop_piece_tables([STOP], tok))
    out = _generator(model, with_pieces).generate(prompts)
    old = _generator(model, exact).generate(prompts)
    kinds = []
    for f, o, before in zip(free, out, old):
        end, kind = _first_stop(tok, f.tokens, STOP)
        kinds.append(kind)
        if end is None:
            assert o == f and before == f
        else:
            assert kind in ("merged", "split")  # stops over 3+ tokens would be the exact table's job
            assert o.tokens == f.tokens[: end + 1] and o.finish == "stop"
            assert stops.truncate_at_stop(tok.decode(o.tokens), [STOP]) == stops.truncate_at_stop(tok.decode(f.tokens), [STOP])
            assert before == f  # the exact-sequence table alone misses these spellings
    assert {"merged", "split", "none"} <= set(kinds)
    # Rows are independent: each prompt decoded alone gives the same.
    single = _generator(model, with_pieces, batch_size=1)
    assert [single.generate([p])[0] for p in prompts] == out
    # The batch of stopping rows now ends at its last stop instead of running to max_new_tokens.
    stopping = [i for i, k in enumerate(kinds) if k != "none"]
    last = max(len(out[i].tokens) for i in stopping)
    full = max(len(free[i].tokens) + (free[i].finish == "eos") for i in stopping)  # the EOS step counts
    batch = [prompts[i] for i in stopping]
    assert _steps(model, batch, with_pieces) == last < full == _steps(model, batch, exact)


def test_only_generated_tokens_count_and_ids_beyond_the_table(model, prompts):
    """Hand-made tables: every id below ``width`` ends with the first half of a stop and starts with the rest, so a
    row stops at the first two consecutive generated ids below ``width``. Every prompt ends with id 4 (below
    ``width``): had the last prompt token counted as the previous token, rows would stop at their first token."""
    prompts = [p[:-1] + [4] for p in prompts]
    base = _generator(model, g.DecodeOptions(max_new_tokens=NEW, eos_id=EOS, pad_id=PAD)).generate(prompts)
    width = int(np.median([t for b in base for t in b.tokens]))
    table = np.ones((1, width), bool)
    pieces = stops.StopPieces(contains=np.zeros_like(table), ends=table, starts=table, strings=("ab",),
                              splits=((0, 1),))
    opts = g.DecodeOptions(max_new_tokens=NEW, eos_id=EOS, pad_id=PAD, stop_pieces=pieces)
    assert opts.static().piece_rows == 4 and opts.static().piece_vocab == width
    assert opts.arrays()["piece_ends"].shape == (4, width) and not opts.arrays()["piece_ends"][1:].any()
    out = _generator(model, opts).generate(prompts)
    skipped = 0
    for b, o in zip(base, out):
        t = b.tokens
        end = next((j for j in range(1, len(t)) if t[j - 1] < width and t[j] < width), None)
        if end is None:
            assert o == b
        else:
            assert o.tokens == t[: end + 1] and o.finish == "stop"
        skipped += any(x >= width for x in t[: (len(t) if end is None else end)])
    assert any(o.finish == "stop" for o in out) and any(b.tokens[0] < width for b in base)
    assert skipped, "some row should generate an id beyond the table before it stops"


def test_options_validation_and_compiled_shape(bpe):
    with pytest.raises(TypeError, match="stop_pieces must be StopPieces"):
        g.DecodeOptions(stop_pieces=np.zeros((1, 4), bool))
    with pytest.raises(ValueError, match="disagree on the vocabulary size"):
        stops.StopPieces(contains=np.zeros((1, 4)), ends=np.zeros((1, 5)), starts=np.zeros((1, 5)))
    a = g.DecodeOptions(stop_pieces=stops.stop_piece_tables([STOP], bpe))
    b = g.DecodeOptions(stop_pieces=stops.stop_piece_tables(["\n"], bpe))
    assert a.static() == b.static() != g.DecodeOptions().static()  # tables are inputs, their shape is compiled in
    assert len({a, b, a}) == 2  # options holding tables stay hashable (tables compare by identity)
    assert not g.DecodeOptions(stop_pieces=stops.StopPieces(np.zeros((0, 9)), np.zeros((0, 9)),
                                                            np.zeros((0, 9)))).static().piece_rows
