"""Runs the probe in a fresh local process, with a timeout that kills its whole process group.

The program is the Python probe, or any `ProbeCommand` that speaks its protocol (the native
ExecuTorch runner, bench/native.py): same request, same result file, same handling here.

Each probe leads its own session (a new process group), so a timeout kills the probe and
anything it started, a grandchild that keeps stdout open included. The same isolation means
the terminal's SIGINT never reaches it: whatever ends this process early (a signal turned into
`Interrupted`, any exception) passes through `run_probe`'s `finally`, which kills the group
before the temporary folder is removed. `LIVE_GROUPS` lists the groups running now, so a last
resort (`kill_live_groups`) can end them from anywhere.
"""

from __future__ import annotations

import array
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

PROBE_DIR = Path(__file__).resolve().parents[2] / "probe"
LIVE_GROUPS: set[int] = set()  # process group ids of probes started and not yet reaped


@dataclass
class ProbeOutcome:
    status: str  # "ok" | "error" (the probe reported one) | "crashed" | "timeout"
    result: dict | None  # on a timeout: what the probe had measured by then (its partial file), or None
    detail: str = ""  # stderr tail, signal name, or the probe's error message


class ProbeSetupError(Exception):
    """What a command's prepare() could not do with the request (an inputs file missing or
    unreadable): reported as the probe's own error, as the Python probe reports it."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


class ProbeCommand(Protocol):
    """The program a probe runs: the Python probe, or a native runner speaking its protocol."""

    def prepare(self, request: dict, folder: Path) -> dict:
        """Write what the program reads besides the request into `folder` (untimed); the request to send."""

    def argv(self, request: dict, request_path: Path) -> list[str]:
        """The command line; `request_path` holds the request as JSON."""


class PythonProbe:
    """probe.py in a fresh interpreter (this one's), reading the request file."""

    def prepare(self, request: dict, folder: Path) -> dict:
        return request

    def argv(self, request: dict, request_path: Path) -> list[str]:
        return [sys.executable, str(PROBE_DIR / "probe.py"), str(request_path)]


def thread_env(threads: int) -> dict[str, str]:
    """Pin the thread pools of libraries the runtime may pull in, so the threads asked are used."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_partial(path: Path) -> dict | None:
    """The probe's partial result and the warm samples it appended (int64 ns; a torn last
    record, cut by the kill, is dropped)."""
    partial = _read_json(path)
    if partial is None:
        return None
    try:
        data = Path(str(path) + ".warm_ns").read_bytes()
    except OSError:
        return partial
    samples = array.array("q")
    samples.frombytes(data[: len(data) // samples.itemsize * samples.itemsize])
    partial["warm"] = {"samples_ms": [round(t / 1e6, 5) for t in samples]}
    return partial


def run_probe(request: dict, *, threads: int, timeout_s: float, command: ProbeCommand | None = None) -> ProbeOutcome:
    command = command or PythonProbe()
    with tempfile.TemporaryDirectory(prefix="edgedistill-probe-") as tmp:
        req_path = Path(tmp) / "request.json"
        result_path = Path(tmp) / "result.json"
        try:
            request = command.prepare({**request, "result_path": str(result_path)}, Path(tmp))
        except ProbeSetupError as e:
            result = {"ok": False, "error_type": e.error_type, "error": str(e)}
            return ProbeOutcome("error", result, f"{e.error_type}: {e}")
        request["parent_start_wall_ns"] = time.time_ns()  # after prepare: its file writing is not the child's start
        req_path.write_text(json.dumps(request))
        proc = subprocess.Popen(
            command.argv(request, req_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=thread_env(threads),
            start_new_session=True,
        )
        LIVE_GROUPS.add(proc.pid)
        try:
            try:
                _, stderr = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                # The probe saves what it measured as it goes (see probe._Partial): it is kept.
                partial = _read_partial(Path(str(result_path) + ".partial"))
                return ProbeOutcome("timeout", partial, f"no result within {timeout_s:g} s; process group killed")
        finally:
            # Also on the way out of an interrupt or any error: never leave the group running.
            _kill_group(proc)
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        result = _read_json(result_path) if result_path.exists() else None
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            return ProbeOutcome("crashed", result, f"probe killed by {sig}: {' | '.join(tail)}")
        if result is None:
            return ProbeOutcome("crashed", None, f"probe exited {proc.returncode} without a result: {' | '.join(tail)}")
        if not result.get("ok"):
            return ProbeOutcome("error", result, f"{result.get('error_type')}: {result.get('error')}")
        return ProbeOutcome("ok", result)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the probe's process group (the probe and everything it started) and reap it.

    Also called after a normal exit: a grandchild the probe left behind is in the same group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    LIVE_GROUPS.discard(proc.pid)


def run_group(argv: list[str], *, input: bytes | None = None, timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run for a runner's own tools (ssh, adb): the command leads its own process
    group, listed in LIVE_GROUPS while it runs, so an interrupt (kill_live_groups, from any
    thread) ends it, and a timeout kills the group (raising TimeoutExpired). Nothing reads this
    process's stdin: no input is /dev/null."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    LIVE_GROUPS.add(proc.pid)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException:  # a timeout, an interrupt: never leave the command running
        _kill_group(proc)
        raise
    LIVE_GROUPS.discard(proc.pid)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def kill_live_groups() -> None:
    """End every probe group still running (a last resort for paths that did not unwind)."""
    for pgid in list(LIVE_GROUPS):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        LIVE_GROUPS.discard(pgid)


class LocalRunner:
    """This machine: each probe a fresh local process (run_probe above)."""

    kind = "local"
    remote = False

    def run_probe(self, request: dict, *, threads: int, timeout_s: float,
                  command: ProbeCommand | None = None) -> ProbeOutcome:
        return run_probe(request, threads=threads, timeout_s=timeout_s, command=command)

    def probe_command(self, backend: str, executorch_runtime: str, note=lambda s: None):
        from edgedistill.bench import native

        return native.probe_command(backend, executorch_runtime, note)

    def conditions(self) -> dict:
        from edgedistill.bench.environment import governor, load_average, usable_cores

        return {"load_average_before": load_average(), "usable_cores": usable_cores(), "governor": governor()}

    def device_info(self) -> dict:
        """probe/device_info.py in a fresh process of this interpreter: the same script, and
        so the same facts, a remote runner reports from its device."""
        return run_device_info([sys.executable, str(PROBE_DIR / "device_info.py")])

    def close(self) -> None:
        pass


def run_device_info(argv: list[str], timeout_s: float = 60.0) -> dict:
    """The JSON object device_info.py prints; InconclusiveError when it printed none."""
    from edgedistill.errors import InconclusiveError

    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=thread_env(1))
    except subprocess.TimeoutExpired:
        raise InconclusiveError(f"device_info.py did not answer within {timeout_s:g} s") from None
    try:
        return json.loads(p.stdout)
    except ValueError:
        tail = " | ".join(p.stderr.strip().splitlines()[-3:]) or "no output"
        raise InconclusiveError(f"device_info.py exited {p.returncode} without a description: {tail}") from None
