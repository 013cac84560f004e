"""The one model loader (alert_jax/io/loader.py) on ``ckpt:`` and random-init settings: the architecture from the
checkpoint, the runtime fields (param dtype included) from the loading config, the tokenizer beside the weights,
and errors that name the setting. ``hf:`` and ``metaseq:`` are covered in test_convert.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from alert_jax.io import checkpoint, loader, tokenizers
from alert_jax.io.weight_files import CheckpointError
from alert_jax.models import opt
from alert_jax.models.sizes import get_model_config
from alert_jax.parallel.sharding import make_mesh
from alert_jax.train import state as state_lib


@pytest.fixture(scope="module")
def mesh():
    return make_mesh((1, 1, 1), devices=jax.devices()[:1])


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, mesh):
    """A checkpoints folder with step 5 of a 'tiny-postln' model (vocab 512) and a SentencePiece tokenizer."""
    root = tmp_path_factory.mktemp("run") / "checkpoints"
    config = get_model_config("tiny-postln", vocab_size=512)
    model = opt.create_model(config, mesh, rngs_seed=7)
    parts, params = opt.split_model(model)
    tx = optax.sgd(0.1)
    state = state_lib.create_train_state(params, tx, state_lib.state_shardings(parts, tx, mesh), seed=0)
    cfg = ml_collections.ConfigDict({"model": {"size": "tiny-postln", "vocab_size": 512}})
    texts = [f"sentence number {i} about apples and pears." for i in range(300)]
    tok = tokenizers.train_sentencepiece(texts, 300, root.parent / "sp" / "tokenizer.model")
    ckpt = checkpoint.Checkpointer(root, async_save=False)
    ckpt.save(5, state, cfg)
    ckpt.write_extras(cfg, tok)
    ckpt.close()
    return root, model, tok


def _leaves(model):
    _, params = opt.split_model(model)
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def test_ckpt_takes_the_saved_architecture_and_the_configured_runtime(saved_run, mesh):
    root, model, tok = saved_run
    configured = get_model_config("tiny", dtype="bfloat16", param_dtype="bfloat16", dropout=0.0)
    with pytest.warns(UserWarning, match=r"architecture differs from the configured model in \['vocab_size', "):
        loaded = loader.load_model(f"ckpt:{root.parent}", configured, mesh)  # the workdir finds checkpoints/
    assert (loaded.step, loaded.source, loaded.init_from.kind) == (5, str(root), "ckpt")
    c = loaded.model.config
    assert c.arch == model.config.arch and not c.arch.do_layer_norm_before  # the saved tiny-postln
    assert (c.runtime.dtype, c.runtime.param_dtype, c.runtime.dropout) == ("bfloat16", "bfloat16", 0.0)
    for got, want in zip(_leaves(loaded.model), _leaves(model)):
        assert got.dtype == jnp.bfloat16  # restored into the configured parameter dtype
        np.testing.assert_array_equal(got, want.astype(jnp.bfloat16))
    assert loaded.tokenizer.encode("apples and pears") == tok.encode("apples and pears")
    assert loader.resolve_config(f"ckpt:{root / '5'}", model.config).arch == model.config.arch


def test_check_size_reads_the_size_from_a_training_checkpoint(saved_run):
    """The saved tiny-postln run (vocabulary 512) is its size under any vocabulary, and not 'tiny'."""
    root, model, _ = saved_run
    loader.check_size(f"ckpt:{root.parent}", get_model_config("tiny-postln"), "tiny-postln")
    with pytest.raises(CheckpointError, match=r"is a tiny-postln model but model.size='tiny' \(word_embed_proj_dim: "
                                              r"None vs 32; do_layer_norm_before: True vs False"):
        loader.check_size(f"ckpt:{root.parent}", get_model_config("tiny"), "tiny")


def test_random_init_is_seeded_and_carries_no_tokenizer(mesh):
    config = get_model_config("tiny")
    a, b = (loader.load_model("", config, mesh, seed=3) for _ in range(2))
    assert a.tokenizer is None and a.step is None and a.source == ""
    assert all(np.array_equal(x, y) for x, y in zip(_leaves(a.model), _leaves(b.model)))
    other = loader.load_model("", config, mesh, seed=4)
    assert not np.array_equal(_leaves(a.model)[-1], _leaves(other.model)[-1])


def test_errors_name_the_setting(tmp_path, mesh):
    config = get_model_config("tiny")
    with pytest.raises(FileNotFoundError, match=r"init_from='ckpt:.*nowhere'.*does not exist"):
        loader.load_model(f"ckpt:{tmp_path / 'nowhere'}", config, mesh)
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoint.CheckpointNotFoundError, match="no alert_jax checkpoint steps"):
        loader.load_model(f"ckpt:{tmp_path / 'empty'}", config, mesh)
    assert loader.InitFrom.parse(" hf:facebook/opt-125m ") == loader.InitFrom("hf", "facebook/opt-125m")
    assert str(loader.InitFrom.parse("ckpt:/a/b")) == "ckpt:/a/b" and loader.InitFrom.parse("").kind == ""
