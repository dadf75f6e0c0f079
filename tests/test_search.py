"""compress --search: the table, the Pareto front, the choice and the verdict (on small results
documents), then a real search on the built-in task, reused and refused."""

import json

import pytest

from edgedistill.gate import Check, search_verdict
from edgedistill.search import choose, closest, table
from tests.conftest import run_cli


def _result(name, p90, top1, form=None, size=100_000):
    return {"artifact": name, "role": "student", "precision": "fp32", "backend": "onnxruntime", "status": "ok",
            "form": form, "size_bytes": size, "warm": {"summary": {"p50_ms": p90 * 0.8, "p90_ms": p90}},
            "accuracy": {"measured": True, "top1": top1}}


def _check(name, budget, outcome, value=1.0, limit=1.0, target="t"):
    return {"target": target, "artifact": name, "budget": budget, "limit": limit, "value": value,
            "outcome": outcome, "detail": ""}


def _doc(results, checks):
    return {"reference": {}, "targets": [{"name": "t", "results": results}], "checks": checks}


def test_the_front_marks_candidates_no_other_beats_on_both_accuracy_and_p90():
    doc = _doc([_result("a", 1.0, 0.95), _result("b", 0.5, 0.90), _result("c", 0.6, 0.85), _result("d", 0.4, 0.80)],
               [_check(n, "p90_ms", "PASS") for n in "abcd"])
    rows = {r["candidate"]: r for r in table(doc)}
    # c is slower and less accurate than b: dominated. The others each win on one axis.
    assert {n: r["pareto"] for n, r in rows.items()} == {"a": True, "b": True, "c": False, "d": True}


def test_the_most_accurate_passing_candidate_is_chosen_and_a_miss_names_the_closest():
    doc = _doc([_result("a", 1.0, 0.95), _result("b", 0.5, 0.90), _result("c", 0.3, 0.80)],
               [_check("a", "p90_ms", "FAIL", 1.0, 0.6), _check("b", "p90_ms", "PASS", 0.5, 0.6),
                _check("c", "p90_ms", "PASS", 0.3, 0.6)])
    assert choose(table(doc)) == "b"  # a is more accurate but misses p90
    doc["checks"][1:] = [_check("b", "p90_ms", "FAIL", 0.9, 0.6),
                         _check("c", "accuracy_drop_pt", "FAIL", 3.5, 3.0), _check("c", "p90_ms", "PASS", 0.3, 0.6)]
    assert choose(table(doc)) is None
    # c misses by 17 % of its limit, b by 50 %, a by 67 %: c is the closest, with what it misses.
    miss = closest(doc["checks"])
    assert miss["candidate"] == "c" and [m["budget"] for m in miss["misses"]] == ["accuracy_drop_pt"]


def test_a_candidate_within_its_limits_but_invalid_is_closer_than_one_that_failed():
    checks = [_check("a", "p90_ms", "FAIL", 0.36, 0.35), _check("b", "p90_ms", "INVALID", 0.20, 0.35)]
    miss = closest(checks)
    assert miss["candidate"] == "b" and miss["misses"][0]["outcome"] == "INVALID"


@pytest.mark.parametrize("outcomes, expected", [
    ({"a": ["FAIL"], "b": ["PASS", "PASS"]}, "PASS"),      # one candidate is enough
    ({"a": ["FAIL"], "b": ["PASS", "INVALID"]}, "INVALID"),  # b might pass: measure again, not a FAIL
    ({"a": ["FAIL"], "b": ["FAIL", "PASS"]}, "FAIL"),
    ({}, "INCONCLUSIVE"),                                   # nothing gated is never a pass
])
def test_the_search_verdict_is_the_best_candidates(outcomes, expected):
    checks = [Check("t", name, f"b{i}", 1.0, 1.0, o) for name, os in outcomes.items() for i, o in enumerate(os)]
    assert search_verdict(checks) == expected


TARGET = """
name = "small"
runner = "local"
backends = ["onnxruntime"]
threads = 1
[measurement]
warmup_iterations = 5
min_iterations = 50
min_duration_s = 0.1
cold_runs = 1
measure_cache = false
max_load_per_core = 1000
max_others_cpu_share = 1.0
allow_unstable_clocks = true
[budgets]
size_mb = {size_mb}
"""

CONFIG = """
[distill]
epochs = 1
[export]
backends = ["onnxruntime"]
benchmark_teacher = false
[compress]
precisions = ["fp32"]
[search]
prune_ratios = [0.5, 0.75]
recovery_epochs = 1
"""


def _search(tmp_path, cli_env, size_mb, *flags, search=""):
    (tmp_path / "small.toml").write_text(TARGET.format(size_mb=size_mb))
    (tmp_path / "edgedistill.toml").write_text(CONFIG + search)
    return run_cli(["compress", "--config", tmp_path / "edgedistill.toml", "--target", tmp_path / "small.toml",
                    "--out-dir", tmp_path / "runs", "--run-name", "s", *flags], env=cli_env)


def test_a_search_finds_the_pruned_student_a_size_budget_needs_and_reuses_its_stages(tmp_path, cli_env):
    """Size is the budget: it is measured exactly, so the outcome does not depend on how busy
    the machine is. The distilled student (0.5 MB) misses 0.3 MB; pruned by half it meets it."""
    r = _search(tmp_path, cli_env, 0.3, "--first")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "runs" / "s"
    results = json.loads((run / "results.json").read_text())
    s = results["search"]
    assert results["verdict"] == "PASS" and s["chosen"] == "student-prune0.5-fp32-onnxruntime"
    assert s["stopped"].startswith("--first") and not (run / "prune0.75").exists()  # never pruned
    rows = {row["candidate"]: row for row in s["table"]}
    assert rows["student-fp32-onnxruntime"]["misses"] == ["size_mb"]
    assert rows["student-prune0.5-fp32-onnxruntime"]["size_mb"] < 0.3 < rows["student-fp32-onnxruntime"]["size_mb"]
    assert "chosen: student-prune0.5-fp32-onnxruntime" in r.stdout
    # The pruning stage: params and MACs before and after, and a recovery that really trained.
    pruning = json.loads((run / "prune0.5" / "manifest.json").read_text())["metrics"]
    assert pruning["params_after"] < 0.5 * pruning["params_before"] and pruning["macs_after"] < pruning["macs_before"]
    assert pruning["val_after"] > pruning["val_pruned"] and (run / "prune0.5" / "history.jsonl").is_file()
    assert "## Search" in (run / "report.md").read_text()
    assert "Search: top-1 accuracy against p90" in (run / "report.html").read_text()
    # The gate reads the file as the search wrote it: one candidate meeting every budget passes.
    g = run_cli(["gate", run / "results.json"], env=cli_env)
    assert g.returncode == 0, g.stdout + g.stderr

    # A budget no candidate meets: exit 1, the closest candidate and the budget it misses; every
    # stage reused (nothing distilled, pruned or exported again), only measured.
    r = _search(tmp_path, cli_env, 0.01)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "closest candidate student-prune0.75-fp32-onnxruntime misses size_mb" in out
    assert "distill: unchanged" in out and "prune: unchanged" in out and "export: unchanged" in out
    results = json.loads((run / "results.json").read_text())
    assert results["verdict"] == "FAIL" and results["search"]["candidates"] == 3

    # Bounded: one candidate at most, or no new form past the time limit (the first is measured).
    r = _search(tmp_path, cli_env, 0.01, search="max_candidates = 1\n")
    s = json.loads((run / "results.json").read_text())["search"]
    assert r.returncode == 1 and s["candidates"] == 1 and s["stopped"] == "max_candidates 1 reached"
    r = _search(tmp_path, cli_env, 0.01, search="max_time_s = 0.001\n")
    s = json.loads((run / "results.json").read_text())["search"]
    assert r.returncode == 1 and s["candidates"] == 1 and s["stopped"].startswith("max_time_s 0.001 reached")


def test_a_search_without_budgets_is_refused_before_training(tmp_path, cli_env):
    (tmp_path / "nobudget.toml").write_text('name = "nobudget"\nbackends = ["onnxruntime"]\n')
    r = run_cli(["compress", "--search", "--target", tmp_path / "nobudget.toml", "--out-dir", tmp_path / "runs"],
                env=cli_env)
    assert r.returncode == 2
    assert "a search needs budgets to meet; target 'nobudget' sets none" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "runs").exists()
