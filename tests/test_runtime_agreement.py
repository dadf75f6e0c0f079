"""benchmarks/runtime_agreement.py: the model it builds and the target it measures with.

No timing assertions: the agreement figures live in the script's output, not in tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("runtime_agreement", ROOT / "benchmarks" / "runtime_agreement.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


agreement = _load()


def test_the_cnn_has_resnet18s_size_and_output():
    model = agreement.resnet18()
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # torchvision's resnet18
    with torch.no_grad():
        assert model(torch.zeros(*agreement.SHAPE)).shape == (1, 1000)


def test_its_target_is_a_valid_measurement_only_profile(tmp_path):
    from edgedistill.config import load_target

    target = load_target(agreement.target_file(tmp_path, threads=1, duration_s=4.0))
    assert target.threads == 1 and target.measurement.min_duration_s == 4.0
    assert target.budgets.model_dump(exclude_none=True) == {"overrides": {}}


def test_the_verdict_compares_each_tools_fastest_process(monkeypatch):
    monkeypatch.setattr(agreement.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    figures = {"read_ms": 1.0, "compile_ms": 2.0, "first_inference_ms": 3.0, "command": "bench m.xml"}
    # The tool's processes at 40-60 ms, edgedistill's at 41-80: the medians differ by 27 %, the
    # fastest processes by 2.5 % (within 3 %); one slow-mode process must not decide.
    tool = iter([[40.0, 50.0, 60.0], [52.0, 55.0, 58.0]])
    ours = iter([[41.0, 70.0, 80.0], [65.0, 66.0, 75.0]])

    def fake(source):
        runs = next(source)
        return {**figures, "median_ms": sorted(runs)[1], "run_medians_ms": runs}

    summary = agreement.compare("x", 2, lambda: fake(tool), lambda: fake(ours))
    assert summary["tool"]["fastest_ms"] == 40.0 and summary["edgedistill"]["fastest_ms"] == 41.0
    assert summary["ratio"] == 1.025 and summary["agrees"]
    assert summary["median_ratio"] == round(68.0 / 53.5, 4)  # medians of all six processes each
    assert summary["tool"]["spread_ms"] == [40.0, 60.0]
