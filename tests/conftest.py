"""Shared test setup.

* 8 fake CPU devices for every test (set before jax is imported), so sharding tests can build meshes; single-device
  tests use ``jax.devices()[:1]``.
* Real reference data is read from ``$ALERT_JAX_DATA`` (default: ``../shared/data`` beside the checkout); tests that
  need it take the ``niv2_tasks_dir`` / ``finetune_data_dir`` fixtures, which skip with a reason when it is absent.
"""

from __future__ import annotations

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def shared_data_dir() -> pathlib.Path:
    """Where the read-only reference data lives (``$ALERT_JAX_DATA`` or ``../shared/data``)."""
    return pathlib.Path(os.environ.get("ALERT_JAX_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def niv2_tasks_dir() -> pathlib.Path:
    path = shared_data_dir() / "niv2" / "tasks"
    if not path.is_dir():
        pytest.skip(f"NIV2 task files not found at {path} (set ALERT_JAX_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def finetune_data_dir() -> pathlib.Path:
    path = shared_data_dir() / "finetune"
    if not path.is_dir():
        pytest.skip(f"finetuning datasets not found at {path} (set ALERT_JAX_DATA to the shared data folder)")
    return path
