"""`compress` on an embedding student, end to end on the built-in digits: distill (1 epoch),
export to ONNX Runtime FP32 and INT8 (verified by cosine), bench on a tiny probe target, the
quality per artifact in results.json, and the gate on a quality budget (a too-tight one: exit 1)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import ROOT, run_cli

MODELS = '''
import torch

def _mlp(hidden, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, 16))

def teacher():
    return _mlp(48, 0)

def student():
    return _mlp(16, 1)
'''

TARGET = '''backends = ["onnxruntime"]
[measurement]
warmup_iterations = 2
min_iterations = 100
min_duration_s = 0.05
cold_runs = 1
measure_cache = false
[budgets]
{budgets}
'''


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embedding-compress")
    (tmp / "embdigits.py").write_text(MODELS)
    (tmp / "tiny.toml").write_text(TARGET.format(budgets="quality_drop = 0.5\nmin_quality = 0.3"))
    (tmp / "edgedistill.toml").write_text(
        '[teacher]\nspec = "embdigits:teacher"\n[student]\nspec = "embdigits:student"\n'
        '[distill]\nobjective = "embedding"\nepochs = 1\nbatch_size = 64\nlr = 0.01\nthreads = 1\n'
        '[compress]\ncalibration_samples = 32\n[export]\nbackends = ["onnxruntime"]\n'
        '[bench]\ntargets = ["tiny.toml"]\n')
    env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}"}
    r = run_cli(["compress"], cwd=tmp, env=env)
    return tmp, env, r


def test_compress_scores_every_embedding_artifact_by_cosine_and_recall(compressed):
    tmp, _, r = compressed
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((tmp / "runs/default/results.json").read_text())
    ref = results["reference"]["quality"]
    assert ref["metric"] == "cosine" and ref["teacher"] == pytest.approx(1.0)
    assert ref["metrics"]["recall@10"] == pytest.approx(1.0) and ref["n"] == results["reference"]["test_samples"]
    rows = {x["artifact"]: x for x in results["targets"][0]["results"]}
    assert set(rows) == {"student-fp32-onnxruntime", "student-int8-onnxruntime", "teacher-fp32-onnxruntime"}
    for name, row in rows.items():
        q = row["quality"]
        assert q["measured"] and q["metric"] == "cosine" and q["teacher"] == pytest.approx(1.0), name
        assert q["drop"] == pytest.approx(1.0 - q["value"]) and q["n"] == ref["n"]
        recall = q["metrics"]["recall@10"]
        assert recall["measured"] and 0.0 <= recall["value"] <= 1.0
        assert row["accuracy"]["measured"] is False  # an embedding has no classes to score
        assert row["verification"]["quality"]["metric"] == "cosine"
    teacher = rows["teacher-fp32-onnxruntime"]["quality"]
    assert teacher["value"] == pytest.approx(1.0, abs=1e-5)  # the teacher's export against its PyTorch self
    assert rows["teacher-fp32-onnxruntime"]["quality"]["metrics"]["recall@10"]["value"] > 0.95
    student = rows["student-fp32-onnxruntime"]["quality"]
    assert student["value"] < 0.999  # one epoch of a 16-wide student is not its teacher
    # the exported FP32 student scores what the PyTorch student scored: verification's own value
    assert student["value"] == pytest.approx(rows["student-fp32-onnxruntime"]["verification"]["quality"]["value"],
                                             abs=1e-4)
    checks = {(c["artifact"], c["budget"]): c for c in results["checks"]}
    assert {b for _, b in checks} == {"quality_drop", "min_quality"}
    assert all(c["outcome"] == "PASS" for c in checks.values())
    assert not any(a.startswith("teacher") for a, _ in checks)  # the reference is never gated
    report = (tmp / "runs/default/report.md").read_text()
    assert "cosine" in report and "recall@10" in report


def test_a_too_tight_quality_budget_fails_the_gate(compressed):
    tmp, env, r = compressed
    assert r.returncode == 0, r.stderr[-3000:]
    (tmp / "tight.toml").write_text('name = "tiny"\n' + TARGET.format(budgets="quality_drop = 0.000001"))
    gated = run_cli(["gate", "runs/default/results.json", "--target", "tight.toml"], cwd=tmp, env=env)
    assert gated.returncode == 1, gated.stdout + gated.stderr
    assert "quality_drop" in gated.stdout + gated.stderr
