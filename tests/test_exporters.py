"""Exporters (torch -> ONNX / torch.export) and the ONNX external-data safety check."""

from __future__ import annotations

import os
import re

import numpy as np
import onnx
import pytest
import torch
from conftest import TinyNet
from onnx import helper

from edgedistill.backends.common import operator_from_message, staged_output
from edgedistill.errors import ExportError, UnsafeModelError, UsageError
from edgedistill.exporters import export_onnx, export_program
from edgedistill.onnx_files import check_onnx_external_data, has_external_data


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return TinyNet().eval(), torch.randn(1, 1, 32, 32)


@pytest.fixture(scope="module")
def onnx_artifact(tiny, tmp_path_factory):
    model, example = tiny
    return export_onnx(model, example, tmp_path_factory.mktemp("onnx") / "student.onnx")


def test_onnx_export_runs_in_onnxruntime_like_torch(tiny, onnx_artifact):
    import onnxruntime as ort

    model, _ = tiny
    assert onnx_artifact.kind == "onnx" and onnx_artifact.files() == [onnx_artifact.path]
    assert onnx_artifact.meta["exporter"] == "torch.onnx dynamo"
    assert onnx_artifact.meta["input_shape"] == [None, 1, 32, 32]
    session = ort.InferenceSession(str(onnx_artifact.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["output"]
    x = torch.randn(5, 1, 32, 32)  # a batch: the batch axis is dynamic
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4
    assert not [p for p in onnx_artifact.path.parent.iterdir() if p.name.startswith(".")]


def test_export_program_is_loadable(tiny, tmp_path):
    model, example = tiny
    artifact = export_program(model, example, tmp_path / "student.pt2", dynamic_batch=False)
    assert artifact.kind == "exported_program" and artifact.meta["input_shape"] == [1, 1, 32, 32]
    program = torch.export.load(str(artifact.path))
    with torch.no_grad():
        assert torch.allclose(program.module()(example), model(example))


def test_unsupported_operator_names_exporter_opset_operator_and_leaves_nothing(tmp_path):
    """RELIABILITY 9: an operator torch.onnx cannot export: ExportError naming the exporter, opset and
    operator; no fallback to another exporter, nothing written."""
    @torch.library.custom_op("edgedistill_test::mystery", mutates_args=())
    def mystery(x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    mystery.register_fake(lambda x: torch.empty_like(x))

    class Uses(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return mystery(x) + 1

    with pytest.raises(ExportError) as err:
        export_onnx(Uses(), torch.randn(1, 3), tmp_path / "bad.onnx", opset=18)
    message = str(err.value)
    assert "torch.onnx dynamo" in message and "opset 18" in message
    assert "edgedistill_test.mystery" in message
    assert "\n" not in err.value.message
    assert list(tmp_path.iterdir()) == []


def test_model_that_fixes_its_batch_is_refused_not_silently_made_static(tmp_path):
    class FixedBatch(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(1, 12)

    with pytest.raises(ExportError, match="batch axis static") as err:
        export_onnx(FixedBatch(), torch.randn(1, 3, 4), tmp_path / "fixed.onnx")
    assert "dynamic_batch=False" in str(err.value) and list(tmp_path.iterdir()) == []


def test_operator_from_message_formats():
    assert operator_from_message("No ONNX function found for <OpOverload(op='aten.foo', "
                                 "overload='default')>") == "aten.foo.default"
    assert operator_from_message("Could not run 'aten::bar' with arguments") == "aten::bar"
    assert operator_from_message("shapes do not match") is None


def test_staged_output_keeps_old_file_on_failure(tmp_path):
    final = tmp_path / "m.onnx"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError), staged_output(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("exporter crashed")
    assert final.read_bytes() == b"old" and list(tmp_path.iterdir()) == [final]


# ---------------------------------------------------------------- external data


def _external_data_model(folder, location: str = "w.data"):
    """A one-Add model whose weight lives in `folder/w.data`, then pointed at `location`."""
    values = np.arange(4, dtype=np.float32).tobytes()
    weight = helper.make_tensor("w", onnx.TensorProto.FLOAT, [4], values, raw=True)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])], [weight],
    )
    path = folder / "m.onnx"
    onnx.save(helper.make_model(graph), str(path), save_as_external_data=True,
              location="w.data", size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    path.write_bytes(model.SerializeToString())
    return path


def test_external_data_inside_folder_is_accepted(tmp_path):
    path = _external_data_model(tmp_path)
    assert has_external_data(check_onnx_external_data(path))
    (tmp_path / "sub").mkdir()
    check_onnx_external_data(_external_data_model(tmp_path, "sub/../w.data"))


@pytest.mark.parametrize("location", ["../x", "../../etc/hostname", "/etc/hostname"])
def test_external_data_escaping_the_folder_is_refused(tmp_path, location):
    """RELIABILITY 4: `../x`, `../../etc/hostname`, `/etc/hostname` are refused (exit 6)."""
    folder = tmp_path / "model"
    folder.mkdir()
    with pytest.raises(UnsafeModelError, match="refused") as err:
        check_onnx_external_data(_external_data_model(folder, location))
    assert err.value.exit_code == 6 and location in str(err.value)


def test_external_data_symlink_out_of_the_folder_is_refused(tmp_path):
    """RELIABILITY 4: a symlink out of the model's folder is refused (exit 6)."""
    folder = tmp_path / "model"
    folder.mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(b"\0" * 16)
    os.symlink(secret, folder / "link.data")
    with pytest.raises(UnsafeModelError, match="symlink"):
        check_onnx_external_data(_external_data_model(folder, "link.data"))


def test_truncated_onnx_is_a_usage_error_naming_the_format(onnx_artifact, tmp_path):
    """RELIABILITY 5 (ONNX): a truncated file is exit 2 naming the format."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(onnx_artifact.path.read_bytes()[:-200])
    with pytest.raises(UsageError, match="ONNX"):
        check_onnx_external_data(broken)


def test_reliability_10_export_that_differs_from_pytorch_beyond_tolerance_is_refused(tiny, onnx_artifact, tmp_path):
    """RELIABILITY 10: an artifact whose outputs differ from PyTorch (here: PyTorch's weights moved
    after the export) fails verification naming its max abs diff and the limit, so the export
    stage stops (exit 2) and nothing is benchmarked. The same artifact against its own PyTorch
    outputs passes."""
    from edgedistill.api import _verify
    from edgedistill.backends.base import get_backend
    from edgedistill.config import Config
    from edgedistill.errors import VerificationError

    model, _ = tiny
    art = get_backend("onnxruntime").export(onnx_artifact, tmp_path / "ort", precision="fp32", calibration=None)
    x = torch.randn(40, 1, 32, 32)
    np.save(tmp_path / "inputs.npy", x.numpy())
    with torch.no_grad():
        same = model(x).numpy()
        moved = torch.nn.Linear(8, 10)  # another head: what PyTorch says no longer matches the file
        torch.manual_seed(1)
        moved.reset_parameters()
        other = moved(model.pool(torch.relu(model.conv(x))).flatten(1)).numpy()
    report = _verify(art, tmp_path / "inputs.npy", same, Config(), tmp_path)
    assert report["max_abs"] < 1e-4 and report["top1_agreement"] == 1.0
    with pytest.raises(VerificationError) as err:
        _verify(art, tmp_path / "inputs.npy", other, Config(), tmp_path)
    assert err.value.exit_code == 2
    assert "differs from PyTorch on 40 held-out inputs" in err.value.message
    assert re.search(r"max abs diff [0-9.e+-]+ > 0\.001$", err.value.message), err.value.message


def test_reliability_10_unverified_export_is_measured_only_when_allowed(tmp_path):
    """RELIABILITY 10: past its tolerances an export stops the run (exit 2, nothing benchmarked);
    with [export] allow_unverified it is kept, marked unverified with its problems, and the
    results of `bench` carry that verification record."""
    import json

    from conftest import run_cli

    target = tmp_path / "t.toml"
    target.write_text('backends = ["onnxruntime"]\n[measurement]\nwarmup_iterations = 1\n'
                      'min_iterations = 20\nmin_duration_s = 0.0\ncold_runs = 1\nmeasure_cache = false\n'
                      'max_load_per_core = 100.0\n')
    config = tmp_path / "edgedistill.toml"
    body = '[distill]\nepochs = 1\n[export]\nbackends = ["onnxruntime"]\nfp32_max_abs = 1e-30\n' \
           'benchmark_teacher = false\n[bench]\ntargets = ["t.toml"]\n'
    config.write_text(body)
    refused = run_cli(["bench"], cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "differs from PyTorch" in refused.stderr and "allow_unverified" in refused.stderr
    # bench marks its results file incomplete before any stage runs: nothing was measured or passed
    left = json.loads((tmp_path / "runs/default/results.json").read_text())
    assert left["complete"] is False and left["verdict"] is None and left["targets"] == []
    config.write_text(body.replace("benchmark_teacher", "allow_unverified = true\nbenchmark_teacher"))
    allowed = run_cli(["bench"], cwd=tmp_path)
    assert "UNVERIFIED student-fp32-onnxruntime" in allowed.stderr, allowed.stderr[-2000:]
    results = json.loads((tmp_path / "runs/default/results.json").read_text())
    rows = {r["artifact"]: r for r in results["targets"][0]["results"]}
    fp32 = rows["student-fp32-onnxruntime"]["verification"]
    assert fp32["verified"] is False and "max abs diff" in fp32["problems"][0]
    assert rows["student-int8-onnxruntime"]["verification"]["verified"] is True  # int8 has no max-abs bound
