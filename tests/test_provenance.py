"""Evaluation provenance pieces: the checkpoint identity read before any weights (``io.loader.checkpoint_identity``),
the code version, the package versions and the comparison that decides whether a predictions file is reused.

The end-to-end scenarios (a newer checkpoint step, changed task-file content) are in test_eval_runner.py.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys

import pytest
from helpers import REPO_ROOT

import alert_jax
from alert_jax.eval import provenance
from alert_jax.io import checkpoint, loader
from alert_jax.io.weight_files import CheckpointError


def test_checkpoint_identity_of_each_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert loader.checkpoint_identity("") == ("", None)
    (tmp_path / "consolidated.pt").write_bytes(b"not read")
    assert loader.checkpoint_identity("metaseq:consolidated.pt") == (str(tmp_path / "consolidated.pt"), None)
    with pytest.raises(CheckpointError, match="metaseq checkpoint file 'nope.pt' does not exist"):
        loader.checkpoint_identity("metaseq:nope.pt")
    hf = tmp_path / "models" / "opt"
    hf.mkdir(parents=True)
    (hf / "config.json").write_text("{}")  # only the folder is resolved: nothing is parsed
    want = (str(hf), None)
    assert loader.checkpoint_identity("hf:models/opt") == want
    assert loader.checkpoint_identity(f"hf:{tmp_path}/models/../models/opt/config.json") == want  # normalised
    with pytest.raises(checkpoint.CheckpointNotFoundError, match="checkpoint directory 'gone' does not exist"):
        loader.checkpoint_identity("ckpt:gone")
    with pytest.raises(CheckpointError, match="init_from='bogus:x'"):
        loader.checkpoint_identity("bogus:x")


def test_code_version_git_checkout_and_fallback(monkeypatch):
    provenance.code_version.cache_clear()
    try:
        version = provenance.code_version()
        in_checkout = REPO_ROOT in pathlib.Path(alert_jax.__file__).resolve().parents
        if shutil.which("git") and (REPO_ROOT / ".git").exists() and in_checkout:
            assert re.fullmatch(re.escape(alert_jax.__version__) + r"\+git\.[0-9a-f]{40}(\.dirty)?", version), version
        else:
            assert version == alert_jax.__version__
        provenance.code_version.cache_clear()
        monkeypatch.setenv("PATH", os.devnull)  # no git executable: never fails, the package version
        assert provenance.code_version() == alert_jax.__version__
    finally:
        provenance.code_version.cache_clear()


def test_package_versions_lists_the_numeric_stack():
    versions = provenance.package_versions()
    assert list(versions)[:5] == ["jax", "jaxlib", "flax", "orbax-checkpoint", "numpy"]
    assert versions["jax"] and versions["numpy"]
    assert ("transformers" in versions) == ("transformers" in sys.modules)


def test_provenance_changes_names_what_differs():
    prov = provenance.Provenance("/w/checkpoints", 9, "0.1.0+git.abc", {}, {})
    expected = prov.record("d" * 64)
    assert expected == {"checkpoint_path": "/w/checkpoints", "checkpoint_step": 9, "task_digest": "d" * 64,
                        "answer_options": None, "code_version": "0.1.0+git.abc"}
    same = [{"id": "a", "provenance": dict(expected)}, {"id": "b", "provenance": dict(expected)}]
    assert provenance.provenance_changes(same, expected) == ""
    other_code = [{"provenance": dict(expected, code_version="0.0.9")}]
    # a code version that differs is reported by the runner, not a reason to recompute
    assert provenance.provenance_changes(other_code, expected) == ""
    older = [{"provenance": dict(expected, checkpoint_step=7, task_digest="e" * 64)}]
    assert provenance.provenance_changes(older, expected) == (
        "checkpoint_step: 7 -> 9; task_digest: eeeeeeeeeeee... -> dddddddddddd...")
    mixed = [{"provenance": dict(expected)}, {"provenance": dict(expected, checkpoint_path="/v/checkpoints")}]
    assert provenance.provenance_changes(mixed, expected).startswith("checkpoint_path: ")
    assert provenance.provenance_changes([{"id": "a"}], expected) == "no provenance recorded"
    assert provenance.provenance_changes([], expected) == "no provenance recorded"
    # prompts that listed other answer options (or none: a record from before options) are recomputed
    with_options = prov.record("d" * 64, ["against", "in favor"])
    assert with_options["answer_options"] == ["against", "in favor"]
    assert provenance.provenance_changes(same, with_options) == 'answer_options: null -> ["against", "in favor"]'
    no_key = [{"provenance": {k: v for k, v in expected.items() if k != "answer_options"}}]
    assert provenance.provenance_changes(no_key, expected) == ""
    meta = prov.metadata({"t": "d" * 64})
    assert meta["checkpoint_step"] == 9 and meta["task_digests"] == {"t": "d" * 64}
