"""Scale-ablation sweep: sizes x {pretrained, ft, cot} (DESIGN.md section 7, the paper's Figure 4).

    python launch/sweep.py --config=configs/sweep.py --launcher=slurm --dry_run
    python launch/sweep.py --config=configs/sweep.py:tiny --launcher=local     # CPU-sized sweep

Each run is one workdir ``{root}/{size}-{variant}``: ``ft``/``cot`` runs finetune (launch/train.py) and then evaluate
their dev-selected checkpoint (launch/evaluate.py; ``checkpoint_select``); ``pretrained`` runs only evaluate the
initial weights.
"""

from __future__ import annotations

import ml_collections


def get_config(preset: str = "paper") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.root = "workdirs/sweep"
    c.variants = ("pretrained", "ft", "cot")
    c.python = "python"
    # Overrides passed to both apps as --config.KEY=VALUE (e.g. {"data.tfds_dir": "/data/tfds"}: the paper sizes read
    # the datasets launch/prepare.py --modes=ft,cot wrote; {"data.finetune_dir": ...} for sizes that read raw files).
    c.train_overrides = ml_collections.ConfigDict()
    c.eval_overrides = ml_collections.ConfigDict()
    # Which checkpoint of a finetuning run is evaluated (io.checkpoint.SELECTIONS). 'best_dev_score' (the paper's
    # selection): training scores the dev tasks by generation every dev_every steps, keeps the best-scoring step
    # (train.best_metric='dev_score') and evaluation loads ckpt:RUN/checkpoints@best_dev_score. It needs the NIV2
    # task files in training too: data.niv2_dir from train_overrides, else from eval_overrides.
    # 'best' (the run's own train.best_metric) | 'best_val_loss' | 'latest' train without dev scores.
    c.checkpoint_select = "best_dev_score"
    c.dev_every = 200

    if preset == "paper":
        c.sizes = ("1.3b", "13b")
        # '{size}' is replaced per run; the hub id is resolved by huggingface_hub on the cluster.
        c.init_from = "hf:facebook/opt-{size}"
        c.hosts = ("1.3b:1", "13b:4")  # "size:processes" (one process per host); unlisted sizes: 1
        c.gpus_per_host = 8
        # The NIV2 task files on the cluster (evaluation, and the dev-set score during training).
        c.eval_overrides.data = ml_collections.ConfigDict({"niv2_dir": "/data/natural-instructions"})
    elif preset == "tiny":
        # From scratch on CPU: there is no pretrained tiny OPT to evaluate, so only the finetuned variants run
        # (each trains a SentencePiece tokenizer on the synthetic corpus and stores it with its checkpoints).
        c.sizes = ("tiny",)
        c.variants = ("ft", "cot")
        c.init_from = ""
        c.hosts = ("tiny:1",)
        c.gpus_per_host = 0
    else:
        raise ValueError(f"unknown sweep preset {preset!r}; valid: 'paper', 'tiny'")

    c.slurm = ml_collections.ConfigDict()
    c.slurm.partition = "gpu"
    c.slurm.time = "48:00:00"
    c.slurm.account = ""
    c.slurm.coordinator_port = 12345

    c.tpu = ml_collections.ConfigDict()
    c.tpu.name = "alert-tpu"
    c.tpu.zone = "us-central2-b"
    c.tpu.project = ""
    c.tpu.repo_dir = "~/alert-jax"

    c.gke = ml_collections.ConfigDict()
    c.gke.image = "us-docker.pkg.dev/PROJECT/alert-jax/alert-jax:latest"
    c.gke.namespace = "default"
    c.gke.gpu_resource = "nvidia.com/gpu"
    c.gke.coordinator_port = 12345
    c.gke.max_restarts = 10  # JobSet restarts after a failed pod (exit 75: preempted, resumes from its checkpoint)
    # Where the pods keep workdirs (pods' own disks vanish on restart): a bucket root (root='gs://BUCKET/alert-jax',
    # needs the 'cloud' extra in the image) reached through Workload Identity -- service_account names the
    # Kubernetes service account bound to a Google service account that may write the bucket -- or a
    # ReadWriteMany PersistentVolumeClaim (volume_claim) mounted at volume_mount_path (set root below it).
    c.gke.service_account = ""
    c.gke.volume_claim = ""
    c.gke.volume_mount_path = "/workdirs"
    return c
