"""TFDS builders alert_eval / alert_finetune: built and read back (array_record) with TensorFlow NOT importable."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

import pytest
from helpers import SUITE_DEVICES, subprocess_env

from alert_jax.data.examples import RationaleExample

TASKS = {
    "task9101_toy_sum": {
        "Definition": ["Add the two numbers."],
        "Positive Examples": [{"input": "2 and 3", "output": "5", "explanation": "2 plus 3 is 5."}],
        "Negative Examples": [],
        "Instances": [{"id": f"task9101-{i}", "input": f"{i} and 1", "output": [str(i + 1)]} for i in range(4)],
        "Categories": ["Question Answering"], "Reasoning": ["Numerical Reasoning"], "Source": ["toy"],
    },
    "task9102_toy_copy": {
        "Definition": ["Copy the word."],
        "Positive Examples": [{"input": "cat", "output": "cat", "explanation": ""},
                              {"input": "dög", "output": "dög", "explanation": "unicode is kept"}],
        "Negative Examples": [],
        "Instances": [{"id": f"task9102-{i}", "input": f"w{i}", "output": [f"w{i}", f"W{i}"]} for i in range(3)],
        "Categories": ["Text Copying"], "Reasoning": [], "Source": ["toy"],
    },
}

# Runs in a fresh interpreter in which `tensorflow` cannot be found (every meta-path finder is wrapped to hide it).
BUILD_SCRIPT = textwrap.dedent(r'''
    import importlib.abc, json, sys

    class HideTensorFlow(importlib.abc.MetaPathFinder):
        def __init__(self, finder):
            self.finder = finder
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "tensorflow":
                return None
            find = getattr(self.finder, "find_spec", None)
            return find(name, path, target) if find else None
        def invalidate_caches(self):
            if hasattr(self.finder, "invalidate_caches"):
                self.finder.invalidate_caches()

    sys.meta_path[:] = [HideTensorFlow(f) for f in sys.meta_path]
    try:
        import tensorflow  # noqa: F401
        raise SystemExit("the guard failed: tensorflow was importable")
    except ImportError:
        pass

    import tensorflow_datasets as tfds
    from alert_jax.data.examples import RationaleExample
    from alert_jax.data.tfds import alert_eval, alert_finetune, common

    data_dir, niv2_dir = sys.argv[1], sys.argv[2]
    eval_path = alert_eval.build(data_dir, niv2_dir, skills={"task9101_toy_sum": ("mathematics", True)})
    examples = [RationaleExample(source="toy", prompt=f"What is {i} + {i}?", rationale=f"{i} + {i} = {2 * i}.",
                                 answer=str(2 * i), id=f"toy-{i}") for i in range(80)]
    ft_paths = {mode: alert_finetune.build(data_dir, mode, examples=examples) for mode in ("ft", "cot")}

    def plain(value):
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value.tolist() if hasattr(value, "tolist") else value

    out = {"eval_path": eval_path, "ft_paths": ft_paths}
    src = tfds.data_source("alert_eval", data_dir=data_dir, split="test")
    out["eval"] = [plain(src[i]) for i in range(len(src))]
    reread = common.load_split(data_dir, "alert_eval", "test")  # builder_from_directory: no builder class needed
    out["eval_reread_equal"] = [plain(reread[i]) for i in range(len(reread))] == out["eval"]
    for mode in ("ft", "cot"):
        ds = tfds.data_source(f"alert_finetune/{mode}", data_dir=data_dir)
        out[mode] = {split: [plain(ds[split][i]) for i in range(len(ds[split]))] for split in ("train", "validation")}
    out["file_format"] = tfds.builder_from_directory(ft_paths["cot"]).info.file_format.value
    out["tensorflow_modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
    print("RESULT" + json.dumps(out))
''')


def test_builders_build_and_read_without_tensorflow(tmp_path):
    finetune = pytest.importorskip("alert_jax.data.finetune", reason="data/finetune.py not available yet")
    pytest.importorskip("tensorflow_datasets")
    niv2_dir = tmp_path / "tasks"
    niv2_dir.mkdir()
    for name, content in TASKS.items():
        (niv2_dir / f"{name}.json").write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    env = subprocess_env(devices=SUITE_DEVICES, pythonpath=True)  # the test process's fake devices
    proc = subprocess.run([sys.executable, "-c", BUILD_SCRIPT, str(tmp_path / "tfds"), str(niv2_dir)],
                          capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])

    assert out["tensorflow_modules"] == []
    assert out["file_format"] == "array_record"
    files = sorted(p.name for p in pathlib.Path(out["ft_paths"]["cot"]).iterdir())
    assert any(".array_record-" in f for f in files) and not any("tfrecord" in f for f in files)

    # alert_eval: one record per (task, instance), in task then file order, fields as in the task files
    records = out["eval"]
    assert out["eval_reread_equal"]
    expected = [(name, i, inst) for name in sorted(TASKS) for i, inst in enumerate(TASKS[name]["Instances"])]
    assert len(records) == len(expected)
    for rec, (name, index, inst) in zip(records, expected):
        task = TASKS[name]
        assert (rec["task"], rec["instance_index"], rec["instance_id"]) == (name, index, inst["id"])
        assert rec["input"] == inst["input"] and rec["outputs"] == inst["output"]
        assert rec["definition"] == task["Definition"][0]
        assert rec["positive_examples"]["output"] == [e["output"] for e in task["Positive Examples"]]
        assert rec["positive_examples"]["explanation"] == [e["explanation"] for e in task["Positive Examples"]]
        assert rec["categories"] == task["Categories"] and rec["reasoning"] == task["Reasoning"]
        expected_skill = ("mathematics", True) if name == "task9101_toy_sum" else ("", False)
        assert (rec["skill"], rec["in_domain"]) == expected_skill

    # alert_finetune: prompt/target exactly as format_example gives them; validation = the corpus hash holdout
    for mode in ("ft", "cot"):
        splits = out[mode]
        ids = {s: [r["id"] for r in splits[s]] for s in splits}
        assert len(ids["train"]) + len(ids["validation"]) == 80 and not set(ids["train"]) & set(ids["validation"])
        assert ids["validation"]
        for split, recs in splits.items():
            for rec in recs:
                i = int(rec["id"].split("-")[1])
                ex = RationaleExample(source="toy", prompt=f"What is {i} + {i}?",
                                      rationale=f"{i} + {i} = {2 * i}.", answer=str(2 * i), id=f"toy-{i}")
                assert (rec["prompt"], rec["target"]) == finetune.format_example(ex, mode)
                assert finetune.in_holdout(ex) == (split == "validation")
                assert rec["source"] == "toy" and rec["answer"] == str(2 * i)
    assert out["cot"]["train"][0]["target"].endswith("So the answer is 0.")


def test_real_tasks_and_corpus_feed_the_pipeline(tmp_path, niv2_tasks_dir, finetune_data_dir):
    """alert_eval from real NIV2 files; alert_finetune/cot from real GSM8K examples read back into grain batches."""
    finetune = pytest.importorskip("alert_jax.data.finetune", reason="data/finetune.py not available yet")
    from alert_jax.data import niv2, pipeline
    from alert_jax.data.tfds import alert_eval, alert_finetune, common

    names = sorted(p.stem for p in niv2_tasks_dir.glob("*.json"))[:2]
    alert_eval.build(tmp_path, niv2_tasks_dir, tasks=names, max_instances=3)
    test = common.load_split(tmp_path, "alert_eval", "test")
    assert len(test) == 6
    for i in range(6):
        task = niv2.load_task(names[i // 3], niv2_tasks_dir)
        raw = json.loads((niv2_tasks_dir / f"{names[i // 3]}.json").read_text(encoding="utf-8"))
        assert common.text(test[i]["instance_id"]) == raw["Instances"][i % 3]["id"] == task.instances[i % 3].id
        assert common.text(test[i]["input"]) == raw["Instances"][i % 3]["input"]

    examples = finetune.read_corpus("gsm8k", finetune_data_dir / "gsm8k", "train")[:60]
    alert_finetune.build(tmp_path, "cot", examples={"train": examples, "validation": examples[:5]})
    train = alert_finetune.load_records(tmp_path, "cot", "train")
    assert len(train) == 60

    class Chars:
        pad_id, bos_id, eos_id = 1, 2, 2

        def encode(self, text, *, add_bos=False):
            return [ord(c) % 5000 + 3 for c in text]

    it = pipeline.make_train_iterator(train, Chars(), seq_len=2048, batch_size=2, num_epochs=1, shard_index=0,
                                      shard_count=1, drop_remainder=False, shuffle=False)
    batches = list(it)
    assert it.stats.examples == 60
    expected_tokens = sum(len(Chars().encode(p)) + len(Chars().encode(t)) + 1
                          for p, t in (finetune.format_example(e, "cot") for e in examples))
    assert it.stats.tokens == expected_tokens == sum(int((b["segment_ids"] > 0).sum()) for b in batches)
