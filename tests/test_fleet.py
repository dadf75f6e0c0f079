"""Several targets in one run (issue 11 item 7): devices measured at once, one job per device,
an unreachable device inconclusive for its own target only."""

from __future__ import annotations

import json
import threading
import time

import pytest

from edgedistill.bench import fleet
from edgedistill.bench.runners.local import LocalRunner
from edgedistill.config import TargetConfig
from edgedistill.errors import InconclusiveError, UnsafeModelError
from edgedistill.ui import UI
from tests.test_bench_files import _target, files  # noqa: F401  (the module's model files)


def _ssh(name: str, host: str) -> TargetConfig:
    return TargetConfig(name=name, runner="ssh", ssh={"host": host})


class _FakeRunner(LocalRunner):
    """This machine's runner under another name: the measurement is real, the device is not."""

    def __init__(self, kind: str, closed: list):
        self.kind, self._closed = kind, closed

    def close(self) -> None:
        self._closed.append(self.kind)


def _fake_open(unreachable: set[str], closed: list, refused: set[str] = frozenset()):
    def open_runner(target, note):
        host = target.ssh.host if target.ssh else "local"
        if host in refused:
            raise UnsafeModelError(f"host key for {host} is not in known_hosts", "pin it")
        if host in unreachable:
            raise InconclusiveError(f"ssh: connect to host {host}: Connection refused", "check the device")
        return _FakeRunner(host, closed)
    return open_runner


def test_devices_run_at_once_and_targets_of_one_device_one_after_another(monkeypatch):
    closed: list = []
    monkeypatch.setattr(fleet, "open_runner", _fake_open({"down"}, closed))
    spans: dict[str, tuple[float, float]] = {}
    seen: dict[str, tuple] = {}
    lock = threading.Lock()

    def measure(job: fleet.Job) -> None:
        began = time.monotonic()
        if job.runner is not None:
            time.sleep(0.4)
        with lock:
            spans[job.target.name] = (began, time.monotonic())
            seen[job.target.name] = (job.runner and job.runner.kind, job.unreachable, job.concurrent)

    targets = [TargetConfig(name="cpu-a"), TargetConfig(name="cpu-b"), _ssh("board", "board"),
               _ssh("board-2", "board"), _ssh("gone", "down")]
    fleet.measure_all(targets, measure, UI(quiet=True))

    def overlap(a: str, b: str) -> bool:
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    assert not overlap("cpu-a", "cpu-b") and not overlap("board", "board-2")  # one job per device
    assert overlap("cpu-a", "board") or overlap("cpu-b", "board") or overlap("cpu-a", "board-2")
    assert seen["gone"][0] is None and "Connection refused" in seen["gone"][1]
    assert seen["board"] == ("board", None, True)
    assert sorted(closed) == ["board", "board", "local", "local"]  # every opened runner closed


def test_a_refused_host_key_stops_the_command_and_the_other_devices(monkeypatch):
    closed: list = []
    monkeypatch.setattr(fleet, "open_runner", _fake_open(set(), closed, refused={"evil"}))
    started = []

    def measure(job: fleet.Job) -> None:
        started.append(job.target.name)
        for _ in range(50):  # a long target: it must notice the stop, not run to its end
            if job.stopping:
                return
            time.sleep(0.02)

    began = time.monotonic()
    with pytest.raises(UnsafeModelError):
        fleet.measure_all([TargetConfig(name="cpu"), TargetConfig(name="cpu-2"), _ssh("evil", "evil")],
                          measure, UI(quiet=True))
    assert "cpu-2" not in started  # the local device's next target never started
    assert time.monotonic() - began < 5


def test_bench_files_keeps_and_gates_the_reachable_target(files, tmp_path, monkeypatch):  # noqa: F811
    """One real local target with budgets beside an SSH target whose device is down: the local
    one is measured and gated, the other is inconclusive, not measured; the exit says inconclusive."""
    closed: list = []
    monkeypatch.setattr(fleet, "open_runner", _fake_open({"down"}, closed))
    # The fleet is under test, not caching detection: a tiny model's repeated input ran at 0.70x
    # of the varied ones from CPU caches alone in one CI run (one warm run, limit 0.75x).
    local = _target(tmp_path, "cpu", budgets="caching_ratio = 0.01\n[budgets]\np90_ms = 10000.0\n", cold_runs=1)
    down = tmp_path / "down.toml"
    down.write_text(local.read_text().replace('name = "tiny"', 'name = "down"\nrunner = "ssh"')
                    + '\n[ssh]\nhost = "down"\n')
    from edgedistill import api

    plan = api.plan_files([files["onnx"]], targets=[local, down], output=tmp_path / "r" / "results.json")
    results = api.bench_files(plan, UI(quiet=True))
    by_name = {t["name"]: t for t in results["targets"]}
    ok = by_name["tiny"]["results"][0]
    gone = by_name["down"]["results"][0]
    assert ok["status"] == "ok" and ok["warm"]["runs"]
    assert gone["status"] == "inconclusive" and "Connection refused" in gone["status_detail"]
    assert results["verdict"] == "INCONCLUSIVE" and results["complete"]
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert {c["target"] for c in saved["checks"] if c["outcome"] == "PASS"} == {"tiny"}
    assert sorted(closed) == ["local"]


def test_an_interrupt_ends_a_runner_tool_running_in_another_thread():
    """What a device's thread waits on (ssh, adb) is in LIVE_GROUPS: kill_live_groups, which an
    interrupt calls in the main thread, ends it, so no device's measurement outlives the command."""
    from edgedistill.bench.runners.local import LIVE_GROUPS, kill_live_groups, run_group

    done: list = []
    worker = threading.Thread(target=lambda: done.append(run_group(["sleep", "30"], timeout=60)))
    began = time.monotonic()
    worker.start()
    while not LIVE_GROUPS and time.monotonic() - began < 5:
        time.sleep(0.01)
    kill_live_groups()
    worker.join(10)
    assert not worker.is_alive() and done[0].returncode == -9
    assert time.monotonic() - began < 10
