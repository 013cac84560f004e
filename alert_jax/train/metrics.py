"""What the training loop reports: the per-interval training record, its progress line, and the writer that sends
scalars to stdout, ``<workdir>/metrics.jsonl`` and TensorBoard.

Training record fields (``train_record``; ``train.loop`` documents when they are written): loss (token-weighted over
the interval), learning_rate, grad_norm, target_tokens_per_s, padded_tokens_per_s, packing_efficiency (real / padded
tokens), target_fraction, step_time_s, tflops_per_device and mfu (formula: ``alert_jax.train.flops``).
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from etils import epath

from alert_jax.io.files import atomic_write_bytes, atomic_write_text, is_url

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Writes scalars to stdout, ``<workdir>/metrics.jsonl`` and TensorBoard (tensorboardX, when installed).

    Only process 0 writes. Every JSONL record has ``step``, ``kind`` ('train' | 'eval') and ``time``. A run resumed
    from step ``resumed_from`` first drops the rows of later steps (written by the run that was killed after that
    checkpoint), so the file holds one row per step and kind.

    In a bucket workdir (``gs://...``), where objects cannot be appended to, ``metrics.jsonl`` is rewritten whole
    at every write (one upload each, so a reader sees complete rows); TensorBoard events are written into a local
    temporary folder and uploaded to ``<workdir>/tb`` after every write the same way.
    """

    def __init__(self, workdir: epath.Path, tensorboard: bool = True, resumed_from: int | None = None):
        self.enabled = jax.process_index() == 0
        self._jsonl = None
        self._bucket_text: str | None = None  # the whole file, for a bucket workdir
        self._tb = None
        self._tb_upload: tuple[pathlib.Path, epath.Path] | None = None  # (local folder, bucket folder)
        if not self.enabled:
            return
        workdir.mkdir(parents=True, exist_ok=True)
        path = self._path = workdir / METRICS_FILE
        if resumed_from is not None and path.is_file():
            _drop_rows_after(path, resumed_from)
        tb_dir = workdir / "tb"
        if is_url(path):
            self._bucket_text = path.read_text(encoding="utf-8") if path.exists() else ""
            if tensorboard:
                self._tb_upload = (pathlib.Path(tempfile.mkdtemp(prefix="alert_jax_tb_")), tb_dir)
        else:
            self._jsonl = open(path, "a", encoding="utf-8")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                log.warning("tensorboardX is not installed: TensorBoard events are not written (JSONL still is)")
            else:
                self._tb = SummaryWriter(str(self._tb_upload[0] if self._tb_upload else tb_dir))

    def write(self, step: int, kind: str, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind, "time": time.time(), **{k: _jsonable(v) for k, v in scalars.items()}}
        if self._bucket_text is not None:
            self._bucket_text += json.dumps(record) + "\n"
            atomic_write_text(self._path, self._bucket_text)
        else:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, int(step))
            self._tb.flush()
            self._upload_tb()

    def _upload_tb(self) -> None:
        if self._tb_upload is not None:
            local, remote = self._tb_upload
            for f in local.iterdir():
                atomic_write_bytes(remote / f.name, f.read_bytes())

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
            self._upload_tb()
        if self._tb_upload is not None:
            shutil.rmtree(self._tb_upload[0], ignore_errors=True)


def _drop_rows_after(path: epath.Path, step: int) -> None:
    """Rewrites the JSONL file ``path`` (atomically) without the records of steps after ``step``; an unreadable
    last line (a write cut by a kill) goes too."""
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if int(record.get("step", 0)) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.generic, jax.Array)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def train_record(fetched: list[dict[str, Any]], elapsed: float, steps: int, global_batch: int, seq_len: int,
                  step_flops: float, num_devices: int, peak: float | None) -> dict[str, float]:
    loss_sum = sum(float(m["loss_sum"]) for m in fetched)
    target = sum(float(m["target_tokens"]) for m in fetched)
    real = sum(float(m["real_tokens"]) for m in fetched)
    padded = float(global_batch * seq_len * steps)
    step_time = elapsed / max(steps, 1)
    last = fetched[-1]
    tflops = step_flops / max(step_time, 1e-12) / num_devices
    return {
        "loss": loss_sum / max(target, 1.0),
        "learning_rate": float(last.get("learning_rate", float("nan"))),
        "grad_norm": float(last["grad_norm"]),
        "target_tokens_per_s": target / max(elapsed, 1e-12),
        "padded_tokens_per_s": padded / max(elapsed, 1e-12),
        "packing_efficiency": real / padded,
        "target_fraction": target / padded,
        "step_time_s": step_time,
        "tflops_per_device": tflops / 1e12,
        "mfu": tflops / peak if peak else float("nan"),
    }


def progress_line(step: int, num_steps: int, r: Mapping[str, float], first: bool) -> str:
    eta = (num_steps - step) * r["step_time_s"]
    note = " (includes compilation)" if first else ""
    mfu = f"{100 * r['mfu']:.1f}%" if math.isfinite(r["mfu"]) else "n/a"
    return (f"step {step}/{num_steps} | loss {r['loss']:.4f} | lr {r['learning_rate']:.2e} | gnorm "
            f"{r['grad_norm']:.3f} | {r['target_tokens_per_s']:.0f} target tok/s | {r['padded_tokens_per_s']:.0f} "
            f"tok/s | pack {100 * r['packing_efficiency']:.1f}% | {r['step_time_s'] * 1e3:.0f} ms/step{note} | "
            f"{r['tflops_per_device']:.3f} TFLOP/s/dev | MFU {mfu} | eta {eta:.0f}s")
