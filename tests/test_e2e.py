"""End to end: the CLI on the built-in default, every CPU backend, short training.

One pipeline run is shared by the tests of this module (it takes a few minutes on 2 cores).
"""

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_cli

from edgedistill.artifacts import sha256_file

pytestmark = pytest.mark.slow

BACKENDS = ("onnxruntime", "openvino", "executorch")

TARGET = """
name = "ci-cpu"
backends = ["onnxruntime", "openvino", "executorch"]
threads = 1
[measurement]
warmup_iterations = 5
min_iterations = 150
min_duration_s = 0.3
cold_runs = 2
timeout_s = 300
max_load_per_core = 4.0   # CI machines are shared; this test checks the pipeline, not the machine
max_others_cpu_share = 1.0  # likewise: other processes busy during a warm run are allowed here
[sweep]
batch_sizes = [1, 4]
[budgets]
p90_ms = 50.0
accuracy_drop_pt = 15.0
size_mb = 20.0
[budgets.overrides.executorch]
p90_ms = 100.0
"""

QUICK_TARGET = """
name = "ci-quick"
backends = ["onnxruntime"]
[measurement]
warmup_iterations = 2
min_iterations = 100  # p99 needs 100 samples
min_duration_s = 0.0
cold_runs = 1
measure_cache = false
max_load_per_core = 100.0
max_others_cpu_share = 1.0
[budgets]
p90_ms = 50.0
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    (work / "ci-cpu.toml").write_text(TARGET)
    args = ["compress", "--epochs", "3", "--target", "ci-cpu.toml", "--out-dir", "runs", "--run-name", "e2e"]
    # The job summary is checked here, never the CI job's own (when the suite runs in Actions).
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(work / "step-summary.md")}
    first = run_cli(args, cwd=work, env=env)
    # The tests read the first run's results and reports: kept aside in first/, since the second
    # run writes its own (on a quick target: it is there to show the stages reused, not to measure).
    (work / "first").mkdir()
    for name in ("results.json", "report.md", "report.html", "junit.xml"):
        if (work / "runs/e2e" / name).exists():
            shutil.copy(work / "runs/e2e" / name, work / "first" / name)
    stamps = {stage: _finished(work, stage) for stage in ("distill", "export")}
    (work / "quick.toml").write_text(QUICK_TARGET)
    quick = [*args[:args.index("--target") + 1], "quick.toml", *args[args.index("--target") + 2:]]
    second = run_cli([*quick, "--json"], cwd=work, env=env)
    second.reused = {stage: stamp is not None and _finished(work, stage) == stamp
                     for stage, stamp in stamps.items()}
    return work, first, second


def _finished(work: Path, stage: str) -> float | None:
    manifest = work / "runs/e2e" / stage / "manifest.json"
    return json.loads(manifest.read_text())["finished"] if manifest.exists() else None


def test_compress_passes_and_exit_code_carries_the_verdict(run):
    work, first, _ = run
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((work / "first/results.json").read_text())
    assert results["schema"] == "edgedistill.results/3"
    assert results["verdict"] == "PASS"
    assert "verdict: PASS" in first.stdout


def test_every_backend_measured_with_cold_parts_warm_percentiles_and_accuracy(run):
    work, _, _ = run
    results = json.loads((work / "first/results.json").read_text())
    rows = results["targets"][0]["results"]
    measured = {(r["role"], r["precision"], r["backend"]) for r in rows if r["status"] == "ok"}
    for b in BACKENDS:
        assert ("student", "fp32", b) in measured and ("teacher", "fp32", b) in measured
    assert ("student", "int8", "onnxruntime") in measured and ("student", "int8", "openvino") in measured
    for r in rows:
        assert r["problems"] == [], r["status_detail"]
        cold = r["cold"]
        assert len(cold["runs"]) == (2 if r["role"] == "student" else 1)
        native = r["backend"] == "executorch"  # the native runner measures ExecuTorch: nothing to import
        assert r["runner"]["kind"] == ("native" if native else "python"), r["runner"]
        for part in ("interpreter_ms", "compile_ms", "first_inference_ms", "total_ms"):
            assert cold[part]["median"] > 0
        assert cold["import_ms"]["median"] == 0 if native else cold["import_ms"]["median"] > 0
        if native:  # a device's cold start, not the Python runtime's seconds of importing torch
            assert cold["total_ms"]["median"] < 500 and all(run.get("import_note") for run in cold["runs"])
        assert cold["read_ms"]["median"] >= 0 and cold["kind"] == "warm-disk"
        if r["role"] == "student" and r["backend"] in ("onnxruntime", "openvino"):
            cache = cold["cache"]
            assert cache["miss"]["total_ms"]["n"] == 2 and cache["hit"]["total_ms"]["n"] == 2
            assert cache["saving_ms"] == pytest.approx(
                cache["miss"]["total_ms"]["median"] - cache["hit"]["total_ms"]["median"], abs=1e-2)
        if r["role"] == "student":  # the sweep: batch 4, which the .pte's fixed batch cannot run
            (point,) = r["sweep"]
            assert point["batch_size"] == 4
            if r["backend"] == "executorch":
                assert point["status"] == "unsupported"
            else:
                assert point["status"] == "ok" and point["samples_per_s"] > 0
        s = r["warm"]["summary"]
        assert s["n"] >= 150 and 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"]
        assert s["p90_ms"] <= s["p90_early_stopping_ms"]
        assert 0 < r["warm"]["loop_overhead_ms"] <= r["warm"]["harness_overhead_ms"] < s["p50_ms"]
        assert r["integrity"]["sampled_outputs"]["argmax_mismatches"] == 0
        assert len(r["warm"]["samples_ms"]) == s["n"]
        assert r["accuracy"]["top1"] > 0.8 and r["accuracy"]["n"] == results["reference"]["test_samples"]
        # a Python process holds tens of MB before any model; the native runner about 9 MB in all
        assert r["memory"]["peak_rss_mb"] > (1 if native else 10) and r["size_bytes"] > 0
        # RELIABILITY 27: what was measured, byte for byte
        assert r["sha256"] == sha256_file(work / r["path"])
        assert sum(f["size"] for f in r["files"]) == r["size_bytes"]
        assert r["threads"] == 1
    env = results["environment"]
    assert env["cpu_model"] and env["versions"]["onnxruntime"] and env["load_average"] is not None
    assert env["seed"] == 0 and rows[0]["conditions"]["usable_cores"] >= 1


def test_student_is_faster_than_teacher_on_onnxruntime(run):
    work, _, _ = run
    rows = json.loads((work / "first/results.json").read_text())["targets"][0]["results"]
    p50 = {(r["role"], r["precision"], r["backend"]): r["warm"]["summary"]["p50_ms"] for r in rows}
    assert p50[("student", "fp32", "onnxruntime")] * 2 < p50[("teacher", "fp32", "onnxruntime")]


def test_exports_were_verified_against_pytorch(run):
    work, _, _ = run
    manifest = json.loads((work / "runs/e2e/export/manifest.json").read_text())
    for a in manifest["artifacts"]:
        v = a["meta"]["verification"]
        if a["precision"] == "fp32":
            assert v["max_abs"] <= 1e-3 and v["top1_agreement"] >= 0.99
        else:
            assert v["top1_agreement"] >= 0.95


def test_reports_and_second_run_reuses_stages(run):
    work, _, second = run
    md = (work / "first/report.md").read_text()
    assert "**Verdict: PASS**" in md and "student-int8-onnxruntime" in md
    html = (work / "first/report.html").read_text()
    assert html.count("<svg") >= 3 and "student-int8-openvino" in html
    results = json.loads((work / "first/results.json").read_text())
    suites = ET.parse(work / "first/junit.xml").getroot()
    assert int(suites.get("tests")) == len(results["checks"]) and suites.get("failures") == "0"
    # both runs appended their report to the job summary
    assert (work / "step-summary.md").read_text().count("**Verdict: PASS**") == 2
    assert second.returncode == 0
    assert second.reused == {"distill": True, "export": True}
    assert json.loads(second.stdout)["verdict"] == "PASS"


def test_the_teacher_cache_went_to_edgedistill_cache_dir(run, shared_cache):
    """conftest points EDGEDISTILL_CACHE_DIR at one folder for the session: the teacher's logits
    are there, and nothing under the run's out_dir/.cache."""
    work, _, _ = run
    assert list((shared_cache / "teacher").glob("teacher-logits-*.safetensors"))
    assert not (work / "runs" / ".cache").exists()


def test_gate_against_a_tighter_target_fails_with_exit_1(run):
    work, _, _ = run
    tight = work / "tight.toml"
    tight.write_text(TARGET.replace("p90_ms = 50.0", "p90_ms = 0.001"))
    r = run_cli(["gate", "first/results.json", "--target", tight], cwd=work)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout


def test_report_csv_from_results_alone(run):
    work, _, _ = run
    r = run_cli(["report", "first/results.json", "--format", "csv"], cwd=work)
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("target,artifact") and len(lines) >= 1 + 2 * len(BACKENDS)
