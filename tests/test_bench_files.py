"""`edgedistill bench PATH ...`: model files the user already has, through the real CLI, real
runtimes and real probe processes (issue 10 items 1, 3, 7). Tiny models are made here; the
targets measure for a fraction of a second so each bench takes seconds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TinyNet, run_cli

SHAPE = (1, 1, 12, 12)

_MEASUREMENT = """
[measurement]
warmup_iterations = 2
min_iterations = 120
min_duration_s = 0.05
max_duration_s = 3.0
cold_runs = {cold_runs}
measure_cache = false
max_load_per_core = 1000.0      # three engineers share two cores: the machine is not under test here
max_others_cpu_share = 1.0
"""


def _target(folder: Path, stem: str, budgets: str = "", cold_runs: int = 2) -> Path:
    path = folder / f"{stem}.toml"
    path.write_text('name = "tiny"\ndevice = "CPU"\nthreads = 1\n'
                    + _MEASUREMENT.format(cold_runs=cold_runs) + budgets)
    return path


def _onnx(model: torch.nn.Module, path: Path, dynamic: dict | None = None, external: bool = True) -> Path:
    import onnx

    tmp = path.with_name(path.stem + ".tmp.onnx")
    with torch.no_grad():
        torch.onnx.export(model.eval(), (torch.randn(*SHAPE),), str(tmp), dynamo=True, input_names=["x"],
                          output_names=["logits"], dynamic_shapes=dynamic)
    proto = onnx.load(str(tmp))
    for f in path.parent.glob(tmp.name + "*"):
        f.unlink()
    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=256)
    else:
        onnx.save_model(proto, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """model.onnx (+ .data), model.xml (+ .bin), model.ort, a dynamic-size model, data, targets."""
    import openvino as ov

    folder = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    net = TinyNet().eval()
    onnx_path = _onnx(net, folder / "model.onnx")
    ov.save_model(ov.convert_model(str(onnx_path)), str(folder / "model.xml"), compress_to_fp16=False)
    ort_dir = folder / "ort"
    done = subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(onnx_path),
                           "--output_dir", str(ort_dir), "--optimization_style", "Fixed"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    ort_file = next(ort_dir.glob("*.ort"))
    shutil.move(ort_file, folder / "model.ort")
    h = torch.export.Dim("h", min=4, max=64)
    dynamic = _onnx(net, folder / "dynamic.onnx", dynamic={"x": {2: h, 3: h}}, external=False)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((24, *SHAPE[1:])).astype(np.float32)
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
    y = logits.argmax(1).astype(np.int64)
    y[:6] = (y[:6] + 1) % 10  # 6 of 24 wrong: top-1 must be 0.75, not a trivial 1.0
    np.savez(folder / "data.npz", x=x, y=y)
    np.savez(folder / "wrong.npz", x=rng.standard_normal((8, 1, 10, 10)).astype(np.float32))
    return {"dir": folder, "onnx": onnx_path, "xml": folder / "model.xml", "ort": folder / "model.ort",
            "dynamic": dynamic, "data": folder / "data.npz", "wrong": folder / "wrong.npz",
            "measure": _target(folder, "measure"),
            "gated": _target(folder, "gated", "[budgets]\np90_ms = 1000.0\nsize_mb = 50.0\n"),
            "logits": logits, "y": y}


@pytest.fixture(scope="module")
def pte(files):
    pytest.importorskip("executorch")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    torch.manual_seed(0)
    program = torch.export.export(TinyNet().eval(), (torch.randn(*SHAPE),))
    et = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    path = files["dir"] / "model.pte"
    path.write_bytes(et.buffer)
    return path


def _bench(args, cli_env, cwd: Path, timeout: int = 600):
    return run_cli(["bench", *args], cwd=cwd, env=cli_env, timeout=timeout)


def _results(path: Path) -> dict:
    return json.loads(path.read_text())


def _only(results: dict) -> list[dict]:
    return results["targets"][0]["results"]


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- each kind of file


def test_onnx_with_external_data_is_measured_without_budgets_and_exits_0(files, cli_env, tmp_path):
    out = tmp_path / "out" / "results.json"
    done = _bench([files["onnx"], "--target", files["measure"], "-o", out], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "nothing was gated" in done.stderr
    assert "accuracy not measured" in done.stdout
    results = _results(out)
    assert results["complete"] and results["not_gated"]
    assert results["verdict"] == "INCONCLUSIVE"  # what `gate` says of a file without budgets
    [r] = _only(results)
    assert r["artifact"] == "model-onnxruntime" and r["backend"] == "onnxruntime" and r["status"] == "ok"
    assert r["source"] == {"path": str(files["onnx"]), "sha256": _sha256(files["onnx"]), "given_by": "user"}
    assert {Path(f["path"]).name for f in r["files"]} == {"model.onnx", "model.onnx.data"}
    assert r["size_bytes"] == files["onnx"].stat().st_size + (files["dir"] / "model.onnx.data").stat().st_size
    assert r["accuracy"]["measured"] is False and "top1" not in r["accuracy"]
    assert len(r["cold"]["runs"]) == 2 and len(r["warm"]["runs"]) == 2
    assert r["cold"]["compile_ms"]["median"] > 0 and r["warm"]["summary"]["p50_ms"] > 0
    assert r["integrity"]["caching_ratio"] is not None
    assert (out.parent / "report.md").is_file() and (out.parent / "junit.xml").is_file()


def test_openvino_ir_with_its_bin(files, cli_env, tmp_path):
    out = tmp_path / "results.json"
    done = _bench([files["xml"], "--target", files["measure"], "-o", out, "--threads", "1"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    [r] = _only(_results(out))
    assert (r["artifact"], r["backend"], r["status"]) == ("model-openvino", "openvino", "ok")
    assert {Path(f["path"]).name for f in r["files"]} == {"model.xml", "model.bin"}
    precision = r["session"]["inference_precision"].lower()  # "<Type: 'float32'>" or "f32"
    assert "float32" in precision or precision.endswith("f32")


def test_onnx_runtime_ort_format(files, cli_env, tmp_path):
    out = tmp_path / "results.json"
    done = _bench([files["ort"], "--target", files["measure"], "-o", out, "--cold-disk"], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    results = _results(out)
    [r] = _only(results)
    assert (r["artifact"], r["backend"], r["status"]) == ("model-onnxruntime", "onnxruntime", "ok")
    # --cold-disk reaches the harness: every cold run evicts the file first, or says why not.
    assert results["targets"][0]["cold_disk"] is True
    assert r["cold"]["kind"] == "cold-disk" or "eviction failed" in r["cold"]["kind_detail"]


def test_executorch_pte(files, pte, cli_env, tmp_path):
    out = tmp_path / "results.json"
    done = _bench([pte, "--target", files["measure"], "-o", out], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    [r] = _only(_results(out))
    assert (r["artifact"], r["backend"], r["status"]) == ("model-executorch", "executorch", "ok")


def test_two_backends_for_one_onnx_and_two_files_with_one_stem(files, cli_env, tmp_path):
    out = tmp_path / "results.json"
    done = _bench([files["onnx"], files["ort"], "--backend", "onnxruntime", "--backend", "openvino",
                   "--target", files["measure"], "-o", out], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    names = [(r["artifact"], r["backend"]) for r in _only(_results(out))]
    # The .ort is read by ONNX Runtime only; model.onnx on both; the stems clash, so kinds are named.
    assert names == [("model-onnx-onnxruntime", "onnxruntime"), ("model-openvino", "openvino"),
                     ("model-ort-onnxruntime", "onnxruntime")]


# ---------------------------------------------------------------- data, reference, shapes


def test_data_with_labels_measures_top1(files, cli_env, tmp_path):
    out = tmp_path / "results.json"
    done = _bench([files["onnx"], "--data", files["data"], "--target", files["measure"], "-o", out],
                  cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    [r] = _only(_results(out))
    assert r["accuracy"]["top1"] == pytest.approx(0.75)
    assert r["accuracy"]["n"] == 24


def test_reference_gives_agreement_max_abs_and_cosine(files, cli_env, tmp_path):
    out = tmp_path / "results.json"
    done = _bench([files["xml"], "--reference", files["onnx"], "--data", files["data"],
                   "--target", files["gated"], "-o", out], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    results = _results(out)
    ref, r = _only(results)
    assert ref["role"] == "teacher" and ref["artifact"] == "model-onnxruntime"
    assert r["role"] == "student" and r["artifact"] == "model-openvino"
    comp = r["reference_comparison"]
    assert comp["reference"] == "model-onnxruntime" and comp["samples"] == 24
    assert comp["top1_agreement"] == 1.0
    assert 0 < comp["max_abs_diff"] < 1e-3 or comp["max_abs_diff"] == 0.0
    assert comp["min_cosine"] > 0.9999
    assert r["accuracy"]["teacher_agreement"] == 1.0
    assert results["reference"]["teacher_top1"] == pytest.approx(0.75)
    # the quality record: top-1 on --data's labels, against the reference's top-1 on them
    q = r["quality"]
    assert q["metric"] == "top1" and q["value"] == pytest.approx(0.75) and q["teacher"] == pytest.approx(0.75)
    assert q["drop"] == pytest.approx(0.0) and results["reference"]["quality"]["teacher"] == pytest.approx(0.75)
    assert "vs reference model-onnxruntime: top-1 agreement 100.00 %" in done.stdout
    assert results["verdict"] == "PASS" and not results["not_gated"]


def test_shape_fixes_a_dynamic_dimension_on_both_runtimes(files, cli_env, tmp_path):
    out = tmp_path / "results.json"
    done = _bench([files["dynamic"], "--backend", "onnxruntime", "--backend", "openvino", "--shape", "x=1x1x16x16",
                   "--target", files["measure"], "-o", out], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    for r in _only(_results(out)):
        assert r["status"] == "ok", r["status_detail"]


# ---------------------------------------------------------------- gate, compare, report


def test_gate_compare_and_every_report_read_a_results_file_made_from_files(files, cli_env, tmp_path):
    target = _target(tmp_path, "runs4", cold_runs=4)
    out = tmp_path / "results.json"
    done = _bench([files["onnx"], "--target", target, "-o", out], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    # No budgets: bench said "measurement"; gate keeps it INCONCLUSIVE (a CI job cannot pass by it).
    gated = run_cli(["gate", out], env=cli_env)
    assert gated.returncode == 5, gated.stdout + gated.stderr
    gated = run_cli(["gate", out, "--target", files["gated"], "--json"], env=cli_env)
    assert gated.returncode == 0, gated.stdout + gated.stderr
    checks = json.loads(gated.stdout)["checks"]
    assert {(c["artifact"], c["budget"], c["outcome"]) for c in checks} == {
        ("model-onnxruntime", "p90_ms", "PASS"), ("model-onnxruntime", "size_mb", "PASS")}
    base = run_cli(["gate", out, "--target", files["gated"], "--baseline", out, "--json"], env=cli_env)
    regression = json.loads(base.stdout)["regression"]
    assert {m["artifact"] for m in regression["metrics"]} == {"model-onnxruntime"}
    compared = run_cli(["compare", out, out, "--json"], env=cli_env)
    assert compared.returncode == 0, compared.stderr
    assert {m["artifact"] for m in json.loads(compared.stdout)["metrics"]} == {"model-onnxruntime"}
    for fmt in ("md", "csv", "html", "junit"):
        rendered = run_cli(["report", out, "--format", fmt], env=cli_env)
        assert rendered.returncode == 0, (fmt, rendered.stderr)
        # JUnit has one test per budget check, and none were made: its one test is the verdict.
        assert ("model-onnxruntime" if fmt != "junit" else "nothing was gated") in rendered.stdout
    # The same file read as a pipeline run (compress, bench without PATH) is INCONCLUSIVE, exit 5;
    # only bench PATH calls a target without budgets a measurement.
    from edgedistill import api, cli
    from edgedistill.ui import UI

    results = _results(out)
    assert cli._render_file_results(results, UI(quiet=True), True, out) == 0
    pipeline_like = {k: v for k, v in results.items() if k != "not_gated"}
    api.apply_gate(pipeline_like)
    assert pipeline_like["verdict"] == "INCONCLUSIVE"
    assert cli._render_results(pipeline_like, UI(quiet=True), True, out) == 5
    md = run_cli(["report", out], env=cli_env).stdout
    assert str(files["onnx"]) in md and "given by user" in md and "not gated" in md
    junit = run_cli(["report", out, "--format", "junit"], env=cli_env).stdout
    assert "<skipped" in junit and "<error" not in junit


def test_an_accuracy_budget_without_a_reference_is_inconclusive_and_says_why(files, cli_env, tmp_path):
    target = _target(tmp_path, "acc", "[budgets]\naccuracy_drop_pt = 1.0\n")
    out = tmp_path / "results.json"
    done = _bench([files["onnx"], "--data", files["data"], "--target", target, "-o", out, "--json"],
                  cli_env, tmp_path)
    assert done.returncode == 5, done.stderr
    [check] = json.loads(done.stdout)["checks"]
    assert check["outcome"] == "INCONCLUSIVE" and "--reference" in check["detail"]


def test_a_model_file_flag_without_a_path_is_refused(cli_env, tmp_path):
    # No PATH is the pipeline's bench, unchanged; a flag that only model files take is exit 2.
    done = _bench(["--threads", "2"], cli_env, tmp_path)
    assert done.returncode == 2 and "--threads applies to model files" in done.stderr


# ---------------------------------------------------------------- bad input (item 7)


def _refused(done, code: int, *words: str):
    assert done.returncode == code, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
    assert all(line.startswith("  hint: ") for line in lines[1:]), lines
    for w in words:
        assert w in done.stderr, (w, done.stderr)


def _copy(files, tmp_path, *names) -> Path:
    folder = tmp_path / "copy"
    folder.mkdir(exist_ok=True)
    for n in names:
        shutil.copy(files["dir"] / n, folder / n)
    return folder


@pytest.mark.parametrize("case", ["extension", "bin", "missing_bin", "missing_data", "escaping_data",
                                  "dynamic", "shape_name", "shape_malformed", "backend", "engine",
                                  "unknown_backend", "pipeline_flag"])
def test_bad_input_is_one_line_with_its_exit_code_and_nothing_written(case, files, cli_env, tmp_path):
    out = tmp_path / "out" / "results.json"
    if case == "extension":
        (tmp_path / "model.h5").write_bytes(b"x")  # a Keras file: not a format bench reads
        args, code, words = [tmp_path / "model.h5"], 2, [".h5", "expected an .onnx"]
    elif case == "bin":
        args, code, words = [files["dir"] / "model.bin"], 2, ["model.xml", "found its weights file"]
    elif case == "missing_bin":
        folder = _copy(files, tmp_path, "model.xml")
        args, code, words = [folder / "model.xml"], 2, ["model.bin", "found none"]
    elif case == "missing_data":
        folder = _copy(files, tmp_path, "model.onnx")
        args, code, words = [folder / "model.onnx"], 2, ["model.onnx.data", "missing"]
    elif case == "escaping_data":
        import onnx

        inner = tmp_path / "inner"
        inner.mkdir()
        proto = onnx.load(str(files["onnx"]), load_external_data=False)
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = "../stolen.data"
        (inner / "model.onnx").write_bytes(proto.SerializeToString())
        shutil.copy(files["dir"] / "model.onnx.data", tmp_path / "stolen.data")
        args, code, words = [inner / "model.onnx"], 6, ["'..'", "refused before any runtime opens it"]
    elif case == "dynamic":
        args, code, words = [files["dynamic"]], 2, ["dimension 2", "--shape x="]
    elif case == "shape_name":
        args, code, words = [files["onnx"], "--shape", "xx=1x1x12x12"], 2, ["no input 'xx'", "did you mean 'x'"]
    elif case == "shape_malformed":
        args, code, words = [files["onnx"], "--shape", "x=1x1x12xa"], 2, ["expected NAME=1x3x224x224"]
    elif case == "backend":
        args, code, words = [files["xml"], "--backend", "onnxruntime"], 2, ["cannot read an OpenVINO IR", "openvino"]
    elif case == "engine":
        (tmp_path / "model.engine").write_bytes(b"\0" * 16)
        args, code, words = [tmp_path / "model.engine"], 6, ["TensorRT engine", "--backend tensorrt"]
    elif case == "unknown_backend":
        args, code, words = [files["onnx"], "--backend", "openvin"], 2, ["unknown backend", "did you mean 'openvino'"]
    else:
        args, code, words = [files["onnx"], "--run-name", "r"], 2, ["--run-name applies to the pipeline"]
    done = _bench([*args, "--target", files["measure"], "-o", out], cli_env, tmp_path)
    _refused(done, code, *words)
    assert not out.parent.exists()
    assert not (tmp_path / "runs").exists()


def test_data_that_does_not_fit_is_a_table_before_any_timing(files, cli_env, tmp_path):
    out = tmp_path / "out" / "results.json"
    done = _bench([files["onnx"], "--data", files["wrong"], "--target", files["measure"], "-o", out],
                  cli_env, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "expected" in done.stderr and "found" in done.stderr and "10" in done.stderr and "12" in done.stderr
    assert not out.parent.exists()


class _TextNet(torch.nn.Module):
    """Two int64 inputs, like a text model's input_ids and attention_mask."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(100, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


def test_a_two_input_text_model_with_a_dynamic_length(cli_env, tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (1, 8))
    seq = torch.export.Dim("seq", min=2, max=512)
    path = tmp_path / "text.onnx"
    with torch.no_grad():
        torch.onnx.export(_TextNet().eval(), (ids, torch.ones_like(ids)), str(path), dynamo=True,
                          input_names=["input_ids", "attention_mask"],
                          dynamic_shapes={"input_ids": {1: seq}, "attention_mask": {1: seq}})
    target = _target(tmp_path, "measure")
    out = tmp_path / "out" / "results.json"
    refused = _bench([path, "--target", target, "-o", out], cli_env, tmp_path)
    _refused(refused, 2, "'input_ids' dimension 1", "--shape input_ids=")
    assert not out.parent.exists()
    done = _bench([path, "--backend", "onnxruntime", "--backend", "openvino", "--shape", "input_ids=1x16",
                   "--shape", "attention_mask[1,16]", "--target", target, "-o", out], cli_env, tmp_path)
    assert done.returncode == 0, done.stderr
    results = _results(out)
    detail = results["reference"]["inputs_detail"]
    assert detail["kind"] == "synthetic" and detail["int_range"] == [0, 100]
    assert "uniform integers in [0, 100)" in detail["inputs"]["input_ids"]
    for r in _only(results):
        assert r["status"] == "ok", r["status_detail"]
        assert r["accuracy"]["measured"] is False


def test_names_stay_unique_and_readable():
    from edgedistill.model_files import ModelFile, unique_labels

    def m(path, kind="onnx"):
        return ModelFile(Path(path), kind, (), "fp32")

    assert unique_labels([(m("/a/model.onnx"), "onnxruntime"), (m("/a/model.onnx"), "openvino")]) == [
        "model-onnxruntime", "model-openvino"]
    assert unique_labels([(m("/a/model.onnx"), "onnxruntime"), (m("/a/model.ort", "ort"), "onnxruntime")]) == [
        "model-onnx-onnxruntime", "model-ort-onnxruntime"]
    assert unique_labels([(m("/a/model.onnx"), "onnxruntime"), (m("/b/model.onnx"), "onnxruntime")]) == [
        "a-model-onnx-onnxruntime", "b-model-onnx-onnxruntime"]
    assert unique_labels([(m("/a/model.onnx"), "onnxruntime"), (m("/a/model.onnx"), "onnxruntime")]) == [
        "a-model-onnx-onnxruntime-1", "a-model-onnx-onnxruntime-2"]
    # A file the pipeline exported already names its runtime; odd characters become "_".
    assert unique_labels([(m("/r/student-int8-onnxruntime.onnx"), "onnxruntime"),
                          (m("/r/my model;$(x).onnx"), "onnxruntime")]) == [
        "student-int8-onnxruntime", "my_model_x-onnxruntime"]


def test_bench_help_groups_the_options_by_the_form_they_apply_to():
    from click.testing import CliRunner

    from edgedistill.cli import cli

    text = CliRunner().invoke(cli, ["bench", "--help"]).output
    files, both, pipeline = (text.index(h) for h in (
        "Model files (edgedistill bench PATH ...):", "Both forms:", "The pipeline's artifacts"))
    # Each option's own line ("  --flag"), searched after the examples above the sections.
    for flag in ("--threads", "--shape NAME=1x3x224x224", "--reference", "-o, --output"):
        assert files < text.index(f"  {flag}", files) < both, flag
    for flag in ("--data", "--backend", "--target", "--cold-disk", "--json"):
        assert both < text.index(f"  {flag}", files) < pipeline, flag
    for flag in ("--teacher ", "--epochs", "--run-name"):
        assert pipeline < text.index(f"  {flag}", files), flag
    assert "edgedistill bench model_int8.onnx --reference model_fp32.onnx --data val.npz" in text
