"""NIV2 task-file reading/validation, the downloader (local stand-ins only, never the network), and the ALERT
registry."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import pathlib
import threading

import ml_collections
import pytest
from helpers import real_task_files

from alert_jax.data import niv2, registry

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "niv2"
OLD_FORMAT = FIXTURES / "old_format_toy_task.json"


def _task(n_instances: int = 3, **overrides) -> dict:
    """A small final-format task object (every value a list)."""
    task = {
        "Source": ["toy"],
        "Categories": ["Question Answering"],
        "Reasoning": ["Logical Reasoning"],
        "Definition": ["Answer with the word after 'say'."],
        "Positive Examples": [{"input": "say cat", "output": "cat", "explanation": "The word is cat."}],
        "Negative Examples": [{"input": "say dog", "output": "cat", "explanation": "Wrong word."}],
        "Instances": [{"id": f"task9002-{i:032x}", "input": f"say w{i}", "output": [f"w{i}"]}
                      for i in range(n_instances)],
    }
    task.update(overrides)
    return task


def _write(folder: pathlib.Path, name: str, obj_or_text) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text, indent=4)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ real task files


@pytest.mark.parametrize("filename", real_task_files())
def test_real_task_file_loads_and_validates(niv2_tasks_dir, filename):
    path = niv2_tasks_dir / filename
    raw = json.loads(path.read_text(encoding="utf-8"))
    task = niv2.load_task(path)
    assert task.name == path.stem and task.path == str(path)
    assert task.definition == raw["Definition"][0]
    assert len(task.instances) == len(raw["Instances"]) > 0
    assert len({i.id for i in task.instances}) == len(task.instances)
    for inst, rec in zip(task.instances, raw["Instances"]):
        assert (inst.id, inst.input, inst.outputs) == (rec["id"], rec["input"], rec["output"])
        assert isinstance(inst.outputs, list) and inst.outputs and all(isinstance(o, str) for o in inst.outputs)
    assert [e.output for e in task.positive_examples] == [e["output"] for e in raw["Positive Examples"]]
    assert [e.explanation for e in task.negative_examples] == [e["explanation"] for e in raw["Negative Examples"]]
    assert task.categories == raw["Categories"] and task.reasoning == raw["Reasoning"] and task.source == raw["Source"]
    # the same task by name from the folder
    assert niv2.load_task(path.stem, niv2_tasks_dir).instances == task.instances


def test_list_tasks_folder_and_checkout(tmp_path):
    folder = tmp_path / "flat"
    _write(folder, "task9002_a", _task())
    _write(folder, "task9003_b", _task())
    (folder / "README.md").write_text("not a task")
    assert niv2.list_tasks(folder) == ["task9002_a", "task9003_b"]
    checkout = tmp_path / "natural-instructions"
    _write(checkout / "tasks", "task9004_c", _task(5))
    (checkout / "splits").mkdir()
    assert niv2.list_tasks(checkout) == ["task9004_c"]
    assert len(niv2.load_task("task9004_c", checkout).instances) == 5
    assert len(niv2.load_task("task9004_c.json", checkout).instances) == 5
    with pytest.raises(FileNotFoundError, match="data.niv2_dir"):
        niv2.list_tasks("")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        niv2.list_tasks(tmp_path / "nowhere")


def test_lookup_by_name_reads_niv2_dir_only(tmp_path, monkeypatch):
    """A file in the current directory named like a task (with or without .json) never replaces the task file of
    niv2_dir, nor stands in for a task niv2_dir lacks; explicit paths go through load_task_file."""
    folder = tmp_path / "tasks"
    path = _write(folder, "task9002_a", _task(3))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for stray in ("task9002_a", "task9002_a.json", "task9003_b", "task9003_b.json"):
        (cwd / stray).write_text(json.dumps(_task(1)), encoding="utf-8")
    monkeypatch.chdir(cwd)
    for name in ("task9002_a", "task9002_a.json"):
        task = niv2.load_task(name, folder)
        assert len(task.instances) == 3 and task.path == str(path) and task.name == "task9002_a"
        assert task.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(niv2.TaskNotFoundError, match="task9003_b"):
        niv2.load_task("task9003_b", folder)
    with pytest.raises(ValueError, match="folder part"):
        niv2.load_task(str(cwd / "task9002_a"), folder)
    explicit = niv2.load_task_file(cwd / "task9002_a")  # a real path, asked for as one
    assert len(explicit.instances) == 1 and explicit.name == "task9002_a"
    assert len(niv2.load_task("task9002_a").instances) == 1  # no niv2_dir: the argument is a file path
    assert niv2.parse_task(_task(), name="x").digest == ""
    with pytest.raises(niv2.TaskNotFoundError, match="task9999_z"):
        niv2.load_task_file(tmp_path / "task9999_z.json")


def test_old_format_is_normalised():
    task = niv2.load_task(OLD_FORMAT)
    assert task.definition == "Add the two numbers and answer with their sum."
    assert task.categories == ["Question Answering"] and task.source == ["handwritten"]
    assert [i.outputs for i in task.instances] == [["15"], ["7", "seven"]]
    assert task.positive_examples[2].explanation == ""
    assert task.negative_examples[0].output == "5"


def test_load_tasks_missing_error_and_skip(tmp_path):
    _write(tmp_path, "task9002_a", _task())
    _write(tmp_path, "task9003_b", _task(2))
    with pytest.raises(niv2.TaskNotFoundError) as err:
        niv2.load_tasks(["task9002_a", "task9998_x", "task9999_y"], tmp_path)
    assert err.value.names == ["task9998_x", "task9999_y"]
    assert "task9998_x" in str(err.value) and "task9999_y" in str(err.value) and str(tmp_path) in str(err.value)
    got = niv2.load_tasks(["task9003_b", "task9998_x", "task9002_a"], tmp_path, missing="skip")
    assert list(got) == ["task9003_b", "task9002_a"] and len(got["task9003_b"].instances) == 2
    with pytest.raises(niv2.TaskNotFoundError, match="task9998_x"):
        niv2.load_task("task9998_x", tmp_path)
    with pytest.raises(niv2.TaskNotFoundError, match="no niv2_dir"):
        niv2.load_task("task9998_x")
    with pytest.raises(ValueError, match="missing must be"):
        niv2.load_tasks(["task9002_a"], tmp_path, missing="ignore")


# ------------------------------------------------------------------------------------------------ malformed files


def test_truncated_json_names_file_line_and_column(tmp_path):
    text = json.dumps(_task(4), indent=4)
    cut = text[: len(text) * 2 // 3]
    path = _write(tmp_path, "task9002_trunc", cut)
    with pytest.raises(niv2.TaskFileError) as err:
        niv2.load_task(path)
    try:
        json.loads(cut)
    except json.JSONDecodeError as e:
        expected = f"line {e.lineno} column {e.colno}"
    msg = str(err.value)
    assert str(path) in msg and expected in msg and "truncated" in msg
    assert err.value.path == str(path)


def _bad_instance(field_change, index=1):
    task = _task(3)
    field_change(task["Instances"][index])
    return task


@pytest.mark.parametrize(
    "name,task,field,index,fragment",
    [
        ("no_output", _bad_instance(lambda r: r.pop("output")), "Instances", 1, "missing 'output'"),
        ("empty_output", _bad_instance(lambda r: r.update(output=[])), "Instances", 1, "empty list"),
        ("bad_output_item", _bad_instance(lambda r: r.update(output=["ok", 3])), "Instances", 1, "'output'[1]"),
        ("int_input", _bad_instance(lambda r: r.update(input=42), index=2), "Instances", 2, "'input' must be a string"),
        ("no_id", _bad_instance(lambda r: r.pop("id"), index=0), "Instances", 0, "'id'"),
        ("empty_task", _task(0), "Instances", None, "no instances"),
        ("no_definition", {k: v for k, v in _task().items() if k != "Definition"}, "Definition", None, "missing"),
        ("no_instances", {k: v for k, v in _task().items() if k != "Instances"}, "Instances", None, "missing"),
        ("empty_definition", _task(Definition=[]), "Definition", None, "1-element list"),
        ("bad_example", _task(**{"Positive Examples": [{"input": "x", "output": 1}]}), "Positive Examples", 0,
         "'output'"),
        ("bad_categories", _task(Categories=[1]), "Categories", None, "list of strings"),
    ],
)
def test_malformed_task_names_file_field_and_record(tmp_path, name, task, field, index, fragment):
    path = _write(tmp_path, f"task9002_{name}", task)
    with pytest.raises(niv2.TaskFileError) as err:
        niv2.load_task(path)
    e = err.value
    assert isinstance(e, ValueError)
    assert (e.path, e.field, e.index) == (str(path), field, index)
    msg = str(e)
    assert str(path) in msg and repr(field) in msg and fragment in msg
    if index is not None:
        assert f"[{index}]" in msg
    if field == "Instances" and index is not None and "id" in task["Instances"][index]:
        assert task["Instances"][index]["id"] in msg  # the record is named by its id too


def test_duplicate_ids_name_both_records(tmp_path):
    task = _task(4)
    task["Instances"][3]["id"] = task["Instances"][1]["id"]
    path = _write(tmp_path, "task9002_dup", task)
    with pytest.raises(niv2.TaskFileError) as err:
        niv2.load_task(path)
    assert err.value.index == 3 and err.value.instance_id == task["Instances"][1]["id"]
    assert "duplicate id" in str(err.value) and "instance 1" in str(err.value) and str(path) in str(err.value)


def test_top_level_must_be_object(tmp_path):
    path = _write(tmp_path, "task9002_list", "[1, 2]")
    with pytest.raises(niv2.TaskFileError, match="JSON object"):
        niv2.load_task(path)


def test_download_command_fetches_the_registry_tasks(tmp_path, capsys):
    """``python -m alert_jax.data.registry download``: 'dev' fetches exactly the dev set, validated; a rerun keeps
    the files; 'all' = evaluation datasets + dev set; a missing remote file exits 1 naming its URL; a bad spec exits
    2 and writes nothing."""
    remote = tmp_path / "remote"
    for name in registry.DEV_SET:
        _write(remote, name, _task(2))
    cache = tmp_path / "cache"
    argv = ["download", "--tasks=dev", f"--base_url={remote.as_uri()}", str(cache)]
    assert registry.main(argv) == 0
    assert sorted(p.stem for p in cache.iterdir()) == sorted(registry.DEV_SET)
    assert niv2.load_task(cache / f"{registry.DEV_SET[0]}.json").instances[1].outputs == ["w1"]
    out = capsys.readouterr().out
    assert f"[3/3] {cache / registry.DEV_SET[2]}.json (fetched)" in out and "(3 fetched, 0 already there)" in out
    (remote / f"{registry.DEV_SET[0]}.json").unlink()  # a rerun must not ask for files it has
    assert registry.main(argv) == 0 and "(0 fetched, 3 already there)" in capsys.readouterr().out

    assert registry.download_spec("all") == [*registry.ALERT.names, *registry.DEV_SET]
    assert registry.download_spec("alert") == list(registry.ALERT.names)
    first = registry.ALERT.names[0]
    assert registry.main(["download", "--tasks=alert", f"--base_url={remote.as_uri()}", str(cache)]) == 1
    assert f"{remote.as_uri()}/{first}.json" in capsys.readouterr().err
    assert not (cache / f"{first}.json").exists()

    empty = tmp_path / "empty"
    assert registry.main(["download", "--tasks=no_such_skill", f"--base_url={remote.as_uri()}", str(empty)]) == 2
    assert "--tasks" in capsys.readouterr().err and not empty.exists()


# ------------------------------------------------------------------------------------------------ downloader


def test_download_from_file_url(tmp_path):
    remote = tmp_path / "remote"
    _write(remote, "task9002_a", _task(2))
    _write(remote, "task9003_b", _task(3))
    cache = tmp_path / "cache"
    paths = niv2.download_tasks(["task9002_a", "task9003_b.json"], cache, base_url=remote.as_uri())
    assert paths == [cache / "task9002_a.json", cache / "task9003_b.json"]
    assert paths[0].read_bytes() == (remote / "task9002_a.json").read_bytes()
    assert len(niv2.load_task("task9003_b", cache).instances) == 3
    assert sorted(p.name for p in cache.iterdir()) == ["task9002_a.json", "task9003_b.json"]  # no temp files left

    # cached files are not fetched again: the remote copy can change or vanish
    (remote / "task9002_a.json").unlink()
    assert niv2.download_tasks(["task9002_a"], cache, base_url=remote.as_uri()) == [cache / "task9002_a.json"]
    with pytest.raises(niv2.DownloadError) as err:
        niv2.download_tasks(["task9002_a"], cache, base_url=remote.as_uri(), overwrite=True)
    assert err.value.url == f"{remote.as_uri()}/task9002_a.json" and err.value.url in str(err.value)
    assert paths[0].is_file()  # a failed refresh keeps the cached file

    # invalid content is reported with its URL and never enters the cache
    _write(remote, "task9004_bad", _task(0))
    with pytest.raises(niv2.TaskFileError) as err:
        niv2.download_tasks(["task9004_bad"], cache, base_url=remote.as_uri())
    assert f"{remote.as_uri()}/task9004_bad.json" in str(err.value) and "no instances" in str(err.value)
    assert not (cache / "task9004_bad.json").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["task9002_a.json", "task9003_b.json"]


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server API)
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # keep test output quiet
        pass


def test_download_from_local_http_server(tmp_path):
    remote = tmp_path / "remote" / "tasks"
    _write(remote, "task9002_a", _task(2))
    handler = type("Handler", (_CountingHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(remote.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/tasks/"
        cache = tmp_path / "cache"
        (path,) = niv2.download_tasks(["task9002_a"], cache, base_url=base, timeout=10)
        assert niv2.load_task(path).instances[1].outputs == ["w1"]
        niv2.download_tasks(["task9002_a"], cache, base_url=base, timeout=10)
        assert handler.requests == ["/tasks/task9002_a.json"]  # the second call used the cache
        with pytest.raises(niv2.DownloadError) as err:
            niv2.download_tasks(["task9999_missing"], cache, base_url=base, timeout=10)
        assert "404" in str(err.value) and f"{base.rstrip('/')}/task9999_missing.json" in str(err.value)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ------------------------------------------------------------------------------------------------ ALERT registry


def test_registry_shape():
    assert len(registry.DATASETS) == 20 and len(registry.SKILLS) == 10
    assert len(registry.IN_DOMAIN_SKILLS) == 5 and len(registry.HELD_OUT_SKILLS) == 5
    for skill in registry.SKILLS:
        assert len(registry.datasets_for(skill)) == 2
    assert registry.IN_DOMAIN_SKILLS == ("logical", "deductive", "commonsense", "textual entailment", "mathematics")
    assert registry.HELD_OUT_SKILLS == ("causal", "abductive", "spatial", "analogical", "argument")
    assert registry.ALERT.get("task1388_cb_entailment") == registry.Dataset("task1388_cb_entailment",
                                                                            "textual entailment", True)
    assert registry.ALERT.skill_of("task083_babi_t1_single_supporting_fact_answer_generation") == "spatial"
    assert len(registry.DEV_SET) == 3 and not set(registry.DEV_SET) & set(registry.ALERT.names)


def test_resolve_tasks():
    assert registry.resolve_tasks("all") == list(registry.ALERT.names) and len(registry.resolve_tasks("all")) == 20
    assert registry.resolve_tasks("dev") == list(registry.DEV_SET)
    assert registry.resolve_tasks("causal") == ["task1393_superglue_copa_text_completion",
                                                "task391_causal_relationship"]
    te = [d.name for d in registry.datasets_for("textual entailment")]
    assert registry.resolve_tasks("textual_entailment") == registry.resolve_tasks("Textual-Entailment") == te
    in_domain = registry.resolve_tasks("in_domain")
    held_out = registry.resolve_tasks("held-out")
    assert len(in_domain) == len(held_out) == 10 and sorted(in_domain + held_out) == sorted(registry.ALERT.names)
    mixed = registry.resolve_tasks("dev, causal,task1388_cb_entailment,causal,task1385_anli_r1_entailment")
    assert mixed == [*registry.DEV_SET, "task1393_superglue_copa_text_completion", "task391_causal_relationship",
                     "task1388_cb_entailment"]
    assert registry.resolve_tasks(["spatial", "task1388_cb_entailment.json"])[-1] == "task1388_cb_entailment"
    assert registry.resolve_tasks("task640_esnli_classification", allow_unregistered=True) == [
        "task640_esnli_classification"]


def test_resolve_unknown_names_suggest():
    with pytest.raises(ValueError) as err:
        registry.resolve_tasks("task697_mmmlu_answer_generation_formal_logik")
    msg = str(err.value)
    assert "task697_mmmlu_answer_generation_formal_logic" in msg
    assert all(skill in msg for skill in registry.SKILLS)
    with pytest.raises(ValueError, match="spatial"):
        registry.resolve_tasks("spacial")
    with pytest.raises(ValueError, match="task080_piqa_answer_generation"):
        registry.resolve_tasks("all,piqa")
    with pytest.raises(ValueError, match="unknown task"):
        registry.resolve_tasks("task640_esnli_classification")  # registered-only by default
    with pytest.raises(ValueError, match="empty task spec"):
        registry.resolve_tasks(" , ")
    with pytest.raises(ValueError, match="unknown skill"):
        registry.datasets_for("telepathy")


def test_registry_from_config():
    reg = registry.Registry.from_config(
        ["arith:task9002_a", "arith:task9003_b", {"name": "task9004_c", "skill": "story", "in_domain": False},
         "story:task9005_d:held_out"],
        dev_set=["task9006_e"],
    )
    assert reg.skills == ("arith", "story") and reg.held_out_skills == ("story",)
    assert reg.resolve("held_out") == ["task9004_c", "task9005_d"]
    assert registry.resolve_tasks("dev,arith", reg) == ["task9006_e", "task9002_a", "task9003_b"]
    cfg = ml_collections.ConfigDict({"datasets": ["logic:task9002_a"], "dev_set": "task9003_b"})
    reg2 = registry.Registry.from_config(cfg)
    assert reg2.names == ("task9002_a",) and reg2.dev_set == ("task9003_b",)
    with pytest.raises(ValueError, match="more than once"):
        registry.Registry.from_config(["a:task1_x", "b:task1_x"])
    with pytest.raises(ValueError, match="both in-domain and held-out"):
        registry.Registry.from_config(["a:task1_x", "a:task2_y:held_out"])
    with pytest.raises(ValueError, match="entry 0"):
        registry.Registry.from_config(["task1_x"])


def test_available_subset(tmp_path):
    _write(tmp_path / "tasks", "task1388_cb_entailment", _task())
    _write(tmp_path / "tasks", "task1385_anli_r1_entailment", _task())
    present, missing = registry.available(None, tmp_path)
    assert present == ["task1388_cb_entailment", "task1385_anli_r1_entailment"]
    everything = [*registry.ALERT.names, *registry.DEV_SET]
    assert missing == [t for t in everything if t not in present]  # registry order, dev set last
    assert missing[-2:] == ["task247_dream_answer_generation",
                            "task118_semeval_2019_task10_open_vocabulary_mathematical_answer_generation"]
    assert set(missing) == (set(registry.ALERT.names) | set(registry.DEV_SET)) - set(present)


def test_available_against_real_folder(niv2_tasks_dir):
    present, missing = registry.available(registry.ALERT, niv2_tasks_dir)
    assert set(missing) == {
        "task966_ruletaker_fact_checking_based_on_given_context",
        "task717_mmmlu_answer_generation_logical_fallacies",
        "task1159_bard_analogical_reasoning_containers",
        "task514_argument_consequence_classification",
        "task247_dream_answer_generation",
    }
    assert len(present) == 18 and set(present) | set(missing) == set(registry.ALERT.names) | set(registry.DEV_SET)
    tasks = niv2.load_tasks(registry.resolve_tasks("dev"), niv2_tasks_dir, missing="skip")
    assert list(tasks) == [t for t in registry.DEV_SET if t in present]
