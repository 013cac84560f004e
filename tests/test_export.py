"""Export to a Hugging Face OPT folder (alert_jax/io/export.py, io/safetensors_shards.py, launch/export.py).

* a finetuned tiny run (byte-level BPE tokenizer in OPT's vocab.json + merges.txt layout) is evaluated by alert-jax on
  real NIV2 tasks, exported in several shards, loaded by ``AutoTokenizer`` + ``OPTForCausalLM.from_pretrained``, and
  transformers' greedy ``generate`` on the same prompts gives alert-jax's predictions string for string;
* a 13B-shaped shard plan (shapes only) keeps every shard file under 5 GB, with a correct index;
* ``max_shard_size`` parses as transformers parses it; the launcher refuses bad input with exit 2.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from helpers import REPO_ROOT, small_bpe, subprocess_env

from alert_jax.io import convert
from alert_jax.io import safetensors_shards as shards_lib
from alert_jax.models import sizes

TASKS = ("task080_piqa_answer_generation", "task1152_bard_analogical_reasoning_causation")
NEW = 8
MAX_POS = 256
STOPS = ("\n\n",)


def _train_bpe(texts: list[str], folder) -> None:
    """A byte-level BPE with OPT's special ids (<s> 0, <pad> 1, </s> 2, <unk> 3), written as vocab.json + merges.txt
    (OPT's layout, read by alert-jax with the GPT-2 pre-tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    folder.mkdir(parents=True)
    backend.model.save(str(folder))  # vocab.json + merges.txt


def _finetune(tmp_path, niv2_tasks_dir):
    """A 3-step tiny CoT run with a BPE tokenizer trained on its corpus and the evaluated tasks' texts."""
    from alert_jax.data.finetune import format_example
    from alert_jax.data.synthetic import synthetic_corpus
    from alert_jax.io import tokenizers
    from alert_jax.train import loop
    from configs import finetune

    texts = ["".join(format_example(ex, "cot")) for ex in synthetic_corpus(0, 500)]
    for task in TASKS:
        data = json.loads((niv2_tasks_dir / f"{task}.json").read_text(encoding="utf-8"))
        texts += data["Definition"] + [i["input"] + "\n" + i["output"][0] for i in data["Instances"][:50]]
    _train_bpe(texts, tmp_path / "bpe")
    tok = tokenizers.load_tokenizer(f"bpe:{tmp_path / 'bpe'}")
    cfg = finetune.get_config("tiny,cot")
    cfg.tokenizer = f"bpe:{tmp_path / 'bpe'}"
    cfg.model.vocab_size = tok.vocab_size  # every id the model can emit is a token (decodes alike on both sides)
    cfg.model.max_position_embeddings = MAX_POS
    cfg.data.update(synthetic_train_examples=200, synthetic_valid_examples=16, max_eval_examples=16, niv2_dir="")
    cfg.optimizer.update(learning_rate=3e-3, warmup_steps=1)
    cfg.train.update(num_steps=3, batch_size=8, log_every=1, eval_every=0, checkpoint_every=0, keep_checkpoints=1,
                     async_checkpointing=False, tensorboard=False, measure_cpu_peak=False)
    workdir = tmp_path / "run"
    assert loop.train_and_evaluate(cfg, workdir)["step"] == 3
    return workdir, tok


def _evaluate(workdir, niv2_tasks_dir, out):
    from alert_jax.eval import runner
    from configs import evaluate as eval_config

    cfg = eval_config.get_config("tiny")
    cfg.init_from = f"ckpt:{workdir}"
    cfg.data.niv2_dir = str(niv2_tasks_dir)
    cfg.model.max_position_embeddings = MAX_POS  # the run's (the checkpoint's architecture wins anyway)
    cfg.eval.update(tasks=",".join(TASKS), templates="T1", max_instances=3, num_demos=0, max_new_tokens=NEW,
                    stop_strings=STOPS, buckets=str(MAX_POS - NEW), figures=False, bootstrap_resamples=0)
    runner.evaluate(cfg, out)
    return {task: [json.loads(line) for line in (out / "predictions" / task / "T1.jsonl").read_text().splitlines()]
            for task in TASKS}


def test_export_of_finetuned_run_generates_like_alert_jax(niv2_tasks_dir, tmp_path):
    import torch
    import transformers

    from alert_jax.eval import stops

    workdir, tok = _finetune(tmp_path, niv2_tasks_dir)
    predictions = _evaluate(workdir, niv2_tasks_dir, tmp_path / "eval")
    out = tmp_path / "hf"
    proc = _launch(f"--init_from=ckpt:{workdir}", f"--out={out}", "--max_shard_size=300KB")
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = [tuple(map(int, line.split()[2].split("/"))) for line in proc.stdout.splitlines()
               if line.startswith("export: shard ")]

    # Sharded: every file under the limit, the index names each tensor's file and the tensor bytes.
    index = json.loads((out / shards_lib.INDEX_FILE).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) >= 3 and written == [(i + 1, len(files)) for i in range(len(files))]
    assert sorted(p.name for p in out.glob("model*.safetensors")) == files
    assert all((out / f).stat().st_size <= 300_000 for f in files)
    from safetensors import safe_open

    total = 0
    for f in files:
        with safe_open(str(out / f), framework="np") as g:
            for name in g.keys():
                assert index["weight_map"][name] == f
                total += g.get_tensor(name).nbytes
    assert total == index["metadata"]["total_size"]

    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = transformers.OPTForCausalLM.from_pretrained(out).eval()
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    for text in ("  two leading spaces\n\nInput: café ☃\t tab", "", "So the answer is 7."):
        assert hf_tok(text)["input_ids"] == tok.encode(text, add_bos=True), text

    compared = 0
    for task, records in predictions.items():
        for r in records:
            if r["overflow"]:
                continue
            ids = hf_tok(r["prompt"])["input_ids"]
            assert ids == tok.encode(r["prompt"], add_bos=True)
            with torch.no_grad():
                gen = model.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False)
            text = hf_tok.decode(gen[0, len(ids):], skip_special_tokens=True)
            assert stops.truncate_at_stop(text, STOPS)[0] == r["prediction"], (task, r["id"])
            compared += 1
    assert compared >= 4, "too few prompts fit the context to compare"
    assert any(r["prediction"] for records in predictions.values() for r in records)  # not all trivially empty


def test_bfloat16_export_and_overwrite(tmp_path):
    """bfloat16 shards hold the float32 weights rounded (as torch rounds them); --overwrite replaces every shard of
    the earlier export (none left behind when the new one has fewer)."""
    import torch
    import transformers
    from safetensors.numpy import load_file

    from alert_jax.io import export
    from alert_jax.models import opt

    model = opt.create_model(sizes.get_model_config("tiny", vocab_size=300, dropout=0.0, attention_dropout=0.0), None,
                             rngs_seed=0)
    tok = small_bpe(300)
    out = tmp_path / "bf16"
    export.export_model(model, tok, out, dtype="float32", max_shard_size="80KB")
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 4
    # The same model read back sharded over 8 devices (fsdp) exports to the same bytes: gathered tensor by tensor.
    import jax

    from alert_jax.parallel.sharding import make_mesh

    sharded = convert.from_hf(out, mesh=make_mesh((1, 8, 1), devices=jax.devices()[:8]))
    assert not sharded.layers.fc1_kernel[...].sharding.is_fully_replicated
    export.export_model(sharded, tok, tmp_path / "again", dtype="float32", max_shard_size="80KB")
    for f in shards + [out / shards_lib.INDEX_FILE]:
        assert (tmp_path / "again" / f.name).read_bytes() == f.read_bytes(), f.name
    with pytest.raises(export.ExportError, match="not empty; pass --overwrite"):
        export.export_model(model, tok, out, dtype="bfloat16")
    export.export_model(model, tok, out, dtype="bfloat16", max_shard_size="5GB", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
         "tokenizer_config.json"])
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tok.eos_id == 2
    stored = load_file(str(out / "model.safetensors"))
    for name, value in convert.to_hf_state_dict(model).items():  # float32
        expected = torch.tensor(value).to(torch.bfloat16).view(torch.int16).numpy()
        np.testing.assert_array_equal(stored[name].view(np.int16), expected, err_msg=name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.OPTForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    assert hf.model.decoder.layers[1].fc1.weight.dtype == torch.bfloat16


def _expected_params(a: sizes.Architecture) -> int:
    """OPT's parameter count from its dimensions (LM head tied), independent of convert.py's name table."""
    d, f = a.hidden_size, a.ffn_dim
    layer = 4 * (d * d + d) + 2 * d * f + f + d + 4 * d  # q,k,v,out; fc1, fc2; two layer norms
    return a.vocab_size * d + (a.max_position_embeddings + 2) * d + a.num_layers * layer + 2 * d


@pytest.mark.parametrize("dtype, limit", [("float32", "5GB"), ("bfloat16", "5GB"), ("bfloat16", "2GiB")])
def test_13b_plan_keeps_every_shard_under_the_limit(dtype, limit):
    config = sizes.get_model_config("13b")
    specs = convert.hf_tensor_specs(config, dtype)
    max_bytes = shards_lib.parse_size(limit)
    plan = shards_lib.plan_shards(specs, max_bytes)
    itemsize = 4 if dtype == "float32" else 2
    total = _expected_params(config.arch) * itemsize
    assert len(plan) >= math.ceil(total / max_bytes)
    assert all(s.file_bytes_bound <= max_bytes for s in plan)
    # packing is greedy: a shard is closed only when the next tensor would not fit it
    for s, nxt in zip(plan, plan[1:]):
        assert s.file_bytes_bound + nxt.tensors[0].nbytes > max_bytes
    assert [t.name for s in plan for t in s.tensors] == [t.name for t in specs]  # each tensor once, in order
    n = len(plan)
    assert [s.file for s in plan] == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    index = shards_lib.index_dict(plan)
    assert index["metadata"]["total_size"] == total
    assert len(index["weight_map"]) == len(specs) == 4 + 16 * config.arch.num_layers
    assert index["weight_map"]["model.decoder.embed_tokens.weight"] == plan[0].file
    assert index["weight_map"]["model.decoder.layers.39.fc2.bias"] == plan[-1].file


def test_shard_files_are_bounded_and_read_back(tmp_path):
    """Small real shards: file sizes under the limit, bytes as safetensors reads them (bfloat16 included)."""
    import ml_dtypes
    from safetensors.numpy import load_file

    rng = np.random.default_rng(0)
    arrays = {f"w{i}": rng.standard_normal((i + 1, 37)).astype(np.float32) for i in range(12)}
    for dtype, np_dtype in (("float32", np.float32), ("bfloat16", ml_dtypes.bfloat16)):
        specs = [shards_lib.TensorSpec(k, v.shape, dtype) for k, v in arrays.items()]
        plan = shards_lib.plan_shards(specs, 2000)
        folder = tmp_path / dtype
        shards_lib.write_shards(folder, plan, arrays.__getitem__)
        assert len(plan) > 2 and all((folder / s.file).stat().st_size <= 2000 for s in plan)
        back = {}
        for s in plan:
            back.update(load_file(str(folder / s.file)))
        assert back.keys() == arrays.keys()
        for k, v in arrays.items():
            np.testing.assert_array_equal(back[k], v.astype(np_dtype))
    with pytest.raises(shards_lib.ShardPlanError, match="w11"):
        shards_lib.plan_shards([shards_lib.TensorSpec("w11", (12, 37), "float32")], 1000)


def test_max_shard_size_parses_like_transformers():
    from transformers.utils.hub import convert_file_size_to_int

    for text in ("5GB", "500MB", "10GiB", "3MiB", "2KB", "7KiB", 123):
        assert shards_lib.parse_size(text) == convert_file_size_to_int(text), text
    assert shards_lib.parse_size("1.5GB") == 1_500_000_000
    for bad in ("5Gb", "five", "5XB", "0GB", "-1GB"):
        with pytest.raises(shards_lib.ShardPlanError, match="max_shard_size"):
            shards_lib.parse_size(bad)


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    from alert_jax.apps import exits
    from alert_jax.io import export

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    cases = {
        "--dtype='int8'": dict(init_from=f"ckpt:{tmp_path}", out=tmp_path / "a", dtype="int8"),
        "max_shard_size='5XB'": dict(init_from=f"ckpt:{tmp_path}", out=tmp_path / "b", max_shard_size="5XB"),
        "exists and is not empty": dict(init_from=f"ckpt:{tmp_path}", out=busy),
        "does not exist": dict(init_from=f"ckpt:{tmp_path / 'missing'}", out=tmp_path / "c"),
        "stores no architecture": dict(init_from=f"metaseq:{tmp_path / 'x.pt'}", out=tmp_path / "d"),
    }
    for expected, kw in cases.items():
        init_from, out = kw.pop("init_from"), kw.pop("out")
        assert exits.run_app("export", lambda: export.export(init_from, out, **kw)) == exits.BAD_INPUT
        errors = capsys.readouterr().err.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith("export: error:") and expected in errors[0], errors
    assert (busy / "keep.txt").is_file() and not any((tmp_path / d).exists() for d in "abcd")


def test_sentencepiece_or_missing_tokenizer_is_refused_before_writing(model_dir, tmp_path):
    """conftest's ``model_dir``: an HF folder with a SentencePiece tokenizer; a copy without it has no tokenizer."""
    import shutil

    from alert_jax.io import export

    with pytest.raises(export.ExportError, match="SentencePiece model has no Hugging Face tokenizer"):
        export.export(f"hf:{model_dir}", tmp_path / "sp")
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(model_dir / f, bare / f)
    with pytest.raises(export.ExportError, match="carries no tokenizer; pass --tokenizer=bpe:DIR"):
        export.export(f"hf:{bare}", tmp_path / "none")
    assert not (tmp_path / "sp").exists() and not (tmp_path / "none").exists()


def _launch(*flags: str) -> subprocess.CompletedProcess:
    """``launch/export.py`` in a subprocess (one CPU device)."""
    cmd = [sys.executable, str(REPO_ROOT / "launch" / "export.py"), *flags]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=subprocess_env(pythonpath=True), capture_output=True, text=True,
                          timeout=300)


def test_launcher_exits_2_on_bad_input(tmp_path):
    """The command line itself (flags -> export -> exit code); the other refusals are checked in-process above."""
    proc = _launch(f"--init_from=ckpt:{tmp_path / 'missing'}", f"--out={tmp_path / 'out'}", "--dtype=bfloat16")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("export: error:")]
    assert len(errors) == 1 and "does not exist" in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()
