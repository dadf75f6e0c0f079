"""Runs the probe in a fresh local process, with a timeout that kills its whole process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROBE_DIR = Path(__file__).resolve().parents[2] / "probe"


@dataclass
class ProbeOutcome:
    status: str  # "ok" | "error" (the probe reported one) | "crashed" | "timeout"
    result: dict | None
    detail: str = ""  # stderr tail, signal name, or the probe's error message


def thread_env(threads: int) -> dict[str, str]:
    """Pin the thread pools of libraries the runtime may pull in, so the threads asked are used."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_probe(request: dict, *, threads: int, timeout_s: float) -> ProbeOutcome:
    with tempfile.TemporaryDirectory(prefix="edgedistill-probe-") as tmp:
        req_path = Path(tmp) / "request.json"
        result_path = Path(tmp) / "result.json"
        request = {**request, "result_path": str(result_path)}
        request["parent_start_wall_ns"] = time.time_ns()
        req_path.write_text(json.dumps(request))
        # A new session makes the probe lead its own process group: a timeout kills the probe
        # and anything it started (a grandchild that keeps stdout open included).
        proc = subprocess.Popen(
            [sys.executable, str(PROBE_DIR / "probe.py"), str(req_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=thread_env(threads),
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return ProbeOutcome("timeout", None, f"no result within {timeout_s:g} s; process group killed")
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        result = json.loads(result_path.read_text()) if result_path.exists() else None
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            return ProbeOutcome("crashed", result, f"probe killed by {sig}: {' | '.join(tail)}")
        if result is None:
            return ProbeOutcome("crashed", None, f"probe exited {proc.returncode} without a result: {' | '.join(tail)}")
        if not result.get("ok"):
            return ProbeOutcome("error", result, f"{result.get('error_type')}: {result.get('error')}")
        return ProbeOutcome("ok", result)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
