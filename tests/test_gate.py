import copy

import pytest

from edgedistill.gate import EXIT_CODES, FAIL, INCONCLUSIVE, INVALID, PASS, gate_results

RESULT = {
    "artifact": "student-int8-onnxruntime", "role": "student", "precision": "int8", "backend": "onnxruntime",
    "size_bytes": 1 << 20, "status": "ok", "status_detail": "",
    "warm": {"summary": {"p90_ms": 1.5}},
    "cold": {"total_ms": {"median": 300.0}},
    "accuracy": {"top1": 0.97},
    "memory": {"peak_rss_mb": 120.0},
}
TEACHER = {**RESULT, "artifact": "teacher-fp32-onnxruntime", "role": "teacher",
           "warm": {"summary": {"p90_ms": 99.0}}}


def results(*rs, budgets=None):
    return {
        "complete": True,
        "reference": {"teacher_top1": 0.98},
        "targets": [{"name": "cpu", "budgets": budgets or {"p90_ms": 2.0, "cold_start_ms": 1000.0,
                                                          "accuracy_drop_pt": 2.0, "size_mb": 2.0,
                                                          "memory_mb": 500.0},
                     "results": list(rs)}],
    }


def test_all_within_budget_passes_and_teacher_is_not_gated():
    verdict, checks = gate_results(results(RESULT, TEACHER))
    assert verdict == PASS and EXIT_CODES[verdict] == 0
    assert {c.artifact for c in checks} == {"student-int8-onnxruntime"}
    assert len(checks) == 5
    drop = next(c for c in checks if c.budget == "accuracy_drop_pt")
    assert drop.value == pytest.approx(1.0)


def test_the_unpruned_reference_beside_a_pruned_student_is_measured_not_gated():
    """compress with [compress.prune] gates the pruned student; the unpruned one, slower, is the
    before of a before/after and fails nothing."""
    slow = {**RESULT, "artifact": "student-int8-onnxruntime", "reference": True, "warm": {"summary": {"p90_ms": 9.0}}}
    pruned = {**RESULT, "artifact": "student-prune0.5-int8-onnxruntime", "form": "prune0.5"}
    verdict, checks = gate_results(results(slow, pruned, TEACHER))
    assert verdict == PASS and {c.artifact for c in checks} == {"student-prune0.5-int8-onnxruntime"}
    slow["reference"] = "yes"  # only true marks a reference: anything else is gated as a student
    assert gate_results(results(slow, pruned))[0] == FAIL


@pytest.mark.parametrize("path, value, budget", [
    (("warm", "summary", "p90_ms"), 2.5, "p90_ms"),
    (("cold", "total_ms", "median"), 1500.0, "cold_start_ms"),
    (("accuracy", "top1"), 0.95, "accuracy_drop_pt"),
    (("memory", "peak_rss_mb"), 800.0, "memory_mb"),
])
def test_each_budget_can_fail(path, value, budget):
    r = copy.deepcopy(RESULT)
    node = r
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    verdict, checks = gate_results(results(r))
    assert verdict == FAIL and EXIT_CODES[verdict] == 1
    assert [c.budget for c in checks if c.outcome == FAIL] == [budget]


def test_size_budget_fails():
    r = {**RESULT, "size_bytes": 3 << 20}
    verdict, _ = gate_results(results(r))
    assert verdict == FAIL


def test_invalid_and_inconclusive():
    invalid = {**RESULT, "status": "invalid", "status_detail": "too few samples"}
    verdict, checks = gate_results(results(invalid))
    assert verdict == INVALID and EXIT_CODES[verdict] == 4
    assert {c.outcome for c in checks if c.budget == "p90_ms"} == {INVALID}
    hung = {**RESULT, "status": "inconclusive", "status_detail": "timeout"}
    assert gate_results(results(hung))[0] == INCONCLUSIVE and EXIT_CODES[INCONCLUSIVE] == 5


def test_fail_outranks_invalid_and_inconclusive():
    slow = copy.deepcopy(RESULT)
    slow["warm"]["summary"]["p90_ms"] = 9.0
    hung = {**RESULT, "artifact": "x", "status": "inconclusive", "status_detail": "timeout"}
    assert gate_results(results(slow, hung))[0] == FAIL


def test_nothing_gated_is_never_pass():
    assert gate_results(results(TEACHER))[0] == INCONCLUSIVE


def test_per_backend_override():
    r = copy.deepcopy(RESULT)
    r["backend"] = "executorch"
    r["cold"]["total_ms"]["median"] = 8000.0
    budgets = {"cold_start_ms": 1000.0, "overrides": {"executorch": {"cold_start_ms": 20000.0}}}
    assert gate_results(results(r, budgets=budgets))[0] == PASS


def test_skipped_backend_is_inconclusive_not_pass():
    from edgedistill.bench.harness import skipped_result
    from edgedistill.config import TargetConfig

    skipped = skipped_result("tensorrt", TargetConfig(name="cpu"), "the tensorrt package is not installed")
    verdict, checks = gate_results(results(RESULT, skipped))
    assert verdict == INCONCLUSIVE
    assert {c.detail for c in checks if c.artifact == "student-*-tensorrt"} == {"the tensorrt package is not installed"}
