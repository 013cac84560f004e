"""Cloud paths: a tiny train + evaluate whose workdirs, checkpoints and task files are ``gs://`` paths, and a Hugging
Face export written to (and loaded back from) a ``gs://`` folder.

The bucket is a local fake GCS server (``gcp-storage-emulator``, in memory, in this process). Both clients that
write to ``gs://`` use it: ``etils.epath`` (through gcsfs, ``STORAGE_EMULATOR_HOST``) for this project's files and
orbax's own metadata, and tensorstore (``TENSORSTORE_GCS_HTTP_URL``, a fixed test token) for orbax's arrays. So the
test sees what a real bucket would hold, and proves nothing is written to a local path mangled from the URL
(``gs:/bucket/...``, what ``pathlib`` makes of ``gs://bucket/...``).
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

pytest.importorskip("gcsfs", reason="gs:// paths need gcsfs (pip install -e '.[cloud]')")
emulator = pytest.importorskip("gcp_storage_emulator.server", reason="the fake bucket needs gcp-storage-emulator "
                               "(pip install -e '.[test]')")

BUCKET = "alert-fake-bucket"


def _with_generation_headers(download):
    """The emulator's media download plus the ``x-goog-generation`` header that real GCS sends and tensorstore reads
    (without it tensorstore rejects every read as a 'Malformed StorageGeneration')."""

    def wrapped(request, response, storage, *args, **kwargs):
        download(request, response, storage, *args, **kwargs)
        if response.status.value < 300:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

    return wrapped


@pytest.fixture
def fake_bucket(monkeypatch, tmp_path):
    """A started in-memory GCS emulator with ``BUCKET``; yields a gcsfs filesystem on it. The working directory is
    an empty temporary folder, so a mangled local ``gs:/...`` path would show up there."""
    import gcsfs
    from gcp_storage_emulator.handlers import objects

    patched = _with_generation_headers(objects.download)
    for _, methods in emulator.HANDLERS:
        for method, handler in list(methods.items()):
            if handler is objects.download:
                monkeypatch.setitem(methods, method, patched)
    monkeypatch.setattr(objects, "download", patched)  # objects.get(alt=media) calls it by name
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = emulator.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    httpd = getattr(getattr(server, "_api", None), "_httpd", None)
    if httpd is not None:  # clients that close a connection early are normal here: no traceback per request
        httpd.handle_error = lambda request, address: None
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", url)
    monkeypatch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "fake-token")  # tensorstore: no credential lookup
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    try:
        # the plain client: gcsfs's default (extended) one first asks a gRPC service whether the bucket is zonal
        yield gcsfs.core.GCSFileSystem(token="anon", skip_instance_cache=True)
    finally:
        server.stop()


def _local_tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_tiny_train_and_evaluate_in_a_gs_bucket(fake_bucket, launch_env, tmp_path):
    from alert_jax.data import synthetic
    from alert_jax.eval import runner
    from alert_jax.io import files, integrity
    from alert_jax.train import loop
    from configs import evaluate as eval_config
    from configs import finetune as finetune_config

    fs = fake_bucket
    data, run, ev = (f"gs://{BUCKET}/data", f"gs://{BUCKET}/runs/tiny", f"gs://{BUCKET}/evals/tiny")

    written = synthetic.write_synthetic_tasks(data, seed=0, instances_per_task=2, num_positive_examples=0)
    assert all(str(p).startswith("gs://") for p in written)

    cfg = finetune_config.get_config("tiny,cot")
    cfg.tokenizer = launch_env["tokenizer"]
    cfg.data.max_eval_examples = 8
    cfg.train.num_steps, cfg.train.log_every, cfg.train.eval_every, cfg.train.checkpoint_every = 2, 1, 2, 2
    summary = loop.train_and_evaluate(cfg, run)
    assert summary["step"] == 2 and summary["stopped"] == "done"

    ecfg = eval_config.get_config("tiny")
    ecfg.init_from = f"ckpt:{run}"
    ecfg.data.niv2_dir = data
    ecfg.eval.registry = "synthetic"
    name = synthetic.synthetic_registry().datasets[0].name
    ecfg.eval.tasks, ecfg.eval.templates, ecfg.eval.max_instances, ecfg.eval.max_new_tokens = name, "T1", 2, 4
    scores = runner.evaluate(ecfg, ev)
    assert scores["metadata"]["checkpoint_step"] == 2
    assert scores["metadata"]["checkpoint_path"].startswith(f"gs://{BUCKET}/runs/tiny")

    objects = set(fs.find(BUCKET))
    b = BUCKET
    for want in (f"{b}/runs/tiny/config.json", f"{b}/runs/tiny/metrics.jsonl", f"{b}/runs/tiny/config_history.jsonl",
                 f"{b}/runs/tiny/checkpoints/config.json", f"{b}/evals/tiny/scores.json", f"{b}/evals/tiny/report.md",
                 f"{b}/evals/tiny/predictions/{name}/T1.jsonl"):
        assert want in objects, (want, sorted(objects))
    # orbax's arrays went through tensorstore into the bucket, and the checkpoint was sealed there
    step_objects = [o for o in objects if o.startswith(f"{b}/runs/tiny/checkpoints/2/")]
    assert any("/ocdbt.process_0/" in o for o in step_objects), step_objects
    assert f"{b}/runs/tiny/checkpoints/2/integrity.json" in objects
    assert any(o.startswith(f"{b}/runs/tiny/tb/events.") for o in objects)  # TensorBoard, uploaded
    assert any(o.startswith(f"{b}/evals/tiny/figures/") and o.endswith(".png") for o in objects)
    assert not any(o.endswith(".lock") for o in objects)  # the run released its workdir
    # the seal is read back from the bucket: intact, then a changed array file is found
    step = f"gs://{b}/runs/tiny/checkpoints/2"
    assert integrity.verify_step(step).ok
    victim = max((o for o in step_objects if "/ocdbt.process_0/d/" in o), key=lambda o: fs.size(o))
    data_bytes = bytearray(fs.cat(victim))
    data_bytes[len(data_bytes) // 2] ^= 0xFF
    fs.pipe(victim, bytes(data_bytes))
    check = integrity.verify_step(step)
    assert check.damaged and victim.split("/checkpoints/2/")[1] in check.reason
    # a damaged step is set aside as a folder move, which a bucket does object by object
    files.move_folder(step, f"gs://{b}/runs/tiny/checkpoints/damaged/2")
    moved = set(fs.find(f"{b}/runs/tiny/checkpoints"))
    assert not any(o.startswith(f"{b}/runs/tiny/checkpoints/2/") for o in moved)
    assert {o.replace("/checkpoints/2/", "/checkpoints/damaged/2/") for o in step_objects} <= moved
    # what was written is what evaluation read: the predictions name the checkpoint in the bucket
    records = [json.loads(x) for x in fs.cat(f"{b}/evals/tiny/predictions/{name}/T1.jsonl").decode().splitlines()]
    assert len(records) == 2 and all(r["provenance"]["checkpoint_step"] == 2 for r in records)
    train_rows = [json.loads(x) for x in fs.cat(f"{b}/runs/tiny/metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in train_rows if r["kind"] == "train"] == [1, 2]
    assert [r["step"] for r in train_rows if r["kind"] == "eval"] == [2]

    # nothing landed on a local path made from the URL ('gs:/...'), in the working directory or the temp folder
    assert _local_tree(tmp_path / "cwd") == []
    assert not [p for p in _local_tree(tmp_path) if "gs:" in p or BUCKET in p]


def test_finetuning_corpora_read_from_a_bucket(fake_bucket, finetune_data_dir, tmp_path):
    """The finetuning readers give the same examples from a bucket copy of a corpus folder as from the folder."""
    from alert_jax.data import finetune

    fs = fake_bucket
    for name, files in (("aqua_rat", ("dev.json",)), ("gsm8k", ("test.jsonl",))):
        for f in files:
            fs.pipe(f"{BUCKET}/finetune/{name}/{f}", (finetune_data_dir / name / f).read_bytes())
    for name, split in (("aqua_rat", "dev"), ("gsm8k", "test")):
        local = finetune.read_corpus(name, finetune_data_dir / name, split)
        remote = finetune.read_corpus(name, f"gs://{BUCKET}/finetune/{name}", split)
        assert len(local) > 100 and remote == local
    assert _local_tree(tmp_path / "cwd") == []


def test_workdir_lock_history_and_metrics_in_a_bucket(fake_bucket):
    """The bucket branches of the workdir: the lock refuses a second run and is released; the config history and
    metrics.jsonl (objects cannot be appended to) keep every row, and a resume drops the rows after its step."""
    from etils import epath

    from alert_jax.io import workdir as workdir_lib
    from alert_jax.train.metrics import MetricsWriter

    fs, root = fake_bucket, f"gs://{BUCKET}/w"
    with workdir_lib.workdir_lock(root) as held:
        assert str(held) == root and fs.exists(f"{BUCKET}/w/.lock")
        with pytest.raises(workdir_lib.WorkdirBusyError, match="in use by process"):
            with workdir_lib.workdir_lock(root):
                pass
        workdir_lib.append_config_history(root, {"a": 1}, None)
        workdir_lib.append_config_history(root, {"a": 2}, 3)
    assert not fs.exists(f"{BUCKET}/w/.lock")
    history = [json.loads(x) for x in fs.cat(f"{BUCKET}/w/config_history.jsonl").decode().splitlines()]
    assert [(h["config"]["a"], h["resumed_from"]) for h in history] == [(1, None), (2, 3)]

    writer = MetricsWriter(epath.Path(root), tensorboard=False)
    for step in (1, 2, 3):
        writer.write(step, "train", {"loss": float(step)})
    writer.close()
    writer = MetricsWriter(epath.Path(root), tensorboard=False, resumed_from=2)
    writer.write(3, "train", {"loss": 30.0})
    writer.close()
    rows = [json.loads(x) for x in fs.cat(f"{BUCKET}/w/metrics.jsonl").decode().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_hf_export_to_and_load_from_a_bucket(fake_bucket, tmp_path):
    """``export --out=gs://...`` writes the same files, byte for byte, as a local export (shards, index, config,
    tokenizer); ``hf:gs://...`` and ``metaseq:gs://...`` load from the bucket; ``overwrite`` and the clean-up after a
    failed export work on bucket objects."""
    import torch
    from helpers import small_bpe

    from alert_jax.io import convert, export, loader
    from alert_jax.io import safetensors_shards as shards_lib
    from alert_jax.models import opt, sizes
    from alert_jax.parallel.sharding import make_mesh

    fs, b = fake_bucket, BUCKET
    config = sizes.get_model_config("tiny", vocab_size=300, dropout=0.0, attention_dropout=0.0)
    model, tok = opt.create_model(config, None, rngs_seed=0), small_bpe(300)
    local, url = tmp_path / "local", f"gs://{b}/exports/tiny"
    export.export_model(model, tok, local, max_shard_size="80KB")
    export.export_model(model, tok, url, max_shard_size="80KB")
    names = sorted(p.name for p in local.iterdir())
    assert shards_lib.INDEX_FILE in names and sum(n.startswith("model-") for n in names) > 4
    assert sorted(o.rsplit("/", 1)[1] for o in fs.find(f"{b}/exports/tiny")) == names
    for name in names:
        assert fs.cat(f"{b}/exports/tiny/{name}") == (local / name).read_bytes(), name

    # hf:gs://... loads (config, tokenizer and weights from a local copy) and exports again to the same bytes
    assert loader.checkpoint_identity(f"hf:{url}") == (url, None)
    export.export(f"hf:{url}", tmp_path / "again", max_shard_size="80KB")
    for name in names:
        assert (tmp_path / "again" / name).read_bytes() == (local / name).read_bytes(), name

    # metaseq:gs://... is copied, then read by torch
    state = {k: torch.tensor(v) for k, v in convert.to_hf_state_dict(model).items()}
    with fs.open(f"{b}/metaseq/tiny.pt", "wb") as f:
        torch.save({"model": state}, f)
    spec = f"metaseq:gs://{b}/metaseq/tiny.pt"
    loaded = loader.load_model(spec, config, make_mesh((1, -1, 1)))
    assert loader.checkpoint_identity(spec) == (f"gs://{b}/metaseq/tiny.pt", None)
    for name, value in convert.to_hf_state_dict(loaded.model).items():
        np.testing.assert_array_equal(value, state[name].numpy(), err_msg=name)

    # --overwrite replaces every earlier shard in the bucket; without it a non-empty bucket folder is refused
    with pytest.raises(export.ExportError, match="not empty; pass --overwrite"):
        export.export_model(model, tok, url)
    export.export_model(model, tok, url, overwrite=True)
    left = sorted(o.rsplit("/", 1)[1] for o in fs.find(f"{b}/exports/tiny"))
    assert "model.safetensors" in left and not [n for n in left if n.startswith("model-") or n.endswith(".index.json")]

    # a failed export removes the bucket folder it created (what launch/export.py does), and only that one
    failed = f"gs://{b}/exports/failed"

    def fail_after_first(i, n, path):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        export.export_model(model, tok, failed, max_shard_size="80KB", progress=fail_after_first)
    assert fs.find(f"{b}/exports/failed")  # the first shard was uploaded
    export.remove_if_created(failed, existed=False)
    assert not fs.find(f"{b}/exports/failed") and fs.find(f"{b}/exports/tiny")
    assert _local_tree(tmp_path / "cwd") == []
