"""`edgedistill compress` with `[export] backends = ["litert"]` (issue 13 item 1): the built-in
student's FP32 and INT8 .tflite exported, verified against PyTorch in a
fresh process and benchmarked by the same harness. One run for the module (1 epoch, LiteRT only,
a short measurement), the most expensive test of the LiteRT backend: most of it distillation."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from edgedistill.backends import base

pytestmark = pytest.mark.skipif(
    not base.get_backend("litert").availability().ok,
    reason=f"litert backend unusable here: {base.get_backend('litert').availability().reason}")

TARGET = """name = "t"
backends = ["litert"]
[measurement]
warmup_iterations = 2
min_iterations = 20
min_duration_s = 0.05
cold_runs = 1
measure_cache = false
max_load_per_core = 100.0
max_others_cpu_share = 1.0
"""
CONFIG = """[distill]
epochs = 1
[export]
backends = ["litert"]
benchmark_teacher = false  # the student's two artifacts show the path; a teacher adds a minute
[bench]
targets = ["t.toml"]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, shared_cache):
    import os

    from conftest import ROOT

    folder = tmp_path_factory.mktemp("litert-compress")
    (folder / "t.toml").write_text(TARGET)
    (folder / "edgedistill.toml").write_text(CONFIG)
    done = run_cli(["compress", "--out-dir", "runs", "--run-name", "r", "-q"], cwd=folder,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    return folder / "runs" / "r", done


def test_compress_exports_verifies_and_benches_litert(run):
    folder, done = run
    assert done.returncode in (0, 4, 5), done.stderr[-3000:]  # measured; no budgets in this target
    results = json.loads((folder / "results.json").read_text())
    rows = {r["artifact"]: r for r in results["targets"][0]["results"]}
    assert set(rows) == {"student-fp32-litert", "student-int8-litert"}
    for name, row in rows.items():
        v = row["verification"]
        assert v["verified"] and v["samples"] > 100, (name, v)
        assert row["warm"]["runs"][0]["n"] >= 20 and row["cold"]["first_inference_ms"]["median"] > 0
        assert row["size_bytes"] > 0 and row["session"]["threads"] == 1
    assert rows["student-fp32-litert"]["verification"]["max_abs"] < 1e-3
    assert rows["student-int8-litert"]["verification"]["top1_agreement"] >= 0.95
    assert rows["student-int8-litert"]["session"]["io_conversion"]  # it says it quantized the inputs
    assert rows["student-int8-litert"]["size_bytes"] < rows["student-fp32-litert"]["size_bytes"] / 2
    manifest = json.loads((folder / "export" / "manifest.json").read_text())
    int8 = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
    assert int8["kind"] == "tflite" and int8["meta"]["recipe"] == "static_wi8_ai8"
    assert int8["meta"]["calibration_samples"] > 0 and int8["meta"]["io_quantization"]["inputs"][0]["scale"] > 0
