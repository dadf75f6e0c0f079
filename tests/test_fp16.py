"""FP16 on LiteRT (weights stored as float16) and ExecuTorch (XNNPACK's fp16 operators): the
artifact runs in its own runtime within [export] fp16_max_abs of PyTorch (issue 14 item 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import structured_images
from edgedistill.backends import base
from edgedistill.compress.accuracy import artifact_outputs
from edgedistill.config import ExportConfig
from edgedistill.exporters import export_program

FP16_MAX_ABS = ExportConfig().fp16_max_abs


class ConvMLP(torch.nn.Module):
    """A conv layer and a 64k-weight head: enough weights for storage in fp16 to show."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4 * 16 * 16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    torch.manual_seed(0)
    model = ConvMLP().eval()
    example = torch.from_numpy(structured_images(1, seed=1))
    source = export_program(model, example, tmp_path_factory.mktemp("fp16") / "student.pt2", dynamic_batch=False)
    inputs = structured_images(16, seed=3)
    with torch.no_grad():
        reference = model(torch.from_numpy(inputs)).numpy()
    return source, inputs, reference


@pytest.mark.parametrize("backend", ["litert", "executorch"])
def test_fp16_artifact_runs_within_fp16_tolerance(program, backend, tmp_path):
    module = base.get_backend(backend)
    if not module.availability().ok:
        pytest.skip(module.availability().reason)
    source, inputs, reference = program
    half = module.export(source, tmp_path, precision="fp16", calibration=None)
    assert half.precision == "fp16" and half.path.name == f"student-fp16-{backend}.{half.path.suffix[1:]}"
    outputs = artifact_outputs(backend, half.path, "fp16", inputs)
    diff = np.abs(outputs - reference).max()
    assert diff <= FP16_MAX_ABS
    assert diff > 1e-6  # float16 rounding shows: it is not the fp32 model under another name
    if backend == "litert":
        # 16k float weights stored in 2 bytes instead of 4 (float_bytes: the same conversion's
        # float32 file, before its weights were cast).
        assert half.path.stat().st_size < 0.6 * half.meta["float_bytes"]
    else:
        assert half.meta["delegated_nodes"] >= 3  # conv, relu/pool, linear: in XNNPACK, in fp16
