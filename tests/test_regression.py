"""The noise-aware regression gate: pure comparisons over runs on synthetic results, then the CLI.

A synthetic artifact has `runs` fresh processes; each run's warm median is drawn around the
artifact's median with `run_sigma` (the process-to-process noise), and each run has its own
samples around that median (the noise inside a process, far smaller)."""

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
    compare_runs,
    gate_checks,
    notes,
    smallest_p,
)
from edgedistill.report.results import new_results

ENV = {"cpu_model": "Test CPU", "logical_cores": 2}


def latencies(seed: int, n: int, median_ms: float = 0.5, sigma: float = 0.08) -> list[float]:
    """Right-skewed like real warm latencies: lognormal around median_ms."""
    return list(np.random.default_rng(seed).lognormal(np.log(median_ms), sigma, n))


def warm(seed: int, runs: int = 5, median_ms: float = 0.5, run_sigma: float = 0.03, n: int = 200) -> dict:
    """A warm record as the harness writes it: per-run medians, pooled samples."""
    medians = latencies(seed, runs, median_ms, run_sigma)
    per_run = [latencies(seed * 100 + i, n, m, 0.05) for i, m in enumerate(medians)]
    return {"samples_ms": [x for r in per_run for x in r],
            "runs": [{"p50_ms": float(np.median(r)), "n": n} for r in per_run]}


def scaled(w: dict, factor: float) -> dict:
    return {"samples_ms": [x * factor for x in w["samples_ms"]],
            "runs": [{**r, "p50_ms": r["p50_ms"] * factor} for r in w["runs"]]}


def result(artifact: str, warm: dict | None, cold: list[float], role: str = "student", status: str = "ok") -> dict:
    return {
        "artifact": artifact, "role": role, "precision": "int8", "backend": "onnxruntime",
        "size_bytes": 1 << 20, "path": None, "threads": 1, "problems": [],
        "status": status, "status_detail": "" if status == "ok" else "timeout",
        "warm": {**warm, "summary": {"p90_ms": float(np.percentile(warm["samples_ms"], 90))}} if warm else None,
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


def pair(scale: float = 1.0, runs: int = 5, run_sigma: float = 0.03, cold_n: int = 5, seed: int = 0):
    """Base and head of one student artifact; head's runs are independent draws times scale."""
    base = results_file(result("student-int8-onnxruntime", warm(seed, runs, run_sigma=run_sigma),
                               latencies(seed + 1, cold_n, 200.0, 0.03)))
    head = results_file(result("student-int8-onnxruntime", scaled(warm(seed + 2, runs, run_sigma=run_sigma), scale),
                               [x * scale for x in latencies(seed + 3, cold_n, 200.0, 0.03)]))
    return base, head


def metric(comparison, name: str):
    return next(m for m in comparison.metrics if m.metric == name)


# ---------------------------------------------------------------- the decision


def test_identical_distributions_are_no_regression():
    c = compare_results(*pair(1.0))
    assert {m.metric for m in c.metrics} == {"warm_p50", "cold_start"}
    assert not c.regressions
    warm_ = metric(c, "warm_p50")
    assert warm_.base_n == warm_.head_n == 5  # runs, not the 1,000 samples behind them
    assert abs(warm_.delta_pct) < 5 and warm_.p_slower > ALPHA and warm_.verdict == "same"
    assert warm_.untestable is None
    assert {ch.outcome for ch in gate_checks(c)} == {"PASS"}


def test_a_20_percent_slowdown_is_a_regression():
    c = compare_results(*pair(1.2), max_cold_regression_pct=10.0)
    warm_, cold = metric(c, "warm_p50"), metric(c, "cold_start")
    assert warm_.regression and warm_.delta_pct == pytest.approx(20, abs=4)
    # 5 vs 5 completely separated runs: the exact test's smallest p, 1/252, is below alpha.
    assert warm_.p_slower == pytest.approx(1 / 252) == pytest.approx(smallest_p(5, 5))
    assert warm_.verdict == "slower" and warm_.ratio_ci[0] > 1.1
    assert cold.regression and cold.p_slower == pytest.approx(1 / 252)
    checks = {ch.budget: ch for ch in gate_checks(c)}
    assert checks["regression_warm_p50"].outcome == "FAIL"
    # The limit is the threshold used: the floor here, as the base's runs spread less than it.
    assert warm_.base_spread_pct < MAX_REGRESSION_PCT
    assert checks["regression_warm_p50"].limit == pytest.approx(MAX_REGRESSION_PCT)
    assert checks["regression_warm_p50"].value == pytest.approx(warm_.delta_pct, abs=1e-3)
    assert "p=" in checks["regression_warm_p50"].detail and "over runs" in checks["regression_warm_p50"].detail


def test_one_process_shifted_by_28_percent_is_not_a_regression():
    """The issue's false alarm: one process's thousands of samples all sat 28 % higher. Over
    samples that was "significant" at p < 1e-4; over runs it is one replicate of five."""
    base, head = pair(1.0)
    runs = head["targets"][0]["results"][0]["warm"]["runs"]
    runs[0]["p50_ms"] *= 1.28
    c = compare_results(base, head)
    warm_ = metric(c, "warm_p50")
    assert not warm_.regression and warm_.p_slower > ALPHA and abs(warm_.delta_pct) < 5
    from scipy.stats import mannwhitneyu  # the old test over samples would have failed this head

    samples = head["targets"][0]["results"][0]["warm"]["samples_ms"]
    shifted = [x * 1.28 for x in samples[:200]]
    assert mannwhitneyu(shifted, base["targets"][0]["results"][0]["warm"]["samples_ms"],
                        alternative="greater").pvalue < 1e-4


def test_a_shift_within_the_base_run_spread_is_not_a_regression():
    """The base's own runs span 30 %: a 22 % slower head, every run slower, is not evidence."""
    base, head = pair(1.0)
    b = base["targets"][0]["results"][0]["warm"]
    for r, f in zip(b["runs"], (0.86, 0.95, 1.0, 1.05, 1.16)):
        r["p50_ms"] = 0.5 * f
    for r, f in zip(head["targets"][0]["results"][0]["warm"]["runs"], (1.19, 1.2, 1.22, 1.24, 1.25)):
        r["p50_ms"] = 0.5 * f
    warm_ = metric(compare_results(base, head), "warm_p50")
    assert warm_.base_spread_pct == pytest.approx(30.0)
    assert warm_.threshold_pct == pytest.approx(30.0)
    assert warm_.p_slower == pytest.approx(1 / 252) and warm_.delta_pct == pytest.approx(22, abs=0.1)
    assert not warm_.regression
    check = next(ch for ch in gate_checks(compare_results(base, head)) if ch.budget == "regression_warm_p50")
    assert check.outcome == "PASS" and check.limit == pytest.approx(30.0) and "run-to-run spread" in check.detail
    # The same head against a tight baseline is one.
    assert metric(compare_results(*pair(1.22)), "warm_p50").regression


def test_cold_start_has_its_own_wider_floor():
    c = compare_results(*pair(1.15))
    warm_, cold = metric(c, "warm_p50"), metric(c, "cold_start")
    assert warm_.regression and cold.p_slower < ALPHA and not cold.regression
    gated = compare_results(*pair(1.15), gate_cold_start=True)
    limits = {ch.budget: ch.limit for ch in gate_checks(gated)}
    assert limits == {"regression_warm_p50": MAX_REGRESSION_PCT, "regression_cold_start": MAX_COLD_REGRESSION_PCT}
    assert metric(compare_results(*pair(1.15), max_cold_regression_pct=10.0), "cold_start").regression
    assert metric(compare_results(*pair(1.3)), "cold_start").regression


def test_a_small_consistent_shift_is_significant_but_under_the_floor():
    c = compare_results(*pair(1.05, run_sigma=0.005))
    warm_ = metric(c, "warm_p50")
    assert warm_.p_slower < ALPHA and warm_.significant and warm_.verdict == "slower"
    assert not warm_.regression
    assert next(ch for ch in gate_checks(c) if ch.budget == "regression_warm_p50").outcome == "PASS"


def test_a_large_but_noisy_shift_is_not_significant():
    numbers = compare_runs(latencies(1, 5, sigma=0.5), [x * 1.3 for x in latencies(2, 5, sigma=0.5)])
    assert numbers["p_slower"] > ALPHA and not numbers["regression"]


def test_too_few_runs_cannot_pass_the_gate_they_are_inconclusive():
    """3 vs 3 runs can never reach p < 0.01 (smallest p 1/20): untestable, so the gate says
    INCONCLUSIVE instead of a PASS that could not have been a FAIL."""
    c = compare_results(*pair(1.5, runs=3, cold_n=3), gate_cold_start=True)
    for m in c.metrics:
        assert m.untestable and "cannot reach p < 0.01" in m.untestable and not m.regression
        assert m.min_p == pytest.approx(1 / 20)
    assert {ch.outcome for ch in gate_checks(c)} == {"INCONCLUSIVE"}
    assert any(line.startswith("untestable:") for line in notes(c.to_json()))
    # 4 vs 5 can (1/126 < 0.01).
    base, head = pair(1.5, runs=4)[0], pair(1.5, runs=5)[1]
    assert metric(compare_results(base, head), "warm_p50").regression


def test_a_file_without_per_run_warm_medians_is_untestable():
    """Old results (one warm process, no warm.runs) never claim significance: INCONCLUSIVE."""
    base, head = pair(1.5)
    del base["targets"][0]["results"][0]["warm"]["runs"]
    c = compare_results(base, head)
    warm_ = metric(c, "warm_p50")
    assert warm_.base_n == 1 and not warm_.regression and "no per-run warm medians" in warm_.untestable
    checks = {ch.budget: ch.outcome for ch in gate_checks(c)}
    assert checks == {"regression_warm_p50": "INCONCLUSIVE"}


def test_faster_is_reported_and_never_a_regression():
    c = compare_results(*pair(0.7))
    warm_ = metric(c, "warm_p50")
    assert warm_.verdict == "faster" and not warm_.regression and warm_.delta_pct < -25


def test_the_floor_and_alpha_are_parameters():
    base, head = pair(1.05, run_sigma=0.005)
    assert metric(compare_results(base, head, max_regression_pct=2.0), "warm_p50").regression
    # alpha 1e-3 is out of reach of 5 vs 5 runs (1/252), within reach of 7 vs 7 (1/3432).
    strict = compare_results(*pair(1.3), alpha=1e-3)
    assert metric(strict, "warm_p50").untestable and not metric(strict, "warm_p50").regression
    assert metric(compare_results(*pair(1.3, runs=7), alpha=1e-3), "warm_p50").regression


# ---------------------------------------------------------------- matching


def test_artifacts_on_one_side_only_are_listed_not_errors():
    base, head = pair(1.0)
    base["targets"][0]["results"].append(result("student-fp32-openvino", warm(5), latencies(6, 3, 300)))
    head["targets"][0]["results"].append(result("student-int8-openvino", warm(7), latencies(8, 3, 300)))
    c = compare_results(base, head)
    assert {(u.artifact, u.side) for u in c.unmatched} == {("student-int8-openvino", "new"),
                                                            ("student-fp32-openvino", "gone")}
    assert {m.artifact for m in c.metrics} == {"student-int8-onnxruntime"}


def test_no_common_artifact_is_a_usage_error():
    base, _ = pair()
    other = results_file(result("student-fp32-openvino", warm(1), latencies(2, 3)))
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
    base["targets"][0]["results"].append(result("teacher-fp32-onnxruntime", warm(9, 1, 4.0),
                                                latencies(10, 1, 900), role="teacher"))
    head["targets"][0]["results"].append(result("teacher-fp32-onnxruntime", scaled(warm(11, 1, 4.0), 1.5),
                                                latencies(12, 1, 900), role="teacher"))
    c = compare_results(base, head)
    teacher = [m for m in c.metrics if m.role == "teacher"]
    assert teacher and metric(c, "warm_p50").role == "student"
    # Measured in one process, the teacher shows its change but cannot be called a regression.
    assert all(m.untestable and not m.regression for m in teacher)
    assert metric(c, "warm_p50").delta_pct < 10 and any(m.delta_pct > 40 for m in teacher)
    assert {ch.artifact for ch in gate_checks(c)} == {"student-int8-onnxruntime"}
    assert not any(line.startswith("untestable:") for line in notes(c.to_json()))


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
    base, head = latencies(1, 7, sigma=0.03), [x * 1.2 for x in latencies(2, 7, sigma=0.03)]
    lo, hi = bootstrap_ratio_ci(base, head)
    assert (lo, hi) == bootstrap_ratio_ci(base, head)
    assert lo < np.median(head) / np.median(base) < hi and 1.1 < lo < hi < 1.3
    assert bootstrap_ratio_ci(base[:1], head) is None  # one run: nothing to resample


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), factor=st.floats(0.01, 100.0), shift=st.floats(0.8, 1.5),
       n=st.integers(1, 12))
def test_scaling_both_sides_by_one_factor_changes_nothing(seed, factor, shift, n):
    """Units must not matter: the test is on ranks, the delta and the spread on ratios."""
    base, head = latencies(seed, n), [x * shift for x in latencies(seed + 1, n)]
    a = compare_runs(base, head, bootstrap=False)
    b = compare_runs([x * factor for x in base], [x * factor for x in head], bootstrap=False)
    assert b["delta_pct"] == pytest.approx(a["delta_pct"], rel=1e-9, abs=1e-9)
    assert b["threshold_pct"] == pytest.approx(a["threshold_pct"], rel=1e-9, abs=1e-9)
    assert b["p_slower"] == pytest.approx(a["p_slower"], rel=1e-9)
    assert b["p_two_sided"] == pytest.approx(a["p_two_sided"], rel=1e-9)
    assert b["regression"] == a["regression"]


@settings(max_examples=200, deadline=None)
@given(base=st.lists(st.floats(0.1, 10.0), min_size=2, max_size=9),
       picks=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=9))
def test_a_head_within_the_base_runs_range_is_never_a_regression(base, picks):
    """RELIABILITY 29: whatever the runs, a head whose every run lies within the range the
    base's own runs covered cannot be called a regression (it must exceed the base's spread)."""
    lo, hi = min(base), max(base)
    head = [lo + p * (hi - lo) for p in picks]
    numbers = compare_runs(base, head, max_regression_pct=0.0, bootstrap=False)
    assert numbers["delta_pct"] <= numbers["threshold_pct"] + 1e-9
    assert not numbers["regression"]


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
    for word in ("student-int8-onnxruntime", "warm_p50", "cold_start", "slower", "regression", "cpu_model",
                 "base spread", "runs base/head"):
        assert word in r.stdout
    assert run_cli(["compare", b, s, "--fail-on-regression"], env=cli_env).returncode == 1
    assert run_cli(["compare", b, b, "--fail-on-regression"], env=cli_env).returncode == 0
    r = run_cli(["compare", b, s, "--json"], env=cli_env)
    out = json.loads(r.stdout)
    assert out["regressions"] == 2 and {m["verdict"] for m in out["metrics"]} == {"slower"}
    assert out["metrics"][0]["ratio_ci"][0] > 1.0
    assert all(m["base_spread_pct"] > 0 and m["threshold_pct"] >= 10 for m in out["metrics"])


def test_gate_against_a_baseline_without_per_run_data_is_inconclusive(tmp_path, cli_env):
    """A baseline written before warm runs were recorded: the gate cannot test it, says so in
    one line and exits 5, never PASS (it could not have failed) nor a false FAIL."""
    base, slow = pair(1.5)
    del base["targets"][0]["results"][0]["warm"]["runs"]
    b, s = write(tmp_path, "base.json", base), write(tmp_path, "slow.json", slow)
    r = run_cli(["gate", s, "--baseline", b], env=cli_env)
    assert r.returncode == 5, r.stdout + r.stderr
    assert "INCONCLUSIVE" in r.stdout and "no per-run warm medians" in r.stdout


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
                      results_file(result("student-fp32-openvino", warm(1), latencies(2, 3))))
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
