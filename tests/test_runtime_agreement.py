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
