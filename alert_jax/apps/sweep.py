"""Expands a sweep config (configs/sweep.py) into runs and renders them for a launcher.

A :class:`SweepRun` is one workdir and the list of app commands that fill it: ``ft``/``cot`` runs call
``launch/train.py`` then ``launch/evaluate.py`` on the checkpoint ``checkpoint_select`` picks (by default the
step with the best dev-set score, which training then computes every ``dev_every`` steps and keeps; the evaluation's
``scores.json`` names the step); ``pretrained`` runs evaluate the initial weights only. Launchers:

* ``local``: run the commands here, one run after another (subprocesses; output streamed).
* ``slurm``: one sbatch script per run from the template ``slurm/job.sbatch`` (``srun``: one process per host).
* ``tpu``: one shell script per run from ``tpu/run.sh`` that calls ``gcloud compute tpus tpu-vm ssh --worker=all``.
* ``gke``: one JobSet yaml per run from ``gke/jobset.yaml``.

The templates live beside the launchers (``launch/``); ``launch/sweep.py`` passes that folder in as
``template_dir``, and the checkout root as the working directory of local runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shlex
import string
import subprocess
import sys
from collections.abc import Mapping, Sequence

import ml_collections
from etils import epath

from alert_jax.apps import exits

LAUNCHERS = ("local", "slurm", "tpu", "gke")
VARIANTS = ("pretrained", "ft", "cot")


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One experiment: ``size`` x ``variant``, written to ``workdir`` by ``commands`` (argv lists, run in order)."""

    name: str
    size: str
    variant: str
    workdir: str
    hosts: int
    commands: tuple[tuple[str, ...], ...]


def _flag_overrides(overrides: Mapping[str, object]) -> list[str]:
    flat = overrides.to_dict() if isinstance(overrides, ml_collections.ConfigDict) else dict(overrides)

    def walk(prefix: str, value: object):
        if isinstance(value, Mapping):
            for key, sub in value.items():
                yield from walk(f"{prefix}.{key}" if prefix else str(key), sub)
        else:
            yield f"--config.{prefix}={value}"

    return list(walk("", flat))


class SweepConfigError(ValueError):
    """A sweep setting that cannot work; the message names it."""


def _hosts_per_size(entries: Sequence[str]) -> dict[str, int]:
    table = {}
    for entry in entries:
        size, sep, count = str(entry).rpartition(":")
        if not sep or not count.isdigit() or int(count) < 1:
            raise SweepConfigError(f"hosts entry {entry!r}: must be 'SIZE:PROCESSES' with PROCESSES >= 1, e.g. '13b:4'")
        table[size] = int(count)
    return table


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Raises :class:`SweepConfigError` naming the first setting that cannot work."""
    from alert_jax.io.checkpoint import SELECTIONS
    from alert_jax.models.sizes import SIZES

    unknown = [v for v in cfg.variants if v not in VARIANTS]
    if unknown or not cfg.variants:
        raise SweepConfigError(f"variants={tuple(cfg.variants)}: must be a non-empty subset of {VARIANTS}")
    bad_sizes = [s for s in cfg.sizes if s not in SIZES]
    if bad_sizes or not cfg.sizes:
        raise SweepConfigError(f"sizes={tuple(cfg.sizes)}: must be non-empty names from {', '.join(SIZES)}")
    if "pretrained" in cfg.variants and not str(cfg.init_from):
        raise SweepConfigError("init_from='': the 'pretrained' variant evaluates the initial weights, so it needs "
                               "init_from (e.g. 'hf:facebook/opt-{size}')")
    _hosts_per_size(cfg.hosts)
    if int(cfg.gpus_per_host) < 0:
        raise SweepConfigError(f"gpus_per_host={cfg.gpus_per_host}: must be >= 0")
    for section, key in (("slurm", "coordinator_port"), ("gke", "coordinator_port")):
        if not 0 < int(cfg[section][key]) < 65536:
            raise SweepConfigError(f"{section}.{key}={cfg[section][key]}: must be a TCP port (1-65535)")
    if int(cfg.gke.max_restarts) < 0:
        raise SweepConfigError(f"gke.max_restarts={cfg.gke.max_restarts}: must be >= 0")
    if not str(cfg.root) or not str(cfg.python):
        raise SweepConfigError("root and python must be non-empty")
    if str(cfg.checkpoint_select) not in SELECTIONS:
        raise SweepConfigError(f"checkpoint_select={cfg.checkpoint_select!r}: must be one of {', '.join(SELECTIONS)}")
    if str(cfg.checkpoint_select) == "best_dev_score" and set(cfg.variants) - {"pretrained"}:
        if int(cfg.dev_every) < 1:
            raise SweepConfigError(f"dev_every={cfg.dev_every}: must be >= 1 with checkpoint_select='best_dev_score'")
        if not _niv2_dir(cfg) and not str((cfg.train_overrides.get("data") or {}).get("tfds_dir", "")):
            raise SweepConfigError("checkpoint_select='best_dev_score' scores the dev tasks during training: set "
                                   "train_overrides or eval_overrides 'data.niv2_dir' to the NIV2 task files, or "
                                   "train_overrides 'data.tfds_dir' to datasets launch/prepare.py wrote (alert_eval "
                                   "holds the dev tasks)")


def _niv2_dir(cfg: ml_collections.ConfigDict) -> str:
    """``data.niv2_dir`` of the training overrides, else of the evaluation overrides, else ''."""
    for overrides in (cfg.train_overrides, cfg.eval_overrides):
        found = str((overrides.get("data") or {}).get("niv2_dir", ""))
        if found:
            return found
    return ""


def _selection_flags(cfg: ml_collections.ConfigDict) -> list[str]:
    """Training flags the checkpoint selection needs (before the user's overrides, which win)."""
    if str(cfg.checkpoint_select) != "best_dev_score":
        return []
    niv2_dir = [f"--config.data.niv2_dir={_niv2_dir(cfg)}"] if _niv2_dir(cfg) else []  # else tfds_dir's alert_eval
    return [*niv2_dir, f"--config.train.dev_every={int(cfg.dev_every)}", "--config.train.best_metric=dev_score"]


def expand_runs(cfg: ml_collections.ConfigDict) -> list[SweepRun]:
    """Sizes x variants -> runs, in the order they should execute (each size's pretrained run first)."""
    validate(cfg)
    runs = []
    for size in cfg.sizes:
        init_from = cfg.init_from.format(size=size)
        hosts = _hosts_per_size(cfg.hosts).get(size, 1)
        for variant in cfg.variants:
            name = f"{size}-{variant}".replace(".", "p")
            workdir = os.path.join(cfg.root, name)
            evaluate = [cfg.python, "launch/evaluate.py", f"--config=configs/evaluate.py:{size}",
                        f"--workdir={workdir}/eval"]
            evaluate += _flag_overrides(cfg.eval_overrides)
            commands = []
            if variant == "pretrained":
                evaluate.append(f"--config.init_from={init_from}")
            else:
                train = [cfg.python, "launch/train.py", f"--config=configs/finetune.py:{size},{variant}",
                         f"--workdir={workdir}"]
                train += [f"--config.init_from={init_from}", *_selection_flags(cfg)]
                train += _flag_overrides(cfg.train_overrides)
                commands.append(tuple(train))
                select = str(cfg.checkpoint_select)
                evaluate.append(f"--config.init_from=ckpt:{workdir}/checkpoints"
                                + (f"@{select}" if select != "best" else ""))
            commands.append(tuple(evaluate))
            runs.append(SweepRun(name, size, variant, workdir, hosts, tuple(commands)))
    return runs


def _shell_lines(run: SweepRun, indent: str = "", extra_args: Sequence[str] = ()) -> str:
    return "\n".join(indent + shlex.join([*cmd, *extra_args]) for cmd in run.commands)


def render(run: SweepRun, launcher: str, cfg: ml_collections.ConfigDict,
           template_dir: str | os.PathLike) -> tuple[str, str]:
    """Returns ``(file name, text)`` of the job script for ``run`` under ``launcher`` (not 'local'), from the
    launcher's template in ``template_dir`` (``launch/``)."""
    template_dir = pathlib.Path(template_dir)
    common = {"run_name": run.name, "hosts": run.hosts, "gpus_per_host": cfg.gpus_per_host, "workdir": run.workdir}
    if launcher == "slurm":
        body = "\n".join(f'srun --ntasks-per-node=1 {shlex.join(cmd)} || stop_or_fail "$?"' for cmd in run.commands)
        text = string.Template((template_dir / "slurm" / "job.sbatch").read_text()).substitute(
            common,
            partition=cfg.slurm.partition,
            time=cfg.slurm.time,
            account_line=f"#SBATCH --account={cfg.slurm.account}" if cfg.slurm.account else "",
            commands=body,
        )
        return f"{run.name}.sbatch", text
    if launcher == "tpu":
        project = f" --project={shlex.quote(cfg.tpu.project)}" if cfg.tpu.project else ""
        remote = f"cd {cfg.tpu.repo_dir} && " + " && ".join(shlex.join(cmd) for cmd in run.commands)
        body = (
            f"gcloud compute tpus tpu-vm ssh {shlex.quote(cfg.tpu.name)} --zone={shlex.quote(cfg.tpu.zone)}{project} "
            f"--worker=all --command={shlex.quote(remote)}"
        )
        text = string.Template((template_dir / "tpu" / "run.sh").read_text()).substitute(common, commands=body)
        return f"{run.name}.sh", text
    if launcher == "gke":
        # Kubernetes names must start with a letter (DNS-1035); pod 0's hostname is <jobset>-workers-0-0.<jobset>.
        k8s_name = f"alert-{run.name}"
        common["run_name"] = k8s_name
        flags = (
            f"--config.distributed.coordinator_address={k8s_name}-workers-0-0.{k8s_name}:{cfg.gke.coordinator_port}",
            f"--config.distributed.num_processes={run.hosts}",
        )
        # The process id is the pod's completion index, expanded by bash inside the pod.
        lines = [shlex.join([*cmd, *flags]) + " --config.distributed.process_id=$JOB_COMPLETION_INDEX"
                 for cmd in run.commands]
        body = "\n".join(" " * 22 + line for line in ["set -e", *lines])
        g = cfg.gke
        claim = str(g.get("volume_claim", ""))
        text = string.Template((template_dir / "gke" / "jobset.yaml").read_text()).substitute(
            common,
            service_account_line=f"serviceAccountName: {g.service_account}" if g.get("service_account") else "",
            volumes_line=(f"volumes: [{{name: workdirs, persistentVolumeClaim: {{claimName: {claim}}}}}]"
                          if claim else ""),
            volume_mounts_line=(f"volumeMounts: [{{name: workdirs, mountPath: {g.volume_mount_path}}}]"
                                if claim else ""),
            namespace=cfg.gke.namespace,
            image=cfg.gke.image,
            gpu_resource=cfg.gke.gpu_resource,
            coordinator_port=cfg.gke.coordinator_port,
            max_restarts=cfg.gke.max_restarts,
            commands_yaml=body,
        )
        return f"{run.name}.yaml", text
    raise ValueError(f"unknown launcher {launcher!r}; valid: {LAUNCHERS}")


def run_local(runs: Sequence[SweepRun], cwd: str | os.PathLike) -> int:
    """Runs every command of every run here (in the checkout root ``cwd``: the commands name ``launch/*.py``), in
    order, and returns the sweep's exit code. A training command that stops early (exit
    ``apps.exits.STOPPED``: SIGTERM, SIGINT, ``train.stop_at_step``) ends the sweep with that code before its run
    is evaluated: rerunning the sweep resumes it (finished runs resume at their last step and reuse their
    predictions). Any other failing command raises RuntimeError naming it."""
    for i, run in enumerate(runs, 1):
        for cmd in run.commands:
            argv = [sys.executable if cmd[0] == "python" else cmd[0], *cmd[1:]]
            print(f"[sweep {i}/{len(runs)}] {run.name}: {shlex.join(cmd)}", flush=True)
            result = subprocess.run(argv, cwd=cwd)
            if result.returncode == exits.STOPPED:
                print(f"[sweep] {run.name} stopped early with a checkpoint saved; not evaluated. Rerun the sweep to "
                      "continue.", flush=True)
                return exits.STOPPED
            if result.returncode:
                raise RuntimeError(f"run {run.name} failed (exit {result.returncode}): {shlex.join(cmd)}")
        print(f"[sweep] {run.name}: {evaluated_checkpoint(run)}", flush=True)
    return exits.DONE


def evaluated_checkpoint(run: SweepRun) -> str:
    """Which weights the run's evaluation used, from its ``eval/scores.json`` metadata (checkpoint path and step)."""
    try:
        meta = json.loads((epath.Path(run.workdir) / "eval" / "scores.json").read_text()).get("metadata", {})
    except (OSError, ValueError):
        return "no eval/scores.json"
    step = meta.get("checkpoint_step")
    where = meta.get("init_from", "")
    return f"evaluated {where}" + (f" -> step {step}" if step is not None else "")
