"""The offline demo: ``python launch/demo.py --workdir=DIR [--config=configs/demo.py[:PRESET]] [--config.a.b=v ...]``.

Presets: ``default`` (the README's demo: ~8-10 minutes on 2 CPU cores, shows CoT > pretrained on the synthetic
mathematics datasets) and ``reduced`` (~1-2 minutes: the same pipeline with a smaller model, few steps and two
evaluation instances per task; used by the test suite; its scores are not meaningful).

Stages (alert_jax/apps/demo/run.py): synthetic data -> SentencePiece tokenizer -> "pretraining" a tiny OPT on generic
synthetic text (plain LM loss on every token) -> finetuning it into OPT-FT (answers) and OPT-CoT (rationale + answer) on
the synthetic rationale corpus -> evaluating the three on the 20 synthetic datasets x T1-T5 -> report.md, scores.json,
figures/. Training runs ``train_config`` (configs/finetune.py) through ``alert_jax.train.loop`` and evaluation
``eval_config`` (configs/evaluate.py) through ``alert_jax.eval.runner``, each with the stage's settings applied.

Tuning notes (default preset; why these numbers): the model (4 layers, d=128, ~1M parameters) is the smallest that
learned to copy the operands of a word problem into its rationale and to add/subtract single digits within a few
hundred steps; 8 packed rows of 256 tokens per step keep a step well under a second on 2 cores. The pretraining run
is long enough for fluent synthetic text, but it never sees an answer or a rationale, so the pretrained model scores
~0 on mathematics. Greedy decoding with 64 new tokens fits the longest CoT rationale (about 50 tokens).
"""

from __future__ import annotations

import ml_collections

from configs import base, evaluate, finetune

PRESETS = ("default", "reduced")


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    preset = (preset or "default").strip()
    if preset not in PRESETS:
        raise ValueError(f"configs/demo.py: unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    c = base.get_config("tiny")
    c.preset = preset
    c.seed = 0  # model init, data order and dropout of every stage
    c.compilation_cache = True  # launch/demo.py: persist XLA executables in <workdir>/jax_cache

    # ---- the tiny OPT (architecture overrides of sizes.py's 'tiny'; vocab_size must hold the tokenizer) ----------
    c.model.hidden_size = 128
    c.model.ffn_dim = 512
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.vocab_size = 1024
    c.model.max_position_embeddings = 512  # the longest T3 prompt (~310 tokens) + max_new_tokens must fit
    c.model.dropout = 0.0  # a ~1M-parameter model trained for minutes does not overfit; dropout only slows it
    c.model.attention_dropout = 0.0
    c.mesh.shape = (-1, 1, 1)
    c.data.seq_len = 256  # packed training rows

    # ---- synthetic data (alert_jax/data/synthetic.py) ------------------------------------------------------------
    d = c.demo = ml_collections.ConfigDict()
    d.data_seed = 0  # seed of the task files, the rationale corpus and the pretraining text
    d.instances_per_task = 20  # instances written per task file (evaluation uses the first eval.max_instances)
    d.num_positive_examples = 3  # demonstrations per task file (T2/T3 show 2)
    d.pretrain_documents = 20000  # generic synthetic documents (facts, narratives, raw task inputs; no answers)
    d.pretrain_valid_documents = 200
    d.finetune_examples = 4000  # rationale corpus (train split)
    d.finetune_valid_examples = 200
    # Skills whose task generators make up the finetuning corpus: 'in_domain' (ALERT's split: logical, deductive,
    # commonsense, textual entailment, mathematics) or comma-separated skill names.
    d.finetune_skills = "in_domain"
    # Definition in the fixed finetuning prompt "Definition: ...\n\nInput: ...\nOutput:": 'task' = the definition of
    # the synthetic task the example comes from (so T1 is exactly the finetuning format); 'generic' = the corpus
    # default of data/finetune.py ("Answer the question.").
    d.finetune_definition = "task"
    d.tokenizer_vocab_size = 1024  # SentencePiece pieces (<= model.vocab_size)
    d.tokenizer_texts = 8000  # texts (pretraining documents + formatted CoT examples) the tokenizer is trained on

    # ---- stage 3: "pretraining" (plain LM loss on every token of each document) ---------------------------------
    p = c.pretrain = ml_collections.ConfigDict()
    # Join consecutive documents (blank line between) into texts of up to data.seq_len tokens, so every position
    # embedding is trained (one document is ~20 tokens; prompts and finetuning targets reach ~300 / ~90).
    p.join_documents = True
    p.num_steps = 300
    p.batch_size = 8  # packed rows of data.seq_len tokens
    p.learning_rate = 3e-3
    p.warmup_steps = 30
    p.end_lr_fraction = 0.1
    p.weight_decay = 0.1
    p.log_every = 25

    # ---- stage 4: finetuning into OPT-FT and OPT-CoT (same settings for both) ------------------------------------
    f = c.finetune = ml_collections.ConfigDict()
    f.num_steps = 300
    f.batch_size = 8
    f.learning_rate = 1e-3
    f.warmup_steps = 30
    f.end_lr_fraction = 0.1
    f.weight_decay = 0.1
    f.log_every = 25

    # ---- stage 5: evaluation (alert_jax/eval/runner.py) --------------------------------------------------------
    e = c.eval = ml_collections.ConfigDict()
    e.tasks = "all"  # the 20 synthetic datasets (spec of data/registry.py resolve_tasks over the synthetic registry)
    e.templates = "all"
    e.max_instances = 20
    e.max_new_tokens = 64
    e.stop_strings = ("\n\n",)
    e.batch_size = 16
    e.buckets = ""

    # ---- the app configs every stage starts from (the demo's settings above are applied per stage) --------------
    c.train_config = finetune.get_config("tiny,cot")  # stages 3-4 (mode set per model)
    c.eval_config = evaluate.get_config("tiny")  # stage 5

    # ---- stage 6: report ------------------------------------------------------------------------------------------
    r = c.report = ml_collections.ConfigDict()
    r.effect_skill = "mathematics"  # the headline comparison "CoT vs pretrained on <skill>"
    r.effect_metric = "exact_match"  # exact_match | relaxed_match | rougeL
    r.figures = True

    if preset == "reduced":
        c.model.hidden_size = 64
        c.model.ffn_dim = 256
        c.model.num_layers = 2
        c.model.vocab_size = 512
        d.instances_per_task = 2
        d.pretrain_documents = 2000
        d.pretrain_valid_documents = 40
        d.finetune_examples = 400
        d.finetune_valid_examples = 40
        d.tokenizer_vocab_size = 512
        d.tokenizer_texts = 2000
        c.data.seq_len = 128
        p.num_steps = 12
        p.log_every = 4
        f.num_steps = 8
        f.log_every = 4
        p.warmup_steps = f.warmup_steps = 2
        e.max_instances = 2
        e.max_new_tokens = 8
    return c
