"""benchmarks/openvino_agreement.py: parsing benchmark_app's output, and benchmark_app itself.

No timing assertions: the agreement figures live in the benchmark script, not here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "benchmark_app_output.txt"


def _load_script():
    spec = importlib.util.spec_from_file_location("openvino_agreement",
                                                  ROOT / "benchmarks" / "openvino_agreement.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


agreement = _load_script()


def test_parser_reads_a_real_output():
    # Captured from benchmark_app 2026.4 on the digits student (dynamic batch, -data_shape);
    # its average is under 1 ms, so latencies are printed in us.
    parsed = agreement.parse_benchmark_app(GOLDEN.read_text())
    assert parsed["read_ms"] == 4.68
    assert parsed["compile_ms"] == 23.35
    assert parsed["first_inference_ms"] == 5.82
    assert parsed["median_ms"] == pytest.approx(0.33577)
    assert parsed["average_ms"] == pytest.approx(0.34460)
    assert parsed["min_ms"] == pytest.approx(0.33301)
    assert parsed["max_ms"] == pytest.approx(0.48343)
    assert parsed["count"] == 5548
    assert parsed["duration_ms"] == 2000.30
    assert parsed["throughput_fps"] == 2773.58
    props = parsed["properties"]
    assert props["INFERENCE_PRECISION_HINT"] == "<Type: 'float32'>"
    assert props["INFERENCE_NUM_THREADS"] == "1"
    assert props["NUM_STREAMS"] == "1"
    assert props["ENABLE_CPU_PINNING"] == "True"
    assert "Model" not in props and "input (node" not in str(props)


def test_parser_reads_milliseconds():
    # The same lines as a slower model prints them (average of 1 ms or more: units are ms).
    text = """[ INFO ] Read model took 9.12 ms
[ INFO ] Compile model took 48.78 ms
[ INFO ] First inference took 18.12 ms
[ INFO ] Count:            1138 iterations
[ INFO ] Duration:         3001.12 ms
[ INFO ] Latency:
[ INFO ]    Median:        2.55 ms
[ INFO ]    Average:       2.63 ms
[ INFO ]    Min:           2.41 ms
[ INFO ]    Max:           6.02 ms
[ INFO ] Throughput:   379.19 FPS
"""
    parsed = agreement.parse_benchmark_app(text)
    assert (parsed["median_ms"], parsed["average_ms"], parsed["min_ms"], parsed["max_ms"]) == (
        2.55, 2.63, 2.41, 6.02)
    assert (parsed["read_ms"], parsed["compile_ms"], parsed["first_inference_ms"]) == (9.12, 48.78, 18.12)


def test_parser_refuses_an_output_without_a_median():
    failed = "[Step 1/11] Parsing and validating input arguments\n[ ERROR ] Model file does not exist\n"
    with pytest.raises(ValueError, match="no median latency.*Model file does not exist"):
        agreement.parse_benchmark_app(failed)


def test_command_keeps_a_dynamic_batch_and_runs_in_fp32(monkeypatch):
    monkeypatch.setattr(agreement, "benchmark_app_path", lambda: "benchmark_app")
    cmd = agreement.benchmark_app_command(Path("m.xml"), 2, 5, [1, 1, 32, 32])
    assert cmd[cmd.index("-data_shape") + 1] == "[1,1,32,32]"
    assert "-shape" not in cmd  # -shape would make the model static, unlike the harness's
    for flag, value in [("-hint", "none"), ("-nstreams", "1"), ("-nireq", "1"), ("-nthreads", "2"),
                        ("-api", "sync"), ("-t", "5"), ("-infer_precision", "f32")]:
        assert cmd[cmd.index(flag) + 1] == value
    assert "-data_shape" not in agreement.benchmark_app_command(Path("m.xml"), 1, 5, None)


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory):
    """A dynamic-batch conv + relu + global average IR built with OpenVINO's own ops."""
    ov = pytest.importorskip("openvino")
    import numpy as np
    import openvino.opset13 as ops

    x = ops.parameter([-1, 1, 8, 8], np.float32, name="input")
    weights = ops.constant(np.random.default_rng(0).standard_normal((4, 1, 3, 3)).astype(np.float32))
    conv = ops.convolution(x, weights, [1, 1], [1, 1], [1, 1], [1, 1])
    out = ops.reduce_mean(ops.relu(conv), ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
    xml = tmp_path_factory.mktemp("ir") / "tiny.xml"
    ov.save_model(ov.Model([out], [x], "tiny"), str(xml), compress_to_fp16=False)
    return xml


def test_benchmark_app_runs_and_its_output_parses(tiny_ir):
    try:
        agreement.benchmark_app_path()
    except SystemExit as e:
        pytest.skip(str(e))
    shape, dtype = agreement.ir_input(tiny_ir)
    assert (shape, dtype) == ([None, 1, 8, 8], "float32")
    cmd = agreement.benchmark_app_command(tiny_ir, 1, 1, agreement.batch_one_shape(shape, tiny_ir))
    parsed = agreement.run_benchmark_app(cmd, threads=1, timeout_s=60)
    for key in ("median_ms", "read_ms", "compile_ms", "first_inference_ms", "duration_ms"):
        assert parsed[key] > 0, key
    assert parsed["count"] > 0
    assert parsed["properties"]["INFERENCE_PRECISION_HINT"] == "<Type: 'float32'>"
    assert parsed["properties"]["INFERENCE_NUM_THREADS"] == "1"
