"""The native ExecuTorch runner: built with this machine's compiler against the executorch wheel,
cached, driven by the harness like the probe, and equal to the Python runtime on the same inputs.

The runner is built once per module (into a private cache); real .pte files are made here with
the project's own ExecuTorch exporter (the built-in student) and with torch.export + XNNPACK (a
two-input program). Every test skips with the reason where no compiler or no executorch exists.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedistill.artifacts import Artifact
from edgedistill.bench import native
from edgedistill.bench.harness import EvalSet, _ArtifactProbes, bench_artifact, probe_request
from edgedistill.bench.runners import local
from edgedistill.bench.runners.local import run_probe
from edgedistill.config import TargetConfig

pytestmark = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                reason="executorch is not installed")

FAST = {"warmup_iterations": 5, "min_iterations": 60, "min_duration_s": 0.2, "max_duration_s": 10.0,
        "cold_runs": 2, "timeout_s": 120.0}


def _compiler_or_skip() -> None:
    try:
        native.find_compiler()
    except native.BuildFailed as e:
        pytest.skip(f"no native runner here: {e}")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private $XDG_CACHE_HOME for this module's builds (the harness's included)."""
    folder = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


@pytest.fixture(scope="module")
def built(cache) -> native.NativeBuild:
    _compiler_or_skip()
    first = native.build()
    assert first.binary.is_file() and os.access(first.binary, os.X_OK)
    assert first.binary.is_relative_to(cache / "edgedistill" / "native")
    return first


@pytest.fixture(scope="module")
def student_pte(tmp_path_factory) -> Path:
    """The built-in student (random weights: outputs need not be meaningful, only equal),
    exported with the project's own ExecuTorch exporter."""
    from edgedistill.backends import executorch as et_backend
    from edgedistill.exporters import export_program
    from edgedistill.zoo import digits_student

    folder = tmp_path_factory.mktemp("student")
    torch.manual_seed(0)
    model = digits_student().eval()
    source = export_program(model, torch.zeros(1, 1, 32, 32), folder / "student.pt2", dynamic_batch=False)
    return et_backend.export(source, folder, precision="fp32", calibration=None).path


class TwoInputs(torch.nn.Module):
    """Two inputs of different shapes, both used: an image and a per-sample feature vector."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.mix = torch.nn.Linear(4 + 6, 5)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.conv(image)).mean(dim=(2, 3))
        return self.mix(torch.cat([pooled, features], dim=1))


@pytest.fixture(scope="module")
def two_input_pte(tmp_path_factory) -> Path:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    torch.manual_seed(1)
    model = TwoInputs().eval()
    program = torch.export.export(model, (torch.zeros(1, 1, 8, 8), torch.zeros(1, 6)))
    buffer = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    path = tmp_path_factory.mktemp("two") / "two.pte"
    path.write_bytes(buffer)
    return path


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def student_inputs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "inputs.npy"
    np.save(path, _images(40))
    return path


@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    arrays = {"input_0": rng.normal(size=(30, 1, 8, 8)).astype(np.float32),
              "input_1": rng.normal(size=(30, 6)).astype(np.float32)}
    path = tmp_path_factory.mktemp("inputs2") / "inputs.npz"
    # Written in the other order on purpose: the runner goes by the names' index, not file order.
    np.savez(path, input_1=arrays["input_1"], input_0=arrays["input_0"])
    return path, arrays


def _artifact(path: Path) -> Artifact:
    return Artifact(kind="pte", path=path, precision="fp32", role="student", backend="executorch", meta={})


def _request(model: Path, inputs: Path, mode: str, outputs: Path | None = None, **measurement) -> dict:
    target = TargetConfig(name="t", measurement={**FAST, **measurement})
    return probe_request(_artifact(model), target, inputs, mode, outputs)


def _native(built, request: dict, timeout_s: float = 120.0):
    return run_probe(request, threads=request["threads"], timeout_s=timeout_s,
                     command=native.NativeCommand(built))


# ---------------------------------------------------------------- the build and its cache


def test_second_build_comes_from_the_cache(built):
    mtime = built.binary.stat().st_mtime_ns
    began = time.monotonic()
    again = native.build()
    assert again.reused and not built.reused
    assert again.binary == built.binary and again.binary.stat().st_mtime_ns == mtime
    assert again.record == built.record
    assert time.monotonic() - began < 5.0  # no compile: the first one took seconds
    assert built.record["kind"] == "native"
    assert built.record["binary_sha256"] == native._sha256(built.binary)
    assert built.record["source_sha256"] == native._sha256(native.SOURCE)
    assert built.record["executorch_version"] == __import__("importlib.metadata").metadata.version("executorch")
    assert built.record["compiler"]


def test_source_change_rebuilds_and_a_damaged_binary_is_replaced(built, tmp_path, monkeypatch):
    source = tmp_path / "executorch_runner.cpp"
    source.write_text(native.SOURCE.read_text() + "\n// a change\n")
    monkeypatch.setattr(native, "SOURCE", source)
    changed = native.build()
    assert not changed.reused and changed.binary != built.binary
    assert changed.record["source_sha256"] == native._sha256(source) != built.record["source_sha256"]
    # Nothing half-built is left beside the builds: each is a folder renamed whole into place.
    root = changed.binary.parent.parent
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    # A cached binary that is not what was built is rebuilt, not run; what a build killed before
    # its rename left behind is removed.
    with open(changed.binary, "r+b") as f:
        f.seek(200)
        f.write(b"\0" * 16)
    stale = root / f".{changed.binary.parent.name}-killed"
    stale.mkdir()
    (stale / native.BINARY_NAME).write_bytes(b"half a binary")
    rebuilt = native.build()
    assert not rebuilt.reused and native._sha256(rebuilt.binary) == rebuilt.record["binary_sha256"]
    assert not stale.exists()


def test_concurrent_builds_make_one_binary(built, tmp_path):
    """Two builds at once (two CI jobs, two benches): one compiles under the lock, the other waits
    and reuses it; neither sees a half-written binary."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    results: list[native.NativeBuild] = []
    threads = [threading.Thread(target=lambda: results.append(native.build(env))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(results) == 2 and sorted(r.reused for r in results) == [False, True]
    assert results[0].binary == results[1].binary and results[0].record == results[1].record
    assert [p.name for p in results[0].binary.parent.parent.iterdir() if p.is_dir()] == [results[0].binary.parent.name]


def test_cmake_file_builds_the_runner_for_the_host(tmp_path, student_pte):
    """CI builds the runner with the repository's CMake file (the one the README cross-builds)."""
    _compiler_or_skip()
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    et = native.executorch_folder()
    build = tmp_path / "build"
    for cmd in (["cmake", "-S", str(native.SOURCE_DIR), "-B", str(build), f"-DEXECUTORCH_ROOT={et}",
                 "-DEDGEDISTILL_EXECUTORCH_VERSION=cmake-test"],
                ["cmake", "--build", str(build)]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = tmp_path / "result.json"
    out = subprocess.run([str(build / "executorch_runner"), "--model", str(student_pte), "--mode", "describe",
                          "--result-path", str(result)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    described = json.loads(result.read_text())
    assert described["ok"] and described["runtime_version"] == "cmake-test"
    assert described["inputs"] == [{"name": "input_0", "shape": [1, 1, 32, 32], "dtype": "float32"}]


# ---------------------------------------------------------------- driven like the probe


def test_every_mode_through_run_probe(built, student_pte, student_inputs, tmp_path):
    outputs = tmp_path / "outputs.npy"
    cold = _native(built, _request(student_pte, student_inputs, "cold"))
    assert cold.status == "ok", cold.detail
    parts = cold.result["cold"]
    assert parts["interpreter_ms"] > 0 and parts["import_ms"] == 0 and "import_note" in parts
    assert parts["read_ms"] > 0 and parts["compile_ms"] > 0 and parts["first_inference_ms"] > 0
    assert parts["rss_after_load_mb"] > 0 and cold.result["peak_rss_mb"] >= parts["rss_after_load_mb"]
    assert cold.result["first_output_shape"] == [1, 10]
    assert cold.result["session"]["threads"] == 1 and cold.result["session"]["device"] == "CPU"
    assert cold.result["runtime_version"] == built.record["executorch_version"]
    assert "warm" not in cold.result

    out = _native(built, _request(student_pte, student_inputs, "outputs", outputs))
    assert out.status == "ok", out.detail
    assert np.load(outputs).shape == (40, 10) and out.result["outputs_path"] == str(outputs)

    full = _native(built, _request(student_pte, student_inputs, "full", outputs, min_iterations=120))
    assert full.status == "ok", full.detail
    warm = full.result["warm"]
    # The harness's timing rules: warm-up, then the minimum count AND duration.
    assert len(warm["samples_ms"]) >= 120 and warm["duration_s"] >= 0.2 and not warm["hit_max_duration"]
    assert all(x > 0 for x in warm["samples_ms"])
    assert 0 <= warm["loop_overhead_ms"] < min(warm["samples_ms"])
    assert len(warm["same_input_samples_ms"]) >= 50 and warm["same_input_varied_ms"]
    sampled = full.result["sampled_outputs"]
    assert sampled["checked"] == len(range(0, len(warm["samples_ms"]), 37)) or sampled["checked"] == 64
    assert sampled["argmax_mismatches"] == 0 and sampled["max_abs_diff"] == 0.0

    w = _native(built, {**_request(student_pte, student_inputs, "warm"), "threads": 2, "same_input": True})
    assert w.status == "ok", w.detail
    assert w.result["session"]["threads"] == 2  # ExecuTorch's thread pool resized to the request's
    assert len(w.result["warm"]["samples_ms"]) >= 60 and w.result["warm"]["same_input_samples_ms"]

    # A fixed batch of 1 cannot run a sweep point at batch 2: the probe's UnsupportedBatch.
    b = _native(built, {**_request(student_pte, student_inputs, "warm"), "batch_size": 2})
    assert b.status == "error" and b.result["error_type"] == "UnsupportedBatch"


def test_warm_loop_stops_at_max_duration(built, student_pte, student_inputs):
    capped = _native(built, _request(student_pte, student_inputs, "warm", min_iterations=10**9,
                                     max_duration_s=0.3))
    assert capped.status == "ok", capped.detail
    warm = capped.result["warm"]
    assert warm["hit_max_duration"] and 0.3 <= warm["duration_s"] < 2.0


def test_two_inputs_every_mode_and_describe(built, two_input_pte, two_inputs, tmp_path):
    path, arrays = two_inputs
    outputs = tmp_path / "outputs.npy"
    full = _native(built, _request(two_input_pte, path, "full", outputs))
    assert full.status == "ok", full.detail
    assert full.result["first_output_shape"] == [1, 5] and np.load(outputs).shape == (30, 5)
    assert full.result["sampled_outputs"]["argmax_mismatches"] == 0
    described = _native(built, _request(two_input_pte, path, "describe"))
    assert described.status == "ok", described.detail
    assert described.result["inputs"] == [{"name": "input_0", "shape": [1, 1, 8, 8], "dtype": "float32"},
                                          {"name": "input_1", "shape": [1, 6], "dtype": "float32"}]
    assert described.result["outputs"] == [{"name": "output_0", "shape": [1, 5], "dtype": "float32"}]
    # The inputs swapped: checked against the program before any timing, named in the error.
    swapped = tmp_path / "swapped.npz"
    np.savez(swapped, input_0=arrays["input_1"], input_1=arrays["input_0"])
    bad = _native(built, _request(two_input_pte, swapped, "cold"))
    assert bad.status == "error" and "input_0" in bad.result["error"] and "[1, 1, 8, 8]" in bad.result["error"]


# ---------------------------------------------------------------- equal to the Python runtime


def _python_runtime_outputs(pte: Path, arrays: list[np.ndarray]) -> np.ndarray:
    """ExecuTorch's Python runtime, one sample per call, in this process."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(pte).load_method("forward")
    n = len(arrays[0])
    return np.concatenate([method.execute([torch.from_numpy(a[k:k + 1]) for a in arrays])[0].numpy()
                           for k in range(n)])


def test_outputs_equal_the_python_runtime(built, student_pte, student_inputs, two_input_pte, two_inputs, tmp_path):
    # The built-in student, through both probes (the harness's two ways of measuring).
    by_native, by_python = tmp_path / "native.npy", tmp_path / "python.npy"
    request = _request(student_pte, student_inputs, "outputs")
    assert _native(built, {**request, "outputs_path": str(by_native)}).status == "ok"
    python = run_probe({**request, "outputs_path": str(by_python)}, threads=1, timeout_s=180)
    assert python.status == "ok", python.detail
    a, b = np.load(by_native), np.load(by_python)
    assert a.shape == b.shape == (40, 10) and a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a, _python_runtime_outputs(student_pte, [np.load(student_inputs)]), rtol=0, atol=1e-6)
    # The two-input program, against the Python runtime fed the same arrays.
    path, arrays = two_inputs
    two = tmp_path / "two.npy"
    assert _native(built, {**_request(two_input_pte, path, "outputs"), "outputs_path": str(two)}).status == "ok"
    expected = _python_runtime_outputs(two_input_pte, [arrays["input_0"], arrays["input_1"]])
    np.testing.assert_allclose(np.load(two), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- which runner measures


def test_harness_measures_executorch_natively_and_records_it(built, student_pte, student_inputs, tmp_path):
    target = TargetConfig(name="t", measurement=FAST, sweep={"batch_sizes": [1, 2]})
    evalset = EvalSet(student_inputs, np.zeros(40, dtype=np.int64), np.zeros(40, dtype=np.int64))
    steps: list[str] = []
    record = bench_artifact(_artifact(student_pte), target, evalset, tmp_path, on_step=steps.append)
    assert record["runner"] == built.record
    assert record["status"] in ("ok", "invalid"), record["status_detail"]
    # Only the machine may make it invalid here (other engineers share it), never the runner.
    assert {p["kind"] for p in record["problems"]} <= {"busy_machine", "unstable_clocks"}, record["problems"]
    assert record["session"]["runner"] == "native"
    assert len(record["cold"]["runs"]) == 2 and record["cold"]["import_ms"]["median"] == 0
    assert record["integrity"]["sampled_outputs"]["argmax_mismatches"] == 0
    assert record["accuracy"]["n"] == 40 and len(record["warm"]["runs"]) == 2
    assert [p["status"] for p in record["sweep"]] == ["unsupported"]  # batch 2 on a batch-1 program
    assert not any("Python runtime" in s for s in steps)


def test_python_runtime_when_the_target_asks(student_pte, student_inputs):
    target = TargetConfig(name="t", measurement=FAST, executorch_runtime="python")
    evalset = EvalSet(student_inputs, np.zeros(40, dtype=np.int64), np.zeros(40, dtype=np.int64))
    runner = _ArtifactProbes(_artifact(student_pte), target, evalset, cold_disk=False)
    assert runner.command is None and runner.runner_record == {"kind": "python"}
    outcome = runner.probe("cold")
    assert outcome.status == "ok", outcome.detail
    assert outcome.result["runner"] == {"kind": "python"}
    assert "runner" not in outcome.result["session"]  # the Python runtime's session
    assert outcome.result["cold"]["import_ms"] > 0  # it imports executorch.runtime (and torch)


def test_target_key_is_validated():
    assert TargetConfig(name="t").executorch_runtime == "native"
    with pytest.raises(ValueError, match="executorch_runtime"):
        TargetConfig(name="t", executorch_runtime="jit")


@pytest.mark.parametrize("env", [{"CXX": "/nonexistent/c++"}, {"CXX": "", "PATH": "/nonexistent"}],
                         ids=["CXX-missing", "no-compiler-on-PATH"])
def test_no_compiler_falls_back_to_python_and_says_so(env, cache, monkeypatch, student_pte, student_inputs, tmp_path):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    notes: list[str] = []
    command, record = native.probe_command("executorch", "native", notes.append)
    assert command is None and record["kind"] == "python"
    assert ("CXX='/nonexistent/c++'" if env.get("CXX") else "no C++ compiler found") in record["fallback_reason"]
    assert len(notes) == 1 and "Python runtime" in notes[0] and record["fallback_reason"] in notes[0]
    if env.get("CXX"):
        return  # one harness run is enough to show the record and the terminal line
    target = TargetConfig(name="t", measurement={**FAST, "cold_runs": 1})
    evalset = EvalSet(student_inputs, np.zeros(40, dtype=np.int64), np.zeros(40, dtype=np.int64))
    steps: list[str] = []
    record = bench_artifact(_artifact(student_pte), target, evalset, tmp_path, on_step=steps.append)
    assert record["runner"]["kind"] == "python" and "no C++ compiler" in record["runner"]["fallback_reason"]
    assert record["status"] in ("ok", "invalid"), record["status_detail"]
    assert "runner" not in record["session"]  # measured by the Python runtime indeed
    assert any("native ExecuTorch runner unavailable" in s for s in steps)


# ---------------------------------------------------------------- bad input, crashes, hangs


def test_a_pte_that_does_not_load_is_an_error(built, student_pte, student_inputs, tmp_path):
    broken = tmp_path / "broken.pte"
    broken.write_bytes(student_pte.read_bytes()[: 3000])
    outcome = _native(built, _request(broken, student_inputs, "full", tmp_path / "o.npy"))
    assert outcome.status == "error" and "could not load the program" in outcome.detail
    missing = _native(built, _request(tmp_path / "absent.pte", student_inputs, "cold"))
    assert missing.status == "error" and "could not load" in missing.detail


def test_a_missing_inputs_file_is_an_error(built, student_pte, tmp_path):
    outcome = _native(built, _request(student_pte, tmp_path / "absent.npz", "cold"))
    assert outcome.status == "error"
    assert outcome.result["error_type"] in ("FileNotFoundError", "OSError") and "absent.npz" in outcome.detail


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie (no reaper in a container) is dead for our purposes
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _fake_binary(tmp_path: Path, script: str) -> native.NativeBuild:
    path = tmp_path / "fake_runner"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return native.NativeBuild(path, {"kind": "native"}, reused=True)


def test_a_crash_of_the_native_process_is_crashed(student_pte, student_inputs, tmp_path):
    outcome = _native(_fake_binary(tmp_path, "kill -SEGV $$"), _request(student_pte, student_inputs, "cold"))
    assert outcome.status == "crashed" and "SIGSEGV" in outcome.detail


def test_a_hang_times_out_kills_the_group_and_keeps_what_was_measured(built, student_pte, student_inputs):
    request = _request(student_pte, student_inputs, "warm", min_iterations=10**9, max_duration_s=600)
    outcome = _native(built, request, timeout_s=3.0)
    assert outcome.status == "timeout"
    assert outcome.result["cold"]["first_inference_ms"] > 0 and outcome.result["partial"]
    assert len(outcome.result["warm"]["samples_ms"]) > 0  # appended every second by the runner
    assert not _alive(outcome.result["pid"])
    assert not local.LIVE_GROUPS


def test_a_grandchild_holding_stderr_is_killed_too(student_pte, student_inputs, tmp_path):
    fake = _fake_binary(tmp_path, f"sleep 300 & echo $! > {tmp_path}/grandchild; wait")
    outcome = _native(fake, _request(student_pte, student_inputs, "cold"), timeout_s=1.0)
    assert outcome.status == "timeout"
    grandchild = int((tmp_path / "grandchild").read_text())
    time.sleep(0.2)
    assert not _alive(grandchild)


def test_ctrl_c_kills_the_native_process_group(built, student_pte, student_inputs):
    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted

    seen: list[int] = []

    def press_ctrl_c():
        seen.extend(local.LIVE_GROUPS)
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, interrupt)
    timer = threading.Timer(2.0, press_ctrl_c)
    try:
        timer.start()
        with pytest.raises(Interrupted):
            _native(built, _request(student_pte, student_inputs, "warm", min_iterations=10**9, max_duration_s=600),
                    timeout_s=60)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert len(seen) == 1
    assert not _alive(seen[0])
    assert not local.LIVE_GROUPS
