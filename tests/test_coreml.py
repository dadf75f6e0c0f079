"""The coreml backend (issue 13 item 4): an .mlpackage made with coremltools from a torch.export
program, fp32 and fp16. No Core ML runtime exists on Linux, so it is recorded unverified with the
reason (without allow_unverified), skipped by the bench, not gated, refused by `bench PATH`, and
`doctor` says "export only". A tiny model is converted directly; no pipeline run."""

from __future__ import annotations

import copy
import json
import platform
from pathlib import Path

import pytest
import torch

from edgedistill import api
from edgedistill.artifacts import Artifact
from edgedistill.backends import base, coreml
from edgedistill.config import TargetConfig
from edgedistill.errors import ExportError, UsageError
from edgedistill.exporters import export_program
from edgedistill.gate import INCONCLUSIVE, gate_results
from tests.conftest import TinyNet, run_cli

SHAPE = (1, 1, 12, 12)
GOLDEN = Path(__file__).parent / "golden" / "results_v3.json"
ON_LINUX = platform.system() == "Linux"

pytest.importorskip("coremltools", reason="the coreml extra is not installed (pip install 'edgedistill[coreml]')")


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Artifact:
    torch.manual_seed(0)
    return export_program(TinyNet().eval(), torch.randn(*SHAPE), tmp_path_factory.mktemp("src") / "student.pt2",
                          dynamic_batch=False)


@pytest.fixture(scope="module")
def packages(program, tmp_path_factory) -> dict[str, Artifact]:
    out = tmp_path_factory.mktemp("coreml")
    return {p: coreml.export(program, out, precision=p, calibration=None) for p in ("fp32", "fp16")}


def _weights_dtypes(path: Path) -> set[str]:
    """The data types of the ML Program's weight constants stored in weight.bin, read from its spec."""
    import coremltools as ct

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    types = set()
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            for op in block.operations:
                if op.type != "const":
                    continue
                value = op.attributes["val"]
                if value.WhichOneof("value") == "blobFileValue":
                    types.add(ct.proto.MIL_pb2.DataType.Name(value.type.tensorType.dataType))
    return types


def test_mlpackage_is_a_valid_package_whose_files_the_artifact_lists(packages, tmp_path):
    import coremltools as ct

    art = packages["fp32"]
    assert art.kind == "mlpackage" and art.backend == "coreml" and art.path.is_dir()
    assert art.path.name == "student-fp32-coreml.mlpackage"
    model = ct.models.MLModel(str(art.path), skip_model_load=True)  # no runtime needed to read the spec
    spec = model.get_spec()
    assert [i.name for i in spec.description.input] == ["x"]  # the program's input, by its name
    assert list(spec.description.input[0].type.multiArrayType.shape) == list(SHAPE)
    assert spec.WhichOneof("Type") == "mlProgram"
    files = art.files()
    assert art.path / "Manifest.json" in files and all(f.is_file() and art.path in f.parents for f in files)
    assert {f.name for f in files} >= {"Manifest.json", "model.mlmodel", "weight.bin"}
    assert art.size_bytes() == sum(f.stat().st_size for f in files)
    assert art.meta["minimum_deployment_target"] == "iOS15" and art.meta["specification_version"] == 6
    assert art.meta["coremltools"] == ct.__version__ and art.meta["compute_precision"] == "FLOAT32"
    # The stage manifest hashes a folder artifact file by file.
    from edgedistill.stages import Stage

    stage = Stage(tmp_path / "run", "export", "k")
    stage.begin()
    stage.commit(files)
    assert stage.cached() is not None
    (art.path / "Manifest.json").write_bytes((art.path / "Manifest.json").read_bytes() + b" ")
    try:
        assert stage.cached() is None and "Manifest.json" in stage.changed
    finally:
        (art.path / "Manifest.json").write_bytes((art.path / "Manifest.json").read_bytes()[:-1])


def test_fp16_stores_half_precision_weights(packages):
    fp32, fp16 = packages["fp32"], packages["fp16"]
    assert _weights_dtypes(fp32.path) == {"FLOAT32"}
    assert _weights_dtypes(fp16.path) == {"FLOAT16"}
    assert fp16.meta["compute_precision"] == "FLOAT16"
    weights = {p: next(a.path.rglob("weight.bin")).stat().st_size for p, a in packages.items()}
    assert weights["fp16"] < weights["fp32"]  # (64-byte aligned blobs: a tiny model does not halve)


def test_saving_again_replaces_the_package_whole_and_leaves_no_staging(packages, program):
    art = packages["fp16"]
    before = {f.name for f in art.files()}
    again = coreml.export(program, art.path.parent, precision="fp16", calibration=None)
    assert again.path == art.path and {f.name for f in again.files()} == before
    assert sorted(p.name for p in art.path.parent.iterdir()) == ["student-fp16-coreml.mlpackage",
                                                                   "student-fp32-coreml.mlpackage"]


def test_conversion_failure_names_the_operator_and_leaves_nothing(tmp_path):
    class Bessel(torch.nn.Module):
        def forward(self, x):
            return torch.special.i0(x).flatten(1)

    program = export_program(Bessel(), torch.randn(*SHAPE), tmp_path / "b.pt2", dynamic_batch=False)
    with pytest.raises(ExportError) as e:
        coreml.export(program, tmp_path / "out", precision="fp32", calibration=None)
    assert "coremltools" in e.value.message and "special_i0" in e.value.message and "\n" not in e.value.message
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    with pytest.raises(UsageError, match="does not support precision 'int8'"):
        coreml.export(program, tmp_path / "out", precision="int8", calibration=None)
    # A dynamic batch axis: Core ML's TensorType here takes fixed shapes, refused before converting.
    dynamic = export_program(TinyNet().eval(), torch.randn(2, *SHAPE[1:]), tmp_path / "d.pt2", dynamic_batch=True)
    with pytest.raises(ExportError, match="needs static input shapes; the program's input 'x' has shape"):
        coreml.export(dynamic, tmp_path / "out", precision="fp32", calibration=None)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_missing_coremltools_says_which_extra(program, tmp_path, monkeypatch):
    monkeypatch.setattr(coreml, "installed", lambda module: base.Availability(False, reason=f"the {module} package is not installed"))
    avail = coreml.availability()
    assert not avail.ok and "pip install 'edgedistill[coreml]'" in avail.reason
    with pytest.raises(UsageError) as e:
        coreml.export(program, tmp_path, precision="fp32", calibration=None)
    assert e.value.hint == "pip install 'edgedistill[coreml]'"
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not ON_LINUX, reason="the Linux reason; macOS has its own")
def test_unverified_with_the_reason_without_allow_unverified(packages):
    assert base.not_runnable("coreml") == coreml.NO_RUNTIME == "no Core ML runtime on Linux: predict() needs macOS"
    assert base.not_runnable("onnxruntime") is None and base.not_runnable("ort-mobile") is None
    v = api.unrunnable_verification(base.not_runnable("coreml"))
    assert v["verified"] is False and v["runnable"] is False and v["problems"] == [coreml.NO_RUNTIME]
    assert v["reason"] == coreml.NO_RUNTIME
    assert api.verification_summary(v) == f"not verified: {coreml.NO_RUNTIME}"  # `edgedistill export`'s line


def _result_doc(*extra: dict) -> dict:
    doc = json.loads(GOLDEN.read_text())
    doc["targets"] = doc["targets"][:1]
    target = doc["targets"][0]
    target["results"] = [r for r in target["results"] if r["artifact"] in ("teacher-fp32-onnxruntime",
                                                                            "student-fp32-onnxruntime")]
    target["results"] += list(extra)
    return doc


def test_bench_skips_it_with_the_reason_and_the_gate_neither_passes_nor_fails_on_it(packages):
    from edgedistill.bench.harness import export_only_result

    target = TargetConfig(name="local-cpu", backends=["coreml"])
    record = export_only_result(packages["fp16"], target, coreml.NO_RUNTIME)
    assert record["status"] == "skipped" and record["export_only"] is True
    assert record["status_detail"] == f"not measured: {coreml.NO_RUNTIME}"
    assert record["size_bytes"] == packages["fp16"].size_bytes() and len(record["files"]) == len(packages["fp16"].files())
    base_verdict, base_checks = gate_results(_result_doc())
    verdict, checks = gate_results(_result_doc(record))
    assert (verdict, len(checks)) == (base_verdict, len(base_checks))  # no check for it at all
    assert not any(c.artifact == record["artifact"] for c in checks)
    only = _result_doc(record)
    only["targets"][0]["results"] = [r for r in only["targets"][0]["results"] if r["role"] == "teacher" or r.get("export_only")]
    assert record in only["targets"][0]["results"]
    assert gate_results(only) == (INCONCLUSIVE, [])  # nothing gated: never a silent PASS
    # The flag skips only what was skipped: a measured result is gated whatever it says.
    measured = copy.deepcopy(_result_doc()["targets"][0]["results"][1])
    measured["export_only"] = True
    assert len(gate_results(_result_doc(measured))[1]) == 2 * len(base_checks)
    from edgedistill.report.markdown import render

    assert coreml.NO_RUNTIME in render({**_result_doc(record), "verdict": verdict,
                                        "checks": [c.to_json() for c in checks]})


def test_bench_path_refuses_an_mlpackage_in_one_line(packages, cli_env, tmp_path):
    done = run_cli(["bench", packages["fp32"].path, "-o", tmp_path / "r.json"], env=cli_env, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "Core ML" in lines[0] and coreml.not_runnable_reason() in lines[0]
    assert len(lines) <= 2 and "Traceback" not in done.stderr and not (tmp_path / "r.json").exists()


def test_doctor_lists_both_backends(cli_env):
    rows = {r["backend"]: r for r in api.doctor()}
    assert rows["ort-mobile"]["usable"] and rows["ort-mobile"]["extra"] is None and rows["ort-mobile"]["note"] is None
    assert rows["coreml"]["usable"] and rows["coreml"]["extra"] == "coreml"
    if ON_LINUX:
        assert rows["coreml"]["note"] == "export only on Linux (no Core ML runtime)"
    from rich.console import Console

    from edgedistill.report.table import print_doctor

    console = Console(record=True, width=200)
    print_doctor(list(rows.values()), console)
    text = console.export_text()
    line = next(ln for ln in text.splitlines() if "coreml" in ln)
    assert "export only" in line and ("no Core ML runtime" in line or not ON_LINUX)


_FAST = """threads = 1
[measurement]
warmup_iterations = 2
min_iterations = 120
min_duration_s = 0.05
max_duration_s = 3.0
cold_runs = 1
measure_cache = false
max_load_per_core = 1000.0      # engineers share two cores: the machine is not under test here
max_others_cpu_share = 1.0
[budgets]
p90_ms = 1000.0
"""


def test_the_pipelines_bench_skips_the_package_and_each_target_measures_its_own_ort(packages, tmp_path):
    """api.bench on exported artifacts (no distillation): two local targets, one pinned to arm;
    each measures only the .ort built for its platform, and lists the .mlpackage skipped with the
    reason, in results.json and report.md, with no check of it."""
    import numpy as np

    from edgedistill.backends import ort_mobile
    from edgedistill.config import Config, load_target
    from edgedistill.ui import UI
    from tests.test_ort_mobile import _images, tiny_onnx

    torch.manual_seed(0)
    net = TinyNet().eval()
    source = Artifact("onnx", tiny_onnx(net, tmp_path / "student.onnx"))
    here = ort_mobile.this_machine()
    orts = [ort_mobile.export(source, tmp_path / "ort", precision="fp32", calibration=None, target_platform=p)
            for p in dict.fromkeys((here, "arm"))]
    verified = {"verified": True, "samples": 1, "max_abs": 0.0, "mean_abs": 0.0, "top1_agreement": 1.0}
    for a in orts:
        a.meta["verification"] = verified
    package = packages["fp32"]
    package.meta["verification"] = api.unrunnable_verification(coreml.not_runnable_reason())
    data = tmp_path / "run" / "data"
    data.mkdir(parents=True)
    x = _images(24, 8)
    with torch.no_grad():
        logits = net(torch.from_numpy(x)).numpy()
    np.save(data / "test_inputs.npy", x)
    np.save(data / "test_labels.npy", logits.argmax(1))
    np.save(data / "teacher_test_logits.npy", logits)
    targets = []
    for name, extra in (("here", ""), ("phone", 'ort_target_platform = "arm"\n')):
        (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\nbackends = ["ort-mobile", "coreml"]\n{extra}' + _FAST)
        targets.append(load_target(tmp_path / f"{name}.toml"))
    cfg = Config.model_validate({"run": {"name": "run", "out_dir": str(tmp_path)}})
    ws = api.Workspace(cfg, tmp_path / "run", targets)
    results = api.bench(ws, UI(quiet=True), [*orts, package], d=type("D", (), {"metrics": {}})())
    for target, platform_ in zip(results["targets"], (here, "arm")):
        by_name = {r["artifact"]: r for r in target["results"]}
        assert set(by_name) == {f"student-fp32-ort-mobile-{platform_}", "student-fp32-coreml"}
        skipped = by_name["student-fp32-coreml"]
        assert skipped["status"] == "skipped" and skipped["export_only"] is True
        assert coreml.not_runnable_reason() in skipped["status_detail"]
        assert skipped["verification"]["verified"] is False and skipped["size_bytes"] == package.size_bytes()
        measured = by_name[f"student-fp32-ort-mobile-{platform_}"]
        assert measured["status"] in ("ok", "invalid") and measured["cold"]["compile_ms"]["median"] > 0
    assert {c["artifact"] for c in results["checks"]} == {f"student-fp32-ort-mobile-{p}" for p in (here, "arm")}
    assert results["complete"] and results["verdict"] != "FAIL"
    assert coreml.not_runnable_reason() in (tmp_path / "run" / "report.md").read_text()
