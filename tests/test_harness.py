"""The harness on a fake runtime: cold runs, model cache miss/hit, sweeps, integrity checks,
validity rules and --cold-disk, with deterministic latencies."""

import numpy as np
import pytest

from edgedistill.artifacts import Artifact
from edgedistill.bench import harness
from edgedistill.bench.harness import EvalSet, bench_artifact
from edgedistill.config import TargetConfig

MEASURE = {"warmup_iterations": 2, "min_iterations": 120, "min_duration_s": 0.05,
           "max_duration_s": 10, "cold_runs": 3, "timeout_s": 60}


@pytest.fixture
def setup(fake_probe, tmp_path, monkeypatch):
    _, inputs = fake_probe
    model = tmp_path / "model.bin"
    model.write_bytes(b"\0" * 20000)
    # the fake's output row k is x[k, :3]; argmax is column 2 for every row here
    evalset = EvalSet(inputs, np.full(10, 2), np.full(10, 2))
    monkeypatch.setattr(harness, "CACHE_MECHANISMS", {**harness.CACHE_MECHANISMS, "fake": "marker file"})
    monkeypatch.setattr(harness, "governor", lambda: None)
    monkeypatch.setattr(harness, "load_average", lambda: [0.1, 0.1, 0.1])

    def run(role="student", options=None, cold_disk=False, **target):
        art = Artifact("onnx", model, "fp32", role, "fake")
        measurement = {**MEASURE, **target.pop("measurement", {})}
        t = TargetConfig(name="t", measurement=measurement, **target)
        monkeypatch.setattr(harness, "probe_request", _with_options(harness.probe_request, options or {}))
        return bench_artifact(art, t, evalset, tmp_path / "work", cold_disk=cold_disk)

    return run


def _with_options(original, options):
    def request(*args, **kwargs):
        return {**original(*args, **kwargs), "options": options}
    return request


def test_student_gets_cold_runs_cache_miss_and_hit_and_a_valid_warm_run(setup):
    r = setup(options={"latency_ms": 1.0})
    assert r["status"] == "ok", r["status_detail"]
    cold = r["cold"]
    assert len(cold["runs"]) == 3 and cold["total_ms"]["n"] == 3
    for run in cold["runs"]:  # the parts add up to the time to first result
        parts = ("interpreter_ms", "import_ms", "read_ms", "compile_ms", "first_inference_ms")
        assert run["total_ms"] == pytest.approx(sum(run[p] for p in parts), abs=1e-3)
    cache = cold["cache"]
    assert cache["miss"]["total_ms"]["n"] == 3 and cache["hit"]["total_ms"]["n"] == 3
    # the fake "compiles" for 100 ms on a miss and 5 ms on a hit
    assert cache["miss"]["compile_ms"]["median"] >= 50 > cache["hit"]["compile_ms"]["median"]
    assert cache["saving_ms"] > 30 and cache["saving_pct"] > 0
    assert cold["kind"] == "warm-disk"
    summary = r["warm"]["summary"]
    assert summary["n"] >= 120 and summary["p90_early_stopping_ms"] >= summary["p90_ms"]
    assert r["integrity"]["sampled_outputs"]["argmax_mismatches"] == 0
    assert 0.75 < r["integrity"]["caching_ratio"] < 1.5
    assert r["accuracy"]["top1"] == 1.0
    assert r["conditions"]["load_average_before"] == [0.1, 0.1, 0.1]


def test_teacher_is_measured_once_without_cache_or_sweep(setup):
    r = setup(role="teacher", sweep={"threads": [2]})
    assert len(r["cold"]["runs"]) == 1 and r["cold"]["cache"] is None and r["sweep"] == []


def test_sweep_points_and_a_fixed_batch_is_reported_unsupported(setup):
    r = setup(sweep={"threads": [1, 2], "batch_sizes": [1, 4]})
    points = {(p["threads"], p["batch_size"]): p for p in r["sweep"]}
    assert set(points) == {(1, 4), (2, 1), (2, 4)}  # the base point (1 thread, batch 1) is the main run
    assert all(p["status"] == "ok" for p in points.values())
    # batch 4 per call at the same per-call latency: about 4x the samples per second
    assert points[(1, 4)]["samples_per_s"] > 2.5 * points[(2, 1)]["samples_per_s"]
    fixed = setup(options={"fixed_batch": 1}, sweep={"batch_sizes": [1, 4]})
    assert fixed["sweep"][0]["status"] == "unsupported" and "dynamic batch" in fixed["sweep"][0]["detail"]


def test_caching_runtime_is_a_named_failure(setup):
    r = setup(options={"latency_ms": 2.0, "cache_repeats": True})
    assert r["status"] == "invalid"
    assert [p["kind"] for p in r["problems"]] == ["caching_suspected"]
    assert r["integrity"]["caching_ratio"] < 0.5


def test_outputs_that_change_during_the_latency_run_are_a_named_failure(setup):
    # the accuracy pass makes 11 calls (first inference + 10 samples); later calls drift
    r = setup(options={"drift_after": 11})
    assert r["status"] == "invalid"
    assert "outputs_changed" in [p["kind"] for p in r["problems"]]


@pytest.mark.parametrize("device_used, allow, expected", [
    ("CUDA", False, ["device_fallback"]),
    ("CUDA", True, []),
])
def test_device_fallback_is_invalid_unless_allowed(setup, device_used, allow, expected):
    r = setup(options={"device_used": device_used}, allow_fallback=allow)
    assert [p["kind"] for p in r["problems"]] == expected


@pytest.mark.parametrize("requested, used, fallback", [
    ("CPU", "CPU", False), ("CUDA", "CPU", True), ("GPU", "CUDA", False), ("AUTO", "CPU", True),
    ("AUTO", "GPU.0", False), ("AUTO:CPU", "CPU", False), ("GPU", "GPU.0,CPU", True),
])
def test_device_rules(requested, used, fallback):
    assert (harness._device_problem(requested, used) is not None) == fallback


def test_busy_machine_and_slow_clocks_are_invalid(setup, monkeypatch):
    monkeypatch.setattr(harness, "load_average", lambda: [9.0, 9.0, 9.0])
    monkeypatch.setattr(harness, "governor", lambda: "powersave")
    r = setup()
    assert {p["kind"] for p in r["problems"]} == {"busy_machine", "unstable_clocks"}
    allowed = setup(measurement={"max_load_per_core": 100, "allow_unstable_clocks": True})
    assert allowed["problems"] == []


def test_too_short_run_says_how_many_more_iterations(setup):
    r = setup(options={"latency_ms": 5.0}, measurement={"min_iterations": 500, "max_duration_s": 0.3,
                                                          "min_duration_s": 0.1})
    assert r["status"] == "invalid"
    kinds = [p["kind"] for p in r["problems"]]
    assert "run_too_short" in kinds
    assert "more iterations" in r["status_detail"]


def test_cold_disk_evicts_and_says_so(setup):
    r = setup(cold_disk=True)
    assert r["cold"]["kind"] == "cold-disk", r["cold"]["kind_detail"]


def test_cold_disk_that_cannot_evict_says_warm(setup, monkeypatch):
    from edgedistill.bench.page_cache import Eviction

    monkeypatch.setattr(harness, "evict", lambda paths: Eviction(False, 3, 5, "3 of 5 pages stayed cached"))
    r = setup(cold_disk=True)
    assert r["cold"]["kind"] == "warm-disk" and "3 of 5 pages" in r["cold"]["kind_detail"]


def test_crash_is_inconclusive_and_keeps_nothing_false(setup):
    r = setup(options={"fault": "segfault"})
    assert r["status"] == "inconclusive" and "SIGSEGV" in r["status_detail"]
    assert "warm" not in r and "accuracy" not in r
