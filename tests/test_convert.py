"""Checkpoint conversion against transformers' PyTorch OPT (the independent reference).

Tiny random HF models (weights drawn with a large std so that any layout/transposition mistake moves the logits
far beyond the tolerance) are saved with ``save_pretrained`` and loaded back through alert_jax.io.convert.
"""

from __future__ import annotations

import functools
import json
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from hf_reference import random_hf_opt  # noqa: E402

from alert_jax.io import convert, loader  # noqa: E402
from alert_jax.io.weight_files import CheckpointError  # noqa: E402
from alert_jax.models.sizes import get_model_config  # noqa: E402
from alert_jax.parallel.sharding import make_mesh  # noqa: E402

VOCAB = 128
SEQ = 12


def _hf_model(pre_ln: bool, seed: int) -> transformers.OPTForCausalLM:
    return random_hf_opt(
        seed,
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        max_position_embeddings=32,
        word_embed_proj_dim=32 if pre_ln else 16,  # 350m-style: narrower embedding, project_in/out
        do_layer_norm_before=pre_ln,
        dropout=0.0,
        attention_dropout=0.0,
    )


@pytest.fixture(scope="module", params=["pre_ln", "post_ln_350m_style"])
def hf_checkpoint(request, tmp_path_factory):
    """(torch model, directory with config.json + model.safetensors)."""
    model = _hf_model(request.param == "pre_ln", seed=len(request.param))
    directory = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(directory)
    return model, directory


def _batch():
    """Three rows: unpadded, LEFT-padded (3 pads), RIGHT-padded (4 pads). HF mask + our positions/segments."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, VOCAB, size=(3, SEQ)).astype(np.int64)
    mask = np.ones((3, SEQ), np.int64)
    mask[1, :3] = 0
    mask[2, -4:] = 0
    ids[mask == 0] = 1  # OPT's pad id
    segment_ids = mask.astype(np.int32)
    positions = ((np.cumsum(mask, axis=1) - 1) * mask).astype(np.int32)  # real tokens before this one
    return ids, mask, positions, segment_ids


@functools.partial(jax.jit, static_argnums=0)
def _jit_forward(graphdef, state, tokens, positions, segment_ids):
    return nnx.merge(graphdef, state)(tokens, positions, segment_ids)


def _logits(model, ids, positions, segment_ids) -> np.ndarray:
    graphdef, state = nnx.split(model)
    return np.asarray(_jit_forward(graphdef, state, ids.astype(np.int32), positions, segment_ids))


def _torch_logits(model, ids, mask) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()


def _params(model) -> dict[tuple, np.ndarray]:
    return {tuple(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_logits_match_torch_with_left_and_right_padding(hf_checkpoint):
    torch_model, directory = hf_checkpoint
    ids, mask, positions, segment_ids = _batch()
    expected = _torch_logits(torch_model, ids, mask)
    got = _logits(convert.from_hf(directory), ids, positions, segment_ids)
    real = mask.astype(bool)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(expected[real]).max() > 1.0  # the comparison is not trivially small
    np.testing.assert_allclose(got[real], expected[real], atol=1e-4, rtol=0)


def test_sharded_safetensors_and_pytorch_bin_load_identically(hf_checkpoint, tmp_path):
    torch_model, directory = hf_checkpoint
    reference = _params(convert.from_hf(directory))

    sharded = tmp_path / "sharded"
    torch_model.save_pretrained(sharded, max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1

    single_bin = tmp_path / "bin"
    single_bin.mkdir()
    (single_bin / "config.json").write_text((directory / "config.json").read_text())
    state = torch_model.state_dict()  # HF names with 'model.' prefix, plus the tied lm_head.weight
    assert "lm_head.weight" in state
    torch.save(state, single_bin / "pytorch_model.bin")

    sharded_bin = tmp_path / "sharded_bin"
    sharded_bin.mkdir()
    (sharded_bin / "config.json").write_text((directory / "config.json").read_text())
    names = sorted(state)
    halves = {"pytorch_model-00001.bin": names[::2], "pytorch_model-00002.bin": names[1::2]}
    for file, part in halves.items():
        # OPTModel-style names (no 'model.' prefix) in this copy
        torch.save({n.removeprefix("model."): state[n] for n in part}, sharded_bin / file)
    weight_map = {n.removeprefix("model."): f for f, part in halves.items() for n in part}
    (sharded_bin / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))

    for other in (sharded, single_bin, sharded_bin):
        loaded = _params(convert.from_hf(other))
        assert loaded.keys() == reference.keys()
        for key, value in reference.items():
            np.testing.assert_array_equal(loaded[key], value, err_msg=f"{other.name}: {key}")


def test_to_hf_round_trip_is_exact(hf_checkpoint, tmp_path):
    torch_model, directory = hf_checkpoint
    out = convert.to_hf(convert.from_hf(directory), tmp_path / "export")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = transformers.OPTForCausalLM.from_pretrained(out).eval()
    original, back = torch_model.state_dict(), reloaded.state_dict()
    assert original.keys() == back.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, back[name]), name
    for field in ("hidden_size", "word_embed_proj_dim", "do_layer_norm_before", "num_hidden_layers", "ffn_dim"):
        assert getattr(reloaded.config, field) == getattr(torch_model.config, field)


def _to_metaseq(state: dict, fused_qkv: bool) -> dict:
    """HF OPTForCausalLM state dict -> metaseq consolidated naming (independent of convert.py's tables)."""
    out = {"decoder.version": torch.tensor([3.0])}
    for name, tensor in state.items():
        if name == "lm_head.weight":
            out["decoder.output_projection.weight"] = tensor
            continue
        name = name.removeprefix("model.")
        name = name.replace("decoder.final_layer_norm.", "decoder.layer_norm.")
        name = name.replace("decoder.project_in.", "decoder.project_in_dim.")
        name = name.replace("decoder.project_out.", "decoder.project_out_dim.")
        out[name] = tensor
    if fused_qkv:
        for key in [k for k in out if ".self_attn.q_proj." in k]:
            parts = [out.pop(key.replace(".q_proj.", f".{p}.")) for p in ("k_proj", "v_proj", "q_proj")]
            out[key.replace(".q_proj.", ".qkv_proj.")] = torch.cat(parts, dim=0)  # metaseq order: K, V, Q
    return out


@pytest.mark.parametrize("fused_qkv", [False, True])
def test_metaseq_state_dict_matches_torch(hf_checkpoint, tmp_path, fused_qkv):
    torch_model, directory = hf_checkpoint
    config = convert.load_hf_config(directory)
    metaseq = {"model": _to_metaseq(torch_model.state_dict(), fused_qkv), "optimizer_history": []}
    if fused_qkv:  # also through a file on disk
        path = tmp_path / "checkpoint.pt"
        torch.save(metaseq, path)
        model = convert.from_metaseq(path, config)
    else:
        model = convert.from_metaseq(metaseq, config)
    ids, mask, positions, segment_ids = _batch()
    real = mask.astype(bool)
    got = _logits(model, ids, positions, segment_ids)
    np.testing.assert_allclose(got[real], _torch_logits(torch_model, ids, mask)[real], atol=1e-4, rtol=0)


def _rewrite(directory, tmp_path, edit) -> str:
    """Copy of the checkpoint with its tensors edited by ``edit(dict) -> dict``."""
    from safetensors.torch import load_file, save_file

    out = tmp_path / "edited"
    out.mkdir(parents=True)
    (out / "config.json").write_text((directory / "config.json").read_text())
    save_file(edit(load_file(directory / "model.safetensors")), out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_bad_checkpoints_raise_checkpoint_error_naming_the_problem(hf_checkpoint, tmp_path):
    _, directory = hf_checkpoint
    name = "model.decoder.layers.1.fc1.weight"

    missing = _rewrite(directory, tmp_path / "a", lambda sd: {k: v for k, v in sd.items() if k != name})
    with pytest.raises(CheckpointError, match=r"missing weight.*decoder\.layers\.1\.fc1\.weight"):
        convert.from_hf(missing)

    wrong = _rewrite(directory, tmp_path / "b", lambda sd: {**sd, name: torch.zeros(64, 31)})
    with pytest.raises(CheckpointError) as err:
        convert.from_hf(wrong)
    assert "decoder.layers.1.fc1.weight" in str(err.value)
    assert "(64, 31)" in str(err.value) and "(64, 32)" in str(err.value)

    extra = _rewrite(directory, tmp_path / "c", lambda sd: {**sd, "model.decoder.layers.2.fc1.bias": torch.zeros(64)})
    with pytest.raises(CheckpointError, match=r"unexpected weight.*decoder\.layers\.2\.fc1\.bias"):
        convert.from_hf(extra)

    untied = _rewrite(
        directory, tmp_path / "d", lambda sd: {**sd, "lm_head.weight": torch.zeros_like(sd["model.decoder.embed_tokens.weight"])}
    )
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        convert.from_hf(untied)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((directory / "config.json").read_text())
    with pytest.raises(CheckpointError) as err:
        convert.from_hf(no_weights)
    assert str(no_weights) in str(err.value)
    assert "model.safetensors" in str(err.value) and "pytorch_model.bin" in str(err.value)

    with pytest.raises(CheckpointError, match="no config.json"):
        convert.from_hf(tmp_path / "a")  # exists, holds only the sub-folder


def test_hub_unreachable_and_bad_paths(monkeypatch, tmp_path):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError) as err:
        convert.from_hf("facebook/opt-125m")
    assert "unreachable" in str(err.value) and "local directory" in str(err.value)
    assert "facebook/opt-125m" in str(err.value)
    with pytest.raises(CheckpointError, match="neither an existing file or directory"):
        convert.from_hf(str(tmp_path / "does" / "not" / "exist"))


def test_loader_takes_hf_and_metaseq_checkpoints(hf_checkpoint, tmp_path):
    """``io.loader.load_model``: ``hf:`` takes the checkpoint's architecture (warning when the configured one differs)
    and the configured runtime fields; ``metaseq:`` loads into the configured architecture; bad specs are named."""
    torch_model, directory = hf_checkpoint
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    configured = get_model_config("tiny", dtype="bfloat16", attention_impl="reference", dropout=0.0)
    with pytest.warns(UserWarning, match="architecture differs"):
        model = loader.load_model(f"hf:{directory}", configured, mesh).model
    assert model.config.arch.hidden_size == torch_model.config.hidden_size  # architecture from the checkpoint
    assert (model.config.runtime.dtype, model.config.runtime.attention_impl) == ("bfloat16", "reference")

    path = tmp_path / "m.pt"
    torch.save(_to_metaseq(torch_model.state_dict(), fused_qkv=False), path)
    metaseq = loader.load_model(f"metaseq:{path}", convert.load_hf_config(directory), mesh)
    assert metaseq.tokenizer is None and metaseq.source == str(path)
    for key, value in _params(convert.from_hf(directory)).items():
        np.testing.assert_array_equal(_params(metaseq.model)[key], value)
    for bad in ("hf", "zip:/x", "hf:"):
        with pytest.raises(CheckpointError, match="init_from="):
            loader.load_model(bad, configured, mesh)
    with pytest.raises(CheckpointError, match="metaseq checkpoint file"):
        loader.load_model(f"metaseq:{tmp_path / 'absent.pt'}", configured, mesh)