"""Evaluation presets and defaults that run (issue 14): per-size settings of configs/evaluate.py, the attention
dropout default and the cuDNN guard at setup, the checkpoint's size against ``:SIZE``, the progress bar's total and
the ``eval.profile`` trace. The planner's check of the presets is in test_plan.py; the model-level attention rules
(``'auto'``, the Runtime check) in test_model.py.

The model (conftest.py's ``model_dir``) is a tiny random OPT in HF format beside a SentencePiece tokenizer.
"""

from __future__ import annotations

import io
import json

import pytest
import tqdm
from helpers import EVAL_MODEL_MAX_POS

from alert_jax.eval import progress, runner
from alert_jax.io import loader
from alert_jax.io.weight_files import CheckpointError
from alert_jax.models import sizes
from alert_jax.train import settings
from configs import base, finetune
from configs import evaluate as eval_config

NEW = 4


def _tiny_cfg(model_dir, niv2_tasks_dir, **eval_overrides):
    cfg = eval_config.get_config("tiny")
    cfg.init_from, cfg.data.niv2_dir = f"hf:{model_dir}", str(niv2_tasks_dir)
    cfg.eval.max_new_tokens, cfg.eval.max_instances = NEW, 3
    cfg.eval.buckets = str(EVAL_MODEL_MAX_POS - NEW)
    cfg.eval.figures, cfg.eval.bootstrap_resamples = False, 0
    for k, v in eval_overrides.items():
        cfg.eval[k] = v
    return cfg


def test_paper_size_presets_are_bf16_with_their_mesh_and_batch():
    for size in ("1.3b", "13b"):
        cfg = eval_config.get_config(size)
        z = eval_config.EVAL_SIZE_SETTINGS[size]
        assert (cfg.model.dtype, cfg.model.param_dtype) == ("bfloat16", "bfloat16")
        assert tuple(cfg.mesh.shape) == z.mesh and cfg.eval.batch_size == z.batch_size
        assert cfg.model.attention_impl == "auto" and cfg.model.attention_dropout == 0.0
        runner.validate(cfg, num_devices=z.devices)
    assert eval_config.EVAL_SIZE_SETTINGS["13b"].mesh[2] == 8  # heads split over 8 devices: no replicated weights
    tiny = eval_config.get_config("tiny")
    assert (tiny.model.dtype, tiny.model.attention_impl) == ("float32", "xla")  # CPU tests keep their numerics
    with pytest.raises(runner.EvalConfigError, match=r"mesh"):
        runner.validate(eval_config.get_config("13b"), num_devices=1)  # tensor:8 needs 8 devices


def test_attention_dropout_default_and_cudnn_with_dropout_refused_at_setup():
    for size in ("tiny", "1.3b", "13b"):
        assert base.get_config(size).model.attention_dropout == 0.0  # as OPT's released configs
    assert finetune.get_config("13b,cot").model.dropout == 0.1  # the residual dropout stays the paper's
    train = finetune.get_config("1.3b,cot")
    train.model.attention_impl, train.model.attention_dropout = "cudnn", 0.1
    both = r"model\.attention_impl='cudnn'.*model\.attention_dropout=0\.1"
    with pytest.raises(settings.TrainConfigError, match=both):
        settings.validate(train, num_devices=8)
    ev = eval_config.get_config("tiny")
    ev.model.attention_impl, ev.model.attention_dropout = "cudnn", 0.1
    with pytest.raises(runner.EvalConfigError, match=both):
        runner.validate(ev, num_devices=1)


def test_a_checkpoint_of_another_size_is_refused_naming_both(model_dir, niv2_tasks_dir, tmp_path):
    tiny = _tiny_cfg(model_dir, niv2_tasks_dir)  # tiny checkpoint (another context length), :tiny
    loader.check_size(tiny.init_from, sizes.model_config_from(tiny), "tiny")
    cfg = eval_config.get_config("125m")
    cfg.init_from, cfg.data.niv2_dir = f"hf:{model_dir}", str(niv2_tasks_dir)
    workdir = tmp_path / "never"
    with pytest.raises(CheckpointError) as err:  # a bad input: launchers exit 2 with this line
        runner.evaluate(cfg, workdir)
    text = str(err.value)
    assert f"init_from='hf:{model_dir}' is a tiny model but model.size='125m'" in text
    assert "hidden_size: 768 vs 64" in text and "num_layers: 12 vs 2" in text
    assert "--config=configs/evaluate.py:tiny" in text
    assert not workdir.exists()  # refused at setup, before the workdir is made
    loader.check_size("", sizes.model_config_from(cfg), "125m")  # a random init is the configured size


def test_progress_total_counts_every_pending_prompt(model_dir, niv2_tasks_dir):
    cfg = _tiny_cfg(model_dir, niv2_tasks_dir, tasks="task080_piqa_answer_generation,task1152_bard_analogical"
                    "_reasoning_causation", templates="T1,T4", max_instances=5)
    what = runner.resolve_eval_tasks(cfg)
    names = list(what.present)
    assert len(names) == 2 and all(len(what.instances[n]) == 5 for n in names)
    pending = [(names[0], "T1"), (names[0], "T4"), (names[1], "T4")]
    assert progress.pending_prompts(what.instances, pending) == 15
    what.instances[names[1]] = what.instances[names[1]][:2]
    assert progress.pending_prompts(what.instances, pending) == 5 + 5 + 2
    assert progress.pending_prompts(what.instances, []) == 0


def test_progress_bar_counts_all_work_of_a_run(model_dir, niv2_tasks_dir, tmp_path, monkeypatch):
    """The bar reaches its total: every prompt of every pending file is counted once (decoded or overflowing)."""
    assert progress.progress_bar(10, True).disable  # stderr is not a terminal under pytest: nothing drawn
    bars = []

    def shown(total, enabled):  # the bar as a terminal would show it, drawn into a buffer
        assert enabled
        bars.append(tqdm.tqdm(total=total, file=io.StringIO(), disable=False))
        return bars[-1]

    monkeypatch.setattr(progress, "progress_bar", shown)
    cfg = _tiny_cfg(model_dir, niv2_tasks_dir, tasks="task080_piqa_answer_generation", templates="T1,T4")
    runner.evaluate(cfg, tmp_path / "eval")
    assert len(bars) == 1 and bars[0].total == 2 * 3 and bars[0].n == bars[0].total


def test_eval_profile_writes_a_trace_into_the_workdir(model_dir, niv2_tasks_dir, tmp_path):
    cfg = _tiny_cfg(model_dir, niv2_tasks_dir, tasks="task080_piqa_answer_generation", templates="T1",
                    profile=True, profile_batches=1)
    scores = runner.evaluate(cfg, tmp_path / "eval")
    traces = list((tmp_path / "eval" / "profile" / "eval").rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0
    assert scores["metadata"]["run"]["computed"] == 1
    assert json.loads((tmp_path / "eval" / "eval_config.json").read_text())["model.size"] == "tiny"
