"""The adb runner against a fake `adb` whose phone is a sandbox folder on this host.

No phone is reachable here: tests/fake_adb.py implements the adb client's command line and runs
`shell` commands with this host's sh inside a folder that stands for the phone's root, its
/sys and /proc recorded from a Pixel 6 and a Galaxy S21 (tests/fixtures/devices/). The program
measured is real: the host build of the native ExecuTorch runner, on a real .pte, pushed to the
"phone" and run there by the runner's own command lines. What the fake cannot show is said in
the README: this has not run against a phone in CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import fake_adb
from conftest import run_cli
from edgedistill.artifacts import Artifact
from edgedistill.bench import native
from edgedistill.bench.harness import EvalSet, bench_artifact, probe_request
from edgedistill.bench.runners import open_runner
from edgedistill.bench.runners.adb import AdbRunner, big_core_mask
from edgedistill.bench.runners.local import LocalRunner
from edgedistill.config import TargetConfig
from edgedistill.errors import InconclusiveError, UsageError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("executorch") is None,
                                reason="executorch is not installed")

SERIAL = "FA6X01234"
FAST = {"warmup_iterations": 2, "min_iterations": 20, "min_duration_s": 0.05, "max_duration_s": 5.0,
        "cold_runs": 2, "timeout_s": 60.0, "measure_cache": False}
# A workdir with a space, `;` and `$(...)`: every argument must reach the phone's shell literally.
ODD_WORKDIR = "/data/local/tmp/edge distill;$(touch pwned)"


@pytest.fixture(scope="module")
def runner_binary() -> Path:
    """The native runner for this host: what the fake phone runs in place of the arm64 build."""
    try:
        return native.build().binary
    except native.BuildFailed as e:
        pytest.skip(f"no native runner here: {e}")


@pytest.fixture(scope="module")
def pte(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny XNNPACK program and 16 inputs for it."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.head = torch.nn.Linear(4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    program = torch.export.export(Tiny().eval(), (torch.zeros(1, 1, 8, 8),))
    folder = tmp_path_factory.mktemp("pte")
    path = folder / "tiny.pte"
    path.write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    inputs = folder / "inputs.npy"
    np.save(inputs, np.random.default_rng(0).normal(size=(16, 1, 8, 8)).astype(np.float32))
    return path, inputs


def _phone(tmp_path: Path, monkeypatch, device: str = "pixel6", **control) -> Path:
    home = tmp_path / "fake-adb"
    home.mkdir()
    bin_dir = fake_adb.install(home, device, SERIAL, **control)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return home


@pytest.fixture
def phone(tmp_path, monkeypatch) -> Path:
    return _phone(tmp_path, monkeypatch)


def _target(runner_binary: Path | None, measurement: dict | None = None, **adb) -> TargetConfig:
    return TargetConfig(name="phone", runner="adb", backends=["executorch"],
                        adb={"executorch_runner": runner_binary, **adb},
                        measurement={**FAST, **(measurement or {})})


def _artifact(path: Path) -> Artifact:
    return Artifact(kind="pte", path=path, precision="fp32", role="student", backend="executorch", meta={})


def _sandbox(home: Path, device_path: str) -> Path:
    return home / "phone" / device_path.lstrip("/")


def _probe(runner, pte, mode: str = "cold", timeout_s: float = 60.0, **measurement):
    req = probe_request(_artifact(pte[0]), TargetConfig(name="t", measurement={**FAST, **measurement}), pte[1],
                        mode, None)
    command, _ = runner.probe_command("executorch", "native")
    return runner.run_probe(req, threads=1, timeout_s=timeout_s, command=command)


# ---------------------------------------------------------------- a whole bench through adb


def test_bench_of_a_pte_through_adb_equals_a_local_native_run(phone, runner_binary, pte, tmp_path):
    target = _target(runner_binary, workdir=ODD_WORKDIR)
    notes: list[str] = []
    runner = open_runner(target, notes.append)
    assert isinstance(runner, AdbRunner) and runner.kind == "adb" and runner.remote
    try:
        run_dir = _sandbox(phone, runner.transport.run_dir)
        assert (run_dir / "executorch_runner").stat().st_mode & 0o777 == 0o755  # pushed once, chmod 755
        info = runner.device_info()
        record = bench_artifact(_artifact(pte[0]), target, EvalSet(pte[1]), tmp_path / "adb", runner=runner)
    finally:
        runner.close()
    local = bench_artifact(_artifact(pte[0]), _target(None, {"cold_runs": 1}), EvalSet(pte[1]), tmp_path / "local",
                           runner=LocalRunner())

    assert record["status"] == "ok", record["status_detail"]
    assert record["runner"]["kind"] == "native" and record["runner"]["device"] == "adb"
    assert record["runner"]["binary_sha256"] == native._sha256(runner_binary)
    # Cold start in parts in each fresh process, one warm run per process.
    assert len(record["cold"]["runs"]) == FAST["cold_runs"] == len(record["warm"]["runs"])
    for run in record["cold"]["runs"]:
        assert run["interpreter_ms"] > 0 and run["compile_ms"] > 0 and run["first_inference_ms"] > 0
    assert all(r["n"] >= FAST["min_iterations"] for r in record["warm"]["runs"])
    # The outputs came back from the phone and equal a local native run's, bit for bit.
    adb_out, local_out = np.load(tmp_path / "adb" / f"{_artifact(pte[0]).name}.outputs.npy"), \
        np.load(tmp_path / "local" / f"{_artifact(pte[0]).name}.outputs.npy")
    assert adb_out.shape == (16, 5) and np.array_equal(adb_out, local_out)
    assert record["accuracy"] == local["accuracy"]
    # The phone's state, from its recorded /proc and /sys: the Pixel 6's two Cortex-X1 cores.
    c = record["conditions"]
    assert c["big_core_mask"] == "c0" and c["big_cores"] == [6, 7]
    assert c["load_average_before"] == [1.37, 1.52, 1.6] and c["usable_cores"] == 8
    assert c["governor"] == "sched_pixel" and c["thermal_status"] == 0 and not c["thermal_hot"]
    assert {"zone": "BIG", "celsius": 41.25} in c["thermal"]
    assert info["board"] == "Google Pixel 6" and info["android"]["soc"] == "GS101" and info["android"]["sdk"] == "34"
    assert [c["max_mhz"] for c in info["cpu"]["cores"]] == [1803] * 4 + [2253] * 2 + [2802] * 2
    assert info["cpu"]["min_mhz"] == 300 and info["cpu"]["max_mhz"] == 2802 and info["python"] is None
    # Every probe was pinned to that mask; nothing in the odd workdir was executed; all removed.
    probes = [s for s in fake_adb.shell_log(phone) if "timeout -s KILL" in s]
    assert len(probes) == FAST["cold_runs"] and all("taskset c0 timeout -s KILL 60" in s for s in probes)
    assert (phone / "taskset.log").read_text().split() == ["c0"] * len(probes)
    assert not list(phone.rglob("pwned")) and not Path("pwned").exists()
    workdir = _sandbox(phone, ODD_WORKDIR)
    assert workdir.is_dir() and list(workdir.iterdir()) == []  # run folder and lock removed
    assert any("built for x86-64, the phone is arm64-v8a" in n for n in notes)


def test_big_cores_from_each_cores_maximum_frequency(tmp_path, monkeypatch, runner_binary):
    """Galaxy S21 (Snapdragon 888): one Cortex-X1 at 2.84 GHz, three A78 at 2.42, four A55."""
    _phone(tmp_path, monkeypatch, device="galaxy-s21")
    runner = AdbRunner.open(_target(runner_binary))
    try:
        assert runner.mask_for(1) == (0x80, [7])
        assert runner.mask_for(2) == (0xF0, [4, 5, 6, 7])  # widened to the next tier for 2 threads
        assert runner.mask_for(8) == (0xFF, list(range(8)))
        info = runner.device_info()
        assert (info["board"], info["cpu"]["model"], info["android"]["board_platform"]) == \
            ("samsung SM-G991U", "SM8350", "lahaina")
        assert info["cpu"]["logical_cores"] == 8 and info["governor"] == "schedutil"
    finally:
        runner.close()
    assert big_core_mask({}) == (0, [])


def test_targets_probe_describes_the_phone(tmp_path, monkeypatch, runner_binary, cli_env):
    home = _phone(tmp_path, monkeypatch, device="galaxy-s21")
    profile = tmp_path / "s21.toml"
    profile.write_text(f'name = "s21"\nrunner = "adb"\nbackends = ["executorch"]\n[adb]\n'
                       f'serial = "{SERIAL}"\nexecutorch_runner = "{runner_binary}"\n')
    done = run_cli(["targets", "probe", profile], cwd=tmp_path, env={**cli_env, "PATH": os.environ["PATH"]},
                   timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "target    s21 (runner adb: FA6X01234)" in lines
    assert "cpu       SM8350, 8 cores (8 usable), 300-2842 MHz" in lines
    assert "governor  schedutil" in lines and any(line.startswith("thermal   aoss0-usr 36.1 C") for line in lines)
    assert list(_sandbox(home, "/data/local/tmp/edgedistill").iterdir()) == []  # closed: nothing left


# ---------------------------------------------------------------- thermal


def test_hot_phone_waits_to_cool_then_measures(tmp_path, monkeypatch, runner_binary):
    # Severe at open, at the conditions' first read and at the first poll; none at the second.
    home = _phone(tmp_path, monkeypatch, thermal_statuses=[3, 3, 3, 0])
    runner = AdbRunner.open(_target(runner_binary, max_cool_down_s=2.0))
    try:
        began = time.monotonic()
        c = runner.conditions()
        waited = time.monotonic() - began
    finally:
        runner.close()
    assert c["thermal_status"] == 0 and not c["thermal_hot"] and c["thermal_limit"] == 1
    # Two polls a tenth of the budget apart (0.2 s each): it waited them, and no longer than it took.
    assert 0.4 <= c["cool_down_s"] <= waited
    assert json.loads((home / "state.json").read_text())["thermal_reads"] >= 4


def test_phone_still_hot_after_the_wait_is_recorded_hot_and_invalid(tmp_path, monkeypatch, runner_binary, pte):
    _phone(tmp_path, monkeypatch, thermal_statuses=[4])  # critical throughout
    target = _target(runner_binary, {"cold_runs": 1}, max_cool_down_s=0.5)
    runner = AdbRunner.open(target)
    try:
        record = bench_artifact(_artifact(pte[0]), target, EvalSet(pte[1]), tmp_path / "w", runner=runner)
    finally:
        runner.close()
    c = record["conditions"]
    assert c["thermal_hot"] and c["thermal_status_max"] == 4 and c["cool_down_s"] >= 0.5 * 2  # before, and per probe
    assert record["status"] == "invalid"
    assert [p["kind"] for p in record["problems"]] == ["thermal_throttling"]
    assert "thermal status was 4 (limit 1)" in record["status_detail"]


# ---------------------------------------------------------------- lost device, lost status


def test_phone_offline_mid_run_is_inconclusive_exit_5_with_completed_runs_kept(phone, runner_binary, pte,
                                                                                tmp_path, cli_env):
    fake_adb.configure(phone, offline_at_probe=2)
    profile = tmp_path / "phone.toml"
    profile.write_text(f'name = "phone"\nrunner = "adb"\nbackends = ["executorch"]\n[adb]\n'
                       f'executorch_runner = "{runner_binary}"\n[measurement]\n'
                       + "".join(f"{k} = {json.dumps(v)}\n" for k, v in FAST.items()))
    out = tmp_path / "out" / "results.json"
    env = {**cli_env, "PATH": os.environ["PATH"]}
    done = run_cli(["bench", pte[0], "--target", profile, "-o", out], cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 5, done.stderr
    results = json.loads(out.read_text())
    assert results["targets"][0]["runner"] == "adb"
    [r] = results["targets"][0]["results"]
    assert r["status"] == "inconclusive" and "lost the link to FA6X01234" in r["status_detail"]
    assert "device offline" in r["status_detail"]
    assert r["runner"]["kind"] == "native"
    assert len(r["cold"]["runs"]) == 1 and r["cold"]["runs"][0]["compile_ms"] > 0  # the first probe's, kept
    assert results["verdict"] != "PASS"


def test_the_exit_status_comes_from_the_marker_lost_crashed_or_timed_out(phone, runner_binary, pte):
    runner = AdbRunner.open(_target(runner_binary))
    try:
        assert _probe(runner, pte).status == "ok"  # the same probe, the phone behaving
        # An old adb shell loses the command's end: the program did finish and write its result,
        # but without the marker its exit status is unknown, so the result is not trusted.
        fake_adb.configure(phone, drop_marker=True, always_zero=True)
        lost = _probe(runner, pte)
        assert json.loads((_sandbox(phone, runner.transport.run_dir) / "p2" / "result.json").read_text())["ok"]
        # adb before Android 7 exits 0 whatever ran; the marker carries the shell's 139 (SIGSEGV
        # after the result was written).
        fake_adb.configure(phone, drop_marker=False, crash_after_run=True)
        crashed = _probe(runner, pte)
        # A warm loop asked to run 30 s under a 1.5 s timeout: the device-side `timeout -s KILL`
        # ends it (exit 137), and what it had measured comes back from its partial file.
        fake_adb.configure(phone, crash_after_run=False)
        began = time.monotonic()
        timed_out = _probe(runner, pte, "warm", timeout_s=1.5, min_duration_s=30.0, max_duration_s=60.0)
        took = time.monotonic() - began
    finally:
        runner.close()
    assert timed_out.status == "timeout" and "no result within 1.5 s on FA6X01234" in timed_out.detail
    assert timed_out.result and len(timed_out.result["warm"]["samples_ms"]) > 0 and took < 15
    assert lost.status == "lost" and "marker is missing" in lost.detail and lost.result is None
    assert crashed.status == "crashed" and "signal 11" in crashed.detail and crashed.result is None


def test_a_phone_date_without_nanoseconds_leaves_process_start_unmeasured(phone, runner_binary, pte):
    """toybox's date before %N support prints "1700000000N": never read as a launch time."""
    fake_date = phone / "phone" / "system" / "bin" / "date"
    fake_date.write_text('#!/bin/sh\nif [ "$1" = "+%s%N" ]; then echo "$(/bin/date +%s)N"; '
                         'else exec /bin/date "$@"; fi\n')
    fake_date.chmod(0o755)
    notes: list[str] = []
    runner = AdbRunner.open(_target(runner_binary), notes.append)
    try:
        outcome = _probe(runner, pte)
    finally:
        runner.close()
    assert outcome.status == "ok" and outcome.result["cold"]["interpreter_ms"] is None
    assert outcome.result["cold"]["compile_ms"] > 0
    assert any("gives no nanoseconds" in n for n in notes)
    assert not any("EDGEDISTILL_PARENT_START_WALL_NS" in s for s in fake_adb.shell_log(phone))


# ---------------------------------------------------------------- the lock, stale folders


def test_two_runs_queue_on_the_phones_lock(phone, runner_binary):
    first = AdbRunner.open(_target(runner_binary))
    try:
        owner = json.loads((_sandbox(phone, "/data/local/tmp/edgedistill/lock/owner")).read_text())
        assert owner["pid"] == os.getpid() and owner["run"] == first.transport.run_id and owner["host"]
        with pytest.raises(InconclusiveError) as busy:
            AdbRunner.open(_target(runner_binary, lock_wait_s=0.3))
        assert "FA6X01234 is busy" in busy.value.message
        assert f"pid {os.getpid()} on {owner['host']}" in busy.value.message
        # A second job waits while the first finishes, then measures.
        releaser = threading.Timer(1.0, first.close)
        releaser.start()
        began = time.monotonic()
        second = AdbRunner.open(_target(runner_binary, lock_wait_s=30.0))
        waited = time.monotonic() - began
        releaser.join()
        try:
            assert waited >= 0.9
            owner = json.loads((_sandbox(phone, "/data/local/tmp/edgedistill/lock/owner")).read_text())
            assert owner["run"] == second.transport.run_id
        finally:
            second.close()
    finally:
        first.close()
    assert not _sandbox(phone, "/data/local/tmp/edgedistill/lock").exists()


def test_stale_lock_and_run_folders_of_killed_runs_are_cleaned_at_open(phone, runner_binary):
    workdir = _sandbox(phone, "/data/local/tmp/edgedistill")
    (workdir / "run-20260101T000000-4242-abcdef" / "p1").mkdir(parents=True)
    (workdir / "run-20260101T000000-4242-abcdef" / "p1" / "result.json.partial").write_text("{}")
    (workdir / "lock").mkdir()
    (workdir / "lock" / "owner").write_text(json.dumps({"host": "ci-7", "pid": 4242, "run": "x",
                                                        "started": "2026-01-01T00:00:00+00:00"}) + "\n")
    (workdir / "lock" / "deadline").write_text(f"{int(time.time()) - 60}\n")  # the killed run's deadline passed
    notes: list[str] = []
    runner = AdbRunner.open(_target(runner_binary, lock_wait_s=0.0), notes.append)
    try:
        assert sorted(p.name for p in workdir.iterdir()) == sorted(["lock", Path(runner.transport.run_dir).name])
        assert json.loads((workdir / "lock" / "owner").read_text())["run"] == runner.transport.run_id
    finally:
        runner.close()
    assert any("stale lock (pid 4242 on ci-7" in n for n in notes)
    assert any("removed 1 run folder" in n for n in notes)
    assert list(workdir.iterdir()) == []


# ---------------------------------------------------------------- what the profile must say


def test_usage_errors_name_what_is_expected_and_found(tmp_path, monkeypatch, runner_binary):
    home = _phone(tmp_path, monkeypatch)
    with pytest.raises(UsageError) as e:
        AdbRunner.open(_target(None))
    assert "executorch_runner is not set" in e.value.message and "cross-build" in e.value.hint
    assert e.value.exit_code == 2
    with pytest.raises(UsageError) as e:
        AdbRunner.open(TargetConfig(name="p", runner="adb", executorch_runtime="python",
                                    adb={"executorch_runner": runner_binary}))
    assert "no Python" in e.value.message
    fake_adb.configure(home, devices=[[SERIAL, "device"], ["R58M123ABC", "device"]])
    with pytest.raises(UsageError) as e:
        AdbRunner.open(_target(runner_binary))
    assert "lists 2 ready devices (found: FA6X01234 (device), R58M123ABC (device))" in e.value.message
    fake_adb.configure(home, devices=[])
    with pytest.raises(UsageError) as e:
        AdbRunner.open(_target(runner_binary))
    assert "(found: none)" in e.value.message
    fake_adb.configure(home, devices=[[SERIAL, "device"]])
    runner = AdbRunner.open(_target(runner_binary, serial=SERIAL))
    try:
        with pytest.raises(UsageError) as e:
            runner.probe_command("onnxruntime", "native")
        assert "ExecuTorch (.pte) with the native runner and LiteRT (.tflite) with benchmark_model; " \
               "this artifact is onnxruntime" in e.value.message
    finally:
        runner.close()
    with pytest.raises(UsageError) as e:
        AdbRunner.open(_target(runner_binary, serial=SERIAL, adb="no-such-adb"))
    assert "the adb client 'no-such-adb' was not found" in e.value.message and "platform-tools" in e.value.hint
    with pytest.raises(InconclusiveError) as gone:  # a serial that is not attached: the device is unreachable
        AdbRunner.open(_target(runner_binary, serial="NOPE"))
    assert "error: device 'NOPE' not found" in gone.value.message
