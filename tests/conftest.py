"""Shared test setup and the fixtures used by several test modules (plain helpers live in helpers.py).

* 8 fake CPU devices for every test (set before jax is imported), so sharding tests can build meshes; single-device
  tests use ``jax.devices()[:1]``.
* Real reference data is read from ``$ALERT_JAX_DATA`` (default: ``../shared/data`` beside the checkout); tests that
  need it take the ``niv2_tasks_dir`` / ``finetune_data_dir`` fixtures, which skip with a reason when it is absent.
* ``model_dir``: a tiny random evaluation model + tokenizer in HF format (test_eval_runner.py, test_niv2_export.py).
* ``launch_env``: a SentencePiece tokenizer trained once per session and the environment of ``launch/train.py``
  subprocesses (one CPU device, a persistent XLA compilation cache shared by every run, so only the first run pays
  for compiling); used with ``helpers.run_launch`` / ``helpers.launch_cmd``, and as ``--config.tokenizer`` in-process.
"""

from __future__ import annotations

import os
import pathlib

from helpers import (  # imports no jax (XLA_FLAGS is set below)
    EVAL_MODEL_MAX_POS,
    SUITE_DEVICES,
    shared_data_dir,
    subprocess_env,
)

os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={SUITE_DEVICES}")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def niv2_tasks_dir() -> pathlib.Path:
    path = shared_data_dir() / "niv2" / "tasks"
    if not path.is_dir():
        pytest.skip(f"NIV2 task files not found at {path} (set ALERT_JAX_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, niv2_tasks_dir) -> pathlib.Path:
    """A folder holding a tiny random OPT in HF format (``max_position_embeddings=EVAL_MODEL_MAX_POS``) and a
    SentencePiece tokenizer trained on the task texts, so ``init_from=hf:DIR`` finds both (evaluation tests)."""
    import json

    from alert_jax.data import synthetic
    from alert_jax.io import convert, tokenizers
    from alert_jax.models import opt, sizes

    texts = []
    for path in sorted(niv2_tasks_dir.glob("*.json"))[:8]:
        data = json.loads(path.read_text(encoding="utf-8"))
        texts += [d for d in data["Definition"]] + [i["input"] for i in data["Instances"][:20]]
    d = tmp_path_factory.mktemp("tiny_hf")
    tok = tokenizers.train_sentencepiece(texts + synthetic.synthetic_pretraining_text(0, 50), 700, d / "sp")
    os.unlink(d / "sp.model")
    model = opt.create_model(sizes.get_model_config("tiny", max_position_embeddings=EVAL_MODEL_MAX_POS, dropout=0.0,
                                                    attention_dropout=0.0), None, rngs_seed=0)
    convert.to_hf(model, d)
    tokenizers.save_tokenizer(tok, d)
    return d


@pytest.fixture(scope="session")
def finetune_data_dir() -> pathlib.Path:
    path = shared_data_dir() / "finetune"
    if not path.is_dir():
        pytest.skip(f"finetuning datasets not found at {path} (set ALERT_JAX_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def launch_env(tmp_path_factory) -> dict:
    """Environment + tokenizer shared by all launch subprocesses: ``{"env": ..., "tokenizer": folder}``."""
    from alert_jax.data.finetune import format_example
    from alert_jax.data.synthetic import synthetic_corpus
    from alert_jax.io.tokenizers import save_tokenizer, train_sentencepiece

    root = tmp_path_factory.mktemp("launch")
    texts = ["".join(format_example(ex, "cot")) for ex in synthetic_corpus(0, 2000)]
    tok = train_sentencepiece(texts, 1024, root / "sp" / "tokenizer.model")
    save_tokenizer(tok, root / "tokenizer")
    # one CPU device per run (the tiny config's data-parallel mesh)
    env = subprocess_env(JAX_COMPILATION_CACHE_DIR=str(root / "xla_cache"),
                         JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                         TF_CPP_MIN_LOG_LEVEL="3")
    return {"env": env, "tokenizer": str(root / "tokenizer")}
