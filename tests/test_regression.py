"""The noise-aware regression gate: pure comparisons on synthetic results, then the CLI."""

import copy
import json

import numpy as np
import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedistill.errors import UsageError
from edgedistill.regression import (
    ALPHA,
    MAX_COLD_REGRESSION_PCT,
    MAX_REGRESSION_PCT,
    bootstrap_ratio_ci,
    compare_results,
    compare_samples,
    gate_checks,
    notes,
)
from edgedistill.report.results import new_results

ENV = {"cpu_model": "Test CPU", "logical_cores": 2}


def latencies(seed: int, n: int, median_ms: float = 0.5, sigma: float = 0.08) -> list[float]:
    """Right-skewed like real warm latencies: lognormal around median_ms."""
    return list(np.random.default_rng(seed).lognormal(np.log(median_ms), sigma, n))


def result(artifact: str, warm: list[float], cold: list[float], role: str = "student", status: str = "ok") -> dict:
    return {
        "artifact": artifact, "role": role, "precision": "int8", "backend": "onnxruntime",
        "size_bytes": 1 << 20, "path": None, "threads": 1, "problems": [],
        "status": status, "status_detail": "" if status == "ok" else "timeout",
        "warm": {"samples_ms": warm, "summary": {"p90_ms": float(np.percentile(warm, 90))}} if warm else None,
        "cold": {"runs": [{"total_ms": c} for c in cold], "total_ms": {"median": float(np.median(cold))}}
        if cold else None,
        "accuracy": {"top1": 0.97}, "memory": {"peak_rss_mb": 100.0},
    }


def results_file(*rs: dict, env: dict = ENV, threads: int = 1) -> dict:
    out = new_results("test", dict(env), {"teacher_top1": 0.98})
    out["complete"] = True
    out["targets"].append({"name": "cpu", "runner": "local", "device": "CPU", "threads": threads,
                           "budgets": {"p90_ms": 100.0}, "results": list(rs)})
    return out


def pair(scale: float = 1.0, n: int = 2000, cold_n: int = 5, sigma: float = 0.08, seed: int = 0):
    """Base and head of one student artifact; head's samples are independent draws times scale."""
    base = results_file(result("student-int8-onnxruntime", latencies(seed, n, sigma=sigma),
                               latencies(seed + 1, cold_n, 200.0, 0.03)))
    head = results_file(result("student-int8-onnxruntime", [x * scale for x in latencies(seed + 2, n, sigma=sigma)],
                               [x * scale for x in latencies(seed + 3, cold_n, 200.0, 0.03)]))
    return base, head


def metric(comparison, name: str):
    return next(m for m in comparison.metrics if m.metric == name)


# ---------------------------------------------------------------- the decision


def test_identical_distributions_are_no_regression():
    c = compare_results(*pair(1.0))
    assert {m.metric for m in c.metrics} == {"warm_p50", "cold_start"}
    assert not c.regressions
    warm = metric(c, "warm_p50")
    assert abs(warm.delta_pct) < 2 and warm.p_slower > ALPHA and warm.verdict == "same"
    assert {ch.outcome for ch in gate_checks(c)} == {"PASS"}


def test_a_20_percent_slowdown_is_a_regression():
    c = compare_results(*pair(1.2), max_cold_regression_pct=10.0)
    warm, cold = metric(c, "warm_p50"), metric(c, "cold_start")
    assert warm.regression and warm.p_slower < ALPHA and warm.delta_pct == pytest.approx(20, abs=2)
    assert warm.verdict == "slower" and warm.ratio_ci[0] > 1.1
    # 5 vs 5 completely separated cold runs: the exact test's smallest p, 1/252, is below alpha.
    assert cold.regression and cold.p_slower == pytest.approx(1 / 252)
    checks = {ch.budget: ch for ch in gate_checks(c)}
    assert checks["regression_warm_p50"].outcome == "FAIL"
    assert checks["regression_warm_p50"].limit == MAX_REGRESSION_PCT
    assert checks["regression_warm_p50"].value == pytest.approx(warm.delta_pct, abs=1e-3)
    assert "p=" in checks["regression_warm_p50"].detail


def test_cold_start_has_its_own_wider_floor():
    c = compare_results(*pair(1.15))
    warm, cold = metric(c, "warm_p50"), metric(c, "cold_start")
    assert warm.regression and cold.p_slower < ALPHA and not cold.regression
    gated = compare_results(*pair(1.15), gate_cold_start=True)
    limits = {ch.budget: ch.limit for ch in gate_checks(gated)}
    assert limits == {"regression_warm_p50": MAX_REGRESSION_PCT, "regression_cold_start": MAX_COLD_REGRESSION_PCT}
    assert metric(compare_results(*pair(1.15), max_cold_regression_pct=10.0), "cold_start").regression
    assert metric(compare_results(*pair(1.3)), "cold_start").regression


def test_a_small_shift_with_many_samples_is_significant_but_under_the_floor():
    c = compare_results(*pair(1.05, n=20000, sigma=0.05))
    warm = metric(c, "warm_p50")
    assert warm.p_slower < 1e-6 and warm.significant and warm.verdict == "slower"
    assert not warm.regression
    assert next(ch for ch in gate_checks(c) if ch.budget == "regression_warm_p50").outcome == "PASS"


def test_a_large_but_noisy_shift_on_few_samples_is_not_significant():
    base = latencies(1, 4, sigma=0.5)
    head = [x * 1.3 for x in latencies(2, 4, sigma=0.5)]
    numbers = compare_samples(base, head)
    assert numbers["p_slower"] >= 1 / 70 > ALPHA  # 4 vs 4: the exact test cannot go lower
    assert not numbers["regression"]


def test_faster_is_reported_and_never_a_regression():
    c = compare_results(*pair(0.7))
    warm = metric(c, "warm_p50")
    assert warm.verdict == "faster" and not warm.regression and warm.delta_pct < -25


def test_the_floor_and_alpha_are_parameters():
    base, head = pair(1.05, n=20000, sigma=0.05)
    assert metric(compare_results(base, head, max_regression_pct=2.0), "warm_p50").regression
    strict = compare_results(*pair(1.3), alpha=1e-3)
    assert metric(strict, "warm_p50").regression and not metric(strict, "cold_start").regression


# ---------------------------------------------------------------- matching


def test_artifacts_on_one_side_only_are_listed_not_errors():
    base, head = pair(1.0)
    base["targets"][0]["results"].append(result("student-fp32-openvino", latencies(5, 500), latencies(6, 3, 300)))
    head["targets"][0]["results"].append(result("student-int8-openvino", latencies(7, 500), latencies(8, 3, 300)))
    c = compare_results(base, head)
    assert {(u.artifact, u.side) for u in c.unmatched} == {("student-int8-openvino", "new"),
                                                            ("student-fp32-openvino", "gone")}
    assert {m.artifact for m in c.metrics} == {"student-int8-onnxruntime"}


def test_no_common_artifact_is_a_usage_error():
    base, _ = pair()
    other = results_file(result("student-fp32-openvino", latencies(1, 100), latencies(2, 3)))
    with pytest.raises(UsageError, match="nothing to compare"):
        compare_results(base, other)


def test_failed_results_and_missing_samples_are_not_comparable():
    base, head = pair()
    head["targets"][0]["results"][0]["status"] = "error"
    c = compare_results(base, head)
    assert not c.metrics and "head: status error" in c.not_comparable[0].reason
    base, head = pair()
    head["targets"][0]["results"][0]["cold"] = None
    c = compare_results(base, head)
    assert [m.metric for m in c.metrics] == ["warm_p50"]
    assert [(n.metric, n.reason) for n in c.not_comparable] == [("cold_start", "no samples in head")]


def test_invalid_results_are_compared_but_their_gate_checks_are_invalid():
    base, head = pair(1.2)
    head["targets"][0]["results"][0].update(status="invalid", status_detail="load average 2.4 on 2 cores")
    c = compare_results(base, head)
    assert metric(c, "warm_p50").regression and "load average" in metric(c, "warm_p50").untrusted
    # Like the latency budgets of an invalid result: neither PASS nor FAIL.
    assert {ch.outcome for ch in gate_checks(c)} == {"INVALID"}


def test_the_teacher_is_compared_but_never_gated():
    base, head = pair(1.0)
    base["targets"][0]["results"].append(result("teacher-fp32-onnxruntime", latencies(9, 500, 4.0),
                                                latencies(10, 1, 900), role="teacher"))
    head["targets"][0]["results"].append(result("teacher-fp32-onnxruntime", [x * 1.5 for x in latencies(11, 500, 4.0)],
                                                latencies(12, 1, 900), role="teacher"))
    c = compare_results(base, head)
    teacher = [m for m in c.metrics if m.role == "teacher"]
    assert teacher and metric(c, "warm_p50").role == "student"
    assert any(m.regression for m in teacher)
    assert {ch.artifact for ch in gate_checks(c)} == {"student-int8-onnxruntime"}


def test_a_different_machine_or_thread_count_is_warned_about():
    base, head = pair()
    assert compare_results(base, head).environment_warning is None
    head["environment"]["cpu_model"] = "Other CPU"
    head["targets"][0]["threads"] = 4
    warning = compare_results(base, head).environment_warning
    assert "cpu_model" in warning and "threads 1 vs 4" in warning and "\n" not in warning


def test_a_busier_machine_for_one_side_is_warned_about():
    base, head = pair()
    for data, load in ((base, 0.8), (head, 2.6)):
        data["targets"][0]["results"][0]["conditions"] = {"load_average_before": [load, 1.0, 0.5], "usable_cores": 2}
    assert "load average per core before the runs up to 0.40 vs 1.30" in compare_results(base, head).environment_warning


def test_bootstrap_interval_is_reproducible_and_covers_the_ratio():
    base, head = latencies(1, 3000), [x * 1.2 for x in latencies(2, 3000)]
    lo, hi = bootstrap_ratio_ci(base, head)
    assert (lo, hi) == bootstrap_ratio_ci(base, head)
    assert lo < np.median(head) / np.median(base) < hi and 1.1 < lo < hi < 1.3


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), factor=st.floats(0.01, 100.0), shift=st.floats(0.8, 1.5),
       n=st.integers(3, 300))
def test_scaling_both_sides_by_one_factor_changes_nothing(seed, factor, shift, n):
    """Units must not matter: the test is on ranks, the delta on a ratio of medians."""
    base, head = latencies(seed, n), [x * shift for x in latencies(seed + 1, n)]
    a = compare_samples(base, head, bootstrap=False)
    b = compare_samples([x * factor for x in base], [x * factor for x in head], bootstrap=False)
    assert b["delta_pct"] == pytest.approx(a["delta_pct"], rel=1e-9, abs=1e-9)
    assert b["p_slower"] == pytest.approx(a["p_slower"], rel=1e-9)
    assert b["p_two_sided"] == pytest.approx(a["p_two_sided"], rel=1e-9)
    assert b["regression"] == a["regression"]


# ---------------------------------------------------------------- the CLI


def write(tmp_path, name: str, data: dict):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_gate_with_baseline_fails_on_a_regression_and_passes_without(tmp_path, cli_env):
    base, slow = pair(1.2)
    _, same = pair(1.0)
    b, s, ok = write(tmp_path, "base.json", base), write(tmp_path, "slow.json", slow), write(tmp_path, "same.json", same)
    r = run_cli(["gate", s, "--baseline", b], env=cli_env)
    assert r.returncode == 1, r.stderr
    assert "regression_warm_p50" in r.stdout and "FAIL" in r.stdout
    r = run_cli(["gate", ok, "--baseline", b, "--json"], env=cli_env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "PASS"
    assert "regression_warm_p50" in {c["budget"] for c in out["checks"]}
    # Without --baseline the same slow file passes its budgets: the regression is what failed it.
    assert run_cli(["gate", s], env=cli_env).returncode == 0
    # A floor above the slowdown lets it through.
    assert run_cli(["gate", s, "--baseline", b, "--max-regression", "30", "--max-cold-regression", "30"],
                   env=cli_env).returncode == 0


def test_compare_prints_deltas_and_reports_without_gating(tmp_path, cli_env):
    base, slow = pair(1.3)
    slow["environment"]["cpu_model"] = "Other CPU"
    b, s = write(tmp_path, "base.json", base), write(tmp_path, "slow.json", slow)
    r = run_cli(["compare", b, s], env=cli_env)
    assert r.returncode == 0, r.stderr
    for word in ("student-int8-onnxruntime", "warm_p50", "cold_start", "slower", "regression", "cpu_model"):
        assert word in r.stdout
    assert run_cli(["compare", b, s, "--fail-on-regression"], env=cli_env).returncode == 1
    assert run_cli(["compare", b, b, "--fail-on-regression"], env=cli_env).returncode == 0
    r = run_cli(["compare", b, s, "--json"], env=cli_env)
    out = json.loads(r.stdout)
    assert out["regressions"] == 2 and {m["verdict"] for m in out["metrics"]} == {"slower"}
    assert out["metrics"][0]["ratio_ci"][0] > 1.0


@pytest.mark.parametrize("case", ["missing", "schema", "disjoint"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, cli_env, case):
    base, _ = pair()
    b = write(tmp_path, "base.json", base)
    if case == "missing":
        other = tmp_path / "nope.json"
    elif case == "schema":
        wrong = copy.deepcopy(base)
        wrong["schema"] = "edgedistill.results/0"
        other = write(tmp_path, "old.json", wrong)
    else:
        other = write(tmp_path, "other.json",
                      results_file(result("student-fp32-openvino", latencies(1, 100), latencies(2, 3))))
    for args in (["compare", b, other], ["gate", b, "--baseline", other]):
        r = run_cli(args, env=cli_env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
        assert len([line for line in r.stderr.splitlines() if not line.startswith("  hint:")]) == 1


def test_cold_start_regression_is_reported_but_gated_only_when_asked(tmp_path, cli_env):
    base, head = pair(1.0)
    for r in head["targets"][0]["results"]:  # cold start 40 % slower, warm latency unchanged
        for run in r["cold"]["runs"]:
            run["total_ms"] *= 1.4
    b, h = write(tmp_path, "base.json", base), write(tmp_path, "head.json", head)
    r = run_cli(["gate", h, "--baseline", b, "--json"], env=cli_env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert "regression_cold_start" not in {c["budget"] for c in out["checks"]}
    (cold,) = [m for m in out["regression"]["metrics"] if m["metric"] == "cold_start"]
    assert cold["regression"] and cold["delta_pct"] > 20
    assert any("reported but not gated" in line for line in notes(out["regression"]))
    r = run_cli(["gate", h, "--baseline", b, "--gate-cold-start", "--json"], env=cli_env)
    assert r.returncode == 1
    failed = [c for c in json.loads(r.stdout)["checks"] if c["outcome"] == "FAIL"]
    assert {c["budget"] for c in failed} == {"regression_cold_start"}
