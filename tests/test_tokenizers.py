"""Tests for alert_jax.io.tokenizers: byte-level BPE (vocab.json+merges.txt and tokenizer.json) and SentencePiece.

The BPE ids are checked against a small pure-Python byte-level BPE written in this file from GPT-2's published
algorithm (byte -> unicode table, pre-tokenization regex, lowest-rank-first merges), independent of `tokenizers`.
"""

from __future__ import annotations

import json
import random

import pytest
import regex

from alert_jax.io import tokenizers as tk

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]

TRAIN_SENTENCES = [
    "The answer is 42 because six times seven is forty-two.",
    "Definition: In this task you answer the question.\n\nInput: Where is the cat?\nOutput: on the mat",
    "Let's think step by step. John has 3 apples; he gives 1 away, so he's left with 2.",
    "If all men are mortal and Socrates is a man, then Socrates is mortal.",
    "Ünïcödé façade — naïve café, 日本語のテキスト, emoji 😀 and tabs\tand  double  spaces.",
    "So the answer is (b). We'll see; they've gone, I'm here, you'd know, it's fine.",
] * 20

ROUND_TRIP_TEXTS = [
    "The answer is 42.",
    " leading space",
    "   three leading spaces and trailing   ",
    "line one\nline two\n\n\nafter blank lines\n",
    "\ttab\tseparated\t",
    "unicode: é ü ß 日本語 中文 한국어 😀🚀 ∑∫√ — «quotes»",
    "never seen bytes: \x00\x01\x7f and \u200b zero-width",
    "special strings are literal: </s> <pad> <s> <unk>",
    "contractions: don't won't they're I've we'll he'd she's",
    "",
    " ",
    "\r\n windows line \r\n",
]


# ----------------------------------------------------------------------------- an independent reference byte-level BPE

def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's table: printable latin-1 bytes map to themselves, the other bytes to code points 256, 257, ..."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_GPT2_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


class ReferenceBPE:
    def __init__(self, vocab_file, merges_file):
        with open(vocab_file, encoding="utf-8") as f:
            self.vocab = json.load(f)
        ranks = {}
        with open(merges_file, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line or line.startswith("#version"):
                    continue
                a, b = line.split(" ")
                ranks[(a, b)] = len(ranks)
        self.ranks = ranks
        self.b2u = _byte_to_unicode()

    def _merge(self, word: list[str]) -> list[str]:
        while len(word) > 1:
            pairs = [(self.ranks.get((word[i], word[i + 1]), float("inf")), i) for i in range(len(word) - 1)]
            best_rank, _ = min(pairs)
            if best_rank == float("inf"):
                break
            a, b = next((word[i], word[i + 1]) for r, i in pairs if r == best_rank)
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word

    def encode(self, text: str) -> list[int]:
        ids = []
        for chunk in _GPT2_SPLIT.findall(text):
            word = [self.b2u[b] for b in chunk.encode("utf-8")]
            ids.extend(self.vocab[piece] for piece in self._merge(word))
        return ids


# ------------------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory):
    """A tiny byte-level BPE trained here; saved as vocab.json+merges.txt (dir 'files') and tokenizer.json."""
    from tokenizers import ByteLevelBPETokenizer

    root = tmp_path_factory.mktemp("bpe")
    trainer = ByteLevelBPETokenizer(add_prefix_space=False)
    trainer.train_from_iterator(TRAIN_SENTENCES, vocab_size=500, min_frequency=1, special_tokens=SPECIALS,
                                show_progress=False)
    files = root / "files"
    files.mkdir()
    trainer.save_model(str(files))
    trainer.save(str(root / "tokenizer.json"))
    return root


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    rng = random.Random(0)
    words = ("the a cat dog sat on mat answer is because so step think Socrates mortal apples gives away "
             "forty two 3 7 42 , . ; ? !").split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for _ in range(3000)]
    lines += TRAIN_SENTENCES
    path = tmp_path_factory.mktemp("sp") / "tiny"
    return tk.train_sentencepiece(lines, 400, str(path))


# ---------------------------------------------------------------------------------------------------------------- BPE

def test_bpe_files_and_json_agree_and_round_trip(bpe_files):
    from_files = tk.load_tokenizer(f"bpe:{bpe_files / 'files'}")
    from_json = tk.load_tokenizer(f"bpe:{bpe_files / 'tokenizer.json'}")
    for tok in (from_files, from_json):
        assert isinstance(tok, tk.BPETokenizer)
        assert isinstance(tok, tk.Tokenizer)
        assert (tok.bos_id, tok.eos_id, tok.pad_id) == (2, 2, 1)
        for text in ROUND_TRIP_TEXTS:
            ids = tok.encode(text)
            assert tok.decode(ids) == text, (tok, text)
            assert tok.bos_id not in ids and tok.pad_id not in ids, text
    for text in ROUND_TRIP_TEXTS:
        assert from_files.encode(text) == from_json.encode(text), text


def test_bpe_ids_match_reference_implementation(bpe_files):
    tok = tk.load_tokenizer(f"bpe:{bpe_files / 'files'}")
    ref = ReferenceBPE(bpe_files / "files" / "vocab.json", bpe_files / "files" / "merges.txt")
    rng = random.Random(1)
    alphabet = list("abcdefghij ABC  \n\t0123456789.,;'!?-") + ["é", "日", "😀", "'s", "'ll", "  "]
    texts = [t for t in ROUND_TRIP_TEXTS if "</s>" not in t] + TRAIN_SENTENCES[:6]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(200)]
    n_multi_piece = 0
    for text in texts:
        ours = tok.encode(text)
        assert ours == ref.encode(text), text
        n_multi_piece += len(ours) < len(text.encode("utf-8"))
    assert n_multi_piece > 20  # the merges were exercised, not only single bytes


def test_bpe_add_bos_and_decode_drops_specials(bpe_files):
    tok = tk.load_tokenizer(str(bpe_files / "files"))  # plain directory: auto-detected
    ids = tok.encode("Hello world", add_bos=True)
    assert ids[0] == 2 and ids[1:] == tok.encode("Hello world")
    padded = [tok.pad_id] * 3 + ids + [tok.eos_id] + [tok.pad_id] * 2
    assert tok.decode(padded) == "Hello world"
    assert tok.decode(padded + [tok.vocab_size + 5]) == "Hello world"  # ids beyond the vocabulary are dropped
    assert tok.encode_batch(["a b", " c"], add_bos=True) == [tok.encode("a b", add_bos=True),
                                                             tok.encode(" c", add_bos=True)]
    assert tok.decode_batch([ids, padded]) == ["Hello world", "Hello world"]
    # special strings inside the text are not turned into special ids
    assert 2 not in tok.encode("x </s> y") and 1 not in tok.encode("<pad>")


def test_bpe_missing_special_token_is_an_error(tmp_path, bpe_files):
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(TRAIN_SENTENCES[:6], vocab_size=300, special_tokens=["<|endoftext|>"],
                                show_progress=False)
    trainer.save_model(str(tmp_path))
    with pytest.raises(tk.TokenizerLoadError, match=r"bos token '</s>' is not in the vocabulary"):
        tk.load_tokenizer(f"bpe:{tmp_path}")
    tok = tk.BPETokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt", bos_token="<|endoftext|>",
                                     eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    assert tok.bos_id == tok.eos_id == tok.pad_id == 0


def test_bpe_save_and_reload(tmp_path, bpe_files):
    tok = tk.load_tokenizer(f"bpe:{bpe_files / 'files'}")
    out = tk.save_tokenizer(tok, tmp_path / "ckpt" / "tokenizer")
    again = tk.load_tokenizer(str(out))
    assert isinstance(again, tk.BPETokenizer)
    assert (again.bos_id, again.eos_id, again.pad_id, again.vocab_size) == (2, 2, 1, tok.vocab_size)
    for text in ROUND_TRIP_TEXTS:
        assert again.encode(text, add_bos=True) == tok.encode(text, add_bos=True)


# ------------------------------------------------------------------------------------------------------- SentencePiece

def test_sentencepiece_special_ids_and_round_trip(sp_model):
    tok = sp_model
    assert isinstance(tok, tk.SentencePieceTokenizer) and isinstance(tok, tk.Tokenizer)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (2, 2, 1)
    assert [tok.id_to_token(i) for i in range(4)] == SPECIALS
    assert 260 < tok.vocab_size <= 400
    for text in ROUND_TRIP_TEXTS:
        ids = tok.encode(text)
        assert tok.decode(ids) == text, text
        assert all(4 <= i < tok.vocab_size for i in ids), text  # no specials, no <unk> (byte fallback)
    ids = tok.encode("the cat sat", add_bos=True)
    assert ids[0] == 2 and tok.decode([1, 1] + ids + [2, 1]) == "the cat sat"
    # learned pieces are used: common words take fewer ids than bytes
    assert len(tok.encode("the cat sat on the mat")) < len("the cat sat on the mat") // 2


def test_sentencepiece_unigram_and_file_suffix(tmp_path):
    lines = [f"item {i % 17} costs {i % 5} dollars and {i % 3} cents" for i in range(2000)]
    tok = tk.train_sentencepiece(lines, 300, tmp_path / "uni.model", model_type="unigram")
    assert (tmp_path / "uni.model").is_file()
    assert tok.decode(tok.encode("  item 3 costs\n7 dollars ")) == "  item 3 costs\n7 dollars "
    with pytest.raises(ValueError, match="vocab_size=100 is too small"):
        tk.train_sentencepiece(lines, 100, tmp_path / "small")
    with pytest.raises(ValueError, match="model_type"):
        tk.train_sentencepiece(lines, 300, tmp_path / "x", model_type="char")


def test_sentencepiece_load_and_save(tmp_path, sp_model):
    by_prefix = tk.load_tokenizer(f"sp:{sp_model.source}")
    by_path = tk.load_tokenizer(sp_model.source)  # *.model auto-detected
    saved = tk.load_tokenizer(str(tk.save_tokenizer(sp_model, tmp_path / "tok")))
    for tok in (by_prefix, by_path, saved):
        assert isinstance(tok, tk.SentencePieceTokenizer)
        assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (2, 2, 1, sp_model.vocab_size)
        assert tok.encode(ROUND_TRIP_TEXTS[4], add_bos=True) == sp_model.encode(ROUND_TRIP_TEXTS[4], add_bos=True)
    assert isinstance(tk.load_tokenizer(f"sp:{tmp_path / 'tok'}"), tk.SentencePieceTokenizer)


# -------------------------------------------------------------------------------------------------------------- errors

def test_unknown_specs_are_clear_errors(tmp_path):
    with pytest.raises(tk.TokenizerLoadError, match=r"'hf:facebook/opt-125m'.*unknown prefix 'hf'"):
        tk.load_tokenizer("hf:facebook/opt-125m")
    with pytest.raises(tk.TokenizerLoadError, match="does not exist"):
        tk.load_tokenizer(f"bpe:{tmp_path / 'missing'}")
    with pytest.raises(tk.TokenizerLoadError, match=r"neither vocab.json \+ merges.txt nor tokenizer.json"):
        tk.load_tokenizer(f"bpe:{tmp_path}")
    with pytest.raises(tk.TokenizerLoadError, match=r"no tokenizer.model or \*.model"):
        tk.load_tokenizer(f"sp:{tmp_path}")
    with pytest.raises(tk.TokenizerLoadError, match=r"has none of alert_tokenizer.json, vocab.json"):
        tk.load_tokenizer(str(tmp_path))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(tk.TokenizerLoadError, match="cannot tell the kind"):
        tk.load_tokenizer(str(tmp_path / "notes.txt"))
    (tmp_path / "bad.model").write_bytes(b"not a model")
    with pytest.raises(tk.TokenizerLoadError, match="cannot read SentencePiece model"):
        tk.load_tokenizer(f"sp:{tmp_path / 'bad.model'}")
    with pytest.raises(tk.TokenizerLoadError, match="empty tokenizer spec"):
        tk.load_tokenizer("")
