"""Backend exports against the real runtimes, run through the probe's runtimes module.

Exports are shared per module (ExecuTorch lowering takes seconds); every case is small.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import TinyNet, structured_images
from onnx import helper

from edgedistill.artifacts import Artifact
from edgedistill.backends import base
from edgedistill.errors import ExportError, UsageError
from edgedistill.exporters import export_onnx, export_program
from edgedistill.probe import runtimes

RUNTIME_MODULES = {"onnxruntime", "openvino", "executorch", "tensorrt", "torch", "onnx", "nncf",
                   "torchao", "numpy", "ai_edge_litert", "litert_torch", "ai_edge_quantizer", "jax"}
CASES = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
         ("openvino", "fp16"), ("openvino", "int8"), ("executorch", "fp32"), ("executorch", "int8")]
MAX_ABS = {"fp32": 1e-3, "fp16": 2e-2}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="module")
def sources(model, tmp_path_factory) -> dict[str, Artifact]:
    folder = tmp_path_factory.mktemp("sources")
    example = torch.from_numpy(structured_images(1, seed=1))
    return {
        "onnx": export_onnx(model, example, folder / "student.onnx"),
        # ExecuTorch's Python runtime runs a static batch of 1.
        "exported_program": export_program(model, example, folder / "student.pt2",
                                           dynamic_batch=False),
    }


@pytest.fixture(scope="module")
def export_case(sources, tmp_path_factory):
    """Export (backend, precision) once per module; later calls return the same artifact."""
    out_dir = tmp_path_factory.mktemp("artifacts")
    calibration = structured_images(32, seed=2)
    done: dict[tuple[str, str], Artifact] = {}

    def get(backend: str, precision: str) -> Artifact:
        if (backend, precision) not in done:
            module = base.get_backend(backend)
            source = sources[module.ACCEPTS[0]]
            done[backend, precision] = module.export(source, out_dir, precision=precision,
                                                     calibration=calibration)
        return done[backend, precision]

    return get


def _run_all(session: runtimes.Session, x: np.ndarray) -> np.ndarray:
    (spec,) = session.inputs
    if spec["shape"][0] is None:
        return session.run({spec["name"]: x})
    return np.concatenate([session.run({spec["name"]: x[i : i + 1]}) for i in range(len(x))])


@pytest.mark.parametrize(("backend", "precision"), CASES)
def test_export_runs_through_the_probe_like_torch(backend, precision, export_case, model):
    artifact = export_case(backend, precision)
    assert artifact.backend == backend and artifact.precision == precision
    assert artifact.role == "student" and all(p.is_file() for p in artifact.files())
    assert not [p for p in artifact.path.parent.iterdir() if p.name.startswith(".")]
    session = runtimes.load(backend, str(artifact.path), threads=1)
    x = structured_images(64, seed=3)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = _run_all(session, x)
    assert got.shape == expected.shape
    if precision in MAX_ABS:
        assert np.abs(got - expected).max() < MAX_ABS[precision]
        return
    agreement = (got.argmax(1) == expected.argmax(1)).mean()
    assert agreement >= 0.8, f"int8 top-1 agreement {agreement:.2f}"
    assert 0.8 < got.std() / expected.std() < 1.25  # same scale: not zeros, not saturated
    assert np.abs(got - expected).max() < 0.25 * np.ptp(expected)
    assert artifact.meta["calibration_samples"] == 32


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "executorch"])
def test_describe_reports_cpu_and_threads(backend, export_case):
    session = runtimes.load(backend, str(export_case(backend, "fp32").path), threads=1)
    info = session.describe()
    assert info["device"] == "CPU" and info["threads"] == 1
    if backend == "onnxruntime":
        assert info["providers"] == ["CPUExecutionProvider"]
    if backend == "openvino":
        assert info["execution_devices"] == ["CPU"]
        assert set(info["load_parts_ms"]) == {"read_ms", "compile_ms"}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "executorch"])
def test_wrong_input_shape_names_both_shapes(backend, export_case):
    session = runtimes.load(backend, str(export_case(backend, "fp32").path), threads=1)
    name = session.inputs[0]["name"]
    with pytest.raises(ValueError, match=r"expected shape \[.*1, 32, 32\].*got shape \[1, 1, 28, 28\]"):
        session.run({name: np.zeros((1, 1, 28, 28), np.float32)})
    with pytest.raises(ValueError, match="dtype float32.*dtype float64"):
        session.run({name: np.zeros((1, 1, 32, 32), np.float64)})
    with pytest.raises(ValueError, match=r"missing \[.*\], unexpected \['other'\]"):
        session.run({"other": np.zeros((1, 1, 32, 32), np.float32)})


def test_unsupported_precision_names_the_supported_ones(sources, tmp_path):
    with pytest.raises(UsageError, match="supported: fp32, int8"):
        base.get_backend("onnxruntime").export(sources["onnx"], tmp_path, precision="fp16",
                                               calibration=None)
    with pytest.raises(UsageError, match="exports from exported_program"):
        base.get_backend("executorch").export(sources["onnx"], tmp_path, precision="fp32",
                                              calibration=None)
    assert list(tmp_path.iterdir()) == []


def test_int8_calibration_is_checked_before_any_work(sources, tmp_path):
    ort_backend = base.get_backend("onnxruntime")
    with pytest.raises(UsageError, match="needs calibration data"):
        ort_backend.export(sources["onnx"], tmp_path, precision="int8", calibration=None)
    with pytest.raises(UsageError, match=r"expected shape \['N', 1, 32, 32\], got \[4, 3, 32, 32\]"):
        ort_backend.export(sources["onnx"], tmp_path, precision="int8",
                           calibration=np.zeros((4, 3, 32, 32), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_openvino_names_the_operator_it_cannot_convert(tmp_path):
    """RELIABILITY 9: an operator OpenVINO cannot convert: ExportError naming the backend and the operator;
    nothing written."""
    graph = helper.make_graph(
        [helper.make_node("Weird", ["x"], ["y"], domain="mylib")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "weird.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("mylib", 1)]), str(path))
    with pytest.raises(ExportError, match="openvino.*mylib.Weird"):
        base.get_backend("openvino").export(Artifact("onnx", path), tmp_path / "out",
                                            precision="fp32", calibration=None)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_onnxruntime_int8_failure_leaves_nothing_in_the_current_folder(tmp_path, monkeypatch):
    """RELIABILITY 9: onnxruntime's shape inference cannot type an unknown operator; the error
    names the backend, and the half-inferred model it dumps into the current folder is removed."""
    graph = helper.make_graph(
        [helper.make_node("Weird", ["x"], ["y"], domain="mylib")], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])],
    )
    path = tmp_path / "weird.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("mylib", 1)]), str(path))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(ExportError, match="onnxruntime int8 quantization failed"):
        base.get_backend("onnxruntime").export(Artifact("onnx", path), tmp_path / "out", precision="int8",
                                               calibration=np.zeros((4, 3), np.float32))
    assert list(cwd.iterdir()) == []


def test_importing_backends_and_probe_imports_no_runtime():
    code = (
        "import sys, edgedistill.backends.openvino, edgedistill.backends.onnxruntime, "
        "edgedistill.backends.executorch, edgedistill.backends.tensorrt, edgedistill.backends.litert, "
        "edgedistill.probe.runtimes, edgedistill.exporters; "
        f"loaded = {sorted(RUNTIME_MODULES - {'numpy'})!r}; "
        "print(sorted(set(loaded) & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_probe_runtimes_runs_without_edgedistill(tmp_path):
    """The probe file is copied to devices alone: it must import with the stdlib and numpy."""
    shutil.copy(Path(runtimes.__file__), tmp_path / "runtimes.py")
    code = ("import sys; sys.path.insert(0, '.'); import runtimes; "
            f"print(sorted(set({sorted(RUNTIME_MODULES - {'numpy'})!r}) & set(sys.modules)), "
            "'edgedistill' in sys.modules, runtimes.RUNTIME_MODULE['executorch'])")
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=False,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "False", "executorch.runtime"]


def test_backend_modules_declare_the_protocol():
    for name in base.BACKENDS:
        module = base.get_backend(name)
        assert module.NAME == name and module.ACCEPTS and module.PRECISIONS
        assert isinstance(module.availability(), base.Availability)


def test_tensorrt_unavailable_says_why_and_how():
    if base.get_backend("tensorrt").availability().ok:
        pytest.skip("tensorrt is usable here")
    reason = base.get_backend("tensorrt").availability().reason
    if importlib.util.find_spec("tensorrt") is None:
        assert "not installed" in reason and "NVIDIA's index" in reason and "JetPack" in reason


def test_tensorrt_engine_builds_and_matches_torch(sources, tmp_path, model):
    pytest.importorskip("tensorrt", reason="tensorrt not installed")
    backend = base.get_backend("tensorrt")
    if not backend.availability().ok:
        pytest.skip(backend.availability().reason)
    artifact = backend.export(sources["onnx"], tmp_path, precision="fp32", calibration=None)
    assert artifact.kind == "tensorrt_plan" and (tmp_path / "tensorrt.timing.cache").is_file()
    session = runtimes.load("tensorrt", str(artifact.path), threads=1, device="CUDA")
    x = structured_images(8, seed=4)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(session.run({session.inputs[0]["name"]: x}) - expected).max() < 1e-3
