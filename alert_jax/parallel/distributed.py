"""Multi-host start-up (``jax.distributed.initialize`` from explicit settings or the environment) and the few
cross-process helpers the apps use: who writes (:func:`is_primary`), barriers, and agreeing on a flag or a value.

Three ways a process learns its place in a multi-process job, in this order:

1. explicit settings (``cfg.distributed.coordinator_address``, ``num_processes``, ``process_id``; the same values the
   ``--config.distributed.*`` flags set);
2. the environment variables ``ALERT_JAX_COORDINATOR`` (``host:port``), ``ALERT_JAX_NUM_PROCESSES`` and
   ``ALERT_JAX_PROCESS_ID`` (what ``launch/slurm`` / ``launch/gke`` scripts export; JAX's own
   ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` are accepted too);
3. JAX's cluster auto-detection (SLURM, TPU pods, GKE, MPI) when one of its environments is present.

With none of them the run is single-process and nothing is initialised. ``initialize`` must run before anything
touches the devices (before ``jax.devices()``), and at most once per process.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np

_ENV_KEYS = (
    ("ALERT_JAX_COORDINATOR", "ALERT_JAX_NUM_PROCESSES", "ALERT_JAX_PROCESS_ID"),
    ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"),
)


def _cluster_detected() -> bool:
    """A multi-process environment JAX can auto-detect: a SLURM step or Open MPI job with > 1 task, a TPU pod."""
    env = os.environ
    if int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")) or 1) > 1:
        return True
    if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return True
    return "," in env.get("TPU_WORKER_HOSTNAMES", "") or bool(env.get("MEGASCALE_COORDINATOR_ADDRESS"))

_initialized = False


def _from_env() -> tuple[str, int, int] | None:
    for addr_key, num_key, id_key in _ENV_KEYS:
        addr = os.environ.get(addr_key, "")
        if addr:
            try:
                return addr, int(os.environ[num_key]), int(os.environ[id_key])
            except (KeyError, ValueError) as e:
                raise ValueError(f"{addr_key} is set, so {num_key} and {id_key} must be set to integers too") from e
    return None


def initialize(
    coordinator_address: str = "",
    num_processes: int = 0,
    process_id: int = -1,
    *,
    cpu_collectives: str | None = "gloo",
    local_device_ids: Any = None,
) -> bool:
    """Initialises ``jax.distributed`` when this is a multi-process run; returns True if it did.

    Args:
      coordinator_address: ``host:port`` of process 0's coordinator; '' = take it from the environment.
      num_processes, process_id: the job size and this process's rank (needed with an explicit address).
      cpu_collectives: CPU cross-process collectives implementation ('gloo'; ``None`` leaves JAX's default).
      local_device_ids: passed to ``jax.distributed.initialize`` (restrict the local GPUs of this process).
    """
    global _initialized
    if _initialized:
        return True
    explicit: tuple[str, int, int] | None = None
    if coordinator_address:
        if num_processes <= 0 or process_id < 0:
            raise ValueError(
                f"distributed.coordinator_address={coordinator_address!r} needs distributed.num_processes > 0 and "
                f"distributed.process_id >= 0 (got {num_processes}, {process_id})"
            )
        explicit = (coordinator_address, int(num_processes), int(process_id))
    else:
        explicit = _from_env()
    if explicit is not None and explicit[1] == 1:
        return False
    if explicit is None and not _cluster_detected():
        return False
    if cpu_collectives:  # cross-process collectives between CPU devices (tests, CPU clusters)
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if explicit is not None:
        addr, n, pid = explicit
        logging.info("jax.distributed.initialize(%s, num_processes=%d, process_id=%d)", addr, n, pid)
        jax.distributed.initialize(addr, num_processes=n, process_id=pid, local_device_ids=local_device_ids)
    else:
        logging.info("jax.distributed.initialize() with cluster auto-detection")
        jax.distributed.initialize(local_device_ids=local_device_ids)
    _initialized = True
    return True


def initialize_from_config(cfg: Any) -> bool:
    """:func:`initialize` with ``cfg.distributed.{coordinator_address, num_processes, process_id}``."""
    d = cfg.distributed
    return initialize(str(d.coordinator_address), int(d.num_processes), int(d.process_id))


def is_primary() -> bool:
    """True on process 0 (the one that writes reports, metrics and logs)."""
    return jax.process_index() == 0


def print_primary(msg: str) -> None:
    """Prints ``msg`` (flushed) on process 0 only: one progress line per job, not one per host."""
    if is_primary():
        print(msg, flush=True)


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (a no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
    """Process 0's value of ``flag`` on every process (so all processes skip or do the same work)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))


def reached_preemption_point(step: int) -> bool:
    """True on every process at the step JAX's preemption service chose after any process got a preemption notice
    (SIGTERM); must be called by every process at every step. False with one process (its signals are the caller's)
    or when the service is off."""
    if jax.process_count() == 1:
        return False
    from jax.experimental import multihost_utils

    try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
    except RuntimeError:  # the preemption service is disabled (jax_enable_preemption_service)
        return False


def host_array(x: jax.Array) -> np.ndarray:
    """The whole value of ``x`` as a numpy array on this process (gathered when it spans processes; every process
    must call it then)."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
