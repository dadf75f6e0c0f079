"""Quantization-aware training guided by the teacher (issue 14 item 3): compress/qat.py and the
"qat" INT8 fallback of api.export (compress/qat_fallback.py), with real training, the real PT2E
quantizer and real runtimes, on 8x8 digits with MLPs small enough to train in a second."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from torch import nn

from edgedistill.errors import EXIT_USAGE, ConfigError, UsageError

needs_executorch = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                      reason="the XNNPACK quantizer QAT uses ships with executorch (not installed)")


def _mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def _fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    """Full-batch Adam on the labels: a trained model in well under a second."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8x8 digits, split by fixed rows, a trained teacher and a smaller student."""
    from sklearn.datasets import load_digits

    from edgedistill.data.datasets import DataSplits

    data = load_digits()
    x = torch.from_numpy((data.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(data.target.astype(np.int64))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    tr, va, te = order[:1200], order[1200:1500], order[1500:]
    splits = DataSplits("digits8", x[tr], y[tr], x[va], y[va], x[te], y[te], 10, (1, 8, 8), "digits8-qat-test")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits, ten times slower on a busy machine
    try:
        teacher = _fit(_mlp(128), x[tr], y[tr], 150)
        student = _fit(_mlp(12), x[tr], y[tr], 40)  # under-trained on purpose: QAT has room to learn
    finally:
        torch.set_num_threads(threads)
    return splits, teacher, student


@needs_executorch
def test_qat_trains_the_fake_quantized_student_and_converts_it(digits):
    """One epoch of QAT moves the weights and the observers' ranges (the converted int8 weights
    differ from the PTQ conversion of the same student), leaves the FP32 student alone, and is
    deterministic on CPU."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgedistill.compress.qat import WEIGHT_RANGE, train_qat
    from edgedistill.config import DistillConfig

    splits, teacher, student = digits
    before = {k: v.clone() for k, v in student.state_dict().items()}
    runs = [train_qat(teacher, student, splits, DistillConfig(batch_size=64, threads=1), splits.sample, epochs=1, seed=0)
            for _ in range(2)]
    qat = runs[0]
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())
    assert qat.meta["epochs"] == 1 and len(qat.meta["val_history"]) == 1
    graph = qat.module.inner
    targets = {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in t for t in targets), targets
    assert any("dequantize_per_channel" in t for t in targets), targets
    with torch.no_grad():
        out = [r.module(splits.x_val) for r in runs]
    assert torch.equal(out[0], out[1])  # seeded: the same run twice gives the same model

    # The same student quantized after training (PTQ, same quantizer and range, calibrated on
    # the training set): QAT's int8 weights are not those, its training changed them.
    ptq_quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(
        is_per_channel=True, weight_qmin=WEIGHT_RANGE[0], weight_qmax=WEIGHT_RANGE[1]))
    batch = ({0: torch.export.Dim("batch", min=1)},)
    prepared = prepare_pt2e(torch.export.export(student, (splits.x_train[:2],), dynamic_shapes=batch).module(),
                            ptq_quantizer)
    with torch.no_grad():
        prepared(splits.x_train)
    ptq = convert_pt2e(prepared)
    qat_int8 = [v for v in graph.state_dict().values() if v.dtype == torch.int8]
    ptq_int8 = [v for v in ptq.state_dict().values() if v.dtype == torch.int8]
    assert len(qat_int8) == len(ptq_int8) == 2  # both Linear layers' weights
    assert all(int(w.abs().max()) <= WEIGHT_RANGE[1] for w in qat_int8)
    assert any(not torch.equal(a, b) for a, b in zip(qat_int8, ptq_int8))


@needs_executorch
def test_export_falls_back_to_qat_when_int8_misses_the_budget(digits, tmp_path):
    """Through api.export, with a budget PTQ cannot meet (0 points, one calibration sample):
    each INT8 artifact records its PTQ drop, QAT is trained once for both backends, and the one
    of the two that lost fewer points on the validation split is kept, verified in a fresh
    runtime process against the model it was exported from; the other's file is gone."""
    from edgedistill import api
    from edgedistill.config import Config
    from edgedistill.ui import UI

    splits, teacher, student = digits
    d = api.Distilled(splits, teacher, student, "qat-test", {})
    cfg = Config.model_validate({
        "run": {"out_dir": str(tmp_path / "runs")},
        "student": {"spec": "tests:mlp12"},
        "export": {"backends": ["onnxruntime", "executorch"], "benchmark_teacher": False},
        "compress": {"precisions": ["int8"], "calibration_samples": 1, "int8_max_drop_pt": 0,
                     "int8_fallbacks": ["qat"], "qat_epochs": 1},
        "distill": {"batch_size": 64, "threads": 1},
    })
    ws = api.open_workspace(cfg)
    trained = []
    real_train_qat = __import__("edgedistill.compress.qat", fromlist=["train_qat"]).train_qat

    def counting_train_qat(*args, **kwargs):
        trained.append(kwargs["epochs"])
        return real_train_qat(*args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr("edgedistill.compress.qat.train_qat", counting_train_qat)
    try:
        artifacts = api.export(ws, UI(quiet=True), d)
    finally:
        mp.undo()
    assert trained == [1]  # once for the role, shared by both backends
    assert {a.backend for a in artifacts} == {"onnxruntime", "executorch"}
    stage = ws.run_dir / "export"
    manifest = json.loads((stage / "manifest.json").read_text())
    for art in artifacts:
        q = art.meta["quantization"]
        default, qat = q["tried"][0], q["tried"][-1]
        assert default["method"] == "default" and default["drop_pt"] > 0, q  # PTQ missed: the premise
        assert qat["method"] == "qat" and qat["epochs"] == 1 and "drop_pt" in qat, q
        kept_qat = qat["drop_pt"] < default["drop_pt"]
        assert q["method"] == ("qat" if kept_qat else "default")
        assert q["met"] == (min(qat["drop_pt"], default["drop_pt"]) <= 0)
        ptq_file = stage / art.backend / art.path.name
        qat_file = stage / art.backend / "qat" / art.path.name
        assert art.path == (qat_file if kept_qat else ptq_file)
        assert not (ptq_file if kept_qat else qat_file).exists()
        v = art.meta["verification"]
        assert v["verified"] and v["samples"] == len(splits.y_test), v
        if kept_qat:
            assert q["qat"]["quantizer"].startswith("XNNPACKQuantizer")
            assert art.meta["prequantized"] is True
            assert "QAT student" in q["verified_against"]
    assert any(a.meta["quantization"]["method"] == "qat" for a in artifacts)
    # The QAT intermediates are part of the stage: losing one redoes it.
    listed = json.dumps(manifest)
    assert "intermediate/qat/student.onnx" in listed and "intermediate/qat/student.pt2" in listed


@needs_executorch
def test_a_student_torch_export_cannot_capture_is_one_usage_error_naming_it():
    from edgedistill.compress.qat import prepare

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return self.fc(x.flatten(1))
            return -self.fc(x.flatten(1))

    with pytest.raises(UsageError) as e:
        prepare(Branchy(), torch.ones(2, 1, 8, 8), name="mypkg.models:branchy")
    assert "mypkg.models:branchy (Branchy)" in e.value.message
    assert "torch.export cannot capture" in e.value.message and "\n" not in e.value.message
    assert e.value.exit_code == EXIT_USAGE


def test_qat_epochs_below_one_is_a_config_error(tmp_path):
    from edgedistill.config import load_config

    p = tmp_path / "edgedistill.toml"
    p.write_text("[compress]\nqat_epochs = 0\n")
    with pytest.raises(ConfigError, match="compress.qat_epochs") as e:
        load_config(p)
    assert e.value.exit_code == EXIT_USAGE


def test_a_prequantized_source_is_only_exported_at_int8(tmp_path):
    from edgedistill.artifacts import Artifact
    from edgedistill.backends.common import prequantized

    source = Artifact(kind="onnx", path=tmp_path / "student.onnx", precision="int8",
                      meta={"quantized_by": "qat", "quantizer": "XNNPACKQuantizer"})
    assert prequantized("onnxruntime", source, "int8") == {"prequantized": True, "quantized_by": "qat",
                                                           "quantizer": "XNNPACKQuantizer"}
    with pytest.raises(UsageError, match="quantized already"):
        prequantized("onnxruntime", source, "fp32")
    assert prequantized("onnxruntime", Artifact(kind="onnx", path=source.path), "int8") is None
