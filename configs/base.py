"""Settings shared by every app (model, mesh, tokenizer, data paths). Apps' configs start from ``get_config()``."""

from __future__ import annotations

import os

import ml_collections


def get_config(size: str = "tiny") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # '' = random init; 'hf:PATH_OR_HUB_ID' = Hugging Face OPT; 'metaseq:FILE' = consolidated metaseq checkpoint;
    # 'ckpt:DIR' = an alert_jax checkpoint directory (a workdir's checkpoints/ or one step of it).
    c.init_from = ""

    c.model = ml_collections.ConfigDict()
    c.model.size = size  # a name from alert_jax/models/sizes.py
    c.model.dtype = "float32"  # compute dtype ('bfloat16' on accelerators)
    c.model.param_dtype = "float32"  # master weights
    c.model.remat_policy = "none"  # none | full | save_dots | save_dots_no_batch
    # auto | xla | cudnn | reference. 'auto' (the paper sizes) = cuDNN flash attention on GPUs with bf16/fp16 compute
    # and no attention dropout, XLA elsewhere (models/attention.py resolve_impl); the tiny test sizes stay on 'xla'.
    c.model.attention_impl = "xla" if size.startswith("tiny") else "auto"
    c.model.scan_unroll = 1  # layers per iteration of the training forward's layer scan; num_layers = unrolled
    c.model.dropout = 0.1
    # 0.0 as in OPT's released configs (DESIGN.md section 2); cuDNN attention cannot apply it (> 0 with
    # attention_impl='cudnn' is refused at setup; 'auto' then runs XLA's attention in training).
    c.model.attention_dropout = 0.0

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 = fill with the remaining devices

    # Tokenizer spec: 'bpe:DIR' (vocab.json+merges.txt or tokenizer.json), 'sp:MODEL_FILE', or a directory.
    # '' = the tokenizer stored beside the checkpoint named by init_from.
    c.tokenizer = ""

    c.data = ml_collections.ConfigDict()
    c.data.niv2_dir = os.environ.get("ALERT_JAX_NIV2_DIR", "")  # folder of NIV2 task files or an NIV2 checkout
    c.data.finetune_dir = os.environ.get("ALERT_JAX_FINETUNE_DIR", "")  # folder with one sub-folder per corpus
    c.data.seq_len = 2048
    # Where training / evaluation records come from: 'raw' = the files above, parsed by every process (small runs);
    # 'tfds' = the array_record datasets launch/prepare.py wrote to tfds_dir (local or gs://), each process reading
    # only its own shard. Both give the same batches and prompts.
    c.data.source = "raw"
    c.data.tfds_dir = os.environ.get("ALERT_JAX_TFDS_DIR", "")

    # Multi-host: empty = jax.distributed.initialize() auto-detection (SLURM, TPU, GKE) when more than one process.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator_address = ""
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    return c
