"""INT8 accuracy check and fallbacks (issue 14 item 2) and calibration of the wrong shape (item 6).

The model: an MLP on the digits, its readout fitted by ridge regression, whose first hidden
layer has one channel that fires with a huge value (500, the rest stay below ~3) on ONE of the
128 calibration samples and feeds nothing downstream. ONNX Runtime's min/max calibration spends
the 8 bits of that activation on the outlier and the rest round to zero: its default INT8 loses
most of its top-1. NNCF's default loses as much (its activation ranges already average the
samples' maxima, so the loss is elsewhere in the first two layers; accuracy control finds them).
Each fallback then has something real to recover.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from edgedistill.artifacts import Artifact
from edgedistill.backends import base
from edgedistill.compress.accuracy import AccuracyCheck, artifact_outputs
from edgedistill.compress.trials import Trials
from edgedistill.errors import EXIT_USAGE, UsageError


@pytest.fixture(scope="module")
def outlier_mlp(tmp_path_factory):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], digits.target[order]
    calibration, val, y_val = x[:128], x[1000:1250], y[1000:1250]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 2048), nn.ReLU(), nn.Linear(2048, 64), nn.ReLU(),
                          nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    # The pixel whose largest calibration value stands alone: the outlier fires only there.
    ranked = np.sort(calibration, 0)
    pixel = int(np.argmax(ranked[-1] - ranked[-2]))
    threshold = float(ranked[-1, pixel] + ranked[-2, pixel]) / 2
    gain = 500.0 / float(ranked[-1, pixel] - threshold)
    with torch.no_grad():
        model[0].weight[0] = 0
        model[0].weight[0, pixel] = gain
        model[0].bias[0] = -gain * threshold
        model[2].weight[:, 0] = 0  # the outlier channel changes no output
        for i in (4, 6):  # identity layers: depth that quantizes well
            model[i].weight.copy_(torch.eye(64))
            model[i].bias.zero_()
        hidden = model[:8](torch.from_numpy(x[:1000])).numpy()
        features = np.c_[hidden, np.ones(len(hidden))]
        readout = np.linalg.solve(features.T @ features + 1e-2 * np.eye(features.shape[1]),
                                  features.T @ np.eye(10)[y[:1000]])
        model[8].weight.copy_(torch.from_numpy(readout[:-1].T.astype(np.float32)))
        model[8].bias.copy_(torch.from_numpy(readout[-1].astype(np.float32)))
        reference = model(torch.from_numpy(val)).numpy()
    assert (calibration[:, pixel] > threshold).sum() == 1
    path = tmp_path_factory.mktemp("outlier") / "student.onnx"
    torch.onnx.export(model, (torch.from_numpy(x[:1]),), str(path), input_names=["x"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False)
    return SimpleNamespace(source=Artifact("onnx", path), calibration=calibration, val=val, y_val=y_val,
                           reference=reference)


def check(mlp, fallbacks, max_drop_pt=1.0) -> AccuracyCheck:
    return AccuracyCheck(mlp.val, mlp.y_val, mlp.reference, max_drop_pt, fallbacks=fallbacks)


def recomputed_drop(accuracy: AccuracyCheck, artifact: Artifact) -> float:
    """The drop of the artifact as written, run by the runtime's own Python API."""
    if artifact.backend == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(artifact.path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outputs = np.concatenate([compiled(x[None])[compiled.outputs[0]] for x in accuracy.inputs])
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
        outputs = session.run(None, {"x": accuracy.inputs})[0]
    return accuracy.drop_pt(outputs)


# ---------------------------------------------------------------- AccuracyCheck


def test_accuracy_check_scores_top1_against_labels_or_the_reference():
    reference = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]  # argmax 0 1 2 3 0
    labels = np.array([0, 1, 2, 0, -1])  # the reference is right on 3 of the 4 labelled rows
    acc = AccuracyCheck(np.zeros((5, 2), np.float32), labels, reference, max_drop_pt=25)
    assert acc.reference_score == pytest.approx(75.0)
    worse = np.eye(4, dtype=np.float32)[[0, 1, 3, 3, 2]]  # right on 2 of 4 labelled rows
    assert acc.score(worse) == pytest.approx(50.0)
    assert acc.drop_pt(worse) == pytest.approx(25.0) and acc.meets(worse)
    assert not AccuracyCheck(acc.inputs, labels, reference, max_drop_pt=24.9).meets(worse)
    assert acc.drop_pt(np.eye(4, dtype=np.float32)[[0, 1, 2, 0, 1]]) == pytest.approx(-25.0)  # better than fp32
    # No labels (all < 0, or None): agreement with the reference's argmax, the reference scores 100.
    for unlabelled in (None, np.full(5, -1)):
        agreement = AccuracyCheck(acc.inputs, unlabelled, reference, max_drop_pt=1)
        assert agreement.labels is None and agreement.reference_score == 100.0
        assert agreement.drop_pt(worse) == pytest.approx(40.0)
    with pytest.raises(ValueError, match="reference has 4 rows for 5 inputs"):
        AccuracyCheck(acc.inputs, None, reference[:4], 1)


def test_accuracy_check_for_student_runs_the_torch_student_on_the_validation_split():
    torch.manual_seed(0)
    student = nn.Linear(6, 3)
    x_val = torch.randn(20, 6)
    splits = SimpleNamespace(x_val=x_val, y_val=torch.tensor([0, 1, 2, -1] * 5), x_test=torch.randn(7, 6))
    acc = AccuracyCheck.for_student(student, splits, 0.5, fallbacks=["percentile"])
    with torch.no_grad():
        expected = student(x_val).numpy()
    np.testing.assert_allclose(acc.reference, expected, rtol=1e-6)
    labelled = np.arange(20) % 4 != 3  # -1 every fourth row: left out of the score
    assert acc.reference_score == pytest.approx(100 * np.mean(expected.argmax(1)[labelled] == np.tile([0, 1, 2], 5)))
    assert acc.fallbacks == ("percentile",) and acc.max_drop_pt == 0.5


def test_trials_never_choose_a_disqualified_candidate(outlier_mlp, tmp_path):
    """A candidate that is not what was asked for (OpenVINO's accuracy control reverting most
    layers to float) is measured and recorded, but the best eligible one is kept."""
    acc = check(outlier_mlp, [])
    onnx_int8 = base.get_backend("onnxruntime").export(outlier_mlp.source, tmp_path, precision="int8",
                                                       calibration=outlier_mlp.calibration)
    trials = Trials(acc, "onnxruntime")
    trials.measure("default", onnx_int8.path)
    trials.measure("float", outlier_mlp.source.path)  # the fp32 model: drop 0
    assert trials.best.method == "float" and trials.met
    trials.disqualify("not an INT8 model")
    assert trials.best.method == "default" and not trials.met
    assert trials.tried[1] == {**trials.tried[1], "met": False, "eligible": False, "drop_pt": 0.0}


# ---------------------------------------------------------------- ONNX Runtime


def int8_with_fallbacks(outlier_mlp, tmp_path, backend, fallbacks):
    """The backend's INT8 export of the outlier MLP with these fallbacks: (check, artifact, its
    quantization record, that record's tries by method)."""
    acc = check(outlier_mlp, fallbacks)
    art = base.get_backend(backend).export(outlier_mlp.source, tmp_path, precision="int8",
                                           calibration=outlier_mlp.calibration, accuracy=acc)
    q = art.meta["quantization"]
    return acc, art, q, {t["method"]: t for t in q["tried"]}


def test_onnxruntime_default_misses_entropy_is_measured_percentile_meets(outlier_mlp, tmp_path):
    acc, art, q, tried = int8_with_fallbacks(outlier_mlp, tmp_path, "onnxruntime", ["entropy", "percentile", "float_nodes"])
    assert list(tried) == ["default", "entropy", "percentile"]  # stops at the first that meets
    assert tried["default"]["drop_pt"] > 50 and not tried["default"]["met"]
    # onnxruntime's entropy calibration (128 bins) can clip at most half a range: not enough here.
    assert tried["entropy"]["drop_pt"] > 50
    assert q["method"] == "percentile" and q["met"] and tried["percentile"]["drop_pt"] <= 1.0
    assert art.meta["calibrate_method"] == "Percentile" and q["split"] == "validation"
    assert recomputed_drop(acc, art) == pytest.approx(q["drop_pt"], abs=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [art.path.name]


def test_onnxruntime_float_nodes_keeps_the_outlier_activation_in_float(outlier_mlp, tmp_path):
    import onnx

    acc = check(outlier_mlp, ["float_nodes"])
    art = base.get_backend("onnxruntime").export(outlier_mlp.source, tmp_path, precision="int8",
                                                 calibration=outlier_mlp.calibration, accuracy=acc)
    q = art.meta["quantization"]
    assert q["method"] == "float_nodes" and q["met"], q
    # Ranked by measurement: the hidden activation with the outlier first, its two Gemms kept float.
    assert q["float_nodes_ranking"][0]["tensor"] == "/1/Relu_output_0"
    assert q["float_nodes"] == ["/0/Gemm", "/2/Gemm"] == art.meta["nodes_to_exclude"]
    graph = onnx.load(str(art.path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized = {n.name for n in graph.node if dequantized.intersection(n.input) and n.op_type == "Gemm"}
    assert quantized == {"/4/Gemm", "/6/Gemm", "/8/Gemm"}  # the rest is still INT8
    assert recomputed_drop(acc, art) == pytest.approx(q["drop_pt"], abs=1e-6)


def test_onnxruntime_without_accuracy_or_fallbacks_is_the_default_quantization(outlier_mlp, tmp_path):
    backend = base.get_backend("onnxruntime")
    plain = backend.export(outlier_mlp.source, tmp_path / "plain", precision="int8",
                           calibration=outlier_mlp.calibration)
    assert "quantization" not in plain.meta and plain.meta["calibrate_method"] == "MinMax"
    # [] = default PTQ only: measured and recorded, the same model as without a check.
    acc = check(outlier_mlp, [])
    checked = backend.export(outlier_mlp.source, tmp_path / "checked", precision="int8",
                             calibration=outlier_mlp.calibration, accuracy=acc)
    q = checked.meta["quantization"]
    assert q["method"] == "default" and not q["met"] and [t["method"] for t in q["tried"]] == ["default"]
    assert {k: v for k, v in checked.meta.items() if k not in ("quantization", "export_s", "source_path")} == \
        {k: v for k, v in plain.meta.items() if k not in ("export_s", "source_path")}
    np.testing.assert_array_equal(artifact_outputs("onnxruntime", plain.path, "int8", acc.inputs),
                                  artifact_outputs("onnxruntime", checked.path, "int8", acc.inputs))
    # A default that meets tries nothing else.
    lenient = check(outlier_mlp, ["percentile"], max_drop_pt=100)
    q = backend.export(outlier_mlp.source, tmp_path / "lenient", precision="int8",
                       calibration=outlier_mlp.calibration, accuracy=lenient).meta["quantization"]
    assert q["met"] and [t["method"] for t in q["tried"]] == ["default"]


# ---------------------------------------------------------------- OpenVINO


IN_CHILD = "EDGEDISTILL_TEST_IN_CHILD"


def test_openvino_accuracy_control_meets_where_nncf_default_misses(tmp_path):
    """Run in a child pytest process: after nncf.quantize_with_accuracy_control has run in a
    process, a SIGINT to that process segfaults it (found 2026-12-02: the suite's Ctrl-C test
    then took the whole run down). The child runs the real test below."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import subprocess
    import sys

    test = f"{__file__}::test_openvino_accuracy_control_in_this_process"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                        "--basetemp", str(tmp_path / "child"), test], env={**os.environ, IN_CHILD: "1"},
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.mark.skipif(os.environ.get(IN_CHILD) != "1", reason="run in a child process by the test above")
def test_openvino_accuracy_control_in_this_process(outlier_mlp, tmp_path):
    acc, art, q, tried = int8_with_fallbacks(outlier_mlp, tmp_path, "openvino", ["entropy", "float_nodes", "accuracy_control"])
    assert tried["default"]["drop_pt"] > 50
    assert tried["entropy"]["skipped"].startswith("not available for openvino")
    assert tried["float_nodes"]["skipped"].startswith("not available for openvino")
    assert q["method"] == "accuracy_control" and q["met"], q
    assert art.meta["quantizer"] == "nncf.quantize_with_accuracy_control"
    # Some layers reverted to float, most still quantized.
    assert tried["default"]["fake_quantize"] / 2 <= tried["accuracy_control"]["fake_quantize"] \
        < tried["default"]["fake_quantize"]
    assert recomputed_drop(acc, art) == pytest.approx(q["drop_pt"], abs=1e-6)


# ---------------------------------------------------------------- calibration of the wrong shape


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "ort-mobile"])
def test_calibration_of_the_wrong_shape_is_one_usage_error_and_leaves_nothing(outlier_mlp, tmp_path, backend):
    """Issue 14 item 6: the fallback path (accuracy given) checks the calibration before any
    quantization or file: one line naming the expected and the found shape, exit 2."""
    module = base.get_backend(backend)
    if not module.availability().ok:
        pytest.skip(module.availability().reason)
    out = tmp_path / "out"
    with pytest.raises(UsageError) as raised:
        module.export(outlier_mlp.source, out, precision="int8", calibration=np.zeros((8, 8, 8), np.float32),
                      accuracy=check(outlier_mlp, ["percentile", "float_nodes", "accuracy_control"]))
    error = raised.value
    assert error.exit_code == EXIT_USAGE
    assert f"{backend} calibration data for input 'x': expected shape ['N', 64], got [8, 8, 8]" == error.message
    assert "\n" not in error.message
    assert not out.exists()


@pytest.mark.parametrize("backend", ["executorch", "litert"])
def test_program_backends_check_calibration_before_converting(tmp_path, backend):
    from edgedistill.exporters import export_program

    module = base.get_backend(backend)
    if not module.availability().ok:
        pytest.skip(module.availability().reason)
    source = export_program(nn.Linear(64, 10).eval(), torch.zeros(1, 64), tmp_path / "student.pt2",
                            dynamic_batch=False)
    val = np.zeros((4, 64), np.float32)
    accuracy = AccuracyCheck(val, None, np.zeros((4, 10), np.float32), 1.0)
    out = tmp_path / "out"
    with pytest.raises(UsageError) as raised:
        module.export(source, out, precision="int8", calibration=np.zeros((8, 8, 8), np.float32), accuracy=accuracy)
    assert raised.value.exit_code == EXIT_USAGE
    assert raised.value.message == (f"{backend} calibration data for input 'input_0': expected shape "
                                    "['N', 64], got [8, 8, 8]")
    assert not out.exists()


def test_embedding_students_get_no_accuracy_check():
    from edgedistill.api import int8_accuracy_check

    cfg = SimpleNamespace(distill=SimpleNamespace(objective="embedding"))
    assert int8_accuracy_check(cfg, None, [("student", "int8", "onnxruntime")]) is None
    cfg.distill.objective = "logits"
    assert int8_accuracy_check(cfg, None, [("student", "fp32", "onnxruntime")]) is None


def test_report_names_the_chosen_method_when_a_fallback_was_used():
    from edgedistill.report.markdown import quantization_lines

    default = {"method": "default", "drop_pt": 12.5, "score": 80.0, "met": False}
    chosen = {"method": "percentile", "met": True, "drop_pt": 0.25, "max_drop_pt": 1.0,
              "tried": [default, {"method": "percentile", "drop_pt": 0.25, "score": 92.25, "met": True}]}
    results = [{"artifact": "student-int8-onnxruntime", "quantization": chosen},
               {"artifact": "student-int8-openvino",
                "quantization": {"method": "default", "met": True, "drop_pt": 0.0, "max_drop_pt": 1.0,
                                 "tried": [{**default, "drop_pt": 0.0, "met": True}]}},
               {"artifact": "student-fp32-onnxruntime"}]
    lines = quantization_lines(results)
    assert lines == ["- `student-int8-onnxruntime` INT8 chosen by measurement: percentile, top-1 drop 0.25 pt "
                     "on the validation split (allowed 1); the default lost 12.50"]
    missed = {**chosen, "met": False, "drop_pt": 3.0}
    assert quantization_lines([{"artifact": "a", "quantization": missed}])[0].endswith(
        "NONE met the allowed drop, kept the one that lost least")
