"""Dev-set score by generation during finetuning: ALERT's checkpoint selection (DESIGN.md section 5).

The paper picks the checkpoint with the best score on the dev tasks. Every ``train.dev_every`` steps (and at the last
step) the current parameters generate answers for the registry's dev tasks found in the run's task source
(``train.records.dev_task_store``: ``data.niv2_dir``, or the prepared ``alert_eval`` with ``data.source='tfds'``) --
the first ``data.dev_generate_instances`` instances of each, rendered with ``data.dev_eval_template`` (T1 = the
finetuning prompt layout) and the task's answer options (``data.dev_max_options``), greedy, at most
``data.dev_generate_max_new_tokens`` new tokens, cut at a blank line -- through the evaluation's own code
(``eval.runner.run_template``: the same rendering, decoding, answer extraction and exact match). Logged and
stored with the step's checkpoint:

* ``dev_score/<task>``: exact match x100 of the extracted answer, mean over the task's instances;
* ``dev_score``: the mean over the dev tasks (each task weighs the same).

Unlike ``dev_loss`` (teacher-forced ``" " + answer`` right after the prompt, which penalises a model that learned to
write a rationale first), the score reads the answer wherever the model puts it, so it ranks OPT-FT and OPT-CoT
checkpoints alike. Select by it with ``train.best_metric='dev_score'`` (higher is better) or, after training,
``init_from='ckpt:DIR@best_dev_score'`` (``io.checkpoint.locate``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import ml_collections

from alert_jax.data import niv2
from alert_jax.data import registry as registry_lib
from alert_jax.eval import generate as gen_lib
from alert_jax.eval import runner
from alert_jax.models.opt import ModelParts
from alert_jax.train import records as records_lib
from alert_jax.train.settings import TrainConfigError

STOP_STRINGS = ("\n\n",)  # a blank line ends an answer, as in evaluation (configs/evaluate.py eval.stop_strings)


@dataclasses.dataclass
class DevGenerationSet:
    """What the dev score generates on: per dev task (registry order) its instances and answer options.

    ``max_new_tokens``: the generation budget; ``batch_size``: rows per decode call; ``template``: the NIV2 template.
    """

    template: str
    tasks: dict[str, niv2.Task]
    instances: dict[str, list[niv2.Instance]]
    options: dict[str, list[str] | None]
    max_new_tokens: int
    batch_size: int


def load_dev_generation(cfg: ml_collections.ConfigDict) -> tuple[DevGenerationSet | None, str]:
    """``(dev generation set or None, one log line)`` of a training config.

    None when ``train.dev_every`` is 0, ``data.dev_eval_template`` is '' or there are no dev tasks: 'raw' with an empty
    ``data.niv2_dir``, or a task source without any (the line says which). Tasks are read here, before training
    starts, so a malformed task file fails the run at once (``niv2.TaskFileError`` naming the file).
    """
    d = cfg.data
    if int(cfg.train.dev_every) <= 0:
        return None, "dev-set score off (train.dev_every=0)"
    template = str(d.dev_eval_template)
    store = records_lib.dev_task_store(cfg) if template else None
    if store is None:
        return None, "dev-set score off: train.dev_every needs data.niv2_dir and data.dev_eval_template"
    reg = registry_lib.ALERT
    present, missing = store.available(reg.dev_set)
    if not present:
        return None, f"dev-set score off: no dev task file ({', '.join(missing)}) in {store.where}"
    n = int(d.dev_generate_instances)
    tasks = {name: store.load(name) for name in present}
    dev = DevGenerationSet(
        template=template, tasks=tasks, instances={name: t.instances[:n] for name, t in tasks.items()},
        options={name: records_lib.dev_options(reg, t, int(d.dev_max_options)) for name, t in tasks.items()},
        max_new_tokens=int(d.dev_generate_max_new_tokens),
        batch_size=int(cfg.train.eval_batch_size) or int(cfg.train.batch_size),
    )
    note = (f"dev-set score every {cfg.train.dev_every} steps ({template}, greedy, first {n} instances of "
            f"{', '.join(present)})")
    if missing:
        note += f"; skipped, no task file in {store.where}: {', '.join(missing)}"
    return dev, note


def check_fits(dev: DevGenerationSet, max_position_embeddings: int) -> None:
    """Raises ``TrainConfigError`` when the generation budget leaves no room for a prompt in the model's context
    (checked when the run is set up, not at the first dev score)."""
    if dev.max_new_tokens >= max_position_embeddings:
        raise TrainConfigError(f"data.dev_generate_max_new_tokens={dev.max_new_tokens} leaves no room for a prompt in "
                               f"the model's {max_position_embeddings} positions; lower it or set train.dev_every=0")


@functools.lru_cache(maxsize=4)
def _decode_options(tokenizer: Any, max_new_tokens: int) -> gen_lib.DecodeOptions:
    # One per run: building the stop tables decodes the whole vocabulary.
    return runner.decode_options(tokenizer, max_new_tokens=max_new_tokens, stop_strings=STOP_STRINGS)


def dev_predictions(dev: DevGenerationSet, parts: ModelParts, params: Any, tokenizer: Any,
                    mesh: jax.sharding.Mesh, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Task -> the evaluation runner's predictions records (``runner.run_template``) of the parameters ``params``
    (the train state's pure dict) on the dev instances. A prompt that cannot fit ``max_position_embeddings -
    max_new_tokens`` tokens even without its input scores as an empty prediction, as in evaluation."""
    model = parts.build(params)
    max_prompt = int(model.config.arch.max_position_embeddings) - dev.max_new_tokens
    generator = gen_lib.Generator(model, _decode_options(tokenizer, dev.max_new_tokens), batch_size=dev.batch_size,
                                  mesh=mesh, max_prompt_len=max_prompt, seed=seed, per_layer_weights=False)
    return {name: runner.run_template(task, dev.instances[name], dev.template, tokenizer=tokenizer,
                                      generator=generator, max_prompt_tokens=max_prompt, stop_strings=STOP_STRINGS,
                                      options=dev.options[name])
            for name, task in dev.tasks.items()}


def dev_scores(dev: DevGenerationSet, parts: ModelParts, params: Any, tokenizer: Any,
               mesh: jax.sharding.Mesh, seed: int = 0) -> dict[str, float]:
    """``{"dev_score", "dev_score/<task>"}`` (x100) of :func:`dev_predictions`: each task's mean exact match, and
    their mean."""
    out = {f"dev_score/{name}": sum(r["scores"]["exact_match"] for r in records) / max(1, len(records))
           for name, records in dev_predictions(dev, parts, params, tokenizer, mesh, seed).items()}
    out["dev_score"] = sum(out.values()) / len(out)
    return out
