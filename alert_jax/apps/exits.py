"""What every launcher exits with, and the one place that maps errors to those codes.

============  ===  ===============================================================================================
code          int  meaning
============  ===  ===============================================================================================
DONE          0    finished
NONFINITE     1    a non-finite training loss (the message names the step; the last good checkpoint is kept)
BAD_INPUT     2    a bad config or input: one line naming the setting, file or path; nothing written to the workdir
WRITE_FAILED  74   a checkpoint could not be written (full disk, file-size limit, lost storage): the steps saved
                   before it are intact; free space and rerun to resume. 74 is ``EX_IOERR`` of sysexits.h. Not
                   requeued: the cause outlives a restart.
STOPPED       75   stopped early with a checkpoint saved (SIGTERM, SIGINT, ``train.stop_at_step``, or no restorable
                   checkpoint left): rerun the same command to continue. Schedulers requeue on it; sweeps and job
                   templates do not evaluate such a run. 75 is ``EX_TEMPFAIL`` of sysexits.h ("try again later").
============  ===  ===============================================================================================
"""

from __future__ import annotations

import sys
from collections.abc import Callable

DONE = 0
NONFINITE = 1
BAD_INPUT = 2
WRITE_FAILED = 74
STOPPED = 75


def input_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad config or input (exit :data:`BAD_INPUT`)."""
    from alert_jax.apps.demo.run import DemoError
    from alert_jax.data.examples import CorpusFormatError
    from alert_jax.data.finetune import CorpusNotFoundError
    from alert_jax.data.niv2 import TaskFileError
    from alert_jax.data.sources import DataSourceError
    from alert_jax.eval.runner import EvalConfigError
    from alert_jax.io.export import ExportError
    from alert_jax.io.safetensors_shards import ShardPlanError
    from alert_jax.io.tokenizers import TokenizerLoadError
    from alert_jax.io.weight_files import CheckpointError
    from alert_jax.io.workdir import WorkdirError
    from alert_jax.parallel.param_sharding import InsufficientShardingError
    from alert_jax.train.settings import TrainConfigError

    return (TrainConfigError, DemoError, CorpusFormatError, CorpusNotFoundError, TaskFileError, EvalConfigError,
            TokenizerLoadError, CheckpointError, WorkdirError, InsufficientShardingError, ExportError, ShardPlanError,
            FileNotFoundError, DataSourceError)


def run_app(app: str, fn: Callable[[], object]) -> int:
    """Runs ``fn()`` and returns the exit code: :data:`DONE`; :data:`BAD_INPUT` / :data:`NONFINITE` /
    :data:`STOPPED` / :data:`WRITE_FAILED` with a one-line ``<app>: ...`` message on stderr. Other exceptions
    propagate (a bug: traceback)."""
    from alert_jax.io.checkpoint import CheckpointWriteError
    from alert_jax.train.loop import NonFiniteLossError, StoppedEarly

    try:
        fn()
    except NonFiniteLossError as e:
        print(f"{app}: error: {e}", file=sys.stderr, flush=True)
        return NONFINITE
    except StoppedEarly as e:
        print(f"{app}: {e}", file=sys.stderr, flush=True)
        return STOPPED
    except CheckpointWriteError as e:
        print(f"{app}: error: {e}", file=sys.stderr, flush=True)
        return WRITE_FAILED
    except input_errors() as e:
        print(f"{app}: error: {e}", file=sys.stderr, flush=True)
        return BAD_INPUT
    return DONE
