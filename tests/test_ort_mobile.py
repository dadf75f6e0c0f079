"""The ort-mobile backend (issue 13 item 3): the ONNX model converted to .ort by onnxruntime's own
converter for the target's platform, run by the probe's ONNX Runtime session, verified like every
artifact, one per platform in the export stage, and `bench model.ort` end to end. A tiny model is
converted directly; no pipeline run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill import api
from edgedistill.artifacts import Artifact
from edgedistill.backends import base, ort_mobile
from edgedistill.config import Config, TargetConfig
from edgedistill.errors import ExportError, UsageError
from edgedistill.probe import runtimes
from tests.conftest import TinyNet, run_cli

SHAPE = (1, 1, 12, 12)
PLATFORMS = ("arm", "amd64")


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


def tiny_onnx(net: torch.nn.Module, path: Path) -> Path:
    """TinyNet's graph written with onnx.helper from its weights (Conv, Relu, GlobalAveragePool,
    Flatten, Gemm; a dynamic batch axis): what torch.onnx would write, without its seconds of
    start-up, which the backend does not depend on."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    nodes = [helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "head.weight", "head.bias"], ["output"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              ["batch", *SHAPE[1:]])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
                              [numpy_helper.from_array(v, k) for k, v in w.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def onnx_source(net, tmp_path_factory) -> Artifact:
    return Artifact("onnx", tiny_onnx(net, tmp_path_factory.mktemp("src") / "student.onnx"))


@pytest.fixture(scope="module")
def exported(onnx_source, tmp_path_factory):
    """(precision, platform) -> Artifact, each exported once, all into one folder."""
    out = tmp_path_factory.mktemp("ort")
    done: dict[tuple[str, str], Artifact] = {}

    def get(precision: str, platform: str) -> Artifact:
        if (precision, platform) not in done:
            done[precision, platform] = ort_mobile.export(onnx_source, out, precision=precision,
                                                          calibration=_images(32, 2), target_platform=platform)
        return done[precision, platform]

    get.folder = out
    return get


def _outputs(backend: str, path: Path, x: np.ndarray) -> np.ndarray:
    session = runtimes.load(backend, str(path), threads=1)
    return np.concatenate([session.run({"input": x[i:i + 1]}) for i in range(len(x))])


def test_fp32_ort_runs_in_the_probe_session_and_matches_the_onnx(exported, onnx_source, net):
    art = exported("fp32", "amd64")
    assert art.kind == "ort" and art.backend == "ort-mobile" and art.path.suffix == ".ort"
    assert art.name == "student-fp32-ort-mobile-amd64" and art.variant == "amd64"
    x = _images(16, 3)
    got = _outputs("ort-mobile", art.path, x)
    ref = _outputs("onnxruntime", onnx_source.path, x)
    with torch.no_grad():
        torch_out = net(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() < 1e-4 and np.abs(got - torch_out).max() < 1e-3
    assert runtimes.load("ort-mobile", str(art.path), threads=1).describe()["providers"] == ["CPUExecutionProvider"]
    import onnxruntime

    assert art.meta["converter"] == ort_mobile.CONVERTER and art.meta["onnxruntime"] == onnxruntime.__version__
    assert art.meta["optimization_style"] == "Fixed" and art.meta["target_platform"] == "amd64"
    assert art.meta["source_onnx"] == str(onnx_source.path)
    # The operators a reduced ONNX Runtime build needs: kept beside the .ort and named in meta.
    config = Path(art.meta["required_operators_config"])
    assert config == art.path.with_name("student-fp32-ort-mobile-amd64.required_operators.config")
    assert "Conv" in config.read_text()
    assert api._build_files(art) == [config] and art.files() == [art.path]


def test_int8_is_the_onnxruntime_qdq_model_converted(exported):
    fp32, int8 = exported("fp32", "amd64"), exported("int8", "amd64")
    assert int8.meta["quantizer"] == "onnxruntime.quantization.quantize_static" and int8.meta["format"] == "QDQ"
    assert int8.meta["calibration_samples"] == 32 and int8.meta["target_platform"] == "amd64"
    x = _images(64, 4)
    got, ref = _outputs("ort-mobile", int8.path, x), _outputs("ort-mobile", fp32.path, x)
    assert np.abs(got - ref).max() > 0  # quantized, not the fp32 graph again
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9


def test_each_platform_has_its_own_files_and_nothing_else_is_left(exported):
    amd64, arm = exported("fp32", "amd64"), exported("fp32", "arm")
    exported("int8", "amd64")
    assert arm.meta["target_platform"] == "arm" and arm.path.name == "student-fp32-ort-mobile-arm.ort"
    assert amd64.name != arm.name and amd64.path != arm.path
    # The arm file still loads here (its optimizations are the arm ones, not NCHWc).
    assert _outputs("ort-mobile", arm.path, _images(2, 5)).shape == (2, 10)
    left = sorted(p.name for p in exported.folder.iterdir())
    expected = {f"student-{p}-ort-mobile-{plat}{suffix}" for p, plat in (("fp32", "amd64"), ("fp32", "arm"),
                                                                         ("int8", "amd64"))
                for suffix in (".ort", ".required_operators.config")}
    assert set(left) == expected  # no staging folders, no QDQ intermediate, no optimizer dumps


def test_the_platform_comes_from_the_target_profile():
    here = ort_mobile.this_machine()
    assert here == {"x86_64": "amd64", "aarch64": "arm"}.get(__import__("platform").machine())
    local = TargetConfig(name="local", backends=["ort-mobile"])
    phone = TargetConfig(name="phone", runner="adb", adb={"serial": "X"}, backends=["ort-mobile"])
    pinned = TargetConfig(name="pinned", ort_target_platform="arm", backends=["ort-mobile"])
    assert [ort_mobile.target_platform(t) for t in (local, phone, pinned)] == [here, "arm", "arm"]
    # One .ort per platform the targets need; targets that do not bench ort-mobile need none.
    other = TargetConfig(name="other", ort_target_platform="arm", backends=["onnxruntime"])
    assert api.ort_platforms([local, phone, pinned]) == sorted({here, "arm"})
    assert api.ort_platforms([other]) == [here]
    elsewhere = "arm" if here == "amd64" else "amd64"
    ort = {plat: Artifact("ort", Path(f"{plat}.ort"), backend="ort-mobile", variant=plat) for plat in PLATFORMS}
    # Each target benches the .ort built for its platform, never another's as if it were its own.
    assert api.for_target(ort[here], local) and not api.for_target(ort[elsewhere], local)
    assert api.for_target(ort["arm"], phone) and not api.for_target(ort["amd64"], phone)
    assert not api.for_target(ort["arm"], other)  # a backend the target does not list


def test_the_platform_is_in_the_export_stage_key_and_bad_values_are_config_errors(tmp_path):
    cfg = Config.model_validate({"export": {"backends": ["ort-mobile"]}})
    plan = api._plan(cfg, {})
    assert api.export_key(cfg, "d", plan, ["amd64"]) != api.export_key(cfg, "d", plan, ["arm"])
    assert api.export_key(cfg, "d", plan, ["amd64"]) == api.export_key(cfg, "d", plan, ["amd64"])
    from edgedistill.config import load_target
    from edgedistill.errors import ConfigError

    path = tmp_path / "bad.toml"
    path.write_text('backends = ["ort-mobile"]\nort_target_platform = "x86"\n')
    with pytest.raises(ConfigError, match="ort_target_platform"):
        load_target(path)


def test_wrong_request_and_converter_failure_are_one_line_and_leave_nothing(onnx_source, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    with pytest.raises(UsageError, match="target platform 'mips'"):
        ort_mobile.export(onnx_source, tmp_path, precision="fp32", calibration=None, target_platform="mips")
    with pytest.raises(UsageError, match="does not support precision 'fp16'"):
        ort_mobile.export(onnx_source, tmp_path, precision="fp16", calibration=None)
    # An operator no ONNX Runtime kernel implements: the converter's session creation fails.
    node = helper.make_node("Weird", ["input"], ["output"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    out = tmp_path / "out"
    with pytest.raises(ExportError) as e:
        ort_mobile.export(Artifact("onnx", bad), out, precision="fp32", calibration=None, target_platform="arm")
    assert ort_mobile.CONVERTER in e.value.message and "Weird" in e.value.message
    assert "\n" not in e.value.message
    assert not out.exists() or list(out.iterdir()) == []


def test_backend_is_registered_core_and_imports_no_runtime():
    assert base.BACKENDS["ort-mobile"] == ("edgedistill.backends.ort_mobile", None)
    assert ort_mobile.availability().ok
    code = ("import sys, edgedistill.backends.ort_mobile, edgedistill.backends.coreml; "
            "print(sorted(m for m in ('onnxruntime', 'coremltools', 'torch', 'onnx') if m in sys.modules))")
    import subprocess

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parent.parent)
    assert done.stdout.strip() == "[]"


_TARGET = """name = "tiny"
threads = 1
[measurement]
warmup_iterations = 2
min_iterations = 120
min_duration_s = 0.05
max_duration_s = 3.0
cold_runs = 1
measure_cache = false
max_load_per_core = 1000.0
max_others_cpu_share = 1.0
"""


@pytest.mark.parametrize("with_data", [False, True])
def test_bench_model_ort_end_to_end(with_data, exported, net, cli_env, tmp_path):
    """`edgedistill bench model.ort` through the real CLI and probe processes, with and without
    --data; --backend ort-mobile names it for that backend's budgets."""
    art = exported("fp32", "amd64")
    target = tmp_path / "tiny.toml"
    target.write_text(_TARGET)
    out = tmp_path / "results.json"
    args = ["bench", art.path, "--target", target, "-o", out]
    if with_data:
        x = _images(24, 6)
        with torch.no_grad():
            y = net(torch.from_numpy(x)).numpy().argmax(1)
        y[:6] = (y[:6] + 1) % 10  # 6 of 24 wrong: top-1 must be 0.75
        np.savez(tmp_path / "data.npz", x=x, y=y)
        args += ["--data", tmp_path / "data.npz", "--backend", "ort-mobile"]
    done = run_cli(args, cwd=tmp_path, env=cli_env, timeout=300)
    assert done.returncode == 0, done.stderr
    [r] = json.loads(out.read_text())["targets"][0]["results"]
    assert r["status"] == "ok" and r["backend"] == ("ort-mobile" if with_data else "onnxruntime")
    assert [Path(f["path"]).name for f in r["files"]] == [art.path.name]
    # Session creation is a cold-start part of its own (compile_ms), filled for an .ort too.
    assert r["cold"]["compile_ms"]["median"] > 0 and r["cold"]["first_inference_ms"]["median"] > 0
    if with_data:
        assert r["accuracy"]["top1"] == pytest.approx(0.75)
    else:
        assert r["accuracy"]["measured"] is False


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_verified_against_pytorch_like_every_artifact(precision, exported, net, tmp_path):
    """The export stage's check, in a fresh probe process: fp32 max abs, int8 top-1 agreement."""
    x = _images(48, 7)
    np.save(tmp_path / "inputs.npy", x)
    with torch.no_grad():
        reference = net(torch.from_numpy(x)).numpy()
    report = api._verify(exported(precision, "amd64"), tmp_path / "inputs.npy", reference, Config(), tmp_path)
    assert report["verified"] is True and report["samples"] == 48
    if precision == "fp32":
        assert report["max_abs"] <= Config().export.fp32_max_abs
    else:
        assert report["max_abs"] > 0 and report["top1_agreement"] >= Config().export.min_top1_agreement["int8"]
