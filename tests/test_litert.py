"""The LiteRT backend (issue 13 items 1 and 8): litert-torch conversion, ai-edge-quantizer static
INT8, the probe's LiteRTSession, `bench model.tflite`, and its bad inputs. Real converters and
runtimes throughout; the exports are made once per module (importing litert_torch alone takes
5-8 s)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyNet, run_cli, structured_images

from edgedistill.artifacts import Artifact
from edgedistill.backends import base
from edgedistill.errors import BackendUnavailableError, ExportError
from edgedistill.exporters import export_program
from edgedistill.probe import runtimes

pytestmark = pytest.mark.skipif(
    not base.get_backend("litert").availability().ok,
    reason=f"litert backend unusable here: {base.get_backend('litert').availability().reason}")

litert = base.get_backend("litert")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> dict[str, Artifact]:
    folder = tmp_path_factory.mktemp("litert")
    program = export_program(model, torch.from_numpy(structured_images(1, seed=1)), folder / "student.pt2",
                             dynamic_batch=False)
    out = folder / "out"
    return {"program": program,
            "fp32": litert.export(program, out, precision="fp32", calibration=None),
            "int8": litert.export(program, out, precision="int8", calibration=structured_images(32, seed=2))}


def _run_all(session: runtimes.Session, x: np.ndarray) -> np.ndarray:
    (spec,) = session.inputs
    return np.concatenate([session.run({spec["name"]: x[i : i + 1]}) for i in range(len(x))])


def _expected(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_fp32_export_matches_torch_and_records_what_it_is(exported, model):
    art = exported["fp32"]
    assert art.kind == "tflite" and art.backend == "litert" and art.path.name == "student-fp32-litert.tflite"
    assert [p.name for p in art.path.parent.iterdir() if p.name.startswith(".")] == []  # nothing staged left
    meta = art.meta
    assert meta["converter"] == "litert-torch" and meta["litert_torch"] and meta["export_s"] > 0
    assert meta["layout"].startswith("NCHW")
    assert meta["inputs"] == [{"name": "input_0", "shape": [1, 1, 32, 32], "dtype": "float32"}]
    assert meta["tensors"]["inputs"][0]["shape"] == [1, 1, 32, 32]  # as the runtime declares it
    assert meta["tensors"]["outputs"][0]["shape"] == [1, 10] and "scale" not in meta["tensors"]["outputs"][0]
    session = runtimes.load("litert", str(art.path), threads=1)
    x = structured_images(48, seed=3)
    got, expected = _run_all(session, x), _expected(model, x)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4
    info = session.describe()
    assert info["device"] == "CPU" and info["threads"] == 1 and info["io_conversion"] is None
    assert set(info["load_parts_ms"]) == {"read_ms", "interpreter_ms", "allocate_ms"}


def test_int8_is_static_integer_and_its_scaling_is_recorded_and_applied(exported, model):
    art = exported["int8"]
    meta = art.meta
    assert meta["quantizer"] == "ai-edge-quantizer" and meta["recipe"] == "static_wi8_ai8"
    assert meta["calibration_samples"] == 32
    (q_in,), (q_out,) = meta["io_quantization"]["inputs"], meta["io_quantization"]["outputs"]
    assert q_in["dtype"] == q_out["dtype"] == "int8" and q_in["scale"] > 0 and q_out["scale"] > 0
    session = runtimes.load("litert", str(art.path), threads=1)
    # The model takes int8; the session takes floats and says that it converts them.
    assert session.inputs[0]["dtype"] == "float32" and session.outputs[0]["dtype"] == "float32"
    info = session.describe()
    assert info["inputs"][0]["dtype"] == "int8" and "input_0, output_0" in info["io_conversion"]
    assert info["inputs"][0]["quantization"] == {"scale": q_in["scale"], "zero_point": q_in["zero_point"]}
    x = structured_images(64, seed=3)
    got, expected = _run_all(session, x), _expected(model, x)
    agreement = (got.argmax(1) == expected.argmax(1)).mean()
    assert agreement >= 0.8, f"int8 top-1 agreement {agreement:.2f}"
    # Dequantized at the logits' scale (int8 codes would be ~100x larger), and not clipped: the
    # ranges are min/max over the calibration samples (the quantizer's default moving average
    # gave 0.79 of the std here).
    assert 0.9 < got.std() / expected.std() < 1.1
    assert meta["calibration_ranges"].startswith("min/max")
    # The recorded scaling is the one applied: quantizing by hand and running the raw
    # interpreter gives the session's output exactly.
    from ai_edge_litert.interpreter import Interpreter

    raw = Interpreter(model_path=str(art.path), num_threads=1)
    raw.allocate_tensors()
    codes = np.clip(np.round(x[:1] / q_in["scale"]) + q_in["zero_point"], -128, 127).astype(np.int8)
    raw.set_tensor(raw.get_input_details()[0]["index"], codes)
    raw.invoke()
    out = raw.get_tensor(raw.get_output_details()[0]["index"])
    assert out.dtype == np.int8
    np.testing.assert_array_equal((out.astype(np.float32) - q_out["zero_point"]) * q_out["scale"], got[:1])


def test_the_probe_process_times_each_cold_part_and_imports_no_torch(exported, tmp_path):
    """A fresh probe process on the int8 .tflite: cold start parts filled, outputs written, and
    (python -X importtime) neither torch nor jax nor tensorflow imported."""
    from edgedistill.bench.runners.local import PROBE_DIR

    inputs = tmp_path / "x.npy"
    np.save(inputs, structured_images(8, seed=4))
    req = {"backend": "litert", "model": str(exported["int8"].path), "threads": 1, "device": "CPU",
           "inputs": str(inputs), "mode": "outputs", "outputs_path": str(tmp_path / "out.npy"),
           "result_path": str(tmp_path / "result.json"), "precision": "int8"}
    (tmp_path / "req.json").write_text(json.dumps(req))
    done = subprocess.run([sys.executable, "-X", "importtime", str(PROBE_DIR / "probe.py"), str(tmp_path / "req.json")],
                          capture_output=True, text=True, timeout=120, check=False)
    result = json.loads((tmp_path / "result.json").read_text())
    assert done.returncode == 0 and result["ok"], result
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert "ai_edge_litert" in imported and not imported & {"torch", "jax", "tensorflow"}
    cold = result["cold"]
    assert cold["import_ms"] > 0 and cold["compile_ms"] > 0 and cold["first_inference_ms"] > 0
    assert result["session"]["threads"] == 1 and result["runtime_version"]
    assert np.load(tmp_path / "out.npy").shape == (8, 10)


def test_bench_tflite_files_with_and_without_data(exported, tmp_path, cli_env):
    target = tmp_path / "t.toml"
    target.write_text('name = "t"\n[measurement]\nwarmup_iterations = 2\nmin_iterations = 20\n'
                      'min_duration_s = 0.05\ncold_runs = 1\nmeasure_cache = false\nmax_load_per_core = 100.0\n'
                      'max_others_cpu_share = 1.0\n')
    x = structured_images(16, seed=5)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=np.zeros(16, np.int64))
    fp32, int8 = exported["fp32"].path, exported["int8"].path
    done = run_cli(["bench", fp32, int8, "--data", data, "--target", target, "-o", tmp_path / "a" / "r.json", "-q"],
                   env=cli_env)
    assert done.returncode in (0, 4), done.stderr[-2000:]
    rows = {r["artifact"]: r for r in json.loads((tmp_path / "a" / "r.json").read_text())["targets"][0]["results"]}
    assert set(rows) == {"student-fp32-litert", "student-int8-litert"}
    for row in rows.values():
        assert row["backend"] == "litert" and row["warm"]["runs"][0]["n"] >= 20
        assert row["cold"]["first_inference_ms"]["median"] > 0
    # Without --data the inputs are drawn for the declared shape and dtype (the plan, no timing).
    from edgedistill import api

    plan = api.plan_files([int8], targets=[target], output=tmp_path / "b" / "r.json")
    (arrays,) = plan.arrays.values()
    assert {k: (v.shape, v.dtype.name) for k, v in arrays.items()} == {"input_0": ((32, 1, 32, 32), "float32")}
    assert "seeded random samples" in plan.data_note


class _Weird(torch.nn.Module):
    def forward(self, x):
        return torch.ops.edgedistill_test.weird(x) * 2


@pytest.fixture(scope="module")
def weird_op():
    lib = torch.library.Library("edgedistill_test", "FRAGMENT")
    lib.define("weird(Tensor x) -> Tensor")
    lib.impl("weird", lambda x: x.clone(), "CompositeExplicitAutograd")
    lib.impl("weird", lambda x: torch.empty_like(x), "Meta")
    yield lib


def test_an_operator_litert_cannot_lower_is_named_and_nothing_is_written(weird_op, tmp_path):
    program = export_program(_Weird().eval(), torch.zeros(1, 3), tmp_path / "weird.pt2", dynamic_batch=False)
    out = tmp_path / "out"
    with pytest.raises(ExportError) as err:
        litert.export(program, out, precision="fp32", calibration=None)
    assert err.value.exit_code == 2 and "\n" not in err.value.message
    assert re.search(r"litert-torch .*operator edgedistill_test\.weird\.default", err.value.message), err.value.message
    assert not out.exists() or list(out.iterdir()) == []


def test_a_dynamic_dimension_is_refused_naming_the_input_and_its_shape(tmp_path):
    class Pool(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    x = torch.zeros(1, 3, 16, 16)
    program = torch.export.export(Pool(), (x,), dynamic_shapes=({2: torch.export.Dim("h", min=2)},))
    torch.export.save(program, tmp_path / "dyn.pt2")
    source = Artifact("exported_program", tmp_path / "dyn.pt2")
    with pytest.raises(ExportError, match=r"litert needs static input dims.*input 'x' has shape \[1, 3, \w+, 16\]") as err:
        litert.export(source, tmp_path / "out", precision="fp32", calibration=None)
    assert err.value.exit_code == 2 and not (tmp_path / "out").exists()


def test_a_missing_extra_says_how_to_install_it(exported, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "litert_torch" else real(name, *a))
    avail = litert.availability()
    assert not avail.ok and "litert-torch is not installed" in avail.reason
    assert "pip install 'edgedistill[litert]'" in avail.reason
    with pytest.raises(BackendUnavailableError, match="litert export needs litert-torch") as err:
        litert.export(exported["program"], tmp_path, precision="fp32", calibration=None)
    assert err.value.exit_code == 2 and list(tmp_path.iterdir()) == []
    from edgedistill import api

    (row,) = [r for r in api.doctor() if r["backend"] == "litert"]
    assert {k: v for k, v in row.items() if v is not None} == {"backend": "litert", "usable": False,
                                                                "reason": avail.reason, "extra": "litert"}


def test_a_missing_runtime_refuses_bench_tflite_in_one_line(exported, tmp_path):
    """`bench model.tflite` without ai-edge-litert: one line naming the file and the fix, exit 2,
    nothing written (run in-process with the CLI's own error handling)."""
    code = ("import importlib.util, sys; real = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda n, *a: None if n == 'ai_edge_litert' else real(n, *a); "
            "from edgedistill.cli import main; sys.argv = ['edgedistill'] + sys.argv[1:]; main()")
    out = tmp_path / "r" / "results.json"
    done = subprocess.run([sys.executable, "-c", code, "bench", str(exported["fp32"].path), "-o", str(out)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "ai-edge-litert is not installed" in lines[0], lines
    assert "edgedistill[litert]" in lines[0] and all(ln.startswith("  hint: ") for ln in lines[1:])
    assert not out.parent.exists()


def _agreement_script():
    import importlib.util as util

    root = Path(__file__).resolve().parent.parent
    spec = util.spec_from_file_location("litert_agreement", root / "benchmarks" / "litert_agreement.py")
    module = util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_agreement_script_runs_litert_benchmark_and_reads_its_figures(exported):
    """benchmarks/litert_agreement.py (issue 13 item 2): the wheel's litert-benchmark on a real
    .tflite with its real flags, its JSON read into the figures compared; the +-5 % verdict.
    No timing assertions: the agreement figures are the script's output."""
    agreement = _agreement_script()
    figures = agreement.run_litert_benchmark(exported["fp32"].path, threads=1, runs=30, timeout_s=120)
    assert figures["runs"] == 30 and figures["compile_ms"] > 0 and figures["first_inference_ms"] > 0
    assert "--num_threads=1" in figures["command"] and "--warmup_runs=10" in figures["command"]
    summary = {"ratio": 1.049}
    assert agreement.verdict(dict(summary))["agrees"] and not agreement.verdict({"ratio": 0.949})["agrees"]


def test_compress_asked_for_a_missing_litert_stops_before_training(tmp_path):
    """Issue 13 item 8: `compress --backend litert` without ai-edge-litert is exit 2 in one line
    before any training (skipping it would let the gate pass with LiteRT never measured)."""
    code = ("import importlib.util, sys; real = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda n, *a: None if n == 'ai_edge_litert' else real(n, *a); "
            "from edgedistill.cli import main; sys.argv = ['edgedistill'] + sys.argv[1:]; main()")
    done = subprocess.run([sys.executable, "-c", code, "compress", "--backend", "litert", "--out-dir", "runs"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: [export] backends lists litert, which cannot run here"), lines
    assert "edgedistill[litert]" in lines[0] and all(ln.startswith("  hint: ") for ln in lines[1:])
    assert not list(tmp_path.glob("runs/*/distill"))  # nothing trained


def test_the_converters_native_log_lines_stay_off_the_terminal(exported, tmp_path, capfd):
    """litert-torch's converter and the TFLite runtime log to file descriptor 2 from C++ (absl's
    "Estimated count of arithmetic ops", "Created TensorFlow Lite XNNPACK delegate"): an export
    keeps them off the user's terminal, and stderr works again afterwards."""
    litert.export(exported["program"], tmp_path, precision="fp32", calibration=None)
    print("after", file=sys.stderr, flush=True)
    err = capfd.readouterr().err
    assert "flatbuffer_export" not in err and "XNNPACK delegate" not in err, err
    assert err.strip().endswith("after")


class _MaskedText(torch.nn.Module):
    """Token ids and a mask (int64 in PyTorch, as a tokenizer gives them) averaged into a head."""

    def __init__(self):
        super().__init__()
        self.embed, self.head = torch.nn.Embedding(40, 8), torch.nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1))


def test_a_text_models_int64_inputs_are_narrowed_to_the_int32_litert_takes(tmp_path):
    """litert-torch converts int64 token ids and masks to int32 inputs: calibration and the
    probe narrow the pipeline's int64 data to them (refusing values that do not fit), so FP32 and
    INT8 of a two-input text model are verified in a fresh probe process on int64 data."""
    from edgedistill.bench.runners.local import run_probe

    torch.manual_seed(0)
    model = _MaskedText().eval()
    ids = torch.randint(1, 40, (24, 12))
    mask = torch.ones(24, 12, dtype=torch.int64)
    mask[:, 8:] = 0
    program = export_program(model, {"input_ids": ids[:1], "attention_mask": mask[:1]}, tmp_path / "t.pt2",
                             dynamic_batch=False)
    data = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    np.savez(tmp_path / "inputs.npz", **data)
    reference = model(ids, mask).detach().numpy()
    for precision in ("fp32", "int8"):
        art = litert.export(program, tmp_path / "out", precision=precision,
                            calibration=data if precision == "int8" else None)
        assert [t["dtype"] for t in art.meta["tensors"]["inputs"]] == ["int32", "int32"]
        out = tmp_path / f"{precision}.npy"
        done = run_probe({"backend": "litert", "model": str(art.path), "precision": precision, "threads": 1,
                          "device": "CPU", "inputs": str(tmp_path / "inputs.npz"), "mode": "outputs",
                          "outputs_path": str(out)}, threads=1, timeout_s=120)
        assert done.status == "ok", done.detail
        got = np.load(out)
        assert (got.argmax(1) == reference.argmax(1)).mean() >= (1.0 if precision == "fp32" else 0.9)
        if precision == "fp32":
            assert np.abs(got - reference).max() < 1e-4
    session = runtimes.load("litert", str(art.path), threads=1)
    with pytest.raises(ValueError, match="int64 values from .* do not fit"):
        session.run({"input_0": np.full((1, 12), 2**40, dtype=np.int64), "input_1": mask[:1].numpy()})
