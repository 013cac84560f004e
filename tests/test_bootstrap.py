"""Bootstrap intervals (alert_jax/eval/bootstrap.py) and their place in scores.json / report.md (eval/report.py).

References are computed independently here: the normal approximation of a proportion's interval, and a per-resample
Python loop (resample -> per-template means -> max over templates -> mean over datasets -> percentiles) over the
indices ``resample_indices`` draws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alert_jax.data import registry as registry_lib
from alert_jax.eval import bootstrap
from alert_jax.eval import report as report_lib


def test_all_correct_gives_a_point_interval():
    assert bootstrap.mean_interval([100.0] * 57) == [100.0, 100.0]


def test_half_correct_of_200_matches_the_normal_approximation():
    values = [100.0] * 100 + [0.0] * 100
    half_width = 1.96 * math.sqrt(0.25 / 200) * 100  # 6.93
    lo, hi = bootstrap.mean_interval(values)
    assert abs(lo - (50 - half_width)) <= 1.5 and abs(hi - (50 + half_width)) <= 1.5
    assert lo < 50 < hi


def test_paired_interval_of_a_model_against_itself_is_zero():
    rng = np.random.default_rng(3)
    a = rng.choice([0.0, 100.0], 150)
    assert bootstrap.paired_interval(a, a) == [0.0, 0.0]
    # against another model: the interval of the mean difference, shifted by a constant shift of the scores
    b = rng.choice([0.0, 100.0], 150)
    lo, hi = bootstrap.paired_interval(a, b)
    lo2, hi2 = bootstrap.paired_interval(a + 10.0, b)
    assert lo2 == pytest.approx(lo + 10.0) and hi2 == pytest.approx(hi + 10.0)


def test_seed_determinism():
    values = np.random.default_rng(0).uniform(0, 100, 80)
    first = bootstrap.mean_interval(values, seed=7, key="task1")
    assert first == bootstrap.mean_interval(values, seed=7, key="task1")
    assert first != bootstrap.mean_interval(values, seed=8, key="task1")
    assert first != bootstrap.mean_interval(values, seed=7, key="task2")
    idx = bootstrap.resample_indices(80, resamples=500, seed=7, key="task1")
    assert idx.shape == (500, 80) and idx.min() >= 0 and idx.max() < 80
    assert np.array_equal(idx, bootstrap.resample_indices(80, resamples=500, seed=7, key="task1"))


def _results(rng, tasks, templates, n, metrics=("exact_match", "rougeL"), shuffle=False):
    """results[task][template] with random per-instance values (x100) and their means."""
    out = {}
    for task in tasks:
        ids = [f"{task}-{i}" for i in range(n)]
        out[task] = {}
        for k, t in enumerate(templates):
            values = {m: list(rng.choice([0.0, 100.0], n, p=[0.7 - 0.1 * k, 0.3 + 0.1 * k])) if m == "exact_match"
                      else list(rng.uniform(0, 100, n)) for m in metrics}
            order = list(rng.permutation(n)) if shuffle and k else list(range(n))
            values = {m: [v[i] for i in order] for m, v in values.items()}
            out[task][t] = report_lib.TemplateResult({m: float(np.mean(v)) for m, v in values.items()}, n,
                                                     ids=[ids[i] for i in order], instance_scores=values)
    return out


def _reference_draws(per_template, ids_order, seed, key, resamples):
    """Per-resample loop: the max and mean over templates of the resampled means (instances aligned by id)."""
    idx = bootstrap.resample_indices(len(ids_order), resamples=resamples, seed=seed, key=key)
    out = {"max": {}, "mean": {}}
    for m in per_template[next(iter(per_template))].instance_scores:
        maxes, means = [], []
        for row in idx:
            chosen = [ids_order[i] for i in row]
            per_t = []
            for r in per_template.values():
                by_id = dict(zip(r.ids, r.instance_scores[m]))
                per_t.append(sum(by_id[i] for i in chosen) / len(chosen))
            maxes.append(max(per_t))
            means.append(sum(per_t) / len(per_t))
        out["max"][m], out["mean"][m] = np.array(maxes), np.array(means)
    return out


def test_aggregate_intervals_match_a_per_resample_reference():
    rng = np.random.default_rng(1)
    templates = ["T1", "T2", "T3"]
    results = _results(rng, ["a", "b", "c"], templates, 30, shuffle=True)  # templates list instances differently
    reg = registry_lib.Registry.from_config(["s1:a", "s1:b", "s2:c:held_out"])
    scores = report_lib.aggregate(results, registry=reg, resamples=200, seed=5)
    ref = {task: _reference_draws(results[task], results[task]["T1"].ids, 5, task, 200) for task in results}
    for task, d in scores["datasets"].items():
        for how in ("max", "mean"):
            for m, (lo, hi) in d["ci95"][how].items():
                want = np.percentile(ref[task][how][m], [2.5, 97.5])
                assert (lo, hi) == pytest.approx(tuple(want), rel=0, abs=1e-9)
        for t in templates:  # one template: the plain resampled mean of its values
            r = results[task][t]
            for m in r.instance_scores:
                by_id = dict(zip(r.ids, r.instance_scores[m]))
                idx = bootstrap.resample_indices(30, resamples=200, seed=5, key=task)
                order = results[task]["T1"].ids
                means = [np.mean([by_id[order[i]] for i in row]) for row in idx]
                assert d["templates"][t]["ci95"][m] == pytest.approx(list(np.percentile(means, [2.5, 97.5])),
                                                                      rel=0, abs=1e-9)
    # groups: each dataset resampled on its own, then the mean over the group's datasets per resample
    for group, names in (("overall", ["a", "b", "c"]), ("held_out", ["c"])):
        for m in ("exact_match", "rougeL"):
            draws = np.mean([ref[n]["max"][m] for n in names], axis=0)
            assert scores[group]["ci95"]["max"][m] == pytest.approx(list(np.percentile(draws, [2.5, 97.5])),
                                                                    rel=0, abs=1e-9)
    skill = scores["skills"]["s1"]
    draws = np.mean([ref[n]["mean"]["rougeL"] for n in ("a", "b")], axis=0)
    assert skill["ci95"]["mean"]["rougeL"] == pytest.approx(list(np.percentile(draws, [2.5, 97.5])), rel=0, abs=1e-9)


def test_every_aggregate_has_an_interval_for_every_metric_and_the_report_shows_it():
    # Intervals need not contain the point estimate: a max over templates is biased upward under resampling.
    rng = np.random.default_rng(2)
    metrics = ("exact_match", "relaxed_match", "rougeL", "rougeL_answer", "niv2_exact_match")
    results = _results(rng, ["a", "b"], ["T1", "T2", "T3", "T4", "T5"], 100, metrics=metrics)
    reg = registry_lib.Registry.from_config(["s1:a", "s2:b"])
    scores = report_lib.aggregate(results, registry=reg)
    for entry in [*scores["datasets"].values(), scores["overall"], *scores["skills"].values()]:
        for how in ("max", "mean"):
            assert set(entry["ci95"][how]) == set(metrics)
            assert all(lo < hi for lo, hi in entry["ci95"][how].values())
    md = report_lib.render_markdown(scores)
    lo, hi = scores["overall"]["ci95"]["max"]["rougeL"]
    assert f"{scores['overall']['max']['rougeL']:.1f} [{lo:.1f}, {hi:.1f}]" in md


def test_intervals_absent_without_instances_and_when_disabled():
    tr = report_lib.TemplateResult
    plain = report_lib.aggregate({"a": {"T1": tr({"m": 10.0}, 5)}},
                                 registry=registry_lib.Registry.from_config(["s1:a"]))
    assert "ci95" not in plain["datasets"]["a"] and "ci95" not in plain["overall"]
    assert "ci95" not in plain["datasets"]["a"]["templates"]["T1"]
    results = _results(np.random.default_rng(0), ["a"], ["T1"], 10)
    off = report_lib.aggregate(results, registry=registry_lib.Registry.from_config(["s1:a"]), resamples=0)
    assert "ci95" not in off["datasets"]["a"]
    # the per-instance values never reach scores.json
    on = report_lib.aggregate(results, registry=registry_lib.Registry.from_config(["s1:a"]))
    assert set(on["datasets"]["a"]["templates"]["T1"]) == {"scores", "ci95", "n", "n_overflow", "n_truncated",
                                                           "n_length"}


# ------------------------------------------------------------------------------- paired differences between runs

def _write_run(folder, task_predictions, *, store_scores=True):
    """A run folder (``scores.json`` + ``predictions/<task>/<template>.jsonl``) from ``{task: {template: [(id,
    prediction, references)]}}``, scored by the evaluation's own summarize + aggregate."""
    import json

    from alert_jax.eval import metrics, runner

    results = {}
    for task, per_t in task_predictions.items():
        results[task] = {}
        for t, rows in per_t.items():
            records = [{"id": i, "prediction": p, "references": r} for i, p, r in rows]
            for rec in records:
                if store_scores:
                    rec["scores"] = metrics.score_instances([rec["prediction"]], [rec["references"]])
            path = folder / "predictions" / task / f"{t}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(rec) + "\n" for rec in records))
            results[task][t] = runner.summarize(records)
    reg = registry_lib.Registry.from_config(["s1:a", "s1:b", "s2:c:held_out"])
    (folder / "scores.json").write_text(json.dumps(report_lib.aggregate(results, registry=reg)))


def _predictions(rng, p_right, tasks=("a", "b", "c"), templates=("T1", "T2"), n=40):
    return {task: {t: [(f"{task}-{i}", "yes" if rng.random() < p_right else "no", ["yes"]) for i in range(n)]
                   for t in templates} for task in tasks}


def test_paired_differences_between_runs(tmp_path):
    from alert_jax.analysis import report

    rng = np.random.default_rng(4)
    base, cot = _predictions(rng, 0.3), _predictions(rng, 0.6)
    _write_run(tmp_path / "tiny-pretrained", base, store_scores=False)  # records older than their metrics
    _write_run(tmp_path / "tiny-cot", cot)
    _write_run(tmp_path / "tiny-ft", base)  # the same predictions as the pretrained run
    runs = report.load_runs([str(tmp_path / n) for n in ("tiny-pretrained", "tiny-ft", "tiny-cot")])
    result = report.write_analysis(runs, tmp_path / "out", metrics=["exact_match"], resamples=300, seed=1)
    diffs = result["metrics"]["exact_match"]["differences"]["tiny"]
    assert set(diffs) == {"OPT-CoT - OPT", "OPT-FT - OPT", "OPT-CoT - OPT-FT"}
    same = diffs["OPT-FT - OPT"]
    assert all(g["diff"] == 0.0 and g["ci95"] == [0.0, 0.0] for g in same.values())
    assert set(same) == {"overall", "in_domain", "held_out", "s1", "s2"} and same["overall"]["datasets"] == 3
    assert same["in_domain"]["datasets"] == 2 and same["held_out"]["datasets"] == 1

    # Reference: a per-resample loop over the indices of each dataset, max over templates, mean over datasets.
    def score(rows):
        return {i: 100.0 * (p == r[0]) for i, p, r in rows}

    per_dataset = []
    for task in ("a", "b", "c"):
        idx = bootstrap.resample_indices(40, resamples=300, seed=1, key=task)
        ids = [f"{task}-{i}" for i in range(40)]
        a_t = {t: score(cot[task][t]) for t in ("T1", "T2")}
        b_t = {t: score(base[task][t]) for t in ("T1", "T2")}
        per_dataset.append([max(np.mean([a_t[t][ids[i]] for i in row]) for t in a_t)
                            - max(np.mean([b_t[t][ids[i]] for i in row]) for t in b_t) for row in idx])
    want = np.percentile(np.mean(per_dataset, axis=0), [2.5, 97.5])
    got = diffs["OPT-CoT - OPT"]["overall"]
    assert got["ci95"] == pytest.approx(list(want), rel=0, abs=1e-9)
    point = runs[2].overall("exact_match") - runs[0].overall("exact_match")
    assert got["diff"] == pytest.approx(point, rel=0, abs=1e-9) and got["ci95"][0] <= got["diff"] <= got["ci95"][1]
    md = (tmp_path / "out" / "analysis.md").read_text()
    lo, hi = got["ci95"]
    assert f"| tiny | OPT-CoT - OPT | {got['diff']:.1f} [{lo:.1f}, {hi:.1f}] |" in md
