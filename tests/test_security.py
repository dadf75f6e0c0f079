"""The loading policy (docs/security.md): models are programs.

RELIABILITY 1-6 and issue 9 findings 1 (a .pt2 is a program) and 2 (a refused pickle is unsafe,
not damaged). Hostile files here are real: each payload runs `touch MARKER`, and control tests
show that torch's own loaders really would run it, so "the marker is absent" means something.
"""

from __future__ import annotations

import ast
import functools
import io
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TinyNet, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save
from test_exporters import _external_data_model
from test_specs import STUDENT, Payload, Settings, export_small, student_state

from edgedistill.artifacts import sha256_file
from edgedistill.errors import EXIT_UNSAFE, EXIT_USAGE, EdgeDistillError, UnsafeModelError, UsageError
from edgedistill.specs import load_model
from edgedistill.stages import Stage, recorded_by_pipeline
from edgedistill.trust import ModelFile, load_program, pickle_imports

TEACHER = "edgedistill.zoo:digits_teacher"


# ---------------------------------------------------------------- helpers


def crafted_pt2(tmp_path: Path, marker: Path) -> Path:
    """A real torch.export archive whose symbolic-shape expression runs `touch marker` when
    torch.export.load parses it (sympify evaluates the string)."""
    export_small(tmp_path / "benign.pt2")
    evil = tmp_path / "crafted.pt2"
    with zipfile.ZipFile(tmp_path / "benign.pt2") as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("models/model.json"):
                text = data.decode()
                match = re.search(r'"expr_str": "([^"]+)"', text)
                assert match, "the exported program has no symbolic shape to rewrite"
                payload = f"(__import__('os').system('touch {marker}') and 0) + {match.group(1)}"
                data = (text[:match.start(1)] + payload + text[match.end(1):]).encode()
            dst.writestr(info, data)
    return evil


def cli_errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def distill_cli(tmp_path, *args, env=None):
    return run_cli(["distill", "--out-dir", tmp_path / "runs", "--epochs", "1", *args], cwd=tmp_path, env=env)


def legacy_payload(path: Path, marker: Path) -> Path:
    torch.save({"fc.weight": torch.zeros(2), "x": Payload(marker)}, path, _use_new_zipfile_serialization=False)
    return path


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index % len(out)] ^= 0xFF
    return bytes(out)


# ---------------------------------------------------------------- finding 1: a .pt2 is a program


def test_control_the_crafted_pt2_really_runs_its_command_under_torch_export_load(tmp_path):
    marker = tmp_path / "MARKER"
    torch.export.load(crafted_pt2(tmp_path, marker))
    assert marker.exists()


def test_crafted_pt2_teacher_is_refused_through_the_cli_and_never_runs(tmp_path, cli_env):
    """Issue 9 finding 1: exit 6, one error line with the file's sha256, the safe alternatives
    and how to trust it; no traceback; the payload never ran."""
    marker = tmp_path / "MARKER"
    evil = crafted_pt2(tmp_path, marker)
    r = distill_cli(tmp_path, "--teacher", evil, env=cli_env)
    assert r.returncode == EXIT_UNSAFE, r.stderr
    (line,) = cli_errors(r)
    digest = sha256_file(evil)
    assert str(evil) in line and digest in line and "program" in line
    assert "safetensors" in r.stderr and ".onnx teacher" in r.stderr and f"--trust-sha256 {digest}" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not marker.exists()
    assert not (tmp_path / "runs" / "default" / "distill" / "student.safetensors").exists()


def test_trusting_another_files_hash_does_not_trust_the_crafted_pt2(tmp_path, cli_env):
    marker = tmp_path / "MARKER"
    evil = crafted_pt2(tmp_path, marker)
    other = sha256_file(tmp_path / "benign.pt2")
    r = distill_cli(tmp_path, "--teacher", evil, "--trust-sha256", other, env=cli_env)
    assert r.returncode == EXIT_UNSAFE and sha256_file(evil) in r.stderr, r.stderr
    assert not marker.exists()


@pytest.mark.parametrize("how", ["flag", "config"])
def test_a_trusted_pt2_is_loaded_by_the_cli(tmp_path, cli_env, how):
    """The hash reaches the loader from --trust-sha256 and from [teacher] trust_sha256: the run
    gets past loading and stops at the next check (this 4x4-input teacher cannot take digits)."""
    export_small(tmp_path / "m.pt2")
    digest = sha256_file(tmp_path / "m.pt2")
    args = ["--teacher", tmp_path / "m.pt2"]
    if how == "flag":
        args += ["--trust-sha256", digest.upper()]  # hex is case-insensitive
    else:
        (tmp_path / "edgedistill.toml").write_text(f'[teacher]\ntrust_sha256 = "{digest}"\n')
    r = distill_cli(tmp_path, *args, env=cli_env)
    assert r.returncode == EXIT_USAGE and "teacher cannot take the data's input shape" in r.stderr, r.stderr


def test_trusted_hashes_reach_data_parallel_workers(tmp_path, cli_env):
    """--nproc-per-node starts separate worker programs: each must get the trusted hashes."""
    export_small(tmp_path / "m.pt2")
    args = ["--nproc-per-node", "2", "--teacher", tmp_path / "m.pt2"]
    r = distill_cli(tmp_path, *args, "--trust-sha256", sha256_file(tmp_path / "m.pt2"), env=cli_env)
    assert r.returncode == EXIT_USAGE and "teacher cannot take the data's input shape" in r.stderr, r.stderr
    r = distill_cli(tmp_path, *args, env=cli_env)
    assert r.returncode == EXIT_UNSAFE and "is a program" in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["abc", "g" * 64, "0" * 63])
def test_malformed_trust_sha256_is_a_usage_error(tmp_path, cli_env, value):
    r = distill_cli(tmp_path, "--trust-sha256", value, env=cli_env)
    assert r.returncode == EXIT_USAGE and "64 hexadecimal digits" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def test_trust_sha256_is_on_every_pipeline_verb(cli_env):
    for verb in ("compress", "distill", "export", "bench"):
        r = run_cli([verb, "--help"], env=cli_env)
        assert "--trust-sha256" in r.stdout, verb


def test_a_benign_pt2_with_its_hash_loads(tmp_path):
    model = export_small(tmp_path / "m.pt2")
    loaded = load_model(str(tmp_path / "m.pt2"), role="teacher", trusted={sha256_file(tmp_path / "m.pt2")})
    x = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(loaded(x), model(x))


def test_an_untrusted_benign_pt2_is_refused_too(tmp_path):
    export_small(tmp_path / "m.pt2")
    with pytest.raises(UnsafeModelError, match="is a program") as info:
        load_model(str(tmp_path / "m.pt2"), role="student", trusted={"0" * 64})
    assert info.value.exit_code == EXIT_UNSAFE
    assert "ONNX" not in str(info.value)  # a student cannot be an ONNX file: not offered as the way out


def test_a_pt2_recorded_by_the_pipeline_loads_without_a_hash_until_a_byte_flips(tmp_path):
    """The export stage's manifest lists its intermediate .pt2 with its sha256: that file is the
    pipeline's own. One flipped byte (inside tensor data, so torch would still load it) and it is
    not what the pipeline wrote: refused."""
    stage = Stage(tmp_path / "runs" / "default", "export", key="k")
    path = stage.begin() / "intermediate" / "student.pt2"
    path.parent.mkdir()
    model = export_small(path)
    stage.commit([path], artifacts=[])
    x = torch.randn(2, 1, 4, 4)
    runs = tmp_path / "runs"
    torch.testing.assert_close(load_model(str(path), role="teacher", pipeline_dir=runs)(x), model(x))

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(next(n for n in archive.namelist() if n.endswith("weights/weight_0")))
        offset = info.header_offset + 30 + len(info.filename) + len(info.extra)  # stored, not deflated
    path.write_bytes(flip(path.read_bytes(), offset + 5))
    with pytest.raises(UnsafeModelError, match="neither trusted by its sha256 nor recorded"):
        load_model(str(path), role="teacher", pipeline_dir=runs)


def test_a_manifest_outside_the_out_dir_vouches_for_nothing(tmp_path):
    """A manifest is no signature: whoever hands over a .pt2 can put one beside it. Only a run
    folder under this pipeline's --out-dir counts."""
    marker = tmp_path / "download" / "MARKER"
    marker.parent.mkdir()
    evil = crafted_pt2(marker.parent, marker)
    Stage(tmp_path, "download", key="forged").commit([evil], artifacts=[])  # a forged manifest beside it
    assert recorded_by_pipeline(evil)  # the forgery does list the file with its hash
    with pytest.raises(UnsafeModelError, match="is a program"):
        load_model(str(evil), role="teacher", pipeline_dir=tmp_path / "runs")
    assert not marker.exists()


def test_the_loaded_bytes_are_the_checked_bytes(tmp_path):
    """Read once, hash, load from memory: swapping the file after the check changes nothing."""
    marker = tmp_path / "MARKER"
    export_small(tmp_path / "m.pt2")
    good = ModelFile.read(tmp_path / "m.pt2", "teacher", "model")
    shutil.copyfile(crafted_pt2(tmp_path, marker), tmp_path / "m.pt2")  # swapped after the read
    load_program(good, "teacher", frozenset({good.sha256}))
    assert not marker.exists()


def test_a_pt2_that_is_not_an_archive_is_a_usage_error(tmp_path):
    (tmp_path / "bad.pt2").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UsageError, match="loading teacher model: .* not a readable torch.export .pt2"):
        load_model(str(tmp_path / "bad.pt2"), role="teacher")


# ---------------------------------------------------------------- finding 2: pickles weights_only refuses


@pytest.fixture(params=["legacy torch.save", "zip torch.save", "zip torch.save protocol 4", "pickle protocol 0",
                        "pickle protocol 2", "pickle protocol 5"])
def payload_pickle(request, tmp_path):
    marker, path = tmp_path / "MARKER", tmp_path / "evil.pt"
    if request.param == "legacy torch.save":
        legacy_payload(path, marker)
    elif request.param.startswith("zip torch.save"):
        protocol = 4 if request.param.endswith("4") else 2  # 4: STACK_GLOBAL, which torch's scanner skips
        torch.save({"fc.weight": torch.zeros(2), "x": Payload(marker)}, path, pickle_protocol=protocol)
    else:
        protocol = int(request.param[-1])
        path.write_bytes(pickle.dumps({"x": Payload(marker)}, protocol=protocol))
    return path, marker


def test_reliability_1_and_2_a_pickle_payload_is_unsafe_not_damaged(payload_pickle):
    """RELIABILITY 1, 2; issue 9 finding 2: every pickle form (the legacy format is several
    pickles in a row) is exit 6 with the file, its sha256, the import it would perform and the
    safe alternatives; torch's advice to retry with weights_only=False is never repeated."""
    path, marker = payload_pickle
    with pytest.raises(UnsafeModelError) as info:
        load_model(STUDENT, path, role="teacher")
    message = str(info.value)
    assert info.value.exit_code == EXIT_UNSAFE
    assert str(path) in message and sha256_file(path) in message and "posix.system" in message
    assert "safetensors" in message and "state_dict" in message and "--trust-sha256" in message
    assert "weights_only=False" not in message and "weights_only" not in message.replace("weights_only=True", "")
    assert not marker.exists()


def test_the_legacy_format_is_scanned_past_its_first_pickle(tmp_path):
    # The payload sits in the fourth pickle (after magic number, protocol and sys info).
    path = legacy_payload(tmp_path / "evil.pt", tmp_path / "MARKER")
    first = pickle.loads(path.read_bytes())  # the magic number: harmless on its own
    assert isinstance(first, int)
    assert pickle_imports(path.read_bytes()) == ["posix.system"]


def test_a_clean_legacy_checkpoint_loads(tmp_path):
    state = student_state()
    torch.save(state, tmp_path / "w.pt", _use_new_zipfile_serialization=False)
    assert pickle_imports((tmp_path / "w.pt").read_bytes()) == []
    loaded = load_model(STUDENT, tmp_path / "w.pt", role="student").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.parametrize("content", ["truncated legacy", "garbage"])
def test_a_damaged_pickle_is_not_readable_and_not_unsafe(tmp_path, content):
    path = tmp_path / "w.pt"
    if content == "garbage":
        path.write_bytes(b"\x80\x02not a checkpoint at all" * 8)
    else:
        torch.save(student_state(), path, _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UsageError, match="loading teacher weights: .* not a readable PyTorch checkpoint") as info:
        load_model(STUDENT, path, role="teacher")
    assert info.value.exit_code == EXIT_USAGE and "weights_only" not in str(info.value)


def test_a_trusted_pickle_is_loaded_in_full(tmp_path):
    """Trust means weights_only=False for that exact file: a harmless but non-allowlisted class."""
    path = tmp_path / "ckpt.pt"
    state = student_state()
    torch.save({"state_dict": state, "settings": Settings()}, path)
    with pytest.raises(UnsafeModelError):
        load_model(STUDENT, path, role="student", trusted={"f" * 64})
    loaded = load_model(STUDENT, path, role="student", trusted={sha256_file(path)}).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_legacy_payload_through_the_cli_says_unsafe_without_torchs_advice(tmp_path, cli_env):
    marker = tmp_path / "MARKER"
    path = legacy_payload(tmp_path / "evil.pt", marker)
    r = distill_cli(tmp_path, "--teacher", TEACHER, "--teacher-weights", path, env=cli_env)
    assert r.returncode == EXIT_UNSAFE, r.stderr
    (line,) = cli_errors(r)
    assert sha256_file(path) in line and "posix.system" in line
    assert "weights_only=False" not in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


# ---------------------------------------------------------------- RELIABILITY 3


@pytest.mark.parametrize("form", ["zip", "legacy"])
def test_reliability_3_force_no_weights_only_env_in_a_cli_subprocess(tmp_path, cli_env, form):
    """RELIABILITY 3: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 in the CLI's environment does not weaken
    loading: weights_only=True is passed explicitly; the payload does not run; exit 6."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    if form == "legacy":
        legacy_payload(path, marker)
    else:
        torch.save({"x": Payload(marker)}, path)
    r = distill_cli(tmp_path, "--teacher-weights", path, env={**cli_env, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})
    assert r.returncode == EXIT_UNSAFE, r.stderr
    assert not marker.exists()


def _calls(tree: ast.AST, dotted: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == dotted]


def test_reliability_3_every_torch_load_passes_weights_only_explicitly():
    """RELIABILITY 3, statically: no torch.load in the package leaves weights_only to the
    environment, and only trust.py passes False (for a file whose hash the user trusts).
    torch.export.load runs in trust.py (gated) and in the backends that convert a program
    (ExecuTorch, LiteRT, Core ML), on the .pt2 the export stage has just written itself."""
    loads, program_loads = [], []
    for path in sorted((ROOT / "edgedistill").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for call in _calls(tree, "torch.load"):
            kw = {k.arg: k.value for k in call.keywords}
            assert "weights_only" in kw, f"{path}:{call.lineno} torch.load without weights_only"
            value = ast.literal_eval(kw["weights_only"])
            loads.append((path.name, value))
        program_loads += [path.relative_to(ROOT).as_posix() for _ in _calls(tree, "torch.export.load")]
    assert [name for name, value in loads if value is not True] == ["trust.py"]
    assert len(loads) >= 3
    assert sorted(program_loads) == ["edgedistill/backends/coreml.py", "edgedistill/backends/executorch.py",
                                     "edgedistill/backends/litert.py", "edgedistill/trust.py"]


# ---------------------------------------------------------------- RELIABILITY 4


def _onnx_teacher_with_location(folder: Path, location: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return _external_data_model(folder, location)


@pytest.mark.parametrize("case", ["../x", "/etc/hostname", "symlink out"])
def test_reliability_4_onnx_teacher_external_data_escaping_is_refused_before_any_runtime(tmp_path, case,
                                                                                          monkeypatch):
    """RELIABILITY 4: external data at `../x`, `/etc/hostname` or through a symlink out of the
    model's folder is refused (exit 6) by edgedistill's check; ONNX Runtime is never asked to
    open the model. (tests/test_exporters.py checks check_onnx_external_data itself.)"""
    import onnxruntime

    opened = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: opened.append(a))
    folder = tmp_path / "model"
    (tmp_path / "x").write_bytes(np.arange(4, dtype=np.float32).tobytes())  # a real target to read
    location = case
    if case == "symlink out":
        folder.mkdir()
        os.symlink(tmp_path / "x", folder / "link.data")
        location = "link.data"
    path = _onnx_teacher_with_location(folder, location)
    with pytest.raises(UnsafeModelError, match="refused before any runtime opens it") as info:
        load_model(str(path), role="teacher")
    assert info.value.exit_code == EXIT_UNSAFE and location in str(info.value)
    assert opened == []


def test_reliability_4_control_external_data_inside_the_folder_is_loaded(tmp_path):
    path = _onnx_teacher_with_location(tmp_path / "model", "w.data")
    teacher = load_model(str(path), role="teacher")
    np.testing.assert_allclose(teacher(torch.zeros(4)).numpy(), np.arange(4, dtype=np.float32))


# ---------------------------------------------------------------- RELIABILITY 5


@functools.cache
def _clean_bytes(fmt: str) -> bytes:
    state = {k: v.contiguous() for k, v in student_state().items()}
    if fmt == "safetensors":
        return save(state)
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=fmt == "zip")
    return buffer.getvalue()


def _saved(tmp_path: Path, fmt: str, data: bytes | None = None) -> Path:
    """The student's weights in `fmt` (or `data`, a damaged copy), under the format's suffix."""
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pt")
    path.write_bytes(_clean_bytes(fmt) if data is None else data)
    return path


_FORMAT_NAME = {"safetensors": "safetensors file", "zip": "PyTorch checkpoint", "legacy": "PyTorch checkpoint"}


@pytest.mark.parametrize("fmt", ["safetensors", "zip", "legacy"])
@pytest.mark.parametrize("damage", ["truncated", "header byte flipped"])
def test_reliability_5_damaged_teacher_weights_name_format_and_stage(tmp_path, fmt, damage):
    """RELIABILITY 5: a truncated or byte-flipped .pt / .safetensors is exit 2 naming the stage
    (loading teacher weights) and the format."""
    path = _saved(tmp_path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else flip(data, 0))
    with pytest.raises(UsageError, match=rf"loading teacher weights: .* not a readable {_FORMAT_NAME[fmt]}") as info:
        load_model(STUDENT, path, role="teacher")
    assert info.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize("fmt", ["safetensors", "zip", "legacy"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_reliability_5_any_truncation_or_flip_is_a_typed_outcome(tmp_path, fmt, data):
    """RELIABILITY 5, fuzzed: whatever byte is flipped or wherever the file is cut, loading
    either succeeds (a flip inside tensor data cannot be seen by the format) or raises a typed
    error with exit 2 or 6; nothing else escapes (an escape would be exit 3)."""
    clean = _clean_bytes(fmt)
    if data.draw(st.booleans(), label="truncate"):
        damaged = clean[: data.draw(st.integers(0, len(clean) - 1), label="cut at")]
    else:
        damaged = flip(clean, data.draw(st.integers(0, len(clean) - 1), label="flip at"))
    path = _saved(tmp_path, fmt, damaged)
    try:
        load_model(STUDENT, path, role="teacher")
    except EdgeDistillError as e:
        assert e.exit_code in (EXIT_USAGE, EXIT_UNSAFE), e


@functools.cache
def _onnx_teacher_bytes() -> bytes:
    from test_teachers_students import tiny_net, to_onnx

    with tempfile.TemporaryDirectory() as tmp:
        return to_onnx(tiny_net(), Path(tmp) / "t.onnx").read_bytes()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_reliability_5_any_flip_of_an_onnx_teacher_is_a_typed_outcome(tmp_path, data):
    """RELIABILITY 5, fuzzed, for the ONNX teacher (run by ONNX Runtime in this process): a
    flipped byte loads (tensor data) or is exit 2/6; nothing escapes, nothing crashes."""
    clean = _onnx_teacher_bytes()
    path = tmp_path / "t.onnx"
    path.write_bytes(flip(clean, data.draw(st.integers(0, len(clean) - 1), label="flip at")))
    try:
        teacher = load_model(str(path), role="teacher")
        with torch.no_grad():
            teacher(torch.zeros(3, 1, 4, 4))
    except EdgeDistillError as e:
        assert e.exit_code in (EXIT_USAGE, EXIT_UNSAFE), e


@pytest.mark.parametrize("damage", ["truncated", "first byte flipped"])
def test_reliability_5_damaged_onnx_teacher_names_format_and_stage(tmp_path, damage):
    path = tmp_path / "t.onnx"
    path.write_bytes(_onnx_teacher_bytes())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else flip(data, 0))
    with pytest.raises(UsageError, match="loading teacher model: .* not a readable ONNX model") as info:
        load_model(str(path), role="teacher")
    assert info.value.exit_code == EXIT_USAGE


def test_reliability_5_truncated_teacher_weights_through_the_cli(tmp_path, cli_env):
    path = _saved(tmp_path, "zip")
    path.write_bytes(path.read_bytes()[:1000])
    r = distill_cli(tmp_path, "--teacher", STUDENT, "--teacher-weights", path, env=cli_env)
    assert r.returncode == EXIT_USAGE, r.stderr
    (line,) = cli_errors(r)
    assert "loading teacher weights" in line and "not a readable PyTorch checkpoint" in line
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def pipeline_artifacts(tmp_path_factory):
    """An OpenVINO IR and an ExecuTorch .pte of a tiny model, exported as the pipeline does."""
    from edgedistill.backends import base
    from edgedistill.exporters import export_onnx, export_program

    folder = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    model, example = TinyNet().eval(), torch.randn(1, 1, 32, 32)
    onnx_file = export_onnx(model, example, folder / "s.onnx")
    program = export_program(model, example, folder / "s.pt2", dynamic_batch=False)
    inputs = folder / "inputs.npy"
    np.save(inputs, np.random.default_rng(0).normal(size=(3, 1, 32, 32)).astype(np.float32))
    return {
        "openvino": base.get_backend("openvino").export(onnx_file, folder / "ov", precision="fp32", calibration=None),
        "executorch": base.get_backend("executorch").export(program, folder / "et", precision="fp32",
                                                            calibration=None),
        "inputs": inputs,
    }


def _probe_outputs(artifact, model: Path, inputs: Path, work: Path):
    """Run a model file through the probe the way export verification (api._verify) does."""
    from edgedistill.bench.runners.local import run_probe

    request = {"backend": artifact.backend, "model": str(model), "precision": artifact.precision, "threads": 1,
               "device": "CPU", "inputs": str(inputs), "mode": "outputs", "outputs_path": str(work / "out.npy")}
    return run_probe(request, threads=1, timeout_s=300)


@pytest.mark.parametrize("backend", ["openvino", "executorch"])
def test_reliability_5_control_undamaged_artifacts_run_in_the_probe(pipeline_artifacts, tmp_path, backend):
    artifact = pipeline_artifacts[backend]
    outcome = _probe_outputs(artifact, artifact.path, pipeline_artifacts["inputs"], tmp_path)
    assert outcome.status == "ok", outcome.detail
    assert np.load(tmp_path / "out.npy").shape == (3, 10)


@pytest.mark.parametrize(("backend", "damage", "status"), [
    ("openvino", "xml truncated", "error"),
    ("openvino", "bin truncated", "error"),
    ("executorch", "truncated", "error"),
    ("executorch", "magic byte flipped", "crashed"),  # ExecuTorch aborts the process (SIGABRT)
])
def test_reliability_5_damaged_pipeline_artifacts_fail_typed_in_the_probe(pipeline_artifacts, tmp_path, backend,
                                                                          damage, status):
    """RELIABILITY 5: a truncated or flipped .xml/.bin or .pte run by the probe gives a typed
    failure ("error" with the runtime's reason, or "crashed" with the signal); the parent, this
    test process, survives even when the runtime kills the child."""
    artifact = pipeline_artifacts[backend]
    for f in artifact.files():
        shutil.copy(f, tmp_path / f.name)
    target = {"xml truncated": ".xml", "bin truncated": ".bin"}.get(damage, ".pte")
    victim = tmp_path / Path(artifact.path).with_suffix(target).name
    data = victim.read_bytes()
    victim.write_bytes(flip(data, 4) if "flipped" in damage else data[: len(data) // 2])
    outcome = _probe_outputs(artifact, tmp_path / Path(artifact.path).name, pipeline_artifacts["inputs"], tmp_path)
    assert outcome.status == status and outcome.detail, outcome
    if status == "crashed":
        assert "SIG" in outcome.detail
    assert not (tmp_path / "out.npy").exists()


# ---------------------------------------------------------------- RELIABILITY 6


@pytest.mark.parametrize("name", ["teacher.engine", "model.plan"])
@pytest.mark.parametrize("as_weights", [False, True])
def test_reliability_6_a_tensorrt_engine_is_refused_with_why(tmp_path, name, as_weights):
    """RELIABILITY 6: a TensorRT engine handed in as a model or weights is refused (exit 6):
    native code tied to one GPU and TensorRT version; give the ONNX, edgedistill builds the
    engine on the target."""
    path = tmp_path / name
    path.write_bytes(b"\0" * 64)
    with pytest.raises(UnsafeModelError) as info:
        if as_weights:
            load_model(STUDENT, path, role="student")
        else:
            load_model(str(path), role="teacher")
    message = str(info.value)
    assert info.value.exit_code == EXIT_UNSAFE and str(path) in message
    assert "native code" in message and "GPU" in message and "TensorRT version" in message
    assert "ONNX" in message and "--backend tensorrt" in message


def test_reliability_6_engine_teacher_through_the_cli(tmp_path, cli_env):
    (tmp_path / "t.engine").write_bytes(b"\0" * 64)
    r = distill_cli(tmp_path, "--teacher", tmp_path / "t.engine", env=cli_env)
    assert r.returncode == EXIT_UNSAFE and len(cli_errors(r)) == 1 and "TensorRT" in r.stderr, r.stderr
