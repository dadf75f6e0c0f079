"""Nothing lies after an interruption or a crash (issue 9, findings 3, 4 and 9).

A real CLI process runs `bench` on the fake runtime (tests/fake_runtimes.py beside a copy of
probe.py, as in the `fake_probe` fixture): a small driver, run with `python -c`, points
`edgedistill.bench.runners.local.PROBE_DIR` at that copy and replaces the distill and export
stages with two ready-made artifacts, then calls `edgedistill.cli.main()`. The process table
(psutil) says what is left after each signal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import HERE, ROOT, run_cli

from edgedistill.bench.runners import local

DRIVER = r"""
import sys
from pathlib import Path

import numpy as np

from edgedistill import api
from edgedistill.artifacts import Artifact
from edgedistill.bench.runners import local

local.PROBE_DIR = Path(sys.argv[1])
root = Path(sys.argv[2])


def distill(ws, ui, world=None):
    data = ws.run_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.save(data / "test_inputs.npy", x)
    np.save(data / "test_labels.npy", np.full(10, 2))
    np.save(data / "teacher_test_logits.npy", x[:, :3])
    return api.Distilled(None, None, None, "fake", {})


def export(ws, ui, d=None):
    artifacts = []
    for precision in ("fp32", "int8"):
        path = root / f"student-{precision}.onnx"
        path.write_bytes(b"a fake model: the fake runtime does not read it")
        artifacts.append(Artifact("onnx", path, precision, "student", "onnxruntime"))
    return artifacts


api.distill, api.export = distill, export
sys.argv = ["edgedistill", *sys.argv[3:]]
from edgedistill.cli import main

main()
"""

TARGET = """
name = "fake"
backends = ["onnxruntime"]
threads = 1

[measurement]
warmup_iterations = 2
min_iterations = {min_iterations}
min_duration_s = 0.05
max_duration_s = 30.0
cold_runs = 1
timeout_s = {timeout_s}
measure_cache = false
max_load_per_core = 1000.0
max_others_cpu_share = 1.0  # the fake's latencies are sleeps: other work on the machine cannot shift them

[budgets]
p90_ms = 1000.0
"""


class FakeBench:
    """A workspace for `bench` on the fake runtime, in its own TMPDIR."""

    def __init__(self, root: Path, min_iterations: int = 30, timeout_s: float = 120):
        self.root = root
        self.probe_dir = root / "probe"
        self.probe_dir.mkdir()
        shutil.copy(local.PROBE_DIR / "probe.py", self.probe_dir / "probe.py")
        shutil.copy(HERE / "fake_runtimes.py", self.probe_dir / "runtimes.py")
        self.tmpdir = root / "tmp"
        self.tmpdir.mkdir()
        self.target = root / "fake.toml"
        self.target.write_text(TARGET.format(min_iterations=min_iterations, timeout_s=timeout_s))
        self.results = root / "runs" / "r" / "results.json"

    def env(self, **fake_options) -> dict:
        return {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(self.tmpdir),
                "EDGEDISTILL_FAKE_OPTIONS": json.dumps(fake_options)}

    def start(self, **fake_options) -> subprocess.Popen:
        args = ["bench", "-q", "--target", self.target, "--out-dir", self.root / "runs", "--run-name", "r"]
        # A session of its own, like a shell job: SIGINT goes to its group, as a terminal's Ctrl-C does.
        return subprocess.Popen([sys.executable, "-c", DRIVER, self.probe_dir, self.root, *map(str, args)],
                                cwd=self.root, env=self.env(**fake_options), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def probe_dirs(self) -> list[Path]:
        return sorted(self.tmpdir.glob("edgedistill-probe-*"))


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _probe_of(cli: subprocess.Popen):
    def find():
        try:
            kids = psutil.Process(cli.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return None
        for p in kids:
            try:
                if any(part.endswith("probe.py") for part in p.cmdline()):
                    return p
            except psutil.Error:
                continue
        return None
    return find


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_members(pgid: int) -> list[int]:
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                members.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


@pytest.mark.parametrize("sig, fault", [(signal.SIGINT, "hang"), (signal.SIGTERM, "grandchild"),
                                        (signal.SIGHUP, "hang")])
def test_reliability_26_signal_kills_probe_groups_removes_temp_folders_and_marks_results(tmp_path, sig, fault):
    """RELIABILITY 26: SIGINT, SIGTERM or SIGHUP during a probe: the probe's whole process group
    is ended (by pid and by group), its edgedistill-probe-* folder removed, one line printed,
    exit 128 + N; the results file says incomplete, names the signal and the missing artifacts,
    and `gate` on it is INCONCLUSIVE (exit 5)."""
    bench = FakeBench(tmp_path)
    cli = bench.start(fault=fault)
    try:
        probe = _wait_for(_probe_of(cli), what="a probe process")
        pids = [probe.pid]
        if fault == "grandchild":
            grandchild = _wait_for(lambda: probe.children(), what="the probe's grandchild")[0]
            pids.append(grandchild.pid)
        assert bench.probe_dirs(), "the probe's temporary folder should exist while it runs"
        if sig == signal.SIGINT:
            os.killpg(cli.pid, sig)  # what a terminal does: the foreground group, not the probe's
        else:
            cli.send_signal(sig)
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    name = signal.Signals(sig).name
    assert cli.returncode == 128 + sig, (cli.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"interrupted by {name}; results file marked incomplete")
    assert "Traceback" not in err
    time.sleep(0.2)
    assert [p for p in pids if _alive(p)] == [], "a probe process outlived the signal"
    assert _group_members(probe.pid) == [], "the probe's process group outlived the signal"
    assert bench.probe_dirs() == []

    doc = json.loads(bench.results.read_text())
    assert doc["complete"] is False and doc["interrupted"] == name and doc["verdict"] is None
    md = (bench.results.parent / "report.md").read_text()  # the job summary's text
    assert "**Verdict: INCONCLUSIVE**" in md and f"interrupted by {name}" in md
    assert 'name="complete"' in (bench.results.parent / "junit.xml").read_text()
    assert {m["artifact"] for m in doc["missing"]} == {"student-fp32-onnxruntime", "student-int8-onnxruntime"}
    gate = run_cli(["gate", bench.results])
    assert gate.returncode == 5, gate.stdout + gate.stderr
    assert f"interrupted by {name}" in gate.stdout and "not measured: fake/student-fp32-onnxruntime" in gate.stdout


def test_reliability_26_finished_bench_is_complete_and_an_earlier_run_never_stays(tmp_path):
    """RELIABILITY 26: the same bench left to finish writes a complete file (gate passes); a
    second one interrupted replaces it with an incomplete one instead of leaving the earlier
    run's complete file (and reports) beside it."""
    bench = FakeBench(tmp_path, min_iterations=150)  # enough samples for p99: a valid measurement
    done = bench.start(latency_ms=0.5)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, out + err
    doc = json.loads(bench.results.read_text())
    assert doc["complete"] is True and doc["missing"] == [] and doc["verdict"] == "PASS"
    assert run_cli(["gate", bench.results]).returncode == 0
    assert (bench.results.parent / "report.md").is_file()

    cli = bench.start(fault="hang")
    try:
        _wait_for(_probe_of(cli), what="a probe process")
        cli.send_signal(signal.SIGTERM)
        cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    assert cli.returncode == 143
    doc = json.loads(bench.results.read_text())
    assert doc["complete"] is False and doc["interrupted"] == "SIGTERM"
    assert "PASS" not in (bench.results.parent / "report.md").read_text()  # not the earlier run's verdict
    assert not (bench.results.parent / "report.html").exists()
    assert run_cli(["gate", bench.results]).returncode == 5


def test_reliability_26_killed_bench_leaves_an_incomplete_file(tmp_path):
    """RELIABILITY 26: even SIGKILL (no handler runs) leaves a file that says incomplete, so it
    never passes the gate; the message says the run did not finish."""
    bench = FakeBench(tmp_path)
    cli = bench.start(fault="hang")
    probe = _wait_for(_probe_of(cli), what="a probe process")
    os.kill(cli.pid, signal.SIGKILL)
    cli.communicate(timeout=30)
    os.killpg(probe.pid, signal.SIGKILL)  # nothing could clean up after SIGKILL: this test does
    doc = json.loads(bench.results.read_text())
    assert doc["complete"] is False and doc["interrupted"] is None
    gate = run_cli(["gate", bench.results])
    assert gate.returncode == 5 and "did not finish" in gate.stdout


# ---------------------------------------------------------------- partial results (RELIABILITY 16)


def _request(tmp, inputs, **overrides):
    req = {"backend": "fake", "model": str(tmp / "model.bin"), "threads": 1, "device": "CPU",
           "inputs": str(inputs), "mode": "full", "outputs_path": str(tmp / "out.npy"),
           "warmup_iterations": 1, "min_iterations": 100000, "min_duration_s": 0.05, "max_duration_s": 60}
    return {**req, **overrides}


def test_reliability_16_timeout_keeps_the_partial_samples(fake_probe):
    """RELIABILITY 16: a runtime that stops answering in the middle of the warm loop: the
    timeout kills the group, and the outcome carries the cold start and the warm samples the
    probe had saved (its partial file), labelled partial."""
    tmp, inputs = fake_probe
    req = _request(tmp, inputs, options={"latency_ms": 1.0, "hang_after": 2500})
    out = local.run_probe(req, threads=1, timeout_s=8)
    assert out.status == "timeout" and "process group killed" in out.detail
    r = out.result
    assert r["partial"] is True and r["ok"] is False
    assert r["cold"]["first_inference_ms"] >= 1.0
    samples = r["warm"]["samples_ms"]
    assert 300 <= len(samples) < 2500  # saved about every second, before the hang at call 2500
    assert 1.0 <= float(np.median(samples)) < 20.0


def test_reliability_16_harness_labels_partial_and_stays_inconclusive(fake_probe, monkeypatch, tmp_path):
    """RELIABILITY 16: the harness record of a timed-out artifact says "partial" with counts,
    keeps the samples apart from `warm`, and the status is inconclusive (the gate: INCONCLUSIVE)."""
    from edgedistill.artifacts import Artifact
    from edgedistill.bench.harness import EvalSet, bench_artifact
    from edgedistill.config import TargetConfig
    from edgedistill.gate import INCONCLUSIVE, gate_results

    _, inputs = fake_probe
    model = tmp_path / "student.onnx"
    model.write_bytes(b"fake")
    monkeypatch.setenv("EDGEDISTILL_FAKE_OPTIONS", json.dumps({"latency_ms": 1.0, "hang_after": 2500}))
    target = TargetConfig.model_validate({
        "name": "fake", "backends": ["onnxruntime"], "budgets": {"p90_ms": 100.0},
        "measurement": {"warmup_iterations": 1, "min_iterations": 100000, "min_duration_s": 0.05,
                        "max_duration_s": 60.0, "cold_runs": 1, "timeout_s": 8.0, "measure_cache": False}})
    evalset = EvalSet(inputs, np.zeros(10, dtype=int), np.zeros(10, dtype=int))
    art = Artifact("onnx", model, "int8", "student", "onnxruntime")
    record = bench_artifact(art, target, evalset, tmp_path / "work")
    assert record["status"] == "inconclusive"
    partial = record["partial"]
    assert partial["cold_runs"] == 1 and partial["warm_samples"] == len(partial["warm_samples_ms"]) >= 300
    assert f"partial: {partial['warm_samples']} warm samples" in record["status_detail"]
    assert "warm" not in record and "cold" not in record  # never read as a whole measurement
    doc = {"complete": True, "reference": {"teacher_top1": 1.0},
           "targets": [{"name": "fake", "budgets": {"p90_ms": 100.0}, "results": [record]}]}
    assert gate_results(doc)[0] == INCONCLUSIVE


# ---------------------------------------------------------------- a crash while verifying (finding 9)


def test_reliability_5_segfault_while_verifying_an_export_is_inconclusive(fake_probe, monkeypatch, tmp_path):
    """RELIABILITY 5 (issue 9 finding 9): the runtime crashes (SIGSEGV) while verifying an export:
    InconclusiveError (exit 5), not a usage error; the parent survives; the unverified file is
    removed so nothing can take it for a verified one."""
    from edgedistill import api
    from edgedistill.artifacts import Artifact
    from edgedistill.config import Config
    from edgedistill.errors import InconclusiveError

    _, inputs = fake_probe
    model = tmp_path / "student-fp32-onnxruntime.onnx"
    model.write_bytes(b"fake")
    monkeypatch.setenv("EDGEDISTILL_FAKE_OPTIONS", json.dumps({"fault": "segfault"}))
    art = Artifact("onnx", model, "fp32", "student", "onnxruntime")
    with pytest.raises(InconclusiveError, match="SIGSEGV") as e:
        api._verify(art, inputs, np.zeros((10, 3), dtype=np.float32), Config(), tmp_path)
    assert e.value.exit_code == 5
    assert not model.exists()
    assert "removed" in e.value.message


# ---------------------------------------------------------------- data-parallel training

DDP_MODELS = r"""
import os
import time

from torch import nn


def teacher():
    return nn.Sequential(nn.Flatten(), nn.Linear(1024, 16), nn.ReLU(), nn.Linear(16, 10))


def student():
    return nn.Sequential(nn.Flatten(), nn.Linear(1024, 8), nn.ReLU(), nn.Linear(8, 10))


def hang():
    # An augmentation that says it started, then never returns: workers stuck in training.
    def augment(x):
        open(os.path.join(os.environ["HANG_MARKERS"], "rank-" + os.environ.get("RANK", "0")), "w").close()
        time.sleep(3600)
        return x

    return augment
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_reliability_26_signal_ends_data_parallel_workers(tmp_path, sig):
    """RELIABILITY 26: SIGTERM (to the command) or SIGINT (to its group, as a terminal sends it)
    during `distill --nproc-per-node 2` while both workers train: torch's elastic launcher ends
    their process groups, the command exits 128 + N with one line (no traceback from a rank),
    and no worker process and no edgedistill-workers-* folder is left."""
    (tmp_path / "hang_models.py").write_text(DDP_MODELS)
    (tmp_path / "hang.toml").write_text('[teacher]\nallow_weak_teacher = true\n'
                                        '[distill]\naugment = ["hang_models:hang"]\n')
    markers = tmp_path / "markers"
    markers.mkdir()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "TMPDIR": str(tmpdir),
           "HANG_MARKERS": str(markers)}
    args = ["distill", "-q", "-c", "hang.toml", "--teacher", "hang_models:teacher", "--student",
            "hang_models:student", "--epochs", "1", "--nproc-per-node", "2", "--out-dir", "runs"]
    cli = subprocess.Popen([sys.executable, "-m", "edgedistill", *args], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(lambda: len(list(markers.iterdir())) == 2, timeout=240, what="both workers training")
        workers = [p.pid for p in psutil.Process(cli.pid).children(recursive=True)]
        assert len(workers) >= 2
        assert list(tmpdir.glob("edgedistill-workers-*"))
        if sig == signal.SIGINT:
            os.killpg(cli.pid, sig)
        else:
            cli.send_signal(sig)
        out, err = cli.communicate(timeout=120)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    assert cli.returncode == 128 + sig, err
    assert err.strip().splitlines() == [f"interrupted by {signal.Signals(sig).name}"], err
    time.sleep(0.2)
    assert [p for p in workers if _alive(p)] == []
    assert [m for p in workers for m in _group_members(p)] == []
    assert list(tmpdir.glob("edgedistill-workers-*")) == []


def test_reliability_5_crash_while_verifying_leaves_no_committed_export_stage(fake_probe, monkeypatch, tmp_path):
    """RELIABILITY 5 (issue 9 finding 9), through the export stage: a SIGSEGV while verifying is
    exit 5, the unverified file is gone and the stage has no manifest, so the next run redoes it."""
    import torch
    from conftest import TinyNet

    from edgedistill import api
    from edgedistill.config import Config
    from edgedistill.data.datasets import DataSplits
    from edgedistill.errors import InconclusiveError
    from edgedistill.ui import UI

    torch.manual_seed(0)
    x, y = torch.randn(24, 1, 8, 8), torch.randint(0, 10, (24,))
    splits = DataSplits("test", x, y, x, y, x, y, 10, (1, 8, 8), "fp")
    d = api.Distilled(splits, TinyNet().eval(), TinyNet().eval(), "key", {})
    cfg = Config.model_validate({"run": {"out_dir": str(tmp_path / "runs")},
                                 "export": {"backends": ["onnxruntime"], "benchmark_teacher": False},
                                 "compress": {"precisions": ["fp32"]}})
    ws = api.open_workspace(cfg)
    monkeypatch.setenv("EDGEDISTILL_FAKE_OPTIONS", json.dumps({"fault": "segfault"}))
    with pytest.raises(InconclusiveError, match="SIGSEGV"):
        api.export(ws, UI(quiet=True), d)
    stage = ws.run_dir / "export"
    assert (stage / "intermediate" / "student.onnx").is_file()  # the export itself ran
    assert not (stage / "manifest.json").exists()
    assert list((stage / "onnxruntime").glob("*.onnx")) == []
