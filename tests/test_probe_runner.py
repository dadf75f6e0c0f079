"""The probe and the local runner, on a fake runtime: timing, timeouts, crashes, cleanup."""

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgedistill.bench.runners import local


def request(tmp, inputs, mode="full", **options):
    return {"backend": "fake", "model": str(tmp / "model.bin"), "threads": 1, "device": "CPU",
            "inputs": str(inputs), "mode": mode, "outputs_path": str(tmp / "out.npy"),
            "warmup_iterations": 3, "min_iterations": 30, "min_duration_s": 0.05, "max_duration_s": 5,
            "options": options}


def test_full_probe_reports_cold_parts_warm_samples_and_outputs(fake_probe):
    tmp, inputs = fake_probe
    out = local.run_probe(request(tmp, inputs, latency_ms=2.0), threads=1, timeout_s=60)
    assert out.status == "ok", out.detail
    r = out.result
    cold = r["cold"]
    parts = ("interpreter_ms", "import_ms", "read_ms", "compile_ms", "first_inference_ms")
    assert all(cold[k] >= 0 for k in parts)
    assert cold["read_ms"] == 0.5  # what the session timed reading the file
    assert cold["compile_ms"] >= 1.4  # the rest of the fake's 2 ms load
    assert cold["first_inference_ms"] >= 2.0
    samples = r["warm"]["samples_ms"]
    assert len(samples) >= 30
    assert 2.0 <= np.median(samples) < 20.0  # a 2 ms sleep, measured by the probe's loop
    assert r["warm"]["loop_overhead_ms"] < 0.1
    # the harness's overhead includes the session's input check, so it is the larger
    assert r["warm"]["loop_overhead_ms"] <= r["warm"]["harness_overhead_ms"] < 0.5
    assert len(r["warm"]["same_input_samples_ms"]) >= 50
    assert r["sampled_outputs"]["checked"] >= 1 and r["sampled_outputs"]["argmax_mismatches"] == 0
    outputs = np.load(tmp / "out.npy")
    assert outputs.shape == (10, 3) and outputs[1, 0] == 4.0  # every input, in order
    assert r["peak_rss_mb"] > 1


def test_peak_memory_is_the_probes_own_not_the_parents(fake_probe):
    tmp, inputs = fake_probe
    ballast = bytearray(400 * 2**20)  # the parent holds 400 MiB when it spawns the probe
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])
    out = local.run_probe(request(tmp, inputs, mode="cold"), threads=1, timeout_s=60)
    assert out.status == "ok"
    assert 1 < out.result["peak_rss_mb"] < 300
    del ballast


def test_cold_mode_skips_the_warm_loop(fake_probe):
    tmp, inputs = fake_probe
    out = local.run_probe(request(tmp, inputs, mode="cold"), threads=1, timeout_s=60)
    assert out.status == "ok" and "warm" not in out.result and "cold" in out.result


def test_warm_mode_runs_batches_and_refuses_a_fixed_batch(fake_probe):
    tmp, inputs = fake_probe
    out = local.run_probe({**request(tmp, inputs, mode="warm"), "batch_size": 4}, threads=1, timeout_s=60)
    assert out.status == "ok" and out.result["first_output_shape"] == [4, 3]
    assert len(out.result["warm"]["samples_ms"]) >= 30 and "sampled_outputs" not in out.result
    fixed = {**request(tmp, inputs, mode="warm", fixed_batch=1), "batch_size": 4}
    out = local.run_probe(fixed, threads=1, timeout_s=60)
    assert out.status == "error" and out.result["error_type"] == "UnsupportedBatch"
    assert "fixed at 1" in out.detail


def test_runtime_error_is_reported_as_data(fake_probe):
    tmp, inputs = fake_probe
    out = local.run_probe(request(tmp, inputs, fault="raise"), threads=1, timeout_s=60)
    assert out.status == "error"
    assert "expected shape [1, 4], found [1, 5]" in out.detail


def test_segfault_in_the_runtime_does_not_kill_the_parent(fake_probe):
    """RELIABILITY 5: a runtime that crashes the probe (SIGSEGV) is a typed outcome in the parent."""
    tmp, inputs = fake_probe
    out = local.run_probe(request(tmp, inputs, fault="segfault"), threads=1, timeout_s=60)
    assert out.status == "crashed" and "SIGSEGV" in out.detail


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.parametrize("fault", ["hang", "grandchild"])
def test_reliability_16_timeout_kills_the_whole_process_group(fake_probe, fault):
    """RELIABILITY 16: a hang, and a grandchild that keeps stderr open: the timeout kills the group."""
    tmp, inputs = fake_probe
    t0 = time.monotonic()
    out = local.run_probe(request(tmp, inputs, fault=fault), threads=1, timeout_s=2)
    assert out.status == "timeout" and "process group killed" in out.detail
    assert time.monotonic() - t0 < 15
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", "sleep 3600"], capture_output=True, text=True, check=False).stdout.split()
    assert not [p for p in left if _alive(int(p))], "a grandchild outlived the timeout"


def test_one_input_model_takes_an_npz_whatever_its_key_and_a_describe_runs_nothing(fake_probe):
    """Contract 1: one array for a one-input model is that input, whatever its key (the pipeline
    writes "x"); describe loads the model and reports its inputs and outputs, running nothing."""
    tmp, inputs = fake_probe
    npz = tmp / "inputs.npz"
    np.savez(npz, x=np.load(inputs))
    out = local.run_probe(request(tmp, npz, mode="outputs"), threads=1, timeout_s=60)
    assert out.status == "ok", out.detail
    assert np.load(tmp / "out.npy")[1, 0] == 4.0
    (tmp / "out.npy").unlink()
    d = local.run_probe({**request(tmp, None, mode="describe"), "inputs": None}, threads=1, timeout_s=60)
    assert d.status == "ok", d.detail
    assert d.result["inputs"] == [{"name": "input", "shape": [None, 4], "dtype": "float32"}]
    assert d.result["outputs"][0]["name"] == "output"
    assert "first_inference_ms" not in d.result["cold"] and not (tmp / "out.npy").exists()


def test_probe_files_are_python_3_8():
    """The probe is copied to devices with Python 3.8 (JetPack 5): both files parse as 3.8, and an
    annotation that is evaluated at run time (no `from __future__ import annotations`) uses no
    `X | Y`, which 3.8 cannot evaluate."""
    import ast

    for path in (local.PROBE_DIR / "probe.py", local.PROBE_DIR / "runtimes.py"):
        tree = ast.parse(path.read_text(), str(path), feature_version=(3, 8))
        postponed = any(isinstance(n, ast.ImportFrom) and n.module == "__future__"
                        and any(a.name == "annotations" for a in n.names) for n in tree.body)
        if postponed:
            continue
        annotations = [n.annotation for n in ast.walk(tree) if isinstance(n, (ast.arg, ast.AnnAssign)) and n.annotation]
        annotations += [n.returns for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.returns]
        unions = [ast.unparse(a) for a in annotations
                  if any(isinstance(x, ast.BinOp) and isinstance(x.op, ast.BitOr) for x in ast.walk(a))]
        assert not unions, f"{path.name}: annotations 3.8 cannot evaluate: {unions}"
